"""The dense layer's element-wise kernels (bias add with optional ReLU; bias gradient behind an
optional ReLU mask): cpu (Numba) and cuda (Numba-CUDA, simulator) against the NumPy reference."""

import numpy as np
import pytest
from minivae.kernels import add_bias, bias_grad

# 1 x 1, a single row or column, odd sizes, one past the 128-thread cuda block, long single
# columns (NumPy sums those pairwise, see test_bias_grad_matches_reference), and the VAE's
# 128 x 400 hidden layer (cpu only: the simulator runs one Python thread per CUDA thread).
SHAPES = [(1, 1), (1, 9), (9, 1), (3, 7), (17, 129), (0, 5), (5, 0), (200, 1), (1000, 1)]
CPU_SHAPES = SHAPES + [(128, 400), (129, 785)]
IMPLS = [("cpu", CPU_SHAPES), ("cuda", SHAPES)]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def _layer(rng, shape, dtype):
    y = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return y, b, dy


@pytest.mark.parametrize("impl,shapes", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
def test_add_bias_matches_reference(rng, impl, shapes, dtype, relu):
    for shape in shapes:
        y, b, _ = _layer(rng, shape, dtype)
        expected = add_bias(y.copy(), b, relu, impl="reference")
        out = y.copy()
        returned = add_bias(out, b, relu, impl=impl)
        assert returned is out
        # one addition and a comparison per entry: the same rounding, so exactly equal
        np.testing.assert_array_equal(out, expected, err_msg=f"{impl} {shape}")
        if relu and out.size:
            assert out.min() >= 0


@pytest.mark.parametrize("impl,shapes", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("masked", [False, True])
def test_bias_grad_matches_reference(rng, impl, shapes, dtype, masked):
    for shape in shapes:
        y, _, dy = _layer(rng, shape, dtype)
        relu_output = np.maximum(y, 0) if masked else None
        dy_ref = dy.copy()
        db_ref = bias_grad(dy_ref, np.empty(shape[1], dtype), relu_output, impl="reference")
        dy_out = dy.copy()
        db = np.full(shape[1], np.nan, dtype)
        assert bias_grad(dy_out, db, relu_output, impl=impl) is db
        np.testing.assert_array_equal(dy_out, dy_ref, err_msg=f"{impl} {shape} mask")
        if shape[1] >= 2:
            # every implementation adds the rows in order, as NumPy's sum(axis=0) does for
            # two or more columns: the same additions in the same order, so the same bits
            np.testing.assert_array_equal(db, db_ref, err_msg=f"{impl} {shape}")
        else:
            # One column is contiguous along the summed axis, and there NumPy sums pairwise
            # (eight partial sums, then a tree): the same sum, rounded differently. A sum
            # of terms of both signs can cancel to ~0, so its rounding error is bounded
            # relative to sum |dy|, not to the sum: that is the tolerance's scale. The
            # worst case of in-order summation is (n - 1) u sum|dy| (6e-5 at n = 1000 in
            # float32); with random signs the error grows like sqrt(n) u (2e-6 there), and
            # the measured differences were 1.2e-8 and 4.7e-9 of sum|dy|.
            bound = RTOL[dtype] * np.abs(dy_ref).sum(axis=0)
            assert np.all(np.abs(db - db_ref) <= bound), f"{impl} {shape}: {db} vs {db_ref}"


def test_bias_grad_masks_where_the_relu_was_off(rng):
    y = np.array([[1.0, -1.0, 0.0], [-2.0, 3.0, 0.5]])
    dy = np.array([[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]])
    db = np.empty(3)
    bias_grad(dy, db, np.maximum(y, 0), impl="cpu")
    np.testing.assert_array_equal(dy, [[10.0, 0.0, 0.0], [0.0, 50.0, 60.0]])
    np.testing.assert_array_equal(db, [10.0, 50.0, 60.0])


@pytest.mark.parametrize("impl", ["reference", "cpu", "cuda"])
def test_nan_propagates(impl):
    y = np.array([[np.nan, -1.0, 2.0]], dtype=np.float32)
    b = np.zeros(3, dtype=np.float32)
    add_bias(y, b, relu=True, impl=impl)
    assert np.isnan(y[0, 0]) and y[0, 1] == 0 and y[0, 2] == 2
    # a NaN gradient where the ReLU was off stays NaN (NaN * 0), so the trainer sees it
    dy = np.array([[1.0, np.nan, 1.0]], dtype=np.float32)
    db = np.empty(3, dtype=np.float32)
    bias_grad(dy, db, np.array([[1.0, 0.0, 1.0]], dtype=np.float32), impl=impl)
    assert np.isnan(dy[0, 1]) and np.isnan(db[1]) and db[0] == 1 and db[2] == 1


def _read_only(array):
    array.flags.writeable = False
    return array


@pytest.mark.parametrize("impl", ["cpu", "cuda"])
def test_read_only_outputs_are_refused(impl):
    """The arrays a kernel writes must be writeable (a read-only y used to give the cpu
    build a multi-page Numba TypingError)."""
    message = "{} is read-only, but {} writes into it in place"
    with pytest.raises(ValueError, match=message.format("y", "add_bias")):
        add_bias(_read_only(np.zeros((3, 4))), np.zeros(4), impl=impl)
    with pytest.raises(ValueError, match=message.format("dy", "bias_grad")):
        bias_grad(_read_only(np.zeros((3, 4))), np.zeros(4), impl=impl)
    with pytest.raises(ValueError, match=message.format("db", "bias_grad")):
        bias_grad(np.zeros((3, 4)), _read_only(np.zeros(4)), impl=impl)


def test_read_only_inputs_are_taken_by_the_cpu_kernels():
    # b and relu_output are only read. (The CUDA simulator copies every NumPy argument back
    # after a launch, so it cannot take read-only arrays at all; CuPy arrays have no flag.)
    y = np.array([[1.0, -2.0], [-3.0, 4.0]])
    b = _read_only(np.array([0.5, 0.5]))
    np.testing.assert_array_equal(add_bias(y.copy(), b, relu=True, impl="cpu"),
                                  add_bias(y.copy(), b, relu=True, impl="reference"))
    relu_output = _read_only(np.maximum(y, 0))
    db = bias_grad(np.ones((2, 2)), np.empty(2), relu_output, impl="cpu")
    np.testing.assert_array_equal(db, [1.0, 1.0])


@pytest.mark.parametrize("impl", ["cpu", "cuda"])
def test_bad_input_is_refused(impl):
    y = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"shape \(3, 4\).*\(5,\)"):
        add_bias(y, np.zeros(5), impl=impl)
    with pytest.raises(ValueError, match="one float dtype"):
        add_bias(y, np.zeros(4, dtype=np.float32), impl=impl)
    with pytest.raises(ValueError, match="C-contiguous"):
        add_bias(np.zeros((4, 3)).T, np.zeros(4), impl=impl)
    with pytest.raises(ValueError, match="relu_output has shape"):
        bias_grad(y, np.zeros(4), np.zeros((2, 4)), impl=impl)
    with pytest.raises(ValueError, match=r"relu_output \(float32\) and dy \(float64\)"):
        bias_grad(y, np.zeros(4), np.zeros((3, 4), dtype=np.float32), impl=impl)
    with pytest.raises(ValueError, match="impl='gpu'"):
        add_bias(y, np.zeros(4), impl="gpu")
