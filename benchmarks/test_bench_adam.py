"""Fused Adam step over 1M float32 parameters: Numba cpu kernel vs the plain NumPy update.

Run: ``pytest benchmarks/test_bench_adam.py`` (add ``--benchmark-columns=median,iqr,rounds``
for a compact table). Each benchmark call is one in-place Adam step; the step count keeps
growing across rounds, which changes only the two scalar bias corrections.

The floor: the step must read param, grad, m, v and write param, m, v, 7 x 4 MB. The
``test_floor_probe_read4_write3`` benchmark moves exactly those bytes with the same
parallel Numba loop structure and almost no arithmetic, so it measures that floor on this
machine (the 28 MB working set sits in a large L3 cache on the development machine, so a
DRAM bandwidth figure would understate it). The ``memory-probe`` group adds single-threaded
NumPy copy and read bandwidths over 64 MB for context.
"""

import itertools

import numpy as np
import pytest
from minivae.kernels import adam_step
from numba import njit, prange

from minivae.bench.cases import numpy_adam_textbook

N_PARAMS = 1_000_000
HYPER = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


@pytest.fixture
def adam_arrays():
    rng = np.random.default_rng(0)
    param = rng.standard_normal(N_PARAMS, dtype=np.float32)
    grad = rng.standard_normal(N_PARAMS, dtype=np.float32)
    m = np.zeros(N_PARAMS, dtype=np.float32)
    v = np.zeros(N_PARAMS, dtype=np.float32)
    return param, grad, m, v


def _stepper(impl, arrays):
    steps = itertools.count(1)

    def one_step():
        if impl == "textbook":
            numpy_adam_textbook(*arrays, t=next(steps), **HYPER)
        else:
            adam_step(*arrays, t=next(steps), impl=impl, **HYPER)

    return one_step


def test_adam_numpy_textbook(benchmark, adam_arrays):
    """The baseline: the plain NumPy update without minivae's subnormal flush."""
    benchmark.group = "adam-step-1M-float32"
    benchmark(_stepper("textbook", adam_arrays))
    assert np.all(np.isfinite(adam_arrays[0]))


def test_adam_numpy_reference(benchmark, adam_arrays):
    """minivae's NumPy specification (with the subnormal flush), for comparison."""
    benchmark.group = "adam-step-1M-float32"
    benchmark(_stepper("reference", adam_arrays))
    assert np.all(np.isfinite(adam_arrays[0]))


def test_adam_numba_cpu(benchmark, adam_arrays):
    benchmark.group = "adam-step-1M-float32"
    adam_step(*[a.copy() for a in adam_arrays], t=1, impl="cpu", **HYPER)  # compile or load cache
    benchmark(_stepper("cpu", adam_arrays))
    assert np.all(np.isfinite(adam_arrays[0]))


@njit(parallel=True, cache=True)
def _read4_write3(param, grad, m, v):
    for i in prange(param.size):
        mean = 0.25 * (param[i] + grad[i] + m[i] + v[i])
        param[i] = mean
        m[i] = mean
        v[i] = mean


def test_floor_probe_read4_write3(benchmark, adam_arrays):
    benchmark.group = "adam-step-1M-float32"
    _read4_write3(*[a.copy() for a in adam_arrays])
    benchmark(_read4_write3, *adam_arrays)
    assert np.all(np.isfinite(adam_arrays[0]))


def test_memory_probe_copy_64MB(benchmark):
    benchmark.group = "memory-probe"
    source = np.ones(16 * N_PARAMS, dtype=np.float32)
    destination = np.empty_like(source)
    benchmark(np.copyto, destination, source)
    assert destination[-1] == 1.0


def test_memory_probe_read_64MB(benchmark):
    benchmark.group = "memory-probe"
    source = np.ones(16 * N_PARAMS, dtype=np.float32)
    total = benchmark(np.add.reduce, source)
    assert total > 0
