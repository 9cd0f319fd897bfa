"""RBF kernel matrix and gradient contraction: cpu and cuda against the NumPy reference,
and the reference contraction against central finite differences.

The cuda kernels run under Numba's CUDA simulator (tests/conftest.py switches it on),
which runs every thread in Python: those cases stay at n <= 40.
"""

import numpy as np
import pytest

from minivae.kernels import rbf
from minivae.kernels.rbf import (
    rbf_grad_contract,
    rbf_grad_contract_reference,
    rbf_matrix,
    rbf_matrix_reference,
)

RTOL = {np.float64: 1e-12, np.float32: 1e-5}


def make_case(rng, n, m, d, ard, with_amp, dtype):
    """Points, lengthscales and amplitudes scaled so that every K entry stays well above
    underflow (squared scaled distances of order d / lengthscale^2 ~ 1 to 10)."""
    X = rng.normal(size=(n, d)).astype(dtype)
    Y = rng.normal(size=(m, d)).astype(dtype)
    lengthscale = rng.uniform(0.7, 1.5, size=d if ard else None) * np.sqrt(d)
    amp_x = rng.uniform(0.5, 2.0, size=n).astype(dtype) if with_amp else None
    amp_y = rng.uniform(0.5, 2.0, size=m).astype(dtype) if with_amp else None
    return X, Y, lengthscale, amp_x, amp_y


def assert_matches_reference(got, expected, rtol):
    assert got.dtype == expected.dtype, f"dtype: got {got.dtype}, reference {expected.dtype}"
    assert got.shape == expected.shape, f"shape: got {got.shape}, reference {expected.shape}"
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=0, err_msg="mine vs reference")


def assert_sum_close(got, expected, magnitude, rtol):
    """Compare sums whose terms have both signs.

    A sum of terms t_ij can cancel to ~0, so its relative error is only bounded relative to
    sum |t_ij| (the sum's condition): |got - expected| <= rtol * magnitude, elementwise.
    """
    err = np.abs(np.asarray(got, dtype=np.float64) - expected)
    bound = rtol * magnitude
    assert np.all(err <= bound), f"mine {got} vs reference {expected}; error {err} > {bound}"


def contract_magnitudes(W, X, lengthscale, variance, amp):
    """sum_ij |0.5 W_ij dK_ij/dtheta| and the same for damp: the scale of each sum's terms."""
    X = X.astype(np.float64)
    absW = np.abs(W.astype(np.float64))
    absamp = None if amp is None else np.abs(amp.astype(np.float64))
    dtheta_mag, damp_mag = rbf_grad_contract_reference(absW, X, lengthscale, variance, absamp)
    return dtheta_mag, damp_mag


# ---- rbf_matrix ------------------------------------------------------------------------

# (n, m, d): 1 x 1, single rows, odd sizes, one more than the cpu tile and the cuda tile,
# d = 1, 3, 40 and a size that takes the cpu matrix-product route for the distances
CPU_SHAPES = [
    (1, 1, 1),
    (1, 6, 3),
    (7, 1, 3),
    (17, 17, 1),
    (33, 31, 40),
    (rbf.CPU_TILE + 1, rbf.CPU_TILE - 1, 3),
    (2 * rbf.CPU_TILE + 3, 2 * rbf.CPU_TILE + 1, rbf.GEMM_MIN_D),
    (151, 97, 40),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ard", [False, True])
@pytest.mark.parametrize("with_amp", [False, True])
@pytest.mark.parametrize("n, m, d", CPU_SHAPES)
def test_cpu_matrix_matches_reference(rng, n, m, d, ard, with_amp, dtype):
    X, Y, lengthscale, amp_x, amp_y = make_case(rng, n, m, d, ard, with_amp, dtype)
    got = rbf_matrix(X, Y, lengthscale, 1.7, amp_x, amp_y, impl="cpu")
    expected = rbf_matrix_reference(X, Y, lengthscale, 1.7, amp_x, amp_y)
    assert_matches_reference(got, expected, RTOL[dtype])
    got_sym = rbf_matrix(X, None, lengthscale, 1.7, amp_x, impl="cpu")
    expected_sym = rbf_matrix_reference(X, None, lengthscale, 1.7, amp_x)
    assert_matches_reference(got_sym, expected_sym, RTOL[dtype])
    np.testing.assert_array_equal(got_sym, got_sym.T, err_msg="K(X) must be exactly symmetric")


def test_cpu_matrix_far_points_underflow_like_reference(rng):
    """Entries with exp(-r^2/2) below the smallest normal double: same zeros/subnormals."""
    X = rng.normal(size=(40, 2)) * 30.0
    got = rbf_matrix(X, None, 0.5, 1.0, impl="cpu")
    expected = rbf_matrix_reference(X, None, 0.5, 1.0)
    normal = expected >= np.finfo(np.float64).tiny
    assert np.any(~normal) and np.any(normal)
    np.testing.assert_allclose(got[normal], expected[normal], rtol=1e-12, atol=0)
    # subnormals carry fewer significant bits: compare them in units of the smallest one
    np.testing.assert_allclose(got[~normal], expected[~normal], rtol=0, atol=4 * 5e-324)


@pytest.mark.parametrize("d", [3, rbf.GEMM_MIN_D])
def test_cpu_matrix_points_far_from_origin(rng, d):
    """Points far from the origin: the matrix-product route (d >= GEMM_MIN_D) would lose
    digits to |x|^2 - 2 x.y cancellation; shifting by a data point first keeps rtol 1e-12."""
    X = rng.normal(size=(70, d)) + 1e4
    Y = rng.normal(size=(9, d)) + 1e4
    for Y_ in (None, Y):
        got = rbf_matrix(X, Y_, np.sqrt(d), 1.0, impl="cpu")
        expected = rbf_matrix_reference(X, Y_, np.sqrt(d), 1.0)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


def test_cpu_matrix_clusters_far_apart(rng):
    """Two tight clusters 100 lengthscales apart, d >= GEMM_MIN_D: far from the shift the
    product route would lose digits (|x|^2 - 2 x.y cancels), so those tiles must not use it."""
    d = rbf.GEMM_MIN_D + 4
    near = rng.normal(size=(rbf.CPU_TILE, d)) * 0.3
    far = rng.normal(size=(rbf.CPU_TILE + 5, d)) * 0.3 + 100.0 / np.sqrt(d)
    X = np.vstack([near, far])
    got = rbf_matrix(X, None, 1.0, 1.0, impl="cpu")
    expected = rbf_matrix_reference(X, None, 1.0, 1.0)
    # the cross-cluster entries underflow to 0 in both; the rest must agree to rtol 1e-12
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


# ---- rbf_grad_contract -------------------------------------------------------------------

CONTRACT_SHAPES = [(1, 1), (1, 3), (7, 40), (rbf.CPU_TILE + 1, 3), (2 * rbf.CPU_TILE + 5, 2)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ard", [False, True])
@pytest.mark.parametrize("with_amp", [False, True])
@pytest.mark.parametrize("n, d", CONTRACT_SHAPES)
def test_cpu_contract_matches_reference(rng, n, d, ard, with_amp, dtype):
    X, _, lengthscale, amp, _ = make_case(rng, n, 1, d, ard, with_amp, dtype)
    W = rng.normal(size=(n, n)).astype(dtype)  # not symmetric: the general case
    dtheta, damp = rbf_grad_contract(W, X, lengthscale, 1.3, amp, impl="cpu")
    dtheta_ref, damp_ref = rbf_grad_contract_reference(W, X, lengthscale, 1.3, amp)
    dtheta_mag, damp_mag = contract_magnitudes(W, X, lengthscale, 1.3, amp)
    assert dtheta.dtype == dtype and dtheta.shape == dtheta_ref.shape
    assert_sum_close(dtheta, dtheta_ref, dtheta_mag, RTOL[dtype])
    if with_amp:
        assert damp.dtype == dtype and damp.shape == (n,)
        assert_sum_close(damp, damp_ref, damp_mag, RTOL[dtype])
    else:
        assert damp is None


@pytest.mark.parametrize("ard", [False, True])
def test_cpu_contract_positive_weights_relative(rng, ard):
    """With W >= 0 no term cancels, so every output is compared at plain rtol 1e-12."""
    n, d = 2 * rbf.CPU_TILE + 7, 3
    X, _, lengthscale, amp, _ = make_case(rng, n, 1, d, ard, True, np.float64)
    W = rng.uniform(0.1, 1.0, size=(n, n))
    dtheta, damp = rbf_grad_contract(W, X, lengthscale, 0.8, amp, impl="cpu")
    dtheta_ref, damp_ref = rbf_grad_contract_reference(W, X, lengthscale, 0.8, amp)
    np.testing.assert_allclose(dtheta, dtheta_ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(damp, damp_ref, rtol=1e-12, atol=0)


# ---- the reference contraction is the gradient: central differences ----------------------


@pytest.mark.parametrize("ard", [False, True])
def test_reference_contract_is_the_gradient(rng, ard):
    n, d = 9, 3
    X, _, lengthscale, amp, _ = make_case(rng, n, 1, d, ard, True, np.float64)
    W = rng.normal(size=(n, n))
    variance = 1.3

    def objective(log_ls, log_var, amp_):
        K = rbf_matrix_reference(X, None, np.exp(log_ls), np.exp(log_var), amp_)
        return 0.5 * np.sum(W * K)

    log_ls = np.log(np.atleast_1d(lengthscale))
    dtheta, damp = rbf_grad_contract_reference(W, X, lengthscale, variance, amp)
    h = 1e-5
    numeric = []
    for k in range(log_ls.size):
        step = np.zeros_like(log_ls)
        step[k] = h
        up = objective(log_ls + step, np.log(variance), amp)
        down = objective(log_ls - step, np.log(variance), amp)
        numeric.append((up - down) / (2 * h))
    up = objective(log_ls, np.log(variance) + h, amp)
    down = objective(log_ls, np.log(variance) - h, amp)
    numeric.append((up - down) / (2 * h))
    numeric_amp = []
    for p in range(n):
        step = np.zeros(n)
        step[p] = h
        up = objective(log_ls, np.log(variance), amp + step)
        down = objective(log_ls, np.log(variance), amp - step)
        numeric_amp.append((up - down) / (2 * h))
    rel = np.abs(dtheta - numeric) / np.abs(numeric)
    assert np.all(rel < 1e-6), f"dtheta {dtheta} vs central differences {numeric}"
    rel_amp = np.abs(damp - numeric_amp) / np.abs(numeric_amp)
    assert np.all(rel_amp < 1e-6), f"damp {damp} vs central differences {numeric_amp}"


# ---- cuda, under the simulator (small sizes: every thread is a Python thread) ------------

T = rbf.TILE

#: CUDA's launch limits: grid.x, grid.y, grid.z, and threads per block
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_THREADS_PER_BLOCK = 1024


@pytest.mark.parametrize("n, m", [(1, 1), (T + 1, 3), (10**6, 4000), (4000, 10**6),
                                  (40_000, 40_000)])
def test_cuda_launch_geometry_within_limits(n, m):
    """One block per TILE x TILE tile, every grid and block dimension within CUDA's limits,
    also for a K* of a million test points (65535 row blocks on grid.y would not be)."""
    grid, block = rbf._launch_geometry(n, m)
    assert np.prod(grid) == -(-n // T) * -(-m // T)
    assert all(1 <= g <= limit for g, limit in zip(grid, MAX_GRID))
    assert block == (T, T) and np.prod(block) <= MAX_THREADS_PER_BLOCK


@pytest.mark.parametrize(
    "n, m, d, ard, with_amp, symmetric, dtype",
    [
        (1, 1, 1, False, False, True, np.float64),
        (T + 1, T + 1, 3, True, True, True, np.float64),
        (T + 1, 3, rbf.DCHUNK + 24, False, True, False, np.float64),
        (5, T + 1, 1, True, False, False, np.float32),
        (T + 1, 2, 40, True, True, True, np.float32),
    ],
)
def test_cuda_matrix_matches_reference(rng, n, m, d, ard, with_amp, symmetric, dtype):
    X, Y, lengthscale, amp_x, amp_y = make_case(rng, n, m, d, ard, with_amp, dtype)
    Y, amp_y = (None, None) if symmetric else (Y, amp_y)
    got = rbf_matrix(X, Y, lengthscale, 1.7, amp_x, amp_y, impl="cuda")
    expected = rbf_matrix_reference(X, Y, lengthscale, 1.7, amp_x, amp_y)
    assert_matches_reference(got, expected, RTOL[dtype])
    if symmetric:
        np.testing.assert_array_equal(got, got.T, err_msg="K(X) must be exactly symmetric")


@pytest.mark.parametrize(
    "n, d, ard, with_amp, dtype",
    [
        (1, 1, False, True, np.float64),
        (T + 1, 3, True, True, np.float64),
        (T + 1, rbf.DCHUNK + 24, True, False, np.float64),
        (T + 1, 2, False, True, np.float32),
    ],
)
def test_cuda_contract_matches_reference(rng, n, d, ard, with_amp, dtype):
    X, _, lengthscale, amp, _ = make_case(rng, n, 1, d, ard, with_amp, dtype)
    W = rng.normal(size=(n, n)).astype(dtype)
    dtheta, damp = rbf_grad_contract(W, X, lengthscale, 1.3, amp, impl="cuda")
    dtheta_ref, damp_ref = rbf_grad_contract_reference(W, X, lengthscale, 1.3, amp)
    dtheta_mag, damp_mag = contract_magnitudes(W, X, lengthscale, 1.3, amp)
    assert dtheta.dtype == dtype and dtheta.shape == dtheta_ref.shape
    assert_sum_close(dtheta, dtheta_ref, dtheta_mag, RTOL[dtype])
    if with_amp:
        assert damp.dtype == dtype
        assert_sum_close(damp, damp_ref, damp_mag, RTOL[dtype])
    else:
        assert damp is None


# ---- input validation --------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["cpu", "cuda"])
def test_matrix_rejects_bad_inputs(rng, impl):
    X = rng.normal(size=(5, 3))
    with pytest.raises(ValueError, match="2-D"):
        rbf_matrix(X[:, 0], impl=impl)
    with pytest.raises(ValueError, match="columns"):
        rbf_matrix(X, rng.normal(size=(4, 2)), impl=impl)
    with pytest.raises(ValueError, match="lengthscale has 2 values"):
        rbf_matrix(X, lengthscale=[1.0, 2.0], impl=impl)
    with pytest.raises(ValueError, match="positive"):
        rbf_matrix(X, lengthscale=[1.0, -2.0, 1.0], impl=impl)
    with pytest.raises(ValueError, match="amp_x has 4 values"):
        rbf_matrix(X, amp_x=np.ones(4), impl=impl)
    with pytest.raises(ValueError, match="amp_y has 2 values"):
        rbf_matrix(X, X, amp_y=np.ones(2), impl=impl)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"X has 1 non-finite values \(first at row 3\)"):
        rbf_matrix(bad, impl=impl)


@pytest.mark.parametrize("impl", ["cpu", "cuda"])
def test_contract_rejects_bad_inputs(rng, impl):
    X = rng.normal(size=(5, 3))
    with pytest.raises(ValueError, match=r"W has shape \(5, 4\)"):
        rbf_grad_contract(np.ones((5, 4)), X, impl=impl)
    with pytest.raises(ValueError, match="amp has 3 values"):
        rbf_grad_contract(np.ones((5, 5)), X, amp=np.ones(3), impl=impl)
    with pytest.raises(ValueError, match="lengthscale has 2 values"):
        rbf_grad_contract(np.ones((5, 5)), X, lengthscale=[1.0, 1.0], impl=impl)


IMPLS = ["reference", "cpu", "cuda"]


@pytest.mark.parametrize("impl", IMPLS)
def test_complex_or_text_points_are_refused_in_every_impl(impl):
    """A cast to float would drop the imaginary part (with only a ComplexWarning)."""
    X = np.array([[1.0 + 2.0j, 0.5], [0.0, 1.0j]])
    with pytest.raises(ValueError, match="X has dtype complex128; points must be real"):
        rbf_matrix(X, lengthscale=1.0, impl=impl)
    with pytest.raises(ValueError, match="Y has dtype <U1; points must be real"):
        rbf_matrix(np.ones((2, 1)), np.array([["a"], ["b"]]), lengthscale=1.0, impl=impl)
    with pytest.raises(ValueError, match="X has dtype complex128"):
        rbf_grad_contract(np.eye(2), X, lengthscale=1.0, impl=impl)


def test_integer_points_give_float64_alike_in_every_impl(rng):
    """Integer X is computed in float64 by all three (the reference used to cast the
    lengthscale to the integer dtype, and K to integers: 0.5 became 0, "lengthscale must be
    positive, got [0]")."""
    X = rng.integers(-3, 4, size=(6, 3))
    Y = rng.integers(-3, 4, size=(4, 3))
    W = rng.uniform(0.1, 1.0, size=(6, 6))  # positive: no cancellation, plain rtol
    amp = rng.uniform(0.5, 2.0, size=6)
    for lengthscale in (0.5, [0.5, 1.5, 2.5]):
        K_xy = rbf_matrix_reference(X.astype(np.float64), Y.astype(np.float64), lengthscale, 1.7)
        K_xx = rbf_matrix_reference(X.astype(np.float64), None, lengthscale, 1.7)
        dtheta, damp = rbf_grad_contract_reference(W, X.astype(np.float64), lengthscale, 1.7, amp)
        for impl in IMPLS:
            got = [rbf_matrix(X, Y, lengthscale, 1.7, impl=impl),
                   rbf_matrix(X, None, lengthscale, 1.7, impl=impl),
                   *rbf_grad_contract(W, X, lengthscale, 1.7, amp, impl=impl)]
            for mine, expected in zip(got, (K_xy, K_xx, dtheta, damp)):
                assert mine.dtype == np.float64, f"{impl}: dtype {mine.dtype}"
                np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=0,
                                           err_msg=f"{impl}, lengthscale {lengthscale}")


@pytest.mark.parametrize("impl", IMPLS)
def test_variance_must_be_a_scalar(rng, impl):
    """The docstring's float, given as a Python float or a 0-d array, is taken alike by
    every impl; an array of any other shape is refused by every impl (a one-element array
    used to work in the reference only, and raise TypeError elsewhere)."""
    X = rng.normal(size=(4, 2))
    W = rng.normal(size=(4, 4))
    K = rbf_matrix(X, None, 1.2, 1.3, impl=impl)
    dtheta, _ = rbf_grad_contract(W, X, 1.2, 1.3, impl=impl)
    np.testing.assert_array_equal(rbf_matrix(X, None, 1.2, np.array(1.3), impl=impl), K)
    np.testing.assert_array_equal(rbf_grad_contract(W, X, 1.2, np.array(1.3), impl=impl)[0],
                                  dtheta)
    for variance, shape in ((np.array([1.3]), r"\(1,\)"), ([1.3, 1.3], r"\(2,\)")):
        message = rf"variance must be a float, got an array of shape {shape}"
        with pytest.raises(ValueError, match=message):
            rbf_matrix(X, None, 1.2, variance, impl=impl)
        with pytest.raises(ValueError, match=message):
            rbf_grad_contract(W, X, 1.2, variance, impl=impl)


def test_unknown_impl_is_named():
    with pytest.raises(ValueError, match="impl='gpu'"):
        rbf_matrix(np.ones((2, 1)), impl="gpu")
    with pytest.raises(ValueError, match="impl='gpu'"):
        rbf_grad_contract(np.ones((2, 2)), np.ones((2, 1)), impl="gpu")


# ---- out= ----------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["reference", "cpu", "cuda"])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matrix_writes_into_out(rng, impl, symmetric, dtype):
    """K lands in the given array, which is returned, with the values of a fresh output."""
    X, Y, lengthscale, amp_x, amp_y = make_case(rng, 17, 9, 3, True, True, dtype)
    Y, amp_y = (None, None) if symmetric else (Y, amp_y)
    expected = rbf_matrix(X, Y, lengthscale, 1.3, amp_x, amp_y, impl=impl)
    out = np.full(expected.shape, np.nan, dtype=dtype)
    got = rbf_matrix(X, Y, lengthscale, 1.3, amp_x, amp_y, impl=impl, out=out)
    assert got is out
    np.testing.assert_array_equal(out, expected, err_msg="K in out vs K in a fresh array")


@pytest.mark.parametrize("impl", ["reference", "cpu", "cuda"])
def test_matrix_rejects_bad_out(rng, impl):
    X = rng.normal(size=(5, 3))
    with pytest.raises(ValueError, match=r"shape \(4, 5\), not \(5, 5\)"):
        rbf_matrix(X, impl=impl, out=np.empty((4, 5)))
    with pytest.raises(ValueError, match="dtype float32, not float64"):
        rbf_matrix(X, impl=impl, out=np.empty((5, 5), np.float32))
    with pytest.raises(ValueError, match="not C-contiguous"):
        rbf_matrix(X, impl=impl, out=np.empty((5, 5), order="F")[:, :])
    with pytest.raises(ValueError, match="not C-contiguous"):
        rbf_matrix(X, X[:2], impl=impl, out=np.empty((5, 4))[:, :2])
    read_only = np.empty((5, 5))
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        rbf_matrix(X, impl=impl, out=read_only)
    square = rng.normal(size=(5, 5))
    with pytest.raises(ValueError, match="memory shared with the points"):
        rbf_matrix(square, impl=impl, out=square)
    with pytest.raises(ValueError, match="must be a numpy array"):
        rbf_matrix(X, impl=impl, out=[[0.0] * 5] * 5)
