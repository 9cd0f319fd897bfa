"""The Bernoulli negative log-likelihood from logits and its gradient, fused in one pass.

.. math::

    \\mathrm{nll}_i = \\sum_d \\operatorname{softplus}(f_{id}) - x_{id} f_{id},
    \\qquad \\mathrm{dlogits} = \\mathrm{scale} \\cdot (\\sigma(f) - x)

Implementations (same signature, ``impl=`` picks): ``reference`` (NumPy, this file),
``cpu`` (Numba: one pass over the entries, one polynomial exp and one division per entry,
blocks of rows spread over threads for large inputs) and ``cuda`` (Numba-CUDA: a block
per row, threads striding over its columns, the row sum reduced in shared memory).

Notes
-----
All three evaluate the same formulation, so they agree to rounding. With
:math:`a = e^{-|f|} \\in (0, 1]`:

.. math::

    \\operatorname{softplus}(f) - x f = \\log(1 + a) + (\\max(f, 0) - x f)

because :math:`\\log(1 + e^f) = \\max(f, 0) + \\log(1 + e^{-|f|})`. For
:math:`x \\in [0, 1]` both parts are non-negative (:math:`f (1 - x)` for
:math:`f \\ge 0`, :math:`-x f` for :math:`f < 0`), so the row sums add non-negative
terms and nothing cancels; for :math:`x = 1, f > 0` the second part is :math:`f - f = 0`
exactly.

The gradient, branch by branch. For :math:`f \\ge 0`, :math:`a = e^{-f}` and
:math:`\\sigma(f) = 1 / (1 + a)`, so

.. math:: \\sigma(f) - x = \\frac{1 - x (1 + a)}{1 + a} = \\frac{(1 - x) - x a}{1 + a}.

For :math:`f < 0`, :math:`a = e^{f}` and :math:`\\sigma(f) = a / (1 + a)`, so

.. math:: \\sigma(f) - x = \\frac{a - x (1 + a)}{1 + a} = \\frac{a (1 - x) - x}{1 + a}.

For binary x one of the two numerator terms is 0, so there is no cancellation: for
:math:`x = 1, f \\gg 0` the result is :math:`-a / (1 + a)`, accurate to rounding, where the
textbook :math:`\\sigma(f) - 1` has lost about :math:`|f| / \\ln 10` decimal digits (and is
0 beyond :math:`f \\approx 17` in float32). For soft targets the two terms have opposite
signs and the gradient may legitimately be close to 0.

Subnormal gradients are flushed to 0 (all three implementations): for a pixel that is
always 0, Adam keeps pushing its logit down by about lr a step, and below f ~ -82 (float32,
with scale 1/128) ``scale * a / (1 + a)`` is subnormal. Matrix products with subnormal
operands are 20-50x slower on x86 (measured here: ``G^T dlogits`` at 128 x 400 x 784 with
13% of the columns subnormal took 14.9 ms instead of 0.30 ms, ``dlogits W^T`` 6.8 instead
of 0.34 ms), and the decoder's backward runs two of them. The change to the gradient is
below the smallest normal number, 1.2e-38 in float32.

The cpu kernel computes :math:`\\log(1 + a)` as :math:`2 \\operatorname{atanh}(t)`,
:math:`t = a / (2 + a) \\in (0, 1/3]` (indeed :math:`(1 + t)/(1 - t) = 1 + a`), by the
series :math:`\\operatorname{atanh}(t) = t \\sum_{j \\ge 0} t^{2j} / (2j + 1)` in Horner form:
cut after the :math:`t^{2m}` term its relative truncation error is below
:math:`t^{2m+2} / ((2m + 3)(1 - t^2)) \\le 9^{-(m+1)} \\cdot 9 / (8 (2m + 3))`, i.e.
1.5e-9 for m = 7 (float32: a fortieth of the unit roundoff 2^-24) and 1.9e-18 for m = 16
(float64: a sixtieth of 2^-53). One division serves both quotients:
:math:`r = 1 / ((1 + a)(2 + a))`, :math:`t = a (1 + a) r`, :math:`1 / (1 + a) = (2 + a) r`.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._cuda import launch
from ._math import exp_nonpositive
from .reparam import exp32_parts

IMPLS = ("reference", "cpu", "cuda")


def bernoulli_nll_and_grad_reference(logits, X, scale=1.0):
    """The negative Bernoulli log-likelihood per row and its gradient, plain NumPy.

    Derivation: docs/derivations.md, "Bernoulli log-likelihood from logits"; the
    cancellation-free form is derived in this module's Notes.

    Parameters
    ----------
    logits : (n, D) float array
        Decoder outputs ``f``; the Bernoulli mean is ``sigmoid(f)``.
    X : (n, D) array of the same dtype
        Data in [0, 1] (binary, or grey levels as soft targets).
    scale : float
        Multiplies the gradient only (``1 / n`` for a batch mean).

    Returns
    -------
    nll : (n,) array
        ``sum_d softplus(f_id) - x_id f_id``, in nats.
    dlogits : (n, D) array
        ``scale * (sigmoid(f) - x)``, the gradient of ``scale * sum(nll)``.
    """
    xp = _array_module(logits, "logits")
    scale = logits.dtype.type(scale)
    a = xp.exp(-xp.abs(logits))
    nll = (xp.log1p(a) + (xp.maximum(logits, 0) - X * logits)).sum(axis=1)
    one_minus_x = 1 - X
    numerator = xp.where(logits >= 0, one_minus_x - X * a, a * one_minus_x - X)
    dlogits = numerator / (1 + a)
    dlogits *= scale
    dlogits[abs(dlogits) < np.finfo(dlogits.dtype).tiny] = 0  # flush subnormals (Notes)
    return nll, dlogits


# ---- cpu: Numba ------------------------------------------------------------------------

# The arrays are contiguous, so they are walked as flat runs of entries, chunk by chunk
# (a row spans several chunks, or a chunk several rows). A first loop over a chunk computes
# exp(-|f|) by a vectorised polynomial (Numba has no vector math library here, and a
# scalar math.exp per entry costs more than the rest of the kernel) into small buffers; a
# second forms each entry's nll term into another buffer and writes dlogits; the terms are
# then summed row segment by row segment. Entries whose exp argument is out of the
# polynomial's range (or NaN) are recomputed with libm, rarely. All loops run from index
# 0 over slices: Numba's wraparound of negative indices turns a loop from a variable start
# into gathers. From _PARALLEL_MIN_ENTRIES on, the rows are split into one block per
# thread (each block owns its rows' sums); the serial and parallel kernels are distinct
# functions, so Numba's cache keeps one entry for each.
#: Entries from which the rows are spread over threads, by dtype. Below, waking the thread
#: pool costs more than the second thread saves: with OMP_WAIT_POLICY=PASSIVE (set by
#: ``import minivae``) one parallel region costs ~65 us on the 2-core dev machine, and a
#: serial entry ~0.95 ns in float32, ~3 ns in float64; measured crossovers 150k and 50k
#: entries (192 x 784 and 64 x 784).
_PARALLEL_MIN_ENTRIES = {np.dtype(np.float32): 160_000, np.dtype(np.float64): 56_000}
#: Entries per chunk: the buffers in use (12 bytes an entry for float32, 32 for float64)
#: stay in the L1/L2 cache. 1024 measured 10% slower at 128 x 784 float32, 4096 and 8192
#: alike.
_CHUNK = 2048
# float32 exp: for arguments in [_EXP32_MIN, 0], 2^k is a normal float32; below it (a is
# subnormal or 0) and for NaN, libm's exp is used instead (rbf's float64 exp: -708).
_EXP32_MIN = -87.0
_EXP64_MIN = -708.0


@numba.njit(cache=True, nogil=True, fastmath={"reassoc"})
def _sum(values):
    """``sum(values)`` accumulated in float64 (reassociated: it vectorises, with several
    partial sums; float32 terms cost no more than with a float32 accumulator)."""
    total = 0.0
    for t in range(values.shape[0]):
        total += np.float64(values[t])
    return total


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _exp_neg_abs_float32(logits_chunk, mantissa, scale_bits):
    """``exp(-|f|) = mantissa * scale_bits.view(float32)`` in float32 arithmetic for the
    chunk, clamped at _EXP32_MIN (NaN too); returns whether any ``-|f|`` is below that or
    NaN.

    Notes
    -----
    The exp is kernels/reparam.py's :func:`exp32_parts`, for arguments -|f| <= 0. The
    product is left to the caller's loop.
    """
    outside = False
    for t in range(logits_chunk.shape[0]):
        arg = -abs(logits_chunk[t])
        outside |= not arg >= np.float32(_EXP32_MIN)
        x = max(np.float32(_EXP32_MIN), arg)  # the bound for NaN (Python's max), fixed up
        mantissa[t], scale_bits[t] = exp32_parts(x)
    return outside


# error_model="numpy": no zero-division check (it would stop the loop vectorising); the
# divisor (1 + a)(2 + a) is at least 2.
@numba.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def _terms_float32(logits_chunk, x_chunk, scale, mantissa, scale_bits, terms, dlogits_chunk):
    """Each entry's nll term into ``terms`` and its gradient into ``dlogits_chunk``, with
    ``a = exp(-|f|)`` from :func:`_exp_neg_abs_float32` (the formulation in the module's
    Notes; log1p(a) = 2 atanh(t) to m = 7, the factor 2 folded into the coefficients)."""
    one = np.float32(1.0)
    power_of_two = scale_bits.view(np.float32)
    for t in range(logits_chunk.shape[0]):
        f = logits_chunk[t]
        x = x_chunk[t]
        a = mantissa[t] * power_of_two[t]
        one_plus_a = one + a
        two_plus_a = np.float32(2.0) + a
        reciprocal = one / (one_plus_a * two_plus_a)
        atanh_arg = a * one_plus_a * reciprocal
        t2 = atanh_arg * atanh_arg
        s = t2 * np.float32(2.0 / 15.0) + np.float32(2.0 / 13.0)
        s = s * t2 + np.float32(2.0 / 11.0)
        s = s * t2 + np.float32(2.0 / 9.0)
        s = s * t2 + np.float32(2.0 / 7.0)
        s = s * t2 + np.float32(2.0 / 5.0)
        s = s * t2 + np.float32(2.0 / 3.0)
        s = s * t2 + np.float32(2.0)
        terms[t] = atanh_arg * s + (max(f, np.float32(0.0)) - x * f)
        one_minus_x = one - x
        numerator = one_minus_x - x * a if f >= np.float32(0.0) else a * one_minus_x - x
        dlogits_chunk[t] = scale * (numerator * (two_plus_a * reciprocal))


@numba.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")
def _terms_float64(logits_chunk, x_chunk, scale, a_chunk, terms, dlogits_chunk):
    """:func:`_terms_float32` in float64, given ``a = exp(-|f|)`` (log1p(a) to m = 16)."""
    for t in range(logits_chunk.shape[0]):
        f = logits_chunk[t]
        x = x_chunk[t]
        a = a_chunk[t]
        one_plus_a = 1.0 + a
        two_plus_a = 2.0 + a
        reciprocal = 1.0 / (one_plus_a * two_plus_a)
        atanh_arg = a * one_plus_a * reciprocal
        t2 = atanh_arg * atanh_arg
        s = t2 * (2.0 / 33.0) + 2.0 / 31.0
        s = s * t2 + 2.0 / 29.0
        s = s * t2 + 2.0 / 27.0
        s = s * t2 + 2.0 / 25.0
        s = s * t2 + 2.0 / 23.0
        s = s * t2 + 2.0 / 21.0
        s = s * t2 + 2.0 / 19.0
        s = s * t2 + 2.0 / 17.0
        s = s * t2 + 2.0 / 15.0
        s = s * t2 + 2.0 / 13.0
        s = s * t2 + 2.0 / 11.0
        s = s * t2 + 2.0 / 9.0
        s = s * t2 + 2.0 / 7.0
        s = s * t2 + 2.0 / 5.0
        s = s * t2 + 2.0 / 3.0
        s = s * t2 + 2.0
        terms[t] = atanh_arg * s + (max(f, 0.0) - x * f)
        one_minus_x = 1.0 - x
        numerator = one_minus_x - x * a if f >= 0.0 else a * one_minus_x - x
        dlogits_chunk[t] = scale * (numerator * (two_plus_a * reciprocal))


@numba.njit(cache=True, nogil=True)
def _fix_up(logits_chunk, x_chunk, scale, lowest, terms, dlogits_chunk):
    """Recompute with libm's exp and log1p the entries whose ``-|f|`` lies below
    ``lowest`` (a subnormal or 0) or is NaN (NaN in, NaN out)."""
    zero = logits_chunk.dtype.type(0.0)
    one = logits_chunk.dtype.type(1.0)
    for t in range(logits_chunk.shape[0]):
        f = logits_chunk[t]
        if not -abs(f) >= lowest:
            x = x_chunk[t]
            a = math.exp(-abs(f))
            terms[t] = math.log1p(a) + (max(f, zero) - x * f)
            one_minus_x = one - x
            numerator = one_minus_x - x * a if f >= zero else a * one_minus_x - x
            dlogits_chunk[t] = scale * (numerator / (one + a))


@numba.njit(cache=True, nogil=True)
def _chunk(logits, X, start, stop, scale, dlogits, buffers):
    """The nll terms of flat entries ``start:stop`` (returned, a view of a buffer) and
    their dlogits."""
    arg, a, mantissa, bits64, bits32, terms = buffers
    count = stop - start
    logits_chunk = logits[start:stop]
    x_chunk = X[start:stop]
    dlogits_chunk = dlogits[start:stop]
    terms = terms[:count]
    if terms.itemsize == 4:
        lowest = _EXP32_MIN
        outside = _exp_neg_abs_float32(logits_chunk, mantissa[:count], bits32[:count])
        _terms_float32(logits_chunk, x_chunk, scale, mantissa[:count], bits32[:count], terms,
                       dlogits_chunk)
    else:
        lowest = _EXP64_MIN
        outside = False
        for t in range(count):
            neg_abs = -abs(logits_chunk[t])
            outside |= not neg_abs >= _EXP64_MIN
            arg[t] = max(_EXP64_MIN, neg_abs)  # the bound for NaN too: no NaN to round
        exp_nonpositive(arg, a, bits64, count)
        _terms_float64(logits_chunk, x_chunk, scale, a[:count], terms, dlogits_chunk)
    if outside:
        _fix_up(logits_chunk, x_chunk, scale, lowest, terms, dlogits_chunk)
    _flush_subnormals(dlogits_chunk)
    return terms


@numba.njit(cache=True, nogil=True)
def _flush_subnormals(values):
    """Set entries below the dtype's smallest normal number in magnitude to 0 (module
    Notes); NaN and inf stay."""
    tiny = np.finfo(values.dtype).tiny
    zero = values.dtype.type(0.0)
    for t in range(values.shape[0]):
        if abs(values[t]) < tiny:
            values[t] = zero


@numba.njit(cache=True, nogil=True)
def _rows(logits, X, n_cols, row_start, row_stop, scale, nll, dlogits, buffers):
    """nll[row_start:row_stop] and those rows' dlogits (flat arrays of n_cols-long rows).

    Chunks end at multiples of _CHUNK in the flat arrays, wherever the rows start: a row
    is then cut into the same segments, and summed in the same order, in any split of the
    rows into blocks, so the results do not depend on the number of threads.
    """
    for row in range(row_start, row_stop):
        nll[row] = 0.0
    start = row_start * n_cols
    stop = row_stop * n_cols
    while start < stop:
        chunk_stop = min((start // _CHUNK + 1) * _CHUNK, stop)
        terms = _chunk(logits, X, start, chunk_stop, scale, dlogits, buffers)
        row = start // n_cols
        segment_start = start
        while segment_start < chunk_stop:
            segment_stop = min((row + 1) * n_cols, chunk_stop)
            nll[row] += _sum(terms[segment_start - start : segment_stop - start])
            segment_start = segment_stop
            row += 1
        start = chunk_stop


@numba.njit(cache=True, nogil=True)
def _chunk_buffers(dtype):
    """Work buffers for one chunk: float64 exp arguments and values, the float32 exp's
    mantissas, int64 and int32 exponent bits, and the nll terms (``dtype``)."""
    return (np.empty(_CHUNK, dtype=np.float64), np.empty(_CHUNK, dtype=np.float64),
            np.empty(_CHUNK, dtype=np.float32), np.empty(_CHUNK, dtype=np.int64),
            np.empty(_CHUNK, dtype=np.int32), np.empty(_CHUNK, dtype=dtype))


@numba.njit(cache=True, nogil=True)
def _cpu_serial(logits, X, n_cols, scale, nll, dlogits):
    """:func:`_rows` over every row, on one thread (flat logits, X, dlogits)."""
    _rows(logits, X, n_cols, 0, nll.shape[0], scale, nll, dlogits, _chunk_buffers(nll.dtype))


@numba.njit(cache=True, nogil=True, parallel=True)
def _cpu_parallel(logits, X, n_cols, scale, nll, dlogits, n_blocks):
    """:func:`_rows` over ``n_blocks`` blocks of rows (as equal as whole rows allow),
    spread over threads."""
    n_rows = nll.shape[0]
    for block in numba.prange(n_blocks):
        _rows(logits, X, n_cols, block * n_rows // n_blocks, (block + 1) * n_rows // n_blocks,
              scale, nll, dlogits, _chunk_buffers(nll.dtype))


def _bernoulli_cpu(logits, X, scale):
    n, n_cols = logits.shape
    nll = np.empty(n, dtype=logits.dtype)
    dlogits = np.empty_like(logits)
    flat = (logits.reshape(-1), X.reshape(-1), n_cols, scale, nll, dlogits.reshape(-1))
    n_blocks = min(numba.get_num_threads(), n)
    if n_blocks > 1 and logits.size >= _PARALLEL_MIN_ENTRIES[logits.dtype]:
        _cpu_parallel(*flat, n_blocks)
    else:
        _cpu_serial(*flat)
    return nll, dlogits


# ---- cuda: Numba-CUDA ------------------------------------------------------------------

_THREADS_PER_BLOCK = 128  # a power of two, for the tree reduction of a row's sum
_MAX_BLOCKS = 1024
_CUDA = {}
cuda = None  # numba.cuda, bound on first use (a module global so the simulator can swap it)


def _cuda_kernel(dtype):
    """The CUDA kernel for ``dtype`` (float32 or float64), compiled on first use (imports
    numba.cuda lazily)."""
    global cuda
    key = np.dtype(dtype).str
    if key in _CUDA:
        return _CUDA[key]
    from numba import cuda

    value_type = numba.float32 if np.dtype(dtype) == np.float32 else numba.float64

    @cuda.jit
    def nll_and_grad(logits, X, scale, zero, one, tiny, nll, dlogits):
        """Rows in a grid-stride loop, one block per row; the block's threads (a power of
        two, at most _THREADS_PER_BLOCK) stride over its columns."""
        partial = cuda.shared.array(_THREADS_PER_BLOCK, value_type)
        thread = cuda.threadIdx.x
        n_threads = cuda.blockDim.x
        n, n_cols = logits.shape
        for row in range(cuda.blockIdx.x, n, cuda.gridDim.x):
            total = zero
            for col in range(thread, n_cols, n_threads):
                f = logits[row, col]
                x = X[row, col]
                a = math.exp(-abs(f))
                total += math.log1p(a) + (max(f, zero) - x * f)
                one_minus_x = one - x
                numerator = one_minus_x - x * a if f >= zero else a * one_minus_x - x
                gradient = scale * (numerator / (one + a))
                if abs(gradient) < tiny:  # flush subnormals (module Notes)
                    gradient = zero
                dlogits[row, col] = gradient
            partial[thread] = total
            cuda.syncthreads()
            step = n_threads // 2
            while step > 0:
                if thread < step:
                    partial[thread] += partial[thread + step]
                cuda.syncthreads()
                step //= 2
            # after the last barrier only thread 0 touches partial[0] before the next row
            # writes it, so the next row needs no barrier first
            if thread == 0:
                nll[row] = partial[0]

    _CUDA[key] = nll_and_grad
    return nll_and_grad


def _bernoulli_cuda(logits, X, scale, xp):
    n = logits.shape[0]
    nll = xp.empty(n, dtype=logits.dtype)
    dlogits = xp.empty_like(logits)
    if n == 0:
        return nll, dlogits
    kernel = _cuda_kernel(logits.dtype)
    dtype = logits.dtype.type
    args = (logits, X, scale, dtype(0.0), dtype(1.0), dtype(np.finfo(dtype).tiny), nll, dlogits)
    blocks = min(n, _MAX_BLOCKS)
    # the smallest power of two covering a row, up to _THREADS_PER_BLOCK: short rows leave
    # no threads idle
    threads = min(_THREADS_PER_BLOCK, 1 << max(logits.shape[1] - 1, 0).bit_length())
    launch(kernel, blocks, threads, *args)
    return nll, dlogits


# ---- dispatch --------------------------------------------------------------------------


def _array_module(x, name):
    """numpy for NumPy arrays, cupy for arrays on a CUDA device (imported only then)."""
    if isinstance(x, np.ndarray):
        return np
    if hasattr(x, "__cuda_array_interface__"):
        import cupy

        return cupy
    raise ValueError(
        f"{name} must be a NumPy or CuPy array, got {type(x).__name__}; convert it with "
        f"np.asarray({name}, dtype=np.float32)"
    )


def _check_inputs(logits, X, impl):
    """Validate the arrays; returns C-contiguous logits, X and their array module."""
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is not one of {IMPLS}")
    xp = _array_module(logits, "logits")
    if _array_module(X, "X") is not xp:
        raise ValueError(
            f"logits is a {type(logits).__module__} array but X a {type(X).__module__} "
            f"array; put both on the same device"
        )
    if impl == "cpu" and xp is not np:
        raise ValueError(
            "impl='cpu' runs on NumPy arrays, got CuPy arrays; use impl='cuda' or copy "
            "them to the host with .get()"
        )
    for name, array in (("logits", logits), ("X", X)):
        if array.ndim != 2:
            raise ValueError(
                f"{name} must be a 2-D array (examples in rows), got shape {array.shape}; "
                f"reshape one example with {name}.reshape(1, -1)"
            )
    if X.shape != logits.shape:
        raise ValueError(
            f"X has shape {X.shape} but logits has {logits.shape}; pass the batch the "
            f"logits were decoded from"
        )
    if logits.dtype not in (np.float32, np.float64):
        raise ValueError(
            f"logits has dtype {logits.dtype}; the kernel takes float32 or float64: cast "
            f"with logits.astype(np.float32)"
        )
    if X.dtype != logits.dtype:
        raise ValueError(
            f"X has dtype {X.dtype} but logits has {logits.dtype}; cast X with "
            f"X.astype(logits.dtype)"
        )
    return xp.ascontiguousarray(logits), xp.ascontiguousarray(X), xp


def bernoulli_nll_and_grad(logits, X, scale=1.0, impl="cpu"):
    """The negative Bernoulli log-likelihood per row and its gradient, in one pass.

    Derivation: docs/derivations.md, "Bernoulli log-likelihood from logits"; the
    cancellation-free form every implementation evaluates is in this module's Notes.

    Parameters
    ----------
    logits : (n, D) float32 or float64 array
        Decoder outputs ``f``; NaN gives NaN in its row of ``nll`` and its entry of
        ``dlogits``.
    X : (n, D) array, the dtype of ``logits``
        Data in [0, 1] (not checked here: the loss layer checks its data once).
    scale : float
        Multiplies ``dlogits`` only (``1 / n`` for a batch mean); rounded to the dtype.
    impl : {"cpu", "cuda", "reference"}
        ``"cpu"``: Numba, NumPy arrays; ``"cuda"``: Numba-CUDA, CuPy arrays on the GPU (on
        CuPy's current stream) or NumPy arrays under the CUDA simulator; ``"reference"``:
        plain NumPy (or CuPy).

    Returns
    -------
    nll : (n,) array
        ``sum_d softplus(f_id) - x_id f_id``, in nats.
    dlogits : (n, D) array
        ``scale * (sigmoid(f) - x)``.

    Raises
    ------
    ValueError
        Arrays that are not 2-D, differ in shape or dtype, are not float32/float64, or
        live on different devices; ``impl="cpu"`` with CuPy arrays; an unknown ``impl``.
    """
    logits, X, xp = _check_inputs(logits, X, impl)
    if impl == "reference":
        return bernoulli_nll_and_grad_reference(logits, X, scale)
    scale = logits.dtype.type(scale)
    if impl == "cpu":
        return _bernoulli_cpu(logits, X, scale)
    return _bernoulli_cuda(logits, X, scale, xp)
