"""The least a 784-400-20 VAE step made of minivae's pieces can take, against JAX's step.

Run: ``python benchmarks/probe_jax_floor.py`` (about 60 s; quiet machine; needs jax, the
``peers`` extra).

The floor is the work no design of the step removes, done back to back with nothing
between: the six products the bench compares against (``minivae.bench.cases``), the five
products with the 20- and 40-wide latent layers, the fused Bernoulli kernel over the
128 x 784 logits and one flat Adam call over the step's 652,824 float32 parameters. Its
**results are meaningless** (the arrays are random and not chained); only its time counts.
The step, the floor and JAX's jitted step (noise + loss + gradient + Adam, buffers
donated) are timed in one process: the step and the floor interleaved in blocks of 10,
ours pinned as ``fit`` runs it, and JAX in phases of its own (four phases each, half a
second apart). JAX's step in blocks right after ours took 6.1-6.6 ms instead of 3.4-3.7
(two runs each way, with and without a 0.25 s pause between blocks), so interleaved the
peer would be timed on cores our thread pools still hold. ``JAX / floor`` is then the largest speed-up over JAX that any step built from
OpenBLAS products and this Adam could reach on this machine; the bench's target is 1.25.

Medians of 400 calls each; the numbers are what this machine does now, not a test.
"""

from __future__ import annotations

import time

import numpy as np


def floor_fn(data):
    """The floor's calls (see the module docstring) as one callable."""
    from minivae.bench import cases, harness
    from minivae.kernels import adam_step, bernoulli_nll_and_grad

    D, H, K = harness.FULL.vae_layers
    batch = data.shape[0]
    six = cases._six_matmuls_fn(harness.FULL, data)
    rng = np.random.default_rng(2)

    def normal(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    z, W_dec0, dG, W_heads, dheads = normal(batch, K), normal(K, H), normal(batch, H), \
        normal(H, 2 * K), normal(batch, 2 * K)
    hidden = normal(batch, H)
    logits = normal(batch, D)
    n_params = D * H + H + H * 2 * K + 2 * K + K * H + H + H * D + D
    param, grad = normal(n_params), 1e-3 * normal(n_params)
    m, v = np.zeros(n_params, np.float32), np.zeros(n_params, np.float32)
    t = [0]

    def floor():
        six()
        z @ W_dec0            # decoder hidden layer
        z.T @ dG              # its weight gradient
        dG @ W_dec0.T         # into the code
        hidden.T @ dheads     # the heads' weight gradient
        dheads @ W_heads.T    # into the encoder's hidden layer
        bernoulli_nll_and_grad(logits, data, 1.0 / batch)
        t[0] += 1
        adam_step(param, grad, m, v, lr=1e-3, t=t[0])

    return floor, n_params


def main():
    import contextlib

    import minivae  # noqa: F401  (OMP_WAIT_POLICY before Numba's pool starts)
    from minivae.backend import get_backend
    from minivae.bench import cases, harness, peers
    from minivae.kernels.threads import pinned_threads

    jax = peers.import_jax()
    if jax is None:
        raise SystemExit(peers.missing("jax"))
    D, H, K = harness.FULL.vae_layers
    data = (np.random.default_rng(0).uniform(size=(128, D)) > 0.7).astype(np.float32)
    floor, n_params = floor_fn(data)
    assert n_params == 652_824
    calls = {"step": (cases._vae_step_fn(get_backend("cpu"), harness.FULL, data), True),
             "floor": (floor, True),
             "jax": (cases._jax_vae_step_fn(jax, harness.FULL, data), False)}
    for fn, _ in calls.values():
        for _ in range(50):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(4):
        for names in (("step", "floor"), ("jax",)):
            time.sleep(0.5)  # the other phase's thread pools go back to sleep
            for _ in range(10):
                for name in names:
                    fn, pinned = calls[name]
                    with pinned_threads() if pinned else contextlib.nullcontext():
                        for _ in range(10):
                            start = time.perf_counter()
                            fn()
                            samples[name].append(time.perf_counter() - start)
    med = {name: 1e3 * float(np.median(values)) for name, values in samples.items()}
    for name in calls:
        print(f"{name:6s} {med[name]:7.3f} ms")
    print(f"JAX / step  {med['jax'] / med['step']:.3f}x")
    print(f"JAX / floor {med['jax'] / med['floor']:.3f}x  (the bench's target: 1.25x)")
    print(f"step - floor {med['step'] - med['floor']:.3f} ms")


if __name__ == "__main__":
    main()
