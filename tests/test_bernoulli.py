"""The fused Bernoulli loss kernel: cpu (Numba) and cuda (Numba-CUDA, simulator) against the
NumPy reference, the reference against the textbook formulas and finite differences, NaN,
bad input and ``scale``."""

import numpy as np
import pytest
from minivae.kernels import bernoulli
from minivae.kernels.bernoulli import bernoulli_nll_and_grad

from minivae.gradcheck import check_gradients

# The kernels' standard (issue 5): the implementations evaluate one formula and differ only
# in rounding (a polynomial exp within 2 ulp of NumPy's, a log1p series truncated at a
# fortieth of an ulp in float32 and a sixtieth in float64, a different summation order of
# non-negative terms), so 1e-5 (float32) and 1e-12 (float64) relative leave a wide margin;
# atol is 0 wherever nothing can cancel, and each exception says why below.
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
DTYPES = [np.float32, np.float64]
SCALE = 1.0 / 3.0  # not a power of two, so its rounding to the dtype shows
# The cpu kernel walks the flat entries in chunks of 2048 and sums each row's segments:
# rows shorter and longer than a chunk, one past 128 rows and 784 columns, more rows than
# entries per chunk. The last shape is above the parallel threshold of both dtypes (checked
# below); float64 128 x 784 is above its own.
CPU_SHAPES = [(1, 1), (1, 300), (1, 5000), (300, 1), (3, 7), (129, 785), (128, 784),
              (max(bernoulli._PARALLEL_MIN_ENTRIES.values()) // 787 + 3, 787)]
# The simulator runs every CUDA thread as a Python thread: small shapes only. (5, 129) is
# one column past a full block of 128 threads; (40, 1) runs one thread per block.
CUDA_SHAPES = [(1, 1), (1, 300), (40, 1), (3, 7), (5, 129)]


def _inputs(rng, shape, dtype, soft=False):
    logits = (3.0 * rng.standard_normal(shape)).astype(dtype)
    X = rng.uniform(0, 1, shape) if soft else (rng.uniform(0, 1, shape) < 0.3)
    return logits, X.astype(dtype)


def _assert_matches_reference(impl, logits, X, scale, soft):
    dtype = logits.dtype.type
    rtol = RTOL[dtype]
    nll, dlogits = bernoulli_nll_and_grad(logits, X, scale, impl=impl)
    nll_ref, dlogits_ref = bernoulli_nll_and_grad(logits, X, scale, impl="reference")
    assert nll.dtype == dlogits.dtype == dtype
    assert nll.shape == (logits.shape[0],) and dlogits.shape == logits.shape
    # every nll term is non-negative, so the row sums never cancel: relative comparison
    np.testing.assert_allclose(nll, nll_ref, rtol=rtol, atol=0, err_msg=f"{impl} nll")
    if not soft:
        # binary x: one of the two numerator terms is 0, nothing cancels
        np.testing.assert_allclose(dlogits, dlogits_ref, rtol=rtol, atol=0,
                                   err_msg=f"{impl} dlogits")
        return
    # Soft targets: sigmoid(f) - x may cancel to ~0 legitimately, so the error is bounded
    # relative to the operands instead: |err| <= rtol * |scale| * (sigmoid(f) + |x|).
    logits64 = logits.astype(np.float64)
    operands = abs(scale) * (1.0 / (1.0 + np.exp(-logits64)) + np.abs(X.astype(np.float64)))
    error = np.abs(dlogits.astype(np.float64) - dlogits_ref)
    worst = np.unravel_index(np.argmax(error / operands), error.shape)
    assert np.all(error <= rtol * operands), (
        f"{impl} dlogits {dlogits[worst]} vs reference {dlogits_ref[worst]} at {worst}: "
        f"error {error[worst]:.3g} > {rtol} * {operands[worst]:.3g}"
    )


def test_the_last_cpu_shape_takes_the_parallel_kernel():
    n, d = CPU_SHAPES[-1]
    assert all(n * d >= threshold for threshold in bernoulli._PARALLEL_MIN_ENTRIES.values())


@pytest.mark.parametrize("impl, shapes", [("cpu", CPU_SHAPES), ("cuda", CUDA_SHAPES)],
                         ids=["cpu", "cuda"])
@pytest.mark.parametrize("soft", [False, True], ids=["binary", "soft"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_reference(rng, impl, shapes, dtype, soft):
    for shape in shapes:
        logits, X = _inputs(rng, shape, dtype, soft)
        _assert_matches_reference(impl, logits, X, SCALE, soft)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_grid_stride_over_more_rows_than_blocks(rng, monkeypatch, dtype):
    # On a GPU the grid is capped at 1024 blocks; more rows than that loop in each block.
    monkeypatch.setattr(bernoulli, "_MAX_BLOCKS", 2)
    logits, X = _inputs(rng, (7, 9), dtype)
    _assert_matches_reference("cuda", logits, X, SCALE, soft=False)


@pytest.mark.parametrize("impl", ["reference", "cpu", "cuda"])
def test_empty_shapes(impl):
    for shape in ((0, 5), (3, 0)):
        logits = np.zeros(shape, dtype=np.float32)
        nll, dlogits = bernoulli_nll_and_grad(logits, logits.copy(), impl=impl)
        np.testing.assert_array_equal(nll, np.zeros(shape[0], dtype=np.float32))
        assert dlogits.shape == shape


# Every regime of exp(-|f|): normal, subnormal (float32 below -87.3, float64 below -708.4)
# and 0 (below -103.3 and -745.1), with exact 0 and -0.
SWEEP_LIMIT = {np.float32: 120.0, np.float64: 800.0}


def _sweep(dtype, count):
    """``count + 2`` logits over the range, each with x = 0 (first half) and x = 1."""
    limit = SWEEP_LIMIT[dtype]
    logits = np.concatenate([np.linspace(-limit, limit, count), [0.0, -0.0]])
    X = np.repeat([0.0, 1.0], logits.size)
    return np.concatenate([logits, logits]).astype(dtype), X.astype(dtype)


def _assert_close_down_to_subnormals(actual, reference, what):
    # A subnormal carries an absolute, not a relative, precision: libm's exp (the kernels)
    # and NumPy's can differ there by one unit of the smallest subnormal (measured: by one
    # in ~11% of float32 results in [-103, -87]; both are within one unit of the truth).
    # NaN must meet NaN and inf the same inf.
    dtype = reference.dtype.type
    np.testing.assert_allclose(actual, reference, rtol=RTOL[dtype],
                               atol=np.finfo(dtype).smallest_subnormal, err_msg=what)


def _reference_allowing_inf(logits, X):
    with np.errstate(invalid="ignore"):  # inf - inf at infinite logits: NaN, as textbook
        return bernoulli_nll_and_grad(logits, X, 1.0, impl="reference")


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_matches_reference_over_the_whole_range(dtype):
    # One logit per row, so each nll is a single term and is compared on its own; the
    # infinities go through the libm fix-up like the subnormal range.
    logits, X = _sweep(dtype, 24001)
    logits = np.concatenate([logits, np.array([np.inf, -np.inf] * 2, dtype=dtype)])
    X = np.concatenate([X, np.array([0, 0, 1, 1], dtype=dtype)])
    logits, X = logits.reshape(-1, 1), X.reshape(-1, 1)
    nll, dlogits = bernoulli_nll_and_grad(logits, X, 1.0, impl="cpu")
    nll_ref, dlogits_ref = _reference_allowing_inf(logits, X)
    # the sweep reaches the range where exp(-|f|), and so the gradient, would be subnormal
    # (there the gradients are flushed to 0, and the nll terms are subnormal)
    # for x = 0, f < 0 (gradient a / (1 + a)) and x = 1, f > 0 (gradient -a / (1 + a))
    below = -np.abs(logits.astype(np.float64)) < np.log(np.finfo(dtype).tiny)
    tail = ((X == 0) & (logits < 0)) | ((X == 1) & (logits > 0))
    flushed = below & tail & np.isfinite(logits)
    assert np.count_nonzero(flushed) > 100
    assert np.all(dlogits[flushed] == 0)
    _assert_close_down_to_subnormals(nll, nll_ref, "nll")
    _assert_close_down_to_subnormals(dlogits, dlogits_ref, "dlogits")


# the simulator computes with NumPy scalars in its own threads (np.errstate is per thread)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_reference_over_the_whole_range(dtype):
    # Rows 0 and 1: the sweep with x = 0 and x = 1 (256 logits each); row 2: the
    # infinities with x = 0 and 1, then zeros.
    logits, X = _sweep(dtype, 254)
    logits, X = logits.reshape(2, -1), X.reshape(2, -1)
    infinities = np.zeros((2, logits.shape[1]), dtype=dtype)
    infinities[0, :4] = [np.inf, -np.inf, np.inf, -np.inf]
    infinities[1, :4] = [0, 0, 1, 1]
    logits = np.vstack([logits, infinities[:1]])
    X = np.vstack([X, infinities[1:]])
    nll, dlogits = bernoulli_nll_and_grad(logits, X, 1.0, impl="cuda")
    nll_ref, dlogits_ref = _reference_allowing_inf(logits, X)
    _assert_close_down_to_subnormals(nll, nll_ref, "nll")
    _assert_close_down_to_subnormals(dlogits, dlogits_ref, "dlogits")


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_is_the_textbook_function(rng, dtype):
    # softplus(f) - x f with np.logaddexp and sigmoid(f) - x as 1 / (1 + exp(-f)) - x,
    # evaluated in float64 on the same (rounded) inputs; |f| < 5, where the textbook
    # formulas lose at most a few digits to cancellation.
    for soft in (False, True):
        logits = rng.uniform(-5, 5, size=(17, 50)).astype(dtype)
        X = (rng.uniform(0, 1, logits.shape) if soft
             else rng.uniform(0, 1, logits.shape) < 0.5).astype(dtype)
        f, x = logits.astype(np.float64), X.astype(np.float64)
        nll_textbook = (np.logaddexp(0.0, f) - x * f).sum(axis=1)
        sigmoid = 1.0 / (1.0 + np.exp(-f))
        nll, dlogits = bernoulli_nll_and_grad(logits, X, SCALE, impl="reference")
        rtol = RTOL[dtype]
        np.testing.assert_allclose(nll, nll_textbook, rtol=rtol, atol=0)
        # the bound of _assert_matches_reference, for soft and binary targets alike
        scale = float(dtype(SCALE))
        error = np.abs(dlogits - scale * (sigmoid - x))
        assert np.all(error <= rtol * abs(scale) * (sigmoid + np.abs(x))), error.max()


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_keeps_full_precision_where_sigmoid_rounds_to_one(dtype):
    # x = 1, f from 20 to 80: the textbook sigmoid(f) - 1 is 0 in float32 (and has lost
    # f / ln 10 digits in float64); the reference gives -exp(-f) / (1 + exp(-f)) and the
    # loss log1p(exp(-f)) to rounding.
    logits = np.linspace(20.0, 80.0, 61).astype(dtype).reshape(1, -1)
    X = np.ones_like(logits)
    nll, dlogits = bernoulli_nll_and_grad(logits, X, 1.0, impl="reference")
    a = np.exp(-logits.astype(np.float64))
    np.testing.assert_allclose(dlogits, -a / (1.0 + a), rtol=RTOL[dtype], atol=0)
    np.testing.assert_allclose(nll, np.log1p(a).sum(axis=1), rtol=RTOL[dtype], atol=0)


@pytest.mark.parametrize("impl", ["reference", "cpu"])
def test_dlogits_is_the_gradient_of_the_scaled_loss(rng, impl):
    # Derivation: docs/derivations.md, "Bernoulli log-likelihood from logits".
    logits, X = _inputs(rng, (4, 9), np.float64, soft=True)
    X[0, :4] = [0.0, 1.0, 0.0, 1.0]
    inputs = {"logits": logits}

    def loss():
        return SCALE * bernoulli_nll_and_grad(inputs["logits"], X, impl=impl)[0].sum()

    dlogits = bernoulli_nll_and_grad(logits, X, SCALE, impl=impl)[1]
    (row,) = check_gradients(loss, inputs, {"logits": dlogits})
    assert row["n_checked"] == logits.size
    assert row["rel_error"] < 1e-6, row


@pytest.mark.parametrize("impl", ["reference", "cpu", "cuda"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_logits_give_nan(rng, impl, dtype):
    logits, X = _inputs(rng, (4, 6), dtype)
    X[1] = [0, 1, 0, 1, 0, 1]
    logits[1, 2] = np.nan
    logits[2, 5] = np.nan
    logits[3, 0] = -1000.0  # an entry of the libm fix-up in the same chunk as the NaNs
    nll, dlogits = bernoulli_nll_and_grad(logits, X, impl=impl)
    np.testing.assert_array_equal(np.isnan(nll), [False, True, True, False])
    np.testing.assert_array_equal(np.isnan(dlogits), np.isnan(logits))


@pytest.mark.parametrize("impl", ["reference", "cpu", "cuda"])
def test_scale_multiplies_dlogits_only(rng, impl):
    logits, X = _inputs(rng, (3, 11), np.float32, soft=True)
    nll, dlogits = bernoulli_nll_and_grad(logits, X, 1.0, impl=impl)
    nll_quarter, dlogits_quarter = bernoulli_nll_and_grad(logits, X, 0.25, impl=impl)
    np.testing.assert_array_equal(nll_quarter, nll)
    np.testing.assert_array_equal(dlogits_quarter, 0.25 * dlogits)  # a power of 2: exact


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_parallel_blocks_give_the_serial_bits(rng, dtype):
    # Each row is computed the same way whichever block holds it, so any split of the rows
    # (including more blocks than threads, and on a one-thread machine) gives the same bits.
    logits, X = _inputs(rng, (13, 2100), dtype, soft=True)
    scale = dtype(SCALE)
    flat = (logits.reshape(-1), X.reshape(-1))
    serial = (np.empty(13, dtype=dtype), np.empty_like(logits))
    bernoulli._cpu_serial(*flat, 2100, scale, serial[0], serial[1].reshape(-1))
    for n_blocks in (2, 3, 13):
        nll, dlogits = np.empty(13, dtype=dtype), np.empty_like(logits)
        bernoulli._cpu_parallel(*flat, 2100, scale, nll, dlogits.reshape(-1), n_blocks)
        np.testing.assert_array_equal(nll, serial[0])
        np.testing.assert_array_equal(dlogits, serial[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_is_deterministic(rng, dtype):
    logits, X = _inputs(rng, CPU_SHAPES[-1], dtype, soft=True)
    first = bernoulli_nll_and_grad(logits, X, SCALE)
    second = bernoulli_nll_and_grad(logits, X, SCALE)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_cpu_accepts_non_contiguous_arrays(rng):
    logits, X = _inputs(rng, (6, 10), np.float32)
    expected = bernoulli_nll_and_grad(np.ascontiguousarray(logits.T), np.ascontiguousarray(X.T))
    for got, want in zip(bernoulli_nll_and_grad(logits.T, X.T), expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("impl", ["reference", "cpu", "cuda"])
def test_bad_input_is_rejected_with_a_useful_message(impl):
    f32 = np.zeros((2, 3), dtype=np.float32)
    cases = [
        ((f32, np.zeros((2, 4), dtype=np.float32)),
         r"X has shape \(2, 4\) but logits has \(2, 3\)"),
        ((f32, f32.astype(np.float64)), r"X has dtype float64 but logits has float32.*astype"),
        ((f32.astype(np.int64), f32.astype(np.int64)), r"logits has dtype int64.*float32"),
        ((np.zeros(3, dtype=np.float32), np.zeros(3, dtype=np.float32)),
         r"logits must be a 2-D array.*shape \(3,\).*reshape\(1, -1\)"),
        ((f32, np.zeros(6, dtype=np.float32)), r"X must be a 2-D array.*\(6,\)"),
        (([[0.0, 1.0]], [[0.0, 1.0]]), r"logits must be a NumPy or CuPy array, got list"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            bernoulli_nll_and_grad(*args, impl=impl)


def test_unknown_impl_is_rejected():
    f32 = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"impl='gpu' is not one of"):
        bernoulli_nll_and_grad(f32, f32, impl="gpu")


@pytest.mark.parametrize("impl", ["reference", "cpu", "cuda"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_subnormal_gradients_are_flushed_to_zero(impl, dtype):
    """Logits far below 0 for a blank pixel give gradients below the smallest normal number;
    they are set to 0 (subnormal operands make the decoder's matrix products 20-50x
    slower), while every normal gradient is kept."""
    tiny = np.finfo(dtype).tiny
    low = -120.0 if dtype == np.float32 else -800.0
    logits = np.linspace(low, 0.0, 257).astype(dtype)[None, :]
    X = np.zeros_like(logits)
    scale = 1.0 / 128.0
    _, dlogits = bernoulli_nll_and_grad(logits, X, scale, impl=impl)
    assert not np.any((dlogits != 0) & (np.abs(dlogits) < tiny))
    # the exact gradient, scale * sigmoid(f) for x = 0, in float64 (no subnormals there)
    with np.errstate(over="ignore"):  # exp(800) is inf: the exact gradient is then 0
        exact = scale / (1.0 + np.exp(-logits.astype(np.float64)))
    flushed = exact < tiny
    assert flushed.any() and not flushed.all()
    assert np.all(dlogits[flushed] == 0)
    np.testing.assert_allclose(dlogits[~flushed], exact[~flushed], rtol=RTOL[dtype],
                               atol=0)
