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

import numpy as np

from .errors import DeviceUnavailableError

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
        # The array module cannot be pickled: rebuild the backend from its device name.
        return (get_backend, (self.name,))

    def __deepcopy__(self, memo):
        return get_backend(self.name)

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

            return cupyx.scipy.linalg.solve_triangular(L, B, lower=lower, trans=trans)
        import scipy.linalg

        return scipy.linalg.solve_triangular(L, B, lower=lower, trans=trans, check_finite=False)

    def cho_solve(self, L, B):
        """Solve ``A X = B`` given the lower Cholesky factor ``L`` of ``A``."""
        Y = self.solve_triangular(L, B, lower=True, trans=0)
        return self.solve_triangular(L, Y, lower=True, trans=1)


def _cpu() -> Backend:
    return Backend("cpu", np, "cpu")


def _cuda_sim() -> Backend:
    import numba

    if not numba.config.ENABLE_CUDASIM:
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

    if numba.config.ENABLE_CUDASIM:
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

