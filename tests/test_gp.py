"""GPRegressor and the Cholesky machinery: agreement with scikit-learn, the analytic LML
gradient against finite differences, jitter, input errors, persistence, CSV fitting and
the cuda-sim device."""

import warnings

import numpy as np
import pytest
from sklearn import gaussian_process as sk_gp
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.gaussian_process import kernels as sk_kernels

from minivae import backend as backend_module
from minivae import gp as gp_module
from minivae.errors import CheckpointError, DataError, NotPositiveDefiniteError
from minivae.backend import cholesky_with_jitter
from minivae.errors import JitterWarning
from minivae.gp import GPRegressor


N_TRAIN, N_TEST, N_FEATURES = 25, 11, 3
#: Agreement with scikit-learn (float64, the same formulas in other orders and with other
#: BLAS/LAPACK calls): measured 3e-16 (LML) to 9e-14 (predictive mean) at the conditioning
#: of these problems (condition numbers up to ~1e3, noise 0.05); 1e-11 leaves 100x.
SKLEARN_RTOL = 1e-11


def make_data(rng, n_outputs, n=N_TRAIN, d=N_FEATURES):
    X = rng.uniform(-2, 2, size=(n, d))
    signal = np.sin(X @ rng.normal(size=(d, n_outputs)))
    Y = signal + 0.1 * rng.normal(size=signal.shape)
    return X, (Y[:, 0] if n_outputs == 1 else Y)


def hyperparameters(rng, ard, d=N_FEATURES):
    lengthscale = rng.uniform(0.7, 2.0, size=d) if ard else 1.3
    return lengthscale, 1.7, 0.05


def sklearn_model(lengthscale, variance, noise, **kwargs):
    kernel = (sk_kernels.ConstantKernel(variance) * sk_kernels.RBF(lengthscale)
              + sk_kernels.WhiteKernel(noise))
    return sk_gp.GaussianProcessRegressor(kernel, alpha=0.0, **kwargs)


def to_sklearn_theta_order(theta):
    """Ours: (log l.., log s, log noise); scikit-learn's: (log s, log l.., log noise)."""
    return np.concatenate([[theta[-2]], theta[:-2], [theta[-1]]])


def from_sklearn_theta_order(theta):
    return np.concatenate([theta[1:-1], [theta[0]], [theta[-1]]])


def relative_error(mine, theirs):
    scale = max(np.max(np.abs(mine)), np.max(np.abs(theirs)))
    return np.max(np.abs(mine - theirs)) / scale


# ---- agreement with scikit-learn at fixed hyperparameters -------------------------------


@pytest.mark.parametrize("ard", [False, True], ids=["iso", "ard"])
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_matches_scikit_learn_at_fixed_hyperparameters(rng, ard, n_outputs):
    X, y = make_data(rng, n_outputs)
    X_test = rng.uniform(-2.5, 2.5, size=(N_TEST, N_FEATURES))
    lengthscale, variance, noise = hyperparameters(rng, ard)
    mine = GPRegressor(lengthscale, variance, noise, ard=ard, optimize=False).fit(X, y)
    theirs = sklearn_model(lengthscale, variance, noise, optimizer=None).fit(X, y)

    lml, dtheta = mine.log_marginal_likelihood(mine.theta_, eval_gradient=True)
    their_lml, their_grad = theirs.log_marginal_likelihood(
        to_sklearn_theta_order(mine.theta_), eval_gradient=True
    )
    np.testing.assert_allclose(lml, their_lml, rtol=SKLEARN_RTOL)
    np.testing.assert_allclose(mine.log_marginal_likelihood(), their_lml, rtol=SKLEARN_RTOL)
    np.testing.assert_allclose(dtheta, from_sklearn_theta_order(their_grad), rtol=SKLEARN_RTOL)

    mean, std = mine.predict(X_test, return_std=True, include_noise=True)
    their_mean, their_std = theirs.predict(X_test, return_std=True)
    np.testing.assert_allclose(mean, their_mean, rtol=SKLEARN_RTOL)
    # scikit-learn repeats the shared std for each output; ours is shared: (m,).
    assert std.shape == (N_TEST,)
    their_std = their_std if n_outputs == 1 else their_std[:, 0]
    np.testing.assert_allclose(std, their_std, rtol=SKLEARN_RTOL)

    _, cov = mine.predict(X_test, return_cov=True, include_noise=True)
    _, their_cov = theirs.predict(X_test, return_cov=True)
    their_cov = their_cov if n_outputs == 1 else their_cov[:, :, 0]
    # Off-diagonal covariances between distant test points are ~0 (tens of lengthscales
    # apart the kernel is exp(-50) and the subtraction cancels): atol at SKLEARN_RTOL of the
    # scale.
    np.testing.assert_allclose(cov, their_cov, rtol=SKLEARN_RTOL,
                               atol=SKLEARN_RTOL * np.max(np.abs(their_cov)))


def test_normalize_y_matches_scikit_learn_and_scales_std_per_output(rng):
    X, Y = make_data(rng, 2)
    Y = Y * np.array([3.0, 0.2]) + np.array([10.0, -1.0])
    X_test = rng.uniform(-2, 2, size=(N_TEST, N_FEATURES))
    lengthscale, variance, noise = hyperparameters(rng, ard=True)
    mine = GPRegressor(lengthscale, variance, noise, ard=True, optimize=False,
                       normalize_y=True).fit(X, Y)
    theirs = sklearn_model(lengthscale, variance, noise, optimizer=None, normalize_y=True).fit(X, Y)
    mean, std = mine.predict(X_test, return_std=True, include_noise=True)
    their_mean, their_std = theirs.predict(X_test, return_std=True)
    assert std.shape == (N_TEST, 2)
    np.testing.assert_allclose(mean, their_mean, rtol=SKLEARN_RTOL)
    np.testing.assert_allclose(std, their_std, rtol=SKLEARN_RTOL)
    np.testing.assert_allclose(mine.log_marginal_likelihood(), theirs.log_marginal_likelihood_value_,
                               rtol=SKLEARN_RTOL)


def test_latent_std_excludes_noise(rng):
    X, y = make_data(rng, 1)
    model = GPRegressor(1.0, 1.0, 0.3, optimize=False).fit(X, y)
    _, std_f = model.predict(X[:5], return_std=True)
    _, std_y = model.predict(X[:5], return_std=True, include_noise=True)
    np.testing.assert_allclose(std_y**2, std_f**2 + 0.3, rtol=1e-12)


# ---- the analytic gradient ----------------------------------------------------------------


@pytest.mark.parametrize("ard", [False, True], ids=["iso", "ard"])
@pytest.mark.parametrize("n_outputs", [1, 2])
def test_lml_gradient_matches_finite_differences(rng, ard, n_outputs):
    X, y = make_data(rng, n_outputs, n=15)
    model = GPRegressor(*hyperparameters(rng, ard), ard=ard, optimize=False).fit(X, y)
    theta = model.theta_ + rng.uniform(-0.3, 0.3, size=model.theta_.size)
    _, dtheta = model.log_marginal_likelihood(theta, eval_gradient=True)
    step = 1e-5
    numeric = np.empty_like(theta)
    for k in range(theta.size):
        up, down = theta.copy(), theta.copy()
        up[k] += step
        down[k] -= step
        numeric[k] = (model.log_marginal_likelihood(up) - model.log_marginal_likelihood(down)) / (2 * step)
    err = relative_error(dtheta, numeric)
    assert err < 1e-6, f"analytic {dtheta} vs finite differences {numeric} (rel err {err:.2e})"


def test_lml_gradient_matches_scikit_learn_on_the_large_matrix_path(rng):
    # From _POTRI_MIN_N rows on, K^-1 is formed in place by potri, and W is mirrored in
    # several row blocks; 300 rows cover both (and a last, partial block).
    n = backend_module._POTRI_MIN_N + 44
    X, y = make_data(rng, 2, n=n, d=2)
    lengthscale, variance, noise = hyperparameters(rng, ard=True, d=2)
    mine = GPRegressor(lengthscale, variance, noise, ard=True, optimize=False).fit(X, y)
    theirs = sklearn_model(lengthscale, variance, noise, optimizer=None).fit(X, y)
    lml, dtheta = mine.log_marginal_likelihood(mine.theta_, eval_gradient=True)
    their_lml, their_grad = theirs.log_marginal_likelihood(
        to_sklearn_theta_order(mine.theta_), eval_gradient=True
    )
    np.testing.assert_allclose(lml, their_lml, rtol=SKLEARN_RTOL)
    np.testing.assert_allclose(dtheta, from_sklearn_theta_order(their_grad), rtol=SKLEARN_RTOL)


def test_module_lml_equals_model_lml(rng):
    X, y = make_data(rng, 2)
    model = GPRegressor(0.9, 1.1, 0.02, optimize=False).fit(X, y)
    value = gp_module.log_marginal_likelihood(model.X_train_, model.y_train_, model.theta_)
    assert value == model.log_marginal_likelihood()


# ---- fitting ------------------------------------------------------------------------------


@pytest.mark.parametrize("ard", [False, True], ids=["iso", "ard"])
def test_fit_reaches_scikit_learn_lml_from_the_same_start(rng, ard):
    X, y = make_data(rng, 1, n=30)
    start = (np.ones(N_FEATURES) if ard else 1.0), 1.0, 0.1
    mine = GPRegressor(*start, ard=ard).fit(X, y)
    theirs = sklearn_model(*start).fit(X, y)
    their_lml = theirs.log_marginal_likelihood_value_
    assert mine.log_marginal_likelihood_value_ >= their_lml - 1e-6 * abs(their_lml)
    assert mine.log_marginal_likelihood_value_ > GPRegressor(*start, ard=ard, optimize=False).fit(
        X, y).log_marginal_likelihood_value_


def test_restarts_are_seeded_and_never_worse(rng):
    X, y = make_data(rng, 1, n=12)
    single = GPRegressor(lengthscale=50.0, noise=1.0).fit(X, y)
    first = GPRegressor(lengthscale=50.0, noise=1.0, n_restarts=2, seed=7).fit(X, y)
    second = GPRegressor(lengthscale=50.0, noise=1.0, n_restarts=2, seed=7).fit(X, y)
    assert first.log_marginal_likelihood_value_ >= single.log_marginal_likelihood_value_
    np.testing.assert_array_equal(first.theta_, second.theta_)


def test_fitted_hyperparameters_are_consistent(rng):
    X, y = make_data(rng, 1)
    model = GPRegressor(ard=True).fit(X, y)
    np.testing.assert_array_equal(model.lengthscale_, np.exp(model.theta_[:-2]))
    assert model.variance_ == np.exp(model.theta_[-2]) and model.noise_ == np.exp(model.theta_[-1])
    bounds = np.log(gp_module.DEFAULT_BOUNDS)
    assert np.all((model.theta_ >= bounds[0]) & (model.theta_ <= bounds[1]))


def test_optimisation_failure_propagates_with_theta(rng, monkeypatch):
    X, y = make_data(rng, 1)
    real = gp_module.cholesky_with_jitter
    calls = {"count": 0}

    def fails_on_third_call(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 3:
            raise NotPositiveDefiniteError("simulated failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(gp_module, "cholesky_with_jitter", fails_on_third_call)
    with pytest.raises(NotPositiveDefiniteError, match=r"at theta = \[.*simulated failure"):
        GPRegressor().fit(X, y)


# ---- the Cholesky factorisation with jitter ---------------------------------------------


def test_cholesky_without_jitter_leaves_input_and_warns_nothing(rng):
    B = rng.normal(size=(6, 6))
    A = B @ B.T + 6 * np.eye(6)
    original = A.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L, jitter = cholesky_with_jitter(A)
    assert jitter == 0.0
    np.testing.assert_array_equal(A, original)
    np.testing.assert_array_equal(L, np.tril(L))
    np.testing.assert_allclose(L @ L.T, A, rtol=1e-13)


@pytest.mark.parametrize("overwrite_a", [False, True])
@pytest.mark.parametrize("n", [8, 300])  # 300: restored in two row blocks
def test_cholesky_of_singular_matrix_adds_jitter_and_warns(rng, overwrite_a, n):
    B = rng.normal(size=(n, 3))
    A = B @ B.T  # rank 3: positive semi-definite, singular
    original = A.copy()
    with pytest.warns(JitterWarning, match="after adding jitter"):
        L, jitter = cholesky_with_jitter(A, overwrite_a=overwrite_a)
    assert jitter > 0
    mean_diag = np.mean(np.diag(original))
    assert any(np.isclose(jitter, 10.0**k * 1e-8 * mean_diag, rtol=1e-12) for k in range(5))
    np.testing.assert_array_equal(L, np.tril(L))
    # L L^T reproduces A + jitter I: the restored matrix, not the half-overwritten one.
    np.testing.assert_allclose(L @ L.T, original + jitter * np.eye(n), rtol=1e-10,
                               atol=1e-12 * mean_diag)  # off-diagonal entries of A can be ~0


def test_cholesky_of_indefinite_matrix_raises_after_jitter():
    A = np.diag([1.0, -1.0, 2.0])
    with pytest.raises(NotPositiveDefiniteError, match="not positive definite.*raise the noise"):
        cholesky_with_jitter(A)


def test_cholesky_of_non_finite_matrix_raises():
    with pytest.raises(NotPositiveDefiniteError, match="non-finite"):
        cholesky_with_jitter(np.array([[np.nan, 0.0], [0.0, 1.0]]))


def test_duplicate_inputs_with_zero_noise_fit_through_jitter(rng):
    X = np.repeat(rng.uniform(size=(5, 2)), 2, axis=0)
    y = rng.normal(size=10)
    with pytest.warns(JitterWarning, match="jitter"):
        model = GPRegressor(lengthscale=0.5, noise=0.0, optimize=False).fit(X, y)
    assert model.jitter_ > 0
    mean = model.predict(X[::2])
    # Noise-free interpolation of duplicated points lands on each pair's average.
    # Not exact: the jitter (1e-8 of the mean diagonal, times a power of 10) acts as a
    # small noise variance, so the mean misses the pair's average slightly (measured 1.2e-6
    # relative).
    np.testing.assert_allclose(mean, 0.5 * (y[::2] + y[1::2]), rtol=1e-5)


def test_optimisation_reports_jitter_once_and_the_final_factorisation_separately(monkeypatch):
    # 60 nearly noise-free points of a smooth curve in float32: most of the optimiser's
    # kernel matrices are numerically singular (measured: 28 of 42 needed jitter, each
    # once a differently worded JitterWarning before the summary), and so is the final one.
    rng = np.random.default_rng(2)
    X = np.sort(rng.uniform(0, 1, (60, 1)), axis=0)
    y = np.sin(3 * X[:, 0]) + 1e-3 * rng.standard_normal(60)
    real = gp_module.cholesky_with_jitter
    jitters = []

    def recording(*args, **kwargs):
        L, jitter = real(*args, **kwargs)
        jitters.append(jitter)
        return L, jitter

    monkeypatch.setattr(gp_module, "cholesky_with_jitter", recording)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = GPRegressor(dtype="float32", seed=0).fit(X, y)
    assert [w.category for w in caught] == [JitterWarning, JitterWarning]
    summary, final = (str(w.message) for w in caught)
    optimiser_jitters, final_jitter = jitters[:-1], jitters[-1]
    needed = [jitter for jitter in optimiser_jitters if jitter > 0]
    assert len(needed) > 1
    assert summary.startswith(
        f"hyperparameter optimisation: jitter was needed at {len(needed)} of "
        f"{len(optimiser_jitters)} evaluations of the log marginal likelihood"
    )
    assert f"largest {max(needed):.3g} (" in summary and "dtype='float64'" in summary
    assert caught[0].filename == __file__  # points at the caller's fit
    assert final.startswith("Cholesky factorisation of the 60 x 60 kernel matrix failed")
    assert model.jitter_ == final_jitter > 0


def test_optimisation_without_jitter_warns_nothing(rng):
    X, y = make_data(rng, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GPRegressor().fit(X, y)


# ---- bad input -------------------------------------------------------------------------


def test_nan_and_inf_are_data_errors(rng):
    X, y = make_data(rng, 1)
    X_nan = X.copy()
    X_nan[[4, 9], 1] = np.nan
    with pytest.raises(DataError, match=r"X has 2 NaN values \(first at row 4, column 1\)"):
        GPRegressor().fit(X_nan, y)
    y_inf = y.copy()
    y_inf[7] = np.inf
    with pytest.raises(DataError, match=r"y has 1 infinite values \(first at row 7\)"):
        GPRegressor().fit(X, y_inf)


def test_values_beyond_float32_range_are_data_errors(rng):
    X, y = make_data(rng, 1)
    X_huge = X.copy()
    X_huge[[3, 8], 2] = [1e200, -2e39]
    with pytest.raises(DataError, match=r"X has 2 values beyond float32's range \(largest "
                                         r"magnitude 1e\+200, first at row 3, column 2; "
                                         r"float32 holds up to 3.4e\+38\); rescale the data "
                                         r"or use dtype='float64'"):
        GPRegressor(dtype="float32", optimize=False).fit(X_huge, y)
    y_huge = y.copy()
    y_huge[5] = 1e39
    with pytest.raises(DataError, match=r"y has 1 values beyond float32's range"):
        GPRegressor(dtype="float32", optimize=False).fit(X, y_huge)
    # Normalised targets fit float32 whatever the scale of y.
    scaled = GPRegressor(dtype="float32", optimize=False, normalize_y=True).fit(X, y * 1e39)
    assert np.all(np.isfinite(scaled.predict(X[:3])))
    # float64 holds them: no error, and the same data in float32 range is accepted.
    GPRegressor(optimize=False).fit(X_huge, y_huge)
    model = GPRegressor(dtype="float32", optimize=False).fit(X, y)
    with pytest.raises(DataError, match=r"X has 1 values beyond float32's range"):
        model.predict(X_huge[3:4])
    with pytest.raises(DataError, match=r"X has 1 values beyond float32's range"):
        model.sample_y(X_huge[3:4])


def test_shape_problems_are_data_errors(rng):
    X, y = make_data(rng, 1)
    with pytest.raises(DataError, match="y has 24 rows but X has 25"):
        GPRegressor().fit(X, y[:-1])
    with pytest.raises(DataError, match="zero rows"):
        GPRegressor().fit(X[:0], y[:0])
    with pytest.raises(DataError, match=r"reshape\(-1, 1\)"):
        GPRegressor().fit(X[:, 0], y)
    with pytest.raises(DataError, match="X has dtype <U1, which is not numeric"):
        GPRegressor().fit(np.array([["a", "b"]] * 3), y[:3])
    model = GPRegressor(optimize=False).fit(X, y)
    with pytest.raises(DataError, match="X has 2 features, but GPRegressor is expecting 3"):
        model.predict(X[:, :2])


@pytest.mark.parametrize("kwargs,message", [
    ({"lengthscale": 0.0}, "lengthscale must be finite and positive"),
    ({"lengthscale": [1.0, -1.0], "ard": True}, "lengthscale must be finite and positive"),
    ({"lengthscale": [1.0, 2.0]}, "one per feature with ard=True"),
    ({"variance": -1.0}, "variance must be finite and positive"),
    ({"noise": -1e-3}, "noise must be finite and non-negative"),
    ({"noise": 0.0}, "noise=0 cannot be optimised"),
    ({"n_restarts": -1}, "n_restarts must be a non-negative integer"),
    ({"seed": -1}, r"seed=-1 must be a non-negative integer"),
    ({"seed": 1.5}, r"seed=1.5 must be a non-negative integer"),
    ({"seed": True}, r"seed=True must be a non-negative integer"),
    ({"seed": "3"}, r"seed='3' must be a non-negative integer"),
    ({"dtype": "int32"}, "not supported"),
    ({"device": "tpu"}, "not one of"),
])
def test_bad_arguments_are_value_errors_at_fit(rng, kwargs, message):
    X, y = make_data(rng, 1)
    model = GPRegressor(**kwargs)  # stored unchanged, as scikit-learn's estimators do
    with pytest.raises(ValueError, match=message):
        model.fit(X, y)


def test_bad_bounds_and_start_outside_bounds_are_value_errors(rng):
    X, y = make_data(rng, 1)
    with pytest.raises(ValueError, match="0 < low < high"):
        GPRegressor(bounds=(1.0, 0.5)).fit(X, y)
    with pytest.raises(ValueError, match="give one \\(low, high\\) pair or 3 pairs"):
        GPRegressor(bounds=[(1e-3, 1e3)] * 4).fit(X, y)
    with pytest.raises(ValueError, match="outside the bounds"):
        GPRegressor(lengthscale=1e-7).fit(X, y)
    with pytest.raises(ValueError, match="lengthscale has 2 values but X has 3 features"):
        GPRegressor(lengthscale=[1.0, 2.0], ard=True).fit(X, y)


def test_misuse_of_predict(rng):
    X, y = make_data(rng, 1)
    with pytest.raises(NotFittedError, match="not fitted"):
        GPRegressor().predict(X)
    model = GPRegressor(optimize=False).fit(X, y)
    with pytest.raises(ValueError, match="cannot both be True"):
        model.predict(X, return_std=True, return_cov=True)
    with pytest.raises(ValueError, match="theta has shape"):
        model.log_marginal_likelihood(np.zeros(5))


# ---- sampling, shapes -------------------------------------------------------------------


def test_sample_y_shapes_seeding_and_moments(rng):
    X, Y = make_data(rng, 2)
    model = GPRegressor(optimize=False, normalize_y=True).fit(X, Y)
    X_test = X[:4] + 0.3
    samples = model.sample_y(X_test, n_samples=4000, seed=3)
    assert samples.shape == (4, 2, 4000)
    np.testing.assert_array_equal(samples, model.sample_y(X_test, n_samples=4000, seed=3))
    mean, std = model.predict(X_test, return_std=True)
    # 4000 draws: the sample mean is within 5 standard errors of the posterior mean.
    assert np.all(np.abs(samples.mean(axis=-1) - mean) < 5 * std / np.sqrt(4000))
    single = GPRegressor(optimize=False).fit(X, Y[:, 0])
    assert single.sample_y(X_test, n_samples=3).shape == (4, 3)


def test_output_shapes_follow_y(rng):
    X, Y = make_data(rng, 3)
    model = GPRegressor(optimize=False).fit(X, Y)
    mean, std = model.predict(X[:5], return_std=True)
    assert mean.shape == (5, 3) and std.shape == (5,)
    column = GPRegressor(optimize=False).fit(X, Y[:, :1])
    assert column.predict(X[:5]).shape == (5, 1)


def test_float32_model_is_close_to_float64(rng):
    X, y = make_data(rng, 1)
    model32 = GPRegressor(1.0, 1.0, 0.1, optimize=False, dtype="float32").fit(X, y)
    model64 = GPRegressor(1.0, 1.0, 0.1, optimize=False).fit(X, y)
    assert model32.L_.dtype == np.float32
    # float32 Cholesky of a matrix with condition number ~1e2: ~1e-5 relative.
    np.testing.assert_allclose(model32.predict(X[:5]), model64.predict(X[:5]), rtol=1e-4, atol=1e-5)


# ---- persistence ----------------------------------------------------------------------


def test_save_and_load_round_trip(rng, tmp_path):
    X, Y = make_data(rng, 2)
    model = GPRegressor(ard=True, normalize_y=True, bounds=(1e-3, 1e3)).fit(X, Y)
    model.save(tmp_path / "gp.npz")
    loaded = GPRegressor.load(tmp_path / "gp.npz")
    np.testing.assert_array_equal(loaded.theta_, model.theta_)
    assert loaded.log_marginal_likelihood_value_ == model.log_marginal_likelihood_value_
    for mine, theirs in zip(loaded.predict(X[:6], return_std=True), model.predict(X[:6], return_std=True)):
        np.testing.assert_array_equal(mine, theirs)


def test_numpy_integer_seed_is_stored_as_int_and_saves(rng, tmp_path):
    X, y = make_data(rng, 1)
    model = GPRegressor(seed=np.int64(3), n_restarts=1).fit(X, y)
    assert model.seed == 3
    model.save(tmp_path / "gp.npz")
    loaded = GPRegressor.load(tmp_path / "gp.npz")
    assert type(loaded.seed) is int and loaded.seed == 3
    np.testing.assert_array_equal(GPRegressor(seed=3, n_restarts=1).fit(X, y).theta_,
                                  model.theta_)


def test_load_rejects_other_files(tmp_path):
    from minivae.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "other.npz", {"w": np.zeros(2)}, {}, kind="VAE")
    with pytest.raises(CheckpointError, match="not a GPRegressor"):
        GPRegressor.load(tmp_path / "other.npz")


# ---- the cuda kernels under the simulator ---------------------------------------------------


def test_cuda_sim_fit_agrees_with_cpu(rng):
    X, y = make_data(rng, 1, n=8, d=2)
    cpu = GPRegressor(ard=True).fit(X, y)
    # The simulator needs ~1 s per LML evaluation, so the cuda-sim fit starts where the
    # cpu fit ended: L-BFGS-B checks the gradient there (zero to within its tolerance,
    # gtol 1e-8, on both devices) and stops after at most a small step.
    sim = GPRegressor(cpu.lengthscale_, cpu.variance_, cpu.noise_, ard=True,
                      device="cuda-sim").fit(X, y)
    np.testing.assert_allclose(sim.theta_, cpu.theta_, rtol=0, atol=1e-6)  # log space
    # At one theta the kernels differ only by rounding, amplified by the Cholesky solves
    # (condition number < 1e4 here): 1e-10 relative.
    lml_cpu, grad_cpu = cpu.log_marginal_likelihood(cpu.theta_ + 0.1, eval_gradient=True)
    lml_sim, grad_sim = sim.log_marginal_likelihood(cpu.theta_ + 0.1, eval_gradient=True)
    np.testing.assert_allclose(lml_sim, lml_cpu, rtol=1e-10)
    assert relative_error(grad_sim, grad_cpu) < 1e-10
    same = GPRegressor(sim.lengthscale_, sim.variance_, sim.noise_, ard=True, optimize=False).fit(X, y)
    X_test = X[:3] + 0.25
    for mine, theirs in zip(sim.predict(X_test, return_std=True), same.predict(X_test, return_std=True)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10)


# ---- extreme scales ---------------------------------------------------------------------


def test_targets_whose_squares_overflow_are_refused_unless_normalised(rng):
    X, y = make_data(rng, 1, n=20)
    for scale in (1e300, 1e200):
        with pytest.raises(DataError, match=r"y reaches magnitude .*sum of squares overflows "
                                             r"float64; rescale y or use normalize_y=True"):
            GPRegressor().fit(X, y * scale)
    model = GPRegressor(normalize_y=True).fit(X, y * 1e200)
    unit = GPRegressor(normalize_y=True).fit(X, y)
    np.testing.assert_allclose(model.predict(X[:4]) / 1e200, unit.predict(X[:4]), rtol=1e-6)


def test_optimum_on_a_scale_bound_warns_with_the_fix(rng):
    X, y = make_data(rng, 1, n=20)
    with pytest.warns(ConvergenceWarning, match=r"variance at its upper bound 1e\+05.*"
                                                r"rescale y or use normalize_y=True"):
        GPRegressor().fit(X, y * 1e150)


def test_inputs_beyond_the_kernels_range_name_the_scale(rng):
    X, y = make_data(rng, 1, n=20)
    with pytest.raises(DataError, match=r"the data's scale is beyond what float64 holds in the "
                                        r"kernel; rescale X"):
        GPRegressor().fit(X * 1e200, y)
