"""Is the second core free for minivae's own kernels between two BLAS calls?

Run: ``python benchmarks/probe_second_core.py`` (about 30 s; quiet machine, no GPU).

Prints three things that explain the VAE step's last target row (docs/performance.md,
"VAE training step", "The second core"):

1. CPU time of every thread of this process over 500 training steps against the wall
   time: NumPy's OpenBLAS keeps its worker thread spinning between calls.
2. The fused Adam step over the 784-400-20 VAE's 652,824 float32 parameters, parallel
   build against serial build, first before this process has made any BLAS call (no
   worker thread exists yet), then right after a 128 x 784 x 400 product.
3. A floor for the step: the six products the bench compares against, the step's five
   small latent-layer products, and Adam's serial pass, with the ratio they alone give.
4. The step with Adam's parallel and serial builds, with and without the thread
   placement ``fit`` uses (minivae.kernels.threads.pinned_threads), against the six
   products: unpinned the parallel build gains nothing, pinned it does.

Medians of interleaved repeats; the numbers are what this machine does now, not a test.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext

import numpy as np

import minivae  # noqa: F401  (sets OMP_WAIT_POLICY=PASSIVE before Numba's pool starts)
from minivae.bench import cases, harness
from minivae.backend import get_backend
from minivae.kernels import adam as adam_kernels
from minivae.kernels.threads import pinned_threads

N_PARAMS = 652_824  # the 784-400-20 VAE, one flat buffer
RNG = np.random.default_rng(0)


def median_ms(samples):
    return 1e3 * float(np.median(samples))


def adam_pair(before=None, repeats=300):
    """Median ms of the parallel and the serial Adam builds, each call after ``before()``."""
    param = RNG.uniform(1.0, 2.0, N_PARAMS).astype(np.float32)
    grad = (1e-3 * RNG.standard_normal(N_PARAMS)).astype(np.float32)
    m = np.zeros(N_PARAMS, np.float32)
    v = np.zeros(N_PARAMS, np.float32)
    scalars = adam_kernels._scalars(np.float32, 1e-3, 0.9, 0.999, 1e-8, 10)
    builds = {"parallel": adam_kernels._adam_cpu_parallel, "serial": adam_kernels._adam_cpu_serial}
    samples = {name: [] for name in builds}
    for build in builds.values():
        build(param, grad, m, v, *scalars)  # compile / load from cache
    for _ in range(repeats):
        for name, build in builds.items():
            if before is not None:
                before()
            start = time.perf_counter()
            build(param, grad, m, v, *scalars)
            samples[name].append(time.perf_counter() - start)
    return {name: median_ms(values) for name, values in samples.items()}


def thread_cpu_seconds():
    """User CPU seconds of each thread of this process (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        seconds[tid] = int(fields[11]) / ticks
    return seconds


def main():
    print("1. Adam, 652,824 float32 parameters, before any BLAS call in this process:")
    no_blas = adam_pair()
    print(f"   parallel {no_blas['parallel']:.3f} ms, serial {no_blas['serial']:.3f} ms")

    D, H, K = harness.Sizes().vae_layers
    X = (RNG.uniform(size=(128, D)) > 0.7).astype(np.float32)
    W0 = RNG.standard_normal((D, H), dtype=np.float32)
    print(f"   ... and right after a 128 x {D} x {H} product (OpenBLAS, 2 threads):")
    after_blas = adam_pair(before=lambda: X @ W0)
    print(f"   parallel {after_blas['parallel']:.3f} ms, serial {after_blas['serial']:.3f} ms")

    step = cases._vae_step_fn(get_backend("cpu"), harness.Sizes(), X)
    for _ in range(20):
        step()
    cpu_before = thread_cpu_seconds()
    wall = time.perf_counter()
    for _ in range(500):
        step()
    wall = time.perf_counter() - wall
    cpu_after = thread_cpu_seconds()
    print(f"\n2. 500 VAE training steps, {wall:.2f} s wall; user CPU seconds per thread:")
    for tid in sorted(cpu_after, key=lambda t: cpu_before.get(t, 0.0) - cpu_after[t]):
        if tid in cpu_before:
            label = "main" if tid == str(os.getpid()) else "other"
            print(f"   thread {tid} ({label}): {cpu_after[tid] - cpu_before[tid]:.2f} s")

    six = cases._six_matmuls_fn(harness.Sizes(), X)

    def f32(*shape):
        return RNG.standard_normal(shape, dtype=np.float32)

    h, z, dz_hidden, dheads = np.maximum(f32(128, H), 0), f32(128, K), f32(128, H), f32(128, 2 * K)
    W_heads, W_dec0 = f32(H, 2 * K), f32(K, H)

    def five_small():
        return (z @ W_dec0, z.T @ dz_hidden, dz_hidden @ W_dec0.T, h.T @ dheads,
                dheads @ W_heads.T)

    samples = {"six": [], "small": [], "step": []}
    for _ in range(40):
        for name, call in (("six", six), ("small", five_small), ("step", step)):
            for _ in range(5):
                start = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - start)
    six_ms, small_ms, step_ms = (median_ms(samples[k]) for k in ("six", "small", "step"))
    adam_ms = after_blas["serial"]
    floor = six_ms + small_ms + adam_ms
    print("\n3. Floor of the step (medians, this run):")
    print(f"   six products {six_ms:.3f} ms + five small products {small_ms:.3f} ms + Adam "
          f"serial {adam_ms:.3f} ms = {floor:.3f} ms = {floor / six_ms:.2f}x the six products")
    print(f"   the step: {step_ms:.3f} ms = {step_ms / six_ms:.2f}x; everything else "
          f"(element-wise kernels, noise draw, Python): {step_ms - floor:.3f} ms")

    print("\n4. The step, Adam's parallel / serial build, unpinned / pinned (medians, ms):")
    threshold = adam_kernels._PARALLEL_MIN_ENTRIES
    variants = [(build, pin) for pin in (False, True) for build in ("parallel", "serial")]
    samples = {key: [] for key in variants}
    samples["six"] = []
    try:
        for _ in range(40):
            for build, pin in variants:
                adam_kernels._PARALLEL_MIN_ENTRIES = threshold if build == "parallel" else 1 << 62
                with pinned_threads() if pin else nullcontext():
                    for _ in range(10):
                        start = time.perf_counter()
                        step()
                        samples[(build, pin)].append(time.perf_counter() - start)
            for _ in range(10):
                start = time.perf_counter()
                six()
                samples["six"].append(time.perf_counter() - start)
    finally:
        adam_kernels._PARALLEL_MIN_ENTRIES = threshold
    six_now = median_ms(samples["six"])
    for build, pin in variants:
        ms = median_ms(samples[(build, pin)])
        print(f"   {build:8s} {'pinned' if pin else 'unpinned':8s} {ms:.3f} ms = "
              f"{ms / six_now:.2f}x the six products ({six_now:.3f} ms)")


if __name__ == "__main__":
    main()
