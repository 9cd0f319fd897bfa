"""The cases of ``minivae bench``: what is timed against what, and the target of each row.

Each builder returns a :class:`~minivae.bench.harness.Group`: the callables (ours and the
baselines), the rows that compare them and how often to repeat. The CPU cases are
:func:`cpu_groups`, the GPU cases (GPU against CPU, no targets) :func:`gpu_groups`.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from ..backend import Backend, get_backend
from ..kernels.threads import pinned_threads
from . import peer_cases, peers
from .harness import Group, Row, Sizes, Target, wall_timer


def _add_peer(calls: dict, rows: list, row: Row, name: str, build: Callable) -> None:
    """Add the row of peer ``name`` against ``calls["ours"]`` (timed under the label
    ``name``), or the row skipped when the peer is absent.

    ``build(module)`` returns the peer's callable after checking its value against ours.
    """
    module = {"jax": peers.import_jax, "gpytorch": peers.import_gpytorch}[name]()
    if module is None:
        row.skipped = peers.missing(name)
    else:
        calls[name] = (build(module), wall_timer)
        row.baseline += f" ({name} {module.__version__})"
    rows.append((row, "ours", name))


def _rbf_group(sizes: Sizes, d: int) -> Group:
    """K(X, X) by the cpu kernel against scikit-learn's RBF and against np.full."""
    from sklearn.gaussian_process.kernels import RBF

    from ..kernels import rbf_matrix

    n = sizes.rbf_n
    X = np.random.default_rng(d).standard_normal((n, d))
    lengthscale = float(np.sqrt(d))  # typical squared distances ~ 2d: K's entries stay O(1)
    sklearn_kernel = RBF(length_scale=lengthscale)
    calls = {
        "ours": (lambda: rbf_matrix(X, None, lengthscale, 1.0, impl="cpu"), wall_timer),
        "sklearn": (lambda: sklearn_kernel(X), wall_timer),
        "fill": (lambda: np.full((n, n), 1.0), wall_timer),
    }
    case = f"RBF K(X,X) n={n} d={d} f64"
    rows = [
        (Row(f"{case} vs sklearn", "rbf_matrix(impl='cpu')",
             "sklearn.gaussian_process.kernels.RBF(X)", Target("faster", 3.0, ">= 3x faster")),
         "ours", "sklearn"),
        (Row(f"{case} vs np.full", "rbf_matrix(impl='cpu')",
             "np.full((n, n), 1.0): writing the output once",
             Target("at_most", 2.5, "<= 2.5x its time")),
         "ours", "fill"),
    ]
    ours = rbf_matrix(X, None, lengthscale, 1.0, impl="cpu")
    _add_peer(calls, rows, Row(f"{case} vs JAX jit", "rbf_matrix(impl='cpu')",
                               "jax.jit of the fused exp(-|x-x'|^2/2l^2), x64",
                               Target("faster", 2.0, ">= 2x faster")),
              "jax",
              lambda jax: peer_cases.jax_rbf_fn(jax, X, lengthscale, 1.0, ours))
    return Group(f"RBF kernel matrix n={n} d={d}", calls, rows, sizes.repeats_medium)


def _gp_problem(n: int, d: int, seed: int):
    """Inputs, targets and ARD hyperparameters of a smooth regression problem."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, size=(n, d))
    y = np.sin(3.0 * X @ rng.normal(size=d)) + 0.1 * rng.normal(size=n)
    lengthscale = rng.uniform(0.5, 2.0, size=d)
    return X, y, lengthscale, 1.3, 0.05


def _fitted_gp_pair(X, y, lengthscale, variance, noise, device="cpu"):
    """minivae's GPRegressor and scikit-learn's, fitted to the same data, same fixed theta."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    from ..gp import GPRegressor

    ours = GPRegressor(lengthscale, variance, noise, ard=True, optimize=False,
                       device=device).fit(X, y)
    kernel = ConstantKernel(variance) * RBF(lengthscale) + WhiteKernel(noise)
    theirs = GaussianProcessRegressor(kernel, alpha=0.0, optimizer=None).fit(X, y)
    return ours, theirs


def _sklearn_theta(theta):
    """minivae's theta (log l.., log s, log noise) in scikit-learn's order.

    scikit-learn orders ``ConstantKernel * RBF + WhiteKernel`` as (log s, log l.., log noise).
    """
    return np.concatenate([[theta[-2]], theta[:-2], [theta[-1]]])


def _gp_lml_group(sizes: Sizes) -> Group:
    """LML + gradient at a fixed theta, time and peak memory, against scikit-learn."""
    n, d = sizes.lml_n, sizes.lml_d
    ours, theirs = _fitted_gp_pair(*_gp_problem(n, d, seed=0))
    theta = ours.theta_
    theta_sklearn = _sklearn_theta(theta)
    calls = {
        "ours": (lambda: ours.log_marginal_likelihood(theta, eval_gradient=True), wall_timer),
        "sklearn": (lambda: theirs.log_marginal_likelihood(theta_sklearn, eval_gradient=True),
                    wall_timer),
    }
    case = f"GP LML+grad ARD n={n} d={d}"
    ours_label = "GPRegressor.log_marginal_likelihood(theta, eval_gradient=True)"
    sklearn_label = "GaussianProcessRegressor.log_marginal_likelihood(theta, eval_gradient=True)"
    rows = [(Row(f"{case} time", ours_label, sklearn_label,
                 Target("faster", 3.0, ">= 3x faster")),
             "ours", "sklearn")]
    X, y = ours.X_train_, np.asarray(ours.y_train_, dtype=np.float64).reshape(-1)
    value = ours.log_marginal_likelihood(theta, eval_gradient=True)
    _add_peer(calls, rows, Row(f"{case} vs JAX jit", ours_label,
                               "jax.jit(jax.value_and_grad(lml)), Cholesky, x64",
                               Target("faster", 3.0, ">= 3x faster")),
              "jax",
              lambda jax: peer_cases.jax_lml_fn(jax, X, y, theta, value))
    _add_peer(calls, rows, Row(f"{case} vs GPyTorch", ours_label,
                               "ExactMarginalLogLikelihood + backward(), float64, Cholesky",
                               Target("faster", 3.0, ">= 3x faster")),
              "gpytorch",
              lambda gpytorch: peer_cases.gpytorch_lml_fn(peers.import_torch(), gpytorch,
                                                          X, y, theta, value))
    memory_rows = [(Row(f"{case} peak memory", ours_label, sklearn_label,
                        Target("at_most", 0.2, "<= 1/5 its peak"), unit="B"),
                    "ours", "sklearn")]
    return Group(f"GP log marginal likelihood + gradient n={n} d={d}", calls, rows,
                 sizes.repeats_slow, memory_rows)


def _gp_predict_group(sizes: Sizes) -> Group:
    """Predictive mean and standard deviation against scikit-learn's."""
    n, m, d = sizes.predict_train, sizes.predict_test, sizes.predict_d
    X, y, lengthscale, variance, noise = _gp_problem(n, d, seed=1)
    ours, theirs = _fitted_gp_pair(X, y, lengthscale, variance, noise)
    X_test = np.random.default_rng(2).uniform(-1.0, 1.0, size=(m, d))
    calls = {
        "ours": (lambda: ours.predict(X_test, return_std=True), wall_timer),
        "sklearn": (lambda: theirs.predict(X_test, return_std=True), wall_timer),
    }
    case, ours_label = f"GP predict mean+std {n} train {m} test", "GPRegressor.predict(return_std=True)"
    calls["floor"] = (_predict_floor_fn(ours.factor_, m), wall_timer)
    rows = [(Row(case, ours_label, "GaussianProcessRegressor.predict(return_std=True)",
                 Target("faster", 2.0, ">= 2x faster")),
             "ours", "sklearn"),
            (Row(f"{case} vs its floor", ours_label,
                 "writing K(X*, X) once (np.full) + the triangular solve L \\ K(X, X*)",
                 Target("at_most", 1.25, "<= 1.25x its time")),
             "ours", "floor")]
    expected = ours.predict(X_test, return_std=True)
    X_fit, y_fit = ours.X_train_, np.asarray(ours.y_train_, dtype=np.float64).reshape(-1)
    theta = ours.theta_
    _add_peer(calls, rows, Row(f"{case} vs JAX jit", ours_label,
                               "jax.jit of K*, K* alpha, L \\ K*^T, x64 (L, alpha from fit)",
                               Target("faster", 1.0, "not slower")),
              "jax",
              lambda jax: peer_cases.jax_predict_fn(jax, X_fit, y_fit, X_test, theta, expected))
    _add_peer(calls, rows, Row(f"{case} vs GPyTorch", ours_label,
                               "ExactGP eval posterior mean + variance, float64, exact",
                               Target("faster", 1.0, "not slower")),
              "gpytorch",
              lambda gpytorch: peer_cases.gpytorch_predict_fn(
                  peers.import_torch(), gpytorch, X_fit, y_fit, X_test, theta, expected))
    return Group(f"GP predict mean + std, {n} train / {m} test", calls, rows,
                 sizes.repeats_slow)


def _predict_floor_fn(factor, m: int) -> Callable:
    """The floor of predict with the standard deviation: K(X*, X) written once into a
    fresh (m, n) array, then ``L \\ K(X, X*)`` in its memory, as predict solves it."""
    from ..backend import solve_lower

    n = factor.L.shape[0]

    def floor():
        return solve_lower(factor.L, np.full((m, n), 1.0).T, factor.backend)

    return floor


def _vae_step_fn(backend: Backend, sizes: Sizes, data: np.ndarray) -> Callable:
    """One training step of minivae's VAE (loss, hand-written backward, fused Adam)."""
    from ..optim import make_optimizer
    from ..vae import VAE

    D, H, K = sizes.vae_layers
    vae = VAE(D, K, hidden=(H,), likelihood="bernoulli", dtype="float32", seed=0,
              device=backend.name)
    optimizer = make_optimizer("adam", 1e-3, impl=backend.kernel_impl)
    X = backend.asarray(data)
    network, rng = vae.network, backend.rng(1)

    def step():
        eps = network.draw_eps(rng, 1, X.shape[0])
        _loss, grads = network.neg_elbo_and_grads(X, eps, network.gradient_buffers())
        optimizer.step(vae.params, grads)

    return step


def _torch_vae_step_fn(torch, sizes: Sizes, data: np.ndarray) -> Callable:
    """The same model, loss and Adam in PyTorch CPU with autograd (the peer)."""
    from ..vae import VAE

    D, H, K = sizes.vae_layers
    initial = VAE(D, K, hidden=(H,), likelihood="bernoulli", dtype="float32", seed=0)
    params = {name: torch.tensor(np.asarray(value), requires_grad=True)
              for name, value in initial.get_state()[0].items()}
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)
    X = torch.from_numpy(data)
    generator = torch.Generator().manual_seed(0)
    batch = data.shape[0]
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def step():
        optimizer.zero_grad(set_to_none=True)
        hidden = torch.relu(X @ params["enc.0.W"] + params["enc.0.b"])
        mu = hidden @ params["enc.mu.W"] + params["enc.mu.b"]
        logvar = hidden @ params["enc.logvar.W"] + params["enc.logvar.b"]
        eps = torch.randn(mu.shape, generator=generator)
        z = mu + torch.exp(0.5 * logvar) * eps
        decoder_hidden = torch.relu(z @ params["dec.0.W"] + params["dec.0.b"])
        logits = decoder_hidden @ params["dec.out.W"] + params["dec.out.b"]
        nll = bce(logits, X, reduction="sum")
        kl = 0.5 * torch.sum(torch.exp(logvar) + mu * mu - 1.0 - logvar)
        loss = (nll + kl) / batch
        loss.backward()
        optimizer.step()

    return step


def _jax_vae_step_fn(jax, sizes: Sizes, data: np.ndarray) -> Callable:
    """JAX's step from the same initial parameters, its loss checked against ours."""
    from ..vae import VAE

    D, H, K = sizes.vae_layers
    vae = VAE(D, K, hidden=(H,), likelihood="bernoulli", dtype="float32", seed=0)

    def ours_loss(eps):
        return vae.network.neg_elbo_and_grads(data, eps[None], {})[0]

    return peer_cases.jax_vae_step_fn(jax, vae.get_state()[0], data, ours_loss)


def _six_matmuls_fn(sizes: Sizes, data: np.ndarray) -> Callable:
    """The step's six products that touch the D x H layers and the latent heads.

    Encoder forward X W0, heads H [Wmu Wlogvar], decoder output G Wout, its weight
    gradient G^T dlogits, its input gradient dlogits Wout^T, encoder weight gradient
    X^T dH; float32, the step's shapes. The rest of the step is O(batch x (D + H))
    elementwise work and products with the (H, K) and (K, H) matrices.
    """
    D, H, K = sizes.vae_layers
    batch = data.shape[0]
    rng = np.random.default_rng(1)
    W0 = rng.standard_normal((D, H), dtype=np.float32)
    W_heads = rng.standard_normal((H, 2 * K), dtype=np.float32)
    W_out = rng.standard_normal((H, D), dtype=np.float32)
    decoder_hidden = rng.standard_normal((batch, H), dtype=np.float32)
    dlogits = rng.standard_normal((batch, D), dtype=np.float32)

    def six_products():
        encoder_hidden = data @ W0
        heads = encoder_hidden @ W_heads
        logits = decoder_hidden @ W_out
        dW_out = decoder_hidden.T @ dlogits
        dhidden = dlogits @ W_out.T
        dW0 = data.T @ dhidden
        return heads, logits, dW_out, dW0

    return six_products


def _vae_group(sizes: Sizes) -> Group:
    """One VAE training step against PyTorch's and against its six matrix products."""
    D, H, K = sizes.vae_layers
    batch = sizes.vae_batch
    data = (np.random.default_rng(0).uniform(size=(batch, D)) > 0.7).astype(np.float32)
    calls = {
        "ours": (_vae_step_fn(get_backend("cpu"), sizes, data), wall_timer),
        "matmuls": (_six_matmuls_fn(sizes, data), wall_timer),
    }
    case = f"VAE step {D}-{H}-{K} b={batch} f32"
    ours = "VAE: loss_and_grads + fused Adam (impl='cpu', threads pinned as in fit)"
    torch = peers.import_torch()
    torch_row = Row(f"{case} vs torch CPU", ours,
                    f"PyTorch CPU autograd + torch.optim.Adam (torch=={peers.TORCH_VERSION})",
                    Target("faster", 2.0, ">= 2x faster"))
    if torch is None:
        torch_row.skipped = ("torch is not installed "
                             f'(pip install -e ".[peers]" for torch=={peers.TORCH_VERSION})')
    else:
        calls["torch"] = (_torch_vae_step_fn(torch, sizes, data), wall_timer)
        torch_row.baseline = (f"PyTorch {torch.__version__} CPU autograd + torch.optim.Adam, "
                              f"{torch.get_num_threads()} threads")
    rows = [
        (torch_row, "ours", "torch"),
        (Row(f"{case} vs its 6 matmuls", ours,
             "the step's six matrix products alone (its floor)",
             Target("at_most", 1.5, "<= 1.5x their time")),
         "ours", "matmuls"),
    ]
    _add_peer(calls, rows, Row(f"{case} vs JAX jit", ours,
                               "one jax.jit of noise + loss + value_and_grad + Adam, "
                               "buffers donated", Target("faster", 1.25, ">= 1.25x faster")),
              "jax", functools.partial(_jax_vae_step_fn, sizes=sizes, data=data))
    # Our step runs as fit() runs it: the calling thread and Numba's workers pinned to
    # distinct CPUs (minivae.kernels.threads); the baselines run as NumPy and PyTorch run.
    return Group(f"VAE training step {D}-{H}-{K}, batch {batch}", calls, rows,
                 sizes.repeats_fast, block=10, contexts={"ours": pinned_threads})


def _reparam_inputs(xp_asarray, sizes: Sizes):
    """``(mu, logvar, eps, dz)``, float32, one sample, put on a device by ``xp_asarray``."""
    n, k = sizes.reparam_shape
    rng = np.random.default_rng(0)
    mu, logvar = (xp_asarray(rng.standard_normal((n, k), dtype=np.float32)) for _ in range(2))
    eps, dz = (xp_asarray(rng.standard_normal((1, n, k), dtype=np.float32)) for _ in range(2))
    return mu, logvar, eps, dz


def _reparam_fn(impl: str, mu, logvar, eps, dz) -> Callable:
    """One reparameterisation forward and backward by ``impl``."""
    from ..kernels import reparam_backward, reparam_forward

    def forward_backward():
        reparam_forward(mu, logvar, eps, impl=impl)
        reparam_backward(dz, logvar, eps, impl=impl)

    return forward_backward


def _reparam_group(sizes: Sizes) -> Group:
    """The cpu kernels against the plain NumPy expressions."""
    from ..kernels import reparam_backward, reparam_forward

    n, k = sizes.reparam_shape
    inputs = _reparam_inputs(np.asarray, sizes)
    calls = {
        "ours": (_reparam_fn("cpu", *inputs), wall_timer),
        "numpy": (_reparam_fn("reference", *inputs), wall_timer),
    }
    rows = [(Row(f"reparam fwd+bwd {n}x{k} f32", "reparam_forward + reparam_backward (impl='cpu')",
                 "the plain NumPy expressions (impl='reference')",
                 Target("faster", 2.0, ">= 2x faster")),
             "ours", "numpy")]
    mu, logvar, eps, dz = inputs
    expected = (reparam_forward(mu, logvar, eps, impl="cpu"),
                *reparam_backward(dz, logvar, eps, impl="cpu"))
    _add_peer(calls, rows, Row(f"reparam fwd+bwd {n}x{k} f32 vs JAX jit",
                               "reparam_forward + reparam_backward (impl='cpu')",
                               "one jax.jit of z, dmu, dlogvar", None),
              "jax", lambda jax: peer_cases.jax_reparam_fn(jax, mu, logvar, eps, dz, expected))
    # Blocks of 10 calls, as for the VAE step: call by call, our parallel kernel follows a
    # JAX or NumPy call whose threads still hold the second core (4096 x 256: 2.7-5.5 ms
    # against 1.09 ms in blocks; JAX's time is the same either way).
    return Group(f"reparameterisation forward + backward {n}x{k}", calls, rows,
                 sizes.repeats_fast, block=10)


def numpy_adam_textbook(param, grad, m, v, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, t=1):
    """The plain NumPy Adam update a user would write (Kingma & Ba, Algorithm 1), in place.

    The baseline of the Adam row. minivae's reference (``adam_step(impl="reference")``)
    also flushes subnormal moments to zero (kernels/adam.py), which costs NumPy three more
    passes (about 1.3 ms of 6.5 ms at 1M float32); the baseline leaves that out, so the
    ratio is against the textbook update, not against minivae's specification.
    """
    m *= beta1
    m += (1 - beta1) * grad
    v *= beta2
    v += (1 - beta2) * grad * grad
    param -= (lr / (1 - beta1**t)) * m / (np.sqrt(v / (1 - beta2**t)) + eps)


def _adam_fn(impl: str, xp_asarray, n_params: int) -> Callable:
    """One in-place Adam step per call on its own arrays; the step count keeps growing.

    ``impl="textbook"`` is :func:`numpy_adam_textbook`; the others go to ``adam_step``.
    """
    from ..kernels import adam_step

    rng = np.random.default_rng(0)
    param, grad = (xp_asarray(rng.standard_normal(n_params, dtype=np.float32)) for _ in range(2))
    m, v = (xp_asarray(np.zeros(n_params, dtype=np.float32)) for _ in range(2))
    step_count = [0]

    def step():
        step_count[0] += 1
        if impl == "textbook":
            numpy_adam_textbook(param, grad, m, v, lr=1e-3, t=step_count[0])
        else:
            adam_step(param, grad, m, v, lr=1e-3, t=step_count[0], impl=impl)

    return step


def _adam_group(sizes: Sizes) -> Group:
    """The fused cpu kernel against the plain NumPy update."""
    n = sizes.adam_params
    calls = {
        "ours": (_adam_fn("cpu", np.asarray, n), wall_timer),
        "numpy": (_adam_fn("textbook", np.asarray, n), wall_timer),
    }
    rows = [(Row(f"Adam step {n:,} f32", "adam_step(impl='cpu')",
                 "the plain NumPy update (textbook Adam, no subnormal flush)",
                 Target("faster", 3.0, ">= 3x faster")),
             "ours", "numpy")]
    rng = np.random.default_rng(0)
    param, grad = (rng.standard_normal(n, dtype=np.float32) for _ in range(2))
    _add_peer(calls, rows, Row(f"Adam step {n:,} f32 vs JAX jit", "adam_step(impl='cpu')",
                               "jax.jit Adam, parameters and moments donated", None),
              "jax", lambda jax: peer_cases.jax_adam_fn(jax, param, grad))
    # Blocks of 10 calls (see _reparam_group): call by call 0.44-0.45 ms, in blocks 0.27 ms.
    return Group(f"Adam step over {n:,} float32 parameters", calls, rows, sizes.repeats_fast,
                 block=10)


def cpu_groups(sizes: Sizes) -> list:
    """The CPU table's groups as ``(title, build)``; ``build()`` sets up the data.

    Each ``build`` is a picklable :func:`functools.partial` of a module-level function, so
    that a group can be measured in a fresh process (see :func:`run`).
    """
    builders = [(f"RBF kernel matrix d={d}", functools.partial(_rbf_group, sizes, d))
                for d in sizes.rbf_dims]
    builders += [
        ("GP log marginal likelihood + gradient", functools.partial(_gp_lml_group, sizes)),
        ("GP predict mean + std", functools.partial(_gp_predict_group, sizes)),
        ("VAE training step", functools.partial(_vae_group, sizes)),
        ("reparameterisation", functools.partial(_reparam_group, sizes)),
        ("Adam step", functools.partial(_adam_group, sizes)),
    ]
    return builders


# ---- the GPU cases -------------------------------------------------------------------------
def gpu_groups(backend: Backend, sizes: Sizes, timer: Callable) -> list:
    """GPU-against-CPU groups: each kernel, the VAE step and the GP LML + gradient.

    ``backend`` is the GPU backend (or, in tests, ``"cuda-sim"``, which runs the same
    cuda kernels on NumPy arrays in Numba's simulator); ``timer`` times one call on it.
    """
    from ..kernels import rbf_grad_contract, rbf_matrix

    cpu = get_backend("cpu")
    dev = backend.asarray

    def rbf_matrix_group(d):
        n = sizes.rbf_n
        X = np.random.default_rng(d).standard_normal((n, d))
        X_dev, lengthscale = dev(X), float(np.sqrt(d))
        calls = {"gpu": (lambda: rbf_matrix(X_dev, None, lengthscale, impl="cuda"), timer),
                 "cpu": (lambda: rbf_matrix(X, None, lengthscale, impl="cpu"), wall_timer)}
        return _gpu_group(f"rbf_matrix n={n} d={d} f64", calls, sizes)

    def rbf_contract_group():
        n, d = sizes.contract_n, sizes.contract_d
        rng = np.random.default_rng(3)
        X, W = rng.uniform(-1.0, 1.0, size=(n, d)), rng.standard_normal((n, n))
        W = W + W.T
        lengthscale = rng.uniform(0.5, 2.0, size=d)
        X_dev, W_dev = dev(X), dev(W)
        calls = {"gpu": (lambda: rbf_grad_contract(W_dev, X_dev, lengthscale, 1.3, impl="cuda"),
                         timer),
                 "cpu": (lambda: rbf_grad_contract(W, X, lengthscale, 1.3, impl="cpu"),
                         wall_timer)}
        return _gpu_group(f"rbf_grad_contract ARD n={n} d={d} f64", calls, sizes)

    def reparam_group():
        n, k = sizes.reparam_shape
        calls = {"gpu": (_reparam_fn("cuda", *_reparam_inputs(dev, sizes)), timer),
                 "cpu": (_reparam_fn("cpu", *_reparam_inputs(np.asarray, sizes)), wall_timer)}
        return _gpu_group(f"reparam fwd+bwd {n}x{k} f32", calls, sizes)

    def adam_group():
        n = sizes.adam_params
        calls = {"gpu": (_adam_fn("cuda", dev, n), timer),
                 "cpu": (_adam_fn("cpu", np.asarray, n), wall_timer)}
        return _gpu_group(f"Adam step {n:,} f32", calls, sizes)

    def vae_group():
        D, H, K = sizes.vae_layers
        data = (np.random.default_rng(0).uniform(size=(sizes.vae_batch, D)) > 0.7)
        data = data.astype(np.float32)
        calls = {"gpu": (_vae_step_fn(backend, sizes, data), timer),
                 "cpu": (_vae_step_fn(cpu, sizes, data), wall_timer)}
        return _gpu_group(f"VAE step {D}-{H}-{K} b={sizes.vae_batch} f32", calls, sizes)

    def gp_lml_group():
        from ..gp import GPRegressor

        n, d = sizes.lml_n, sizes.lml_d
        X, y, lengthscale, variance, noise = _gp_problem(n, d, seed=0)
        models = {name: GPRegressor(lengthscale, variance, noise, ard=True, optimize=False,
                                    device=name).fit(X, y)
                  for name in (backend.name, "cpu")}
        gpu_model, cpu_model = models[backend.name], models["cpu"]
        calls = {
            "gpu": (lambda: gpu_model.log_marginal_likelihood(gpu_model.theta_, True), timer),
            "cpu": (lambda: cpu_model.log_marginal_likelihood(cpu_model.theta_, True),
                    wall_timer),
        }
        return _gpu_group(f"GP LML+grad ARD n={n} d={d}", calls, sizes)

    builders = [(f"rbf_matrix d={d}", lambda d=d: rbf_matrix_group(d))
                for d in sizes.rbf_dims]
    return builders + [("rbf_grad_contract", rbf_contract_group), ("reparam", reparam_group),
                       ("adam", adam_group), ("VAE step", vae_group),
                       ("GP LML + gradient", gp_lml_group)]


def _gpu_group(case: str, calls: dict, sizes: Sizes) -> Group:
    """One GPU-against-CPU row (no target: the ratio is the GPU's speedup)."""
    row = Row(case, "impl='cuda' / device='gpu' (CUDA events)",
              "impl='cpu' / device='cpu' (perf_counter)", None)
    return Group(case, calls, [(row, "gpu", "cpu")], sizes.repeats_fast)


