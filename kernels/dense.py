"""The element-wise halves of a dense layer: adding the bias (with an optional ReLU) in the
forward pass, and the bias gradient (behind an optional ReLU mask) in the backward pass.

Forward, in place on the product ``y = x @ W`` of shape (n, m):
``y <- y + b`` (row-broadcast), then with ``relu=True`` ``y <- max(y, 0)``.
Backward, with ``dy`` of shape (n, m): with ``relu_output`` (the forward's output ``y``)
``dy <- dy * [y > 0]`` in place, then ``db <- sum_rows dy``
(docs/derivations.md, "Dense layer" and "Activations").

Why kernels: NumPy does each of these as two passes with a temporary (``y += b`` then
``maximum``; a boolean mask, a multiply, then ``sum(axis=0)``), and at a VAE's layer sizes
(128 x 400 float32) each NumPy call costs more in dispatch and temporaries than in
arithmetic. One fused pass is 3-5x faster (docs/performance.md, "VAE training step").

Implementations (same signature, ``impl=`` picks): ``reference`` (NumPy, this file;
works on CuPy arrays too), ``cpu`` (Numba: one pass row by row, each row's loop
vectorised; single-threaded, the arrays are a few hundred kB) and ``cuda`` (Numba-CUDA:
the bias add is a grid-stride loop over the entries; the bias gradient has one thread per
column walking down the rows, so a warp reads one contiguous stretch of a row at a time
and the column sum needs no reduction across threads — few threads for narrow layers and
long loops for large batches; a row-blocked version with a second reduction step would
fill a GPU better, see docs/gpu.md).

NaN propagates as in the reference: ``max(NaN, 0)`` is NaN, and a NaN gradient stays NaN
even where the mask is 0 (``NaN * 0``), so the trainer's divergence guard still sees it.
"""

from __future__ import annotations

import numba
import numpy as np

from ._cuda import blocks_for, launch

_THREADS_PER_BLOCK = 128
_MAX_BLOCKS = 1024


def _check(y, b, y_name, b_name, kernel, b_written):
    """Raise ValueError unless ``y`` (n, m) and ``b`` (m,) share one float dtype, ``y`` is
    C-contiguous and the arrays ``kernel`` writes (``y``, and ``b`` when ``b_written``) are
    writeable."""
    if y.ndim != 2 or b.ndim != 1 or b.shape[0] != y.shape[1]:
        raise ValueError(
            f"{y_name} has shape {tuple(y.shape)} and {b_name} has shape {tuple(b.shape)}; "
            f"expected (n, m) and (m,)"
        )
    if y.dtype != b.dtype or y.dtype.kind != "f":
        raise ValueError(
            f"{y_name} ({y.dtype}) and {b_name} ({b.dtype}) must share one float dtype; "
            "cast one of them with .astype"
        )
    if not y.flags.c_contiguous:
        raise ValueError(f"{y_name} must be C-contiguous; pass np.ascontiguousarray({y_name})")
    for name, array in ((y_name, y), (b_name, b)) if b_written else ((y_name, y),):
        # CuPy arrays have no read-only flag
        if isinstance(array, np.ndarray) and not array.flags.writeable:
            raise ValueError(
                f"{name} is read-only, but {kernel} writes into it in place; pass a writeable "
                f"array (np.array({name}) is a writeable copy)"
            )


# ---- reference: NumPy (also CuPy) ------------------------------------------------------


def _array_module(x):
    if isinstance(x, np.ndarray):
        return np
    import cupy

    return cupy.get_array_module(x)


def add_bias_reference(y, b, relu=False):
    """``y <- y + b``, then ``y <- max(y, 0)`` when ``relu``; in place, returns ``y``."""
    y += b
    if relu:
        _array_module(y).maximum(y, 0, out=y)
    return y


def bias_grad_reference(dy, db, relu_output=None):
    """``db <- sum_rows dy`` after ``dy <- dy * [relu_output > 0]`` when ``relu_output`` is
    given (in place on ``dy``); returns ``db``.

    Derivation: docs/derivations.md, "Dense layer" and "Activations".
    """
    if relu_output is not None:
        dy *= relu_output > 0
    dy.sum(axis=0, out=db)
    return db


# ---- cpu: Numba --------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _add_bias_cpu(y, b, relu):
    n, m = y.shape
    zero = y.dtype.type(0)
    for i in range(n):
        row = y[i]
        if relu:
            for j in range(m):
                value = row[j] + b[j]
                # value < 0 is False for NaN: NaN stays NaN, as np.maximum keeps it
                row[j] = zero if value < zero else value  # noqa: FURB136 (NaN kept, see above)
        else:
            for j in range(m):
                row[j] += b[j]


@numba.njit(cache=True, nogil=True)
def _bias_grad_cpu(dy, db, relu_output, masked):
    n, m = dy.shape
    zero = dy.dtype.type(0)
    one = dy.dtype.type(1)
    for j in range(m):
        db[j] = zero
    for i in range(n):
        row = dy[i]
        if masked:
            out_row = relu_output[i]
            for j in range(m):
                # a multiply, not a select: NaN * 0 stays NaN, as in the reference
                value = row[j] * (one if out_row[j] > zero else zero)
                row[j] = value
                db[j] += value
        else:
            for j in range(m):
                db[j] += row[j]


def add_bias_cpu(y, b, relu=False):
    """Numba implementation of :func:`add_bias_reference` (one pass)."""
    _check(y, b, "y", "b", "add_bias", b_written=False)
    _add_bias_cpu(y, b, bool(relu))
    return y


def bias_grad_cpu(dy, db, relu_output=None):
    """Numba implementation of :func:`bias_grad_reference` (one pass; the rows are summed
    in order). For two or more columns NumPy's ``sum(axis=0)`` adds the rows in order too,
    and the results agree to the last bit; a single column is contiguous along the summed
    axis, where NumPy sums pairwise, so there the two round differently."""
    _check(dy, db, "dy", "db", "bias_grad", b_written=True)
    masked = relu_output is not None
    if masked:
        _check_like(relu_output, dy)
    _bias_grad_cpu(dy, db, relu_output if masked else dy, masked)
    return db


def _check_like(relu_output, dy):
    if relu_output.shape != dy.shape:
        raise ValueError(
            f"relu_output has shape {tuple(relu_output.shape)} but dy has "
            f"{tuple(dy.shape)}; pass the ReLU's forward output for this batch"
        )
    if relu_output.dtype != dy.dtype:
        raise ValueError(
            f"relu_output ({relu_output.dtype}) and dy ({dy.dtype}) must share one float "
            "dtype; cast dy with .astype(relu_output.dtype) or use impl='reference'"
        )
    if not relu_output.flags.c_contiguous:
        raise ValueError("relu_output must be C-contiguous; pass the layer's forward output")


# ---- cuda: Numba-CUDA ------------------------------------------------------------------

_CUDA = {}
cuda = None  # numba.cuda, bound on first use (a module global so the simulator can swap it)


def _cuda_kernels():
    """Compile the Numba-CUDA kernels on first use (imports numba.cuda lazily)."""
    global cuda
    if not _CUDA:
        from numba import cuda

        @cuda.jit
        def add_bias(y, b, relu, zero):
            n, m = y.shape
            for flat in range(cuda.grid(1), n * m, cuda.gridsize(1)):
                i = flat // m
                j = flat - i * m
                value = y[i, j] + b[j]
                if relu and value < zero:  # False for NaN: NaN stays
                    value = zero
                y[i, j] = value

        @cuda.jit
        def bias_grad(dy, db, relu_output, masked, zero, one):
            n, m = dy.shape
            for j in range(cuda.grid(1), m, cuda.gridsize(1)):
                total = zero
                for i in range(n):
                    value = dy[i, j]
                    if masked:
                        value = value * (one if relu_output[i, j] > zero else zero)
                        dy[i, j] = value
                    total += value
                db[j] = total

        _CUDA["add_bias"] = add_bias
        _CUDA["bias_grad"] = bias_grad
    return _CUDA


def _cuda_launch(kernel, n_threads, *args):
    """``n_threads`` threads' worth of blocks (at most _MAX_BLOCKS; the kernels stride)."""
    launch(kernel, blocks_for(n_threads, _THREADS_PER_BLOCK, _MAX_BLOCKS), _THREADS_PER_BLOCK,
           *args)


def add_bias_cuda(y, b, relu=False):
    """Numba-CUDA implementation of :func:`add_bias_reference`: a grid-stride loop over
    the entries (consecutive threads, consecutive entries of a row)."""
    _check(y, b, "y", "b", "add_bias", b_written=False)
    if y.size:
        _cuda_launch(_cuda_kernels()["add_bias"], y.size, y, b, bool(relu),
                     y.dtype.type(0))
    return y


def bias_grad_cuda(dy, db, relu_output=None):
    """Numba-CUDA implementation of :func:`bias_grad_reference`: one thread per column sums
    its rows in order (bit-equal to NumPy for two or more columns; see
    :func:`bias_grad_cpu`)."""
    _check(dy, db, "dy", "db", "bias_grad", b_written=True)
    masked = relu_output is not None
    if masked:
        _check_like(relu_output, dy)
    if dy.shape[0] == 0:
        db[...] = 0
    elif dy.shape[1]:
        _cuda_launch(_cuda_kernels()["bias_grad"], dy.shape[1], dy, db,
                     relu_output if masked else dy, masked, dy.dtype.type(0), dy.dtype.type(1))
    return db


# ---- dispatch ----------------------------------------------------------------------------

_ADD_BIAS = {"reference": add_bias_reference, "cpu": add_bias_cpu, "cuda": add_bias_cuda}
_BIAS_GRAD = {"reference": bias_grad_reference, "cpu": bias_grad_cpu, "cuda": bias_grad_cuda}


def _pick(table, impl, name):
    try:
        return table[impl]
    except KeyError:
        raise ValueError(f"{name}: impl={impl!r} is not one of {sorted(table)}") from None


def add_bias(y, b, relu=False, impl="cpu"):
    """Add a row-broadcast bias to ``y`` in place, then apply a ReLU when ``relu``.

    Parameters
    ----------
    y : (n, m) C-contiguous, writeable float array
        The layer's ``x @ W``; overwritten with ``y + b`` (``max(y + b, 0)`` with ``relu``).
    b : (m,) array of ``y``'s dtype
    relu : bool
    impl : {"reference", "cpu", "cuda"}

    Returns
    -------
    y : the same array
    """
    return _pick(_ADD_BIAS, impl, "add_bias")(y, b, relu)


def bias_grad(dy, db, relu_output=None, impl="cpu"):
    """The bias gradient ``db = sum_rows dy``, behind a ReLU mask when ``relu_output`` is given.

    Derivation: docs/derivations.md, "Dense layer" and "Activations".

    Parameters
    ----------
    dy : (n, m) C-contiguous, writeable float array
        Gradient with respect to the layer's output (after the ReLU when masked); with
        ``relu_output`` it is overwritten with ``dy * [relu_output > 0]``, the gradient
        with respect to the pre-activation.
    db : (m,) writeable array of ``dy``'s dtype, written
    relu_output : (n, m) array or None
        The ReLU's forward output ``max(x W + b, 0)``.
    impl : {"reference", "cpu", "cuda"}

    Returns
    -------
    db : the same array
    """
    return _pick(_BIAS_GRAD, impl, "bias_grad")(dy, db, relu_output)
