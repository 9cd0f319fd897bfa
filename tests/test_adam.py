"""The fused Adam kernel: cpu and cuda (simulator) implementations against the reference."""

import subprocess
import sys

import numpy as np
import pytest
from minivae.kernels import adam_step

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
# (513, 517) = 265,221 entries: just above the cpu kernel's parallel threshold (2**18, see
# test_parallel_build_is_reached), odd-sized; everything else runs the serial build.
SHAPES = [(1,), (7,), (255,), (256,), (257,), (1000,), (3, 5), (17, 33), (4, 2, 9), (181, 183),
          (513, 517)]


def _state(rng, shape, dtype):
    """param, grad, m, v with a general (non-zero) optimiser state.

    Parameters are drawn with magnitudes in [1, 2] so that a relative tolerance on the
    updated parameter is meaningful: the implementations round the update differently
    (they fold the bias correction into one scalar), and that rounding is relative to
    the step, not to a parameter that could happen to be near zero.
    """
    sign = rng.choice([-1.0, 1.0], size=shape)
    param = (sign * rng.uniform(1.0, 2.0, size=shape)).astype(dtype)
    m = (0.1 * rng.standard_normal(shape)).astype(dtype)
    v = (0.01 * rng.uniform(0.0, 1.0, size=shape)).astype(dtype)
    return param, m, v


def _run(impl, param, m, v, grads, hyper):
    param, m, v = param.copy(), m.copy(), v.copy()
    for t, grad in enumerate(grads, start=1):
        adam_step(param, grad, m, v, t=t, impl=impl, **hyper)
    return param, m, v


def _assert_agree(impl, shape, dtype, steps, rng, hyper):
    param, m, v = _state(rng, shape, dtype)
    grads = [rng.standard_normal(shape).astype(dtype) for _ in range(steps)]
    expected = _run("reference", param, m, v, grads, hyper)
    actual = _run(impl, param, m, v, grads, hyper)
    for label, mine, reference in zip(("param", "m", "v"), actual, expected):
        assert mine.dtype == dtype
        np.testing.assert_allclose(
            mine, reference, rtol=RTOL[dtype], atol=0,
            err_msg=f"{impl} vs reference: {label}, shape {shape}, {np.dtype(dtype).name}",
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_cpu_matches_reference(shape, dtype, rng):
    hyper = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    _assert_agree("cpu", shape, dtype, steps=5, rng=rng, hyper=hyper)


def test_parallel_build_is_reached():
    """SHAPES holds one shape on each side of the parallel threshold, so both cpu builds
    are compared with the reference above."""
    from minivae.kernels import adam

    sizes = [int(np.prod(shape)) for shape in SHAPES]
    assert max(sizes) >= adam._PARALLEL_MIN_ENTRIES > min(sizes)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (7,), (255,), (256,), (257,), (1000,), (17, 33)])
def test_cuda_matches_reference(shape, dtype, rng):
    hyper = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    _assert_agree("cuda", shape, dtype, steps=2, rng=rng, hyper=hyper)


@pytest.mark.parametrize("impl", ["cpu", "cuda"])
def test_other_hyperparameters_and_late_steps(impl, rng):
    param, m, v = _state(rng, (5, 7), np.float64)
    grad = rng.standard_normal((5, 7))
    hyper = {"lr": 0.3, "beta1": 0.5, "beta2": 0.9, "eps": 1e-3}
    for t in (1, 10, 1000):
        expected = [a.copy() for a in (param, m, v)]
        adam_step(expected[0], grad, expected[1], expected[2], t=t, impl="reference", **hyper)
        actual = [a.copy() for a in (param, m, v)]
        adam_step(actual[0], grad, actual[1], actual[2], t=t, impl=impl, **hyper)
        # float64: m and v come from the same operations; the parameter's update differs
        # by a few roundings (the kernels fold the bias corrections into two scalars), far
        # below 1e-12 of parameters drawn in [1, 2] (so atol 0).
        for mine, reference in zip(actual, expected):
            np.testing.assert_allclose(mine, reference, rtol=1e-12, atol=0)


@pytest.mark.parametrize("impl", ["reference", "cpu", "cuda"])
def test_first_step_from_zero_state_is_lr_times_sign(impl):
    # With m = v = 0, step 1 gives m_hat = g and v_hat = g^2: the update is lr * g / (|g| + eps).
    grad = np.array([[3.0, -0.5], [1e-3, -40.0]])
    param = np.ones((2, 2))
    m, v = np.zeros((2, 2)), np.zeros((2, 2))
    adam_step(param, grad, m, v, lr=0.1, eps=1e-8, t=1, impl=impl)
    np.testing.assert_allclose(param, 1.0 - 0.1 * grad / (np.abs(grad) + 1e-8), rtol=1e-12)
    np.testing.assert_allclose(m, (1 - 0.9) * grad, rtol=1e-15)
    np.testing.assert_allclose(v, (1 - 0.999) * grad * grad, rtol=1e-15)


@pytest.mark.parametrize("impl", ["reference", "cpu", "cuda"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subnormal_moments_are_flushed_to_zero(impl, dtype):
    """A zero gradient decays m by beta1 a step; once below the smallest normal number the
    moment is set to 0 instead of becoming subnormal (10-100x slower arithmetic on x86)."""
    tiny = np.finfo(dtype).tiny
    # entries: decays below tiny; stays just above; negative, decays below; a live gradient
    m = np.array([1.05 * tiny, 1.2 * tiny, -1.05 * tiny, 0.0], dtype=dtype)
    v = np.array([1.0005 * tiny, 2.0 * tiny, 0.0, 0.0], dtype=dtype)
    grad = np.array([0.0, 0.0, 0.0, 0.5], dtype=dtype)
    param = np.ones(4, dtype=dtype)
    adam_step(param, grad, m, v, lr=0.1, t=3, impl=impl)
    beta1, beta2 = dtype(0.9), dtype(0.999)
    assert m[0] == 0 and m[2] == 0 and v[0] == 0 and v[2] == 0
    assert m[1] == beta1 * dtype(1.2 * tiny) and m[1] >= tiny
    assert v[1] == beta2 * dtype(2.0 * tiny) and v[1] >= tiny
    assert m[3] == dtype(1 - 0.9) * dtype(0.5) and v[3] == dtype(1 - 0.999) * dtype(0.5) * dtype(0.5)
    subnormal = (m != 0) & (np.abs(m) < tiny) | (v != 0) & (v < tiny)
    assert not subnormal.any()


@pytest.mark.parametrize("impl", ["cpu", "cuda"])
def test_updates_the_callers_arrays_in_place(impl, rng):
    param, m, v = _state(rng, (6, 4), np.float32)
    ids = (id(param), id(m), id(v))
    before = param.copy()
    adam_step(param, rng.standard_normal((6, 4)).astype(np.float32), m, v, t=1, impl=impl)
    assert (id(param), id(m), id(v)) == ids
    assert not np.array_equal(param, before)


@pytest.mark.parametrize("impl", ["cpu", "cuda"])
def test_rejects_bad_arrays(impl):
    good = [np.ones((4, 6)) for _ in range(4)]
    non_contiguous = np.ones((6, 4)).T
    with pytest.raises(ValueError, match="param is not C-contiguous"):
        adam_step(non_contiguous, *good[1:], impl=impl)
    with pytest.raises(ValueError, match=r"grad has shape \(24,\) but param has shape \(4, 6\)"):
        adam_step(good[0], np.ones(24), good[2], good[3], impl=impl)
    with pytest.raises(ValueError, match="m has dtype float32 but param has dtype float64"):
        adam_step(good[0], good[1], np.ones((4, 6), np.float32), good[3], impl=impl)
    with pytest.raises(ValueError, match="param has dtype int64"):
        adam_step(*[np.ones((4, 6), np.int64) for _ in range(4)], impl=impl)
    with pytest.raises(ValueError, match="t=0"):
        adam_step(*good, t=0, impl=impl)


BAD_HYPERPARAMETERS = [
    ({"beta1": 1.0}, r"beta1=1.0 must be in \[0, 1\)"),  # used to be a ZeroDivisionError
    ({"beta2": 1.0}, r"beta2=1.0 must be in \[0, 1\)"),  # ZeroDivisionError
    ({"beta2": 1.5}, r"beta2=1.5 must be in \[0, 1\)"),  # "math domain error"
    ({"beta1": -0.1}, r"beta1=-0.1 must be in \[0, 1\)"),
    ({"beta1": float("nan")}, r"beta1=nan must be in \[0, 1\)"),
    ({"eps": 0.0}, r"eps=0.0 must be positive and finite"),
    ({"eps": -1e-8}, r"eps=-1e-08 must be positive and finite"),
    ({"eps": float("inf")}, r"eps=inf must be positive and finite"),
    ({"lr": float("nan")}, r"lr=nan must be finite"),
    ({"lr": float("-inf")}, r"lr=-inf must be finite"),
    ({"t": 0}, r"t=0 must be the 1-based step count"),  # the reference divided by 0
]


@pytest.mark.parametrize("impl", ["reference", "cpu", "cuda"])
@pytest.mark.parametrize("hyper, message", BAD_HYPERPARAMETERS,
                         ids=[f"{k}={v}" for hyper, _ in BAD_HYPERPARAMETERS
                              for k, v in hyper.items()])
def test_rejects_bad_hyperparameters(impl, hyper, message):
    arrays = [np.full((2, 3), 0.5) for _ in range(4)]
    with pytest.raises(ValueError, match="adam_step: " + message):
        adam_step(*arrays, impl=impl, **hyper)
    for array in arrays:  # refused before anything is updated
        np.testing.assert_array_equal(array, 0.5)


@pytest.mark.parametrize("impl", ["cpu", "cuda"])
@pytest.mark.parametrize("name", ["param", "m", "v"])
def test_rejects_read_only_state(impl, name):
    # used to be a multi-page Numba TypingError from the cpu build
    arrays = {key: np.ones((2, 3)) for key in ("param", "grad", "m", "v")}
    arrays[name].flags.writeable = False
    with pytest.raises(ValueError, match=f"adam_step: {name} is read-only; adam_step updates"):
        adam_step(**arrays, impl=impl)


def test_read_only_grad_is_taken_by_the_cpu_kernel(rng):
    # grad is only read. (The CUDA simulator copies every NumPy argument back after a
    # launch, so it cannot take read-only arrays at all; CuPy arrays have no such flag.)
    param, m, v = _state(rng, (4, 5), np.float64)
    grad = rng.standard_normal((4, 5))
    expected = [a.copy() for a in (param, m, v)]
    adam_step(expected[0], grad, expected[1], expected[2], t=2, impl="reference")
    grad.flags.writeable = False
    adam_step(param, grad, m, v, t=2, impl="cpu")
    # the same float64 comparison as test_other_hyperparameters_and_late_steps
    for mine, reference in zip((param, m, v), expected):
        np.testing.assert_allclose(mine, reference, rtol=1e-12, atol=0)


@pytest.mark.parametrize("impl", ["reference", "cpu", "cuda"])
def test_huge_float32_gradients_do_not_overflow_the_update(impl):
    # v = (1 - beta2) g^2 ~ 1e37 is a finite float32, but v / (1 - beta2^3) ~ 3e39 is not:
    # the bias correction must be applied to sqrt(v) (the reference used to overflow to
    # inf there and leave param at 0, where cpu and cuda took the full step).
    grad = np.array([1e19, -3e19, 1e20], np.float32)
    param, m, v = (np.zeros(3, np.float32) for _ in range(3))
    adam_step(param, grad, m, v, lr=1e-3, t=3, impl=impl)
    g = grad.astype(np.float64)
    m_hat = 0.1 * g / (1 - 0.9**3)
    v_hat = 0.001 * g * g / (1 - 0.999**3)  # in float64, where it is finite
    # float32 results against the exact update in float64: about six float32 roundings
    # (~4e-7 relative) apart, inside the float32 standard 1e-5; the updates are ~1e-3 in
    # size, from a parameter at 0, so nothing cancels and atol is 0.
    np.testing.assert_allclose(param, -1e-3 * m_hat / (np.sqrt(v_hat) + 1e-8), rtol=1e-5, atol=0)


def test_unknown_impl_is_named():
    arrays = [np.ones(3) for _ in range(4)]
    valid = r"\['cpu', 'cuda', 'reference'\]"
    with pytest.raises(ValueError, match=r"impl='gpu' is not one of " + valid):
        adam_step(*arrays, impl="gpu")


def test_importing_the_package_does_not_import_cupy_or_numba_cuda():
    code = (
        "import sys, minivae, minivae.kernels, minivae.optim, minivae.train, minivae.checkpoint;"
        "bad = [m for m in ('cupy', 'numba.cuda') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
