"""Devices: one object per device that knows its array module, its linear algebra,
its random numbers, its kernel implementation, and how to move arrays on and off it.

Three devices (see ARCHITECTURE.md):

- ``"cpu"``: NumPy arrays, the Numba cpu kernels, SciPy's LAPACK.
- ``"gpu"``: CuPy arrays, the Numba-CUDA kernels on CuPy's current stream, cuBLAS and
  cuSOLVER through CuPy and ``cupyx.scipy.linalg``.
- ``"cuda-sim"``: NumPy arrays, the Numba-CUDA kernels under Numba's CUDA simulator
  (``NUMBA_ENABLE_CUDASIM=1`` must be set before Numba is first imported). For tests.

Nothing here imports CuPy or numba-cuda unless the device that needs it is asked for.
Models call :func:`get_backend` once and keep the returned object; every array they make
goes through ``backend.xp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import warnings

import numpy as np

from .errors import DeviceUnavailableError, JitterWarning, NotPositiveDefiniteError

DEVICES = ("cpu", "gpu", "cuda-sim")


@dataclass(frozen=True)
class Backend:
    """Everything a model needs to know about where its arrays live.

    Attributes
    ----------
    name : {"cpu", "gpu", "cuda-sim"}
    xp : module
        ``numpy`` or ``cupy``: the array module every model array comes from.
    kernel_impl : {"cpu", "cuda"}
        Which implementation of the kernels in :mod:`minivae.kernels` runs here.
    """

    name: str
    xp: Any
    kernel_impl: str

    def __reduce__(self):
        # The array module cannot be pickled; pickle and deepcopy rebuild the backend
        # from its device name.
        return (get_backend, (self.name,))

    # ---- arrays -------------------------------------------------------------------
    def asarray(self, x, dtype=None):
        """Put ``x`` on this device (a copy only when needed)."""
        return self.xp.asarray(x, dtype=dtype)

    def to_host(self, x) -> np.ndarray:
        """Return ``x`` as a NumPy array (copies from the GPU; a no-op on the host)."""
        if self.name == "gpu" and not isinstance(x, np.ndarray):
            return self.xp.asnumpy(x)
        return np.asarray(x)

    def rng(self, seed):
        """A random Generator for this device, seeded with ``seed``.

        The same seed on the same device gives the same stream, which is what makes
        training bit-identical between runs.
        """
        return self.xp.random.default_rng(seed)

    # ---- linear algebra -------------------------------------------------------------
    def cholesky(self, A):
        """Lower Cholesky factor of the symmetric positive-definite ``A``.

        Raises ``numpy.linalg.LinAlgError`` when ``A`` is not positive definite, on every
        device. On the GPU, CuPy checks cuSOLVER's status only under
        ``cupyx.errstate(linalg="raise")``; by default a failed ``potrf`` returns a partly
        factorised, finite matrix (LAPACK stops at the first bad pivot), so the check is
        turned on here; a NaN that gets through the pivots still fails the check on the
        last diagonal entry.
        """
        if self.name == "gpu":
            import cupyx

            with cupyx.errstate(linalg="raise"):
                L = self.xp.linalg.cholesky(A)
            if not bool(self.xp.isfinite(L[-1, -1])):
                raise np.linalg.LinAlgError("matrix is not positive definite")
            return L
        import scipy.linalg

        return scipy.linalg.cholesky(A, lower=True, check_finite=False)

    def solve_triangular(self, L, B, lower=True, trans=0):
        """Solve ``op(L) X = B`` for triangular ``L`` (``trans=1``: ``L^T X = B``)."""
        if self.name == "gpu":
            import cupyx.scipy.linalg

            A, lower, trans = _column_major(L, lower, trans)
            return cupyx.scipy.linalg.solve_triangular(A, B, lower=lower, trans=trans)
        import scipy.linalg

        return scipy.linalg.solve_triangular(L, B, lower=lower, trans=trans, check_finite=False)

    def cho_solve(self, L, B):
        """Solve ``A X = B`` given the lower Cholesky factor ``L`` of ``A``."""
        Y = self.solve_triangular(L, B, lower=True, trans=0)
        return self.solve_triangular(L, Y, lower=True, trans=1)


def _column_major(L, lower, trans):
    """``(A, lower, trans)`` solving the same system as ``(L, lower, trans)``, with ``A``
    column-major when ``L`` is row-major: ``A = L^T``, the other triangle, the other op
    (``trans`` 0 or 1; real matrices).

    cuBLAS's trsm reads column-major matrices, so cupyx.scipy.linalg.solve_triangular
    copies a row-major ``L`` first; ``L.T`` is the same memory read column-major.
    """
    if L.flags.c_contiguous and not L.flags.f_contiguous:
        return L.T, not lower, 1 - trans
    return L, lower, trans


def _cpu() -> Backend:
    return Backend("cpu", np, "cpu")


def _cuda_sim() -> Backend:
    import numba

    if not numba.config.ENABLE_CUDASIM:  # type: ignore[attr-defined]
        raise DeviceUnavailableError(
            'device="cuda-sim" needs Numba\'s CUDA simulator, which is off in this process. '
            "Set the environment variable NUMBA_ENABLE_CUDASIM=1 before Python starts "
            '(it is read when Numba is first imported), or use device="cpu".'
        )
    try:
        import numba.cuda  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DeviceUnavailableError(
            'device="cuda-sim" needs numba-cuda: pip install -e ".[test]" '
            f'(import failed: {exc}); or use device="cpu".'
        ) from exc
    return Backend("cuda-sim", np, "cuda")


def _gpu() -> Backend:
    try:
        import cupy
    except ImportError as exc:
        raise DeviceUnavailableError(
            'device="gpu" needs CuPy, which is not installed (pip install -e ".[gpu]" '
            'on a machine with an NVIDIA GPU and driver); use device="cpu" meanwhile.'
        ) from exc
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, no device
        raise DeviceUnavailableError(
            f'device="gpu": CuPy is installed but no usable CUDA GPU was found ({exc}); '
            'check the NVIDIA driver with nvidia-smi, or use device="cpu".'
        ) from exc
    if n < 1:
        raise DeviceUnavailableError(
            'device="gpu": CuPy found no CUDA device; use device="cpu".'
        )
    import numba

    if numba.config.ENABLE_CUDASIM:  # type: ignore[attr-defined]
        raise DeviceUnavailableError(
            'device="gpu" cannot run while NUMBA_ENABLE_CUDASIM=1 is set (the kernels would '
            'run in the simulator); unset it, or use device="cuda-sim" for tests.'
        )
    try:
        import numba.cuda  # noqa: F401
    except ImportError as exc:
        raise DeviceUnavailableError(
            'device="gpu" needs numba-cuda for the custom kernels: pip install -e ".[gpu]"; '
            'or use device="cpu".'
        ) from exc
    return Backend("gpu", cupy, "cuda")


_CACHE: dict[str, Backend] = {}


def get_backend(device: "str | Backend" = "cpu") -> Backend:
    """Return the :class:`Backend` for ``device`` ("cpu", "gpu" or "cuda-sim").

    Raises
    ------
    ValueError
        If ``device`` is not one of the three names.
    DeviceUnavailableError
        If the device cannot be used here; the message says why and what to do.
    """
    if isinstance(device, Backend):
        return device
    if device not in DEVICES:
        raise ValueError(f"device={device!r} is not one of {DEVICES}")
    if device not in _CACHE:
        _CACHE[device] = {"cpu": _cpu, "gpu": _gpu, "cuda-sim": _cuda_sim}[device]()
    return _CACHE[device]


def resolve_dtype(dtype) -> np.dtype:
    """``"float32"`` or ``"float64"`` (or the NumPy types) as a NumPy dtype; else ValueError."""
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype={dtype!r} is not supported; use 'float32' or 'float64'")
    return dt


# ---- dense linear algebra on a backend: Cholesky with jitter, solves, K^-1 ----------------

#: First jitter, relative to the mean of the diagonal; it grows x10 per retry.
JITTER_START = 1e-8

#: How many times jitter is added before giving up.
JITTER_TRIES = 5

# Rows per block when a triangle is copied onto the other in place (bounds the temporary).
_TRIANGLE_BLOCK = 256

# Below this size K^-1 comes from potrs with the identity instead of the in-place potri:
# OpenBLAS runs potri's triangular product (lauum) threaded even for tiny matrices, and
# the thread hand-offs then cost milliseconds (measured: 10 us to 47 ms at n = 12 on a
# busy 2-core machine), while the n x n identity it saves is small here.
_POTRI_MIN_N = 256


def _mirror_lower_to_upper(M) -> None:
    """Copy the lower triangle of the square host array ``M`` onto its upper triangle.

    In place, a block of rows at a time, so the only temporaries are blocks.
    """
    n = M.shape[0]
    for start in range(0, n, _TRIANGLE_BLOCK):
        stop = min(start + _TRIANGLE_BLOCK, n)
        block = M[start:stop, start:stop]
        block[...] = np.tril(block) + np.tril(block, -1).T
        M[start:stop, stop:] = M[stop:, start:stop].T


def _zero_strict_upper(M) -> None:
    """Set the strict upper triangle of the square host array ``M`` to zero, in place."""
    n = M.shape[0]
    for start in range(0, n, _TRIANGLE_BLOCK):
        stop = min(start + _TRIANGLE_BLOCK, n)
        block = M[start:stop, start:stop]
        block[...] = np.tril(block)
        M[start:stop, stop:] = 0


def _fortran_work_matrix(A, overwrite_a: bool):
    """A Fortran-ordered host array with the values of the symmetric ``A``.

    LAPACK works in place only on Fortran-ordered arrays. For a C-ordered symmetric
    ``A`` its transpose is such an array with the same values, so no copy is needed.
    """
    if overwrite_a and A.flags.f_contiguous:
        return A
    if overwrite_a and A.flags.c_contiguous:
        return A.T
    return np.array(A, order="F")


def _not_pd_message(n: int, jitter: float, mean_diag: float) -> str:
    return (
        f"the {n} x {n} kernel matrix is not positive definite, even after adding jitter "
        f"{jitter:.3g} ({jitter / mean_diag:.0e} x its mean diagonal {mean_diag:.3g}) to "
        "the diagonal; raise the noise variance, look for duplicate or nearly duplicate "
        "rows in X, or use a shorter lengthscale"
    )


def cholesky_with_jitter(A, backend=None, *, overwrite_a: bool = False, warn: bool = True):
    """Lower Cholesky factor of a symmetric positive-(semi)definite matrix, with jitter.

    Parameters
    ----------
    A : (n, n) array on ``backend``
        Symmetric: both triangles must hold the same values (which one LAPACK reads
        depends on the memory order).
    backend : Backend or str, optional
        Device of ``A``; default ``"cpu"``.
    overwrite_a : bool, default False
        On the host, factorise in the memory of ``A`` (no n x n copy); ``A`` is
        destroyed. On the GPU a copy is always made.
    warn : bool, default True
        Emit a :class:`JitterWarning` when jitter was needed. A caller that factorises
        many matrices (the hyperparameter optimiser) passes False and reports the
        returned jitters once.

    Returns
    -------
    L : (n, n) array
        Lower triangular (strict upper triangle zero) with ``L L^T = A + jitter I``.
        On the host it is Fortran-ordered.
    jitter : float
        What was added to the diagonal (0.0 when the first attempt succeeded).

    Raises
    ------
    NotPositiveDefiniteError
        If ``A`` has non-finite diagonal entries, or if the factorisation still fails
        after ``JITTER_TRIES`` attempts with jitter.

    Warns
    -----
    JitterWarning
        When jitter was needed (and ``warn``), with its value.

    Notes
    -----
    The jitter starts at ``JITTER_START * mean(diag(A))`` and grows x10 per attempt,
    ``JITTER_TRIES`` attempts at most (1e-8 .. 1e-4 of the mean diagonal). It is added
    only when the plain factorisation failed. On the host, LAPACK ``potrf`` overwrites
    the lower triangle only, so after a failure the matrix is restored from its intact
    upper triangle and a saved copy of the diagonal: retries cost no n x n memory.
    """
    backend = get_backend("cpu" if backend is None else backend)
    xp = backend.xp
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"cholesky_with_jitter needs a square matrix, got shape {A.shape}")
    n = A.shape[0]
    diag = xp.diagonal(A).copy()
    if not bool(xp.all(xp.isfinite(diag))):
        raise NotPositiveDefiniteError(
            f"the {n} x {n} kernel matrix has non-finite diagonal entries; check the inputs "
            "and the hyperparameters for NaN, Inf or overflow"
        )
    # The jitter scale; 1.0 when the diagonal is all zeros (nothing else to go by).
    mean_diag = float(xp.mean(xp.abs(diag))) if n else 0.0
    mean_diag = mean_diag if mean_diag > 0.0 else 1.0
    if xp is np:
        L, jitter = _host_cholesky_with_jitter(A, diag, mean_diag, overwrite_a)
    else:
        L, jitter = _device_cholesky_with_jitter(A, mean_diag, backend)
    if jitter > 0.0 and warn:
        warnings.warn(
            f"Cholesky factorisation of the {n} x {n} kernel matrix failed; it succeeded "
            f"after adding jitter {jitter:.3g} ({jitter / mean_diag:.0e} x the mean "
            f"diagonal) to the diagonal",
            JitterWarning,
            stacklevel=2,
        )
    return L, jitter


def _jitters(mean_diag: float):
    """0, then the growing jitter values to try."""
    yield 0.0
    for attempt in range(JITTER_TRIES):
        yield JITTER_START * 10.0**attempt * mean_diag


def _host_cholesky_with_jitter(A, diag, mean_diag, overwrite_a):
    from scipy.linalg import get_lapack_funcs

    work = _fortran_work_matrix(A, overwrite_a)
    (potrf,) = get_lapack_funcs(("potrf",), (work,))
    n = work.shape[0]
    idx = np.arange(n)
    for jitter in _jitters(mean_diag):
        if jitter > 0.0:
            # potrf overwrote (part of) the lower triangle and the diagonal: restore both.
            _mirror_lower_to_upper(work.T)
            work[idx, idx] = diag + jitter
        L, info = potrf(work, lower=1, overwrite_a=1, clean=0)
        if info < 0:  # pragma: no cover - an argument error is a bug here
            raise ValueError(f"LAPACK potrf: illegal argument {-info}")
        if info == 0:
            if not np.all(np.isfinite(L.diagonal())):
                raise NotPositiveDefiniteError(
                    f"the {n} x {n} kernel matrix has non-finite entries; check the inputs "
                    "and the hyperparameters for NaN, Inf or overflow"
                )
            _zero_strict_upper(L)
            return L, jitter
    raise NotPositiveDefiniteError(_not_pd_message(n, jitter, mean_diag))


def _device_cholesky_with_jitter(A, mean_diag, backend):
    xp = backend.xp
    n = A.shape[0]
    for jitter in _jitters(mean_diag):
        try:
            L = backend.cholesky(A if jitter == 0.0 else A + jitter * xp.eye(n, dtype=A.dtype))
        except np.linalg.LinAlgError:
            continue
        return L, jitter
    raise NotPositiveDefiniteError(_not_pd_message(n, jitter, mean_diag))


def cho_solve(L, B, backend):
    """Solve ``(L L^T) X = B`` given the lower Cholesky factor ``L``."""
    if backend.xp is np:
        from scipy.linalg import cho_solve

        return cho_solve((L, True), B, check_finite=False)
    return backend.cho_solve(L, B)


def solve_lower(L, B, backend):
    """``L \\ B`` for lower triangular ``L``; on the host ``B`` is overwritten (no copy
    when it is Fortran-ordered, as the transpose of a C-ordered array is)."""
    if backend.xp is np:
        from scipy.linalg import solve_triangular

        return solve_triangular(L, B, lower=True, overwrite_b=True, check_finite=False)
    return backend.solve_triangular(L, B, lower=True)


def add_to_diagonal(A, value, xp) -> None:
    """``A += value * I`` in place."""
    n = A.shape[0]
    idx = xp.arange(n)
    A[idx, idx] += value


def lml_weight_matrix(L, alpha, backend):
    """``W = alpha alpha^T - t K^-1`` from the Cholesky factor; destroys ``L`` on the host.

    On the host ``K^-1`` is formed in the memory of ``L`` (LAPACK ``potri``; below
    ``_POTRI_MIN_N`` rows ``potrs`` on the identity) and ``alpha alpha^T`` is added to it
    there (BLAS ``syrk``), so for large n W costs no new n x n array.
    """
    t = alpha.shape[1]
    n = L.shape[0]
    if backend.xp is not np:
        K_inv = backend.cho_solve(L, backend.xp.eye(n, dtype=L.dtype))
        return alpha @ alpha.T - t * K_inv
    from scipy.linalg import get_blas_funcs, get_lapack_funcs

    (potri, potrs) = get_lapack_funcs(("potri", "potrs"), (L,))
    (syrk,) = get_blas_funcs(("syrk",), (L,))
    if n < _POTRI_MIN_N:
        K_inv, info = potrs(L, np.eye(n, dtype=L.dtype, order="F"), lower=1, overwrite_b=1)
    else:
        K_inv, info = potri(L, lower=1, overwrite_c=1)
    if info != 0:  # pragma: no cover - L came from a successful potrf
        raise NotPositiveDefiniteError(f"LAPACK potri/potrs failed (info={info})")
    W = syrk(1.0, alpha, beta=-float(t), c=K_inv, lower=1, overwrite_c=1)
    _mirror_lower_to_upper(W)
    return W
