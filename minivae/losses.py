"""Log-likelihoods of the decoder and the KL divergence of the encoder, value and gradient.

Every value function returns one number per example (row), in nats; every gradient
function returns the gradient of ``scale * sum(values)`` with respect to its inputs, so a
caller that averages over a batch passes ``scale = 1 / n``. Derivations:
docs/derivations.md, "Bernoulli log-likelihood from logits", "Gaussian log-likelihood"
and "KL divergence to N(0, I)".

Functions work on NumPy or CuPy arrays alike.
"""

from __future__ import annotations

import math

import numpy as np

from .kernels import bernoulli_nll_and_grad as _bernoulli_kernel
from .kernels._cuda import array_module
from .nn import sigmoid, softplus

LOG_2PI = math.log(2.0 * math.pi)


# ---- Bernoulli decoder -----------------------------------------------------------------


def bernoulli_nll(logits, X):
    """Negative Bernoulli log-likelihood per example, from logits.

    Parameters
    ----------
    logits : (n, D) array
        Decoder outputs ``f``; the Bernoulli mean is ``sigmoid(f)``.
    X : (n, D) array
        Data in [0, 1] (binary, or grey levels used as soft targets).

    Returns
    -------
    nll : (n,) array
        ``-log p(x | f) = sum_d softplus(f_d) - x_d f_d``.

    Notes
    -----
    .. math:: -\\log p(x\\mid f) = \\sum_d \\big[\\log(1 + e^{f_d}) - x_d f_d\\big]

    computed with an overflow-free softplus, never as ``log(sigmoid(f))``.
    """
    nll_terms = softplus(logits)
    nll_terms -= X * logits
    return nll_terms.sum(axis=1)


def bernoulli_nll_grad(logits, X, scale=1.0):
    """Gradient of ``scale * sum(bernoulli_nll(logits, X))`` with respect to the logits.

    Derivation: docs/derivations.md, "Bernoulli log-likelihood from logits".

    Returns
    -------
    dlogits : (n, D) array
        ``scale * (sigmoid(logits) - X)``.
    """
    dlogits = sigmoid(logits)
    dlogits -= X
    dlogits *= scale
    return dlogits


def bernoulli_nll_and_grad(logits, X, scale=1.0, impl="cpu"):
    """``(bernoulli_nll(logits, X), bernoulli_nll_grad(logits, X, scale))`` in one fused pass.

    Derivation: docs/derivations.md, "Bernoulli log-likelihood from logits".

    Parameters
    ----------
    logits, X : (n, D) arrays of one float dtype
    scale : float
    impl : {"cpu", "cuda", "reference"}
        The kernel implementation (:func:`minivae.kernels.bernoulli_nll_and_grad`); "cpu"
        on CuPy arrays runs the cuda kernel.

    Notes
    -----
    The kernel evaluates a cancellation-free form: with ``a = exp(-|f|)``,
    ``softplus(f) - x f = log1p(a) + (max(f, 0) - x f)`` and ``sigmoid(f) - x`` as
    ``((1 - x) - x a) / (1 + a)`` for ``f >= 0``, ``(a (1 - x) - x) / (1 + a)`` otherwise, so
    the gradient for a binary ``x`` stays accurate where ``sigmoid(f)`` rounds to 1.
    """
    if impl == "cpu" and array_module(logits) is not np:
        impl = "cuda"
    return _bernoulli_kernel(logits, X, scale, impl=impl)


def decoder_nll_and_doutputs(outputs: dict, X, scale=1.0, fixed_logvar=None, impl="cpu"):
    """A decoder's ``-log p(x | outputs)`` per row and the gradients of ``scale * sum(nll)``
    with respect to its output heads, for the Bernoulli or the Gaussian likelihood.

    Derivation: docs/derivations.md, "Bernoulli log-likelihood from logits" and "Gaussian
    log-likelihood".

    Parameters
    ----------
    outputs : dict head -> (n, D) array
        ``{"out": logits}`` (Bernoulli), ``{"mean": m, "logvar": l}`` (Gaussian with a
        learned variance) or ``{"mean": m}`` (Gaussian, with ``fixed_logvar``).
    X : (n, D) array
    scale : float
    fixed_logvar : float or None
        The log of a fixed Gaussian variance; its head gets no gradient.
    impl : {"cpu", "cuda", "reference"}
        The Bernoulli kernel's implementation.

    Returns
    -------
    nll : (n,) array
    doutputs : dict head -> (n, D) array
        One gradient per head in ``outputs``.
    """
    if "out" in outputs:
        nll, dlogits = bernoulli_nll_and_grad(outputs["out"], X, scale, impl=impl)
        return nll, {"out": dlogits}
    logvar = outputs["logvar"] if fixed_logvar is None else fixed_logvar
    nll = gaussian_nll(outputs["mean"], logvar, X)
    dmean, dlogvar = gaussian_nll_grad(outputs["mean"], logvar, X, scale)
    doutputs = {"mean": dmean}
    if fixed_logvar is None:
        doutputs["logvar"] = dlogvar
    return nll, doutputs


# ---- Gaussian decoder ------------------------------------------------------------------


def gaussian_nll(mean, logvar, X):
    """Negative Gaussian log-likelihood per example with per-entry log-variance.

    Parameters
    ----------
    mean : (n, D) array
    logvar : (n, D) array, or a scalar (a fixed variance ``exp(logvar)``)
    X : (n, D) array

    Returns
    -------
    nll : (n,) array

    Notes
    -----
    .. math:: -\\log p(x\\mid m, v) = \\tfrac12 \\sum_d \\big[\\log 2\\pi + \\log v_d
              + (x_d - m_d)^2 / v_d\\big]
    """
    xp = array_module(mean)
    residual = X - mean
    terms = residual * residual
    terms *= xp.exp(-xp.asarray(logvar, dtype=mean.dtype))
    terms += logvar
    return 0.5 * (terms.sum(axis=1) + X.shape[1] * LOG_2PI)


def gaussian_nll_grad(mean, logvar, X, scale=1.0):
    """Gradient of ``scale * sum(gaussian_nll(mean, logvar, X))``.

    Derivation: docs/derivations.md, "Gaussian log-likelihood".

    Returns
    -------
    dmean : (n, D) array
        ``scale * (mean - X) / v``.
    dlogvar : (n, D) array
        ``scale * 0.5 * (1 - (X - mean)^2 / v)`` (the gradient with respect to a learned
        log-variance; ignore it when the variance is fixed).
    """
    xp = array_module(mean)
    inv_var = xp.exp(-xp.asarray(logvar, dtype=mean.dtype))
    dmean = mean - X
    dmean *= inv_var
    dlogvar = dmean * (X - mean)
    dlogvar += 1
    dlogvar *= 0.5 * scale
    dmean *= scale
    return dmean, dlogvar


# ---- KL to the standard-normal prior ---------------------------------------------------


def kl_std_normal(mu, logvar):
    """``KL(N(mu, diag(exp(logvar))) || N(0, I))`` per example.

    Parameters
    ----------
    mu, logvar : (n, k) arrays

    Returns
    -------
    kl : (n,) array

    Notes
    -----
    .. math:: \\mathrm{KL} = \\tfrac12 \\sum_j \\big[e^{\\ell_j} + \\mu_j^2 - 1 - \\ell_j\\big]

    (Kingma & Welling 2014, Appendix B), with :math:`\\ell = \\log\\sigma^2`.
    """
    xp = array_module(mu)
    terms = xp.exp(logvar)
    terms += mu * mu
    terms -= 1
    terms -= logvar
    return 0.5 * terms.sum(axis=1)


def kl_std_normal_grad(mu, logvar, scale=1.0):
    """Gradient of ``scale * sum(kl_std_normal(mu, logvar))``.

    Derivation: docs/derivations.md, "KL divergence to N(0, I)".

    Returns
    -------
    dmu : (n, k) array
        ``scale * mu``.
    dlogvar : (n, k) array
        ``scale * 0.5 * (exp(logvar) - 1)``.
    """
    xp = array_module(mu)
    dmu = scale * mu
    dlogvar = xp.exp(logvar)
    dlogvar -= 1
    dlogvar *= 0.5 * scale
    return dmu, dlogvar
