"""Baselines of Variational Autoencoded Regression: nearest frame, pixel GP, two-stage.

Each is a small class with ``fit(X, Y, groups)`` and ``predict(X, groups)``, ``Y`` being
images (n, H, W), and regresses within each sequence (``groups``):

- :class:`NearestAnchor`: the training image whose input is nearest, in its own sequence;
- :class:`PixelGP`: Gaussian-process regression straight on the pixels, one GP per
  sequence;
- :class:`TwoStage`: a VAE trained alone on the training images, then one GP per
  sequence regressing its codes; decode the regressed code.

:mod:`minivae.experiments` scores them against :class:`minivae.var.VARegressor`.
"""
from __future__ import annotations

import warnings

import numpy as np

from .errors import DataError

# ---- helpers ------------------------------------------------------------------------


def _group_labels(groups, n):
    """``groups`` as an int64 array (n,); all zeros for None (one sequence)."""
    if groups is None:
        return np.zeros(n, dtype=np.int64)
    labels = np.asarray(groups)
    if labels.shape != (n,):
        raise DataError(f"groups has shape {labels.shape} but there are {n} examples; "
                        "give one sequence id per example, or None for a single sequence")
    return labels.astype(np.int64)


def _as_inputs(X):
    """Inputs as float64 (n, p); a 1-D array is one input column."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise DataError(f"X has shape {X.shape}; give inputs as (n, p), one row per example")
    return X


def _as_images(Y, n):
    """Images as float64 (n, H, W), checked against the number of inputs."""
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 3 or Y.shape[0] != n:
        raise DataError(f"Y has shape {Y.shape}; give {n} images as (n, H, W), one per input row")
    return Y


def _rows_of_group(train_groups, group):
    """Indices of the training rows in ``group``; DataError if it has none."""
    rows = np.flatnonzero(train_groups == group)
    if rows.size == 0:
        known = np.unique(train_groups).tolist()
        raise DataError(f"sequence {int(group)} has no training examples (sequences seen in fit: "
                        f"{known}); predict only for sequences that had anchors in fit")
    return rows


def starting_lengthscales(X, n_starts=3):
    """Starting lengthscales for an RBF kernel on inputs X (n, p), spread over the data's scales.

    Parameters
    ----------
    X : array_like, shape (n, p)
    n_starts : int, default 3

    Returns
    -------
    ndarray of float64, shape (n_starts,)
        Geometrically spaced from the median distance of a row to its nearest distinct
        neighbour up to the median pairwise distance (one value, the median distance, for
        ``n_starts=1``; 1.0 if all rows coincide).

    Notes
    -----
    The log marginal likelihood of many outputs (pixels, codes) often has a second,
    worse maximum at a vanishing lengthscale (white noise around the mean); started from
    the median pairwise distance alone, L-BFGS-B tends to slide into it. Starting from
    the data's own spacings as well finds the smooth maximum.
    """
    X = _as_inputs(X)
    distances = np.sqrt(np.sum((X[:, None, :] - X[None, :, :]) ** 2, axis=-1))
    distinct = np.where(distances > 0, distances, np.inf)
    nearest = distinct.min(axis=1)
    nearest = nearest[np.isfinite(nearest)]
    if nearest.size == 0:
        return np.ones(n_starts)
    upper = float(np.median(distinct[np.isfinite(distinct)]))
    if n_starts == 1:
        return np.array([upper])
    return np.geomspace(float(np.median(nearest)), upper, n_starts)


class _PerGroupGP:
    """One :class:`~minivae.gp.GPRegressor` per sequence on targets centred by its mean.

    Each sequence's GP has a constant mean function per output (the mean of its training
    targets) and its own hyperparameters, shared by all outputs, that maximise the log
    marginal likelihood: L-BFGS-B from each of :func:`starting_lengthscales` (signal
    variance starting at the mean target variance, noise at 1% of it), the highest
    maximum winning (a warning from a losing start, one that slid into a vanishing
    lengthscale say, is dropped). The GP sees the centred targets divided by their root mean variance
    (its mean and variance are scaled back), so that dim or low-contrast images (a
    variance of 1e-4, say, whose 1% noise would start below the noise bound 1e-5) fit
    as well as bright ones. A sequence with fewer than two training rows, or with
    constant targets, predicts its mean.
    """

    def __init__(self, n_starts=3, device="cpu"):
        self.n_starts = int(n_starts)
        self.device = device

    def fit(self, X, T, groups):
        from .gp import GPRegressor

        self.groups_ = groups.copy()
        self.models_, self.means_, self.scales_ = {}, {}, {}
        for group in np.unique(groups):
            rows = np.flatnonzero(groups == group)
            mean = T[rows].mean(axis=0)
            centred = T[rows] - mean
            variance = float(np.mean(centred.var(axis=0)))
            self.means_[group], self.scales_[group] = mean, np.sqrt(variance)
            if rows.size < 2 or variance == 0.0:
                self.models_[group] = None
                continue
            fits = []
            for start in starting_lengthscales(X[rows], self.n_starts):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    gp = GPRegressor(lengthscale=start, variance=1.0, noise=1e-2,
                                     device=self.device).fit(X[rows], centred / np.sqrt(variance))
                fits.append((gp, caught))
            best, caught = max(fits, key=lambda fit: fit[0].log_marginal_likelihood_value_)
            for warning in caught:  # only the winning start's warnings concern the user
                warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                       warning.lineno)
            self.models_[group] = best
        return self

    def predict(self, X, groups):
        """Posterior mean (m, t) and latent variance (m,) at inputs X with sequence ids groups."""
        t = next(iter(self.means_.values())).shape[0]
        mean = np.empty((X.shape[0], t))
        variance = np.zeros(X.shape[0])
        for group in np.unique(groups):
            _rows_of_group(self.groups_, group)
            rows = np.flatnonzero(groups == group)
            gp = self.models_[group]
            if gp is None:
                mean[rows] = self.means_[group]
                continue
            centred, std = gp.predict(X[rows], return_std=True)
            scale = self.scales_[group]
            mean[rows] = scale * centred.reshape(rows.size, t) + self.means_[group]
            variance[rows] = (scale * std) ** 2
        return mean, variance


# ---- baselines ----------------------------------------------------------------------


class NearestAnchor:
    """Predict the training image whose input is nearest (Euclidean) within the same sequence.

    The simplest baseline: no model, no interpolation. Ties go to the earliest training
    example.
    """

    def fit(self, X, Y, groups=None):
        """Store the training examples.

        Parameters
        ----------
        X : array_like, shape (n, p)
        Y : array_like, shape (n, H, W)
        groups : array_like of int, shape (n,), optional
            Sequence id of each example; None for one sequence.

        Returns
        -------
        self
        """
        self.X_ = _as_inputs(X)
        self.Y_ = _as_images(Y, self.X_.shape[0])
        self.groups_ = _group_labels(groups, self.X_.shape[0])
        return self

    def predict(self, X, groups=None):
        """The stored image of the nearest training input of each query's sequence.

        Parameters
        ----------
        X : array_like, shape (m, p)
        groups : array_like of int, shape (m,), optional

        Returns
        -------
        ndarray of float64, shape (m, H, W)
            Exact copies of training images.
        """
        X = _as_inputs(X)
        groups = _group_labels(groups, X.shape[0])
        nearest = np.empty(X.shape[0], dtype=np.int64)
        for row, (query, group) in enumerate(zip(X, groups)):
            candidates = _rows_of_group(self.groups_, group)
            squared = np.sum((self.X_[candidates] - query) ** 2, axis=1)
            nearest[row] = candidates[np.argmin(squared)]
        return self.Y_[nearest].copy()


class PixelGP:
    """Gaussian-process regression on raw pixels, one GP per sequence.

    Parameters
    ----------
    n_starts : int, default 3
        Starting lengthscales of each GP's hyperparameter optimisation
        (:func:`starting_lengthscales`).
    device : {"cpu", "gpu", "cuda-sim"}, default "cpu"

    Notes
    -----
    Each sequence's H*W pixels are the outputs of one multi-output GP: one RBF kernel,
    one set of hyperparameters (lengthscale, signal variance, noise) for all pixels,
    fitted by maximising the summed log marginal likelihood, and a constant mean per
    pixel (the sequence's mean training image). Predictions are the posterior mean, not
    clipped to [0, 1].
    """

    def __init__(self, n_starts=3, device="cpu"):
        self.n_starts = n_starts
        self.device = device

    def fit(self, X, Y, groups=None):
        """Fit one GP per sequence to its images.

        Parameters
        ----------
        X : array_like, shape (n, p)
        Y : array_like, shape (n, H, W)
        groups : array_like of int, shape (n,), optional

        Returns
        -------
        self
        """
        X = _as_inputs(X)
        Y = _as_images(Y, X.shape[0])
        self.image_shape_ = Y.shape[1:]
        self.gps_ = _PerGroupGP(self.n_starts, self.device)
        self.gps_.fit(X, Y.reshape(Y.shape[0], -1), _group_labels(groups, X.shape[0]))
        return self

    def predict(self, X, groups=None):
        """Posterior mean images, shape (m, H, W)."""
        X = _as_inputs(X)
        mean, _ = self.gps_.predict(X, _group_labels(groups, X.shape[0]))
        return mean.reshape(X.shape[0], *self.image_shape_)


class TwoStage:
    """A VAE trained alone on the training images, then a GP per sequence on its codes.

    Parameters
    ----------
    latent_dim : int, default 8
    hidden : tuple of int, default (256,)
    activation : {"relu", "tanh", "softplus"}, default "relu"
    likelihood : {"bernoulli", "gaussian"}, default "bernoulli"
    epochs : int, default 110
        VAE training epochs.
    lr : float, default 1e-3
    batch_size : int, default 64
    beta : float, default 1.0
        The VAE's KL weight.
    n_starts : int, default 3
        Starting lengthscales of each GP's hyperparameter optimisation.
    dtype : {"float32", "float64"}, default "float32"
        The VAE's; the GPs work in float64.
    seed : int, default 0
    device : {"cpu", "gpu", "cuda-sim"}, default "cpu"

    Attributes
    ----------
    vae_ : minivae.vae.VAE
    history_ : dict
        The VAE's training history.

    Notes
    -----
    Stage one maximises the ELBO of the training images alone; stage two fits, per
    sequence, a GP from the inputs to the encoder means :math:`\\mu(y)` (the setup of
    :class:`_PerGroupGP`). A prediction is :math:`\\mathrm{decode}(\\bar z(x))` with
    :math:`\\bar z` the GP posterior mean. Nothing in stage one knows that the codes will
    be regressed: the difference to VAR, which trains the encoder, decoder and GP together.
    """

    def __init__(self, latent_dim=8, hidden=(256,), activation="relu", likelihood="bernoulli",
                 epochs=110, lr=1e-3, batch_size=64, n_starts=3, dtype="float32", seed=0,
                 device="cpu", beta=1.0):
        self.latent_dim = latent_dim
        self.hidden = tuple(hidden)
        self.activation = activation
        self.likelihood = likelihood
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.beta = beta
        self.n_starts = n_starts
        self.dtype = dtype
        self.seed = seed
        self.device = device

    def fit(self, X, Y, groups=None, progress=False):
        """Train the VAE on ``Y``, then regress its codes from ``X`` per sequence.

        Parameters
        ----------
        X : array_like, shape (n, p)
        Y : array_like, shape (n, H, W)
        groups : array_like of int, shape (n,), optional
        progress : bool, default False
            Show the VAE's tqdm bars.

        Returns
        -------
        self
        """
        from .vae import VAE

        X = _as_inputs(X)
        Y = _as_images(Y, X.shape[0])
        self.image_shape_ = Y.shape[1:]
        pixels = Y.reshape(Y.shape[0], -1)
        self.vae_ = VAE(pixels.shape[1], self.latent_dim, hidden=self.hidden,
                        activation=self.activation, likelihood=self.likelihood,
                        beta=self.beta, dtype=self.dtype, seed=self.seed, device=self.device)
        self.history_ = self.vae_.fit(pixels, epochs=self.epochs, batch_size=self.batch_size,
                                      lr=self.lr, progress=progress).history_
        codes, _ = self.vae_.encode(pixels)
        self.gps_ = _PerGroupGP(self.n_starts, self.device)
        self.gps_.fit(X, np.asarray(codes, dtype=np.float64), _group_labels(groups, X.shape[0]))
        return self

    def predict_latent(self, X, groups=None):
        """GP posterior of the code: mean (m, latent_dim) and latent variance (m,)."""
        X = _as_inputs(X)
        return self.gps_.predict(X, _group_labels(groups, X.shape[0]))

    def predict(self, X, groups=None):
        """Decoded regressed codes, shape (m, H, W)."""
        mean, _ = self.predict_latent(X, groups)
        decoded = self.vae_.decode(mean.astype(self.vae_.dtype))
        return np.asarray(decoded, dtype=np.float64).reshape(mean.shape[0], *self.image_shape_)
