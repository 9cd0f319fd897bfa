"""What each piece of the VAE training step really costs: time the step without it.

Run: ``python benchmarks/probe_marginal_costs.py`` (about 40 s; quiet machine).

Instrumenting a step (a timer around each call) overstates the element-wise passes:
outputs of a two-thread BLAS product sit half in the other core's cache, and whichever
pass touches them first pays for moving them; remove that pass and the next one pays.
This probe measures instead by removal: each variant replaces one piece of the
784-400-20 step by a stand-in that does (almost) nothing, so its **results are wrong**
and only its time means anything. Variants, each in a fresh process, each timed with the
step's threads pinned as ``fit`` runs them and interleaved with the six products the bench
compares against (docs/performance.md, "VAE training step"):

- ``real``: the step as it is.
- ``no-adam``: ``optimizer.step`` does nothing.
- ``no-bernoulli``: the likelihood kernel's first result is returned every step.
- ``no-noise``: the first noise draw is reused every step.
- ``fused-passes``: no output-layer bias add, no output-layer bias gradient, no KL value
  or gradient: an upper bound on folding those into the Bernoulli and reparameterisation
  kernels.

Medians of 400 steps; the numbers are what this machine does now, not a test.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

VARIANTS = ("real", "no-adam", "no-bernoulli", "no-noise", "fused-passes")


def stub_out(variant):
    """Replace the piece ``variant`` names (module-level patches, this process only)."""
    from minivae import autoencoder, losses, nn, optim

    if variant == "no-adam":
        optim.Adam.step = lambda self, params, grads: None
    elif variant == "no-bernoulli":
        first = {}
        real = losses.decoder_nll_and_doutputs

        def same_result(outputs, X, scale, fixed_logvar=None, impl="cpu"):
            if "result" not in first:
                first["result"] = real(outputs, X, scale, fixed_logvar=fixed_logvar, impl=impl)
            return first["result"]

        losses.decoder_nll_and_doutputs = same_result
    elif variant == "no-noise":
        first = {}
        real_draw = autoencoder.Autoencoder.draw_eps
        autoencoder.Autoencoder.draw_eps = lambda self, rng, L, n: first.setdefault(
            "eps", real_draw(self, rng, L, n))
    elif variant == "fused-passes":
        real_add, real_grad = nn.add_bias, nn.bias_grad
        width = 784  # the output layer's

        def add_bias(y, b, relu=False, impl="cpu"):
            return y if y.shape[1] == width else real_add(y, b, relu, impl=impl)

        def bias_grad(dy, db, relu_output=None, impl="cpu"):
            return db if dy.shape[1] == width else real_grad(dy, db, relu_output, impl=impl)

        nn.add_bias, nn.bias_grad = add_bias, bias_grad
        zeros = {}
        losses.kl_std_normal = lambda mu, logvar: zeros.setdefault(
            "kl", np.zeros(mu.shape[0], mu.dtype))
        losses.kl_std_normal_grad = lambda mu, logvar, scale=1.0: zeros.setdefault(
            "grad", (np.zeros_like(mu), np.zeros_like(mu)))


def measure(variant):
    """``(step ms, six products ms)``, medians, in this process."""
    import minivae  # noqa: F401  (OMP_WAIT_POLICY before Numba's pool starts)
    from minivae.bench import cases, harness
    from minivae.backend import get_backend
    from minivae.kernels.threads import pinned_threads

    stub_out(variant)
    X = (np.random.default_rng(0).uniform(size=(128, 784)) > 0.7).astype(np.float32)
    step = cases._vae_step_fn(get_backend("cpu"), harness.FULL, X)
    six = cases._six_matmuls_fn(harness.FULL, X)
    for _ in range(50):
        step()
        six()
    samples = {"step": [], "six": []}
    for _ in range(40):
        with pinned_threads():
            for _ in range(10):
                start = time.perf_counter()
                step()
                samples["step"].append(time.perf_counter() - start)
        for _ in range(10):
            start = time.perf_counter()
            six()
            samples["six"].append(time.perf_counter() - start)
    return tuple(1e3 * float(np.median(samples[key])) for key in ("step", "six"))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--variant":
        print(*measure(sys.argv[2]))
        return
    print("variant        step ms  six products ms  ratio  saved vs real")
    real_step = None
    for variant in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--variant", variant], check=True,
                             capture_output=True, text=True).stdout.split()
        step_ms, six_ms = float(out[-2]), float(out[-1])
        real_step = step_ms if real_step is None else real_step
        print(f"{variant:13s}  {step_ms:7.3f}  {six_ms:15.3f}  {step_ms / six_ms:5.2f}x  "
              f"{real_step - step_ms:+.3f} ms")


if __name__ == "__main__":
    main()
