"""The variational autoencoder (Kingma & Welling 2014, AEVB with the SGVB estimator).

The encoder, decoder, likelihood and the ELBO's hand-written gradient are
:class:`minivae.autoencoder.Autoencoder`; this module makes it a model: training, scoring,
sampling, saving, and the scikit-learn transformer interface (``transform`` is the
encoder mean, ``inverse_transform`` the decoder mean). Derivations: docs/derivations.md.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from os import PathLike
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike
from sklearn.base import BaseEstimator, TransformerMixin

from .autoencoder import DECODERS, Autoencoder
from .backend import Backend, get_backend, resolve_dtype
from .errors import CheckpointError, NotFittedError
from .kernels import reparam_forward
from .validation import (check_beta, check_choice, check_data, check_network,
                         check_positive_int, derived_seed)

# Seed streams derived from the model seed (the trainer uses [seed, epoch, stream]).
_STREAM_NOISE, _STREAM_EVAL, _STREAM_IMPORTANCE = 1, 2, 3
_IMPORTANCE_ROWS = 20000

DEFAULT_EPOCHS = 50
"""Epochs of :meth:`VAE.fit` when none are given (fewer with ``patience``)."""


class VAE(TransformerMixin, BaseEstimator):
    """Variational autoencoder with a Gaussian encoder and a Bernoulli or Gaussian decoder.

    Parameters
    ----------
    input_dim : int or None, default None
        Features D of each example; None takes them from the data in :meth:`fit`.
    latent_dim : int, default 2
        Dimension k of the latent code.
    hidden : sequence of int or int, default (400,)
        Encoder hidden widths; the decoder uses them in reverse order.
    activation : {"relu", "tanh", "softplus"}
    likelihood : {"bernoulli", "gaussian"}
        Bernoulli needs data in [0, 1] (grey levels act as soft targets).
    n_samples : int, default 1
        Monte-Carlo samples S of z per example in the training loss and in :meth:`elbo`.
    beta : float, default 1.0
        Weight of the KL term in the training loss (1 gives the ELBO).
    fixed_variance : float or None
        Gaussian only: use this output variance instead of learning ``dec.logvar``.
    dtype : {"float32", "float64"}
    seed : int
        Seeds parameter initialisation and every random stream of the model.
    device : {"cpu", "gpu", "cuda-sim"}
    decoder : {"mlp", "conv"}, default "mlp"
        "conv": the convolutional decoder of :mod:`minivae.conv` for images of
        ``image_shape`` (``hidden`` then shapes the encoder only).
    image_shape : tuple or None
        (H, W) or (H, W, c) of the flattened images, H W c = ``input_dim``; needed by
        ``decoder="conv"``.

    Attributes
    ----------
    params : FlatArrays name -> device array
        ``enc.0.W, enc.0.b, ..., enc.mu.*, enc.logvar.*, dec.0.*, ..., dec.out.*`` (or
        ``dec.mean.*``, ``dec.logvar.*``). They exist from construction when ``input_dim``
        is given (initialised, not trained), else from :meth:`fit`.
    n_features_in_ : int
    history_ : dict
        After :meth:`fit`: the trainer's history (``epoch``, ``train_loss``, ``val_loss``,
        ``phase``, ``seconds``, ``stops``) plus ``train_elbo = -train_loss`` and
        ``val_elbo``.

    Notes
    -----
    The constructor stores its arguments unchanged (scikit-learn's convention: ``clone``,
    ``get_params`` and grid searches work); they are checked when the networks are built.
    :meth:`fit` always starts from the seed's initialisation. Monte-Carlo noise outside
    training (``loss_and_grads`` without ``eps``, ``sample`` without ``seed``) comes from
    the model's own generator; :meth:`elbo` and :meth:`log_likelihood` each use a fresh
    Generator seeded from ``seed``, so repeated calls give the same numbers.
    """

    def __init__(self, input_dim: int | None = None, latent_dim: int = 2,
                 hidden: int | Sequence[int] = (400,), activation: str = "relu",
                 likelihood: str = "bernoulli", n_samples: int = 1, beta: float = 1.0,
                 fixed_variance: float | None = None, dtype: DTypeLike = "float32",
                 seed: int = 0, device: str = "cpu", decoder: str = "mlp",
                 image_shape: Sequence[int] | None = None) -> None:
        self.input_dim = input_dim
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.activation = activation
        self.likelihood = likelihood
        self.n_samples = n_samples
        self.beta = beta
        self.fixed_variance = fixed_variance
        self.dtype = dtype
        self.seed = seed
        self.device = device
        self.decoder = decoder
        self.image_shape = image_shape
        if input_dim is not None:
            self._build(input_dim)

    # Set by _build (in __init__ when input_dim is given, else in fit).
    backend: Backend
    network: Autoencoder
    _dtype: np.dtype
    _rng: Any

    # ---- building, configuration and state ----------------------------------------------

    def _build(self, input_dim) -> None:
        """Check the arguments and create freshly initialised networks for ``input_dim``."""
        hidden = check_network(self.latent_dim, self.hidden, self.likelihood, self.seed)
        check_positive_int(input_dim, "input_dim")
        check_positive_int(self.n_samples, "n_samples")
        check_beta(self.beta)
        if self.fixed_variance is not None:
            if self.likelihood != "gaussian":
                raise ValueError('fixed_variance is only used by the Gaussian likelihood; pass '
                                 'likelihood="gaussian" or leave fixed_variance=None')
            if (not isinstance(self.fixed_variance, numbers.Real)
                    or not math.isfinite(self.fixed_variance) or self.fixed_variance <= 0):
                raise ValueError(f"fixed_variance={self.fixed_variance!r} must be a positive "
                                 "number")
        check_choice(self.decoder, "decoder", DECODERS)
        if self.decoder == "conv" and self.image_shape is None:
            raise ValueError('decoder="conv" needs image_shape=(H, W) of the flattened images')
        self.backend = get_backend(self.device)
        self._dtype = resolve_dtype(self.dtype)
        self.n_features_in_ = int(input_dim)
        self.network = Autoencoder(
            input_dim, self.latent_dim, hidden, self.activation, self.likelihood,
            dtype=self._dtype, backend=self.backend, seed=self.seed,
            fixed_variance=None if self.fixed_variance is None else float(self.fixed_variance),
            decoder=self.decoder, image_shape=self.image_shape)
        self._rng = self.backend.rng(derived_seed(self.seed, _STREAM_NOISE))

    @property
    def params(self):
        """The parameters (:class:`~minivae.params.FlatArrays`, device arrays by name)."""
        return self._network().params

    def _network(self) -> Autoencoder:
        if not hasattr(self, "network"):
            raise NotFittedError("this VAE has no networks yet: give input_dim or call "
                                 "fit(X) first")
        return self.network

    def get_config(self) -> dict:
        """The constructor arguments, JSON-serialisable (input_dim as built)."""
        network = self._network()
        return {
            "input_dim": network.input_dim, "latent_dim": int(self.latent_dim),
            "hidden": list(network.hidden), "activation": self.activation,
            "likelihood": self.likelihood, "n_samples": int(self.n_samples),
            "beta": float(self.beta), "fixed_variance": network.fixed_variance,
            "dtype": self._dtype.name, "seed": int(self.seed), "device": self.backend.name,
            "decoder": self.decoder,
            "image_shape": None if self.image_shape is None else [int(s) for s in self.image_shape],
        }

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Host copies of the parameters, and :meth:`get_config` (training contract)."""
        return self._network().host_params(), self.get_config()

    def set_state(self, arrays: dict, meta: dict | None = None) -> None:
        """Copy parameters from host ``arrays`` into this model, in place; CheckpointError if
        one is missing or has the wrong shape (``meta`` is part of the training contract)."""
        self._network().load_params(arrays, "VAE")

    def save(self, path: str | PathLike[str]) -> None:
        """Write the parameters and configuration to ``path`` (an .npz checkpoint)."""
        from .checkpoint import save_checkpoint

        arrays, config = self.get_state()
        save_checkpoint(path, {"param." + name: value for name, value in arrays.items()},
                        {"model": config}, kind="VAE")

    @classmethod
    def load(cls, path: str | PathLike[str], device: str | None = None) -> VAE:
        """Load a model written by :meth:`save` (or a :meth:`fit` checkpoint) onto ``device``
        (None: the device it was saved from)."""
        from .checkpoint import load_checkpoint

        arrays, meta = load_checkpoint(path, kind="VAE")
        if "model" not in meta:
            raise CheckpointError(f"{path} has no model configuration ('model' in its meta)")
        config = dict(meta["model"])
        if device is not None:
            config["device"] = device
        config["hidden"] = tuple(config["hidden"])
        model = cls(**config)
        model.set_state({name: value for name, value in arrays.items()
                         if name.startswith("param.")})
        return model

    # ---- data at the API edge ------------------------------------------------------------

    def _device_data(self, X, name="X"):
        network = self._network()
        X = check_data(X, network.input_dim, name,
                       unit_interval=self.likelihood == "bernoulli", dtype=self._dtype)
        return network.to_device(X)

    # ---- the loss and its gradient ---------------------------------------------------------

    def loss_and_grads(self, X, eps=None) -> tuple[float, dict]:
        """Mean negative ELBO (beta-weighted KL) of a batch and its gradient.

        Parameters
        ----------
        X : (n, input_dim) array
        eps : (S, n, latent_dim) or (n, latent_dim) array, optional
            Standard-normal noise for the reparameterisation; given, the result is
            deterministic and the number of samples S is its first dimension. Default: ``n_samples`` draws
            from the model's generator.

        Returns
        -------
        loss : float
            ``mean_i [ (1/S) sum_s -log p(x_i | z_is) + beta KL_i ]`` in nats per example.
        grads : dict name -> device array
            Fresh arrays, same keys and order as ``params``.

        Derivation: docs/derivations.md, "The whole chain".
        """
        network = self._network()
        X = self._device_data(X)
        eps = (network.draw_eps(self._rng, self.n_samples, X.shape[0]) if eps is None
               else network.check_eps(eps, X.shape[0]))
        loss, grads = network.neg_elbo_and_grads(X, eps, {}, beta=float(self.beta))
        return float(loss), grads

    # ---- training --------------------------------------------------------------------------

    def fit(self, X: ArrayLike, y: object = None, epochs: int | None = None,
            batch_size: int = 100, optimizer: str = "adam", lr: float = 1e-3,
            validation_data: ArrayLike | None = None, patience: int | None = None,
            progress: bool = True, checkpoint: str | PathLike[str] | None = None,
            resume: bool = False, checkpoint_every: int = 1) -> VAE:
        """Train from the seed's initialisation by minibatch SGD on the negative ELBO.

        Parameters
        ----------
        X : (n, input_dim) array
        y : ignored
            For scikit-learn pipelines.
        epochs : int, default :data:`DEFAULT_EPOCHS`
        batch_size : int
        optimizer : {"adam", "adagrad", "sgd"}
        lr : float
        validation_data : (m, input_dim) array, optional
            Scored (negative ELBO) after every epoch.
        patience : int, optional
            With ``validation_data``: stop when its ELBO has not improved for this many
            epochs and keep the best epoch's parameters.
        progress : bool
            A progress bar on a terminal, one line per run elsewhere.
        checkpoint : path, optional
            Save model and optimiser state there every ``checkpoint_every`` epochs and at
            the end; :meth:`load` reads it.
        resume : bool
            Continue from ``checkpoint`` if it exists (bit-identical to an uninterrupted
            run).

        Returns
        -------
        self
            The history is in :attr:`history_`.

        Raises
        ------
        TrainingDivergedError
            The loss or a gradient became NaN or infinite.
        """
        from .train import Phase, fit_loop

        width = self.input_dim
        if width is None:
            width = np.shape(X)[1] if np.ndim(X) == 2 else 1
        dtype = resolve_dtype(self.dtype)
        unit = self.likelihood == "bernoulli"
        X_host = check_data(X, width, "X", unit_interval=unit, dtype=dtype)
        if validation_data is not None:
            val_host = check_data(validation_data, width, "validation_data",
                                  unit_interval=unit, dtype=dtype)
        self._build(width)
        network = self.network
        X_train = network.to_device(X_host)
        evaluate: Callable[[], float] | None = None
        if validation_data is not None:
            X_val = network.to_device(val_host)

            def evaluate_val() -> float:
                return -float(self._elbo_device(X_val).mean())

            evaluate = evaluate_val

        def step(idx, rng):
            eps = network.draw_eps(rng, int(self.n_samples), len(idx))
            return network.neg_elbo_and_grads(X_train[self.backend.asarray(idx)], eps,
                                              network.gradient_buffers(), beta=float(self.beta))

        phase = Phase("train", DEFAULT_EPOCHS if epochs is None else epochs, step,
                      evaluate=evaluate, patience=patience)
        history = fit_loop(self, [phase], n_examples=X_train.shape[0], batch_size=batch_size,
                           optimizer=optimizer, lr=lr, progress=progress,
                           checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                           resume=resume, kind="VAE")
        history["train_elbo"] = [-loss for loss in history["train_loss"]]
        history["val_elbo"] = [None if loss is None else -loss for loss in history["val_loss"]]
        self.history_ = history
        return self

    # ---- evaluation ------------------------------------------------------------------------

    def _elbo_device(self, X):
        rng = self.backend.rng(derived_seed(self.seed, _STREAM_EVAL))
        return self.network.elbo(X, rng, int(self.n_samples))

    def elbo(self, X: ArrayLike) -> np.ndarray:
        """Evidence lower bound of each example, in nats: ``(1/S) sum_s log p(x | z_s) -
        KL(q(z|x) || p(z))`` with ``S = n_samples`` and ``beta = 1`` whatever the training
        beta; (n,) float64. The noise is seeded from the model seed at every call, so
        repeated calls agree exactly; examples are processed in blocks of 1000."""
        return self._elbo_device(self._device_data(X))

    def score(self, X: ArrayLike, y: object = None) -> float:
        """Mean ELBO of ``X`` in nats per example (higher is better); see :meth:`elbo`."""
        return float(self.elbo(X).mean())

    def log_likelihood(self, X: ArrayLike, n_importance: int = 1000,
                       batch_size: int = 100) -> np.ndarray:
        """Importance-sampled estimate of ``log p(x)`` for each example, (n,) float64.

        With S = ``n_importance`` draws ``z_s ~ q(z | x)`` (Burda et al. 2016, Eq. 8),
        ``log p(x) ~ log (1/S) sum_s p(x | z_s) p(z_s) / q(z_s | x)``, evaluated as a
        log-sum-exp. In expectation it lies above the ELBO and tightens as S grows.
        ``batch_size`` examples are encoded at a time and their samples decoded in chunks
        of at most ``max(1, 20000 // batch_size)`` per example. The noise is seeded from
        the model seed, so repeated calls agree.
        """
        network = self._network()
        X = check_data(X, network.input_dim, "X", unit_interval=self.likelihood == "bernoulli",
                       dtype=self._dtype)
        check_positive_int(n_importance, "n_importance")
        check_positive_int(batch_size, "batch_size")
        rng = self.backend.rng(derived_seed(self.seed, _STREAM_IMPORTANCE))
        xp, impl, k = self.backend.xp, self.backend.kernel_impl, network.latent_dim
        log_px = np.empty(X.shape[0])
        for start in range(0, X.shape[0], batch_size):
            X_batch = network.to_device(X[start:start + batch_size])
            n = X_batch.shape[0]
            heads = network.encode(X_batch)
            mu, logvar = heads["mu"], heads["logvar"]
            log_weights = np.empty((n_importance, n))
            chunk = max(1, _IMPORTANCE_ROWS // n)
            for s0 in range(0, n_importance, chunk):
                s = min(chunk, n_importance - s0)
                eps = network.draw_eps(rng, s, n)
                z = reparam_forward(mu, logvar, eps, impl=impl)
                nll = network.decoder_nll(z.reshape(s * n, k), xp.concatenate([X_batch] * s))
                # log p(z) - log q(z|x) = -0.5 (|z|^2 - |eps|^2 - sum logvar); 2 pi cancels.
                log_prior_ratio = 0.5 * ((eps * eps).sum(axis=2) - (z * z).sum(axis=2)
                                         + logvar.sum(axis=1)[None])
                log_weights[s0:s0 + s] = self.backend.to_host(-nll.reshape(s, n)
                                                              + log_prior_ratio)
            top = log_weights.max(axis=0)
            log_px[start:start + n] = top + np.log(np.exp(log_weights - top).mean(axis=0))
        return log_px

    # ---- encoding and decoding -------------------------------------------------------------

    def encode(self, X: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Posterior parameters ``(mu, logvar)`` of each example, (n, latent_dim) host arrays."""
        heads = self._network().encode(self._device_data(X))
        return self.backend.to_host(heads["mu"]), self.backend.to_host(heads["logvar"])

    def transform(self, X: ArrayLike) -> np.ndarray:
        """The posterior mean ``mu(x)`` of each example, (n, latent_dim): the code a
        pipeline's next step sees."""
        return self.encode(X)[0]

    def decode(self, Z: ArrayLike) -> np.ndarray:
        """Mean of ``p(x | z)`` for each code (Bernoulli probabilities or Gaussian means),
        (n, input_dim) host array."""
        network = self._network()
        Z = check_data(Z, network.latent_dim, "Z", dtype=self._dtype)
        return self.backend.to_host(network.decode_mean(network.to_device(Z)))

    def inverse_transform(self, Z: ArrayLike) -> np.ndarray:
        """:meth:`decode`: data from codes."""
        return self.decode(Z)

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """Decoder means of ``n`` codes drawn from the prior N(0, I), (n, input_dim); the
        draw is seeded by ``seed``, or comes from the model's own generator."""
        network = self._network()
        check_positive_int(n, "n")
        rng = self._rng if seed is None else self.backend.rng(seed)
        Z = rng.standard_normal((n, network.latent_dim), dtype=self._dtype)
        return self.backend.to_host(network.decode_mean(Z))

    def reconstruct(self, X: ArrayLike) -> np.ndarray:
        """``decode(mu(x))``: the decoder mean at the posterior mean; (n, input_dim)."""
        network = self._network()
        heads = network.encode(self._device_data(X))
        return self.backend.to_host(network.decode_mean(heads["mu"]))
