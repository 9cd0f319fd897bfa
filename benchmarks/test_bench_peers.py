"""The JAX (jit, CPU) and GPyTorch (exact GP, float64) peers, in the benchmark groups of
the other modules, so that ``--benchmark-compare`` puts them beside minivae and its
baselines:

    pytest benchmarks/ --benchmark-columns=median,iqr,rounds

The peer callables are minivae.bench.peer_cases's (the same code as ``minivae bench``),
each checked against minivae's value before it is timed. A peer that is not installed
skips its tests (``pip install -e ".[peers]"``).
"""

import numpy as np
import pytest

from minivae.bench import cases, peer_cases
from minivae.gp import GPRegressor

pytest.importorskip("pytest_benchmark")

from test_bench_gp import LML_D, LML_GROUP, LML_N, PREDICT_D, PREDICT_GROUP, PREDICT_M  # noqa: E402
from test_bench_gp import PREDICT_N  # noqa: E402
from test_bench_rbf import N_MATRIX  # noqa: E402
from test_bench_vae_step import GROUP as VAE_GROUP  # noqa: E402
from test_bench_vae_step import SIZES as VAE_SIZES  # noqa: E402


def _fitted(n, d, seed):
    X, y, lengthscale, variance, noise = cases._gp_problem(n, d, seed)
    model = GPRegressor(lengthscale, variance, noise, ard=True, optimize=False).fit(X, y)
    return model, model.X_train_, np.asarray(model.y_train_, dtype=np.float64).reshape(-1)


@pytest.fixture(scope="module")
def jax():
    return pytest.importorskip("jax")


@pytest.fixture(scope="module")
def gpytorch():
    pytest.importorskip("torch")
    return pytest.importorskip("gpytorch")


@pytest.fixture(scope="module")
def lml_problem():
    model, X, y = _fitted(LML_N, LML_D, seed=0)
    return X, y, model.theta_, model.log_marginal_likelihood(model.theta_, eval_gradient=True)


@pytest.fixture(scope="module")
def predict_problem():
    model, X, y = _fitted(PREDICT_N, PREDICT_D, seed=1)
    X_test = np.random.default_rng(2).uniform(-1.0, 1.0, size=(PREDICT_M, PREDICT_D))
    return X, y, X_test, model.theta_, model.predict(X_test, return_std=True)


@pytest.mark.parametrize("d", [2, 32])
def test_rbf_jax(benchmark, jax, d):
    from minivae.kernels import rbf_matrix

    benchmark.group = f"rbf_matrix n={N_MATRIX} d={d}"
    X = np.random.default_rng(d).standard_normal((N_MATRIX, d))
    lengthscale = float(np.sqrt(d))
    call = peer_cases.jax_rbf_fn(jax, X, lengthscale, 1.0,
                                 rbf_matrix(X, None, lengthscale, 1.0, impl="cpu"))
    benchmark.pedantic(call, rounds=11, warmup_rounds=1)


def test_lml_gradient_jax(benchmark, jax, lml_problem):
    benchmark.group = LML_GROUP
    benchmark.pedantic(peer_cases.jax_lml_fn(jax, *lml_problem), rounds=5, warmup_rounds=1)


def test_lml_gradient_gpytorch(benchmark, gpytorch, lml_problem):
    import torch

    benchmark.group = LML_GROUP
    benchmark.pedantic(peer_cases.gpytorch_lml_fn(torch, gpytorch, *lml_problem), rounds=5,
                       warmup_rounds=1)


def test_predict_jax(benchmark, jax, predict_problem):
    benchmark.group = PREDICT_GROUP
    benchmark.pedantic(peer_cases.jax_predict_fn(jax, *predict_problem), rounds=5,
                       warmup_rounds=1)


def test_predict_gpytorch(benchmark, gpytorch, predict_problem):
    import torch

    benchmark.group = PREDICT_GROUP
    benchmark.pedantic(peer_cases.gpytorch_predict_fn(torch, gpytorch, *predict_problem),
                       rounds=5, warmup_rounds=1)


def test_vae_step_jax(benchmark, jax):
    benchmark.group = VAE_GROUP
    D = VAE_SIZES.vae_layers[0]
    data = (np.random.default_rng(0).uniform(size=(VAE_SIZES.vae_batch, D)) > 0.7)
    call = cases._jax_vae_step_fn(jax, VAE_SIZES, data.astype(np.float32))
    benchmark.pedantic(call, rounds=101, warmup_rounds=5)
