"""Layers and activations: backward passes against central finite differences (float64)."""

import numpy as np
import pytest

from minivae.gradcheck import check_gradients
from minivae.nn import ACTIVATIONS, MLP, Dense, make_activation, sigmoid, softplus

TOL = 1e-6


def _assert_rows_pass(rows):
    worst = max(rows, key=lambda row: row["rel_error"])
    assert worst["rel_error"] < TOL, f"{worst['name']}: relative error {worst['rel_error']:.2e}"


@pytest.mark.parametrize("n, fan_in, fan_out", [(1, 1, 1), (7, 5, 3), (4, 2, 9)])
def test_dense_backward_matches_finite_differences(rng, n, fan_in, fan_out):
    layer = Dense("layer", fan_in, fan_out)
    params = layer.init_params(rng, np.float64)
    params["layer.b"][...] = rng.standard_normal(fan_out)
    inputs = {"x": rng.standard_normal((n, fan_in))}
    projection = rng.standard_normal((n, fan_out))  # loss = sum(projection * y)

    def loss():
        return float(np.sum(projection * layer.forward(params, inputs["x"])))

    loss()
    grads = {}
    dx = layer.backward(params, projection.copy(), grads)
    _assert_rows_pass(check_gradients(loss, params, grads))
    _assert_rows_pass(check_gradients(loss, inputs, {"x": dx}))


def test_dense_forward_is_affine(rng):
    layer = Dense("d", 3, 2)
    params = {"d.W": rng.standard_normal((3, 2)), "d.b": rng.standard_normal(2)}
    x = rng.standard_normal((5, 3))
    np.testing.assert_allclose(layer.forward(params, x), x @ params["d.W"] + params["d.b"],
                               rtol=1e-15)
    grads = {}
    assert layer.backward(params, np.ones((5, 2)), grads, need_dx=False) is None
    assert set(grads) == {"d.W", "d.b"}


def test_dense_init_is_glorot_uniform_with_zero_bias():
    layer = Dense("d", 300, 200)
    params = layer.init_params(np.random.default_rng(0), np.float32)
    bound = np.sqrt(6.0 / 500)
    W = params["d.W"]
    assert W.dtype == np.float32 and W.shape == (300, 200)
    assert np.abs(W).max() <= bound and np.abs(W).max() > 0.99 * bound
    np.testing.assert_allclose(W.var(), bound**2 / 3, rtol=0.02)  # variance of U(-a, a)
    assert not params["d.b"].any()


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_backward_matches_finite_differences(rng, name):
    activation = make_activation(name)
    # keep relu inputs away from its kink at 0, where no derivative exists
    x = rng.standard_normal((6, 4))
    x[np.abs(x) < 1e-3] = 0.5
    inputs = {"x": x}
    projection = rng.standard_normal((6, 4))

    def loss():
        return float(np.sum(projection * activation.forward(inputs["x"])))

    loss()
    dx = activation.backward(projection.copy())
    _assert_rows_pass(check_gradients(loss, inputs, {"x": dx}))


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(ValueError, match="activation='gelu' is not one of"):
        make_activation("gelu")


def test_sigmoid_and_softplus_are_stable_at_extremes():
    x = np.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    s = sigmoid(x)
    assert np.all(np.isfinite(s))
    np.testing.assert_allclose(s[1], np.exp(-40.0), rtol=1e-12)  # full relative precision
    np.testing.assert_allclose(s[2:], [0.5, 1.0, 1.0], rtol=1e-15)
    sp = softplus(x)
    np.testing.assert_allclose(sp, [0.0, np.exp(-40.0), np.log(2.0), 40.0, 800.0], rtol=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("hidden", [(), (5,), (4, 3)])
def test_mlp_with_two_heads_backward_matches_finite_differences(rng, activation, hidden):
    mlp = MLP("net", 3, hidden, {"mu": 2, "extra": 1}, activation)
    params = mlp.init_params(rng, np.float64)
    for name in params:
        if name.endswith(".b"):
            params[name][...] = 0.1 * rng.standard_normal(params[name].shape)
    inputs = {"x": rng.standard_normal((5, 3))}
    projections = {"mu": rng.standard_normal((5, 2)), "extra": rng.standard_normal((5, 1))}

    def loss():
        outputs = mlp.forward(params, inputs["x"])
        return float(sum(np.sum(projections[h] * outputs[h]) for h in outputs))

    loss()
    grads = {}
    dx = mlp.backward(params, {h: p.copy() for h, p in projections.items()}, grads)
    assert list(grads) != [] and set(grads) == set(params)
    _assert_rows_pass(check_gradients(loss, params, grads))
    _assert_rows_pass(check_gradients(loss, inputs, {"x": dx}))


def test_mlp_parameter_names_and_order():
    mlp = MLP("enc", 4, (8, 6), {"mu": 2, "logvar": 2}, "relu")
    params = mlp.init_params(np.random.default_rng(0), np.float32)
    assert list(params) == ["enc.0.W", "enc.0.b", "enc.1.W", "enc.1.b", "enc.mu.W", "enc.mu.b",
                            "enc.logvar.W", "enc.logvar.b"]
    assert params["enc.1.W"].shape == (8, 6) and params["enc.logvar.W"].shape == (6, 2)


def test_mlp_head_without_gradient_gets_zero_grads_and_none_at_all_is_an_error(rng):
    mlp = MLP("net", 3, (4,), {"a": 2, "b": 1}, "tanh")
    params = mlp.init_params(rng, np.float64)
    mlp.forward(params, rng.standard_normal((2, 3)))
    grads = {}
    mlp.backward(params, {"a": np.ones((2, 2))}, grads)
    assert set(grads) == set(params)
    assert not grads["net.b.W"].any() and not grads["net.b.b"].any()
    with pytest.raises(ValueError, match="no gradient for any head"):
        mlp.backward(params, {}, {})


def test_multi_head_backward_names_a_head_with_the_wrong_gradient_shape(rng):
    mlp = MLP("enc", 6, (5,), {"mu": 2, "logvar": 2}, "relu")
    params = mlp.init_params(rng, np.float64)
    mlp.forward(params, rng.standard_normal((4, 6)))
    bad = {"mu": np.zeros((4, 2)), "logvar": np.zeros((4, 3))}
    with pytest.raises(ValueError, match=r"head 'logvar' has shape \(4, 3\); expected \(4, 2\)"):
        mlp.backward(params, bad, {}, need_dx=False)
