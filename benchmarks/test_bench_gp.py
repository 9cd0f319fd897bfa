"""Exact GP regression: minivae.GPRegressor against scikit-learn's GaussianProcessRegressor
(ConstantKernel * RBF + WhiteKernel, alpha=0, optimizer=None), float64, same
hyperparameters, same data.

    pytest benchmarks/test_bench_gp.py --benchmark-columns=median,iqr,rounds

Rows (one benchmark group each):

- LML + gradient, ARD, n = 3000, d = 8 (targets: >= 3x faster than scikit-learn's
  ``log_marginal_likelihood(theta, eval_gradient=True)``, <= 1/5 of its peak memory);
- predict mean + std, 4000 training and 4000 test points (target: >= 2x faster than
  ``predict(X, return_std=True)``).

Peak memory is measured with tracemalloc (NumPy and SciPy register their array
allocations with it), as the peak above what was allocated before the call; it is stored
in each benchmark's ``extra_info`` and compared in ``test_lml_gradient_peak_memory``.
"""

import numpy as np
import pytest

from minivae.bench import cases, harness

pytest.importorskip("pytest_benchmark")
pytest.importorskip("sklearn.gaussian_process")

LML_N, LML_D = 3000, 8
PREDICT_N, PREDICT_M, PREDICT_D = 4000, 4000, 8
LML_GROUP = f"gp-lml-grad-ard-n{LML_N}-d{LML_D}"
PREDICT_GROUP = f"gp-predict-mean-std-{PREDICT_N}train-{PREDICT_M}test"

# the problem, the fitted pair, scikit-learn's theta order and the peak-memory probe are
# minivae.bench's, so this module and `minivae bench` measure the same thing
make_problem = cases._gp_problem
fitted_pair = cases._fitted_gp_pair
sklearn_theta = cases._sklearn_theta
peak_bytes = harness.traced_peak_bytes


@pytest.fixture(scope="module")
def lml_models():
    return fitted_pair(*make_problem(LML_N, LML_D, seed=0))


@pytest.fixture(scope="module")
def predict_models():
    X, y, lengthscale, variance, noise = make_problem(PREDICT_N, PREDICT_D, seed=1)
    X_test = np.random.default_rng(2).uniform(-1, 1, size=(PREDICT_M, PREDICT_D))
    return fitted_pair(X, y, lengthscale, variance, noise) + (X_test,)


def test_lml_gradient_minivae(benchmark, lml_models):
    benchmark.group = LML_GROUP
    mine, _ = lml_models
    call = lambda: mine.log_marginal_likelihood(mine.theta_, eval_gradient=True)
    lml, dtheta = benchmark.pedantic(call, rounds=5, warmup_rounds=1)
    benchmark.extra_info["peak_MiB"] = peak_bytes(call) / 2**20
    assert np.isfinite(lml) and dtheta.shape == (LML_D + 2,)


def test_lml_gradient_sklearn(benchmark, lml_models):
    benchmark.group = LML_GROUP
    mine, theirs = lml_models
    theta = sklearn_theta(mine.theta_)
    call = lambda: theirs.log_marginal_likelihood(theta, eval_gradient=True)
    lml, dtheta = benchmark.pedantic(call, rounds=3, warmup_rounds=0)
    benchmark.extra_info["peak_MiB"] = peak_bytes(call) / 2**20
    assert np.isfinite(lml) and dtheta.shape == (LML_D + 2,)


def test_lml_gradient_peak_memory(lml_models):
    """minivae's peak must be at most 1/5 of scikit-learn's (memory, not time)."""
    mine, theirs = lml_models
    ours = peak_bytes(lambda: mine.log_marginal_likelihood(mine.theta_, eval_gradient=True))
    theirs_peak = peak_bytes(
        lambda: theirs.log_marginal_likelihood(sklearn_theta(mine.theta_), eval_gradient=True)
    )
    print(f"\npeak memory, LML + gradient n={LML_N} d={LML_D}: minivae {ours / 2**20:.1f} MiB, "
          f"scikit-learn {theirs_peak / 2**20:.1f} MiB, ratio {ours / theirs_peak:.3f}")
    assert ours <= theirs_peak / 5


def test_predict_minivae(benchmark, predict_models):
    benchmark.group = PREDICT_GROUP
    mine, _, X_test = predict_models
    mean, std = benchmark.pedantic(lambda: mine.predict(X_test, return_std=True),
                                   rounds=5, warmup_rounds=1)
    assert mean.shape == std.shape == (PREDICT_M,)


def test_predict_sklearn(benchmark, predict_models):
    benchmark.group = PREDICT_GROUP
    _, theirs, X_test = predict_models
    mean, std = benchmark.pedantic(lambda: theirs.predict(X_test, return_std=True),
                                   rounds=5, warmup_rounds=1)
    assert mean.shape == std.shape == (PREDICT_M,)
