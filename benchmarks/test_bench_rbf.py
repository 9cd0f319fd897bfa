"""Benchmarks of the RBF kernels (pytest-benchmark); one group per comparison.

Run: ``pytest benchmarks/test_bench_rbf.py --benchmark-columns=median,iqr,rounds``

- ``rbf_matrix n=4000 d=...``: minivae's cpu kernel matrix K(X, X) (float64) against
  scikit-learn's ``ConstantKernel * RBF`` and against ``np.full((n, n), 1.0)``, the cost of
  writing an n x n float64 matrix once (the floor for any implementation).
- ``rbf_grad_contract n=1000 d=8``: the cpu contraction against the NumPy reference (which
  forms the n x n x d tensor).

Each result carries the BLAS that ran (threadpoolctl) and Numba's thread count in
``extra_info``. Medians are the numbers to compare; see docs/performance.md.
"""

import numba
import numpy as np
import pytest

from minivae.kernels.rbf import rbf_grad_contract, rbf_matrix

N_MATRIX = 4000
N_CONTRACT, D_CONTRACT = 1000, 8
VARIANCE = 1.5


def describe_machine(benchmark):
    from threadpoolctl import threadpool_info

    benchmark.extra_info["blas"] = [
        f"{info['internal_api']} {info['version']} ({info['architecture']}, "
        f"{info['num_threads']} threads)"
        for info in threadpool_info()
        if info["user_api"] == "blas"
    ]
    benchmark.extra_info["numba_threads"] = numba.get_num_threads()


@pytest.fixture(scope="module", params=[2, 32], ids=lambda d: f"d={d}")
def points(request):
    d = request.param
    X = np.random.default_rng(0).normal(size=(N_MATRIX, d))
    return X, np.sqrt(d)


def test_matrix_cpu(benchmark, points):
    X, lengthscale = points
    benchmark.group = f"rbf_matrix n={N_MATRIX} d={X.shape[1]}"
    describe_machine(benchmark)
    rbf_matrix(X[:10], None, lengthscale, VARIANCE, impl="cpu")  # compile or load the cache
    K = benchmark(rbf_matrix, X, None, lengthscale, VARIANCE, impl="cpu")
    assert K.shape == (N_MATRIX, N_MATRIX)


def test_matrix_sklearn(benchmark, points):
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel

    X, lengthscale = points
    benchmark.group = f"rbf_matrix n={N_MATRIX} d={X.shape[1]}"
    describe_machine(benchmark)
    kernel = ConstantKernel(VARIANCE) * RBF(lengthscale)
    K = benchmark(kernel, X)
    np.testing.assert_allclose(
        K[:50, :50], rbf_matrix(X[:50], None, lengthscale, VARIANCE, impl="cpu"), rtol=1e-12
    )


def test_matrix_write_floor(benchmark, points):
    X, _ = points
    benchmark.group = f"rbf_matrix n={N_MATRIX} d={X.shape[1]}"
    describe_machine(benchmark)
    K = benchmark(np.full, (N_MATRIX, N_MATRIX), 1.0)
    assert K.shape == (N_MATRIX, N_MATRIX)


@pytest.fixture(scope="module")
def contract_inputs():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(N_CONTRACT, D_CONTRACT))
    W = rng.normal(size=(N_CONTRACT, N_CONTRACT))
    W = W + W.T  # the GP's W = alpha alpha^T - K^-1 is symmetric
    lengthscale = rng.uniform(1.0, 3.0, size=D_CONTRACT)
    amp = rng.uniform(0.5, 2.0, size=N_CONTRACT)
    return W, X, lengthscale, amp


@pytest.mark.parametrize("impl", ["cpu", "reference"])
def test_contract(benchmark, contract_inputs, impl):
    W, X, lengthscale, amp = contract_inputs
    benchmark.group = f"rbf_grad_contract n={N_CONTRACT} d={D_CONTRACT}"
    describe_machine(benchmark)
    rbf_grad_contract(W[:10, :10], X[:10], lengthscale, VARIANCE, amp[:10], impl=impl)
    dtheta, damp = benchmark(rbf_grad_contract, W, X, lengthscale, VARIANCE, amp, impl=impl)
    assert dtheta.shape == (D_CONTRACT + 1,) and damp.shape == (N_CONTRACT,)
