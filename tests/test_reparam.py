"""The reparameterisation kernels: cpu (Numba) and cuda (Numba-CUDA, simulator) against
the NumPy reference, and the reference's backward against finite differences."""

import re

import numpy as np
import pytest

from minivae.gradcheck import check_gradients
from minivae.kernels import reparam_backward, reparam_forward

# The cpu kernels walk the n * k entries in blocks of 4096: the last two shapes span
# several blocks (the last one partial) and still take the serial build.
SHAPES = [(L, n, k) for L in (1, 2, 3) for n in (1, 7, 33) for k in (1, 5, 17)]
SHAPES += [(1, 100, 50), (3, 100, 101)]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
IMPLS = ["reference", "cpu", "cuda"]


def _inputs(rng, shape, dtype):
    L, n, k = shape
    mu = rng.standard_normal((n, k)).astype(dtype)
    logvar = rng.uniform(-3, 2, size=(n, k)).astype(dtype)
    eps = rng.standard_normal(shape).astype(dtype)
    dz = rng.standard_normal(shape).astype(dtype)
    return mu, logvar, eps, dz


def _assert_close(actual, reference, dtype, what):
    # z = mu + sigma * eps and the sums over samples can cancel to ~0 in a few entries, so
    # the absolute tolerance is the relative one times the array's scale.
    assert actual.dtype == reference.dtype == dtype and actual.shape == reference.shape
    scale = float(np.abs(reference).max())
    np.testing.assert_allclose(actual, reference, rtol=RTOL[dtype],
                               atol=RTOL[dtype] * scale, err_msg=what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_kernels_match_reference(rng, dtype):
    for shape in SHAPES:
        mu, logvar, eps, dz = _inputs(rng, shape, dtype)
        z_ref = reparam_forward(mu, logvar, eps, impl="reference")
        _assert_close(reparam_forward(mu, logvar, eps, impl="cpu"), z_ref, dtype, f"z {shape}")
        refs = reparam_backward(dz, logvar, eps, impl="reference")
        for got, ref, what in zip(reparam_backward(dz, logvar, eps, impl="cpu"), refs,
                                  ("dmu", "dlogvar")):
            _assert_close(got, ref, dtype, f"{what} {shape}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_parallel_build_matches_reference(rng, dtype):
    # Large enough to take the prange build (2**17 entries in float32, 2**16 in float64),
    # with awkward sizes.
    from minivae.kernels import reparam

    shape = (3, 257, 171)
    assert np.prod(shape) >= reparam._PARALLEL_MIN_ENTRIES[np.dtype(dtype)]
    mu, logvar, eps, dz = _inputs(rng, shape, dtype)
    _assert_close(reparam_forward(mu, logvar, eps, impl="cpu"),
                  reparam_forward(mu, logvar, eps, impl="reference"), dtype, "z")
    for got, ref in zip(reparam_backward(dz, logvar, eps, impl="cpu"),
                        reparam_backward(dz, logvar, eps, impl="reference")):
        _assert_close(got, ref, dtype, "backward")


# Every regime of exp(logvar / 2): results subnormal or 0 (float32 below logvar ~ -174,
# float64 below ~ -1416), the normal range, overflow to inf, and NaN.
EXTREME_LOGVAR = {
    np.float32: [-np.inf, -400.0, -210.0, -200.0, -180.0, -175.0, -174.5, -150.0, -40.0,
                 0.0, 3.5, 90.0, 175.0, 176.0, 177.5, 178.0, 300.0, np.inf, np.nan],
    np.float64: [-np.inf, -3000.0, -1500.0, -1480.0, -1418.0, -1416.5, -1416.0, -900.0,
                 0.0, 7.25, 900.0, 1417.0, 1418.0, 1419.0, 1420.0, 3000.0, np.inf, np.nan],
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_kernels_match_reference_over_the_whole_range_of_exp(rng, dtype):
    # A sweep of logvar over the range where exp(logvar / 2) is finite and nonzero, then
    # the edges: the cpu exp is a polynomial for normal results and libm's exp outside.
    limit = {np.float32: 181.0, np.float64: 1422.0}[dtype]
    logvar = np.concatenate([np.linspace(-limit, limit, 20001), EXTREME_LOGVAR[dtype]])
    logvar = logvar.astype(dtype).reshape(1, -1)
    mu = np.zeros_like(logvar)
    eps = rng.choice([-1.5, 1.5], size=(1,) + logvar.shape).astype(dtype)
    with np.errstate(over="ignore"):  # the reference overflows to inf, as it should
        z_ref = reparam_forward(mu, logvar, eps, impl="reference")
        dlogvar_ref = reparam_backward(eps, logvar, eps, impl="reference")[1]
    z = reparam_forward(mu, logvar, eps, impl="cpu")
    dlogvar = reparam_backward(eps, logvar, eps, impl="cpu")[1]
    # Subnormal results may differ in their last unit between libm's exp and NumPy's, an
    # absolute difference of one smallest subnormal; inf and NaN must sit where the
    # reference has them.
    atol = 2 * np.finfo(dtype).smallest_subnormal
    np.testing.assert_allclose(z, z_ref, rtol=RTOL[dtype], atol=atol, err_msg="z")
    np.testing.assert_allclose(dlogvar, dlogvar_ref, rtol=RTOL[dtype], atol=atol,
                               err_msg="dlogvar")


CUDA_SHAPES = [(1, 1, 1), (2, 7, 5), (3, 33, 17), (3, 1, 17), (1, 33, 1), (2, 7, 17)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_kernels_match_reference_in_simulator(rng, dtype):
    pytest.importorskip("numba.cuda")
    for shape in CUDA_SHAPES:
        mu, logvar, eps, dz = _inputs(rng, shape, dtype)
        _assert_close(reparam_forward(mu, logvar, eps, impl="cuda"),
                      reparam_forward(mu, logvar, eps, impl="reference"), dtype, f"z {shape}")
        for got, ref in zip(reparam_backward(dz, logvar, eps, impl="cuda"),
                            reparam_backward(dz, logvar, eps, impl="reference")):
            _assert_close(got, ref, dtype, f"backward {shape}")


def test_cuda_grid_stride_loop_covers_more_entries_than_threads(rng, monkeypatch):
    # Cap the grid at 2 blocks of 128 threads: the 2 x 300 x 5 problem has 1500 entries, so
    # each thread walks the grid-stride loop about 6 times, ending mid-block.
    pytest.importorskip("numba.cuda")
    from minivae.kernels import reparam

    monkeypatch.setattr(reparam, "_MAX_BLOCKS", 2)
    mu, logvar, eps, dz = _inputs(rng, (2, 300, 5), np.float64)
    _assert_close(reparam_forward(mu, logvar, eps, impl="cuda"),
                  reparam_forward(mu, logvar, eps, impl="reference"), np.float64, "z")
    for got, ref in zip(reparam_backward(dz, logvar, eps, impl="cuda"),
                        reparam_backward(dz, logvar, eps, impl="reference")):
        _assert_close(got, ref, np.float64, "backward")


@pytest.mark.parametrize("L", [1, 3])
def test_reference_backward_matches_finite_differences(rng, L):
    mu, logvar, eps, dz = _inputs(rng, (L, 4, 3), np.float64)
    inputs = {"mu": mu, "logvar": logvar}

    def loss():  # loss = sum(dz * z): its gradient with respect to z is dz
        return float(np.sum(dz * reparam_forward(inputs["mu"], inputs["logvar"], eps,
                                                 impl="reference")))

    dmu, dlogvar = reparam_backward(dz, logvar, eps, impl="reference")
    rows = check_gradients(loss, inputs, {"mu": dmu, "logvar": dlogvar})
    assert max(row["rel_error"] for row in rows) < 1e-6


def test_non_contiguous_inputs_and_shape_errors(rng):
    mu, logvar, eps, dz = _inputs(rng, (2, 6, 4), np.float64)
    mu_t = np.asfortranarray(mu)
    _assert_close(reparam_forward(mu_t, logvar, eps, impl="cpu"),
                  reparam_forward(mu, logvar, eps, impl="reference"), np.float64, "z")
    with pytest.raises(ValueError, match=r"eps of shape \(L, n, k\)"):
        reparam_forward(mu, logvar, eps[:, :5], impl="cpu")
    with pytest.raises(ValueError, match="impl='gpu' is not one of"):
        reparam_forward(mu, logvar, eps, impl="gpu")
    with pytest.raises(ValueError, match="dz has shape"):
        reparam_backward(dz[:1], logvar, eps, impl="cpu")


@pytest.mark.parametrize("impl", IMPLS)
def test_mu_must_have_one_row_per_example(rng, impl):
    # One contract for every implementation. A mu of shape (L, n, k) used to pass the cpu
    # check (only its last two axes were compared with logvar's), and the kernel, walking
    # flat runs of n * k entries, then read and wrote past the ends of its arrays.
    mu, logvar, eps, _ = _inputs(rng, (2, 3, 4), np.float64)
    message = "reparam_forward: mu has shape (2, 3, 4) but logvar (3, 4); mu must be (n, k)"
    with pytest.raises(ValueError, match=re.escape(message) + ", one row per example"):
        reparam_forward(np.stack([mu, mu]), logvar, eps, impl=impl)
    with pytest.raises(ValueError, match=re.escape("mu has shape (3, 1) but logvar (3, 4)")):
        reparam_forward(mu[:, :1], logvar, eps, impl=impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_arrays_must_share_one_float_dtype(rng, impl):
    # Integer or mixed dtypes used to give truncated (int dz: dlogvar 0) or silently
    # lower-precision results from the cpu and cuda kernels.
    mu, logvar, eps, dz = _inputs(rng, (2, 3, 4), np.float64)
    i64, f32 = np.int64, np.float32
    forward_cases = [
        ((mu.astype(i64), logvar, eps), r"mu has dtype int64; .*float32 or float64.*mu\.astype"),
        ((mu.astype(np.float16), logvar, eps), "mu has dtype float16"),
        ((mu, logvar.astype(f32), eps),
         r"logvar has dtype float32 but mu has float64; cast with logvar\.astype\(mu\.dtype\)"),
        ((mu, logvar, eps.astype(i64)), r"eps has dtype int64 but mu has float64"),
        ((mu.astype(f32), logvar.astype(f32), eps), r"eps has dtype float64 but mu has float32"),
    ]
    for args, message in forward_cases:
        with pytest.raises(ValueError, match="reparam_forward: " + message):
            reparam_forward(*args, impl=impl)
    backward_cases = [
        ((dz.astype(i64), logvar, eps), r"dz has dtype int64; .*float32 or float64"),
        ((dz, logvar.astype(f32), eps), r"logvar has dtype float32 but dz has float64"),
        ((dz.astype(f32), logvar.astype(f32), eps), r"eps has dtype float64 but dz has float32"),
    ]
    for args, message in backward_cases:
        with pytest.raises(ValueError, match="reparam_backward: " + message):
            reparam_backward(*args, impl=impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_samples_are_refused(impl):
    # L = 0 used to give an empty z from the reference, a reshape error from the cpu
    # kernels and an out-of-bounds read of dz[0] from the cuda backward.
    mu, logvar = np.zeros((2, 3)), np.zeros((2, 3))
    eps = np.zeros((0, 2, 3))
    message = r"eps has 0 samples \(shape \(0, 2, 3\)\); draw at least one"
    with pytest.raises(ValueError, match="reparam_forward: " + message):
        reparam_forward(mu, logvar, eps, impl=impl)
    with pytest.raises(ValueError, match="reparam_backward: " + message):
        reparam_backward(np.zeros((0, 2, 3)), logvar, eps, impl=impl)


def _record_builds(monkeypatch):
    """Wrap the four cpu builds so that each call appends the build's name to a list."""
    from minivae.kernels import reparam

    calls = []

    def spy(name, kernel):
        def recorded(*args):
            calls.append(name)
            return kernel(*args)

        return recorded

    for name in ("_forward_serial", "_forward_parallel", "_backward_serial",
                 "_backward_parallel"):
        monkeypatch.setattr(reparam, name, spy(name, getattr(reparam, name)))
    return calls


@pytest.mark.parametrize("shape, parallel", [
    ((40, 100, 20), False),  # 80,000 entries of eps, but one block of logvar: serial
    ((10, 64, 64), False),  # exactly one full block (4096 entries)
    ((1, 1, 5000), False),  # two blocks, too few entries for the thread pool
    ((31, 1, 4097), False),  # two blocks, 127,007 entries of eps: just below 2^17
    ((32, 1, 4097), True),  # two blocks and 131,104 entries of eps
    ((3, 257, 171), True),
])
def test_cpu_takes_the_parallel_build_only_with_two_blocks_to_share(rng, monkeypatch, shape,
                                                                     parallel):
    # The parallel unit is a block of logvar entries: with one block the parallel build
    # only pays the thread pool's wake-up. Whichever build runs is checked against the reference.
    from minivae.kernels import reparam

    assert reparam._BLOCK == 4096
    assert reparam._PARALLEL_MIN_ENTRIES[np.dtype(np.float32)] == 1 << 17
    calls = _record_builds(monkeypatch)
    mu, logvar, eps, dz = _inputs(rng, shape, np.float32)
    _assert_close(reparam_forward(mu, logvar, eps, impl="cpu"),
                  reparam_forward(mu, logvar, eps, impl="reference"), np.float32, "z")
    for got, ref in zip(reparam_backward(dz, logvar, eps, impl="cpu"),
                        reparam_backward(dz, logvar, eps, impl="reference")):
        _assert_close(got, ref, np.float32, "backward")
    build = "parallel" if parallel else "serial"
    assert calls == [f"_forward_{build}", f"_backward_{build}"]
