"""The variational autoencoder (Kingma & Welling 2014, AEVB with the SGVB estimator).

Every gradient is written out by hand in :meth:`VAE.loss_and_grads`; the derivations are
in docs/derivations.md (sections cited beside each block).

Model
-----
Encoder ``q(z | x) = N(mu(x), diag(exp(logvar(x))))``: an MLP with heads ``enc.mu`` and
``enc.logvar``. Prior ``p(z) = N(0, I)``. Decoder ``p(x | z)``: an MLP whose hidden widths
mirror the encoder's (reversed), with head ``dec.out`` (Bernoulli logits) or ``dec.mean``
and ``dec.logvar`` (Gaussian with a learned per-output log-variance; ``fixed_variance=v``
drops ``dec.logvar`` and uses variance ``v``).

Objective (per example, in nats), with ``L`` Monte-Carlo samples ``z_l = mu + sigma * eps_l``::

    loss(x) = (1/L) sum_l -log p(x | z_l) + beta * KL(q(z | x) || p(z))

The training loss is its mean over the batch (the negative ELBO when ``beta = 1``).

Building blocks another model can reuse (the regression model adds an encoder head)
-----------------------------------------------------------------------------------
- ``self.encoder`` / ``self.decoder``: :class:`minivae.nn.MLP` objects; parameters live in
  ``self.params``.
- :meth:`_encoder_heads` -> ``{"mu": k, "logvar": k}``: override to add a head.
- :meth:`_encoder_forward` (X) -> dict of head outputs; :meth:`_encoder_backward`
  (dict of head gradients) -> encoder grads.
- :meth:`_decoder_loss_and_grads` (Z, X, scale) -> (nll per row, dZ, decoder grads).
- :meth:`_decoder_nll` (Z, X) -> nll per row, forward only.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import losses
from .backend import get_backend, resolve_dtype
from .errors import CheckpointError, DataError
from .kernels import reparam_backward, reparam_forward
from .nn import ACTIVATIONS, MLP, sigmoid
from .params import FlatArrays
from .validation import (
    check_finite,
    check_representable,
    derived_seed,
    is_int,
    numeric_host_array,
)

LIKELIHOODS = ("bernoulli", "gaussian")

# Seed streams derived from the model seed (the trainer uses [seed, epoch, stream]).
_STREAM_NOISE = 1
_STREAM_EVAL = 2
_STREAM_IMPORTANCE = 3

_EVAL_BATCH = 1000
_IMPORTANCE_ROWS = 20000


def check_data(X, n_columns: int, name: str = "X", unit_interval: bool = False,
               dtype=None) -> np.ndarray:
    """Validate a 2-D numeric data matrix at the API edge; return it as a host array.

    Parameters
    ----------
    X : array-like of shape (n, n_columns)
    n_columns : int
    name : str
        How the array is called in error messages.
    unit_interval : bool
        Also require every value in [0, 1] (Bernoulli data).
    dtype : numpy dtype or None
        The dtype ``X`` will be cast to; its values must fit in it (a float64 1e39 would
        become inf in float32). None skips that check.

    Raises
    ------
    DataError
        Non-numeric dtype, wrong number of dimensions or columns, no rows, NaN or
        infinite values, values beyond ``dtype``'s range, or (``unit_interval``) values
        outside [0, 1]. The message names the count, the first location and the fix.
    """
    X = numeric_host_array(X, name)
    if X.ndim != 2:
        hint = f"; for one example use {name}.reshape(1, -1)" if X.ndim == 1 else ""
        raise DataError(
            f"{name} must be 2-D (n_examples, {n_columns}); got shape {X.shape}{hint}"
        )
    if X.shape[1] != n_columns:
        raise DataError(
            f"{name} has {X.shape[1]} columns but the model expects {n_columns}; "
            f"pass data with {n_columns} features per row"
        )
    if X.shape[0] == 0:
        raise DataError(f"{name} has no rows; pass at least one example")
    check_finite(X, name)
    if dtype is not None:
        check_representable(X, dtype, name)
    if unit_interval:
        outside = (X < 0) | (X > 1)
        if outside.any():
            row, col = np.argwhere(outside)[0]
            raise DataError(
                f"{name} has {int(outside.sum())} values outside [0, 1] (first at row {row}, "
                f"column {col}: {X[row, col].item()!r}), which a Bernoulli likelihood cannot "
                'model; rescale the data to [0, 1] or use likelihood="gaussian"'
            )
    return X


class VAE:
    """Variational autoencoder with a Gaussian encoder and a Bernoulli or Gaussian decoder.

    Parameters
    ----------
    input_dim : int
        Number of features D of each example.
    latent_dim : int
        Dimension k of the latent code.
    hidden : sequence of int or int, default (400,)
        Encoder hidden widths; the decoder uses them in reverse order.
    activation : {"relu", "tanh", "softplus"}
    likelihood : {"bernoulli", "gaussian"}
        Bernoulli needs data in [0, 1] (grey levels act as soft targets).
    n_samples : int, default 1
        Monte-Carlo samples L of z per example in the training loss and in :meth:`elbo`.
    beta : float, default 1.0
        Weight of the KL term in the training loss (1 gives the ELBO).
    fixed_variance : float or None
        Gaussian only: use this output variance instead of learning ``dec.logvar``.
    dtype : {"float32", "float64"}
    seed : int
        Seeds parameter initialisation and every random stream of the model.
    device : {"cpu", "gpu", "cuda-sim"}

    Attributes
    ----------
    params : dict name -> device array
        ``enc.0.W, enc.0.b, ..., enc.mu.W, enc.mu.b, enc.logvar.W, enc.logvar.b,
        dec.0.W, ..., dec.out.*`` (or ``dec.mean.*``, ``dec.logvar.*``).
    backend : minivae.backend.Backend
    dtype : numpy.dtype

    Notes
    -----
    Initialisation: a host ``np.random.default_rng(seed)`` draws, layer by layer in the
    order of ``params``, Glorot-uniform weights ``U(-a, a)``, ``a = sqrt(6 / (fan_in +
    fan_out))`` (in float64, then cast to ``dtype``); biases are zero. Because the draw is
    on the host, the initial parameters are the same on every device.

    Random streams: Monte-Carlo noise comes from ``self._rng`` (a device Generator; the
    trainer reseeds it every epoch). :meth:`elbo` and :meth:`log_likelihood` each use a
    fresh Generator seeded from ``seed``, so repeated calls give the same numbers.
    """

    def __init__(self, input_dim, latent_dim, hidden=(400,), activation="relu",
                 likelihood="bernoulli", n_samples=1, beta=1.0, fixed_variance=None,
                 dtype="float32", seed=0, device="cpu"):
        if is_int(hidden):
            hidden = (hidden,)
        hidden = tuple(hidden)
        for arg, value in (("input_dim", input_dim), ("latent_dim", latent_dim),
                           ("n_samples", n_samples)):
            if not is_int(value) or value < 1:
                raise ValueError(f"{arg}={value!r} must be a positive integer")
        if not all(is_int(width) and width >= 1 for width in hidden):
            raise ValueError(f"hidden={hidden!r} must be a sequence of positive integers")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not one of {ACTIVATIONS}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood={likelihood!r} is not one of {LIKELIHOODS}")
        if not isinstance(beta, numbers.Real) or not math.isfinite(beta) or beta < 0:
            raise ValueError(f"beta={beta!r} must be a finite number >= 0")
        if fixed_variance is not None:
            if likelihood != "gaussian":
                raise ValueError(
                    "fixed_variance is only used by the Gaussian likelihood; pass "
                    'likelihood="gaussian" or leave fixed_variance=None'
                )
            if (not isinstance(fixed_variance, numbers.Real)
                    or not math.isfinite(fixed_variance) or fixed_variance <= 0):
                raise ValueError(f"fixed_variance={fixed_variance!r} must be a positive number")
        if not is_int(seed) or seed < 0:
            raise ValueError(f"seed={seed!r} must be a non-negative integer")

        self.input_dim = int(input_dim)
        self.latent_dim = int(latent_dim)
        self.hidden = tuple(int(width) for width in hidden)
        self.activation = activation
        self.likelihood = likelihood
        self.n_samples = int(n_samples)
        self.beta = float(beta)
        self.fixed_variance = None if fixed_variance is None else float(fixed_variance)
        self.dtype = resolve_dtype(dtype)
        self.seed = int(seed)
        self.backend = get_backend(device)
        self.device = self.backend.name

        k, D = self.latent_dim, self.input_dim
        self.encoder = MLP("enc", D, self.hidden, self._encoder_heads(), activation,
                           impl=self.backend.kernel_impl)
        if likelihood == "bernoulli":
            decoder_heads = {"out": D}
        elif fixed_variance is None:
            decoder_heads = {"mean": D, "logvar": D}
        else:
            decoder_heads = {"mean": D}
        self.decoder = MLP("dec", k, self.hidden[::-1], decoder_heads, activation,
                           impl=self.backend.kernel_impl)

        init_rng = np.random.default_rng(self.seed)
        host_params = self.encoder.init_params(init_rng, self.dtype)
        host_params.update(self.decoder.init_params(init_rng, self.dtype))
        self.params = FlatArrays.copy_of(self.backend.xp, host_params, self.dtype)
        self._grad_buffers = None
        self._rng = self.backend.rng(derived_seed(self.seed, _STREAM_NOISE))

    # ---- configuration and state -----------------------------------------------------

    def get_config(self) -> dict:
        """The constructor arguments, JSON-serialisable."""
        return {
            "input_dim": self.input_dim, "latent_dim": self.latent_dim,
            "hidden": list(self.hidden), "activation": self.activation,
            "likelihood": self.likelihood, "n_samples": self.n_samples, "beta": self.beta,
            "fixed_variance": self.fixed_variance, "dtype": self.dtype.name,
            "seed": self.seed, "device": self.device,
        }

    def get_state(self):
        """Host copies of the parameters and the config (training contract).

        Returns
        -------
        arrays : dict name -> np.ndarray
        meta : dict
            :meth:`get_config`.
        """
        arrays = {name: np.array(self.backend.to_host(value)) for name, value in
                  self.params.items()}
        return arrays, self.get_config()

    def set_state(self, arrays: dict, meta: dict | None = None) -> None:
        """Copy parameters from host ``arrays`` into this model's parameter arrays, in place.

        Names may carry the checkpoint prefix ``"param."``. ``meta`` is accepted for the
        training contract; the architecture is checked through the array shapes.

        Raises
        ------
        CheckpointError
            A parameter is missing or has the wrong shape.
        """
        arrays = {name.removeprefix("param."): value
                  for name, value in arrays.items()}
        for name, value in self.params.items():
            if name not in arrays:
                raise CheckpointError(
                    f"the state has no parameter {name!r} (it has {sorted(arrays)[:6]}...); "
                    "it was saved from a model with another architecture"
                )
            if tuple(arrays[name].shape) != tuple(value.shape):
                raise CheckpointError(
                    f"parameter {name!r} has shape {tuple(arrays[name].shape)} in the state "
                    f"but {tuple(value.shape)} in this model; build the model with the "
                    "saved configuration (VAE.load does this)"
                )
        for name, value in self.params.items():
            value[...] = self.backend.asarray(np.asarray(arrays[name]), dtype=self.dtype)

    def save(self, path) -> None:
        """Write the parameters and configuration to ``path`` (an .npz checkpoint)."""
        from .checkpoint import save_checkpoint

        arrays, config = self.get_state()
        save_checkpoint(path, {"param." + name: value for name, value in arrays.items()},
                        {"model": config}, kind="VAE")

    @classmethod
    def load(cls, path, device=None) -> "VAE":
        """Load a model written by :meth:`save` (or a :meth:`fit` checkpoint).

        Parameters
        ----------
        path : str or PathLike
        device : {"cpu", "gpu", "cuda-sim"} or None
            Where to put the model; None means the device it was saved from.
        """
        from .checkpoint import load_checkpoint

        arrays, meta = load_checkpoint(path, kind="VAE")
        if "model" not in meta:
            raise CheckpointError(f"{path} has no model configuration ('model' in its meta)")
        config = dict(meta["model"])
        if device is not None:
            config["device"] = device
        model = cls(**config)
        model.set_state({name: value for name, value in arrays.items()
                         if name.startswith("param.")}, config)
        return model

    # ---- data at the API edge ----------------------------------------------------------

    def _check_X(self, X, name="X") -> np.ndarray:
        return check_data(X, self.input_dim, name, unit_interval=self.likelihood == "bernoulli",
                          dtype=self.dtype)

    def _to_device(self, array):
        return self.backend.asarray(np.ascontiguousarray(array, dtype=self.dtype))

    def _check_eps(self, eps, n):
        given_shape = tuple(np.shape(eps))
        eps = self.backend.asarray(eps, dtype=self.dtype)
        if eps.ndim == 2:
            eps = eps[None]
        if eps.ndim != 3 or eps.shape[1:] != (n, self.latent_dim):
            raise DataError(
                f"eps has shape {given_shape}; expected (L, {n}, {self.latent_dim}) or "
                f"({n}, {self.latent_dim}) for a batch of {n} examples"
            )
        return self.backend.xp.ascontiguousarray(eps)

    # ---- building blocks ---------------------------------------------------------------

    def _encoder_heads(self) -> dict:
        """Encoder output heads and their widths, in parameter order.

        ``{"mu": k, "logvar": k}``; a subclass that needs another encoder output (the
        regression model's kernel amplitude) overrides this to add e.g. ``"logsigma": 1``,
        which creates ``enc.logsigma.W`` and ``enc.logsigma.b`` after ``enc.logvar.*``.
        """
        return {"mu": self.latent_dim, "logvar": self.latent_dim}

    def _encoder_forward(self, X) -> dict:
        """Encoder heads for device data ``X`` (n, D): ``{"mu": (n, k), "logvar": (n, k)}``.

        Caches what :meth:`_encoder_backward` needs.
        """
        return self.encoder.forward(self.params, X)

    def _encoder_backward(self, dheads: dict, grads: dict | None = None) -> dict:
        """Encoder parameter gradients from the gradients of its head outputs.

        A head missing from ``dheads`` does not enter the loss: its parameter gradients
        are zero. ``grads`` given: its entries are the output buffers (written in place)
        and it is returned. Derivation: docs/derivations.md, "Dense layer" and
        "Activations".
        """
        grads = {} if grads is None else grads
        self.encoder.backward(self.params, dheads, grads, need_dx=False)
        return grads

    def _decoder_outputs_to_nll(self, outputs, X):
        if self.likelihood == "bernoulli":
            return losses.bernoulli_nll(outputs["out"], X)
        return losses.gaussian_nll(outputs["mean"], self._decoder_logvar(outputs), X)

    def _decoder_logvar(self, outputs):
        if self.fixed_variance is not None:
            return math.log(self.fixed_variance)
        return outputs["logvar"]

    def _decoder_nll(self, Z, X):
        """``-log p(x | z)`` per row for device arrays ``Z`` (m, k), ``X`` (m, D); forward only."""
        return self._decoder_outputs_to_nll(self.decoder.forward(self.params, Z), X)

    def _decoder_loss_and_grads(self, Z, X, scale=1.0, grads=None):
        """Decoder negative log-likelihood and its gradients.

        Derivation: docs/derivations.md, "Bernoulli log-likelihood from logits",
        "Gaussian log-likelihood", "Dense layer" and "Activations".

        Parameters
        ----------
        Z : (m, k) device array
            Latent codes, one per row of ``X``.
        X : (m, D) device array
        scale : float
            The gradients are those of ``scale * sum(nll)``.
        grads : dict, optional
            Output buffers for the decoder's parameter gradients (written in place).

        Returns
        -------
        nll : (m,) device array
            ``-log p(X[i] | Z[i])`` in nats.
        dZ : (m, k) device array
        grads : dict name -> device array
            Gradients of every decoder parameter.
        """
        outputs = self.decoder.forward(self.params, Z)
        fixed_logvar = None if self.fixed_variance is None else math.log(self.fixed_variance)
        nll, doutputs = losses.decoder_nll_and_doutputs(
            outputs, X, scale, fixed_logvar=fixed_logvar, impl=self.backend.kernel_impl)
        grads = {} if grads is None else grads
        dZ = self.decoder.backward(self.params, doutputs, grads, need_dx=True)
        return nll, dZ, grads

    def _draw_eps(self, rng, n_samples, n):
        return rng.standard_normal((n_samples, n, self.latent_dim), dtype=self.dtype)

    # ---- the loss and its gradient -----------------------------------------------------

    def loss_and_grads(self, X, eps=None):
        """Mean negative ELBO (beta-weighted KL) of a batch and its gradient.

        Parameters
        ----------
        X : (n, input_dim) array
        eps : (L, n, latent_dim) or (n, latent_dim) array, optional
            Standard-normal noise for the reparameterisation; given, the result is
            deterministic and L is taken from its shape. Default: ``n_samples`` draws
            from ``self._rng``.

        Returns
        -------
        loss : float
            ``mean_i [ (1/L) sum_l -log p(x_i | z_il) + beta KL_i ]`` in nats per example.
        grads : dict name -> device array
            Same keys and order as ``params``.
        """
        X = self._to_device(self._check_X(X))
        eps = None if eps is None else self._check_eps(eps, X.shape[0])
        return self._loss_and_grads_device(X, eps)

    def _gradient_buffers(self) -> FlatArrays:
        """The model's reused gradient arrays: views into one flat buffer laid out like
        ``params``, so the optimiser updates every parameter in one kernel call."""
        if self._grad_buffers is None or not self._grad_buffers.same_layout(self.params):
            self._grad_buffers = FlatArrays(
                self.backend.xp, {name: value.shape for name, value in self.params.items()},
                self.dtype)
        return self._grad_buffers

    def _loss_and_grads_device(self, X, eps=None, reuse_buffers=False):
        """:meth:`loss_and_grads` on validated device data (the training step).

        ``reuse_buffers=True`` writes the gradients into :meth:`_gradient_buffers` and
        returns that :class:`~minivae.params.FlatArrays` (overwritten by the next such call;
        the trainer's choice); otherwise the gradients are fresh arrays.

        Derivation: docs/derivations.md, "The whole chain".
        """
        impl = self.backend.kernel_impl
        n = X.shape[0]
        if eps is None:
            eps = self._draw_eps(self._rng, self.n_samples, n)
        n_samples = eps.shape[0]

        # Forward 1: encoder q(z|x) = N(mu, diag(exp(logvar))).
        heads = self._encoder_forward(X)
        mu, logvar = heads["mu"], heads["logvar"]

        # Forward 2: reparameterisation z_l = mu + exp(logvar/2) * eps_l
        # (docs/derivations.md, "Reparameterisation").
        z = reparam_forward(mu, logvar, eps, impl=impl)

        # Forward 3 + backward 1: decoder and likelihood on the L*n stacked codes; the
        # gradient is that of (1 / (L n)) sum_{l,i} nll_il (docs/derivations.md,
        # "Bernoulli log-likelihood from logits" / "Gaussian log-likelihood").
        X_stacked = X if n_samples == 1 else self.backend.xp.concatenate([X] * n_samples)
        grads = self._gradient_buffers() if reuse_buffers else {}
        nll, dz_stacked, grads = self._decoder_loss_and_grads(
            z.reshape(n_samples * n, self.latent_dim), X_stacked, scale=1.0 / (n_samples * n),
            grads=grads)

        # Forward 4: analytic KL(q(z|x) || N(0, I)) (docs/derivations.md, "KL divergence
        # to N(0, I)").
        kl = losses.kl_std_normal(mu, logvar)
        loss = (float(nll.sum()) / n_samples + self.beta * float(kl.sum())) / n

        # Backward 2: through the reparameterisation, dz -> (dmu, dlogvar)
        # (docs/derivations.md, "Reparameterisation").
        dz = dz_stacked.reshape(n_samples, n, self.latent_dim)
        dmu, dlogvar = reparam_backward(dz, logvar, eps, impl=impl)

        # Backward 3: the KL term's own gradient, weighted beta / n
        # (docs/derivations.md, "KL divergence to N(0, I)").
        dmu_kl, dlogvar_kl = losses.kl_std_normal_grad(mu, logvar, scale=self.beta / n)
        dmu += dmu_kl
        dlogvar += dlogvar_kl

        # Backward 4: encoder heads and body (docs/derivations.md, "Dense layer",
        # "Activations").
        self._encoder_backward({"mu": dmu, "logvar": dlogvar}, grads)
        if reuse_buffers:
            return loss, grads
        return loss, {name: grads[name] for name in self.params}

    # ---- training ----------------------------------------------------------------------

    def fit(self, X, epochs, batch_size=100, optimizer="adam", lr=1e-3, validation_data=None,
            progress=True, checkpoint=None, resume=False, checkpoint_every=1) -> dict:
        """Train by minibatch stochastic gradient descent on the negative ELBO.

        Parameters
        ----------
        X : (n, input_dim) array
        epochs : int
        batch_size : int
        optimizer : {"adam", "adagrad", "sgd"}
        lr : float
        validation_data : (m, input_dim) array, optional
            Scored with :meth:`score` at the end of every epoch.
        progress : bool
            Show a tqdm progress bar.
        checkpoint : path, optional
            Save model and optimiser state there every ``checkpoint_every`` epochs and at
            the end; :meth:`load` reads it.
        resume : bool
            Continue from ``checkpoint`` if it exists (bit-identical to an uninterrupted
            run).

        Returns
        -------
        history : dict
            The trainer's history (``epoch``, ``train_loss``, ``val_loss``, ``phase``,
            ``seconds``) plus ``train_elbo = -train_loss`` (the beta-weighted ELBO when
            ``beta != 1``) and ``val_elbo``, the validation ELBO (None without
            validation data).

        Raises
        ------
        TrainingDivergedError
            The loss or a gradient became NaN or infinite.

        Notes
        -----
        CPU training pins its threads to CPUs while it runs: :func:`minivae.train.fit_loop`.
        """
        from .train import fit_loop

        X_train = self._to_device(self._check_X(X))
        evaluate = None
        if validation_data is not None:
            X_val = self._to_device(self._check_X(validation_data, "validation_data"))

            def evaluate():
                return -float(self._elbo_device(X_val).mean())

        def batch_loss_and_grads(idx):
            return self._loss_and_grads_device(X_train[self.backend.asarray(idx)],
                                               reuse_buffers=True)

        history = fit_loop(self, X_train.shape[0], batch_loss_and_grads, epochs=epochs,
                           batch_size=batch_size, optimizer=optimizer, lr=lr,
                           evaluate=evaluate, progress=progress, checkpoint=checkpoint,
                           checkpoint_every=checkpoint_every, resume=resume, kind="VAE")
        history = dict(history)
        history["train_elbo"] = [-loss for loss in history["train_loss"]]
        history["val_elbo"] = [None if loss is None else -loss
                               for loss in history.get("val_loss", [])]
        return history

    # ---- evaluation --------------------------------------------------------------------

    def _elbo_device(self, X):
        """Per-example ELBO (beta = 1) of device data, float64 host array."""
        rng = self.backend.rng(derived_seed(self.seed, _STREAM_EVAL))
        impl = self.backend.kernel_impl
        elbo = np.empty(X.shape[0])
        for start in range(0, X.shape[0], _EVAL_BATCH):
            X_batch = X[start:start + _EVAL_BATCH]
            n = X_batch.shape[0]
            heads = self._encoder_forward(X_batch)
            mu, logvar = heads["mu"], heads["logvar"]
            eps = self._draw_eps(rng, self.n_samples, n)
            z = reparam_forward(mu, logvar, eps, impl=impl)
            X_stacked = (X_batch if self.n_samples == 1
                         else self.backend.xp.concatenate([X_batch] * self.n_samples))
            nll = self._decoder_nll(z.reshape(self.n_samples * n, self.latent_dim), X_stacked)
            nll_mean = self.backend.to_host(nll).astype(np.float64)
            nll_mean = nll_mean.reshape(self.n_samples, n).mean(axis=0)
            kl = self.backend.to_host(losses.kl_std_normal(mu, logvar)).astype(np.float64)
            elbo[start:start + n] = -nll_mean - kl
        return elbo

    def elbo(self, X) -> np.ndarray:
        """Evidence lower bound of each example, in nats.

        Parameters
        ----------
        X : (n, input_dim) array

        Returns
        -------
        elbo : (n,) float64 array
            ``(1/L) sum_l log p(x | z_l) - KL(q(z|x) || p(z))`` with ``L = n_samples``
            draws and ``beta = 1`` (the bound on ``log p(x)``, whatever the training
            ``beta``).

        Notes
        -----
        The noise comes from a Generator seeded from the model seed at every call, so
        repeated calls on the same data agree exactly; examples are processed in blocks
        of 1000.
        """
        return self._elbo_device(self._to_device(self._check_X(X)))

    def score(self, X) -> float:
        """Mean ELBO of ``X`` in nats per example (higher is better); see :meth:`elbo`."""
        return float(self.elbo(X).mean())

    def log_likelihood(self, X, n_importance=1000, batch_size=100) -> np.ndarray:
        """Importance-sampled estimate of ``log p(x)`` for each example.

        Parameters
        ----------
        X : (n, input_dim) array
        n_importance : int
            Number S of samples from ``q(z | x)`` per example.
        batch_size : int
            Examples encoded at a time; samples are decoded in chunks of at most
            ``max(1, 20000 // batch_size)`` per example.

        Returns
        -------
        log_px : (n,) float64 array

        Notes
        -----
        With ``z_s ~ q(z | x)`` (Burda et al. 2016, Eq. 8),

        .. math:: \\log p(x) \\approx \\log \\frac1S \\sum_s
                  \\frac{p(x \\mid z_s)\\,p(z_s)}{q(z_s \\mid x)},

        evaluated as a log-sum-exp (the largest log-weight is factored out). In
        expectation it lies above the ELBO and tightens as S grows. The noise comes from
        a Generator seeded from the model seed, so repeated calls agree.
        """
        X = self._check_X(X)
        if not is_int(n_importance) or n_importance < 1:
            raise ValueError(f"n_importance={n_importance!r} must be a positive integer")
        if not is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        rng = self.backend.rng(derived_seed(self.seed, _STREAM_IMPORTANCE))
        xp, impl, k = self.backend.xp, self.backend.kernel_impl, self.latent_dim
        log_px = np.empty(X.shape[0])
        for start in range(0, X.shape[0], batch_size):
            X_batch = self._to_device(X[start:start + batch_size])
            n = X_batch.shape[0]
            heads = self._encoder_forward(X_batch)
            mu, logvar = heads["mu"], heads["logvar"]
            log_weights = np.empty((n_importance, n))
            chunk = max(1, _IMPORTANCE_ROWS // n)
            for s0 in range(0, n_importance, chunk):
                s = min(chunk, n_importance - s0)
                eps = self._draw_eps(rng, s, n)
                z = reparam_forward(mu, logvar, eps, impl=impl)
                nll = self._decoder_nll(z.reshape(s * n, k), xp.concatenate([X_batch] * s))
                # log p(z) - log q(z|x) = -0.5 (|z|^2 - |eps|^2 - sum logvar); 2 pi cancels.
                log_prior_ratio = 0.5 * ((eps * eps).sum(axis=2) - (z * z).sum(axis=2)
                                         + logvar.sum(axis=1)[None])
                log_w = -nll.reshape(s, n) + log_prior_ratio
                log_weights[s0:s0 + s] = self.backend.to_host(log_w)
            top = log_weights.max(axis=0)
            log_px[start:start + n] = (top + np.log(np.exp(log_weights - top).mean(axis=0)))
        return log_px

    # ---- encoding and decoding ---------------------------------------------------------

    def encode(self, X):
        """Posterior parameters of each example.

        Returns
        -------
        mu, logvar : (n, latent_dim) host arrays
        """
        heads = self._encoder_forward(self._to_device(self._check_X(X)))
        return self.backend.to_host(heads["mu"]), self.backend.to_host(heads["logvar"])

    def _decode_device(self, Z):
        outputs = self.decoder.forward(self.params, Z)
        if self.likelihood == "bernoulli":
            return sigmoid(outputs["out"])
        return outputs["mean"]

    def decode(self, Z) -> np.ndarray:
        """Mean of ``p(x | z)`` for each code: Bernoulli probabilities or Gaussian means.

        Parameters
        ----------
        Z : (n, latent_dim) array

        Returns
        -------
        X_mean : (n, input_dim) host array
        """
        Z = check_data(Z, self.latent_dim, "Z", dtype=self.dtype)
        return self.backend.to_host(self._decode_device(self._to_device(Z)))

    def sample(self, n, seed=None) -> np.ndarray:
        """Decoder means of ``n`` codes drawn from the prior N(0, I).

        Parameters
        ----------
        n : int
        seed : int, optional
            Seed of the draw; None draws from the model's own stream ``self._rng``.

        Returns
        -------
        X_mean : (n, input_dim) host array
        """
        if not is_int(n) or n < 1:
            raise ValueError(f"n={n!r} must be a positive integer")
        rng = self._rng if seed is None else self.backend.rng(seed)
        Z = rng.standard_normal((n, self.latent_dim), dtype=self.dtype)
        return self.backend.to_host(self._decode_device(Z))

    def reconstruct(self, X) -> np.ndarray:
        """``decode(mu(x))``: the decoder mean at the posterior mean; (n, input_dim)."""
        heads = self._encoder_forward(self._to_device(self._check_X(X)))
        return self.backend.to_host(self._decode_device(heads["mu"]))

    def __repr__(self):
        return (f"VAE(input_dim={self.input_dim}, latent_dim={self.latent_dim}, "
                f"hidden={self.hidden}, activation={self.activation!r}, "
                f"likelihood={self.likelihood!r}, dtype={self.dtype.name!r}, "
                f"device={self.device!r})")
