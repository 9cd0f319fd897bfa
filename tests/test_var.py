"""Tests of minivae.VARegressor: end-to-end gradients, the schedule, persistence, devices,
input validation and a learning smoke test. Everything is tiny so the file runs fast."""

import tracemalloc

import numpy as np
import pytest

from minivae import var as var_module
from minivae.datasets import make_image_sequences
from minivae.errors import DataError
from minivae.gradcheck import check_gradients, format_table
from minivae.var import REGRESSION_PARAMS, VARegressor

GRAD_RTOL = 1e-6
#: Entries checked per parameter array (chosen at random; every array is checked). Each
#: loss evaluation runs the GP kernels, so checking all ~200 entries twice would be slow.
FD_ENTRIES = 8


def _toy_data(rng, n_features=1, n_groups=2, n_frames=8, image_shape=(3, 2)):
    """Inputs on a jittered grid per group, random images in [0, 1], group ids."""
    n = n_groups * n_frames
    base = np.linspace(0.0, 2.0, n_frames)[:, None] + 0.1 * rng.standard_normal((n_frames, n_features))
    X = np.concatenate([base + 0.05 * rng.standard_normal(base.shape) for _ in range(n_groups)])
    Y = rng.uniform(0.0, 1.0, size=(n, *image_shape))
    groups = np.repeat(np.arange(n_groups), n_frames)
    return X, Y, groups


def _tiny_model(**overrides):
    config = dict(latent_dim=3, hidden=(5,), activation="tanh", n_anchor=4, n_query=3,
                  epochs=(0, 0, 0), dtype="float64", seed=1, batch_size=16)
    config.update(overrides)
    return VARegressor(**config)


def _perturb(model, rng, scale=0.3):
    """Move every parameter off its initial value (biases away from 0, lengthscale too),
    drawing in network order (encoder, decoder, GP), whatever the flat layout's order."""
    prefix = {"enc": 0, "dec": 1, "gp": 2}
    for name in sorted(model.params, key=lambda name: prefix[name.split(".")[0]]):
        model.params[name][...] += scale * rng.standard_normal(model.params[name].shape)


def _assert_gradients(rows):
    worst = max(row["rel_error"] for row in rows)
    assert worst < GRAD_RTOL, "analytic vs finite differences:\n" + format_table(rows)


# ---- gradients -----------------------------------------------------------------------------


def _joint_problem(rng, likelihood, n_features, beta=1.0):
    """A perturbed tiny model, its data, two episodes from different groups (with different
    numbers of queries) and their anchor noise."""
    X, Y, groups = _toy_data(rng, n_features=n_features)
    model = _tiny_model(likelihood=likelihood, beta=beta).fit(X, Y, groups=groups,
                                                              progress=False)
    _perturb(model, rng)
    episodes = [(np.array([0, 2, 5, 7]), np.array([1, 3, 6])),
                (np.array([8, 10, 12, 15]), np.array([9, 14]))]
    eps = rng.standard_normal((8, 3))
    return model, X, Y, episodes, eps


@pytest.mark.parametrize("likelihood, n_features, beta", [
    ("bernoulli", 1, 1.0), ("bernoulli", 2, 1.0), ("gaussian", 1, 1.0), ("gaussian", 2, 1.0),
    ("bernoulli", 2, 0.05), ("gaussian", 1, 0.3)])
def test_joint_gradients_match_finite_differences(rng, likelihood, n_features, beta):
    model, X, Y, episodes, eps = _joint_problem(rng, likelihood, n_features, beta)
    loss, grads = model.loss_and_grads(X, Y, episodes, eps=eps)
    assert np.isfinite(loss)
    assert list(grads) == list(model.params)
    rows = check_gradients(lambda: model.loss_and_grads(X, Y, episodes, eps=eps)[0],
                           model.params, grads, max_entries_per_param=FD_ENTRIES)
    assert {row["name"] for row in rows} == set(model.params)
    # Every parameter, including the amplitude head and the lengthscale, gets gradient.
    assert all(row["max_abs_analytic"] > 0 for row in rows)
    _assert_gradients(rows)


def test_joint_loss_value_is_per_example(rng):
    """The loss is (sum of anchor KL + nll and query nll) / (anchors + queries)."""
    X, Y, groups = _toy_data(rng)
    model = _tiny_model().fit(X, Y, groups=groups, progress=False)
    episodes = [(np.array([0, 2, 5, 7]), np.array([1, 3]))]
    eps = rng.standard_normal((4, 3))
    loss_one, _ = model.loss_and_grads(X, Y, episodes, eps=eps)
    loss_twice, _ = model.loss_and_grads(X, Y, episodes * 2, eps=np.concatenate([eps, eps]))
    assert loss_twice == pytest.approx(loss_one, rel=1e-12)


def _numpy_joint_loss(params, X, Y, episodes, eps, noise, likelihood, beta):
    """docs/derivations.md, "VAR: forward", written out in plain NumPy (tanh networks with
    one hidden layer, as built by _tiny_model): the executable check of the loss value."""
    def layer(h, name):
        return h @ params[name + ".W"] + params[name + ".b"]

    def decoder_nll(z, y):
        h = np.tanh(layer(z, "dec.0"))
        if likelihood == "bernoulli":
            logits = layer(h, "dec.out")
            return (np.logaddexp(0.0, logits) - y * logits).sum(axis=1)
        mean, logvar = layer(h, "dec.mean"), layer(h, "dec.logvar")
        return 0.5 * (np.log(2 * np.pi) + logvar + (y - mean) ** 2 * np.exp(-logvar)).sum(axis=1)

    def exp_factor(A, B, lengthscale):
        squared = ((A[:, None, :] - B[None, :, :]) ** 2).sum(axis=-1)
        return np.exp(-squared / (2.0 * lengthscale**2))

    lengthscale = np.exp(params["gp.log_lengthscale"][0])
    images = Y.reshape(len(Y), -1)
    total, count, start = 0.0, 0, 0
    for anchors, queries in episodes:
        h = np.tanh(layer(images[anchors], "enc.0"))
        mu, logvar = layer(h, "enc.mu"), layer(h, "enc.logvar")
        sigma = np.exp(layer(h, "enc.logsigma")[:, 0])
        z = mu + np.exp(logvar / 2) * eps[start:start + len(anchors)]
        start += len(anchors)
        a, b = np.sqrt(sigma), np.sqrt(sigma.mean())
        K = a[:, None] * a[None, :] * exp_factor(X[anchors], X[anchors], lengthscale)
        K_star = b * a[None, :] * exp_factor(X[queries], X[anchors], lengthscale)
        z_star = K_star @ np.linalg.solve(K + noise * np.eye(len(anchors)), z)
        kl = 0.5 * (np.exp(logvar) + mu**2 - 1.0 - logvar).sum(axis=1)
        total += (beta * kl + decoder_nll(z, images[anchors])).sum()
        total += decoder_nll(z_star, images[queries]).sum()
        count += len(anchors) + len(queries)
    return total / count


@pytest.mark.parametrize("likelihood, beta", [("bernoulli", 1.0), ("gaussian", 1.0),
                                              ("bernoulli", 0.2)])
def test_joint_loss_matches_a_plain_numpy_forward(rng, likelihood, beta):
    """The loss value itself, against the derivation's formulas evaluated independently
    (float64; different summation orders only: rtol 1e-12)."""
    model, X, Y, episodes, eps = _joint_problem(rng, likelihood, n_features=2, beta=beta)
    loss, _ = model.loss_and_grads(X, Y, episodes, eps=eps)
    expected = _numpy_joint_loss({k: np.asarray(v) for k, v in model.params.items()}, X, Y,
                                 episodes, eps, model.noise, likelihood, beta)
    assert loss == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("beta", [1.0, 0.1])
def test_pretraining_elbo_gradients_match_finite_differences(rng, beta):
    X, Y, groups = _toy_data(rng)
    model = _tiny_model(beta=beta).fit(X, Y, groups=groups, progress=False)
    _perturb(model, rng)
    eps = rng.standard_normal((5, 3))
    _, grads = model.elbo_loss_and_grads(Y[:5], eps=eps)
    rows = check_gradients(lambda: model.elbo_loss_and_grads(Y[:5], eps=eps)[0],
                           model.params, grads, max_entries_per_param=FD_ENTRIES)
    _assert_gradients(rows)
    for name in REGRESSION_PARAMS:
        assert not np.any(grads[name])


def test_pretraining_loss_weights_the_kl_by_beta(rng):
    """The pre-training loss is mean(nll) + beta mean(KL): two models with the same
    parameters and noise differ by (beta - 1) times the KL written out in NumPy."""
    X, Y, groups = _toy_data(rng)
    models = [_tiny_model(beta=beta).fit(X, Y, groups=groups, progress=False)
              for beta in (1.0, 0.25)]
    _perturb(models[0], rng)
    models[1].set_state(models[0].get_state()[0])
    eps = rng.standard_normal((5, 3))
    loss_one, loss_quarter = (model.elbo_loss_and_grads(Y[:5], eps=eps)[0] for model in models)
    mu, logvar, _ = models[0].encode(Y[:5])
    kl = 0.5 * (np.exp(logvar) + mu**2 - 1.0 - logvar).sum(axis=1).mean()
    assert kl > 0.1
    assert loss_quarter - loss_one == pytest.approx(-0.75 * kl, rel=1e-10)


# ---- schedule, determinism, persistence --------------------------------------------------------


def _fit_small(X, Y, groups, epochs, **overrides):
    return _tiny_model(epochs=epochs, lr=1e-2, **overrides).fit(X, Y, groups=groups,
                                                                progress=False)


def test_fine_tuning_freezes_the_regression_part(rng):
    X, Y, groups = _toy_data(rng)
    after_joint = _fit_small(X, Y, groups, (1, 2, 0))
    after_fine = _fit_small(X, Y, groups, (1, 2, 2))
    for name in after_fine.params:
        frozen = name in REGRESSION_PARAMS
        same = np.array_equal(after_joint.params[name], after_fine.params[name])
        assert same == frozen, name
    assert after_fine.history_["phase"] == ["pretrain", "joint", "joint", "finetune", "finetune"]


def test_pretraining_leaves_the_regression_part_at_its_initial_value(rng):
    X, Y, groups = _toy_data(rng)
    initial = _fit_small(X, Y, groups, (0, 0, 0))
    pretrained = _fit_small(X, Y, groups, (2, 0, 0))
    for name in REGRESSION_PARAMS:
        assert np.array_equal(initial.params[name], pretrained.params[name])
    assert not np.array_equal(initial.params["enc.mu.W"], pretrained.params["enc.mu.W"])


def test_same_seed_is_bit_identical_and_another_seed_differs(rng):
    X, Y, groups = _toy_data(rng)
    first = _fit_small(X, Y, groups, (1, 2, 1), dtype="float32")
    second = _fit_small(X, Y, groups, (1, 2, 1), dtype="float32")
    other = _fit_small(X, Y, groups, (1, 2, 1), dtype="float32", seed=2)
    for name in first.params:
        assert np.array_equal(first.params[name], second.params[name]), name
    assert first.history_["train_loss"] == second.history_["train_loss"]
    assert not np.array_equal(first.params["dec.out.W"], other.params["dec.out.W"])


def test_save_load_round_trip_predicts_identically(rng, tmp_path):
    X, Y, groups = _toy_data(rng, n_features=2)
    groups = np.where(groups == 0, "walk", "run")
    model = _fit_small(X, Y, groups, (1, 1, 1), dtype="float32")
    path = tmp_path / "var.npz"
    model.save(path)
    loaded = VARegressor.load(path)
    X_new = rng.uniform(0.0, 2.0, size=(5, 2))
    new_groups = np.array(["run", "walk", "walk", "run", "run"])
    images, std = model.predict(X_new, new_groups, return_std=True, n_samples=4)
    images_loaded, std_loaded = loaded.predict(X_new, new_groups, return_std=True, n_samples=4)
    assert images.shape == std.shape == (5, 3, 2)
    assert np.array_equal(images, images_loaded)
    assert np.array_equal(std, std_loaded)
    for got, want in zip(loaded.predict_latent(X_new, new_groups),
                         model.predict_latent(X_new, new_groups)):
        assert np.array_equal(got, want)
    for got, want in zip(loaded.encode(Y[:3]), model.encode(Y[:3])):
        assert np.array_equal(got, want)
    assert loaded.get_config() == model.get_config()
    assert loaded.lengthscale_ == model.lengthscale_
    assert loaded.history_ == model.history_


def test_a_file_without_beta_loads_with_the_weight_it_was_trained_with(rng, tmp_path,
                                                                       monkeypatch):
    """Files written before ``beta`` existed trained with the ELBO's weight 1."""
    X, Y, groups = _toy_data(rng)
    model = _fit_small(X, Y, groups, (1, 1, 1), beta=0.5)
    real_config = VARegressor.get_config
    monkeypatch.setattr(VARegressor, "get_config", lambda self: {
        key: value for key, value in real_config(self).items() if key != "beta"})
    model.save(tmp_path / "old.npz")
    monkeypatch.undo()
    assert VARegressor.load(tmp_path / "old.npz").beta == 1.0
    model.save(tmp_path / "new.npz")
    assert VARegressor.load(tmp_path / "new.npz").beta == 0.5


def test_training_checkpoint_resumes_bit_identically(rng, tmp_path):
    X, Y, groups = _toy_data(rng)
    full = _fit_small(X, Y, groups, (1, 2, 1))
    path = tmp_path / "ckpt.npz"
    partial = _tiny_model(epochs=(1, 1, 0), lr=1e-2)
    partial.fit(X, Y, groups=groups, progress=False, checkpoint=path)
    resumed = _tiny_model(epochs=(1, 2, 1), lr=1e-2)
    resumed.fit(X, Y, groups=groups, progress=False, checkpoint=path, resume=True)
    for name in full.params:
        assert np.array_equal(full.params[name], resumed.params[name]), name
    assert resumed.history_["phase"] == full.history_["phase"]
    loaded = VARegressor.load(path)
    assert np.array_equal(loaded.predict(X[:3], groups[:3]), resumed.predict(X[:3], groups[:3]))
    assert loaded.history_ == resumed.history_


def test_cuda_sim_training_agrees_with_cpu(rng):
    pytest.importorskip("numba.cuda")
    X, Y, groups = _toy_data(rng, n_frames=7)
    config = dict(epochs=(1, 1, 1), batch_size=24, n_query=2)
    on_cpu = _fit_small(X, Y, groups, device="cpu", **config)
    on_sim = _fit_small(X, Y, groups, device="cuda-sim", **config)
    # Same algorithm, different kernels: only the floating-point summation order differs,
    # so float64 results agree to near machine precision after these few steps. atol: the
    # bias gradients of a few units can be ~0, where a relative tolerance means nothing.
    for name in on_cpu.params:
        np.testing.assert_allclose(on_sim.params[name], on_cpu.params[name], rtol=1e-10,
                                   atol=1e-13, err_msg=name)
    np.testing.assert_allclose(on_sim.predict(X[:4], groups[:4]),
                               on_cpu.predict(X[:4], groups[:4]), rtol=1e-10)


# ---- prediction ---------------------------------------------------------------------------------


def _codes_covariance(model, X, Y):
    """A group's codes mu, log amplitudes and A = K + noise I (one input column), in NumPy."""
    mu, _, logsigma = model.encode(Y)
    amp = np.sqrt(np.exp(logsigma))
    x = X[:, 0]
    kernel = np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / model.lengthscale_**2)
    return mu, logsigma, amp[:, None] * amp[None, :] * kernel + model.noise * np.eye(x.size)


def test_loo_error_variance_is_the_leave_one_out_refit_written_out(rng):
    """Each training frame's code regressed from the group's other frames by a GP refitted
    without it (the closed form of R&W eq. 5.12 is not used here), decoded, squared error
    per pixel, averaged over every training frame (float64 solves of <= 8 points in
    another order: rtol 1e-10)."""
    X, Y, groups = _toy_data(rng, image_shape=(12,))
    model = _fit_small(X, Y, groups, (1, 2, 1))
    squared = []
    for g in (0, 1):
        rows = groups == g
        mu, _, A = _codes_covariance(model, X[rows], Y[rows])
        for i in range(rows.sum()):
            others = np.arange(rows.sum()) != i
            code = A[i, others] @ np.linalg.solve(A[np.ix_(others, others)], mu[others])
            squared.append((Y[rows][i] - model.decode(code[None])[0]) ** 2)
    expected = np.mean(squared, axis=0)
    got = model.loo_error_variance()
    assert got.shape == (12,) and np.all(expected > 0)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_predictive_std_adds_the_loo_error_variance(rng):
    """std^2 = (latent spread)^2 + loo_error_variance, per pixel, same samples (float64
    model: the sum and the square root round at ~1e-16)."""
    X, Y, groups = _toy_data(rng, image_shape=(4, 3))
    model = _fit_small(X, Y, groups, (1, 1, 1))
    X_new, new_groups = np.array([[0.3], [1.7], [5.0]]), [0, 1, 1]
    images, std = model.predict(X_new, new_groups, return_std=True, n_samples=6)
    images_latent, std_latent = model.predict(X_new, new_groups, return_std=True,
                                              n_samples=6, decoder_error=False)
    assert np.array_equal(images, images_latent)
    np.testing.assert_allclose(std**2, std_latent**2 + model.loo_error_variance()[None],
                               rtol=1e-12)
    assert np.all(std > std_latent)


def test_predict_shapes_and_latent_variance(rng):
    X, Y, groups = _toy_data(rng, image_shape=(12,))
    model = _fit_small(X, Y, groups, (1, 1, 0))
    X_new = np.array([[0.3], [1.7], [5.0]])
    images = model.predict(X_new, groups=[0, 1, 1])
    assert images.shape == (3, 12)
    assert np.all((images >= 0) & (images <= 1))
    mean, var = model.predict_latent(X_new, groups=1)
    assert mean.shape == (3, 3) and var.shape == (3,)
    assert np.all(var >= 0)
    # The posterior variance, c (b^2 - k*^T A^-1 k*), written out: c = tr(Mu^T A^-1 Mu) /
    # (n k) the maximum-likelihood scale of the group's covariance, b the query amplitude
    # interpolated from the log amplitudes (query_amplitudes), k* = b a E(x*, X).
    mu, logsigma, A = _codes_covariance(model, X[groups == 1], Y[groups == 1])
    c = np.sum(mu * np.linalg.solve(A, mu)) / mu.size
    x, log_amp = X[groups == 1][:, 0], logsigma / 2
    E_star = np.exp(-0.5 * (X_new[:, :1] - x[None, :]) ** 2 / model.lengthscale_**2)
    E = np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / model.lengthscale_**2)
    weights = np.linalg.solve(E + model.noise * np.eye(x.size), log_amp - log_amp.mean())
    b = np.exp(log_amp.mean() + E_star @ weights)
    k_star = b[:, None] * np.exp(log_amp)[None, :] * E_star
    expected = c * (b**2 - np.sum(k_star * np.linalg.solve(A, k_star.T).T, axis=1))
    np.testing.assert_allclose(var, expected, rtol=1e-9)
    assert model.decode(mean).shape == (3, 12)


def test_latent_variance_scale_is_the_maximum_of_the_codes_likelihood(rng):
    """c maximises log N(Mu; 0, c A) over c: the derivative in log c vanishes there."""
    X, Y, groups = _toy_data(rng)
    model = _fit_small(X, Y, groups, (1, 1, 0))
    mu, logsigma, A = _codes_covariance(model, X[groups == 0], Y[groups == 0])
    n = A.shape[0]
    quad, logdet = np.sum(mu * np.linalg.solve(A, mu)), np.linalg.slogdet(A)[1]

    def log_likelihood(log_c):
        return -0.5 * quad / np.exp(log_c) - 0.5 * mu.shape[1] * (logdet + n * log_c)

    c = quad / mu.size
    h = 1e-5
    slope = (log_likelihood(np.log(c) + h) - log_likelihood(np.log(c) - h)) / (2 * h)
    assert abs(slope) < 1e-6 * mu.size
    assert log_likelihood(np.log(c)) > max(log_likelihood(np.log(c) + 0.1),
                                           log_likelihood(np.log(c) - 0.1))
    # and the model's prior variance far away is c b^2, b^2 = exp(mean log sigma)
    _, var = model.predict_latent(np.array([[50.0]]), groups=0)
    np.testing.assert_allclose(var[0], c * np.exp(logsigma.mean()), rtol=1e-9)


def test_prediction_at_a_training_input_recovers_its_code(rng):
    """With small noise the posterior mean at training input i is the frame's code mu_i.

    k(x*, x_q) = b a_q E(x*, x_q) is row i of K scaled by b / a_i when x* = x_i, and the
    interpolated query amplitude there is b = a_i (query_amplitudes), so the GP returns
    mu_i itself; the variance there vanishes.
    """
    X, Y, groups = _toy_data(rng)
    model = _fit_small(X, Y, groups, (1, 1, 0), noise=1e-10)
    mean, var = model.predict_latent(X[groups == 0], groups=0)
    mu, _, logsigma = model.encode(Y[groups == 0])
    np.testing.assert_allclose(mean, mu, rtol=1e-5)
    assert np.all(var < 1e-6 * np.exp(logsigma).mean())


def test_mean_query_amplitude_rescales_the_code_at_a_training_input(rng):
    """query_amplitude="mean" (the paper's): at training input i the posterior mean tends
    to (b / a_i) mu_i, b = sqrt(mean sigma), as the noise goes to 0."""
    X, Y, groups = _toy_data(rng)
    model = _fit_small(X, Y, groups, (1, 1, 0), noise=1e-10, query_amplitude="mean")
    mean, _ = model.predict_latent(X[groups == 0], groups=0)
    mu, _, logsigma = model.encode(Y[groups == 0])
    sigma = np.exp(logsigma)
    np.testing.assert_allclose(mean, np.sqrt(sigma.mean() / sigma)[:, None] * mu, rtol=1e-5)


@pytest.mark.parametrize("n, m, p", [(1, 3, 1), (7, 5, 2), (23, 1, 3)])
def test_query_amplitudes_interpolate_the_log_amplitudes(rng, n, m, p):
    X, X_query = rng.normal(size=(n, p)), rng.normal(size=(m, p))
    logsigma = rng.normal(scale=1.4, size=n)
    lengthscale, noise = 0.9, 1e-3
    theta = np.array([np.log(lengthscale), 0.0, np.log(noise)])
    got = var_module.query_amplitudes(X, logsigma, X_query, theta)

    def unit_kernel(A, B):
        return np.exp(-((A[:, None, :] - B[None, :, :]) ** 2).sum(-1) / (2 * lengthscale**2))

    log_amp = logsigma / 2
    weights = np.linalg.solve(unit_kernel(X, X) + noise * np.eye(n), log_amp - log_amp.mean())
    np.testing.assert_allclose(got, np.exp(log_amp.mean() + unit_kernel(X_query, X) @ weights),
                               rtol=1e-12)
    mean = var_module.query_amplitudes(X, logsigma, X_query, theta, rule="mean")
    np.testing.assert_allclose(mean, np.full(m, np.sqrt(np.exp(logsigma).mean())), rtol=1e-14)


def test_initial_lengthscale_is_the_anchor_spacing(rng):
    X = np.concatenate([np.arange(10.0), np.arange(10.0)])[:, None] * 0.5
    Y = rng.uniform(size=(20, 4))
    model = _tiny_model(n_anchor=5).fit(X, Y, groups=np.repeat([0, 1], 10), progress=False)
    # nearest-neighbour spacing 0.5, stretched by n_g / n_anchor = 2 in one dimension.
    assert model.lengthscale_ == pytest.approx(1.0, rel=1e-12)
    assert _tiny_model(lengthscale=0.7).fit(X, Y, progress=False).lengthscale_ == pytest.approx(0.7)


# ---- bad input ----------------------------------------------------------------------------------


@pytest.fixture
def fitted(rng):
    X, Y, groups = _toy_data(rng)
    return _fit_small(X, Y, groups, (1, 1, 0)), X, Y, groups


def test_small_group_is_rejected_with_the_numbers(rng):
    X, Y, groups = _toy_data(rng)
    groups[:3] = 7  # group 7 has 3 frames, n_anchor=4 needs 5 (group 0 keeps 5)
    with pytest.raises(DataError, match=r"group 7 has 3 training frames.*at least 5"):
        _tiny_model().fit(X, Y, groups=groups, progress=False)


@pytest.mark.parametrize("corrupt, message", [
    (lambda X, Y, g: (np.where(np.arange(16)[:, None] == 5, np.nan, X), Y, g), r"X has 1 NaN.*row 5"),
    (lambda X, Y, g: (X, np.where(Y > 0.9, np.inf, Y), g), r"Y has \d+ infinite"),
    (lambda X, Y, g: (X, Y * 2.0, g), r"outside \[0, 1\]"),
    (lambda X, Y, g: (X[:-1], Y, g), r"X has 15 rows but Y has 16"),
    (lambda X, Y, g: (X, Y, g[:-1]), r"groups has shape \(15,\)"),
    (lambda X, Y, g: (X[:, 0], Y, g), r"reshape\(-1, 1\)"),
])
def test_bad_training_data_raises_and_leaves_the_model_unchanged(fitted, corrupt, message):
    model, X, Y, groups = fitted
    before = {name: value.copy() for name, value in model.params.items()}
    with pytest.raises(DataError, match=message):
        model.fit(*corrupt(X, Y, groups), progress=False)
    for name, value in model.params.items():
        assert np.array_equal(value, before[name])


def test_bad_prediction_input_raises(fitted):
    model, X, Y, groups = fitted
    with pytest.raises(DataError, match=r"X_new has 2 columns but .* 1"):
        model.predict(np.zeros((3, 2)), groups=[0, 0, 0])
    with pytest.raises(DataError, match=r"not seen in training \(first: 5\)"):
        model.predict(np.zeros((2, 1)), groups=[0, 5])
    with pytest.raises(DataError, match=r"fitted on 2 groups; pass groups="):
        model.predict(np.zeros((2, 1)))
    with pytest.raises(DataError, match=r"X_new has 1 NaN"):
        model.predict_latent(np.array([[0.0], [np.nan]]), groups=0)
    with pytest.raises(DataError, match=r"groups has shape \(3,\)"):
        model.predict(np.zeros((2, 1)), groups=[0, 0, 1])
    with pytest.raises(DataError, match=r"images of shape \(3, 2\)"):
        model.encode(np.zeros((2, 5)))
    with pytest.raises(DataError, match=r"Z has 2 columns"):
        model.decode(np.zeros((4, 2)))


def test_bad_episodes_raise(fitted):
    model, X, Y, _ = fitted
    with pytest.raises(DataError, match=r"episode 0 has 2 anchors and 0 queries"):
        model.loss_and_grads(X, Y, [([0, 1], [])])
    with pytest.raises(DataError, match=r"episode 1 indexes row 16, outside the 16 rows"):
        model.loss_and_grads(X, Y, [([0, 1], [2]), ([3, 4], [16])])


def test_unfitted_model_says_so():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="not fitted yet"):
        VARegressor().predict(np.zeros((1, 1)))


@pytest.mark.parametrize("kwargs", [dict(epochs=(1, 2)), dict(epochs=5), dict(n_anchor=0),
                                    dict(noise=0.0), dict(likelihood="poisson"),
                                    dict(lengthscale=-1.0), dict(query_amplitude="median"),
                                    dict(beta=-0.5), dict(beta=float("nan"))])
def test_bad_constructor_arguments_are_stored_and_refused_by_fit(rng, kwargs):
    model = VARegressor(**kwargs)  # scikit-learn's convention: stored unchanged
    assert all(getattr(model, key) is value for key, value in kwargs.items())
    X, Y, groups = _toy_data(rng)
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        model.fit(X, Y, groups=groups, progress=False)
    assert not hasattr(model, "network")


# ---- learning smoke test --------------------------------------------------------------------------


def test_joint_training_lowers_the_joint_loss():
    data = make_image_sequences(n_sequences=2, n_frames=16, size=8, seed=0)
    config = dict(latent_dim=2, hidden=(32,), n_anchor=5, n_query=3, batch_size=16, lr=3e-3,
                  seed=0)
    episodes = [(np.array([0, 3, 6, 9, 12]), np.array([1, 7, 14])),
                (np.array([16, 19, 22, 25, 28]), np.array([17, 23, 30]))]
    eps = np.random.default_rng(0).standard_normal((10, 2))
    pretrained = VARegressor(epochs=(20, 0, 0), **config)
    pretrained.fit(data.X, data.Y, groups=data.groups, progress=False)
    joint = VARegressor(epochs=(20, 30, 0), **config)
    joint.fit(data.X, data.Y, groups=data.groups, progress=False)
    loss_before, _ = pretrained.loss_and_grads(data.X, data.Y, episodes, eps=eps)
    loss_after, _ = joint.loss_and_grads(data.X, data.Y, episodes, eps=eps)
    assert loss_after < 0.9 * loss_before
    joint_losses = [loss for loss, phase in zip(joint.history_["train_loss"],
                                                joint.history_["phase"]) if phase == "joint"]
    assert np.mean(joint_losses[-5:]) < np.mean(joint_losses[:5])


# ---- memory and precision of the helpers ---------------------------------------------------


def _peak_bytes(function, *args):
    tracemalloc.start()
    try:
        result = function(*args)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("n_episodes, n_g, size", [(1, 5, 5), (3, 7, 4), (50, 997, 20)])
@pytest.mark.parametrize("keys_per_draw", [1 << 20, 300])
def test_episode_rows_are_the_argsort_draw(monkeypatch, n_episodes, n_g, size, keys_per_draw):
    """Bit-identical to drawing every key at once and sorting whole rows (the formula of
    the class Notes), in one draw or in many, and the generator ends in the same state."""
    monkeypatch.setattr(var_module, "_EPISODE_KEYS_PER_DRAW", keys_per_draw)
    expected_rng, rng = np.random.default_rng(4), np.random.default_rng(4)
    expected = np.argsort(expected_rng.random((n_episodes, n_g)), axis=1)[:, :size]
    picks = var_module._draw_episode_rows(rng, n_episodes, n_g, size)
    assert np.array_equal(picks, expected)
    assert rng.random() == expected_rng.random()


def test_episode_rows_of_a_long_sequence_use_bounded_memory():
    """20,000 frames in one group, episodes of 20: the keys of all 1,000 episodes at once
    would take 153 MiB; the draw stays near _EPISODE_KEYS_PER_DRAW keys (8 MiB) plus their
    partition (8 MiB)."""
    picks, peak = _peak_bytes(var_module._draw_episode_rows, np.random.default_rng(0), 1000,
                              20000, 20)
    assert picks.shape == (1000, 20)
    assert all(np.unique(row).size == 20 for row in picks[:50])
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_nearest_distinct_distances_with_bounded_memory(rng):
    """Against all pairwise distances; 1500 rows of 22 features (the postures' width): the
    (rows, n, p) differences of 512-row blocks took 135 MiB twice over, the blocks are now
    sized to _NEAREST_BLOCK_ENTRIES values (32 MiB, and the same again for their squares)."""
    X = rng.uniform(size=(1500, 22))
    X[7] = X[3]  # a duplicate: the distance 0 is skipped
    nearest, peak = _peak_bytes(var_module._nearest_distinct_distances, X)
    distances = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(axis=-1))
    distances[distances == 0] = np.inf
    np.testing.assert_array_equal(nearest, distances.min(axis=1))
    assert peak < 3 * 8 * var_module._NEAREST_BLOCK_ENTRIES, f"peak {peak / 2**20:.0f} MiB"


def test_float32_model_predicts_through_a_float64_gp(rng):
    """Prediction conditions on every frame of a group (400 here): with the GP in float32
    the latent mean and variance were off by 9e-4 and 1.2e-3 relative against the float64
    model with the same parameters; with the GP in float64 only the float32 encoder and
    inputs differ (measured 1.4e-7 and 6.4e-7)."""
    n = 400
    X = np.linspace(0.0, 1.0, n)[:, None]
    Y = rng.uniform(size=(n, 3, 2))
    model64 = _tiny_model().fit(X, Y, progress=False)
    _perturb(model64, rng)
    model32 = _tiny_model(dtype="float32").fit(X, Y, progress=False)
    model32.set_state({name: np.asarray(value) for name, value in model64.params.items()})
    X_new = rng.uniform(0.0, 1.0, size=(50, 1))
    mean64, var64 = model64.predict_latent(X_new)
    mean32, var32 = model32.predict_latent(X_new)
    assert mean32.dtype == var32.dtype == np.float32
    assert np.max(np.abs(mean32 - mean64)) < 1e-5 * np.max(np.abs(mean64))
    assert np.max(np.abs(var32 - var64)) < 1e-5 * np.max(np.abs(var64))



@pytest.mark.parametrize("device", ["cpu", "cuda-sim"])
def test_varegressor_pickles_and_deep_copies_to_an_equal_model(rng, device):
    import copy
    import pickle

    from sklearn.base import clone

    X, Y, groups = _toy_data(rng)
    model = _tiny_model(epochs=(1, 1, 0), device=device).fit(X, Y, groups=groups, progress=False)
    for other in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        np.testing.assert_array_equal(other.predict(X, groups), model.predict(X, groups))
        assert other.history_ == model.history_
    fresh = clone(model)
    assert fresh.get_params() == model.get_params() and not hasattr(fresh, "network")


def test_episode_sizes_follow_small_groups(rng):
    X, Y, groups = _toy_data(rng, n_frames=10)
    model = VARegressor(latent_dim=2, hidden=(4,), epochs=(0, 1, 0), seed=0)
    model.fit(X, Y, groups=groups, progress=False)  # the defaults 12 + 8 would not fit
    assert (model.n_anchor_, model.n_query_) == (6, 4)
    assert model.n_anchor is None and model.n_query is None


def test_patience_holds_out_frames_stops_and_keeps_the_best(rng, monkeypatch):
    X, Y, groups = _toy_data(rng, n_frames=16)
    seen = []
    real = VARegressor._joint_loss_and_grads_device

    def spy(self, X_, Y_, episodes, eps, grads):
        seen.extend(np.concatenate([rows for pair in episodes for rows in pair]).tolist())
        return real(self, X_, Y_, episodes, eps, grads)

    monkeypatch.setattr(VARegressor, "_joint_loss_and_grads_device", spy)
    model = _tiny_model(epochs=(1, 40, 5), patience=2, validation_every=4, lr=5e-2)
    model.fit(X, Y, groups=groups, progress=False)
    held = {g * 16 + i for g in range(2) for i in range(2, 16, 4)}  # 4 frames a group
    assert seen and not held & set(seen)
    stops = {stop["phase"]: stop for stop in model.history_["stops"]}
    joint = stops["joint"]
    assert joint["epochs"] < 40 and joint["reason"].startswith("stopped: no better")
    val = [loss for loss, phase in zip(model.history_["val_loss"], model.history_["phase"])
           if phase == "joint"]
    assert min(val) == val[joint["best_epoch"] - 1]
    assert model.history_["val_loss"][0] is None  # pre-training is not scored
    # Prediction conditions on every training frame, the held-out ones included.
    assert [rows.size for rows in model._group_rows] == [16, 16]


def test_patience_resume_is_bit_identical(rng, tmp_path):
    X, Y, groups = _toy_data(rng, n_frames=16)
    settings = dict(epochs=(1, 6, 2), patience=2, validation_every=4, lr=5e-2)
    straight = _tiny_model(**settings).fit(X, Y, groups=groups, progress=False)
    path = tmp_path / "run.npz"
    _tiny_model(**{**settings, "epochs": (1, 3, 0)}).fit(X, Y, groups=groups, progress=False,
                                                         checkpoint=path)
    resumed = _tiny_model(**settings).fit(X, Y, groups=groups, progress=False, checkpoint=path,
                                          resume=True)
    for name in straight.params:
        np.testing.assert_array_equal(resumed.params[name], straight.params[name])
    assert resumed.history_["val_loss"] == straight.history_["val_loss"]


# ---- the convolutional decoder ---------------------------------------------------------


def test_joint_gradients_with_the_conv_decoder_match_finite_differences(rng):
    X, Y, groups = _toy_data(rng, image_shape=(4, 8))
    model = _tiny_model(decoder="conv").fit(X, Y, groups=groups, progress=False)
    assert {name for name in model.params if name.startswith("dec.")} == {
        "dec.fc.W", "dec.fc.b", "dec.conv0.W", "dec.conv0.b", "dec.conv1.W", "dec.conv1.b"}
    _perturb(model, rng)
    episodes = [(np.array([0, 2, 5, 7]), np.array([1, 3, 6])),
                (np.array([8, 10, 12, 15]), np.array([9, 14]))]
    eps = rng.standard_normal((8, 3))
    loss, grads = model.loss_and_grads(X, Y, episodes, eps=eps)
    rows = check_gradients(lambda: model.loss_and_grads(X, Y, episodes, eps=eps)[0],
                           model.params, grads, max_entries_per_param=FD_ENTRIES)
    assert all(row["max_abs_analytic"] > 0 for row in rows)
    _assert_gradients(rows)


def test_conv_decoder_round_trips_and_refuses_what_it_cannot_make(rng, tmp_path):
    X, Y, groups = _toy_data(rng, image_shape=(4, 8))
    model = _tiny_model(decoder="conv", epochs=(1, 1, 1)).fit(X, Y, groups=groups,
                                                              progress=False)
    before = model.predict(X[:3], groups[:3])
    model.save(tmp_path / "conv.npz")
    loaded = VARegressor.load(tmp_path / "conv.npz")
    assert loaded.decoder == "conv"
    np.testing.assert_array_equal(loaded.predict(X[:3], groups[:3]), before)
    with pytest.raises(ValueError, match="multiples of 4.*decoder='mlp'"):
        _tiny_model(decoder="conv").fit(X, Y[:, :3, :6], groups=groups, progress=False)
    with pytest.raises(ValueError, match="decoder='cnn' is not one of"):
        _tiny_model(decoder="cnn").fit(X, Y, groups=groups, progress=False)
