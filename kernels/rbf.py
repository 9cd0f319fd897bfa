"""The RBF (squared-exponential) kernel matrix and its gradient contraction.

.. math::

    k(x_i, y_j) = s\\, a_i\\, b_j \\exp\\Big(-\\tfrac12 \\sum_k (x_{ik} - y_{jk})^2 / l_k^2\\Big)

with signal variance ``s``, isotropic or per-dimension (ARD) lengthscales ``l``, and
optional per-point amplitudes ``a`` (rows of X) and ``b`` (rows of Y). With amplitudes
``a_i = sqrt(sigma_i)`` this is the kernel of Variational Autoencoded Regression,
``sqrt(sigma_i sigma_j) exp(-||x_i - x_j||^2 / 2 l^2)``; it stays positive semi-definite.

Implementations (same signature, ``impl=`` picks): ``reference`` (NumPy, this file),
``cpu`` (Numba) and ``cuda`` (Numba-CUDA). Importing this module imports Numba but
neither numba.cuda nor CuPy: the cuda kernels are compiled on first use.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import numba
import numpy as np

from ._cuda import launch
from ._math import EXP_MIN, exp_nonpositive


def _float_dtype(X):
    """The dtype every implementation computes and returns in for points of ``X``'s dtype:
    float32 and float64 as given, anything else (integers, bool, float16) float64."""
    return X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float64)


def _check_real(X, name):
    """Raise ValueError unless ``X`` holds real numbers: a cast of complex (or string,
    object) points to float would drop or garble them; every implementation checks this."""
    if X.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} has dtype {X.dtype}; points must be real numbers (float, integer or "
            f"bool); for complex data pass {name}.real or stack real and imaginary parts as "
            "columns"
        )


def _check_variance(variance):
    """Raise ValueError unless ``variance`` is a single number (a float, a NumPy scalar or
    a 0-d array); every implementation takes exactly these."""
    if np.ndim(variance) != 0:
        raise ValueError(
            f"variance must be a float, got an array of shape {np.shape(variance)}; pass "
            f"one number (variance.item() for a one-element array)"
        )


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


def rbf_matrix_reference(X, Y=None, lengthscale=1.0, variance=1.0, amp_x=None, amp_y=None,
                         out=None):
    """Kernel matrix K(X, Y), plain NumPy (the specification).

    Parameters
    ----------
    X : (n, d) array
    Y : (m, d) array or None
        None means Y = X (and amp_y = amp_x).
    lengthscale : float or (d,) array
    variance : float
        One number (a NumPy scalar or a 0-d array is taken too).
    amp_x : (n,) array or None
    amp_y : (m,) array or None
    out : (n, m) array or None
        Where to write K: C-contiguous, writeable, of K's dtype, sharing no memory with
        X or Y (see :func:`rbf_matrix`); None allocates a new array.

    Returns
    -------
    K : (n, m) array, dtype of X (float64 for X of any dtype but float32 and float64);
        ``out`` itself when given.
    """
    X = np.asarray(X)
    _check_real(X, "X")
    X = X.astype(_float_dtype(X), copy=False)
    symmetric = Y is None
    Y = X if symmetric else np.asarray(Y)
    _check_real(Y, "Y")
    _check_variance(variance)
    ls = _check_lengthscale(lengthscale, X.shape[1], X.dtype)
    diff = (X[:, None, :] - Y[None, :, :]) / ls
    K = variance * np.exp(-0.5 * np.sum(diff * diff, axis=-1))
    if symmetric:
        amp_y = amp_x
    if amp_x is not None:
        K = K * np.asarray(amp_x)[:, None]
    if amp_y is not None:
        K = K * np.asarray(amp_y)[None, :]
    if out is None:
        return K.astype(X.dtype, copy=False)
    _check_out(out, K.shape, X.dtype, (X, Y))[...] = K
    return out


def rbf_grad_contract_reference(W, X, lengthscale=1.0, variance=1.0, amp=None):
    """The contractions ``0.5 * sum_ij W_ij dK_ij/dtheta`` of K = K(X, X), plain NumPy.

    Parameters
    ----------
    W : (n, n) array
        The weight matrix; for the GP log marginal likelihood, ``alpha alpha^T - K^-1``.
    X : (n, d) array
    lengthscale : float or (d,) array
    variance : float
        One number (a NumPy scalar or a 0-d array is taken too).
    amp : (n,) array or None
        Per-point amplitudes a (the kernel is s a_i a_j exp(...)).

    Returns
    -------
    dtheta : (p + 1,) array, dtype of X (float64 for X of any dtype but float32 and float64)
        ``0.5 sum W dK/dlog l_k`` for each lengthscale (p = 1 isotropic, p = d ARD), then
        ``0.5 sum W dK/dlog s``.
    damp : (n,) array or None, dtype as dtheta
        ``0.5 sum_ij W_ij dK_ij/da_p`` for each p, or None without amplitudes.

    Notes
    -----
    Derivation: docs/derivations.md, "The RBF kernel and its partial derivatives".

    dK_ij/dlog l_k = K_ij (x_ik - x_jk)^2 / l_k^2 ;  dK_ij/dlog s = K_ij ;
    dK_ij/da_p = s E_ij (delta_ip a_j + a_i delta_jp), E the exponential factor.
    This reference forms the n x n x d tensor; the fast implementations never do.
    """
    X = np.asarray(X)
    _check_real(X, "X")
    X = X.astype(_float_dtype(X), copy=False)
    W = np.asarray(W)
    _check_variance(variance)
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


def _check_points(X, name):
    """Raise ValueError unless ``X`` is a 2-D array of real points; NumPy points must also
    be finite. CuPy points are not read: that would block on a device-to-host copy in
    every call (the model layer checks its inputs on the host before they go to the GPU)."""
    _check_real(X, name)
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (points in rows), got shape {X.shape}; "
            f"reshape a single column with {name}.reshape(-1, 1)"
        )
    if not isinstance(X, np.ndarray):
        return
    finite = np.isfinite(X)
    bad_rows = np.nonzero(~np.all(finite, axis=1))[0]
    if bad_rows.size:
        raise ValueError(
            f"{name} has {int((~finite).sum())} non-finite values (first at row "
            f"{int(bad_rows[0])}); remove or impute them"
        )


def _check_out(out, shape, dtype, inputs, xp=np):
    """``out`` if it can hold K(X, Y) as every implementation writes it, else ValueError:
    an array of ``xp``, of ``shape`` and ``dtype``, C-contiguous, writeable, and sharing
    no memory with ``inputs`` (the kernels read the points while they write K)."""
    if not isinstance(out, xp.ndarray):
        raise ValueError(
            f"out is a {type(out).__name__}; it must be a {xp.__name__} array of shape "
            f"{shape} and dtype {dtype}, e.g. {xp.__name__}.empty({shape}, {dtype.name!r})"
        )
    problems = []
    if out.shape != tuple(shape):
        problems.append(f"shape {out.shape}, not {tuple(shape)}")
    if out.dtype != dtype:
        problems.append(f"dtype {out.dtype}, not {dtype}")
    if not out.flags.c_contiguous:
        problems.append("memory that is not C-contiguous")
    if not out.flags.writeable:
        problems.append("read-only memory")
    if any(xp.may_share_memory(out, x) for x in inputs):
        problems.append("memory shared with the points")
    if problems:
        raise ValueError(
            f"out has {', '.join(problems)}; pass a new {xp.__name__}.empty({tuple(shape)}, "
            f"{dtype.name!r}) or an array of that shape, dtype and memory order"
        )
    return out


def _check_amp(amp, n, name, dtype, xp=np):
    if amp is None:
        return None
    amp = xp.ascontiguousarray(xp.asarray(amp, dtype=dtype).reshape(-1))
    if amp.shape[0] != n:
        raise ValueError(
            f"{name} has {amp.shape[0]} values but there are {n} points; give one per row"
        )
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
    _check_variance(variance)
    return X, Y, symmetric, ls, float(_to_host(variance)), amp_x, amp_y


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
    W = xp.ascontiguousarray(W, dtype=_float_dtype(W))
    ls = _check_lengthscale(_to_host(lengthscale), X.shape[1], np.float64)
    amp = _check_amp(amp, n, "amp", dtype, xp)
    _check_variance(variance)
    return W, X, ls, float(_to_host(variance)), amp


def _to_host(x):
    """A host copy of a small array or scalar (CuPy arrays expose .get())."""
    return x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else x


# ---- cpu: Numba --------------------------------------------------------------------------

#: Edge of the square tiles the cpu kernels work on: a tile's distances, exponentials and
#: exponent bits (3 x 8 CPU_TILE^2 bytes) stay in the L2 cache while it is written out.
#: Measured on the 2-core dev machine (n = 4000, CPU time): 32, 64 and 128 within 15%,
#: 128 the fastest.
CPU_TILE = 128
#: From this many columns on, the cpu rbf_matrix forms squared distances from one matrix
#: product per tile (BLAS), ||x||^2 + ||y||^2 - 2 x.y, instead of summing differences
#: (measured crossover between d = 8 and d = 16).
GEMM_MIN_D = 12
#: The product route's rounding leaves an absolute error of a few eps (|x|^2 + |y|^2) in
#: r^2, which is a relative error of the same size in K: tiles whose scaled, shifted points
#: have |x|^2 + |y|^2 above this sum differences instead (error below ~1e-13 otherwise).
GEMM_MAX_SQNORM = 256.0





@numba.njit(cache=True, nogil=True)
def _fix_underflow(arg, out, count):
    """Recompute with libm the entries whose argument was below the clamp (subnormal or 0)."""
    for t in range(count):
        if arg[t] < EXP_MIN:
            out[t] = math.exp(arg[t])


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _tile_arg(X, Yt, inv_ls, Xg, Yg, sqnorm_x, sqnorm_y, i0, j0, bi, bj, use_gemm, arg):
    """``arg[a * bj + b] = -0.5 sum_k ((x_(i0+a)k - y_(j0+b)k) / l_k)^2`` for one tile.

    Summed differences ``(x_k - y_k) / l_k`` of the points X and Y^T as given (each term
    exact to rounding), or with ``use_gemm`` one matrix product of the shifted, scaled
    points Xg and Yg: ``|x|^2 + |y|^2 - 2 x.y`` clamped at 0 (see _scaled_points).
    """
    d = X.shape[1]
    if use_gemm:
        gram = arg[: bi * bj].reshape((bi, bj))
        np.dot(Xg[i0 : i0 + bi], Yg[j0 : j0 + bj].T, gram)
        for a in range(bi):
            sa = sqnorm_x[i0 + a]
            row = arg[a * bj : (a + 1) * bj]
            for b in range(bj):
                row[b] = -0.5 * max(sa + sqnorm_y[j0 + b] - 2.0 * row[b], 0.0)
        return
    for a in range(bi):
        row = arg[a * bj : (a + 1) * bj]
        for b in range(bj):
            row[b] = 0.0
        for k in range(d):
            xa = X[i0 + a, k]
            inv_l = inv_ls[k]
            yk = Yt[k, j0 : j0 + bj]
            for b in range(bj):
                diff = (xa - yk[b]) * inv_l
                row[b] += diff * diff
        for b in range(bj):
            row[b] *= -0.5


@numba.njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})
def _dot(u, v, count):
    """``sum_b u[b] v[b]`` over ``count`` entries (reassociated, so it vectorises)."""
    total = 0.0
    for b in range(count):
        total += u[b] * v[b]
    return total


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _sum(u, count):
    """``sum_b u[b]`` over ``count`` entries (reassociated, so it vectorises)."""
    total = 0.0
    for b in range(count):
        total += u[b]
    return total


@numba.njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})
def _weighted_sq_diff(x, y, weight, count):
    """``sum_b weight[b] (x - y[b])^2`` (reassociated, so it vectorises)."""
    total = 0.0
    for b in range(count):
        diff = x - y[b]
        total += weight[b] * (diff * diff)
    return total


@numba.njit(cache=True, parallel=True, nogil=True, fastmath={"contract"})
def _matrix_tiles(
    X, Yt, inv_ls, Xg, Yg, sqnorm_x, sqnorm_y, amp_x, amp_y, variance, tile_i, tile_j,
    may_underflow, symmetric, use_gemm, out,
):
    """Fill ``out`` tile by tile; with ``symmetric`` only tiles on and below the diagonal
    are computed, and each is written twice (in place and mirrored). ``use_gemm[t]`` picks
    tile t's route to the squared distances."""
    n, m = X.shape[0], Yt.shape[1]
    size = CPU_TILE * CPU_TILE
    for t in numba.prange(tile_i.shape[0]):
        i0 = tile_i[t] * CPU_TILE
        j0 = tile_j[t] * CPU_TILE
        bi = min(CPU_TILE, n - i0)
        bj = min(CPU_TILE, m - j0)
        arg = np.empty(size)
        kern = np.empty(size)
        scale_bits = np.empty(size, dtype=np.int64)
        _tile_arg(X, Yt, inv_ls, Xg, Yg, sqnorm_x, sqnorm_y, i0, j0, bi, bj, use_gemm[t], arg)
        exp_nonpositive(arg, kern, scale_bits, bi * bj)
        if may_underflow[t]:
            _fix_underflow(arg, kern, bi * bj)
        diagonal = symmetric and i0 == j0
        # a diagonal tile writes its lower triangle and mirrors it: K(X) is exactly symmetric
        amp_cols = amp_y[j0 : j0 + bj]
        for a in range(bi):
            amp_a = amp_x[i0 + a]
            row = kern[a * bj : (a + 1) * bj]
            out_row = out[i0 + a, j0 : j0 + bj]
            for b in range(a + 1 if diagonal else bj):
                value = (variance * row[b]) * (amp_a * amp_cols[b])
                row[b] = value
                out_row[b] = value
        if symmetric:
            # the mirror image: tile row a becomes column i0 + a of out's rows j0..j0 + bj
            # (their bj cache lines stay in L1 while the tile's rows go by; measured faster
            # than copying blocks of 8 or 16 columns, and than writing out's rows whole)
            for a in range(bi):
                row = kern[a * bj : (a + 1) * bj]
                for b in range(a if diagonal else bj):
                    out[j0 + b, i0 + a] = row[b]


@numba.njit(cache=True, parallel=True, nogil=True, fastmath={"contract"})
def _contract_tiles(
    W, X, Xt, amp, variance, tile_i, tile_j, may_underflow, terms, row_damp, col_damp
):
    """Per tile (i0 >= j0) of the lower triangle: the tile's share of the sums.

    A tile below the diagonal stands for both (i, j) and (j, i) and uses the weight
    W_ij + W_ji (K is symmetric); a diagonal tile takes every ordered pair with W_ij.
    ``terms[t, k]`` collects sum w K (x_k - y_k)^2 (k < d) and sum w K (k = d);
    ``row_damp[t, a]`` and ``col_damp[t, b]`` the tile's row and column sums of w K0 a.
    """
    n, d = X.shape
    size = CPU_TILE * CPU_TILE
    ones = np.ones(max(n, d))
    for t in numba.prange(tile_i.shape[0]):
        i0 = tile_i[t] * CPU_TILE
        j0 = tile_j[t] * CPU_TILE
        bi = min(CPU_TILE, n - i0)
        bj = min(CPU_TILE, n - j0)
        arg = np.empty(size)
        kern = np.empty(size)
        scale_bits = np.empty(size, dtype=np.int64)
        weighted = np.empty(CPU_TILE)
        weighted_amp = np.empty(CPU_TILE)
        _tile_arg(X, Xt, ones, X, X, ones, ones, i0, j0, bi, bj, False, arg)
        exp_nonpositive(arg, kern, scale_bits, bi * bj)
        if may_underflow[t]:
            _fix_underflow(arg, kern, bi * bj)
        mirrored = i0 != j0
        amp_cols = amp[j0 : j0 + bj]
        for a in range(bi):
            i = i0 + a
            amp_a = amp[i]
            for b in range(bj):
                w = W[i, j0 + b] + W[j0 + b, i] if mirrored else W[i, j0 + b]
                weighted[b] = w * (variance * kern[a * bj + b])
            row_damp[t, a] = _dot(weighted, amp_cols, bj)
            for b in range(bj):
                col_damp[t, b] += weighted[b] * amp_a
                weighted_amp[b] = weighted[b] * (amp_a * amp_cols[b])
            terms[t, d] += _sum(weighted_amp, bj)
            for k in range(d):
                terms[t, k] += _weighted_sq_diff(X[i, k], Xt[k, j0 : j0 + bj], weighted_amp, bj)


def _scaled_points(X, Y, ls):
    """Points shifted by X's first row and divided by the lengthscales, as float64.

    Distances do not change under a shift; this one keeps |x| small for the matrix-product
    route (and bounds |x_i - y_j| <= |x_i| + |y_j| for the underflow check). The shift's
    own rounding, eps |x - x_0| per coordinate, is why rbf_matrix's summed-difference
    route works on the points as given instead.
    """
    shift = X[0].astype(np.float64)
    Xs = np.ascontiguousarray((X - shift) / ls, dtype=np.float64)
    Ys = Xs if Y is None else np.ascontiguousarray((Y - shift) / ls, dtype=np.float64)
    return Xs, Ys


def _tiles(n, m, symmetric, norm_x, norm_y):
    """Tile coordinates (lower triangle when symmetric), whether a tile may underflow, and
    each tile's largest |x_i|^2 + |y_j|^2.

    |x_i - y_j| <= |x_i| + |y_j|, so a tile's exponent stays above -708 (no subnormal
    results) when the largest norms of its rows and columns add to less than sqrt(1416).
    """
    nb_x = (n + CPU_TILE - 1) // CPU_TILE
    nb_y = (m + CPU_TILE - 1) // CPU_TILE
    if symmetric:
        tile_i, tile_j = np.tril_indices(nb_x)
    else:
        tile_i, tile_j = (idx.ravel() for idx in np.indices((nb_x, nb_y)))
    max_x = np.maximum.reduceat(norm_x, np.arange(0, n, CPU_TILE))
    max_y = np.maximum.reduceat(norm_y, np.arange(0, m, CPU_TILE))
    bound = 0.5 * (max_x[tile_i] + max_y[tile_j]) ** 2 * (1 + 1e-9)
    sqnorm_bound = max_x[tile_i] ** 2 + max_y[tile_j] ** 2
    return tile_i.astype(np.int64), tile_j.astype(np.int64), bound > -EXP_MIN, sqnorm_bound


def _rbf_matrix_cpu(X, Y, lengthscale, variance, amp_x, amp_y, out):
    X, Y, symmetric, ls, variance, amp_x, amp_y = _prepare_matrix(
        X, Y, lengthscale, variance, amp_x, amp_y
    )
    n, d = X.shape
    m = Y.shape[0]
    if out is None:
        out = np.empty((n, m), dtype=X.dtype)
    else:
        _check_out(out, (n, m), X.dtype, (X, Y))
    if n == 0 or m == 0:
        return out
    Xs, Ys = _scaled_points(X, None if symmetric else Y, ls)
    sqnorm_x = np.einsum("ij,ij->i", Xs, Xs)
    sqnorm_y = sqnorm_x if symmetric else np.einsum("ij,ij->i", Ys, Ys)
    tile_i, tile_j, may_underflow, sqnorm_bound = _tiles(
        n, m, symmetric, np.sqrt(sqnorm_x), np.sqrt(sqnorm_y)
    )
    amp_x = np.ones(n) if amp_x is None else amp_x.astype(np.float64)
    amp_y = np.ones(m) if amp_y is None else amp_y.astype(np.float64)
    # the product route for many columns, in tiles whose points are near enough to the
    # shift for its cancellation to stay below 1e-13 relative in K (see GEMM_MAX_SQNORM);
    # not for one tile (no threads to keep BLAS out of; differences are as fast there)
    use_gemm = (d >= GEMM_MIN_D and tile_i.size > 1) & (sqnorm_bound <= GEMM_MAX_SQNORM)
    args = (
        np.ascontiguousarray(X, dtype=np.float64), np.ascontiguousarray(Y.T, dtype=np.float64),
        np.ones(d) / ls, Xs, Ys, sqnorm_x, sqnorm_y, amp_x, amp_y, variance,
        tile_i, tile_j, may_underflow, symmetric, use_gemm, out,
    )
    # tiles handed out one at a time: the triangle's rows differ in length, and a busy
    # machine can stall one thread; with BLAS inside a Numba thread, BLAS must not start
    # threads of its own
    blas_in_threads = bool(use_gemm.any())
    with numba.parallel_chunksize(1), _blas_single_thread() if blas_in_threads else nullcontext():
        _matrix_tiles(*args)
    return out


_BLAS_CONTROLLER = None


def _blas_single_thread():
    """A context in which BLAS runs single-threaded (the controller is built once)."""
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


def _rbf_grad_contract_cpu(W, X, lengthscale, variance, amp):
    W, X, ls, variance, amp = _prepare_contract(W, X, lengthscale, variance, amp)
    n, d = X.shape
    if n == 0:
        return np.zeros(ls.size + 1, dtype=X.dtype), None if amp is None else np.zeros(0, X.dtype)
    Xs, _ = _scaled_points(X, None, ls)
    norms = np.sqrt(np.einsum("ij,ij->i", Xs, Xs))
    tile_i, tile_j, may_underflow, _ = _tiles(n, n, True, norms, norms)
    tiles = tile_i.shape[0]
    terms = np.zeros((tiles, d + 1))
    row_damp = np.zeros((tiles, CPU_TILE))
    col_damp = np.zeros((tiles, CPU_TILE))
    with numba.parallel_chunksize(1):
        _contract_tiles(
            W, Xs, np.ascontiguousarray(Xs.T),
            np.ones(n) if amp is None else amp.astype(np.float64),
            variance, tile_i, tile_j, may_underflow, terms, row_damp, col_damp,
        )
    total = 0.5 * terms.sum(axis=0)
    g_ls = total[:d] if ls.size == d else total[:d].sum(keepdims=True)
    dtheta = np.concatenate([g_ls, total[d:]]).astype(X.dtype)
    if amp is None:
        return dtheta, None
    offsets = np.arange(CPU_TILE)
    rows = (tile_i[:, None] * CPU_TILE + offsets).ravel()
    cols = (tile_j[:, None] * CPU_TILE + offsets).ravel()
    damp = np.bincount(rows, row_damp.ravel(), minlength=n + CPU_TILE)
    damp += np.bincount(cols, col_damp.ravel(), minlength=n + CPU_TILE)
    return dtheta, (0.5 * damp[:n]).astype(X.dtype)


# ---- cuda: Numba-CUDA -------------------------------------------------------------------

#: Output tile edge: a block of TILE x TILE threads computes a TILE x TILE tile of K.
TILE = 16
#: Columns of X and Y held in shared memory at a time (the d loop runs in chunks).
DCHUNK = 16
# Shared-array row lengths, padded by one so a column walk hits distinct banks. Plain int
# globals: Numba types them as compile-time constants, as cuda.shared.array's shape needs
# (an expression such as DCHUNK + 1 inside a kernel is typed as a run-time integer).
_DCHUNK_PAD = DCHUNK + 1
_TILE_PAD = TILE + 1

_CUDA = {}
cuda = None  # numba.cuda, bound on first use of a cuda kernel


def _array_module(x):
    """``cupy`` for CuPy arrays, else ``numpy``; imports CuPy only when given one."""
    if type(x).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def _launch_geometry(n, m):
    """``(grid, block)`` for an (n, m) output: one TILE x TILE block per tile, the tiles
    numbered row-major on grid.x alone. grid.x holds up to 2^31 - 1 blocks (grid.y and
    grid.z only 65535), so any output that fits in a GPU's memory gets one launch."""
    blocks = ((n + TILE - 1) // TILE) * ((m + TILE - 1) // TILE)
    return (blocks,), (TILE, TILE)


def _cuda_kernels(dtype):
    """The two CUDA kernels for ``dtype`` (float32 or float64), compiled on first use."""
    key = np.dtype(dtype).str
    if key in _CUDA:
        return _CUDA[key]
    # ``cuda`` must be a module global: the simulator swaps module globals that refer to
    # numba.cuda for its fake module, and it would miss a local name.
    global cuda
    from numba import cuda

    value_type = numba.float32 if np.dtype(dtype) == np.float32 else numba.float64

    @cuda.jit(device=True)
    def tile_origin(n_cols):
        """The first row and column of this block's tile (see _launch_geometry)."""
        col_blocks = (n_cols + TILE - 1) // TILE
        row_block = cuda.blockIdx.x // col_blocks
        return row_block * TILE, (cuda.blockIdx.x - row_block * col_blocks) * TILE

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

    @cuda.jit
    def matrix_kernel(X, Y, inv_ls, variance, amp_x, amp_y, neg_half, zero, out):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row0, col0 = tile_origin(out.shape[1])
        x_tile = cuda.shared.array((TILE, _DCHUNK_PAD), value_type)
        y_tile = cuda.shared.array((TILE, _DCHUNK_PAD), value_type)
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
            # (s e)(a_i b_j): the same bits for (i, j) and (j, i), so K(X) is exactly symmetric
            out[i, j] = (variance * math.exp(neg_half * r2)) * (amp_x[i] * amp_y[j])

    @cuda.jit
    def contract_kernel(W, X, inv_ls, variance, amp, with_amp, neg_half, zero, dtheta, damp):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row0, col0 = tile_origin(X.shape[0])
        x_tile = cuda.shared.array((TILE, _DCHUNK_PAD), value_type)
        y_tile = cuda.shared.array((TILE, _DCHUNK_PAD), value_type)
        wk_tile = cuda.shared.array((TILE, _TILE_PAD), numba.float64)
        row_amp = cuda.shared.array((TILE, _TILE_PAD), numba.float64)
        col_amp = cuda.shared.array((TILE, _TILE_PAD), numba.float64)
        partial = cuda.shared.array((TILE, _DCHUNK_PAD), numba.float64)
        n, d = X.shape
        i = row0 + ty
        j = col0 + tx
        r2 = zero
        for k0 in range(0, d, DCHUNK):
            load_tiles(X, X, inv_ls, row0, col0, k0, x_tile, y_tile, zero)
            cuda.syncthreads()
            for c in range(min(DCHUNK, d - k0)):
                diff = x_tile[ty, c] - y_tile[tx, c]
                r2 += diff * diff
            cuda.syncthreads()
        wk0 = 0.0
        a_i = 0.0
        a_j = 0.0
        if i < n and j < n:
            wk0 = W[i, j] * (variance * math.exp(neg_half * r2))
            a_i = amp[i]
            a_j = amp[j]
        wk_tile[ty, tx] = wk0 * a_i * a_j
        row_amp[ty, tx] = wk0 * a_j
        col_amp[ty, tx] = wk0 * a_i
        cuda.syncthreads()
        # amplitude gradient: tile row sums go to a_i, column sums to a_j; the row sums of
        # W * K (for the variance) are kept in partial[:, 0]
        if tx == 0:
            amp_total = 0.0
            var_total = 0.0
            for c in range(TILE):
                amp_total += row_amp[ty, c]
                var_total += wk_tile[ty, c]
            if i < n and with_amp:
                cuda.atomic.add(damp, i, amp_total)
            partial[ty, 0] = var_total
        if ty == 0 and j < n and with_amp:
            amp_total = 0.0
            for r in range(TILE):
                amp_total += col_amp[r, tx]
            cuda.atomic.add(damp, j, amp_total)
        cuda.syncthreads()
        if tx == 0 and ty == 0:
            var_total = 0.0
            for r in range(TILE):
                var_total += partial[r, 0]
            cuda.atomic.add(dtheta, d, var_total)
        # lengthscales: thread (ty, tx) sums row ty of W K (x_k - y_k)^2 for column k0 + tx,
        # then row 0 sums the TILE partial sums of each column: one atomic per column
        for k0 in range(0, d, DCHUNK):
            cuda.syncthreads()
            load_tiles(X, X, inv_ls, row0, col0, k0, x_tile, y_tile, zero)
            cuda.syncthreads()
            for c in range(tx, DCHUNK, TILE):
                row_total = 0.0
                for jj in range(TILE):
                    diff = x_tile[ty, c] - y_tile[jj, c]
                    row_total += wk_tile[ty, jj] * (diff * diff)
                partial[ty, c] = row_total
            cuda.syncthreads()
            if ty == 0:
                for c in range(tx, min(DCHUNK, d - k0), TILE):
                    col_total = 0.0
                    for r in range(TILE):
                        col_total += partial[r, c]
                    cuda.atomic.add(dtheta, k0 + c, col_total)

    _CUDA[key] = (matrix_kernel, contract_kernel)
    return _CUDA[key]


def _rbf_matrix_cuda(X, Y, lengthscale, variance, amp_x, amp_y, out):
    xp = _array_module(X)
    X, Y, symmetric, ls, variance, amp_x, amp_y = _prepare_matrix(
        X, Y, lengthscale, variance, amp_x, amp_y, xp
    )
    dtype = X.dtype
    n, m = X.shape[0], Y.shape[0]
    inv_ls = xp.asarray(np.ones(X.shape[1]) / ls, dtype=dtype)
    ones = xp.ones(max(n, m), dtype=dtype)
    if out is None:
        out = xp.empty((n, m), dtype=dtype)
    else:
        _check_out(out, (n, m), dtype, (X, Y), xp)
    if n == 0 or m == 0:
        return out
    matrix_kernel, _ = _cuda_kernels(dtype)
    scalar = dtype.type
    launch(
        matrix_kernel, *_launch_geometry(n, m), X, Y, inv_ls, scalar(variance),
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
    dtheta = xp.zeros(d + 1, dtype=np.float64)
    damp = xp.zeros(n, dtype=np.float64)
    if n == 0:
        return dtheta[: ls.size + 1].astype(dtype), None if amp is None else damp.astype(dtype)
    _, contract_kernel = _cuda_kernels(dtype)
    scalar = dtype.type
    launch(
        contract_kernel, *_launch_geometry(n, n), W, X, inv_ls, scalar(variance),
        xp.ones(n, dtype=dtype) if amp is None else amp, amp is not None,
        scalar(-0.5), scalar(0.0), dtheta, damp,
    )
    if ls.size == 1:
        dtheta = xp.stack([dtheta[:d].sum(), dtheta[d]])
    dtheta = (0.5 * dtheta).astype(dtype)
    return dtheta, None if amp is None else (0.5 * damp).astype(dtype)


def rbf_matrix(X, Y=None, lengthscale=1.0, variance=1.0, amp_x=None, amp_y=None, impl="cpu",
               out=None):
    """Kernel matrix K(X, Y); see :func:`rbf_matrix_reference` for the other parameters.

    Parameters
    ----------
    impl : {"cpu", "cuda", "reference"}
        ``"cpu"``: Numba, NumPy arrays (float32 inputs are computed in float64 and rounded
        once); ``"cuda"``: Numba-CUDA, CuPy arrays on the GPU (on CuPy's current stream) or
        NumPy arrays under the CUDA simulator; ``"reference"``: plain NumPy.
    out : (n, m) array or None
        Where to write K, e.g. one workspace reused across calls of the same size: a
        C-contiguous, writeable array of K's dtype (a CuPy array for CuPy points), sharing
        no memory with X or Y. A fresh n x m output costs a first touch of every page
        (the kernel zeroes them; on a virtual machine the host may back them too); a
        reused one does not. None allocates a new array.

    Returns
    -------
    K : (n, m) array, dtype of X (float64 for X of any dtype but float32 and float64);
        with Y None, exactly symmetric for ``"cpu"``. ``out`` itself when given.

    Raises
    ------
    ValueError
        X or Y not 2-D or (NumPy arrays) not finite, column counts that differ, a lengthscale that is not
        positive or has neither 1 nor d values, a variance that is not one number,
        amplitudes of the wrong length, an ``out`` of the wrong shape, dtype or memory
        order, an unknown ``impl``.
    """
    if impl == "reference":
        return rbf_matrix_reference(X, Y, lengthscale, variance, amp_x, amp_y, out)
    if impl == "cpu":
        return _rbf_matrix_cpu(X, Y, lengthscale, variance, amp_x, amp_y, out)
    if impl == "cuda":
        return _rbf_matrix_cuda(X, Y, lengthscale, variance, amp_x, amp_y, out)
    raise ValueError(f"impl={impl!r} is not one of 'reference', 'cpu', 'cuda'")


def rbf_grad_contract(W, X, lengthscale=1.0, variance=1.0, amp=None, impl="cpu"):
    """The contractions ``0.5 sum_ij W_ij dK_ij/dtheta``; see
    :func:`rbf_grad_contract_reference` for the parameters and returns.

    Derivation: docs/derivations.md, "The RBF kernel and its partial derivatives".
    One pass over the pairs, never forming an n x n x d tensor. W need not be symmetric:
    the cpu kernel visits each unordered pair once with weight W_ij + W_ji, the cuda
    kernel every ordered pair with W_ij.

    Parameters
    ----------
    impl : {"cpu", "cuda", "reference"}
        As for :func:`rbf_matrix`.

    Raises
    ------
    ValueError
        W not of shape (n, n), X not 2-D or (a NumPy array) not finite, a bad lengthscale or amplitude
        length, a variance that is not one number, an unknown ``impl``.
    """
    if impl == "reference":
        return rbf_grad_contract_reference(W, X, lengthscale, variance, amp)
    if impl == "cpu":
        return _rbf_grad_contract_cpu(W, X, lengthscale, variance, amp)
    if impl == "cuda":
        return _rbf_grad_contract_cuda(W, X, lengthscale, variance, amp)
    raise ValueError(f"impl={impl!r} is not one of 'reference', 'cpu', 'cuda'")
