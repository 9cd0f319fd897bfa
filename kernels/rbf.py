"""The RBF (squared-exponential) kernel matrix and its gradient contraction.

.. math::

    k(x_i, y_j) = s\\, a_i\\, b_j \\exp\\Big(-\\tfrac12 \\sum_k (x_{ik} - y_{jk})^2 / l_k^2\\Big)

with signal variance ``s``, isotropic or per-dimension (ARD) lengthscales ``l``, and
optional per-point amplitudes ``a`` (rows of X) and ``b`` (rows of Y). With amplitudes
``a_i = sqrt(sigma_i)`` this is the kernel of Variational Autoencoded Regression,
``sqrt(sigma_i sigma_j) exp(-||x_i - x_j||^2 / 2 l^2)``; it stays positive semi-definite.

Implementations (same signature, ``impl=`` picks): ``reference`` (NumPy, this file),
``cpu`` (Numba) and ``cuda`` (Numba-CUDA).
"""

from __future__ import annotations

import math

import numpy as np

def _check_lengthscale(lengthscale, d, dtype):
    ls = np.asarray(lengthscale, dtype=dtype).reshape(-1)
    if ls.size not in (1, d):
        raise ValueError(
            f"lengthscale has {ls.size} values but X has {d} columns; give one value "
            f"(isotropic) or one per column (ARD)"
        )
    if not np.all(ls > 0):
        raise ValueError(f"lengthscale must be positive, got {ls}")
    return ls


def rbf_matrix_reference(X, Y=None, lengthscale=1.0, variance=1.0, amp_x=None, amp_y=None):
    """Kernel matrix K(X, Y), plain NumPy (the specification).

    Parameters
    ----------
    X : (n, d) array
    Y : (m, d) array or None
        None means Y = X (and amp_y = amp_x).
    lengthscale : float or (d,) array
    variance : float
    amp_x : (n,) array or None
    amp_y : (m,) array or None

    Returns
    -------
    K : (n, m) array, dtype of X
    """
    X = np.asarray(X)
    symmetric = Y is None
    Y = X if symmetric else np.asarray(Y)
    ls = _check_lengthscale(lengthscale, X.shape[1], X.dtype)
    diff = (X[:, None, :] - Y[None, :, :]) / ls
    K = variance * np.exp(-0.5 * np.sum(diff * diff, axis=-1))
    if symmetric:
        amp_y = amp_x
    if amp_x is not None:
        K = K * np.asarray(amp_x)[:, None]
    if amp_y is not None:
        K = K * np.asarray(amp_y)[None, :]
    return K.astype(X.dtype, copy=False)


def rbf_grad_contract_reference(W, X, lengthscale=1.0, variance=1.0, amp=None):
    """The contractions ``0.5 * sum_ij W_ij dK_ij/dtheta`` of K = K(X, X), plain NumPy.

    Parameters
    ----------
    W : (n, n) array
        The weight matrix; for the GP log marginal likelihood, ``alpha alpha^T - K^-1``.
    X : (n, d) array
    lengthscale : float or (d,) array
    variance : float
    amp : (n,) array or None
        Per-point amplitudes a (the kernel is s a_i a_j exp(...)).

    Returns
    -------
    dtheta : (p + 1,) array
        ``0.5 sum W dK/dlog l_k`` for each lengthscale (p = 1 isotropic, p = d ARD), then
        ``0.5 sum W dK/dlog s``.
    damp : (n,) array or None
        ``0.5 sum_ij W_ij dK_ij/da_p`` for each p, or None without amplitudes.

    Notes
    -----
    dK_ij/dlog l_k = K_ij (x_ik - x_jk)^2 / l_k^2 ;  dK_ij/dlog s = K_ij ;
    dK_ij/da_p = s E_ij (delta_ip a_j + a_i delta_jp), E the exponential factor.
    This reference forms the n x n x d tensor; the fast implementations never do.
    """
    X = np.asarray(X)
    W = np.asarray(W)
    ls = _check_lengthscale(lengthscale, X.shape[1], X.dtype)
    diff = (X[:, None, :] - X[None, :, :]) / ls
    sq = diff * diff
    K0 = variance * np.exp(-0.5 * np.sum(sq, axis=-1))  # without amplitudes
    K = K0 if amp is None else K0 * np.outer(amp, amp)
    WK = W * K
    g_ls = 0.5 * np.einsum("ij,ijk->k", WK, sq)
    if ls.size == 1:
        g_ls = np.array([g_ls.sum()])
    dtheta = np.concatenate([g_ls, [0.5 * WK.sum()]]).astype(X.dtype, copy=False)
    damp = None
    if amp is not None:
        amp = np.asarray(amp)
        WK0 = W * K0
        damp = (0.5 * (WK0 @ amp + WK0.T @ amp)).astype(X.dtype, copy=False)
    return dtheta, damp


# ---- input checks shared by the fast implementations ---------------------------------


def _float_dtype(X):
    return X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float64)


def _check_points(X, name):
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (points in rows), got shape {X.shape}; "
            f"reshape a single column with {name}.reshape(-1, 1)"
        )


def _check_amp(amp, n, name, dtype, xp=np):
    if amp is None:
        return None
    amp = xp.ascontiguousarray(xp.asarray(amp, dtype=dtype).reshape(-1))
    if amp.shape[0] != n:
        raise ValueError(f"{name} has {amp.shape[0]} values but there are {n} points; give one per row")
    return amp


def _prepare_matrix(X, Y, lengthscale, variance, amp_x, amp_y, xp=np):
    """Validate and convert the arguments of rbf_matrix; returns contiguous arrays."""
    X = xp.asarray(X)
    _check_points(X, "X")
    dtype = _float_dtype(X)
    X = xp.ascontiguousarray(X, dtype=dtype)
    symmetric = Y is None
    if symmetric:
        Y = X
    else:
        Y = xp.asarray(Y)
        _check_points(Y, "Y")
        if Y.shape[1] != X.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} columns but Y has {Y.shape[1]}; both must hold points "
                f"of the same dimension"
            )
        Y = xp.ascontiguousarray(Y, dtype=dtype)
    ls = _check_lengthscale(_to_host(lengthscale), X.shape[1], np.float64)
    amp_x = _check_amp(amp_x, X.shape[0], "amp_x", dtype, xp)
    amp_y = amp_x if symmetric else _check_amp(amp_y, Y.shape[0], "amp_y", dtype, xp)
    return X, Y, symmetric, ls, float(variance), amp_x, amp_y


def _prepare_contract(W, X, lengthscale, variance, amp, xp=np):
    """Validate and convert the arguments of rbf_grad_contract."""
    X = xp.asarray(X)
    _check_points(X, "X")
    dtype = _float_dtype(X)
    X = xp.ascontiguousarray(X, dtype=dtype)
    n = X.shape[0]
    W = xp.asarray(W)
    if W.shape != (n, n):
        raise ValueError(f"W has shape {W.shape} but X has {n} rows; W must be ({n}, {n})")
    W = xp.ascontiguousarray(W, dtype=dtype)
    ls = _check_lengthscale(_to_host(lengthscale), X.shape[1], np.float64)
    amp = _check_amp(amp, n, "amp", dtype, xp)
    return W, X, ls, float(variance), amp


def _to_host(x):
    """A host copy of a small array or scalar (CuPy arrays expose .get())."""
    return x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else x


# ---- cpu: Numba ------------------------------------------------------------------------


def _cpu_kernels():
    """Compile-on-first-use Numba kernels (Numba is imported only when cpu runs)."""
    global _CPU
    if _CPU is None:
        import numba

        @numba.njit(cache=True, parallel=True, nogil=True)
        def matrix_kernel(X, Y, inv_ls, variance, amp_x, amp_y, symmetric, out):
            n, d = X.shape
            m = Y.shape[0]
            for i in numba.prange(n):
                jmax = i + 1 if symmetric else m
                for j in range(jmax):
                    r2 = 0.0
                    for k in range(d):
                        diff = (X[i, k] - Y[j, k]) * inv_ls[k]
                        r2 += diff * diff
                    value = variance * np.exp(-0.5 * r2) * amp_x[i] * amp_y[j]
                    out[i, j] = value
                    if symmetric:
                        out[j, i] = value

        @numba.njit(cache=True, parallel=True, nogil=True)
        def contract_kernel(W, X, inv_ls, variance, amp, row_terms, row_damp):
            n, d = X.shape
            for i in numba.prange(n):
                for j in range(n):
                    r2 = 0.0
                    for k in range(d):
                        diff = (X[i, k] - X[j, k]) * inv_ls[k]
                        r2 += diff * diff
                    k0 = variance * np.exp(-0.5 * r2)
                    wk = W[i, j] * k0 * amp[i] * amp[j]
                    for k in range(d):
                        diff = (X[i, k] - X[j, k]) * inv_ls[k]
                        row_terms[i, k] += wk * diff * diff
                    row_terms[i, d] += wk
                    row_damp[i] += (W[i, j] + W[j, i]) * k0 * amp[j]

        _CPU = (matrix_kernel, contract_kernel)
    return _CPU


_CPU = None


def _rbf_matrix_cpu(X, Y, lengthscale, variance, amp_x, amp_y):
    X, Y, symmetric, ls, variance, amp_x, amp_y = _prepare_matrix(
        X, Y, lengthscale, variance, amp_x, amp_y
    )
    matrix_kernel, _ = _cpu_kernels()
    inv_ls = np.ones(X.shape[1]) / ls
    ones = np.ones(max(X.shape[0], Y.shape[0]), dtype=X.dtype)
    out = np.empty((X.shape[0], Y.shape[0]), dtype=X.dtype)
    matrix_kernel(
        X, Y, inv_ls, variance,
        ones if amp_x is None else amp_x, ones if amp_y is None else amp_y,
        symmetric, out,
    )
    return out


def _rbf_grad_contract_cpu(W, X, lengthscale, variance, amp):
    W, X, ls, variance, amp = _prepare_contract(W, X, lengthscale, variance, amp)
    _, contract_kernel = _cpu_kernels()
    n, d = X.shape
    inv_ls = np.ones(d) / ls
    row_terms = np.zeros((n, d + 1))
    row_damp = np.zeros(n)
    contract_kernel(W, X, inv_ls, variance, np.ones(n) if amp is None else amp, row_terms, row_damp)
    terms = 0.5 * row_terms.sum(axis=0)
    g_ls = terms[:d] if ls.size == d else terms[:d].sum(keepdims=True)
    dtheta = np.concatenate([g_ls, terms[d:]]).astype(X.dtype)
    damp = None if amp is None else (0.5 * row_damp).astype(X.dtype)
    return dtheta, damp


# ---- cuda: Numba-CUDA -------------------------------------------------------------------

#: Output tile edge: a block of TILE x TILE threads computes a TILE x TILE tile of K.
TILE = 16
#: Columns of X and Y held in shared memory at a time (the d loop runs in chunks).
DCHUNK = 16

_CUDA = {}
cuda = None  # numba.cuda, bound on first use of a cuda kernel


def _array_module(x):
    """``cupy`` for CuPy arrays, else ``numpy``; imports CuPy only when given one."""
    if type(x).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def _cuda_kernels(dtype):
    """The two CUDA kernels for ``dtype`` (float32 or float64), compiled on first use."""
    key = np.dtype(dtype).str
    if key in _CUDA:
        return _CUDA[key]
    # ``cuda`` must be a module global: the simulator swaps module globals that refer to
    # numba.cuda for its fake module, and it would miss a local name.
    global cuda
    import numba
    from numba import cuda

    value_type = numba.float32 if np.dtype(dtype) == np.float32 else numba.float64
    threads = TILE * TILE

    @cuda.jit(device=True)
    def load_tiles(A, B, inv_ls, row_a, row_b, col0, a_tile, b_tile, zero):
        """Cooperatively load scaled columns [col0, col0 + DCHUNK) of TILE rows of A and B."""
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        d = A.shape[1]
        for c in range(tx, DCHUNK, TILE):
            col = col0 + c
            ia = row_a + ty
            ib = row_b + ty
            a_tile[ty, c] = A[ia, col] * inv_ls[col] if ia < A.shape[0] and col < d else zero
            b_tile[ty, c] = B[ib, col] * inv_ls[col] if ib < B.shape[0] and col < d else zero

    @cuda.jit(device=True)
    def block_sum(scratch, value):
        """Sum ``value`` over the block (tree reduction in shared memory); valid in thread 0."""
        tid = cuda.threadIdx.y * TILE + cuda.threadIdx.x
        scratch[tid] = value
        cuda.syncthreads()
        stride = threads // 2
        while stride > 0:
            if tid < stride:
                scratch[tid] += scratch[tid + stride]
            cuda.syncthreads()
            stride //= 2
        total = scratch[0]
        cuda.syncthreads()
        return total

    @cuda.jit
    def matrix_kernel(X, Y, inv_ls, variance, amp_x, amp_y, neg_half, zero, out):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row0 = cuda.blockIdx.y * TILE
        col0 = cuda.blockIdx.x * TILE
        x_tile = cuda.shared.array((TILE, DCHUNK + 1), value_type)
        y_tile = cuda.shared.array((TILE, DCHUNK + 1), value_type)
        d = X.shape[1]
        r2 = zero
        for k0 in range(0, d, DCHUNK):
            load_tiles(X, Y, inv_ls, row0, col0, k0, x_tile, y_tile, zero)
            cuda.syncthreads()
            for c in range(min(DCHUNK, d - k0)):
                diff = x_tile[ty, c] - y_tile[tx, c]
                r2 += diff * diff
            cuda.syncthreads()
        i = row0 + ty
        j = col0 + tx
        if i < out.shape[0] and j < out.shape[1]:
            out[i, j] = variance * math.exp(neg_half * r2) * amp_x[i] * amp_y[j]

    @cuda.jit
    def contract_kernel(W, X, inv_ls, variance, amp, isotropic, neg_half, zero, dtheta, damp):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row0 = cuda.blockIdx.y * TILE
        col0 = cuda.blockIdx.x * TILE
        x_tile = cuda.shared.array((TILE, DCHUNK + 1), value_type)
        y_tile = cuda.shared.array((TILE, DCHUNK + 1), value_type)
        scratch = cuda.shared.array(threads, numba.float64)
        rows = cuda.shared.array((TILE, TILE + 1), numba.float64)
        cols = cuda.shared.array((TILE, TILE + 1), numba.float64)
        n, d = X.shape
        i = row0 + ty
        j = col0 + tx
        inside = i < n and j < n
        r2 = zero
        for k0 in range(0, d, DCHUNK):
            load_tiles(X, X, inv_ls, row0, col0, k0, x_tile, y_tile, zero)
            cuda.syncthreads()
            for c in range(min(DCHUNK, d - k0)):
                diff = x_tile[ty, c] - y_tile[tx, c]
                r2 += diff * diff
            cuda.syncthreads()
        wk0 = zero
        a_i = zero
        a_j = zero
        if inside:
            wk0 = W[i, j] * (variance * math.exp(neg_half * r2))
            a_i = amp[i]
            a_j = amp[j]
        wk = wk0 * a_i * a_j
        # amplitude gradient: row sums (for a_i) and column sums (for a_j) of the tile
        rows[ty, tx] = wk0 * a_j
        cols[ty, tx] = wk0 * a_i
        cuda.syncthreads()
        if tx == 0 and i < n:
            row_total = 0.0
            for c in range(TILE):
                row_total += rows[ty, c]
            cuda.atomic.add(damp, i, row_total)
        if ty == 0 and col0 + tx < n:
            col_total = 0.0
            for r in range(TILE):
                col_total += cols[r, tx]
            cuda.atomic.add(damp, col0 + tx, col_total)
        total = block_sum(scratch, wk)
        if tx == 0 and ty == 0:
            cuda.atomic.add(dtheta, dtheta.shape[0] - 1, total)
        # lengthscales: wk * (x_ik - x_jk)^2 / l_k^2, one reduction per column (ARD) or one
        iso_sum = 0.0
        for k0 in range(0, d, DCHUNK):
            load_tiles(X, X, inv_ls, row0, col0, k0, x_tile, y_tile, zero)
            cuda.syncthreads()
            for c in range(min(DCHUNK, d - k0)):
                diff = x_tile[ty, c] - y_tile[tx, c]
                term = wk * diff * diff
                if isotropic:
                    iso_sum += term
                else:
                    total = block_sum(scratch, term)
                    if tx == 0 and ty == 0:
                        cuda.atomic.add(dtheta, k0 + c, total)
            cuda.syncthreads()
        if isotropic:
            total = block_sum(scratch, iso_sum)
            if tx == 0 and ty == 0:
                cuda.atomic.add(dtheta, 0, total)

    _CUDA[key] = (matrix_kernel, contract_kernel)
    return _CUDA[key]


def _cuda_launch(kernel, xp, grid, *args):
    """Launch on CuPy's current stream for CuPy arrays; plainly (simulator) for NumPy."""
    if xp is np:
        kernel[grid, (TILE, TILE)](*args)
        return
    from numba import cuda

    stream = cuda.external_stream(xp.cuda.get_current_stream().ptr)
    kernel[grid, (TILE, TILE), stream](*args)


def _rbf_matrix_cuda(X, Y, lengthscale, variance, amp_x, amp_y):
    xp = _array_module(X)
    X, Y, symmetric, ls, variance, amp_x, amp_y = _prepare_matrix(
        X, Y, lengthscale, variance, amp_x, amp_y, xp
    )
    dtype = X.dtype
    n, m = X.shape[0], Y.shape[0]
    inv_ls = xp.asarray(np.ones(X.shape[1]) / ls, dtype=dtype)
    ones = xp.ones(max(n, m), dtype=dtype)
    out = xp.empty((n, m), dtype=dtype)
    matrix_kernel, _ = _cuda_kernels(dtype)
    grid = ((m + TILE - 1) // TILE, (n + TILE - 1) // TILE)
    scalar = dtype.type
    _cuda_launch(
        matrix_kernel, xp, grid, X, Y, inv_ls, scalar(variance),
        ones if amp_x is None else amp_x, ones if amp_y is None else amp_y,
        scalar(-0.5), scalar(0.0), out,
    )
    return out


def _rbf_grad_contract_cuda(W, X, lengthscale, variance, amp):
    xp = _array_module(X)
    W, X, ls, variance, amp = _prepare_contract(W, X, lengthscale, variance, amp, xp)
    dtype = X.dtype
    n, d = X.shape
    inv_ls = xp.asarray(np.ones(d) / ls, dtype=dtype)
    dtheta = xp.zeros(ls.size + 1, dtype=np.float64)
    damp = xp.zeros(n, dtype=np.float64)
    _, contract_kernel = _cuda_kernels(dtype)
    grid = ((n + TILE - 1) // TILE, (n + TILE - 1) // TILE)
    scalar = dtype.type
    _cuda_launch(
        contract_kernel, xp, grid, W, X, inv_ls, scalar(variance),
        xp.ones(n, dtype=dtype) if amp is None else amp, ls.size == 1,
        scalar(-0.5), scalar(0.0), dtheta, damp,
    )
    dtheta = (0.5 * dtheta).astype(dtype)
    return dtheta, None if amp is None else (0.5 * damp).astype(dtype)


def rbf_matrix(X, Y=None, lengthscale=1.0, variance=1.0, amp_x=None, amp_y=None, impl="cpu"):
    """Kernel matrix K(X, Y); see :func:`rbf_matrix_reference` for the parameters."""
    if impl == "reference":
        return rbf_matrix_reference(X, Y, lengthscale, variance, amp_x, amp_y)
    if impl == "cpu":
        return _rbf_matrix_cpu(X, Y, lengthscale, variance, amp_x, amp_y)
    if impl == "cuda":
        return _rbf_matrix_cuda(X, Y, lengthscale, variance, amp_x, amp_y)
    raise NotImplementedError(f"rbf_matrix impl={impl!r} not written yet")


def rbf_grad_contract(W, X, lengthscale=1.0, variance=1.0, amp=None, impl="cpu"):
    """Gradient contractions; see :func:`rbf_grad_contract_reference`."""
    if impl == "reference":
        return rbf_grad_contract_reference(W, X, lengthscale, variance, amp)
    if impl == "cpu":
        return _rbf_grad_contract_cpu(W, X, lengthscale, variance, amp)
    if impl == "cuda":
        return _rbf_grad_contract_cuda(W, X, lengthscale, variance, amp)
    raise NotImplementedError(f"rbf_grad_contract impl={impl!r} not written yet")
