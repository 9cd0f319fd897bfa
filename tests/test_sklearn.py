"""GPRegressor in the scikit-learn ecosystem: the estimator checks, Pipeline, GridSearchCV,
cross_val_score, clone, and pickle / deepcopy / joblib on "cpu" and "cuda-sim"."""

import copy
import pickle

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from minivae.errors import DataError
from minivae.gp import GPRegressor


@parametrize_with_checks([GPRegressor()])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def make_data(rng, n=30, d=2):
    X = rng.uniform(-2, 2, size=(n, d))
    return X, np.sin(X[:, 0]) + 0.5 * X[:, 1] + 0.05 * rng.standard_normal(n)


def test_constructor_stores_arguments_and_clone_keeps_them():
    model = GPRegressor(lengthscale=[1.0, 2.0], ard=True, noise=-1.0, seed=np.int64(3))
    assert model.get_params()["lengthscale"] == [1.0, 2.0]
    assert model.get_params()["noise"] == -1.0  # checked by fit, not by the constructor
    twin = clone(model.set_params(noise=0.1))
    assert twin.get_params() == model.get_params()


def test_pipeline_grid_search_and_cross_val_score(rng):
    X, y = make_data(rng)
    pipeline = make_pipeline(StandardScaler(), GPRegressor())
    assert pipeline.fit(X, y).score(X, y) > 0.9
    search = GridSearchCV(make_pipeline(StandardScaler(), GPRegressor()),
                          {"gpregressor__ard": [False, True],
                           "gpregressor__noise": [1e-2, 1e-1]}, cv=3).fit(X, y)
    assert search.best_params_["gpregressor__ard"] in (False, True)
    assert search.best_score_ > 0.8
    scores = cross_val_score(GPRegressor(ard=True), X, y, cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.8)


def test_one_point_of_two_features_is_reshaped_to_one_row(rng):
    X, y = make_data(rng)
    model = GPRegressor(optimize=False).fit(X, y)
    with pytest.raises(DataError, match=r"Reshape your data: X.reshape\(1, -1\) for one point "
                                        r"of 2 features"):
        model.predict(X[0])
    with pytest.raises(DataError, match="requires y to be passed, but the target y is None"):
        GPRegressor().fit(X, None)
    from scipy import sparse

    with pytest.raises(DataError, match=r"sparse input is not supported.*X.toarray\(\)"):
        GPRegressor().fit(sparse.csr_matrix(X), y)


def assert_same_predictions(model, twin, X):
    for mine, theirs in zip(model.predict(X, return_std=True), twin.predict(X, return_std=True)):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("device", ["cpu", "cuda-sim"])
def test_pickle_deepcopy_and_joblib_give_an_equal_model(rng, tmp_path, device):
    X, y = make_data(rng, n=8)
    unfitted = GPRegressor(ard=True, device=device)
    for twin in (pickle.loads(pickle.dumps(unfitted)), copy.deepcopy(unfitted)):
        assert twin.get_params() == unfitted.get_params()
    model = GPRegressor(1.0, 1.0, 0.05, ard=True, optimize=False, device=device).fit(X, y)
    joblib.dump(model, tmp_path / "gp.joblib")
    for twin in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model),
                 joblib.load(tmp_path / "gp.joblib")):
        np.testing.assert_array_equal(twin.theta_, model.theta_)
        assert twin._backend.name == device
        assert_same_predictions(model, twin, X[:3] + 0.1)


def fit_seed(X, y, seed):
    return GPRegressor(n_restarts=1, seed=seed).fit(X, y).theta_


def test_joblib_parallel_over_seeds(rng):
    X, y = make_data(rng, n=12)
    thetas = joblib.Parallel(n_jobs=2)(joblib.delayed(fit_seed)(X, y, seed) for seed in (0, 1))
    for seed, theta in zip((0, 1), thetas):
        np.testing.assert_array_equal(theta, fit_seed(X, y, seed))


def _vae_codes(X, seed):
    from minivae import VAE

    return VAE(latent_dim=2, hidden=(8,), seed=seed).fit(X, epochs=2, progress=False).transform(X)


def _var_images(X, Y, seed):
    from minivae import VARegressor

    model = VARegressor(latent_dim=2, hidden=(8,), epochs=(1, 1, 1), seed=seed)
    return model.fit(X, Y, progress=False).predict(X)


def test_vae_and_varegressor_under_joblib_parallel_match_serial_fits(rng):
    X = rng.random((24, 16))
    t = np.linspace(0, 1, 24)[:, None]
    for fit, args in ((_vae_codes, (X,)), (_var_images, (t, X.reshape(24, 4, 4)))):
        parallel = joblib.Parallel(n_jobs=2)(joblib.delayed(fit)(*args, seed) for seed in (0, 1))
        for seed, result in zip((0, 1), parallel):
            np.testing.assert_array_equal(result, fit(*args, seed))
        assert not np.array_equal(parallel[0], parallel[1])
