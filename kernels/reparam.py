"""The reparameterisation trick (Kingma & Welling 2014, Sec. 2.4) and its backward.

Forward: ``z[l] = mu + exp(logvar / 2) * eps[l]`` for each of L samples.
Backward: ``dmu = sum_l dz[l]``, ``dlogvar = 0.5 * exp(logvar / 2) * sum_l dz[l] * eps[l]``
(docs/derivations.md, "Reparameterisation").

Implementations (same signature, ``impl=`` picks): ``reference`` (NumPy, this file),
``cpu`` (Numba) and ``cuda`` (Numba-CUDA).
"""

from __future__ import annotations

import numpy as np

# TODO(vae helper): cpu and cuda implementations.


def reparam_forward_reference(mu, logvar, eps):
    """Samples ``z = mu + exp(logvar/2) * eps``.

    Parameters
    ----------
    mu, logvar : (n, k) arrays
    eps : (L, n, k) array of standard-normal draws

    Returns
    -------
    z : (L, n, k) array
    """
    return mu[None] + np.exp(0.5 * logvar)[None] * eps


def reparam_backward_reference(dz, logvar, eps):
    """Gradients of the loss with respect to mu and logvar, given ``dz`` of shape (L, n, k).

    Returns
    -------
    dmu, dlogvar : (n, k) arrays
    """
    dmu = dz.sum(axis=0)
    dlogvar = 0.5 * np.exp(0.5 * logvar) * (dz * eps).sum(axis=0)
    return dmu, dlogvar


def reparam_forward(mu, logvar, eps, impl="cpu"):
    """``z = mu + exp(logvar/2) * eps``; see :func:`reparam_forward_reference`."""
    if impl == "reference":
        return reparam_forward_reference(mu, logvar, eps)
    raise NotImplementedError(impl)


def reparam_backward(dz, logvar, eps, impl="cpu"):
    """``(dmu, dlogvar)``; see :func:`reparam_backward_reference`."""
    if impl == "reference":
        return reparam_backward_reference(dz, logvar, eps)
    raise NotImplementedError(impl)
