"""Optimisers: each update against its textbook formula, state round trips, and PyTorch."""

import numpy as np
import pytest

from minivae.optim import SGD, Adagrad, Adam, make_optimizer


def _problem(rng, dtype=np.float64):
    params = {
        "W": rng.standard_normal((4, 3)).astype(dtype),
        "b": rng.standard_normal(3).astype(dtype),
    }
    grads = [
        {name: rng.standard_normal(value.shape).astype(dtype) for name, value in params.items()}
        for _ in range(4)
    ]
    return params, grads


def _copy(params):
    return {name: value.copy() for name, value in params.items()}


def _textbook_adam(params, grads, lr, beta1, beta2, eps):
    """Kingma & Ba, Algorithm 1, written out with explicit bias-corrected moments."""
    params = _copy(params)
    m = {name: np.zeros_like(value) for name, value in params.items()}
    v = {name: np.zeros_like(value) for name, value in params.items()}
    for t, grad in enumerate(grads, start=1):
        for name in params:
            m[name] = beta1 * m[name] + (1 - beta1) * grad[name]
            v[name] = beta2 * v[name] + (1 - beta2) * grad[name] ** 2
            m_hat = m[name] / (1 - beta1**t)
            v_hat = v[name] / (1 - beta2**t)
            params[name] = params[name] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return params


@pytest.mark.parametrize("impl", ["reference", "cpu", "cuda"])
def test_adam_matches_the_textbook_algorithm(impl, rng):
    params, grads = _problem(rng)
    expected = _textbook_adam(params, grads, lr=0.05, beta1=0.8, beta2=0.99, eps=1e-6)
    optimizer = Adam(0.05, beta1=0.8, beta2=0.99, eps=1e-6, impl=impl)
    for grad in grads:
        optimizer.step(params, grad)
    assert optimizer.t == len(grads)
    for name in params:
        np.testing.assert_allclose(params[name], expected[name], rtol=1e-12)


def test_sgd_plain_and_with_momentum(rng):
    params, grads = _problem(rng)
    plain, heavy = _copy(params), _copy(params)
    expected_plain, expected_heavy = _copy(params), _copy(params)
    velocity = {name: np.zeros_like(value) for name, value in params.items()}
    sgd, momentum = SGD(0.1), SGD(0.1, momentum=0.9)
    for grad in grads:
        sgd.step(plain, grad)
        momentum.step(heavy, grad)
        for name in params:
            expected_plain[name] = expected_plain[name] - 0.1 * grad[name]
            velocity[name] = 0.9 * velocity[name] + grad[name]
            expected_heavy[name] = expected_heavy[name] - 0.1 * velocity[name]
    for name in params:
        np.testing.assert_allclose(plain[name], expected_plain[name], rtol=1e-12)
        np.testing.assert_allclose(heavy[name], expected_heavy[name], rtol=1e-12)


def test_adagrad(rng):
    params, grads = _problem(rng)
    expected = _copy(params)
    sum_sq = {name: np.zeros_like(value) for name, value in params.items()}
    optimizer = Adagrad(0.3, eps=1e-7)
    for grad in grads:
        optimizer.step(params, grad)
        for name in params:
            sum_sq[name] = sum_sq[name] + grad[name] ** 2
            expected[name] = expected[name] - 0.3 * grad[name] / (np.sqrt(sum_sq[name]) + 1e-7)
    for name in params:
        np.testing.assert_allclose(params[name], expected[name], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "name, kwargs",
    [("adam", {}), ("adagrad", {}), ("sgd", {"momentum": 0.5}), ("sgd", {})],
)
def test_updates_in_place_and_keeps_dtype(name, kwargs, dtype, rng):
    params, grads = _problem(rng, dtype)
    originals = {key: value for key, value in params.items()}
    before = _copy(params)
    make_optimizer(name, 0.01, impl="cpu", **kwargs).step(params, grads[0])
    for key in params:
        assert params[key] is originals[key]
        assert params[key].dtype == dtype
        assert not np.array_equal(params[key], before[key])


@pytest.mark.parametrize(
    "name, kwargs", [("adam", {"beta1": 0.7}), ("adagrad", {}), ("sgd", {"momentum": 0.9})]
)
def test_state_round_trip_continues_identically(name, kwargs, rng):
    params, grads = _problem(rng)
    first = make_optimizer(name, 0.05, impl="cpu", **kwargs)
    for grad in grads[:2]:
        first.step(params, grad)
    saved = first.state_arrays()
    assert all(isinstance(value, np.ndarray) for value in saved.values())
    assert int(saved["t"]) == 2

    copy = _copy(params)
    second = make_optimizer(name, 0.05, impl="cpu", **kwargs)
    second.load_state_arrays(saved)
    assert second.state_arrays().keys() == saved.keys()
    for grad in grads[2:]:
        first.step(params, grad)
        second.step(copy, grad)
    for key in params:
        np.testing.assert_array_equal(copy[key], params[key])
    assert second.config() == first.config()


def test_state_arrays_are_copies(rng):
    params, grads = _problem(rng)
    optimizer = Adam(0.1)
    optimizer.step(params, grads[0])
    saved = optimizer.state_arrays()
    m_W = saved["m.W"].copy()
    optimizer.step(params, grads[1])
    np.testing.assert_array_equal(saved["m.W"], m_W)


def test_frozen_parameters_are_left_alone(rng):
    params, grads = _problem(rng)
    b_before = params["b"].copy()
    optimizer = Adam(0.1)
    optimizer.step(params, {"W": grads[0]["W"]})
    np.testing.assert_array_equal(params["b"], b_before)
    assert set(optimizer.state_arrays()) == {"t", "m.W", "v.W"}


def test_adam_accepts_a_non_contiguous_gradient(rng):
    params = {"W": rng.standard_normal((3, 5))}
    grad = rng.standard_normal((5, 3)).T
    expected = _textbook_adam(params, [{"W": grad}], lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    Adam(0.1).step(params, {"W": grad})
    np.testing.assert_allclose(params["W"], expected["W"], rtol=1e-12)


def test_errors_name_the_problem(rng):
    params, grads = _problem(rng)
    valid = r"\['adam', 'adagrad', 'sgd'\]"
    with pytest.raises(ValueError, match=r"optimizer='lbfgs' is not one of " + valid):
        make_optimizer("lbfgs", 0.1)
    with pytest.raises(ValueError, match="lr=0"):
        Adam(0)
    for lr in (float("inf"), float("nan"), -1e-3, True, "0.1", None):
        with pytest.raises(ValueError, match=rf"lr={lr!r} must be a finite positive number"):
            make_optimizer("sgd", lr)
    assert Adam(np.float32(0.5)).lr == 0.5 and Adagrad(np.int64(1)).lr == 1.0
    with pytest.raises(ValueError, match="momentum=1.5"):
        SGD(0.1, momentum=1.5)
    with pytest.raises(ValueError, match="beta2=1.0"):
        Adam(0.1, beta2=1.0)
    with pytest.raises(ValueError, match=r"gradients given for \['gamma'\]"):
        Adam(0.1).step(params, {"gamma": np.ones(2)})
    optimizer = SGD(0.1)
    with pytest.raises(ValueError, match=r"gradient of 'b' has shape \(4,\)"):
        optimizer.step(params, {"W": grads[0]["W"], "b": np.ones(4)})
    assert optimizer.t == 0
    with pytest.raises(ValueError, match="step count 't'"):
        Adam(0.1).load_state_arrays({"m.W": np.ones(2)})
    with pytest.raises(ValueError, match="'sum_sq.W'"):
        Adam(0.1).load_state_arrays({"t": np.array(1), "sum_sq.W": np.ones(2)})


@pytest.mark.peers
@pytest.mark.parametrize(
    "name, mine, theirs",
    [
        (
            "adam",
            {"beta1": 0.85, "beta2": 0.995, "eps": 1e-7},
            {"betas": (0.85, 0.995), "eps": 1e-7},
        ),
        ("adagrad", {"eps": 1e-9}, {"eps": 1e-9}),
        ("sgd", {"momentum": 0.9}, {"momentum": 0.9}),
    ],
)
def test_matches_pytorch(name, mine, theirs, rng):
    torch = pytest.importorskip("torch")
    params, grads = _problem(rng)
    torch_params = {
        key: torch.tensor(value.copy(), requires_grad=True) for key, value in params.items()
    }
    torch_class = {
        "adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD
    }[name]
    torch_optimizer = torch_class(list(torch_params.values()), lr=0.05, **theirs)
    optimizer = make_optimizer(name, 0.05, impl="cpu", **mine)
    for grad in grads:
        optimizer.step(params, grad)
        for key, tensor in torch_params.items():
            tensor.grad = torch.tensor(grad[key])
        torch_optimizer.step()
    for key in params:
        np.testing.assert_allclose(
            params[key], torch_params[key].detach().numpy(), rtol=1e-12,
            err_msg=f"minivae {name} (actual) vs torch.optim (desired), parameter {key}",
        )
