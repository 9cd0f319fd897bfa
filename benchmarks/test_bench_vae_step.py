"""One VAE training step (forward, hand-written backward, Adam update), 784-400-20,
batch 128, Bernoulli, float32, against (a) the same model and Adam in PyTorch CPU with
autograd (target: minivae >= 2x faster) and (b) the step's six large matrix products alone
(target: the whole minivae step <= 1.5x their time).

    pytest benchmarks/test_bench_vae_step.py

Threads: by default every library uses all cores. On a machine shared with other work,
oversubscribed BLAS and OpenMP threads make timings erratic (tens of times slower); pin
them for comparable numbers:

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 pytest benchmarks/...
"""

import math

import numpy as np
import pytest

from minivae.optim import make_optimizer
from minivae.vae import VAE

pytest.importorskip("pytest_benchmark")

D, H, K, BATCH = 784, 400, 20, 128
GROUP = "VAE step 784-400-20 batch 128 float32"


@pytest.fixture(scope="module")
def data():
    gen = np.random.default_rng(0)
    return (gen.uniform(size=(BATCH, D)) > 0.7).astype(np.float32)


def test_step_minivae(benchmark, data):
    vae = VAE(D, K, hidden=(H,), seed=0)
    optimizer = make_optimizer("adam", 1e-3, impl=vae.backend.kernel_impl)
    X = vae.backend.asarray(data)

    def step():
        loss, grads = vae._loss_and_grads_device(X, reuse_buffers=True)
        optimizer.step(vae.params, grads)
        return loss

    step()
    benchmark.group = GROUP
    benchmark.name = "minivae (hand-written backward, fused Adam)"
    assert math.isfinite(benchmark(step))


def test_step_torch(benchmark, data):
    torch = pytest.importorskip("torch")
    vae = VAE(D, K, hidden=(H,), seed=0)
    params = {name: torch.tensor(value, requires_grad=True)
              for name, value in vae.get_state()[0].items()}
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)
    X = torch.from_numpy(data)
    gen = torch.Generator().manual_seed(0)

    def step():
        optimizer.zero_grad(set_to_none=True)
        h = torch.relu(X @ params["enc.0.W"] + params["enc.0.b"])
        mu = h @ params["enc.mu.W"] + params["enc.mu.b"]
        logvar = h @ params["enc.logvar.W"] + params["enc.logvar.b"]
        eps = torch.randn(mu.shape, generator=gen)
        z = mu + torch.exp(0.5 * logvar) * eps
        g = torch.relu(z @ params["dec.0.W"] + params["dec.0.b"])
        logits = g @ params["dec.out.W"] + params["dec.out.b"]
        nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, X, reduction="sum")
        kl = 0.5 * torch.sum(torch.exp(logvar) + mu * mu - 1 - logvar)
        loss = (nll + kl) / BATCH
        loss.backward()
        optimizer.step()
        return loss.item()

    step()
    benchmark.group = GROUP
    benchmark.name = "torch CPU autograd + torch.optim.Adam"
    assert math.isfinite(benchmark(step))


def test_step_six_matmuls(benchmark, data):
    """The six products of a step that involve the 784 x 400 layers and the latent heads:
    encoder forward X W0, heads H [Wmu Wlogvar], decoder output G Wout, its weight
    gradient G^T dlogits, its input gradient dlogits Wout^T, encoder weight gradient
    X^T dH."""
    gen = np.random.default_rng(1)
    W0 = gen.standard_normal((D, H), dtype=np.float32)
    W_heads = gen.standard_normal((H, 2 * K), dtype=np.float32)
    W_out = gen.standard_normal((H, D), dtype=np.float32)
    hidden = gen.standard_normal((BATCH, H), dtype=np.float32)
    dlogits = gen.standard_normal((BATCH, D), dtype=np.float32)

    def six_products():
        encoder_hidden = data @ W0
        heads = encoder_hidden @ W_heads
        logits = hidden @ W_out
        dW_out = hidden.T @ dlogits
        dhidden = dlogits @ W_out.T
        dW0 = data.T @ dhidden
        return heads, logits, dW_out, dW0

    benchmark.group = GROUP
    benchmark.name = "baseline: the six matrix products alone"
    benchmark(six_products)
