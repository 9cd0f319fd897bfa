"""The autoencoder that VAE and VARegressor compose: extra heads, extra parameters, layout."""

import numpy as np
import pytest

from minivae.autoencoder import Autoencoder
from minivae.backend import get_backend
from minivae.gradcheck import check_gradients
from minivae.params import FlatArrays

TOL = 1e-6


def _autoencoder(device="cpu", **kwargs):
    return Autoencoder(5, 2, (4,), "tanh", "bernoulli", dtype=np.dtype("float64"),
                       backend=get_backend(device), seed=1, **kwargs)


def _loss_with_penalty(ae, X, eps):
    """The VAR pattern: the ELBO's pieces plus a loss on an extra head (``logsigma``) and an
    extra parameter (``gp.scale``), written with the autoencoder's building blocks."""
    n, L = X.shape[0], eps.shape[0]
    heads = ae.encode(X)
    mu, logvar, logsigma = heads["mu"], heads["logvar"], heads["logsigma"]
    z = mu[None] + np.exp(0.5 * logvar)[None] * eps
    scale = ae.params["gp.scale"][0]
    nll, dz, grads = ae.decoder_loss_and_grads(z.reshape(L * n, -1), np.concatenate([X] * L),
                                               1.0 / (L * n), {})
    loss = float(nll.sum()) / (L * n) + scale**2 * float(np.sum(logsigma**2)) / n
    dz = dz.reshape(z.shape)
    ae.encoder_backward({"mu": dz.sum(axis=0),
                         "logvar": 0.5 * np.exp(0.5 * logvar) * (dz * eps).sum(axis=0),
                         "logsigma": 2 * scale**2 * logsigma / n}, grads)
    grads["gp.scale"] = np.array([2 * scale * float(np.sum(logsigma**2)) / n])
    return loss, grads


def test_extra_heads_and_parameters_compose_with_the_building_blocks(rng):
    ae = _autoencoder(extra_heads={"logsigma": 1}, extra_params={"gp.scale": (1,)})
    assert list(ae.params)[4:8] == ["enc.logvar.W", "enc.logvar.b", "enc.logsigma.W",
                                    "enc.logsigma.b"]
    assert list(ae.params)[-1] == "gp.scale" and not ae.params["gp.scale"].any()
    ae.params["gp.scale"][...] = 0.7
    X = rng.uniform(size=(3, 5))
    eps = rng.standard_normal((2, 3, 2))
    _, grads = _loss_with_penalty(ae, X, eps)
    rows = check_gradients(lambda: _loss_with_penalty(ae, X, eps)[0], ae.params, grads)
    worst = max(rows, key=lambda row: row["rel_error"])
    assert worst["rel_error"] < TOL, f"{worst['name']}: relative error {worst['rel_error']:.2e}"
    # The ELBO ignores the extra head and parameter: their gradients are exactly zero,
    # in fresh arrays and in reused buffers holding stale values.
    _, fresh = ae.neg_elbo_and_grads(X, eps, {})
    buffers = ae.gradient_buffers()
    buffers.flat[...] = np.nan
    _, reused = ae.neg_elbo_and_grads(X, eps, buffers)
    assert reused is buffers and list(fresh) == list(ae.params)
    for name in ("enc.logsigma.W", "enc.logsigma.b", "gp.scale"):
        assert not fresh[name].any() and not reused[name].any()
    for name in ae.params:
        np.testing.assert_array_equal(reused[name], fresh[name], err_msg=name)


def test_last_names_end_the_layout_and_the_rest_is_a_leading_block():
    ae = _autoencoder(extra_heads={"logsigma": 1}, extra_params={"gp.scale": (1,)},
                      last=("enc.logsigma.W", "enc.logsigma.b", "gp.scale"))
    plain = _autoencoder(extra_heads={"logsigma": 1}, extra_params={"gp.scale": (1,)})
    names = list(ae.params)
    assert names[-3:] == ["enc.logsigma.W", "enc.logsigma.b", "gp.scale"]
    for name in names:  # the same initial values, only the order differs
        np.testing.assert_array_equal(ae.params[name], plain.params[name])
    leading = ae.params.leading(len(names) - 3)
    assert isinstance(leading, FlatArrays) and ae.params.leads_with(leading)
    assert list(leading) == names[:-3]
    assert np.shares_memory(leading.flat, ae.params.flat)
    assert leading.flat.size == sum(ae.params[name].size for name in names[:-3])


@pytest.mark.parametrize("shape, ok", [((3, 2), True), ((1, 3, 2), True), ((2, 3, 2), True),
                                       ((3, 3), False), ((2, 2, 2), False)])
def test_check_eps_accepts_one_or_more_samples(shape, ok):
    ae = _autoencoder()
    if ok:
        expected = shape if len(shape) == 3 else (1, *shape)
        assert ae.check_eps(np.zeros(shape), 3).shape == expected
    else:
        with pytest.raises(ValueError, match=r"eps has shape"):
            ae.check_eps(np.zeros(shape), 3)
    if len(shape) == 3:
        with pytest.raises(ValueError, match=r"expected \(3, 2\)"):
            ae.check_eps(np.zeros(shape), 3, samples=False)
