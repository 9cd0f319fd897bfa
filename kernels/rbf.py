"""The RBF (squared-exponential) kernel matrix and its gradient contraction.

.. math::

    k(x_i, y_j) = s\\, a_i\\, b_j \\exp\\Big(-\\tfrac12 \\sum_k (x_{ik} - y_{jk})^2 / l_k^2\\Big)

with signal variance ``s``, isotropic or per-dimension (ARD) lengthscales ``l``, and
optional per-point amplitudes ``a`` (rows of X) and ``b`` (rows of Y). With amplitudes
``a_i = sqrt(sigma_i)`` this is the kernel of Variational Autoencoded Regression,
``sqrt(sigma_i sigma_j) exp(-||x_i - x_j||^2 / 2 l^2)``; it stays positive semi-definite.

Implementations (same signature, ``impl=`` picks): ``reference`` (NumPy, this file),
``cpu`` (Numba) and ``cuda`` (Numba-CUDA).
"""

from __future__ import annotations

import numpy as np

# TODO(rbf helper): cpu and cuda implementations replace the NotImplementedError below.


def _check_lengthscale(lengthscale, d, dtype):
    ls = np.asarray(lengthscale, dtype=dtype).reshape(-1)
    if ls.size not in (1, d):
        raise ValueError(
            f"lengthscale has {ls.size} values but X has {d} columns; give one value "
            f"(isotropic) or one per column (ARD)"
        )
    if not np.all(ls > 0):
        raise ValueError(f"lengthscale must be positive, got {ls}")
    return ls


def rbf_matrix_reference(X, Y=None, lengthscale=1.0, variance=1.0, amp_x=None, amp_y=None):
    """Kernel matrix K(X, Y), plain NumPy (the specification).

    Parameters
    ----------
    X : (n, d) array
    Y : (m, d) array or None
        None means Y = X (and amp_y = amp_x).
    lengthscale : float or (d,) array
    variance : float
    amp_x : (n,) array or None
    amp_y : (m,) array or None

    Returns
    -------
    K : (n, m) array, dtype of X
    """
    X = np.asarray(X)
    symmetric = Y is None
    Y = X if symmetric else np.asarray(Y)
    ls = _check_lengthscale(lengthscale, X.shape[1], X.dtype)
    diff = (X[:, None, :] - Y[None, :, :]) / ls
    K = variance * np.exp(-0.5 * np.sum(diff * diff, axis=-1))
    if symmetric:
        amp_y = amp_x
    if amp_x is not None:
        K = K * np.asarray(amp_x)[:, None]
    if amp_y is not None:
        K = K * np.asarray(amp_y)[None, :]
    return K.astype(X.dtype, copy=False)


def rbf_grad_contract_reference(W, X, lengthscale=1.0, variance=1.0, amp=None):
    """The contractions ``0.5 * sum_ij W_ij dK_ij/dtheta`` of K = K(X, X), plain NumPy.

    Parameters
    ----------
    W : (n, n) array
        The weight matrix; for the GP log marginal likelihood, ``alpha alpha^T - K^-1``.
    X : (n, d) array
    lengthscale : float or (d,) array
    variance : float
    amp : (n,) array or None
        Per-point amplitudes a (the kernel is s a_i a_j exp(...)).

    Returns
    -------
    dtheta : (p + 1,) array
        ``0.5 sum W dK/dlog l_k`` for each lengthscale (p = 1 isotropic, p = d ARD), then
        ``0.5 sum W dK/dlog s``.
    damp : (n,) array or None
        ``0.5 sum_ij W_ij dK_ij/da_p`` for each p, or None without amplitudes.

    Notes
    -----
    dK_ij/dlog l_k = K_ij (x_ik - x_jk)^2 / l_k^2 ;  dK_ij/dlog s = K_ij ;
    dK_ij/da_p = s E_ij (delta_ip a_j + a_i delta_jp), E the exponential factor.
    This reference forms the n x n x d tensor; the fast implementations never do.
    """
    X = np.asarray(X)
    W = np.asarray(W)
    ls = _check_lengthscale(lengthscale, X.shape[1], X.dtype)
    diff = (X[:, None, :] - X[None, :, :]) / ls
    sq = diff * diff
    K0 = variance * np.exp(-0.5 * np.sum(sq, axis=-1))  # without amplitudes
    K = K0 if amp is None else K0 * np.outer(amp, amp)
    WK = W * K
    g_ls = 0.5 * np.einsum("ij,ijk->k", WK, sq)
    if ls.size == 1:
        g_ls = np.array([g_ls.sum()])
    dtheta = np.concatenate([g_ls, [0.5 * WK.sum()]]).astype(X.dtype, copy=False)
    damp = None
    if amp is not None:
        amp = np.asarray(amp)
        WK0 = W * K0
        damp = (0.5 * (WK0 @ amp + WK0.T @ amp)).astype(X.dtype, copy=False)
    return dtheta, damp


def rbf_matrix(X, Y=None, lengthscale=1.0, variance=1.0, amp_x=None, amp_y=None, impl="cpu"):
    """Kernel matrix K(X, Y); see :func:`rbf_matrix_reference` for the parameters."""
    if impl == "reference":
        return rbf_matrix_reference(X, Y, lengthscale, variance, amp_x, amp_y)
    raise NotImplementedError(f"rbf_matrix impl={impl!r} not written yet")


def rbf_grad_contract(W, X, lengthscale=1.0, variance=1.0, amp=None, impl="cpu"):
    """Gradient contractions; see :func:`rbf_grad_contract_reference`."""
    if impl == "reference":
        return rbf_grad_contract_reference(W, X, lengthscale, variance, amp)
    raise NotImplementedError(f"rbf_grad_contract impl={impl!r} not written yet")
