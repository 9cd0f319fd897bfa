"""Exact Gaussian-process regression by Cholesky factorisation.

The model (Rasmussen & Williams, "Gaussian Processes for Machine Learning", 2006, ch. 2
and 5): ``y = f(X) + eps`` with ``f ~ GP(0, k)``, ``eps ~ N(0, noise I)`` and the RBF
kernel of :mod:`minivae.kernels.rbf`,

.. math::

    k(x_i, x_j) = s\\, a_i a_j \\exp\\Big(-\\tfrac12 \\sum_k (x_{ik} - x_{jk})^2 / l_k^2\\Big)

(amplitudes ``a`` only in :func:`posterior_mean`). The hyperparameters live in log space
in one vector ``theta = (log l_1 .. log l_p, log s, log noise)``, ``p = 1`` (isotropic)
or ``p = d`` (ARD).

Contents, top to bottom:

- :func:`cholesky_with_jitter`: the factorisation every solve here goes through;
- :func:`log_marginal_likelihood`: the LML and its analytic gradient (Algorithm 2.1,
  eq. 5.9) without any n x n x d tensor and with one n x n work matrix on the host;
- :func:`posterior_mean` and :func:`posterior_mean_backward`: the posterior mean as a
  differentiable function of the training targets, the hyperparameters and per-point
  amplitudes (used by Variational Autoencoded Regression);
- :class:`GPRegressor`: fit (L-BFGS-B with restarts), predict, sample, save, load.

The derivations are in docs/derivations.md, section "Gaussian processes".
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from os import PathLike

import numpy as np
from numpy.typing import ArrayLike, DTypeLike
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted, validate_data

from .backend import (
    Backend,
    add_to_diagonal,
    cho_solve,
    cholesky_with_jitter,
    get_backend,
    lml_weight_matrix,
    resolve_dtype,
    solve_lower,
)
from .errors import DataError, JitterWarning, NotPositiveDefiniteError
from .kernels import rbf_grad_contract, rbf_matrix
from .validation import (
    check_finite,
    check_representable,
    check_samples,
    check_sum_of_squares,
    float_host_array,
    is_int,
)

#: Default hyperparameter bounds (natural units, applied to every hyperparameter), as in
#: scikit-learn's kernels.
DEFAULT_BOUNDS = (1e-5, 1e5)

_LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------------------
# The GP core: one factorisation, its solves, the predictive moments
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Factor:
    """``K(X, X) + noise I = L L^T`` for one training set and one theta.

    Attributes
    ----------
    X : (n, d) array on ``backend``
        Training inputs.
    lengthscale : float or (p,) ndarray
        A float when isotropic, else a host array of the ``p = d`` lengthscales.
    variance : float
        Signal variance ``s``.
    noise : float
        Noise variance.
    amplitudes : (n,) array on ``backend`` or None
        Per-point amplitudes ``a``; the kernel is ``s a_i a_j exp(...)``.
    L : (n, n) array on ``backend``
        Lower Cholesky factor of ``K(X, X) + noise I`` (plus ``jitter`` on the diagonal).
    jitter : float
        Jitter that was added to the diagonal (0.0 if none).
    backend : Backend
    """

    X: object
    lengthscale: float | np.ndarray
    variance: float
    noise: float
    amplitudes: object
    L: object
    jitter: float
    backend: Backend

    def solve(self, B):
        """``(K + noise I)^-1 B`` by two triangular solves; ``B`` (n,) or (n, k)."""
        return cho_solve(self.L, B, self.backend)

    def cross(self, X_test, amp_test=None):
        """``K(X_test, X)``, shape (m, n), with amplitudes ``b_i a_j`` when given.

        If only the training amplitudes or only ``amp_test`` is given, the other is ones.
        """
        amp_x, amp_s = _amplitude_pair(self.backend.xp, self.X, X_test, self.amplitudes, amp_test)
        return rbf_matrix(X_test, self.X, self.lengthscale, self.variance,
                          amp_x=amp_s, amp_y=amp_x, impl=self.backend.kernel_impl)


def _amplitude_pair(xp, X, X_test, amp, amp_test):
    """Amplitudes ``(a, b)`` of ``K(X_test, X)``: both None, or the missing one as ones."""
    if amp is None and amp_test is None:
        return None, None
    a = xp.ones(X.shape[0], X.dtype) if amp is None else amp
    b = xp.ones(X_test.shape[0], X.dtype) if amp_test is None else amp_test
    return a, b


def factorise(X, theta: ArrayLike, amplitudes=None, backend: Backend | str | None = None, *,
              warn: bool = True, out=None) -> Factor:
    """Factorise ``K(X, X) + noise I`` at ``theta`` (Algorithm 2.1, line 2).

    Parameters
    ----------
    X : (n, d) array
        Training inputs (moved to ``backend``).
    theta : (p + 2,) array
        ``(log l_1..l_p, log s, log noise)``, ``p`` in {1, d}.
    amplitudes : (n,) array or None
        Per-point amplitudes ``a``.
    backend : Backend or str, optional
        Default ``"cpu"``.
    warn : bool, default True
        Report added jitter as a :class:`JitterWarning`.
    out : (n, n) C-ordered array on ``backend`` or None
        Memory for K (on the host L is formed in it); reused, it saves a new n x n array.

    Returns
    -------
    Factor
    """
    backend = get_backend("cpu" if backend is None else backend)
    xp = backend.xp
    X = xp.asarray(X)
    amplitudes = None if amplitudes is None else xp.asarray(amplitudes)
    lengthscale, variance, noise = unpack_theta(theta, X.shape[1])
    K = rbf_matrix(X, None, lengthscale, variance, amp_x=amplitudes, impl=backend.kernel_impl,
                   out=out)
    add_to_diagonal(K, noise, xp)
    # Line 2: L = cholesky(K + noise I)
    L, jitter = cholesky_with_jitter(K, backend, overwrite_a=True, warn=warn)
    return Factor(X, lengthscale, variance, noise, amplitudes, L, float(jitter), backend)


def predictive(factor: Factor, alpha, X_test, amp_test=None, *, return_var: bool = False,
               return_cov: bool = False):
    """Predictive mean and, if asked, variance or covariance of the latent ``f``.

    Parameters
    ----------
    factor : Factor
    alpha : (n,) or (n, k) array
        ``factor.solve(Y)`` (Algorithm 2.1, line 3).
    X_test : (m, d) array on ``factor.backend``
    amp_test : (m,) array or None
        Amplitudes ``b`` of the test points.
    return_var, return_cov : bool
        At most one: the variances (m,) or the covariance (m, m) of ``f(X_test)``,
        without the noise term.

    Returns
    -------
    mean : (m,) or (m, k) array
    spread : (m,) or (m, m) array, or None
    """
    if return_var and return_cov:
        raise ValueError("ask for return_var or return_cov, not both")
    K_star = factor.cross(X_test, amp_test)
    # Line 4: mean = K(X*, X) alpha
    mean = K_star @ alpha
    if not (return_var or return_cov):
        return mean, None
    xp = factor.backend.xp
    # Line 5: v = L \ K(X, X*), on the host in the memory of K(X*, X)
    v = solve_lower(factor.L, K_star.T, factor.backend)
    del K_star
    # Line 6: V[f*] = K(X*, X*) - v^T v
    if return_cov:
        amp = None if amp_test is None else xp.asarray(amp_test)
        K_test = rbf_matrix(X_test, None, factor.lengthscale, factor.variance, amp_x=amp,
                            impl=factor.backend.kernel_impl)
        return mean, K_test - v.T @ v
    prior = factor.variance if amp_test is None else factor.variance * xp.asarray(amp_test) ** 2
    # Round-off can push a variance slightly below 0 where it is ~0: clip at 0.
    return mean, xp.maximum(prior - xp.einsum("ij,ij->j", v, v), 0.0)


def _lml_from(factor, Y, alpha) -> float:
    """Algorithm 2.1, line 7, summed over the columns of ``Y`` (n, t)."""
    xp = factor.backend.xp
    n, t = Y.shape
    # Line 7: log p(y|X) = -1/2 y^T alpha - sum_i log L_ii - n/2 log 2 pi, summed over outputs
    return (
        -0.5 * float(xp.sum(Y * alpha))
        - t * float(xp.sum(xp.log(xp.diagonal(factor.L))))
        - 0.5 * n * t * _LOG_2PI
    )


# ---------------------------------------------------------------------------------------
# Hyperparameters
# ---------------------------------------------------------------------------------------


def unpack_theta(theta: ArrayLike, n_features: int) -> tuple[float | np.ndarray, float, float]:
    """Split ``theta = (log l_1..l_p, log s, log noise)`` into natural units.

    Parameters
    ----------
    theta : (p + 2,) array
        ``p = 1`` (isotropic) or ``p = n_features`` (ARD).
    n_features : int

    Returns
    -------
    lengthscale : float or (p,) ndarray
        A float when isotropic.
    variance : float
    noise : float
        The noise variance.
    """
    if hasattr(theta, "get") and not isinstance(theta, np.ndarray):
        theta = theta.get()  # a CuPy array: theta is small and read on the host
    theta = np.asarray(theta, dtype=np.float64)
    if theta.ndim != 1 or theta.size not in (3, n_features + 2):
        raise ValueError(
            f"theta has shape {theta.shape}; expected ({3},) (isotropic) or "
            f"({n_features + 2},) (ARD with {n_features} features): log lengthscale(s), "
            "log variance, log noise"
        )
    if np.any(np.isnan(theta)) or np.any(theta == np.inf) or np.any(theta[:-1] == -np.inf):
        raise ValueError(
            f"theta = {theta} must be finite (only log noise may be -inf, for noise 0)"
        )
    log_ls = theta[:-2]
    lengthscale = float(np.exp(log_ls[0])) if log_ls.size == 1 else np.exp(log_ls)
    return lengthscale, float(np.exp(theta[-2])), float(np.exp(theta[-1]))


# ---------------------------------------------------------------------------------------
# Log marginal likelihood
# ---------------------------------------------------------------------------------------


def log_marginal_likelihood(X, Y, theta: ArrayLike, backend: Backend | str | None = None,
                            eval_gradient: bool = False):
    """Log marginal likelihood of targets ``Y`` under the GP, summed over output columns.

    Parameters
    ----------
    X : (n, d) array on ``backend``
    Y : (n, t) or (n,) array on ``backend``
        ``t`` outputs sharing one kernel.
    theta : (p + 2,) array
        ``(log l_1..l_p, log s, log noise)``, ``p`` in {1, d}.
    backend : Backend or str, optional
        Default ``"cpu"``.
    eval_gradient : bool, default False

    Returns
    -------
    lml : float
    dtheta : (p + 2,) ndarray, only when ``eval_gradient``
        d lml / d theta.

    Notes
    -----
    With ``A = K + noise I = L L^T`` and ``alpha = A^-1 Y`` (Rasmussen & Williams,
    Algorithm 2.1 and eq. 5.9; derivation in docs/derivations.md, "GP log marginal
    likelihood and its gradient"):

    .. math::

        \\log p(Y) = -\\tfrac12 \\operatorname{tr}(Y^T \\alpha) - t \\sum_i \\log L_{ii}
                     - \\tfrac{n t}{2} \\log 2\\pi, \\qquad
        \\frac{\\partial \\log p}{\\partial \\theta_j}
            = \\tfrac12 \\operatorname{tr}\\big(W \\partial A / \\partial \\theta_j\\big),
        \\quad W = \\alpha \\alpha^T - t A^{-1}.

    The kernel terms come from one :func:`minivae.kernels.rbf_grad_contract` call (no
    n x n x d tensor); the noise term is ``0.5 noise tr(W)``. On the host the whole
    computation holds one n x n matrix: K, overwritten by L, then by A^-1, then by W.
    """
    result = _log_marginal_likelihood_and_jitter(X, Y, theta, backend, eval_gradient, warn=True)
    return result[:2] if eval_gradient else result[0]


def _log_marginal_likelihood_and_jitter(X, Y, theta, backend, eval_gradient, warn,
                                        workspace=None):
    """:func:`log_marginal_likelihood` as ``(lml, dtheta or None, jitter)``.

    ``jitter`` is what the factorisation of ``K + noise I`` needed (0.0 normally); with
    ``warn=False`` it is not reported as a :class:`JitterWarning`. ``workspace``: the
    n x n memory for K, L and W (:func:`factorise`'s ``out``).
    """
    backend = get_backend("cpu" if backend is None else backend)
    xp = backend.xp
    Y = Y.reshape(Y.shape[0], -1)
    factor = factorise(X, theta, backend=backend, warn=warn, out=workspace)
    lengthscale, variance, noise, L = factor.lengthscale, factor.variance, factor.noise, factor.L
    jitter, impl = factor.jitter, backend.kernel_impl
    # Line 3: alpha = L^T \ (L \ y)
    alpha = factor.solve(Y)
    lml = _lml_from(factor, Y, alpha)
    if not eval_gradient:
        return lml, None, jitter
    # Eq. 5.9: d lml / d theta_j = 1/2 tr(W dA/dtheta_j), W = alpha alpha^T - t A^-1
    W = lml_weight_matrix(L, alpha, backend)
    noise_term = 0.5 * noise * float(xp.trace(W))
    # W is symmetric, so its transpose (C-ordered when W is Fortran-ordered) has its values.
    kernel_terms, _ = rbf_grad_contract(W.T, X, lengthscale, variance, impl=impl)
    dtheta = np.append(backend.to_host(kernel_terms).astype(np.float64), noise_term)
    return lml, dtheta, jitter


# ---------------------------------------------------------------------------------------
# Posterior mean as a differentiable function (for Variational Autoencoded Regression)
# ---------------------------------------------------------------------------------------


def posterior_mean(X_train, Z, X_test, theta: ArrayLike, amp_train=None, amp_test=None,
                   backend: Backend | str | None = None):
    """GP posterior mean ``K(X*, X) (K(X, X) + noise I)^-1 Z`` and a cache for its backward.

    Parameters
    ----------
    X_train : (N, d) array on ``backend``
        Training inputs (in VAR: the anchors' low-dimensional inputs).
    Z : (N, k) array
        Training targets (in VAR: the anchors' latent codes).
    X_test : (m, d) array
        Where the mean is wanted.
    theta : (p + 2,) array
        ``(log l_1..l_p, log s, log noise)``, ``p`` in {1, d}.
    amp_train : (N,) array or None
        Per-point amplitudes ``a`` of the training points (in VAR ``sqrt(sigma_i)``).
    amp_test : (m,) array or None
        Amplitudes ``b`` of the test points. If only one of the two is given the other
        is taken as ones.
    backend : Backend or str, optional
        Default ``"cpu"``.

    Returns
    -------
    mean : (m, k) array
    cache : dict
        What :func:`posterior_mean_backward` needs.

    Notes
    -----
    The kernel is ``k(x_i, x_j) = s a_i a_j exp(-0.5 sum_k (x_ik - x_jk)^2 / l_k^2)``:

    .. math::

        A = K(X, X) + s_n I = L L^T, \\quad \\alpha = A^{-1} Z, \\quad
        m = K(X_*, X)\\, \\alpha .
    """
    backend = get_backend("cpu" if backend is None else backend)
    xp = backend.xp
    X_train, Z, X_test = (xp.asarray(a) for a in (X_train, Z, X_test))
    amp_train, amp_test = (None if a is None else xp.asarray(a) for a in (amp_train, amp_test))
    _check_posterior_shapes(X_train, Z, X_test, amp_train, amp_test)
    factor = factorise(X_train, theta, amplitudes=amp_train, backend=backend)
    alpha = factor.solve(Z)
    K_star = factor.cross(X_test, amp_test)
    mean = K_star @ alpha
    amp_x, amp_s = _amplitude_pair(xp, X_train, X_test, amp_train, amp_test)
    lengthscale, variance, noise, L = factor.lengthscale, factor.variance, factor.noise, factor.L
    cache = {
        "backend": backend,
        "X_train": X_train,
        "X_test": X_test,
        "lengthscale": lengthscale,
        "variance": variance,
        "noise": noise,
        "amp_train": amp_x,
        "amp_test": amp_s,
        "has_amp_train": amp_train is not None,
        "has_amp_test": amp_test is not None,
        "L": L,
        "alpha": alpha,
        "K_star": K_star,
    }
    return mean, cache


def _check_posterior_shapes(X_train, Z, X_test, amp_train, amp_test) -> None:
    if X_train.ndim != 2 or X_test.ndim != 2 or Z.ndim != 2:
        raise DataError(
            f"posterior_mean needs 2-D X_train, Z and X_test; got shapes {X_train.shape}, "
            f"{Z.shape} and {X_test.shape}"
        )
    if Z.shape[0] != X_train.shape[0]:
        raise DataError(
            f"Z has {Z.shape[0]} rows but X_train has {X_train.shape[0]}; give one target "
            "row per training input"
        )
    if X_test.shape[1] != X_train.shape[1]:
        raise DataError(
            f"X_test has {X_test.shape[1]} columns but X_train has {X_train.shape[1]}"
        )
    for name, amp, rows in (("amp_train", amp_train, X_train.shape[0]),
                            ("amp_test", amp_test, X_test.shape[0])):
        if amp is not None and tuple(amp.shape) != (rows,):
            raise DataError(f"{name} has shape {tuple(amp.shape)}; expected ({rows},)")


def posterior_mean_backward(dmean, cache):
    """Gradients of a loss through :func:`posterior_mean`.

    Derivation: docs/derivations.md, "Backward of the GP posterior mean".

    Parameters
    ----------
    dmean : (m, k) array
        d loss / d mean.
    cache : dict
        From :func:`posterior_mean`.

    Returns
    -------
    grads : dict
        ``dZ`` (N, k); ``dtheta`` (p + 2,) NumPy array in theta's order; ``damp_train``
        (N,) and ``damp_test`` (m,), each None when that amplitude was not given.

    Notes
    -----
    With ``G_A = -dZ alpha^T`` and ``G_* = dmean alpha^T`` (the gradients with respect
    to A and K(X*, X)):

    .. math::

        d\\alpha = K_*^T\\, d m, \\quad dZ = A^{-1} d\\alpha, \\quad
        W = \\begin{pmatrix} G_A + G_A^T & G_*^T \\\\ G_* & 0 \\end{pmatrix},

    and one :func:`minivae.kernels.rbf_grad_contract` call on the stacked inputs
    ``[X; X*]`` with amplitudes ``[a; b]`` and weights W gives the lengthscale and
    variance gradients and both amplitude gradients. The noise gradient is
    ``noise tr(G_A) = -noise sum(dZ * alpha)``.
    """
    backend = cache["backend"]
    xp = backend.xp
    alpha, K_star, L = cache["alpha"], cache["K_star"], cache["L"]
    X_train, X_test = cache["X_train"], cache["X_test"]
    lengthscale, variance, noise = cache["lengthscale"], cache["variance"], cache["noise"]
    n_train = X_train.shape[0]
    dmean = xp.asarray(dmean)
    dalpha = K_star.T @ dmean
    dZ = cho_solve(L, dalpha, backend)
    grad_A = -(dZ @ alpha.T)
    grad_K_star_T = alpha @ dmean.T
    W = xp.zeros((n_train + X_test.shape[0],) * 2, dtype=alpha.dtype)
    W[:n_train, :n_train] = grad_A + grad_A.T
    W[:n_train, n_train:] = grad_K_star_T
    W[n_train:, :n_train] = grad_K_star_T.T
    use_amp = cache["amp_train"] is not None
    amp = xp.concatenate([cache["amp_train"], cache["amp_test"]]) if use_amp else None
    kernel_terms, damp = rbf_grad_contract(
        W, xp.concatenate([X_train, X_test]), lengthscale, variance, amp=amp,
        impl=backend.kernel_impl,
    )
    noise_term = -noise * float(xp.sum(dZ * alpha))
    dtheta = np.append(backend.to_host(kernel_terms).astype(np.float64), noise_term)
    return {
        "dZ": dZ,
        "dtheta": dtheta,
        "damp_train": damp[:n_train] if cache["has_amp_train"] else None,
        "damp_test": damp[n_train:] if cache["has_amp_test"] else None,
    }


# ---------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------


def _check_y(y, n_rows: int) -> np.ndarray:
    """``y`` as a finite (n,) or (n, t) float64 host array."""
    if y is None:
        raise DataError("GPRegressor requires y to be passed, but the target y is None; call "
                        "fit(X, y) with one target per row of X")
    y = float_host_array(y, "y")
    if y.ndim not in (1, 2):
        raise DataError(f"y must be 1-D (n,) or 2-D (n, outputs), got shape {y.shape}")
    if y.shape[0] != n_rows:
        raise DataError(f"y has {y.shape[0]} rows but X has {n_rows}; give one target per row")
    if y.ndim == 2 and y.shape[1] == 0:
        raise DataError("y has zero columns; give at least one output")
    check_finite(y, "y")
    return y


def _check_positive(value, name: str, allow_zero: bool = False) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    ok = (arr >= 0) if allow_zero else (arr > 0)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or not np.all(ok):
        need = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be finite and {need}, got {value!r}")
    return arr


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------


def _bound_problems(theta, log_bounds) -> list[str]:
    """The hyperparameters of an optimum that lie on a bound signalling a scale problem.

    A variance on either bound, a lengthscale on its lower bound or the noise on its upper
    bound mean the data's scale is outside the bounds. A noise variance on its lower bound
    (nearly noise-free data) and a lengthscale on its upper bound (an irrelevant feature
    under ARD) are ordinary optima and are not listed.
    """
    p = theta.size - 2
    low = np.isclose(theta, log_bounds[:, 0], rtol=0, atol=1e-6)
    high = np.isclose(theta, log_bounds[:, 1], rtol=0, atol=1e-6)
    names = [f"lengthscale {k}" for k in range(p)] + ["variance", "noise"]
    return [f"{names[k]} at its {'lower' if low[k] else 'upper'} bound {np.exp(theta[k]):.3g}"
            for k in range(theta.size) if (low[k] and k != p + 1) or (high[k] and p <= k)]


class GPRegressor(RegressorMixin, BaseEstimator):
    """Exact Gaussian-process regression with an RBF kernel, fitted by Cholesky.

    Parameters
    ----------
    lengthscale : float or (d,) array, default 1.0
        Initial (or, with ``optimize=False``, fixed) lengthscale(s). A scalar with
        ``ard=True`` is used for every feature.
    variance : float, default 1.0
        Signal variance ``s`` (the kernel's value at distance 0).
    noise : float, default 1e-2
        Noise VARIANCE (not standard deviation) of the targets. 0 is allowed with
        ``optimize=False`` (noise-free interpolation; jitter keeps it solvable).
    ard : bool, default False
        One lengthscale per feature (automatic relevance determination).
    optimize : bool, default True
        Maximise the log marginal likelihood over the hyperparameters in ``fit``.
    n_restarts : int, default 0
        Extra L-BFGS-B runs from starts drawn uniformly (in log space) within the bounds.
    bounds : None, (low, high) or (p + 2, 2) array-like
        Bounds for the optimiser in natural units, in theta's order (lengthscale(s),
        variance, noise); one pair applies to all. Default ``(1e-5, 1e5)`` for each,
        as scikit-learn's kernels.
    normalize_y : bool, default False
        Subtract each output's mean and divide by its standard deviation before fitting;
        predictions are mapped back.
    dtype : {"float64", "float32"}, default "float64"
    seed : int, default 0
        Seeds the model's Generator (restarts and :meth:`sample_y`).
    device : {"cpu", "gpu", "cuda-sim"}, default "cpu"

    The arguments are stored as given and checked by :meth:`fit`, as scikit-learn's
    estimators do, so ``get_params``, ``set_params`` and ``sklearn.base.clone`` work.

    Attributes
    ----------
    n_features_in_ : int
        Number of input columns seen by :meth:`fit`.
    theta_ : (p + 2,) ndarray
        Fitted ``(log l_1..l_p, log s, log noise)``.
    lengthscale_ : float or (d,) ndarray
    variance_ : float
    noise_ : float
        Fitted noise variance.
    log_marginal_likelihood_value_ : float
        At ``theta_``, summed over outputs (of the normalised targets if normalize_y).
    X_train_ : (n, d) array on the device
    L_ : (n, n) array on the device
        Lower Cholesky factor of ``K + noise_ I``.
    alpha_ : (n, t) array on the device
        ``(K + noise_ I)^-1 y`` (normalised y if normalize_y).
    jitter_ : float
        Jitter that the final factorisation needed (0.0 normally); see
        :func:`cholesky_with_jitter`.

    Notes
    -----
    Fit and predict follow Rasmussen & Williams, Algorithm 2.1 (line numbers in the
    comments); the gradient is their eq. 5.9, derived in docs/derivations.md.
    Several outputs (y of shape (n, t)) share one kernel and one set of hyperparameters;
    their log marginal likelihoods add up.
    """

    def __init__(self, lengthscale: float | ArrayLike = 1.0, variance: float = 1.0,
                 noise: float = 1e-2, ard: bool = False, optimize: bool = True,
                 n_restarts: int = 0, bounds: ArrayLike | None = None, normalize_y: bool = False,
                 dtype: DTypeLike = "float64", seed: int = 0, device: str = "cpu") -> None:
        self.lengthscale = lengthscale
        self.variance = variance
        self.noise = noise
        self.ard = ard
        self.optimize = optimize
        self.n_restarts = n_restarts
        self.bounds = bounds
        self.normalize_y = normalize_y
        self.dtype = dtype
        self.seed = seed
        self.device = device

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # y of shape (n, t): t outputs, one kernel
        return tags

    # ---- hyperparameters -----------------------------------------------------------

    def _check_params(self) -> None:
        """Check the constructor's arguments; resolve the dtype and the device's backend."""
        lengthscale = _check_positive(self.lengthscale, "lengthscale")
        if lengthscale.ndim > 1 or (not self.ard and lengthscale.size != 1):
            raise ValueError(f"lengthscale={self.lengthscale!r}: give one value, or one per "
                             "feature with ard=True")
        _check_positive(self.variance, "variance")
        noise = float(_check_positive(self.noise, "noise", allow_zero=True))
        if self.optimize and noise == 0.0:
            raise ValueError(
                "noise=0 cannot be optimised (its log is -inf); give a positive initial "
                "noise, or optimize=False for noise-free interpolation"
            )
        if not is_int(self.n_restarts) or self.n_restarts < 0:
            raise ValueError(f"n_restarts must be a non-negative integer, got {self.n_restarts!r}")
        if not is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} must be a non-negative integer")
        self._dtype = resolve_dtype(self.dtype)
        self._backend = get_backend(self.device)

    def _n_lengthscales(self, n_features: int) -> int:
        return n_features if self.ard else 1

    def _initial_theta(self, n_features: int) -> np.ndarray:
        p = self._n_lengthscales(n_features)
        lengthscale = np.asarray(self.lengthscale, dtype=np.float64).reshape(-1)
        if lengthscale.size not in (1, p):
            raise ValueError(
                f"lengthscale has {lengthscale.size} values but X has {n_features} "
                "features; give one value or one per feature"
            )
        log_ls = np.broadcast_to(np.log(lengthscale), (p,))
        with np.errstate(divide="ignore"):  # noise 0 -> log noise -inf, allowed when fixed
            return np.concatenate([log_ls, np.log([float(self.variance), float(self.noise)])])

    def _log_bounds(self, n_theta: int) -> np.ndarray:
        """Optimiser bounds in log space, shape (n_theta, 2)."""
        bounds = DEFAULT_BOUNDS if self.bounds is None else self.bounds
        arr = np.asarray(bounds, dtype=np.float64)
        if arr.shape == (2,):
            arr = np.tile(arr, (n_theta, 1))
        if arr.shape != (n_theta, 2):
            raise ValueError(
                f"bounds has shape {np.shape(bounds)}; give one (low, high) pair or "
                f"{n_theta} pairs (lengthscale(s), variance, noise)"
            )
        valid = np.all(np.isfinite(arr)) and np.all(arr[:, 0] > 0) and np.all(arr[:, 1] > arr[:, 0])
        if not valid:
            raise ValueError(
                f"bounds {arr.tolist()} must be finite pairs with 0 < low < high "
                "(natural units, not logs)"
            )
        return np.log(arr)

    def _set_hyperparameters(self, theta) -> None:
        self.theta_ = np.asarray(theta, dtype=np.float64).copy()
        self.lengthscale_, self.variance_, self.noise_ = unpack_theta(
            self.theta_, self.n_features_in_
        )

    # ---- fitting -------------------------------------------------------------------

    def fit(self, X: ArrayLike, y: ArrayLike) -> GPRegressor:
        """Fit to inputs ``X`` (n, d) and targets ``y`` (n,) or (n, t).

        With ``optimize=True`` the hyperparameters maximise the log marginal likelihood
        (L-BFGS-B on theta with the analytic gradient, from the initial values and from
        ``n_restarts`` random starts; the best run wins; when it ends on a bound that
        signals a scale problem, once more from the initial values with the noise raised
        to the signal variance).

        Returns
        -------
        self

        Raises
        ------
        DataError
            For NaN/Inf, zero rows, or mismatched lengths.
        NotPositiveDefiniteError
            If the kernel matrix cannot be factorised even with jitter; during
            optimisation the message gives the theta where it happened.
        """
        self._check_params()
        X_host = check_samples(X, "X")
        check_representable(X_host, self._dtype, "X")
        y = _check_y(y, X_host.shape[0])
        validate_data(self, X, skip_check_array=True)  # n_features_in_, feature_names_in_
        X = X_host
        if not self.normalize_y:  # normalised targets are within sqrt(n) of 0: they fit
            check_representable(y, self._dtype, "y")
            check_sum_of_squares(y, self._dtype, "y", "rescale y or use normalize_y=True")
        self._y_ndim = y.ndim
        Y = y.reshape(y.shape[0], -1)
        if self.normalize_y:
            # Moments of Y / max|Y|: the squares of targets beyond 1e154 overflow float64.
            scale = np.max(np.abs(Y), axis=0)
            scale = np.where(scale > 0, scale, 1.0)
            self._y_mean = (Y / scale).mean(axis=0) * scale
            std = (Y / scale).std(axis=0) * scale
            self._y_std = np.where(std > 0, std, 1.0)  # a constant output is only centred
        else:
            self._y_mean = np.zeros(Y.shape[1])
            self._y_std = np.ones(Y.shape[1])
        xp_asarray = self._backend.asarray
        self.X_train_ = xp_asarray(X, dtype=self._dtype)
        self.y_train_ = xp_asarray((Y - self._y_mean) / self._y_std, dtype=self._dtype)
        self._rng = np.random.default_rng(self.seed)
        theta = self._initial_theta(self.n_features_in_)
        if self.optimize:
            theta = self._optimize(theta)
        self._set_hyperparameters(theta)
        self._factorize()
        return self

    def _lml(self, theta, eval_gradient, warn=True, workspace=None):
        """``(lml, dtheta or None, jitter)`` of the training data at ``theta``."""
        try:
            return _log_marginal_likelihood_and_jitter(
                self.X_train_, self.y_train_, theta, self._backend, eval_gradient, warn,
                workspace
            )
        except NotPositiveDefiniteError as exc:
            raise NotPositiveDefiniteError(
                f"at theta = {np.array2string(np.asarray(theta), precision=6)} "
                "(log lengthscale(s), log variance, log noise): " + str(exc)
            ) from exc

    def _optimize(self, theta0) -> np.ndarray:
        from scipy.optimize import minimize

        log_bounds = self._log_bounds(theta0.size)
        outside = (theta0 < log_bounds[:, 0]) | (theta0 > log_bounds[:, 1])
        if np.any(outside):
            raise ValueError(
                f"the initial hyperparameters exp(theta) = {np.exp(theta0)} lie outside the "
                f"bounds {np.exp(log_bounds).tolist()}; change the initial values or the bounds"
            )

        jitters = []  # (jitter, theta) of every evaluation
        n = self.X_train_.shape[0]  # one workspace for every evaluation's K, L and W
        workspace = self._backend.xp.empty((n, n), dtype=self.X_train_.dtype)

        def negative_lml(theta):
            lml, dtheta, jitter = self._lml(theta, eval_gradient=True, warn=False,
                                            workspace=workspace)
            jitters.append((jitter, theta.copy()))
            if not (np.isfinite(lml) and np.all(np.isfinite(dtheta))):
                raise DataError(
                    f"the log marginal likelihood is {lml} with gradient {dtheta} at theta = "
                    f"{np.array2string(theta, precision=4)}: the data's scale is beyond what "
                    f"{self._dtype.name} holds in the kernel; rescale X (e.g. with "
                    "StandardScaler) and y, or use normalize_y=True"
                )
            return -lml, -dtheta

        starts = [theta0] + [
            self._rng.uniform(log_bounds[:, 0], log_bounds[:, 1]) for _ in range(self.n_restarts)
        ]
        # Tolerances tighter than SciPy's defaults: the analytic gradient is exact to
        # round-off, so the optimiser can stop much closer to the optimum.
        options = {"ftol": 1e-12, "gtol": 1e-8}
        best = min((minimize(negative_lml, start, jac=True, method="L-BFGS-B",
                             bounds=log_bounds, options=options) for start in starts),
                   key=lambda result: result.fun if np.isfinite(result.fun) else np.inf)
        problems = _bound_problems(best.x, log_bounds)
        # From a small initial noise L-BFGS-B can slide into the optimum that explains the
        # targets as white noise (lengthscale on its lower bound, predictions the mean):
        # then one more start, the initial values with the noise raised to the variance.
        noisy = theta0.copy()
        noisy[-1] = np.clip(max(theta0[-1], theta0[-2]), *log_bounds[-1])
        if problems and noisy[-1] != theta0[-1]:
            retry = minimize(negative_lml, noisy, jac=True, method="L-BFGS-B",
                             bounds=log_bounds, options=options)
            if retry.fun < best.fun:
                best, problems = retry, _bound_problems(retry.x, log_bounds)
        self._warn_jitter_summary(jitters)
        if problems:
            warnings.warn(
                f"hyperparameter optimisation ended with {', '.join(problems)}: the data's "
                "scale lies outside the bounds; rescale y or use normalize_y=True, rescale X "
                "(e.g. with StandardScaler), or widen the bounds",
                ConvergenceWarning,
                stacklevel=3,
            )
        return best.x

    def _warn_jitter_summary(self, jitters) -> None:
        """One :class:`JitterWarning` for all the optimiser's evaluations that needed jitter.

        ``jitters`` holds ``(jitter, theta)`` per evaluation. Each evaluation's matrix has
        its own jitter (relative to its own diagonal, ``variance + noise``), so warning
        per evaluation would repeat a differently worded message dozens of times.
        """
        needed = [(jitter, theta) for jitter, theta in jitters if jitter > 0.0]
        if not needed:
            return
        largest, theta = max(needed, key=lambda pair: pair[0])
        _, variance, noise = unpack_theta(theta, self.n_features_in_)
        wider = " or use dtype='float64'" if self._dtype != np.float64 else ""
        warnings.warn(
            f"hyperparameter optimisation: jitter was needed at {len(needed)} of "
            f"{len(jitters)} evaluations of the log marginal likelihood (the Cholesky "
            f"factorisation of K + noise I failed without it), largest {largest:.3g} "
            f"({largest / (variance + noise):.0e} x the kernel diagonal, at theta = "
            f"{np.array2string(theta, precision=4)}); there the optimiser saw the likelihood "
            "of a slightly regularised matrix. If the fit looks wrong, raise the lower bound "
            f"of the noise variance{wider}",
            JitterWarning,
            stacklevel=4,
        )

    def _factorize(self) -> None:
        """Algorithm 2.1, lines 2, 3 and 7 at the fitted theta."""
        self.factor_ = factorise(self.X_train_, self.theta_, backend=self._backend)
        self.L_, self.jitter_ = self.factor_.L, self.factor_.jitter
        # Line 3: alpha = L^T \ (L \ y)
        self.alpha_ = self.factor_.solve(self.y_train_)
        self.log_marginal_likelihood_value_ = _lml_from(self.factor_, self.y_train_, self.alpha_)

    def _check_fitted(self) -> None:
        check_is_fitted(self, msg="this %(name)s is not fitted yet; call fit(X, y) first")

    def _check_test_X(self, X) -> np.ndarray:
        """Test inputs as a host float64 array of the fitted width (NotFittedError before fit)."""
        self._check_fitted()
        X_host = check_samples(X, "X", self.n_features_in_, type(self).__name__)
        check_representable(X_host, self._dtype, "X")
        validate_data(self, X, reset=False, skip_check_array=True)  # feature names
        return X_host

    def log_marginal_likelihood(self, theta: ArrayLike | None = None,
                                eval_gradient: bool = False) -> float | tuple[float, np.ndarray]:
        """Log marginal likelihood of the training targets, summed over outputs.

        Parameters
        ----------
        theta : (p + 2,) array or None
            ``(log lengthscale(s), log variance, log noise)``; None means ``theta_``.
        eval_gradient : bool, default False

        Returns
        -------
        lml : float
        dtheta : (p + 2,) ndarray, only when ``eval_gradient``
            Derivation: docs/derivations.md, "GP log marginal likelihood and its gradient".
        """
        self._check_fitted()
        if theta is None:
            if not eval_gradient:
                return self.log_marginal_likelihood_value_
            theta = self.theta_
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != self.theta_.shape:
            raise ValueError(
                f"theta has shape {theta.shape} but this model has {self.theta_.size} "
                "hyperparameters (log lengthscale(s), log variance, log noise)"
            )
        lml, dtheta, _ = self._lml(theta, eval_gradient)
        return (lml, dtheta) if eval_gradient else lml

    # ---- prediction ----------------------------------------------------------------

    def _latent_moments(self, X, spread: str | None):
        """Mean (m, t) of the normalised outputs and, if asked, the latent f's spread.

        ``spread``: None, ``"var"`` (variances, (m,)) or ``"cov"`` (covariance, (m, m)).
        """
        X_test = self._backend.asarray(X, dtype=self._dtype)
        return predictive(self.factor_, self.alpha_, X_test,
                          return_var=spread == "var", return_cov=spread == "cov")

    def _output_shape(self, A):
        """Drop the output axis for a model fitted on 1-D y."""
        return A[:, 0] if self._y_ndim == 1 else A

    def predict(self, X: ArrayLike, return_std: bool = False, return_cov: bool = False,
                include_noise: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Posterior predictive mean, and optionally its standard deviation or covariance.

        Parameters
        ----------
        X : (m, d) array
        return_std, return_cov : bool
            At most one of them.
        include_noise : bool, default False
            False: the std/cov of the latent f; True: of a new noisy observation y
            (adds the noise variance).

        Returns
        -------
        mean : (m,) ndarray if y was 1-D, else (m, t)
        std : (m,) ndarray, only with return_std
            Shared by all outputs (one kernel); with normalize_y it is scaled by each
            output's standard deviation and has shape (m, t) for 2-D y.
        cov : (m, m) ndarray, only with return_cov
            (m, m, t) with normalize_y and 2-D y, as std.

        All results are NumPy arrays, whatever the device.
        """
        if return_std and return_cov:
            raise ValueError("return_std and return_cov cannot both be True; ask for one")
        X = self._check_test_X(X)
        spread_kind = "cov" if return_cov else "var" if return_std else None
        mean, spread = self._latent_moments(X, spread_kind)
        mean = self._backend.to_host(mean) * self._y_std + self._y_mean
        mean = self._output_shape(mean)
        if spread_kind is None:
            return mean
        spread = self._backend.to_host(spread).astype(np.float64)
        if return_cov:
            if include_noise:
                spread[np.diag_indices_from(spread)] += self.noise_
            return mean, self._scale_spread(spread, self._y_std**2)
        if include_noise:
            spread = spread + self.noise_
        return mean, self._scale_spread(np.sqrt(spread), self._y_std)

    def _scale_spread(self, spread, scale):
        """Scale a shared std/cov per output (normalize_y); keep it shared otherwise."""
        if not self.normalize_y:
            return spread
        scaled = spread[..., None] * scale
        return scaled[..., 0] if self._y_ndim == 1 else scaled

    def sample_y(self, X: ArrayLike, n_samples: int = 1, seed: int | None = None,
                 include_noise: bool = False) -> np.ndarray:
        """Draw functions from the posterior at ``X``.

        Parameters
        ----------
        X : (m, d) array
        n_samples : int, default 1
        seed : int or None
            None continues the model's Generator (seeded by ``seed`` at fit).
        include_noise : bool, default False
            Add observation noise to the draws.

        Returns
        -------
        samples : (m, n_samples) ndarray if y was 1-D, else (m, t, n_samples)

        Notes
        -----
        The posterior covariance is often numerically singular, so it is factorised by a
        symmetric eigendecomposition with negative round-off eigenvalues clipped to 0:
        ``f = mean + U sqrt(max(w, 0)) eps``.
        """
        if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        X = self._check_test_X(X)
        mean, cov = self._latent_moments(X, "cov")
        mean, cov = self._backend.to_host(mean), self._backend.to_host(cov).astype(np.float64)
        if include_noise:
            cov[np.diag_indices_from(cov)] += self.noise_
        eigenvalues, eigenvectors = np.linalg.eigh(cov)
        root = eigenvectors * np.sqrt(np.maximum(eigenvalues, 0.0))
        rng = self._rng if seed is None else np.random.default_rng(seed)
        t = mean.shape[1]
        eps = rng.standard_normal((X.shape[0], t, int(n_samples)))
        normalised = mean[:, :, None] + np.einsum("ij,jtk->itk", root, eps)
        samples = normalised * self._y_std[:, None] + self._y_mean[:, None]
        return samples[:, 0, :] if self._y_ndim == 1 else samples

    # ---- persistence ---------------------------------------------------------------

    def _config(self) -> dict:
        bounds = self.bounds
        return {
            "lengthscale": np.asarray(self.lengthscale, dtype=np.float64).tolist(),
            "variance": float(self.variance),
            "noise": float(self.noise),
            "ard": bool(self.ard),
            "optimize": bool(self.optimize),
            "n_restarts": int(self.n_restarts),
            "bounds": None if bounds is None else np.asarray(bounds, dtype=np.float64).tolist(),
            "normalize_y": bool(self.normalize_y),
            "dtype": self._dtype.name,
            "seed": int(self.seed),
            "device": self._backend.name,
        }

    def save(self, path: str | PathLike[str]) -> None:
        """Write the fitted model to ``path`` (a ``.npz`` checkpoint, atomically).

        The file holds the configuration, the training data and the fitted theta; the
        Cholesky factor is recomputed on load.
        """
        from .checkpoint import save_checkpoint

        self._check_fitted()
        to_host = self._backend.to_host
        arrays = {
            "X_train": to_host(self.X_train_),
            "y_train": to_host(self.y_train_),
            "theta": self.theta_,
            "y_mean": self._y_mean,
            "y_std": self._y_std,
        }
        meta = {"config": self._config(), "y_ndim": self._y_ndim}
        save_checkpoint(path, arrays, meta, kind="GPRegressor")

    @classmethod
    def load(cls, path: str | PathLike[str], device: str | None = None) -> GPRegressor:
        """Read a model written by :meth:`save`; ``device`` overrides the saved one.

        Raises
        ------
        CheckpointError
            If the file is missing, corrupt, or not a GPRegressor checkpoint.
        """
        from .checkpoint import load_checkpoint

        arrays, meta = load_checkpoint(path, kind="GPRegressor")
        config = dict(meta["config"])
        if device is not None:
            config["device"] = device
        model = cls(**config)
        model._check_params()
        model.n_features_in_ = arrays["X_train"].shape[1]
        model._y_ndim = int(meta["y_ndim"])
        model._y_mean, model._y_std = arrays["y_mean"], arrays["y_std"]
        model.X_train_ = model._backend.asarray(arrays["X_train"], dtype=model._dtype)
        model.y_train_ = model._backend.asarray(arrays["y_train"], dtype=model._dtype)
        model._rng = np.random.default_rng(model.seed)
        model._set_hyperparameters(arrays["theta"])
        model._factorize()
        return model
