"""The JAX and GPyTorch sides of the benchmark rows, written the way each library runs fastest.

JAX: the whole computation under one ``jax.jit`` (the VAE step's forward, backward and
Adam together), the state buffers donated to the next call where the step updates them,
``block_until_ready`` before the clock stops, float32 for the VAE, x64 for the GP cases.
GPyTorch: an exact GP (``ExactGP``, ``ScaleKernel(RBFKernel(ard_num_dims=d))``,
``GaussianLikelihood``) in float64 with Cholesky at every size (GPyTorch would otherwise
switch to conjugate gradients above n = 800, which is not the same value).

Every builder checks the peer's value against minivae's on the same inputs before it
returns the callable (:func:`check_close`), so a row never times a different computation.
The peer modules come in as arguments (from :mod:`.peers`); nothing here imports them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

LOG_2PI = float(np.log(2.0 * np.pi))


def check_close(name: str, ours, theirs, rtol: float, atol: float = 0.0) -> None:
    """Raise AssertionError naming ``name`` unless the peer's value matches ours."""
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    if ours.shape != theirs.shape or not np.allclose(theirs, ours, rtol=rtol, atol=atol):
        worst = np.max(np.abs(theirs - ours) / (atol + rtol * np.abs(ours) + 1e-300))
        raise AssertionError(f"{name}: the peer's value differs from minivae's "
                             f"(worst error {worst:.3g} x the tolerance rtol={rtol}, atol={atol})")


def _blocking(jax, fn: Callable) -> Callable:
    """``fn`` followed by ``block_until_ready`` on its result (XLA runs asynchronously)."""

    def call():
        return jax.block_until_ready(fn())

    return call


def enable_x64(jax) -> None:
    """Let JAX make float64 arrays (off by default); float32 arrays stay float32."""
    jax.config.update("jax_enable_x64", True)


# ---- RBF matrix ----------------------------------------------------------------------------
def jax_rbf_fn(jax, X: np.ndarray, lengthscale: float, variance: float, ours) -> Callable:
    """``variance * exp(-|x - x'|^2 / (2 l^2))`` under jit, float64.

    For few features (d <= 8) the broadcast difference, which XLA fuses into one loop with
    no n x n x d temporary, is the faster form; for more, the Gram-matrix form, whose
    product goes to XLA's GEMM.
    """
    enable_x64(jax)
    jnp = jax.numpy
    X_dev = jax.device_put(X / lengthscale)

    @jax.jit
    def broadcast_form(Z):
        sq = jnp.sum((Z[:, None, :] - Z[None, :, :]) ** 2, axis=-1)
        return variance * jnp.exp(-0.5 * sq)

    @jax.jit
    def gram_form(Z):
        norms = jnp.sum(Z * Z, axis=1)
        sq = jnp.maximum(norms[:, None] + norms[None, :] - 2.0 * Z @ Z.T, 0.0)
        return variance * jnp.exp(-0.5 * sq)

    form = broadcast_form if X.shape[1] <= 8 else gram_form
    call = _blocking(jax, lambda: form(X_dev))
    check_close("JAX RBF matrix", ours, call(), rtol=1e-9, atol=1e-12)
    return call


# ---- GP log marginal likelihood and predict ------------------------------------------------
def _jax_gp_kernel(jnp, A, B, lengthscale, variance):
    """ARD RBF cross-covariance K(A, B) in the Gram-matrix form."""
    A, B = A / lengthscale, B / lengthscale
    sq = jnp.sum(A * A, 1)[:, None] + jnp.sum(B * B, 1)[None, :] - 2.0 * A @ B.T
    return variance * jnp.exp(-0.5 * jnp.maximum(sq, 0.0))


def jax_lml_fn(jax, X: np.ndarray, y: np.ndarray, theta: np.ndarray, ours) -> Callable:
    """LML and its gradient in theta = (log l_1..l_d, log s, log noise) by
    ``jit(value_and_grad)``, float64; ``ours`` is minivae's ``(lml, dtheta)``."""
    enable_x64(jax)
    jnp = jax.numpy
    cho_solve = jax.scipy.linalg.cho_solve
    d = X.shape[1]

    def lml(theta, X, y):
        lengthscale, variance, noise = jnp.exp(theta[:d]), jnp.exp(theta[d]), jnp.exp(theta[d + 1])
        K = _jax_gp_kernel(jnp, X, X, lengthscale, variance) + noise * jnp.eye(X.shape[0])
        L = jnp.linalg.cholesky(K)
        alpha = cho_solve((L, True), y)
        return (-0.5 * y @ alpha - jnp.sum(jnp.log(jnp.diag(L)))
                - 0.5 * X.shape[0] * LOG_2PI)

    value_and_grad = jax.jit(jax.value_and_grad(lml))
    args = tuple(jax.device_put(a) for a in (theta, X, y))
    call = _blocking(jax, lambda: value_and_grad(*args))
    value, grad = call()
    check_close("JAX LML", ours[0], value, rtol=1e-6)
    check_close("JAX LML gradient", ours[1], grad, rtol=1e-6, atol=1e-6 * abs(ours[0]))
    return call


def jax_predict_fn(jax, X, y, X_test, theta, ours) -> Callable:
    """Predictive mean and latent standard deviation under jit, float64, from the
    Cholesky factor and alpha computed once at fit (as every library caches them)."""
    enable_x64(jax)
    jnp = jax.numpy
    d = X.shape[1]
    lengthscale, variance, noise = np.exp(theta[:d]), float(np.exp(theta[d])), float(np.exp(theta[d + 1]))
    K = np.asarray(_jax_gp_kernel(jnp, X, X, lengthscale, variance)) + noise * np.eye(len(X))
    L = np.linalg.cholesky(K)
    alpha = np.linalg.solve(L.T, np.linalg.solve(L, y))

    @jax.jit
    def predict(L, alpha, X, X_test):
        K_star = _jax_gp_kernel(jnp, X_test, X, lengthscale, variance)
        v = jax.scipy.linalg.solve_triangular(L, K_star.T, lower=True)
        return K_star @ alpha, jnp.sqrt(jnp.maximum(variance - jnp.sum(v * v, 0), 0.0))

    args = tuple(jax.device_put(a) for a in (L, alpha, X, X_test))
    call = _blocking(jax, lambda: predict(*args))
    mean, std = call()
    check_close("JAX predictive mean", ours[0], mean, rtol=1e-6, atol=1e-8)
    check_close("JAX predictive std", ours[1], std, rtol=1e-5, atol=1e-6)
    return call


def _gpytorch_model(torch, gpytorch, X, y, theta):
    """An exact ARD GP in float64 with hyperparameters set to ``theta``."""
    d = X.shape[1]
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
    likelihood = gpytorch.likelihoods.GaussianLikelihood(
        noise_constraint=gpytorch.constraints.GreaterThan(1e-8)).double()

    class ExactGP(gpytorch.models.ExactGP):
        def __init__(self):
            super().__init__(X_t, y_t, likelihood)
            self.mean_module = gpytorch.means.ZeroMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(
                gpytorch.kernels.RBFKernel(ard_num_dims=d))

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(self.mean_module(x),
                                                             self.covar_module(x))

    model = ExactGP().double()
    model.covar_module.base_kernel.lengthscale = torch.from_numpy(np.exp(theta[:d]))
    model.covar_module.outputscale = float(np.exp(theta[d]))
    likelihood.noise = float(np.exp(theta[d + 1]))
    return model, likelihood, X_t, y_t


def gpytorch_lml_fn(torch, gpytorch, X, y, theta, ours) -> Callable:
    """``ExactMarginalLogLikelihood`` and ``backward()`` to every hyperparameter, float64,
    Cholesky at every size; checked on the LML (GPyTorch reports it divided by n)."""
    model, likelihood, X_t, y_t = _gpytorch_model(torch, gpytorch, X, y, theta)
    model.train()
    likelihood.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    params = list(model.parameters())
    n = len(y)

    def call():
        with gpytorch.settings.max_cholesky_size(10**9):
            for param in params:
                param.grad = None
            value = mll(model(X_t), y_t)
            value.backward()
        return float(value.detach()) * n

    check_close("GPyTorch LML", ours[0], call(), rtol=1e-6)
    return call


def gpytorch_predict_fn(torch, gpytorch, X, y, X_test, theta, ours) -> Callable:
    """The posterior of ``model(X_test)`` in eval mode (mean and latent variance),
    float64, exact (no LOVE), the training factor cached by the first call."""
    model, likelihood, _X_t, _y_t = _gpytorch_model(torch, gpytorch, X, y, theta)
    model.eval()
    likelihood.eval()
    X_test_t = torch.from_numpy(X_test)

    def call():
        with torch.no_grad(), gpytorch.settings.max_cholesky_size(10**9), \
                gpytorch.settings.fast_pred_var(False), gpytorch.settings.skip_posterior_variances(False):
            posterior = model(X_test_t)
            return posterior.mean, posterior.variance.clamp_min(0.0).sqrt()

    mean, std = call()
    check_close("GPyTorch predictive mean", ours[0], mean.numpy(), rtol=1e-5, atol=1e-6)
    check_close("GPyTorch predictive std", ours[1], std.numpy(), rtol=1e-5, atol=1e-6)
    return call


# ---- VAE step, reparameterisation, Adam (float32) -------------------------------------------
def _jax_adam(jnp, params, grads, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    """Adam (Kingma & Ba, Algorithm 1) on matching tuples of arrays."""
    m = tuple(beta1 * mi + (1 - beta1) * g for mi, g in zip(m, grads))
    v = tuple(beta2 * vi + (1 - beta2) * g * g for vi, g in zip(v, grads))
    step = lr * jnp.sqrt(1 - beta2**t) / (1 - beta1**t)
    params = tuple(p - step * mi / (jnp.sqrt(vi) + eps * jnp.sqrt(1 - beta2**t))
                   for p, mi, vi in zip(params, m, v))
    return params, m, v


def jax_vae_step_fn(jax, state: dict, data: np.ndarray, ours_loss: Callable) -> Callable:
    """One Bernoulli-VAE training step (noise, loss, gradient, Adam) as one jitted call.

    ``state``: minivae's parameters by name (enc.0, enc.mu, enc.logvar, dec.0, dec.out);
    ``ours_loss(eps)`` minivae's mean negative ELBO at those parameters for noise ``eps``
    of shape (batch, k), against which the peer's loss is checked. The parameters and both
    moments are donated, so XLA updates them in place.
    """
    jnp = jax.numpy
    names = [f"{layer}.{kind}" for layer in ("enc.0", "enc.mu", "enc.logvar", "dec.0", "dec.out")
             for kind in ("W", "b")]
    batch, k = data.shape[0], state["enc.mu.W"].shape[1]

    def neg_elbo(params, X, eps):
        W0, b0, Wmu, bmu, Wlv, blv, Wd, bd, Wo, bo = params
        hidden = jax.nn.relu(X @ W0 + b0)
        mu, logvar = hidden @ Wmu + bmu, hidden @ Wlv + blv
        z = mu + jnp.exp(0.5 * logvar) * eps
        logits = jax.nn.relu(z @ Wd + bd) @ Wo + bo
        nll = jnp.sum(jax.nn.softplus(logits) - X * logits)
        kl = 0.5 * jnp.sum(jnp.exp(logvar) + mu * mu - 1.0 - logvar)
        return (nll + kl) / batch

    def step(params, m, v, t, key, X):
        key, sub = jax.random.split(key)
        eps = jax.random.normal(sub, (batch, k), dtype=jnp.float32)
        loss, grads = jax.value_and_grad(neg_elbo)(params, X, eps)
        params, m, v = _jax_adam(jnp, params, grads, m, v, t)
        return params, m, v, t + 1.0, key, loss

    eps_check = np.random.default_rng(5).standard_normal((batch, k), dtype=np.float32)
    params = tuple(jax.device_put(np.array(state[name], dtype=np.float32)) for name in names)
    X = jax.device_put(data)
    check_close("JAX VAE loss", ours_loss(eps_check), jax.jit(neg_elbo)(params, X, eps_check),
                rtol=1e-4)
    jitted = jax.jit(step, donate_argnums=(0, 1, 2))
    zeros = tuple(jnp.zeros_like(p) for p in params)
    carry = [params, zeros, tuple(jnp.zeros_like(p) for p in params),
             jnp.float32(1.0), jax.random.key(0)]

    def call():
        out = jitted(*carry, X)
        carry[:] = out[:-1]
        return jax.block_until_ready(out[-1])

    return call


def jax_reparam_fn(jax, mu, logvar, eps, dz, ours) -> Callable:
    """``z = mu + exp(logvar/2) eps`` and its backward (dmu, dlogvar) as one jitted call;
    ``ours`` is minivae's ``(z, dmu, dlogvar)``."""
    jnp = jax.numpy

    @jax.jit
    def forward_backward(mu, logvar, eps, dz):
        scale = jnp.exp(0.5 * logvar)
        z = mu[None] + scale[None] * eps
        return z, dz.sum(0), 0.5 * scale * (dz * eps).sum(0)

    args = tuple(jax.device_put(a) for a in (mu, logvar, eps, dz))
    call = _blocking(jax, lambda: forward_backward(*args))
    for name, mine, theirs in zip(("z", "dmu", "dlogvar"), ours, call()):
        check_close(f"JAX reparam {name}", mine, theirs, rtol=1e-5, atol=1e-6)
    return call


def jax_adam_fn(jax, param, grad) -> Callable:
    """One Adam step over a flat float32 vector, jitted, parameters and moments donated."""
    jnp = jax.numpy

    def step(p, m, v, t, g):
        (p,), (m,), (v,) = _jax_adam(jnp, (p,), (g,), (m,), (v,), t)
        return p, m, v, t + 1.0

    jitted = jax.jit(step, donate_argnums=(0, 1, 2))
    carry = [jax.device_put(param.copy()), jnp.zeros_like(param), jnp.zeros_like(param),
             jnp.float32(1.0)]
    g = jax.device_put(grad)

    def call():
        carry[:] = jitted(*carry, g)
        return jax.block_until_ready(carry[0])

    return call
