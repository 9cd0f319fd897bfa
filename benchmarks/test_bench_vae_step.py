"""One VAE training step (forward, hand-written backward, Adam update), 784-400-20,
batch 128, Bernoulli, float32, against (a) the same model and Adam in PyTorch CPU with
autograd (target: minivae >= 2x faster) and (b) the step's six large matrix products alone
(target: the whole minivae step <= 1.5x their time).

    pytest benchmarks/test_bench_vae_step.py

The callables are built by minivae.bench, so this module and `minivae bench` time the
same code (this one without the bench's block interleaving: each test runs alone).

Threads: by default every library uses all cores. On a machine shared with other work,
oversubscribed BLAS and OpenMP threads make timings erratic (tens of times slower); pin
them for comparable numbers:

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 pytest benchmarks/...
"""

import math

import numpy as np
import pytest

from minivae.bench import cases, harness
from minivae.backend import get_backend
from minivae.kernels.threads import pinned_threads

pytest.importorskip("pytest_benchmark")

SIZES = harness.FULL  # 784-400-20, batch 128: the same builders `minivae bench` times
D, H, K = SIZES.vae_layers
GROUP = f"VAE step {D}-{H}-{K} batch {SIZES.vae_batch} float32"


@pytest.fixture(scope="module")
def data():
    gen = np.random.default_rng(0)
    return (gen.uniform(size=(SIZES.vae_batch, D)) > 0.7).astype(np.float32)


def test_step_minivae(benchmark, data):
    step = cases._vae_step_fn(get_backend("cpu"), SIZES, data)
    step()
    benchmark.group = GROUP
    benchmark.name = "minivae (hand-written backward, fused Adam)"
    with pinned_threads():  # as fit() runs it (minivae.kernels.threads)
        benchmark(step)


def test_step_torch(benchmark, data):
    torch = pytest.importorskip("torch")
    step = cases._torch_vae_step_fn(torch, SIZES, data)
    step()
    benchmark.group = GROUP
    benchmark.name = "torch CPU autograd + torch.optim.Adam"
    benchmark(step)


def test_step_six_matmuls(benchmark, data):
    """The six products of a step that involve the 784 x 400 layers and the latent heads
    (see ``minivae.bench.cases._six_matmuls_fn``)."""
    six_products = cases._six_matmuls_fn(SIZES, data)
    benchmark.group = GROUP
    benchmark.name = "baseline: the six matrix products alone"
    _heads, logits, _dW_out, dW0 = benchmark(six_products)
    assert math.isfinite(float(logits.sum())) and dW0.shape == (D, H)


def test_step_group_against_peers(capsys):
    """The bench's VAE group alone, three times, in this process (ours, its six products,
    PyTorch and JAX interleaved in blocks of 10, as `minivae bench` times them):

        pytest -s benchmarks/test_bench_vae_step.py -k group

    prints each run's medians, ratios and the 1-minute load average.
    """
    import os

    group = cases._vae_group(SIZES)
    for run in range(3):
        rows = harness.run_group(group, SIZES.warmup)
        with capsys.disabled():
            print(f"\nrun {run + 1}, load {os.getloadavg()[0]:.2f}")
            for row in rows:
                if row.skipped is None:
                    print(f"  {row.case}: ours {1e3 * row.ours_stats['median']:.3f} ms, "
                          f"baseline {1e3 * row.baseline_stats['median']:.3f} ms, "
                          f"ratio {row.ratio:.3f}")
                else:
                    print(f"  {row.case}: skipped ({row.skipped})")
        assert all(row.skipped is not None or row.ratio > 0 for row in rows)
