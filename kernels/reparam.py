"""The reparameterisation trick (Kingma & Welling 2014, Sec. 2.4) and its backward.

Forward: ``z[l] = mu + exp(logvar / 2) * eps[l]`` for each of L samples.
Backward: ``dmu = sum_l dz[l]``, ``dlogvar = 0.5 * exp(logvar / 2) * sum_l dz[l] * eps[l]``
(docs/derivations.md, "Reparameterisation").

Implementations (same signature, ``impl=`` picks): ``reference`` (NumPy, this file),
``cpu`` (Numba: one fused pass over ``eps`` and ``dz`` per direction, ``exp(logvar / 2)``
by a vectorised polynomial exp, blocks of entries spread over threads) and ``cuda``
(Numba-CUDA, a grid-stride loop over the ``n * k`` entries of ``mu``; each thread loops over the L
samples so ``exp(logvar / 2)`` is computed once per entry).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._cuda import blocks_for, launch
from ._math import exp_nonpositive

_THREADS_PER_BLOCK = 128
_MAX_BLOCKS = 1024


def reparam_forward_reference(mu, logvar, eps):
    """Samples ``z = mu + exp(logvar/2) * eps``.

    Parameters
    ----------
    mu, logvar : (n, k) arrays
    eps : (L, n, k) array of standard-normal draws

    Returns
    -------
    z : (L, n, k) array
    """
    return mu[None] + np.exp(0.5 * logvar)[None] * eps


def reparam_backward_reference(dz, logvar, eps):
    """Gradients of the loss with respect to mu and logvar, given ``dz`` of shape (L, n, k).

    Derivation: docs/derivations.md, "Reparameterisation".

    Returns
    -------
    dmu, dlogvar : (n, k) arrays
    """
    dmu = dz.sum(axis=0)
    dlogvar = 0.5 * np.exp(0.5 * logvar) * (dz * eps).sum(axis=0)
    return dmu, dlogvar


# ---- cpu: Numba ------------------------------------------------------------------------

# One fused pass per direction. The arrays are contiguous, so they are walked as flat runs
# of n * k entries, block by block: a block's exp(logvar / 2) goes into a small buffer by
# a vectorised polynomial exp (Numba has no vector math library here, and a scalar
# math.exp per entry costs more than the rest of the kernel) and is used while the
# block's mu, eps and dz stream past it; no temporary the size of the inputs is made.
# float64 outputs take kernels/rbf.py's float64 exp (1 ulp); float32 outputs a float32
# polynomial (_std_float32), a third of the cost, as accurate as float32 needs. With at
# least two blocks and _PARALLEL_MIN_ENTRIES[dtype] entries of eps, the blocks are spread over
# threads (prange; see _parallel): a block is one thread's work, so with one block the
# parallel build only pays the thread pool's wake-up (measured at 40 x 100 x 20 float32:
# 65 us against 11 us serially). The serial and parallel kernels are distinct functions,
# so Numba's cache keeps one entry for each; they give bit-identical results.
#: Entries of eps from which the parallel build is taken, by dtype: below, waking the thread
#: pool costs more than the second core saves. Measured on the 2-core dev machine (median
#: us, one sample, serial / parallel, forward): float32 2^16 50 / 93, 2^17 103 / 111,
#: 2^18 302 / 224; float64 2^15 60 / 92, 2^16 134 / 120, 2^17 309 / 220.
_PARALLEL_MIN_ENTRIES = {np.dtype(np.float32): 1 << 17, np.dtype(np.float64): 1 << 16}
#: Entries per block: the work buffers (8 bytes an entry for float32, 28 for float64) stay
#: in the L1/L2 cache. 4096-16384 measured alike at 4096 x 256 float32; 1024 12% slower.
_BLOCK = 4096
# exp_nonpositive (float64) is within 1 ulp of NumPy's exp for -708 <= x <= 709 (its
# range reduction does not depend on the sign; 2^k overflows above): arguments outside,
# NaN included, are recomputed with libm's exp.
_EXP64_MIN = -708.0
_EXP64_MAX = 709.0
# The float32 exp below: 2^k is a normal float32 for these arguments; outside (results
# subnormal, 0 or inf) and for NaN, libm's exp is used instead.
_EXP32_MIN = -87.0
_EXP32_MAX = 88.0
_LOG2E = 1.4426950408889634
# ln 2 split in two (Cody & Waite): k * _LN2_HI_32 is exact in float32 for |k| < 2^15
_LN2_HI_32 = 0.693359375
_LN2_LO_32 = -2.12194440054690582e-4


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _float32_clamp_gap(logvar_block, count):
    """``sum_t |clamp(logvar_t / 2) - logvar_t / 2|`` over the block: 0 exactly when every
    argument is inside [_EXP32_MIN, _EXP32_MAX]; NaN or inf arguments make it NaN or inf.

    A separate function so that ``reassoc`` (which lets the sum vectorise) reaches no other
    arithmetic; a count of comparisons in _std_float32's loop stops that loop vectorising.
    """
    gap = np.float32(0.0)
    for t in range(count):
        half = np.float32(0.5) * logvar_block[t]
        gap += abs(min(max(half, np.float32(_EXP32_MIN)), np.float32(_EXP32_MAX)) - half)
    return gap


@numba.njit(inline="always", fastmath={"contract"})
def exp32_parts(x):
    """``(mantissa, bits)`` with ``exp(x) = mantissa * bits.view(float32)``, float32 ``x`` in
    [_EXP32_MIN, _EXP32_MAX] (the caller clamps, and fixes up what it clamped).

    Notes
    -----
    exp(x) = 2^k exp(r), k = round(x / ln 2), r = x - k ln 2 in [-ln2/2, ln2/2]; exp(r) by
    its Taylor polynomial to degree 7 (truncation below 6e-9 relative, a tenth of a float32
    ulp) in Horner form, 2^k by writing k + 127 into a float32's exponent bits. Inlined into
    the callers' loops (kernels/reparam.py, kernels/bernoulli.py), which vectorise; the
    scaling by 2^k is left to a second loop over the bits viewed as float32.
    """
    k = np.floor(x * np.float32(_LOG2E) + np.float32(0.5))
    r = (x - k * np.float32(_LN2_HI_32)) - k * np.float32(_LN2_LO_32)
    p = r * np.float32(1.0 / 5040.0) + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    return p * r + np.float32(1.0), (np.int32(k) + np.int32(127)) << np.int32(23)


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _std_float32(logvar, start, count, std, scale_bits):
    """``std[:count] = exp(logvar[start:start + count] / 2)`` in float32 arithmetic.

    ``std`` (float32) and ``scale_bits`` (int32) hold at least ``count`` entries.

    Notes
    -----
    The exp is :func:`exp32_parts`, within 2 float32 ulp of NumPy's float32 exp
    (tests/test_reparam.py sweeps the range). The
    float32 counterpart of kernels/_math.py's float64 ``exp_nonpositive``, which costs
    about three times as much per entry (degree 13, four float64 lanes per vector).
    """
    logvar_block = logvar[start : start + count]
    for t in range(count):
        half = np.float32(0.5) * logvar_block[t]
        x = min(max(half, np.float32(_EXP32_MIN)), np.float32(_EXP32_MAX))
        std[t], scale_bits[t] = exp32_parts(x)
    scale = scale_bits.view(np.float32)
    for t in range(count):
        std[t] *= scale[t]
    if _float32_clamp_gap(logvar_block, count) != 0.0:
        for t in range(count):
            half = 0.5 * np.float64(logvar_block[t])
            if not (_EXP32_MIN <= half <= _EXP32_MAX):
                std[t] = math.exp(half)


@numba.njit(cache=True, nogil=True)
def _std_float64(logvar, start, count, half_logvar, std, scale_bits):
    """``std[:count] = exp(logvar[start:start + count] / 2)`` by kernels/rbf.py's float64 exp.

    ``half_logvar`` (float64), ``std`` and ``scale_bits`` (int64) hold at least ``count``
    entries.
    """
    logvar_block = logvar[start : start + count]
    out_of_range = 0
    for t in range(count):
        half = 0.5 * np.float64(logvar_block[t])
        half_logvar[t] = half
        out_of_range += (half < _EXP64_MIN) | (half > _EXP64_MAX) | (half != half)
    exp_nonpositive(half_logvar, std, scale_bits, count)
    if out_of_range:
        for t in range(count):
            half = half_logvar[t]
            if not (_EXP64_MIN <= half <= _EXP64_MAX):
                std[t] = math.exp(half)


@numba.njit(cache=True, nogil=True)
def _std_block(logvar, start, count, buffers):
    """``exp(logvar[start:start + count] / 2)`` in the buffers' ``std``, which it returns:
    float32 arithmetic for float32 (4-byte) outputs, float64 (kernels/rbf.py) otherwise."""
    half_logvar, std, bits64, bits32 = buffers
    if std.itemsize == 4:
        _std_float32(logvar, start, count, std, bits32)
    else:
        _std_float64(logvar, start, count, half_logvar, std, bits64)
    return std


@numba.njit(cache=True, nogil=True)
def _forward_block(mu, logvar, eps, z, start, count, buffers):
    """``z[:, start:start + count]`` of the flat arrays (mu, logvar (n k,); eps, z (L, n k))."""
    std = _std_block(logvar, start, count, buffers)
    mu_block = mu[start : start + count]
    for sample in range(eps.shape[0]):
        eps_block = eps[sample, start : start + count]
        z_block = z[sample, start : start + count]
        for t in range(count):
            z_block[t] = mu_block[t] + std[t] * eps_block[t]


@numba.njit(cache=True, nogil=True)
def _backward_block(dz, logvar, eps, dmu, dlogvar, start, count, buffers):
    """``dmu`` and ``dlogvar`` at flat entries ``start:start + count`` (see _forward_block).

    Derivation: docs/derivations.md, "Reparameterisation".
    """
    std = _std_block(logvar, start, count, buffers)
    # (0.5 std) times the sum, in the reference's order: std * sum can overflow where its
    # half does not. A float 0.5 would promote float32 entries to float64.
    half = dlogvar.dtype.type(0.5)
    stop = start + count
    dmu_block = dmu[start:stop]
    dlogvar_block = dlogvar[start:stop]
    dz_block = dz[0, start:stop]
    eps_block = eps[0, start:stop]
    # one output stream per loop: writing dmu and dlogvar in one loop measured 25% slower
    dmu_block[:] = dz_block
    if eps.shape[0] == 1:  # one sample (the usual case): no second pass over dlogvar
        for t in range(count):
            dlogvar_block[t] = (half * std[t]) * (dz_block[t] * eps_block[t])
        return
    for t in range(count):
        dlogvar_block[t] = dz_block[t] * eps_block[t]
    for sample in range(1, eps.shape[0]):
        dz_block = dz[sample, start:stop]
        eps_block = eps[sample, start:stop]
        for t in range(count):
            dmu_block[t] += dz_block[t]
            dlogvar_block[t] += dz_block[t] * eps_block[t]
    for t in range(count):
        dlogvar_block[t] = (half * std[t]) * dlogvar_block[t]


@numba.njit(cache=True, nogil=True)
def _block_buffers(dtype):
    """Work buffers for one block: half_logvar (float64), std (``dtype``), int64 and int32
    exponent bits."""
    return (np.empty(_BLOCK, dtype=np.float64), np.empty(_BLOCK, dtype=dtype),
            np.empty(_BLOCK, dtype=np.int64), np.empty(_BLOCK, dtype=np.int32))


@numba.njit(cache=True, nogil=True)
def _forward_serial(mu, logvar, eps, z):
    """:func:`_forward_block` over every block, on one thread (flat arrays)."""
    buffers = _block_buffers(z.dtype)
    size = mu.shape[0]
    for start in range(0, size, _BLOCK):
        _forward_block(mu, logvar, eps, z, start, min(_BLOCK, size - start), buffers)


@numba.njit(cache=True, nogil=True, parallel=True)
def _forward_parallel(mu, logvar, eps, z):
    """:func:`_forward_block` over every block, blocks spread over threads (flat arrays)."""
    size = mu.shape[0]
    for block in numba.prange((size + _BLOCK - 1) // _BLOCK):
        buffers = _block_buffers(z.dtype)
        start = block * _BLOCK
        _forward_block(mu, logvar, eps, z, start, min(_BLOCK, size - start), buffers)


@numba.njit(cache=True, nogil=True)
def _backward_serial(dz, logvar, eps, dmu, dlogvar):
    """:func:`_backward_block` over every block, on one thread (flat arrays)."""
    buffers = _block_buffers(dmu.dtype)
    size = dmu.shape[0]
    for start in range(0, size, _BLOCK):
        _backward_block(dz, logvar, eps, dmu, dlogvar, start, min(_BLOCK, size - start),
                        buffers)


@numba.njit(cache=True, nogil=True, parallel=True)
def _backward_parallel(dz, logvar, eps, dmu, dlogvar):
    """:func:`_backward_block` over every block, blocks spread over threads (flat arrays)."""
    size = dmu.shape[0]
    for block in numba.prange((size + _BLOCK - 1) // _BLOCK):
        buffers = _block_buffers(dmu.dtype)
        start = block * _BLOCK
        _backward_block(dz, logvar, eps, dmu, dlogvar, start, min(_BLOCK, size - start),
                        buffers)


# ---- cuda: Numba-CUDA ------------------------------------------------------------------

_CUDA = {}
cuda = None  # numba.cuda, bound on first use (a module global so the simulator can swap it)


def _cuda_kernels():
    """Compile the Numba-CUDA kernels on first use (imports numba.cuda lazily)."""
    global cuda
    if not _CUDA:
        from numba import cuda

        @cuda.jit
        def forward(mu, logvar, eps, z):
            n_samples, n, k = eps.shape
            start = cuda.grid(1)
            stride = cuda.gridsize(1)
            for flat in range(start, n * k, stride):
                i = flat // k
                j = flat - i * k
                std = math.exp(0.5 * logvar[i, j])
                for sample in range(n_samples):
                    z[sample, i, j] = mu[i, j] + std * eps[sample, i, j]

        @cuda.jit
        def backward(dz, logvar, eps, dmu, dlogvar):
            n_samples, n, k = eps.shape
            start = cuda.grid(1)
            stride = cuda.gridsize(1)
            for flat in range(start, n * k, stride):
                i = flat // k
                j = flat - i * k
                sum_dz = dz[0, i, j]
                sum_dz_eps = dz[0, i, j] * eps[0, i, j]
                for sample in range(1, n_samples):
                    sum_dz += dz[sample, i, j]
                    sum_dz_eps += dz[sample, i, j] * eps[sample, i, j]
                dmu[i, j] = sum_dz
                dlogvar[i, j] = 0.5 * math.exp(0.5 * logvar[i, j]) * sum_dz_eps

        _CUDA["forward"] = forward
        _CUDA["backward"] = backward
    return _CUDA


def _cuda_launch(kernel, n_entries, arrays):
    """Launch ``kernel`` over ``n_entries`` threads' worth of work.

    On NumPy arrays this runs in Numba's CUDA simulator; on CuPy arrays it runs on the
    GPU on CuPy's current stream.
    """
    launch(kernel, blocks_for(n_entries, _THREADS_PER_BLOCK, _MAX_BLOCKS), _THREADS_PER_BLOCK,
           *arrays)


def _array_module(x):
    if isinstance(x, np.ndarray):
        return np
    import cupy

    return cupy


def _check_inputs(function, name, first, logvar, eps):
    """Raise ValueError unless the arrays fit the one contract of every implementation.

    ``first`` is ``mu`` (shape (n, k)) for the forward, ``dz`` (shape (L, n, k)) for the
    backward, and ``name`` says which; ``logvar`` is (n, k), ``eps`` (L, n, k) with L >= 1,
    and all three share one dtype, float32 or float64. The cpu kernels walk flat runs of
    n * k entries and the cuda kernels index with (i, j): an array of any other shape
    would be read or written past its end, and an integer one truncate the results.
    """
    if logvar.ndim != 2 or eps.ndim != 3 or eps.shape[1:] != logvar.shape:
        raise ValueError(
            f"{function}: expected logvar of shape (n, k) and eps of shape (L, n, k) with the "
            f"same n and k; got logvar {logvar.shape}, eps {eps.shape}"
        )
    if name == "mu" and first.shape != logvar.shape:
        raise ValueError(
            f"{function}: mu has shape {first.shape} but logvar {logvar.shape}; mu must be "
            f"(n, k), one row per example"
        )
    if name == "dz" and first.shape != eps.shape:
        raise ValueError(
            f"{function}: dz has shape {first.shape} but eps has {eps.shape}; pass the "
            f"gradient with respect to the forward's z"
        )
    if eps.shape[0] == 0:
        raise ValueError(f"{function}: eps has 0 samples (shape {eps.shape}); draw at least one")
    if first.dtype not in (np.float32, np.float64):
        raise ValueError(
            f"{function}: {name} has dtype {first.dtype}; the kernels take float32 or "
            f"float64: cast with {name}.astype(np.float32) or {name}.astype(np.float64)"
        )
    for other_name, other in (("logvar", logvar), ("eps", eps)):
        if other.dtype != first.dtype:
            raise ValueError(
                f"{function}: {other_name} has dtype {other.dtype} but {name} has "
                f"{first.dtype}; cast with {other_name}.astype({name}.dtype)"
            )


def _check_impl(impl):
    if impl not in ("reference", "cpu", "cuda"):
        raise ValueError(f"impl={impl!r} is not one of ('reference', 'cpu', 'cuda')")


def _parallel(n_entries, n_samples, dtype):
    """Whether the cpu kernels take their parallel build for ``n_samples`` x ``n_entries``
    (``n * k``) entries: the blocks of logvar entries are what the threads share, so it
    takes at least two of them, and _PARALLEL_MIN_ENTRIES[dtype] entries of eps."""
    return (n_entries > _BLOCK
            and n_samples * n_entries >= _PARALLEL_MIN_ENTRIES[np.dtype(dtype)])


# ---- dispatch --------------------------------------------------------------------------


def reparam_forward(mu, logvar, eps, impl="cpu"):
    """``z = mu + exp(logvar/2) * eps``; see :func:`reparam_forward_reference`.

    Every implementation takes ``mu`` and ``logvar`` of shape (n, k) and ``eps`` of shape
    (L, n, k) with L >= 1, all of one dtype, float32 or float64 (ValueError otherwise);
    ``impl="cpu"`` and ``"cuda"`` make them C-contiguous if they are not.
    """
    _check_impl(impl)
    _check_inputs("reparam_forward", "mu", mu, logvar, eps)
    if impl == "reference":
        return reparam_forward_reference(mu, logvar, eps)
    xp = _array_module(mu)
    mu, logvar, eps = (xp.ascontiguousarray(a) for a in (mu, logvar, eps))
    z = xp.empty(eps.shape, dtype=eps.dtype)
    if impl == "cpu":
        forward = (_forward_parallel if _parallel(mu.size, eps.shape[0], mu.dtype)
                   else _forward_serial)
        forward(mu.reshape(-1), logvar.reshape(-1), eps.reshape(eps.shape[0], -1),
                z.reshape(eps.shape[0], -1))
    else:
        _cuda_launch(_cuda_kernels()["forward"], mu.size, (mu, logvar, eps, z))
    return z


def reparam_backward(dz, logvar, eps, impl="cpu"):
    """``(dmu, dlogvar)``; see :func:`reparam_backward_reference`.

    Derivation: docs/derivations.md, "Reparameterisation".

    Every implementation takes ``dz`` and ``eps`` of shape (L, n, k) with L >= 1 and
    ``logvar`` of shape (n, k), all of one dtype, float32 or float64 (ValueError otherwise).
    """
    _check_impl(impl)
    _check_inputs("reparam_backward", "dz", dz, logvar, eps)
    if impl == "reference":
        return reparam_backward_reference(dz, logvar, eps)
    xp = _array_module(dz)
    dz, logvar, eps = (xp.ascontiguousarray(a) for a in (dz, logvar, eps))
    dmu = xp.empty(logvar.shape, dtype=dz.dtype)
    dlogvar = xp.empty(logvar.shape, dtype=dz.dtype)
    if impl == "cpu":
        backward = (_backward_parallel if _parallel(logvar.size, eps.shape[0], dz.dtype)
                    else _backward_serial)
        backward(dz.reshape(dz.shape[0], -1), logvar.reshape(-1),
                 eps.reshape(eps.shape[0], -1), dmu.reshape(-1), dlogvar.reshape(-1))
    else:
        _cuda_launch(_cuda_kernels()["backward"], logvar.size, (dz, logvar, eps, dmu, dlogvar))
    return dmu, dlogvar
