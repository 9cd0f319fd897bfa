"""The VAE: whole-model gradients against finite differences, the loss against an
independent forward computation, the evaluation API, input validation, persistence and
training (reproducibility, cuda-sim agreement, divergence)."""

import math
import pickle

import numpy as np
import pytest
from sklearn.base import clone

from minivae import DataError, TrainingDivergedError
from minivae.gradcheck import check_gradients, gradcheck_vae
from minivae.vae import VAE

TOL = 1e-6
LIKELIHOODS = [("bernoulli", None), ("gaussian", None), ("gaussian", 0.5)]


# ---- gradients --------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood, fixed_variance", LIKELIHOODS)
@pytest.mark.parametrize("activation", ["relu", "tanh", "softplus"])
@pytest.mark.parametrize("n_samples", [1, 3])
def test_loss_and_grads_match_finite_differences(likelihood, fixed_variance, activation,
                                                 n_samples):
    rows = gradcheck_vae(likelihood, activation, fixed_variance=fixed_variance,
                         n_samples=n_samples, beta=0.7, input_dim=5, latent_dim=3,
                         hidden=(4, 6), n=3, seed=n_samples)
    worst = max(rows, key=lambda row: row["rel_error"])
    assert worst["rel_error"] < TOL, f"{worst['name']}: relative error {worst['rel_error']:.2e}"
    assert all(row["max_abs_analytic"] > 0 for row in rows)


def test_gradients_with_no_hidden_layer():
    rows = gradcheck_vae("gaussian", "relu", hidden=(), n_samples=2, beta=1.5)
    assert max(row["rel_error"] for row in rows) < TOL


def _direct_negative_elbo(vae, X, eps):
    """The loss written out with plain NumPy, independently of nn.py and losses.py."""
    p = vae.params
    act = {"relu": lambda a: np.maximum(a, 0), "tanh": np.tanh,
           "softplus": lambda a: np.log1p(np.exp(a))}[vae.activation]
    h = act(X @ p["enc.0.W"] + p["enc.0.b"])
    mu = h @ p["enc.mu.W"] + p["enc.mu.b"]
    logvar = h @ p["enc.logvar.W"] + p["enc.logvar.b"]
    total = 0.0
    for eps_l in eps:
        z = mu + np.exp(logvar / 2) * eps_l
        g = act(z @ p["dec.0.W"] + p["dec.0.b"])
        if vae.likelihood == "bernoulli":
            prob = 1 / (1 + np.exp(-(g @ p["dec.out.W"] + p["dec.out.b"])))
            total -= np.sum(X * np.log(prob) + (1 - X) * np.log(1 - prob))
        else:
            mean = g @ p["dec.mean.W"] + p["dec.mean.b"]
            var = np.exp(g @ p["dec.logvar.W"] + p["dec.logvar.b"])
            total -= np.sum(-0.5 * np.log(2 * np.pi * var) - (X - mean) ** 2 / (2 * var))
    kl = 0.5 * np.sum(np.exp(logvar) + mu**2 - 1 - logvar)
    return (total / len(eps) + vae.beta * kl) / X.shape[0]


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_loss_value_equals_direct_negative_elbo(rng, likelihood):
    vae = VAE(6, 2, hidden=(5,), activation="softplus", likelihood=likelihood, beta=0.4,
              dtype="float64", seed=3)
    X = rng.uniform(size=(7, 6))
    eps = rng.standard_normal((3, 7, 2))
    loss, _ = vae.loss_and_grads(X, eps=eps)
    np.testing.assert_allclose(loss, _direct_negative_elbo(vae, X, eps), rtol=1e-12)


def test_two_dimensional_eps_is_one_sample(rng):
    vae = VAE(4, 2, hidden=(3,), dtype="float64", n_samples=3)
    X = rng.uniform(size=(5, 4))
    eps = rng.standard_normal((5, 2))
    loss_2d, grads_2d = vae.loss_and_grads(X, eps=eps)
    loss_3d, grads_3d = vae.loss_and_grads(X, eps=eps[None])
    assert loss_2d == loss_3d
    for name in grads_2d:
        np.testing.assert_array_equal(grads_2d[name], grads_3d[name])
    with pytest.raises(DataError, match=r"eps has shape \(5, 3\)"):
        vae.loss_and_grads(X, eps=np.zeros((5, 3)))


def test_float32_model_returns_float32_grads_in_param_order(rng):
    vae = VAE(8, 3, hidden=(6, 5))
    loss, grads = vae.loss_and_grads(rng.uniform(size=(4, 8)))
    assert isinstance(loss, float) and math.isfinite(loss)
    assert list(grads) == list(vae.params)
    assert all(grads[name].dtype == np.float32 and grads[name].shape == vae.params[name].shape
               for name in grads)


# ---- structure and initialisation ---------------------------------------------------------


def test_parameter_names_for_each_likelihood():
    enc = ["enc.0.W", "enc.0.b", "enc.1.W", "enc.1.b", "enc.mu.W", "enc.mu.b",
           "enc.logvar.W", "enc.logvar.b"]
    dec = ["dec.0.W", "dec.0.b", "dec.1.W", "dec.1.b"]
    bern = VAE(10, 2, hidden=(7, 5))
    assert list(bern.params) == enc + dec + ["dec.out.W", "dec.out.b"]
    assert bern.params["dec.0.W"].shape == (2, 5) and bern.params["dec.1.W"].shape == (5, 7)
    gauss = VAE(10, 2, hidden=(7, 5), likelihood="gaussian")
    assert list(gauss.params) == enc + dec + ["dec.mean.W", "dec.mean.b", "dec.logvar.W",
                                              "dec.logvar.b"]
    fixed = VAE(10, 2, hidden=(7, 5), likelihood="gaussian", fixed_variance=0.1)
    assert list(fixed.params) == enc + dec + ["dec.mean.W", "dec.mean.b"]


def test_initialisation_is_seeded_glorot_uniform():
    a, b, c = VAE(20, 4, hidden=(10,), seed=5), VAE(20, 4, hidden=(10,), seed=5), VAE(
        20, 4, hidden=(10,), seed=6)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert not np.array_equal(a.params["enc.0.W"], c.params["enc.0.W"])
    init_rng = np.random.default_rng(5)
    bound = math.sqrt(6 / 30)
    expected = init_rng.uniform(-bound, bound, size=(20, 10)).astype(np.float32)
    np.testing.assert_array_equal(a.params["enc.0.W"], expected)
    assert not a.params["enc.0.b"].any()


# ---- evaluation -------------------------------------------------------------------------


@pytest.fixture
def small_vae():
    return VAE(6, 2, hidden=(8,), likelihood="bernoulli", dtype="float64", seed=1, n_samples=2)


def test_elbo_is_repeatable_and_score_is_its_mean(rng, small_vae):
    X = rng.uniform(size=(9, 6))
    first, second = small_vae.elbo(X), small_vae.elbo(X)
    assert first.shape == (9,) and first.dtype == np.float64
    np.testing.assert_array_equal(first, second)
    assert small_vae.score(X) == float(first.mean())
    assert np.all(first < 0)  # log p(x) of continuous-valued Bernoulli targets is negative


def test_elbo_equals_negative_loss_with_beta_one(rng):
    vae = VAE(5, 2, hidden=(4,), dtype="float64", seed=2)
    X = rng.uniform(size=(6, 5))
    eps = np.random.default_rng(np.random.SeedSequence([2, 2]).generate_state(1)[0])
    eps = eps.standard_normal((1, 6, 2))
    loss, _ = vae.loss_and_grads(X, eps=eps)
    np.testing.assert_allclose(vae.score(X), -loss, rtol=1e-12)


def _exact_log_marginal_linear_gaussian(vae, X):
    """log p(x) of a decoder x = W z + b + noise(v): x ~ N(b, W^T W + v I)."""
    W, b = vae.params["dec.mean.W"], vae.params["dec.mean.b"]
    cov = W.T @ W + vae.fixed_variance * np.eye(W.shape[1])
    _, logdet = np.linalg.slogdet(cov)
    residual = X - b
    quad = np.einsum("ij,ij->i", residual @ np.linalg.inv(cov), residual)
    return -0.5 * (quad + logdet + X.shape[1] * np.log(2 * np.pi))


def _linear_gaussian_vae(n_samples=1):
    # No hidden layers and a fixed variance: the decoder is linear-Gaussian, so log p(x)
    # has a closed form to compare the importance-sampled estimate with.
    return VAE(3, 2, hidden=(), likelihood="gaussian", fixed_variance=0.5,
               n_samples=n_samples, dtype="float64", seed=4)


def test_log_likelihood_lies_above_elbo_and_grows_with_samples(rng):
    # n_samples=2000 makes elbo() a 2000-draw average, close to the expected ELBO, which
    # lies below log p(x) by KL(q || posterior); a single-draw ELBO need not.
    vae = _linear_gaussian_vae(n_samples=2000)
    X = rng.standard_normal((5, 3))
    exact = _exact_log_marginal_linear_gaussian(vae, X)
    elbo = vae.elbo(X)
    few = vae.log_likelihood(X, n_importance=5)
    many = vae.log_likelihood(X, n_importance=2000, batch_size=2)
    assert np.all(elbo < exact)
    assert elbo.mean() < few.mean() < many.mean()
    np.testing.assert_array_equal(many, vae.log_likelihood(X, n_importance=2000, batch_size=2))


def test_log_likelihood_is_exact_when_q_is_the_true_posterior(rng):
    # With orthogonal decoder rows the true posterior N(C W (x - b) / v, C),
    # C = (I + W W^T / v)^-1, is diagonal, so the encoder can represent it exactly. Then
    # every importance weight p(x, z) / q(z | x) equals p(x): the estimate is exact for
    # any number of samples, up to rounding.
    vae = _linear_gaussian_vae()
    W = np.array([[0.6, -0.8, 0.0], [0.0, 0.0, 1.7]])
    b, v = np.array([0.3, -0.2, 0.5]), vae.fixed_variance
    vae.params["dec.mean.W"][...] = W
    vae.params["dec.mean.b"][...] = b
    posterior_cov = np.linalg.inv(np.eye(2) + W @ W.T / v)
    vae.params["enc.mu.W"][...] = W.T @ posterior_cov / v
    vae.params["enc.mu.b"][...] = -b @ W.T @ posterior_cov / v
    vae.params["enc.logvar.W"][...] = 0.0
    vae.params["enc.logvar.b"][...] = np.log(np.diag(posterior_cov))
    X = rng.standard_normal((5, 3))
    exact = _exact_log_marginal_linear_gaussian(vae, X)
    np.testing.assert_allclose(vae.log_likelihood(X, n_importance=7, batch_size=2), exact,
                               rtol=1e-12)


def test_encode_decode_reconstruct_sample_shapes(rng, small_vae):
    X = rng.uniform(size=(4, 6))
    mu, logvar = small_vae.encode(X)
    assert mu.shape == logvar.shape == (4, 2)
    images = small_vae.decode(mu)
    assert images.shape == (4, 6) and np.all((images > 0) & (images < 1))
    np.testing.assert_array_equal(small_vae.reconstruct(X), images)
    drawn = small_vae.sample(3, seed=7)
    assert drawn.shape == (3, 6)
    np.testing.assert_array_equal(drawn, small_vae.sample(3, seed=7))
    gauss = VAE(6, 2, hidden=(5,), likelihood="gaussian", dtype="float64")
    Z = rng.standard_normal((2, 2))
    p = gauss.params
    h = np.maximum(Z @ p["dec.0.W"] + p["dec.0.b"], 0)
    np.testing.assert_allclose(gauss.decode(Z), h @ p["dec.mean.W"] + p["dec.mean.b"],
                               rtol=1e-13)


# ---- validation -------------------------------------------------------------------------


def test_nan_and_inf_are_reported_with_count_and_location():
    vae = VAE(5, 2, hidden=(3,))
    X = np.full((20, 5), 0.5)
    X[17, 4] = np.nan
    X[18, 0] = np.nan
    X[19, 1] = np.nan
    with pytest.raises(DataError, match=r"X has 3 NaN values \(first at row 17, column 4\); "
                                        r"remove or impute them"):
        vae.loss_and_grads(X)
    X = np.full((4, 5), 0.5)
    X[2, 3] = np.inf
    with pytest.raises(DataError, match=r"1 infinite values \(first at row 2, column 3\)"):
        vae.elbo(X)


def test_shape_dtype_and_range_errors():
    vae = VAE(5, 2, hidden=(3,))
    with pytest.raises(DataError, match=r"2-D .* got shape \(5,\).*reshape\(1, -1\)"):
        vae.encode(np.zeros(5))
    with pytest.raises(DataError, match="has 4 columns but the model expects 5"):
        vae.encode(np.zeros((2, 4)))
    with pytest.raises(DataError, match="not numeric"):
        vae.encode(np.array([["a"] * 5]))
    with pytest.raises(DataError, match="no rows"):
        vae.encode(np.zeros((0, 5)))
    X = np.zeros((3, 5))
    X[1, 2] = 255.0
    with pytest.raises(DataError, match=r"1 values outside \[0, 1\] \(first at row 1, column 2"
                                        r": 255.0\).*rescale"):
        vae.fit(X, epochs=1, progress=False)
    gauss = VAE(5, 2, hidden=(3,), likelihood="gaussian")
    assert gauss.encode(X)[0].shape == (3, 2)  # any real values are fine for a Gaussian
    with pytest.raises(DataError, match="Z has 3 columns"):
        vae.decode(np.zeros((1, 3)))


@pytest.mark.parametrize("kwargs, message", [
    ({"latent_dim": 0}, "latent_dim=0 must be a positive integer"),
    ({"hidden": (4, -1)}, "hidden="),
    ({"activation": "gelu"}, "activation='gelu' is not one of"),
    ({"likelihood": "poisson"}, "likelihood='poisson' is not one of"),
    ({"n_samples": 1.5}, "n_samples=1.5"),
    ({"beta": -1.0}, "beta=-1.0"),
    ({"fixed_variance": 0.1}, "only used by the Gaussian"),
    ({"likelihood": "gaussian", "fixed_variance": 0.0}, "fixed_variance=0.0"),
    ({"dtype": "float16"}, "not supported"),
    ({"seed": -3}, "seed=-3"),
    ({"device": "tpu"}, "not one of"),
])
def test_bad_constructor_arguments(kwargs, message):
    args = {"input_dim": 4, "latent_dim": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        VAE(**args)


# ---- persistence ------------------------------------------------------------------------


def test_save_and_load_roundtrip_and_across_devices(tmp_path, rng):
    vae = VAE(6, 2, hidden=(5,), likelihood="gaussian", dtype="float64", seed=3)
    for value in vae.params.values():
        value += 0.01 * rng.standard_normal(value.shape)
    path = tmp_path / "model.npz"
    vae.save(path)
    X = rng.standard_normal((4, 6))
    for device in (None, "cuda-sim"):
        loaded = VAE.load(path, device=device)
        assert loaded.get_config()["likelihood"] == "gaussian"
        assert loaded.device == (device or "cpu")
        for name in vae.params:
            np.testing.assert_array_equal(loaded.params[name], vae.params[name])
        np.testing.assert_array_equal(loaded.encode(X)[0], vae.encode(X)[0])


# ---- training ---------------------------------------------------------------------------


def _toy_data(n=60, d=12, seed=0):
    gen = np.random.default_rng(seed)
    prototypes = gen.uniform(size=(3, d)) > 0.5
    return np.clip(prototypes[gen.integers(0, 3, n)] + 0.1 * gen.standard_normal((n, d)), 0, 1)


def test_fit_reduces_the_loss_and_reports_elbo():
    X = _toy_data()
    vae = VAE(12, 2, hidden=(16,), seed=0)
    assert vae.fit(X[:48], epochs=6, batch_size=16, lr=1e-2, validation_data=X[48:],
                   progress=False) is vae
    history = vae.history_
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["train_elbo"] == [-loss for loss in history["train_loss"]]
    assert history["val_elbo"][-1] == pytest.approx(vae.score(X[48:]), rel=1e-12)


def test_same_seed_same_device_gives_bit_identical_parameters():
    X = _toy_data()
    runs = []
    for _ in range(2):
        vae = VAE(12, 3, hidden=(10,), n_samples=2, seed=11)
        vae.fit(X, epochs=2, batch_size=25, progress=False)
        runs.append(vae.get_state()[0])
    for name in runs[0]:
        np.testing.assert_array_equal(runs[0][name], runs[1][name])


def test_resumed_training_is_bit_identical(tmp_path):
    X = _toy_data()
    path = tmp_path / "ckpt.npz"
    straight = VAE(12, 2, hidden=(8,), seed=2)
    straight.fit(X, epochs=3, batch_size=20, progress=False)
    resumed = VAE(12, 2, hidden=(8,), seed=2)
    resumed.fit(X, epochs=2, batch_size=20, progress=False, checkpoint=path)
    again = VAE(12, 2, hidden=(8,), seed=2)
    again.fit(X, epochs=3, batch_size=20, progress=False, checkpoint=path, resume=True)
    for name in straight.params:
        np.testing.assert_array_equal(again.params[name], straight.params[name])
    from_checkpoint = VAE.load(path)
    np.testing.assert_array_equal(from_checkpoint.params["dec.out.W"], again.params["dec.out.W"])


def test_cuda_sim_training_agrees_with_cpu():
    # Same seed: same initial parameters (host draw), same noise (NumPy generator on both),
    # same batches; only the kernels differ (reparameterisation, Bernoulli, bias/ReLU and
    # Adam: Numba cpu vs simulated cuda), and they agree to float32 rounding. After 4 Adam steps the parameters agree to 1e-5.
    X = _toy_data(n=24, d=6)
    params = {}
    for device in ("cpu", "cuda-sim"):
        vae = VAE(6, 2, hidden=(4,), seed=9, device=device)
        vae.fit(X, epochs=2, batch_size=12, progress=False)
        params[device] = vae.get_state()[0]
    for name in params["cpu"]:
        np.testing.assert_allclose(params["cuda-sim"][name], params["cpu"][name], rtol=1e-5,
                                   atol=1e-6, err_msg=name)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_divergence_stops_training_with_a_clear_error():
    X = _toy_data()
    vae = VAE(12, 2, hidden=(8,), likelihood="gaussian", seed=0)
    with pytest.raises(TrainingDivergedError, match="epoch"):
        vae.fit(X * 1e30, epochs=3, batch_size=20, lr=1e3, progress=False)


# ---- reuse by another model -----------------------------------------------------------------


# ---- scikit-learn conventions, pickling -------------------------------------------------


def test_vae_is_a_scikit_learn_transformer():
    from sklearn.base import clone

    X = _toy_data()
    vae = VAE(latent_dim=2, hidden=(8,), seed=3)
    assert not hasattr(vae, "network")  # no input_dim: built by fit from the data
    assert vae.fit(X, epochs=2, batch_size=16, progress=False) is vae
    assert vae.n_features_in_ == X.shape[1] and len(vae.history_["epoch"]) == 2
    codes = vae.transform(X)
    np.testing.assert_array_equal(codes, vae.encode(X)[0])
    np.testing.assert_array_equal(vae.inverse_transform(codes), vae.decode(codes))
    again = clone(vae)
    assert again.get_params() == vae.get_params() and not hasattr(again, "network")
    np.testing.assert_array_equal(again.fit_transform(X, epochs=2, batch_size=16,
                                                      progress=False), codes)


@pytest.mark.parametrize("device", ["cpu", "cuda-sim"])
def test_vae_pickles_and_deep_copies_to_an_equal_model(device):
    import copy
    import pickle

    X = _toy_data()
    vae = VAE(X.shape[1], 2, hidden=(6,), seed=1, device=device).fit(X, epochs=1, batch_size=16,
                                                                    progress=False)
    for other in (pickle.loads(pickle.dumps(vae)), copy.deepcopy(vae)):
        assert other.get_params() == vae.get_params()
        np.testing.assert_array_equal(other.transform(X), vae.transform(X))
        np.testing.assert_array_equal(other.elbo(X), vae.elbo(X))
        other.params["enc.0.W"][...] += 1.0  # its own arrays
        assert not np.array_equal(other.params["enc.0.W"], vae.params["enc.0.W"])


def test_vae_then_gp_in_a_pipeline_on_the_digits():
    from sklearn.pipeline import make_pipeline

    from minivae.datasets import load_digits
    from minivae.gp import GPRegressor

    # The target, a digit's amount of ink, is a smooth function of what a 2-D VAE code keeps
    # (measured: held-out R^2 0.30 after 30 epochs; 10 nearest neighbours in the codes of a
    # 60-epoch VAE 0.31).
    X = load_digits()[:300]
    y = X.mean(axis=1)
    pipe = make_pipeline(VAE(latent_dim=2, hidden=(32,), seed=0), GPRegressor(normalize_y=True))
    pipe.fit(X[:200], y[:200], vae__epochs=30, vae__progress=False)
    predicted = pipe.predict(X[200:])
    assert predicted.shape == (100,) and np.all(np.isfinite(predicted))
    assert pipe.score(X[200:], y[200:]) > 0.2
    codes = pipe[0].transform(X[200:])
    np.testing.assert_array_equal(predicted, pipe[1].predict(codes))


def test_epochs_must_be_an_integer():
    with pytest.raises(ValueError, match="epochs=True must be a non-negative integer"):
        VAE(12, 2, hidden=(4,)).fit(_toy_data(), epochs=True, progress=False)


# ---- the convolutional decoder ----------------------------------------------------------


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_conv_decoder_gradients_match_finite_differences(likelihood, rng):
    vae = VAE(4 * 8, 3, hidden=(5,), likelihood=likelihood, n_samples=2, beta=0.7,
              dtype="float64", seed=1, decoder="conv", image_shape=(4, 8))
    assert "dec.conv1.W" in vae.params
    X = rng.uniform(0.0, 1.0, size=(3, 32))
    noise = rng.standard_normal((2, 3, 3))
    for value in vae.params.values():
        value += 0.05 * rng.standard_normal(value.shape)
    _, grads = vae.loss_and_grads(X, eps=noise)
    rows = check_gradients(lambda: vae.loss_and_grads(X, eps=noise)[0], vae.params, grads,
                           max_entries_per_param=12, seed=0)
    worst = max(rows, key=lambda row: row["rel_error"])
    assert worst["rel_error"] < TOL, f"{worst['name']}: relative error {worst['rel_error']:.2e}"
    assert all(row["max_abs_analytic"] > 0 for row in rows)


def test_conv_decoder_saves_clones_and_refuses_a_missing_image_shape(tmp_path, rng):
    vae = VAE(8 * 4, 2, hidden=(5,), dtype="float64", seed=3, decoder="conv",
              image_shape=(8, 4))
    for value in vae.params.values():
        value += 0.01 * rng.standard_normal(value.shape)
    vae.save(tmp_path / "conv.npz")
    loaded = VAE.load(tmp_path / "conv.npz")
    assert (loaded.decoder, tuple(loaded.image_shape)) == ("conv", (8, 4))
    Z = rng.standard_normal((3, 2))
    np.testing.assert_array_equal(loaded.decode(Z), vae.decode(Z))
    unpickled = pickle.loads(pickle.dumps(vae))
    np.testing.assert_array_equal(unpickled.decode(Z), vae.decode(Z))
    assert clone(vae).get_params()["decoder"] == "conv"
    with pytest.raises(ValueError, match="needs image_shape"):
        VAE(32, 2, decoder="conv")
    with pytest.raises(ValueError, match="decoder='cnn' is not one of"):
        VAE(32, 2, decoder="cnn")
