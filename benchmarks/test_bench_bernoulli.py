"""Bernoulli negative log-likelihood and its gradient from logits, float32: the fused Numba
cpu kernel against the plain NumPy reference (and against the textbook NumPy path the kernel
replaced in minivae.losses: softplus, einsum, exp), at the VAE batch (128 x 784) and at
4096 x 784.

    pytest benchmarks/test_bench_bernoulli.py

Threads: by default every library uses all cores. On a machine shared with other work,
oversubscribed BLAS and OpenMP threads make timings erratic; pin them for comparable
numbers (128 x 784 runs on one thread in any case: it is below the kernel's parallel
threshold):

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 pytest benchmarks/...
"""

import numpy as np
import pytest
from minivae.kernels.bernoulli import bernoulli_nll_and_grad

from minivae.nn import softplus

pytest.importorskip("pytest_benchmark")

SHAPES = [(128, 784), (4096, 784)]
NAMES = {"cpu": "minivae cpu kernel", "reference": "plain NumPy reference",
         "textbook": "textbook NumPy path (softplus, einsum, exp)"}


@pytest.fixture(scope="module", params=SHAPES, ids=lambda shape: f"{shape[0]}x{shape[1]}")
def inputs(request):
    gen = np.random.default_rng(0)
    logits = 3.0 * gen.standard_normal(request.param, dtype=np.float32)
    X = (gen.random(request.param, dtype=np.float32) < 0.3).astype(np.float32)
    return logits, X


def _textbook(logits, X, scale):
    """softplus(f) - x f summed per row; scale (sigmoid(f) - x) with sigmoid = exp(f - softplus(f))."""
    softplus_logits = softplus(logits)
    nll = softplus_logits.sum(axis=1) - np.einsum("ij,ij->i", X, logits)
    dlogits = np.exp(logits - softplus_logits)
    dlogits -= X
    dlogits *= scale
    return nll, dlogits


def _run(impl, logits, X, scale):
    if impl == "textbook":
        return _textbook(logits, X, scale)
    return bernoulli_nll_and_grad(logits, X, scale, impl=impl)


@pytest.mark.parametrize("impl", ["cpu", "reference", "textbook"])
def test_bernoulli_nll_and_grad(benchmark, inputs, impl):
    logits, X = inputs
    n, d = logits.shape
    benchmark.group = f"bernoulli nll + grad {n}x{d} float32"
    benchmark.name = NAMES[impl]
    scale = 1.0 / n
    _run(impl, logits, X, scale)  # compile / warm up outside the timing
    nll, dlogits = benchmark(_run, impl, logits, X, scale)
    assert nll.shape == (n,) and dlogits.shape == (n, d)
    assert nll.dtype == dlogits.dtype == np.float32
