"""Parameters and gradients in one flat buffer (minivae.params.FlatArrays) and the optimisers'
flat fast path: one kernel call over the buffer must give exactly what one call per array
gives, and the state must stay the per-name state that checkpoints store."""

import numpy as np
import pytest

from minivae import VAE
from minivae.params import FlatArrays
from minivae.optim import make_optimizer

SHAPES = {"a.W": (3, 5), "a.b": (5,), "b.W": (5, 1), "b.b": (1,)}
OPTIMIZERS = [("adam", {}), ("sgd", {"momentum": 0.9}), ("sgd", {}), ("adagrad", {})]


def _flat(rng, dtype=np.float64, low=-1.0, high=1.0):
    arrays = {name: rng.uniform(low, high, size=shape).astype(dtype)
              for name, shape in SHAPES.items()}
    return FlatArrays.copy_of(np, arrays, dtype), arrays


def test_views_share_the_flat_buffer(rng):
    flat, arrays = _flat(rng)
    assert list(flat) == list(SHAPES) and flat.flat.shape == (15 + 5 + 5 + 1,)
    for name, value in arrays.items():
        np.testing.assert_array_equal(flat[name], value)
        assert np.shares_memory(flat[name], flat.flat)
    flat["a.b"][...] = 7.0
    np.testing.assert_array_equal(flat.flat[15:20], 7.0)
    other = FlatArrays(np, SHAPES, np.float64)
    assert flat.leads_with(other) and not flat.leads_with(dict(flat))
    assert not flat.leads_with(FlatArrays(np, SHAPES, np.float32))
    assert not flat.leads_with(FlatArrays(np, dict(reversed(SHAPES.items())), np.float64))
    head = flat.leading(2)
    assert flat.leads_with(head) and not head.leads_with(flat)
    assert list(head) == list(SHAPES)[:2] and np.shares_memory(head.flat, flat.flat)


def test_rebinding_a_name_is_refused(rng):
    flat, _ = _flat(rng)
    with pytest.raises(TypeError, match="in place"):
        flat["a.W"] = np.zeros((3, 5))
    with pytest.raises(TypeError, match="in place"):
        del flat["a.b"]
    with pytest.raises(TypeError, match="in place"):
        flat.update({"a.b": np.zeros(5)})
    with pytest.raises(TypeError, match="in place"):
        flat |= {"a.b": np.zeros(5)}


@pytest.mark.parametrize("how", ["copy", "deepcopy", "pickle"])
def test_copies_are_independent_flat_arrays(rng, how):
    import copy
    import pickle

    flat, arrays = _flat(rng)
    duplicate = {"copy": copy.copy, "deepcopy": copy.deepcopy,
                 "pickle": lambda x: pickle.loads(pickle.dumps(x))}[how](flat)
    assert isinstance(duplicate, FlatArrays) and duplicate.layout == flat.layout
    assert not np.shares_memory(duplicate.flat, flat.flat)
    np.testing.assert_array_equal(duplicate.flat, flat.flat)
    duplicate["a.W"][...] = 0
    np.testing.assert_array_equal(flat["a.W"], arrays["a.W"])


@pytest.mark.parametrize("impl", ["reference", "cpu", "cuda"])
@pytest.mark.parametrize("name,kwargs", OPTIMIZERS)
def test_flat_step_equals_per_array_steps(rng, impl, name, kwargs):
    params, arrays = _flat(rng, low=1.0, high=2.0)
    per_array = {key: value.copy() for key, value in arrays.items()}
    flat_opt = make_optimizer(name, 1e-2, impl=impl, **kwargs)
    dict_opt = make_optimizer(name, 1e-2, impl=impl, **kwargs)
    for _ in range(3):
        grads, grad_arrays = _flat(rng)
        flat_opt.step(params, grads)
        dict_opt.step(per_array, grad_arrays)
    for key in SHAPES:
        # the same arithmetic per entry in the same order: bit-identical
        np.testing.assert_array_equal(params[key], per_array[key], err_msg=key)
    flat_state, dict_state = flat_opt.state_arrays(), dict_opt.state_arrays()
    assert sorted(flat_state) == sorted(dict_state)
    for key in dict_state:
        np.testing.assert_array_equal(flat_state[key], dict_state[key], err_msg=key)


def test_flat_state_of_another_model_is_refused(rng):
    """One optimiser reused on a model with the same names but other shapes must not
    broadcast the old moments into the new buffers."""
    small = FlatArrays(np, {"x.W": (3, 1), "x.b": (1,)}, np.float64)
    large = FlatArrays(np, {"x.W": (3, 5), "x.b": (5,)}, np.float64)
    optimizer = make_optimizer("adam", 1e-2)
    grads = FlatArrays(np, {"x.W": (3, 1), "x.b": (1,)}, np.float64)
    grads.flat[...] = 1.0
    optimizer.step(small, grads)
    large_grads = FlatArrays(np, {"x.W": (3, 5), "x.b": (5,)}, np.float64)
    with pytest.raises(ValueError, match=r"m.x.W has shape \(3, 1\).*\(3, 5\)"):
        optimizer.step(large, large_grads)


def test_loaded_state_enters_the_flat_buffers(rng):
    params, arrays = _flat(rng, low=1.0, high=2.0)
    per_array = {key: value.copy() for key, value in arrays.items()}
    warm = make_optimizer("adam", 1e-2)
    warm.step(per_array, _flat(rng)[1])
    saved = warm.state_arrays()
    params_copy = {key: value.copy() for key, value in per_array.items()}
    for key in SHAPES:
        params[key][...] = per_array[key]
    resumed_flat, resumed_dict = make_optimizer("adam", 1e-2), make_optimizer("adam", 1e-2)
    resumed_flat.load_state_arrays(saved)
    resumed_dict.load_state_arrays(saved)
    grads, grad_arrays = _flat(rng)
    resumed_flat.step(params, grads)
    resumed_dict.step(params_copy, grad_arrays)
    for key in SHAPES:
        np.testing.assert_array_equal(params[key], params_copy[key], err_msg=key)
    assert resumed_flat.t == 2


def test_per_array_steps_after_flat_steps_share_the_state(rng):
    """A phase that updates a subset (frozen parameters) after full flat steps uses the same
    moments: the per-name state is a view into the flat state."""
    params, arrays = _flat(rng, low=1.0, high=2.0)
    per_array = {key: value.copy() for key, value in arrays.items()}
    flat_opt, dict_opt = make_optimizer("adam", 1e-2), make_optimizer("adam", 1e-2)
    grads, grad_arrays = _flat(rng)
    flat_opt.step(params, grads)
    dict_opt.step(per_array, grad_arrays)
    subset = {"a.W": rng.standard_normal((3, 5))}
    flat_opt.step(params, subset)
    dict_opt.step(per_array, subset)
    for key in SHAPES:
        np.testing.assert_array_equal(params[key], per_array[key], err_msg=key)


def test_reused_gradient_buffers_equal_fresh_gradients(rng):
    vae = VAE(11, 3, hidden=(6,), dtype="float64", seed=0)
    X = (rng.uniform(size=(5, 11)) > 0.5).astype(np.float64)
    eps = rng.standard_normal((1, 5, 3))
    loss, fresh = vae.loss_and_grads(X, eps=eps)
    # every entry must be written, none accumulated: stale NaN would survive either bug
    network = vae.network
    buffers = network.gradient_buffers()
    buffers.flat[...] = np.nan
    loss_reused, reused = network.neg_elbo_and_grads(X, eps, buffers)
    assert reused is buffers and reused.layout == vae.params.layout
    assert loss_reused == loss
    for name in vae.params:
        np.testing.assert_array_equal(reused[name], fresh[name], err_msg=name)
    # a second call overwrites the same buffers with the second batch's gradients
    _, fresh_second = vae.loss_and_grads(2 * X / 3, eps=eps)
    again = network.neg_elbo_and_grads(2 * X / 3, eps, network.gradient_buffers())[1]
    assert again is reused
    for name in vae.params:
        np.testing.assert_array_equal(reused[name], fresh_second[name], err_msg=name)
    # the public method's arrays are its own
    np.testing.assert_array_equal(vae.loss_and_grads(X, eps=eps)[1]["enc.0.W"],
                                  fresh["enc.0.W"])


def test_dense_layers_accept_mixed_dtypes_and_layouts(rng):
    """The fused kernels need C-contiguous arrays of one dtype; other inputs take the
    array-generic path and give what NumPy's broadcasting gives."""
    from minivae.nn import MLP

    mlp = MLP("m", 4, (5,), {"out": 3}, "relu", impl="cpu")
    params = mlp.init_params(rng, np.float32)
    x64 = rng.standard_normal((6, 4))
    out = mlp.forward(params, x64)["out"]
    hidden = np.maximum(x64 @ params["m.0.W"] + params["m.0.b"], 0)
    np.testing.assert_allclose(out, hidden @ params["m.out.W"] + params["m.out.b"],
                               rtol=1e-12)
    dy = np.asfortranarray(rng.standard_normal((6, 3)))
    grads = {}
    mlp.backward(params, {"out": dy}, grads, need_dx=False)
    np.testing.assert_allclose(grads["m.out.b"], dy.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(grads["m.0.b"], ((dy @ params["m.out.W"].T) * (hidden > 0))
                               .sum(axis=0), rtol=1e-6)
