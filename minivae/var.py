"""Variational Autoencoded Regression (Yoo et al., CVPR 2017).

A VAE whose latent space is shaped so that a Gaussian process can regress it: given a
low-dimensional input ``x`` (a frame's position in a sequence, a body's joint
positions), the GP predicts a latent code from the codes of nearby training frames and
the decoder turns that code into an image. Every gradient is written out by hand; the
derivation is docs/derivations.md, "Variational Autoencoded Regression" (sections cited
beside each block below).

Model
-----
Encoder ``q(z | y)``: an MLP with heads ``enc.mu`` (k), ``enc.logvar`` (k) and
``enc.logsigma`` (1). ``exp(logsigma_i) = sigma_i`` is the sample's kernel amplitude
squared: ``a_i = sqrt(sigma_i)``. Decoder ``p(y | z)``: an MLP with the encoder's hidden
widths reversed and head ``dec.out`` (Bernoulli logits) or ``dec.mean`` and
``dec.logvar`` (Gaussian, learned per-pixel log-variance). GP kernel between anchors::

    k(x_i, x_j) = a_i a_j exp(-||x_i - x_j||^2 / (2 l^2))      (= sqrt(sigma_i sigma_j) ...)

with one learned lengthscale ``l`` (parameter ``gp.log_lengthscale``), signal variance
fixed at 1 (the amplitudes carry the scale) and a fixed noise ``noise`` on the diagonal.

Training batch (an *episode* per group)
---------------------------------------
An episode draws, from one group's training frames and without overlap, ``N = n_anchor``
anchors ``(x_i, y_i)`` and ``M = min(n_query, n_g - N)`` queries ``(x*_j, y*_j)``. The
anchors' sampled codes ``z_i = mu_i + exp(logvar_i / 2) eps_i`` are regressed on ``x_i``;
a query's code is the GP posterior mean ``z*_j = K*_j (K + noise I)^-1 Z``. A query has
no image at prediction time, so in training its amplitude is the paper's choice, the
anchors' mean: ``sigma* = mean_i sigma_i``, ``b = sqrt(sigma*)``, and the gradient flows
through that mean. (Prediction, which conditions on every training
frame, interpolates the frames' log amplitudes by default: :func:`query_amplitudes`.) Loss
of a batch of episodes (``n_b`` = number of anchors plus queries)::

    loss = (1 / n_b) [ sum_anchors (KL(q(z|y_i) || N(0, I)) - log p(y_i | z_i))
                       + sum_queries (-log p(y*_j | z*_j)) ]

in nats per example.

Schedule
--------
``epochs = (pre, joint, fine)``: VAE pre-training (mean negative ELBO on all training
images; the amplitude head and the lengthscale get no gradient and stay frozen), joint
training (the loss above, everything trained), fine-tuning (the same loss with the
regression part frozen: ``enc.logsigma.*`` and ``gp.log_lengthscale``). One shared
history; phases ``"pretrain"``, ``"joint"``, ``"finetune"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from os import PathLike
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike
from sklearn.base import BaseEstimator, RegressorMixin

from . import losses
from .autoencoder import DECODERS, Autoencoder
from .backend import get_backend, resolve_dtype
from .errors import CheckpointError, DataError, NotFittedError
from .gp import factorise, posterior_mean, posterior_mean_backward, predictive
from .kernels import reparam_backward, reparam_forward
from .params import FlatArrays
from .validation import (
    check_beta,
    check_choice,
    check_groups,
    check_images,
    check_inputs,
    check_network,
    check_positive_int,
    check_schedule,
    derived_seed,
    is_int,
    is_positive_real,
)

PHASES = ("pretrain", "joint", "finetune")

#: Parameters of the regression part, frozen in pre-training and in fine-tuning.
REGRESSION_PARAMS = ("enc.logsigma.W", "enc.logsigma.b", "gp.log_lengthscale")

_LENGTHSCALE = "gp.log_lengthscale"
_DATA_KEYS = ("data.X", "data.Y", "data.group_index", "data.group_labels")

# Seed streams derived from the model seed: the Monte-Carlo noise outside training and the
# posterior samples of predict(return_std=True).
_STREAM_NOISE = 1
_STREAM_PREDICT = 2

DEFAULT_EPOCHS = (300, 600, 150)
"""(pre-training, joint, fine-tuning) epochs of :class:`VARegressor`, the demo, the examples
and ``minivae train var``. On the built-in sequences (data seed 1, every 4th frame held
out, model seed 0, KL weight 1) they gave 30.2 dB held-out PSNR in a 20 s fit on 144
frames; (20, 30, 10) gave 22.1 dB, and ``patience=20`` with these as caps 29.3 dB in 17 s."""

DEFAULT_BETA = 0.3
"""KL weight of :class:`VARegressor` (``beta``; the paper's ELBO has 1), chosen on validation
frames carved from the training frames (``python examples/var_validation.py beta 0,1,2``;
docs/derivations.md, "VAR and the paper"): against 1, +0.64 dB PSNR at every 2nd
frame of the sequences, -0.33 dB at every 8th, +0.21 to +0.25 dB on the postures."""


#: Entries of the largest temporary in :func:`_nearest_distinct_distances` (float64: 32 MiB).
_NEAREST_BLOCK_ENTRIES = 1 << 22


def _nearest_distinct_distances(X) -> np.ndarray:
    """Distance from each row of ``X`` (n, p) to its nearest row at a positive distance.

    Rows whose every neighbour coincides with them are left out. Blocks of rows bound the
    largest temporary, the (rows, n, p) differences, to about
    :data:`_NEAREST_BLOCK_ENTRIES` values.
    """
    n, p = X.shape
    block_rows = max(1, _NEAREST_BLOCK_ENTRIES // max(1, n * p))
    blocks = []
    for start in range(0, n, block_rows):
        diff = X[start:start + block_rows, None, :] - X[None, :, :]
        dist = np.sqrt((diff * diff).sum(axis=-1))
        dist[dist == 0] = np.inf
        blocks.append(dist.min(axis=1))
    nearest = np.concatenate(blocks)
    return nearest[np.isfinite(nearest)]


#: Random keys drawn at once by :func:`_draw_episode_rows` (float64: 8 MiB).
_EPISODE_KEYS_PER_DRAW = 1 << 20


QUERY_AMPLITUDES = ("interpolated", "mean")


def query_amplitudes(X_train, logsigma, X_query, theta, rule: str = "interpolated",
                     backend=None):
    """Kernel amplitudes ``b`` of new inputs at prediction, from the training frames'.

    ``rule="interpolated"``: the GP interpolation of the frames' log amplitudes
    ``log a_i = logsigma_i / 2``, with the unit-amplitude kernel and noise of ``theta``
    and their mean as constant mean::

        log b(x*) = m + E(x*, X) (E(X, X) + noise I)^-1 (log a - m),  m = mean(log a)

    At a training input ``x_i`` this gives ``b -> a_i`` as the noise goes to 0, so the GP
    mean there is the frame's own code (with the mean amplitude it would be
    ``(b / a_i) mu_i``); far from the training inputs ``b -> exp(m)``. ``rule="mean"``:
    the paper's ``b = sqrt(mean_i sigma_i)``, which training uses for its queries.
    Chosen on validation frames carved from the training frames (docs/derivations.md,
    "VAR: prediction").

    Parameters
    ----------
    X_train : (N, p) array on ``backend``
    logsigma : (N,) array
        The frames' log squared amplitudes (the encoder's ``logsigma`` head).
    X_query : (m, p) array
    theta : (3,) host array
        ``(log l, 0, log noise)``, the code GP's.
    rule : {"interpolated", "mean"}
    backend : Backend or str, optional

    Returns
    -------
    (m,) array on ``backend``
    """
    backend = get_backend("cpu" if backend is None else backend)
    xp = backend.xp
    if rule == "mean":
        return xp.sqrt(xp.exp(logsigma).mean()) * xp.ones(X_query.shape[0], dtype=logsigma.dtype)
    log_amp = 0.5 * logsigma
    centre = log_amp.mean()
    offset, _ = posterior_mean(X_train, (log_amp - centre)[:, None], X_query, theta,
                               backend=backend)
    return xp.exp(centre + offset[:, 0])


def _draw_episode_rows(rng, n_episodes: int, n_g: int, size: int) -> np.ndarray:
    """``n_episodes`` draws of ``size`` distinct positions in ``range(n_g)``, (n_episodes, size).

    Each episode takes the positions of its ``size`` smallest of ``n_g`` uniform keys, in
    increasing key order: ``argsort(rng.random((n_episodes, n_g)), axis=1)[:, :size]``.
    The keys are drawn a few episodes at a time (the same stream as one draw) and only the
    ``size`` smallest are sorted, so memory stays at :data:`_EPISODE_KEYS_PER_DRAW` keys and
    the time at O(n_episodes n_g) instead of O(n_episodes n_g log n_g).
    """
    picks = np.empty((n_episodes, size), dtype=np.intp)
    per_draw = max(1, _EPISODE_KEYS_PER_DRAW // n_g)
    for start in range(0, n_episodes, per_draw):
        keys = rng.random((min(per_draw, n_episodes - start), n_g))
        smallest = np.argpartition(keys, size - 1, axis=1)[:, :size]
        order = np.argsort(np.take_along_axis(keys, smallest, axis=1), axis=1)
        picks[start:start + keys.shape[0]] = np.take_along_axis(smallest, order, axis=1)
    return picks


def _check_episodes(episodes, n: int) -> list:
    """Episodes as (anchor_rows, query_rows) int64 arrays, each non-empty and in range(n)."""
    checked = []
    for e, (anchors, queries) in enumerate(episodes):
        anchors = np.asarray(anchors, dtype=np.int64).reshape(-1)
        queries = np.asarray(queries, dtype=np.int64).reshape(-1)
        if anchors.size == 0 or queries.size == 0:
            raise DataError(
                f"episode {e} has {anchors.size} anchors and {queries.size} queries; each "
                "needs at least one of both"
            )
        rows = np.concatenate([anchors, queries])
        outside = rows[(rows < 0) | (rows >= n)]
        if outside.size:
            raise DataError(
                f"episode {e} indexes row {int(outside[0])}, outside the {n} rows of X and Y; "
                f"use row indices 0..{n - 1}"
            )
        checked.append((anchors, queries))
    if not checked:
        raise DataError("episodes is empty; pass at least one (anchor_rows, query_rows) pair")
    return checked


# ---- the model ------------------------------------------------------------------------------


class VARegressor(RegressorMixin, BaseEstimator):
    """Variational Autoencoded Regression: images regressed from low-dimensional inputs.

    Parameters
    ----------
    latent_dim : int, default 8
        Dimension k of the latent code.
    hidden : sequence of int or int, default (256,)
        Encoder hidden widths; the MLP decoder uses them reversed.
    activation : {"relu", "tanh", "softplus"}
    likelihood : {"bernoulli", "gaussian"}
        Bernoulli needs images in [0, 1] (grey levels act as soft targets).
    n_anchor : int or None, default None
        Anchors N per episode. None: ``min(12, round(0.6 n_min))``, ``n_min`` the
        smallest group's size (at least 1). Every group needs at least ``n_anchor + 1``
        frames.
    n_query : int or None, default None
        Queries M per episode (fewer when a group has fewer than ``n_anchor + n_query``
        frames: all the others are then queries). None: ``min(8, n_min - n_anchor)``.
    epochs : (int, int, int), default :data:`DEFAULT_EPOCHS`
        Epochs of pre-training, joint training and fine-tuning.
    lr : float, default 1e-3
        Adam learning rate of every phase.
    batch_size : int, default 64
        Images per pre-training batch; a joint or fine-tuning batch holds
        ``max(1, batch_size // (n_anchor + n_query))`` episodes.
    lengthscale : float or None
        Initial GP lengthscale. None: the typical spacing of an episode's anchors,
        ``median_g(nn_g) * (n_g / n_anchor)^(1/p)``, with ``nn_g`` the median distance from
        each training input of group g to its nearest distinct neighbour in the group and
        ``n_g`` the group's size (anchors are a random ``n_anchor`` of the ``n_g`` frames,
        so their spacing is that much wider in p dimensions).
    noise : float, default 1e-3
        Variance added to the kernel diagonal. Fixed, not learned: the loss sees only the
        posterior mean, and the noise just keeps the solve well conditioned.
    patience : int or None, default None
        None: train for ``epochs`` exactly. An int: hold out every ``validation_every``-th
        frame of each group (they are never anchors, queries or pre-training images),
        score after every joint and fine-tuning epoch the mean ``-log p(y | z*)`` of the
        held-out frames at their GP-regressed codes, stop a phase when that has not
        improved for ``patience`` epochs, and keep its best epoch (``epochs`` are then
        caps). ``history_["stops"]`` says where and why each phase ended. Prediction
        conditions on every training frame, held out or not.
    validation_every : int, default 8
        With ``patience``: which frames are held out (the ``validation_every // 2``-th,
        then every ``validation_every``-th, of each group in the order given).
    dtype : {"float32", "float64"}
    seed : int
        Seeds the initialisation, the episodes, the Monte-Carlo noise and predictions.
    device : {"cpu", "gpu", "cuda-sim"}
    decoder : {"mlp", "conv"}, default "mlp"
        "conv": the convolutional decoder of :mod:`minivae.conv` (images with sides that
        are multiples of 4; ``hidden`` then shapes the encoder only).
    query_amplitude : {"interpolated", "mean"}, default "interpolated"
        The kernel amplitude of a new input at prediction, which has no image: the GP
        interpolation of the training frames' log amplitudes, or the paper's mean
        amplitude (:func:`query_amplitudes`). Training's queries use the mean either way.
    beta : float, default :data:`DEFAULT_BETA`
        Weight of the anchors' KL term to N(0, I) in pre-training and in the joint loss
        (the paper's, a VAE's ELBO, is 1). Smaller weights let the encoder's codes spread
        further from the prior's scale, and the decoder, trained on less noisy codes,
        reconstructs more sharply.

    Attributes
    ----------
    These exist after :meth:`fit` (or :meth:`load`).

    params : FlatArrays name -> device array
        ``enc.*`` (heads ``mu``, ``logvar``, ``logsigma``), ``dec.*`` and
        ``gp.log_lengthscale`` (shape (1,)); the regression part
        (:data:`REGRESSION_PARAMS`) last, so that the phases that freeze it update the
        rest in one optimiser call.
    history_ : dict or None
        Per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``phase``, ``seconds``; and
        ``stops``, one record per phase. After :meth:`load`, the history the file holds.
    group_labels_ : ndarray
        The distinct group ids seen in training.
    n_features_in_, n_features_ : int
        Width p of the inputs.
    image_shape_ : tuple
        Shape of one image, as in ``Y``.
    n_anchor_, n_query_ : int
        The episode sizes used.

    Notes
    -----
    The constructor stores its arguments unchanged (scikit-learn's convention); they are
    checked by :meth:`fit`. Episodes: in each joint or fine-tuning epoch, group g (``n_g``
    frames) contributes ``ceil(n_g / (N + M_g))`` episodes, each an independent random
    draw of ``N + M_g`` of its frames (first N anchors, the rest queries), so every frame
    is used about once per epoch. The episodes are shuffled and cut into batches. The
    episode draws come from the trainer's per-epoch shuffle generator, so training is
    bit-identical for a seed and a device, and resumable.
    """

    def __init__(self, latent_dim: int = 8, hidden: int | Sequence[int] = (256,),
                 activation: str = "relu", likelihood: str = "bernoulli",
                 n_anchor: int | None = None, n_query: int | None = None,
                 epochs: Sequence[int] = DEFAULT_EPOCHS, lr: float = 1e-3,
                 batch_size: int = 64, lengthscale: float | None = None, noise: float = 1e-3,
                 patience: int | None = None, validation_every: int = 8,
                 dtype: DTypeLike = "float32", seed: int = 0, device: str = "cpu",
                 decoder: str = "mlp", query_amplitude: str = "interpolated",
                 beta: float = DEFAULT_BETA) -> None:
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.activation = activation
        self.likelihood = likelihood
        self.n_anchor = n_anchor
        self.n_query = n_query
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.lengthscale = lengthscale
        self.noise = noise
        self.patience = patience
        self.validation_every = validation_every
        self.dtype = dtype
        self.seed = seed
        self.device = device
        self.decoder = decoder
        self.query_amplitude = query_amplitude
        self.beta = beta

    history_: dict | None  # set by fit (None in a model loaded from a file without one)

    # ---- arguments, configuration and state ----------------------------------------------

    def _check_arguments(self) -> None:
        """ValueError naming the first malformed constructor argument."""
        check_network(self.latent_dim, self.hidden, self.likelihood, self.seed)
        for arg in ("n_anchor", "n_query"):
            if getattr(self, arg) is not None:
                check_positive_int(getattr(self, arg), arg)
        check_positive_int(self.batch_size, "batch_size")
        check_schedule(self.epochs, self.lr, self.patience, self.validation_every)
        if self.lengthscale is not None and not is_positive_real(self.lengthscale):
            raise ValueError(f"lengthscale={self.lengthscale!r} must be a positive number or None")
        if not is_positive_real(self.noise):
            raise ValueError(f"noise={self.noise!r} must be a positive number, e.g. 1e-3")
        resolve_dtype(self.dtype)
        get_backend(self.device)
        check_choice(self.decoder, "decoder", DECODERS)
        check_choice(self.query_amplitude, "query_amplitude", QUERY_AMPLITUDES)
        check_beta(self.beta)

    def get_config(self) -> dict:
        """The constructor arguments, JSON-serialisable."""
        return {
            "latent_dim": int(self.latent_dim),
            "hidden": list(check_network(self.latent_dim, self.hidden, self.likelihood,
                                         self.seed)),
            "activation": self.activation, "likelihood": self.likelihood,
            "n_anchor": self.n_anchor, "n_query": self.n_query,
            "epochs": [int(e) for e in self.epochs], "lr": float(self.lr),
            "batch_size": int(self.batch_size), "lengthscale": self.lengthscale,
            "noise": float(self.noise), "patience": self.patience,
            "validation_every": int(self.validation_every), "dtype": resolve_dtype(self.dtype).name,
            "seed": int(self.seed), "device": get_backend(self.device).name,
            "decoder": self.decoder, "query_amplitude": self.query_amplitude,
            "beta": float(self.beta),
        }

    def _check_fitted(self) -> None:
        if not hasattr(self, "network"):
            raise NotFittedError("this VARegressor is not fitted yet; call fit(X, Y) first")

    @property
    def params(self):
        """The parameters (:class:`~minivae.params.FlatArrays`, device arrays by name)."""
        self._check_fitted()
        return self.network.params

    def get_state(self):
        """Host copies of the parameters and training data, and the config (training contract).

        Returns
        -------
        arrays : dict name -> np.ndarray
            Every parameter by name, and the training data ``data.X`` (n, p),
            ``data.Y`` (n, D), ``data.group_index`` (n,) and ``data.group_labels``.
        meta : dict
            ``{"config": get_config(), "image_shape": [...], "episode": [N, M]}``.
        """
        self._check_fitted()
        arrays = self.network.host_params()
        arrays.update({
            "data.X": np.array(self.backend.to_host(self._X_train)),
            "data.Y": np.array(self.backend.to_host(self._Y_train)),
            "data.group_index": self._group_index.copy(),
            "data.group_labels": self.group_labels_.copy(),
        })
        return arrays, {"config": self.get_config(), "image_shape": list(self.image_shape_),
                        "episode": [self.n_anchor_, self.n_query_]}

    def set_state(self, arrays: dict, meta: dict | None = None) -> None:
        """Copy parameters from host ``arrays`` into this model's arrays, in place.

        Names may carry the checkpoint prefix ``"param."``. The training data in
        ``arrays`` (``data.*``) are taken only by a model that has none yet (one that
        :meth:`load` just built); a model being fitted keeps the data given to
        :meth:`fit`. CheckpointError if a parameter is missing or has the wrong shape.
        """
        self._check_fitted()
        self.network.load_params(arrays, "VARegressor")
        arrays = {name.removeprefix("param."): value for name, value in arrays.items()}
        if not hasattr(self, "_X_train") and all(key in arrays for key in _DATA_KEYS):
            self._set_training_data(arrays["data.X"], arrays["data.Y"],
                                    arrays["data.group_index"], arrays["data.group_labels"])

    def save(self, path: str | PathLike[str]) -> None:
        """Write parameters, configuration and training data to ``path`` (an .npz checkpoint).

        The training data are stored because :meth:`predict` conditions on them.
        """
        from .checkpoint import save_checkpoint

        arrays, meta = self.get_state()
        save_checkpoint(path, {"param." + name: value for name, value in arrays.items()},
                        {"model": meta, "history": getattr(self, "history_", None)},
                        kind="VARegressor")

    @classmethod
    def load(cls, path: str | PathLike[str], device: str | None = None) -> VARegressor:
        """Load a model written by :meth:`save` (or a :meth:`fit` checkpoint) onto ``device``
        (None: the device it was saved from)."""
        from .checkpoint import load_checkpoint

        arrays, meta = load_checkpoint(path, kind="VARegressor")
        model_meta = meta.get("model")
        if not isinstance(model_meta, dict) or "config" not in model_meta:
            raise CheckpointError(
                f"{str(path)!r} has no model configuration ('model' in its metadata); it was "
                "not written by VARegressor.save or VARegressor.fit"
            )
        arrays = {name[len("param."):]: value for name, value in arrays.items()
                  if name.startswith("param.")}
        missing = [key for key in _DATA_KEYS if key not in arrays]
        if missing:
            raise CheckpointError(
                f"{str(path)!r} has no training data ({missing}); it cannot predict"
            )
        config = dict(model_meta["config"])
        config.setdefault("beta", 1.0)  # files written before beta existed trained with 1
        if device is not None:
            config["device"] = device
        config["hidden"], config["epochs"] = tuple(config["hidden"]), tuple(config["epochs"])
        model = cls(**config)
        n_anchor, n_query = model_meta["episode"]
        model._build(arrays["data.X"].shape[1], tuple(model_meta["image_shape"]), n_anchor,
                     n_query)
        model.set_state(arrays)
        model.history_ = meta.get("history")
        return model

    # ---- building ------------------------------------------------------------------------

    def _build(self, n_features: int, image_shape: tuple, n_anchor: int, n_query: int) -> None:
        """Create the networks and freshly initialised parameters for this data shape
        (:class:`~minivae.autoencoder.Autoencoder`; ``gp.log_lengthscale`` is set by
        :meth:`fit`)."""
        self.backend = get_backend(self.device)
        self._dtype = resolve_dtype(self.dtype)
        self.n_features_ = self.n_features_in_ = int(n_features)
        self.image_shape_ = tuple(int(s) for s in image_shape)
        self.n_anchor_, self.n_query_ = int(n_anchor), int(n_query)
        hidden = check_network(self.latent_dim, self.hidden, self.likelihood, self.seed)
        self.network = Autoencoder(
            math.prod(self.image_shape_), self.latent_dim, hidden, self.activation,
            self.likelihood, dtype=self._dtype, backend=self.backend, seed=self.seed,
            extra_heads={"logsigma": 1}, extra_params={_LENGTHSCALE: (1,)},
            last=REGRESSION_PARAMS, decoder=self.decoder, image_shape=self.image_shape_)
        self._rng = self.backend.rng(derived_seed(self.seed, _STREAM_NOISE))
        for name in ("_X_train", "_Y_train"):
            self.__dict__.pop(name, None)

    def _set_training_data(self, X, Y, group_index, group_labels) -> None:
        self._X_train = self.network.to_device(X)
        self._Y_train = self.network.to_device(np.asarray(Y).reshape(len(Y), -1))
        self._group_index = np.asarray(group_index, dtype=np.int64)
        self.group_labels_ = np.asarray(group_labels)
        self._group_rows = [np.flatnonzero(self._group_index == g)
                            for g in range(len(self.group_labels_))]
        self._episode_rows = self._group_rows

    def _initial_log_lengthscale(self, X, group_index) -> float:
        """log of the initial lengthscale (class docstring, ``lengthscale``)."""
        if self.lengthscale is not None:
            return math.log(self.lengthscale)
        spacings = []
        for g in range(group_index.max() + 1):
            X_group = X[group_index == g]
            nearest = _nearest_distinct_distances(X_group)
            if nearest.size:
                stretch = (X_group.shape[0] / self.n_anchor_) ** (1.0 / X.shape[1])
                spacings.append(float(np.median(nearest)) * stretch)
        return math.log(float(np.median(spacings))) if spacings else 0.0

    def _theta(self) -> np.ndarray:
        """GP hyperparameters ``(log l, log variance = 0, log noise)`` as a float64 host array."""
        log_ls = float(self.backend.to_host(self.params[_LENGTHSCALE])[0])
        return np.array([log_ls, 0.0, math.log(float(self.noise))])

    # ---- the joint loss -------------------------------------------------------------------

    def _joint_loss_and_grads_device(self, X, Y, episodes, eps, grads):
        """The VAR loss of a batch of episodes and its gradient for every parameter.

        Derivation: docs/derivations.md, "VAR: forward", "VAR: backward through the
        decoder", "VAR: backward through the GP posterior mean", "VAR: amplitudes",
        "VAR: lengthscale" and "VAR: into the encoder".

        Parameters
        ----------
        X : (n, p) device array
            Inputs of the rows the episodes index.
        Y : (n, D) device array
            Images of those rows.
        episodes : list of (anchor_rows, query_rows)
            Integer host arrays indexing X and Y; anchors and queries must not overlap
            within an episode (not checked here).
        eps : (1, n_a, k) device array
            Standard-normal noise of the anchors' codes, ``n_a`` the total number of
            anchors, in episode order.
        grads : dict
            ``{}`` (fresh arrays) or the reused buffers of the training step.

        Returns
        -------
        loss : float
            Nats per example (anchors and queries counted alike).
        grads : dict name -> device array
        """
        xp, impl = self.backend.xp, self.backend.kernel_impl
        k = self.latent_dim
        anchor_rows = np.concatenate([anchors for anchors, _ in episodes])
        query_rows = np.concatenate([queries for _, queries in episodes])
        n_anchors, n_queries = anchor_rows.size, query_rows.size
        scale = 1.0 / (n_anchors + n_queries)
        anchor_idx = self.backend.asarray(anchor_rows)
        query_idx = self.backend.asarray(query_rows)
        X_anchor, Y_anchor = X[anchor_idx], Y[anchor_idx]
        X_query = X[query_idx]

        # Forward 1: encode the anchors; sample their codes ("VAR: forward").
        heads = self.network.encode(Y_anchor)
        mu, logvar, logsigma = heads["mu"], heads["logvar"], heads["logsigma"][:, 0]
        z = reparam_forward(mu, logvar, eps, impl=impl)[0]
        sigma = xp.exp(logsigma)
        amp = xp.exp(0.5 * logsigma)

        # Forward 2: per episode, the GP posterior mean of the query codes.
        theta = self._theta()
        z_query = xp.empty((n_queries, k), dtype=self._dtype)
        caches = []
        a0 = q0 = 0
        for anchors, queries in episodes:
            a1, q1 = a0 + anchors.size, q0 + queries.size
            amp_query = xp.sqrt(sigma[a0:a1].mean()) * xp.ones(queries.size, dtype=self._dtype)
            z_query[q0:q1], cache = posterior_mean(
                X_anchor[a0:a1], z[a0:a1], X_query[q0:q1], theta,
                amp_train=amp[a0:a1], amp_test=amp_query, backend=self.backend)
            caches.append(cache)
            a0, q0 = a1, q1

        # Forward 3 + backward 1: decode anchors and queries in one pass
        # ("VAR: backward through the decoder").
        Y_all = xp.concatenate([Y_anchor, Y[query_idx]])
        nll, dz_all, grads = self.network.decoder_loss_and_grads(
            xp.concatenate([z, z_query]), Y_all, scale, grads)
        kl = losses.kl_std_normal(mu, logvar)
        loss = (float(nll.sum()) + float(self.beta) * float(kl.sum())) * scale
        dz = dz_all[:n_anchors]
        dz_query = dz_all[n_anchors:]

        # Backward 2: through each episode's posterior mean into the anchors' codes,
        # amplitudes and the lengthscale ("VAR: backward through the GP posterior mean",
        # "VAR: amplitudes", "VAR: lengthscale").
        dlogsigma = xp.empty(n_anchors, dtype=self._dtype)
        dlog_lengthscale = 0.0
        a0 = q0 = 0
        for (anchors, queries), cache in zip(episodes, caches):
            a1, q1 = a0 + anchors.size, q0 + queries.size
            gp_grads = posterior_mean_backward(dz_query[q0:q1], cache)
            dz[a0:a1] += gp_grads["dZ"]
            dlog_lengthscale += float(gp_grads["dtheta"][0])
            sigma_g = sigma[a0:a1]
            amp_query = xp.sqrt(sigma_g.mean())
            damp_query = gp_grads["damp_test"].sum()
            dlogsigma[a0:a1] = (0.5 * amp[a0:a1] * gp_grads["damp_train"]
                                + damp_query * sigma_g / (2.0 * amp_query * anchors.size))
            a0, q0 = a1, q1

        # Backward 3: reparameterisation and KL, then the encoder ("VAR: into the encoder").
        dmu, dlogvar = reparam_backward(dz[None], logvar, eps, impl=impl)
        dmu_kl, dlogvar_kl = losses.kl_std_normal_grad(mu, logvar,
                                                       scale=float(self.beta) * scale)
        dmu += dmu_kl
        dlogvar += dlogvar_kl
        self.network.encoder_backward({"mu": dmu, "logvar": dlogvar,
                                       "logsigma": dlogsigma[:, None]}, grads)
        if isinstance(grads, FlatArrays):
            grads[_LENGTHSCALE][...] = dlog_lengthscale
            return loss, grads
        grads[_LENGTHSCALE] = self.backend.asarray(np.array([dlog_lengthscale], dtype=self._dtype))
        return loss, {name: grads[name] for name in self.params}

    # ---- the losses at the API edge --------------------------------------------------------

    def _device_images(self, Y):
        Y = check_images(Y, self.likelihood, self.image_shape_, dtype=self._dtype)
        return self.network.to_device(Y.reshape(Y.shape[0], -1))

    def loss_and_grads(self, X, Y, episodes, eps=None):
        """The joint VAR loss of given episodes and its gradient (for tests and learners).

        Derivation: docs/derivations.md, "Variational Autoencoded Regression".

        Parameters
        ----------
        X : (n, p) array
        Y : (n, H, W) or (n, D) array
        episodes : list of (anchor_rows, query_rows)
            Row indices into ``X`` and ``Y``; each episode is regressed separately.
        eps : (n_a, k) array, optional
            Noise of the anchors' codes, ``n_a`` the total number of anchors in episode
            order; given, the loss is a deterministic function of the parameters. Default:
            drawn from the model's generator.

        Returns
        -------
        loss : float
            Nats per example.
        grads : dict name -> device array
            Fresh arrays, same keys and order as ``params``.
        """
        self._check_fitted()
        X = self.network.to_device(check_inputs(X, "X", self.n_features_, self._dtype))
        Y = self._device_images(Y)
        episodes = _check_episodes(episodes, X.shape[0])
        n_anchors = sum(anchors.size for anchors, _ in episodes)
        eps = (self.network.draw_eps(self._rng, 1, n_anchors) if eps is None
               else self.network.check_eps(eps, n_anchors, samples=False))
        return self._joint_loss_and_grads_device(X, Y, episodes, eps, {})

    def elbo_loss_and_grads(self, Y, eps=None):
        """Mean negative ELBO (KL weighted ``beta``) of images ``Y`` (the pre-training loss)
        and its gradient; ``eps`` (n, k) is the reparameterisation noise (default: the
        model's generator). The regression parameters get zero gradients.

        Derivation: docs/derivations.md, "The whole chain" (the VAE's).
        """
        self._check_fitted()
        Y = self._device_images(Y)
        eps = (self.network.draw_eps(self._rng, 1, Y.shape[0]) if eps is None
               else self.network.check_eps(eps, Y.shape[0], samples=False))
        loss, grads = self.network.neg_elbo_and_grads(Y, eps, {}, beta=float(self.beta))
        return float(loss), grads

    # ---- training ------------------------------------------------------------------------

    def _episodes_per_batch(self) -> int:
        return max(1, self.batch_size // (self.n_anchor_ + self.n_query_))

    def _draw_batches(self, rng: np.random.Generator) -> list:
        """One epoch of joint batches: flat row-index arrays of whole episodes.

        Each group contributes ``ceil(n_g / (N + M_g))`` episodes (class Notes); a batch
        concatenates the rows of ``_episodes_per_batch()`` episodes, each episode's
        anchors first. :meth:`_split_episodes` cuts a batch back into episodes.
        """
        episodes = []
        for rows in self._episode_rows:
            n_g = rows.size
            size = self.n_anchor_ + min(self.n_query_, n_g - self.n_anchor_)
            n_episodes = -(-n_g // size)
            episodes.extend(rows[_draw_episode_rows(rng, n_episodes, n_g, size)])
        order = rng.permutation(len(episodes))
        per_batch = self._episodes_per_batch()
        return [np.concatenate([episodes[e] for e in order[start:start + per_batch]])
                for start in range(0, len(order), per_batch)]

    def _split_episodes(self, idx) -> list:
        """Cut a flat batch from :meth:`_draw_batches` into (anchor_rows, query_rows) pairs."""
        episodes = []
        start = 0
        while start < idx.size:
            n_g = self._episode_rows[self._group_index[idx[start]]].size
            end = start + self.n_anchor_ + min(self.n_query_, n_g - self.n_anchor_)
            episodes.append((idx[start:start + self.n_anchor_], idx[start + self.n_anchor_:end]))
            start = end
        return episodes

    def _episode_sizes(self, counts) -> tuple:
        """``(n_anchor_, n_query_)`` from the arguments, or from the smallest group's size."""
        n_min = int(counts.min())
        n_anchor = self.n_anchor
        if n_anchor is None:
            n_anchor = max(1, min(12, round(0.6 * n_min), n_min - 1))
        n_query = self.n_query
        if n_query is None:
            n_query = max(1, min(8, n_min - n_anchor))
        return int(n_anchor), int(n_query)

    def fit(self, X: ArrayLike, Y: ArrayLike, groups: ArrayLike | None = None,
            progress: bool = True, checkpoint: str | PathLike[str] | None = None,
            resume: bool = False) -> VARegressor:
        """Train with the three-phase schedule: pre-training, joint, fine-tuning.

        Parameters
        ----------
        X : (n, p) array
            Low-dimensional inputs.
        Y : (n, H, W) or (n, D) array
            Images; in [0, 1] for the Bernoulli likelihood.
        groups : (n,) array of int or str, or None
            Sequence id of each example; the GP regresses within a group. None: one group.
            Every group needs at least ``n_anchor + 1`` examples.
        progress : bool
            A progress bar per phase on a terminal, one line per phase elsewhere.
        checkpoint : path, optional
            Save model, optimiser and data there after every epoch; :meth:`load` reads it.
        resume : bool
            Continue from ``checkpoint`` if it exists (bit-identical to an uninterrupted run).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            A malformed constructor argument.
        DataError
            Malformed data (nothing is changed on the model then).
        TrainingDivergedError
            The loss or a gradient became NaN or infinite.

        Notes
        -----
        CPU training pins its threads to CPUs while it runs: :func:`minivae.train.fit_loop`.
        """
        from .train import Phase, fit_loop

        self._check_arguments()
        dtype = resolve_dtype(self.dtype)
        X = check_inputs(X, dtype=dtype)
        Y = check_images(Y, self.likelihood, dtype=dtype)
        n = X.shape[0]
        if Y.shape[0] != n:
            raise DataError(
                f"X has {n} rows but Y has {Y.shape[0]} images; give one image per input row"
            )
        groups = np.zeros(n, dtype=np.int64) if groups is None else check_groups(groups, n)
        group_labels, group_index = np.unique(groups, return_inverse=True)
        held_out = np.zeros(n, dtype=bool)
        if self.patience is not None:
            every = int(self.validation_every)
            for g in range(group_labels.size):
                held_out[np.flatnonzero(group_index == g)[every // 2::every]] = True
        counts = np.bincount(group_index[~held_out], minlength=group_labels.size)
        n_anchor, n_query = self._episode_sizes(counts)
        small = np.flatnonzero(counts < n_anchor + 1)
        if small.size:
            g = small[0]
            raise DataError(
                f"group {group_labels[g].item()!r} has {counts[g]} training frames but n_anchor="
                f"{n_anchor} needs at least {n_anchor + 1} (the anchors and one "
                f"query); {small.size} group(s) are too small. Lower n_anchor to at most "
                f"{counts.min() - 1} (or leave it None) or give every group more frames"
                + (" (with patience, every validation_every-th frame is held out)"
                   if self.patience is not None else "")
            )

        self._build(X.shape[1], Y.shape[1:], n_anchor, n_query)
        self._set_training_data(X, Y, group_index, group_labels)
        self.params[_LENGTHSCALE][...] = self._initial_log_lengthscale(X, group_index)
        network, X_train, Y_train = self.network, self._X_train, self._Y_train
        self._episode_rows = [rows[~held_out[rows]] for rows in self._group_rows]
        training_rows = np.flatnonzero(~held_out)
        evaluate: Callable[[], float] | None = None
        pretrain_batches: Callable[[Any], list] | None = None
        patience = None
        if self.patience is not None:
            patience = int(self.patience)
            val_rows = np.flatnonzero(held_out)
            val_groups, val_dev = group_index[val_rows], self.backend.asarray(val_rows)

            def validation_nll() -> float:
                codes = self._regress(X_train[val_dev], val_groups, self._episode_rows)[0]
                return float(network.decoder_nll(codes, Y_train[val_dev]).mean())

            def training_batches(rng) -> list:
                order = training_rows[rng.permutation(training_rows.size)]
                size = int(self.batch_size)
                return [order[start:start + size] for start in range(0, order.size, size)]

            evaluate, pretrain_batches = validation_nll, training_batches

        def pretrain_step(idx, rng):
            return network.neg_elbo_and_grads(Y_train[self.backend.asarray(idx)],
                                              network.draw_eps(rng, 1, len(idx)),
                                              network.gradient_buffers(), beta=float(self.beta))

        def joint_step(idx, rng):
            episodes = self._split_episodes(idx)
            eps = network.draw_eps(rng, 1, self.n_anchor_ * len(episodes))
            return self._joint_loss_and_grads_device(X_train, Y_train, episodes, eps,
                                                     network.gradient_buffers())

        networks = tuple(name for name in self.params if name not in REGRESSION_PARAMS)
        pre, joint, fine = (int(e) for e in self.epochs)
        phases = [Phase(PHASES[0], pre, pretrain_step, trainable=networks,
                        batches=pretrain_batches),
                  Phase(PHASES[1], joint, joint_step, batches=self._draw_batches,
                        evaluate=evaluate, patience=patience),
                  Phase(PHASES[2], fine, joint_step, trainable=networks,
                        batches=self._draw_batches, evaluate=evaluate, patience=patience)]
        self.history_ = fit_loop(self, phases, n_examples=n, batch_size=int(self.batch_size),
                                 lr=float(self.lr), progress=progress, checkpoint=checkpoint,
                                 resume=resume, kind="VARegressor")
        return self

    # ---- prediction ----------------------------------------------------------------------

    @property
    def lengthscale_(self) -> float:
        """The GP lengthscale (learned)."""
        self._check_fitted()
        return float(np.exp(self.backend.to_host(self.params[_LENGTHSCALE])[0]))

    def _group_ids(self, groups, m: int) -> np.ndarray:
        """Indices into ``group_labels_`` of the groups of ``m`` new inputs."""
        if groups is None:
            if self.group_labels_.size != 1:
                raise DataError(
                    f"the model was fitted on {self.group_labels_.size} groups; pass groups= "
                    "(one of the training group ids per input row)"
                )
            return np.zeros(m, dtype=np.int64)
        groups = check_groups(groups, m)
        lookup = {label.item(): g for g, label in enumerate(self.group_labels_)}
        unknown = [label for label in np.unique(groups) if label.item() not in lookup]
        if unknown:
            known = [label.item() for label in self.group_labels_[:10]]
            raise DataError(
                f"groups contains {len(unknown)} id(s) not seen in training (first: "
                f"{unknown[0].item()!r}); the model can only predict within its training "
                f"groups, which are {known}{'...' if self.group_labels_.size > 10 else ''}"
            )
        return np.array([lookup[label.item()] for label in groups], dtype=np.int64)

    def _condition(self, X_new, groups):
        """GP posterior mean (m, k) and variance (m,) in latent space, device arrays.

        The GP runs in float64 whatever the model's dtype: it conditions on every training
        frame of the group (training uses ``n_anchor``), and in float32 its error grows
        with that number (relative 3e-4 at 48 frames, 1e-2 at 1500). The encoder runs in
        the model's dtype and the results are returned in it.

        Derivation: docs/derivations.md, "VAR: prediction".
        """
        self._check_fitted()
        X_new = check_inputs(X_new, "X_new", self.n_features_, self._dtype)
        group_ids = self._group_ids(groups, X_new.shape[0])
        return self._regress(self.network.to_device(X_new), group_ids, self._group_rows)

    def _regress(self, X_dev, group_ids, rows_of):
        """:meth:`_condition` on device inputs, each group conditioned on ``rows_of[g]``."""
        xp = self.backend.xp
        X_dev = X_dev.astype(xp.float64)
        theta = np.array([self._theta()[0], 0.0, math.log(float(self.noise))])
        mean = xp.empty((X_dev.shape[0], self.latent_dim), dtype=self._dtype)
        var = xp.empty(X_dev.shape[0], dtype=self._dtype)
        for g in np.unique(group_ids):
            out_rows = self.backend.asarray(np.flatnonzero(group_ids == g))
            rows = self.backend.asarray(rows_of[g])
            heads = self.network.encode(self._Y_train[rows])
            codes = heads["mu"].astype(xp.float64)
            logsigma = heads["logsigma"][:, 0].astype(xp.float64)
            amp = xp.sqrt(xp.exp(logsigma))
            X_rows = self._X_train[rows].astype(xp.float64)
            amp_query = query_amplitudes(X_rows, logsigma, X_dev[out_rows], theta,
                                         self.query_amplitude, self.backend)
            factor = factorise(X_rows, theta, amplitudes=amp, backend=self.backend)
            alpha = factor.solve(codes)
            scale = (codes * alpha).sum() / codes.size
            mean[out_rows], latent_var = predictive(factor, alpha, X_dev[out_rows], amp_query,
                                                    return_var=True)
            var[out_rows] = scale * latent_var
        return mean, var

    def predict_latent(self, X_new: ArrayLike,
                       groups: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
        """GP posterior mean and variance of the latent code at new inputs.

        Parameters
        ----------
        X_new : (m, p) array
        groups : (m,) array, scalar or None
            The training group of each row (None when the model has one group).

        Returns
        -------
        mean : (m, k) host array
            ``K* (K + noise I)^-1 Mu``, Mu the posterior means of the group's training
            images.
        var : (m,) host array
            ``c (b^2 - k*^T (K + noise I)^-1 k*)``, the latent function's variance (no
            noise term; the same for every latent dimension), with ``c = tr(Mu^T (K +
            noise I)^-1 Mu) / (n k)`` the maximum-likelihood scale of the group's covariance
            given its codes and ``b`` the query amplitude (:func:`query_amplitudes`;
            docs/derivations.md, "VAR: prediction").
        """
        mean, var = self._condition(X_new, groups)
        return self.backend.to_host(mean), self.backend.to_host(var)

    def loo_error_variance(self) -> np.ndarray:
        """Per-pixel mean squared leave-one-out error of the training frames.

        For each training frame i of group g, the GP mean of its code given the group's
        other frames, ``mu_i - [A^-1 Mu]_i / [A^-1]_ii`` (Rasmussen & Williams, eq. 5.12,
        with the amplitudes and noise of :meth:`predict_latent`), is decoded and compared
        with the frame: the result is the mean over all training frames of the squared
        difference, per pixel. :meth:`predict` adds it to the latent spread's variance
        (``decoder_error=True``): it is the error that decoding a regressed code makes
        where no latent uncertainty is left. Derivation: docs/derivations.md, "VAR:
        prediction".

        Returns
        -------
        variance : image_shape_ host array, the model's dtype
        """
        self._check_fitted()
        xp = self.backend.xp
        theta = self._theta()
        total = xp.zeros(self._Y_train.shape[1], dtype=xp.float64)
        for rows_host in self._group_rows:
            rows = self.backend.asarray(rows_host)
            heads = self.network.encode(self._Y_train[rows])
            codes = heads["mu"].astype(xp.float64)
            amp = xp.sqrt(xp.exp(heads["logsigma"][:, 0].astype(xp.float64)))
            factor = factorise(self._X_train[rows].astype(xp.float64), theta, amplitudes=amp,
                               backend=self.backend)
            inverse = factor.solve(xp.eye(rows_host.size))
            loo = codes - (inverse @ codes) / xp.diag(inverse)[:, None]
            decoded = self.network.decode_mean(loo.astype(self._dtype)).astype(xp.float64)
            total += ((self._Y_train[rows].astype(xp.float64) - decoded) ** 2).sum(axis=0)
        variance = (total / self._Y_train.shape[0]).astype(self._dtype)
        return self.backend.to_host(variance).reshape(self.image_shape_)

    def predict(self, X_new: ArrayLike, groups: ArrayLike | None = None,
                return_std: bool = False, n_samples: int = 32,
                decoder_error: bool = True) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Images regressed at new inputs.

        Parameters
        ----------
        X_new : (m, p) array
        groups : (m,) array, scalar or None
            The training group of each row (None when the model has one group).
        return_std : bool
            Also return a per-pixel standard deviation.
        n_samples : int
            Latent posterior samples used for the standard deviation.
        decoder_error : bool
            With ``return_std``: add :meth:`loo_error_variance` to the variance of the
            decoded samples. False: the spread the latent uncertainty causes, alone.

        Returns
        -------
        images : (m, *image_shape) host array
            The decoder mean (Bernoulli probabilities or Gaussian means) at the GP
            posterior mean code.
        std : (m, *image_shape) host array, only with ``return_std``
            ``sqrt(s^2 + e^2)``: ``s`` the standard deviation over ``n_samples`` codes
            ``z ~ N(mean, var I)`` of their decoded means (the spread the latent
            uncertainty causes) and ``e^2`` the per-pixel :meth:`loo_error_variance` (0
            with ``decoder_error=False``). The samples come from a Generator seeded from
            the model seed, so calls repeat exactly.
        """
        if return_std and (not is_int(n_samples) or n_samples < 2):
            raise ValueError(f"n_samples={n_samples!r} must be an integer >= 2")
        mean, var = self._condition(X_new, groups)
        m = mean.shape[0]
        images = self.backend.to_host(self.network.decode_mean(mean))
        images = images.reshape((m, *self.image_shape_))
        if not return_std:
            return images
        rng = self.backend.rng(derived_seed(self.seed, _STREAM_PREDICT))
        eps = rng.standard_normal((n_samples, m, self.latent_dim), dtype=self._dtype)
        codes = mean[None] + self.backend.xp.sqrt(var)[None, :, None] * eps
        decoded = self.network.decode_mean(codes.reshape(n_samples * m, self.latent_dim))
        std = self.backend.to_host(decoded.reshape(n_samples, m, -1).std(axis=0))
        std = std.reshape((m, *self.image_shape_))
        if decoder_error:
            std = np.sqrt(std**2 + self.loo_error_variance()[None])
        return images, std

    def score(self, X: ArrayLike, Y: ArrayLike, groups: ArrayLike | None = None) -> float:
        """Coefficient of determination R^2 of the predicted images: one minus the summed
        squared error over the summed squared deviation from the mean image (scikit-learn's
        ``r2_score`` with ``multioutput="variance_weighted"``; an unweighted mean over
        pixels would be dominated by near-constant background pixels)."""
        from sklearn.metrics import r2_score

        Y = check_images(Y, self.likelihood, dtype=self._dtype)
        predicted = np.asarray(self.predict(X, groups))
        return float(r2_score(Y.reshape(Y.shape[0], -1), predicted.reshape(Y.shape[0], -1),
                              multioutput="variance_weighted"))

    def encode(self, Y: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Encoder outputs of images ``Y`` (n, H, W) or (n, D): ``mu, logvar`` (n, k) and
        ``logsigma`` (n,), the log of the kernel amplitude squared, host arrays."""
        self._check_fitted()
        heads = self.network.encode(self._device_images(Y))
        to_host = self.backend.to_host
        return to_host(heads["mu"]), to_host(heads["logvar"]), to_host(heads["logsigma"][:, 0])

    def decode(self, Z: ArrayLike) -> np.ndarray:
        """Decoder mean for latent codes ``Z`` (m, k): images (m, *image_shape), host."""
        self._check_fitted()
        Z = check_inputs(Z, "Z", int(self.latent_dim), self._dtype)
        images = self.backend.to_host(self.network.decode_mean(self.network.to_device(Z)))
        return images.reshape((Z.shape[0], *self.image_shape_))
