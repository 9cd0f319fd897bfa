"""Reparameterisation forward + backward, 4096 x 256 float32, one sample: the Numba cpu
kernel against the plain NumPy expression (target: the kernel >= 2x faster).

    pytest benchmarks/test_bench_reparam.py

Threads: by default every library uses all cores. On a machine shared with other work,
oversubscribed BLAS and OpenMP threads make timings erratic (tens of times slower); pin
them for comparable numbers:

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 pytest benchmarks/...
"""

import numpy as np
import pytest

from minivae.kernels import reparam_backward, reparam_forward

pytest.importorskip("pytest_benchmark")

N, K = 4096, 256


@pytest.fixture(scope="module")
def inputs():
    gen = np.random.default_rng(0)
    mu = gen.standard_normal((N, K), dtype=np.float32)
    logvar = gen.standard_normal((N, K), dtype=np.float32)
    eps = gen.standard_normal((1, N, K), dtype=np.float32)
    dz = gen.standard_normal((1, N, K), dtype=np.float32)
    return mu, logvar, eps, dz


def _forward_backward(impl, mu, logvar, eps, dz):
    z = reparam_forward(mu, logvar, eps, impl=impl)
    dmu, dlogvar = reparam_backward(dz, logvar, eps, impl=impl)
    return z, dmu, dlogvar


@pytest.mark.parametrize("impl", ["cpu", "reference"])
def test_reparam_forward_backward(benchmark, inputs, impl):
    benchmark.group = "reparam forward+backward 4096x256 float32"
    benchmark.name = {"cpu": "minivae cpu kernel", "reference": "plain NumPy"}[impl]
    _forward_backward(impl, *inputs)  # compile / warm up outside the timing
    z, dmu, dlogvar = benchmark(_forward_backward, impl, *inputs)
    assert z.dtype == dmu.dtype == dlogvar.dtype == np.float32
