"""The autoencoder that the VAE and Variational Autoencoded Regression both compose.

Encoder ``q(z | x) = N(mu(x), diag(exp(logvar(x))))``: an MLP with heads ``enc.mu`` and
``enc.logvar`` (k each) and any extra heads a model asks for (VAR's ``enc.logsigma``).
Decoder ``p(x | z)``: an MLP with the encoder's hidden widths reversed (or, for images, the
convolutional decoder of :mod:`minivae.conv`) and head ``dec.out``
(Bernoulli logits) or ``dec.mean`` and ``dec.logvar`` (Gaussian with a learned per-output
log-variance; ``fixed_variance=v`` drops ``dec.logvar`` and uses variance ``v``). Every
parameter, including a model's extra ones (VAR's ``gp.log_lengthscale``), lives in one
:class:`~minivae.params.FlatArrays`, so that an optimiser updates them in one call.

The negative ELBO of one example with ``S`` samples ``z_s = mu + sigma * eps_s``::

    loss(x) = (1/S) sum_s -log p(x | z_s) + beta * KL(q(z | x) || N(0, I))

Derivations: docs/derivations.md (sections cited beside each block).
"""

from __future__ import annotations

import math

import numpy as np

from . import losses
from .errors import CheckpointError, DataError
from .kernels import reparam_backward, reparam_forward
from .conv import ConvDecoder
from .nn import MLP, sigmoid
from .params import FlatArrays

DECODERS = ("mlp", "conv")


class Autoencoder:
    """Encoder, decoder, likelihood and parameters of a VAE-like model.

    Parameters
    ----------
    input_dim, latent_dim : int
    hidden : tuple of int
        Encoder hidden widths; the decoder uses them reversed.
    activation : {"relu", "tanh", "softplus"}
    likelihood : {"bernoulli", "gaussian"}
    fixed_variance : float or None
        Gaussian only: the output variance instead of a learned ``dec.logvar``.
    dtype : numpy dtype
    backend : minivae.backend.Backend
    seed : int
        Seeds the Glorot-uniform initialisation (host ``np.random.default_rng(seed)``,
        encoder then decoder, layer by layer; biases zero), so the initial parameters are
        the same on every device.
    extra_heads : dict name -> width, optional
        Encoder heads after ``mu`` and ``logvar``.
    extra_params : dict name -> shape, optional
        Further parameters of the model (zeros), after the networks'.
    last : sequence of str, optional
        Parameter names placed at the end of the flat layout, so that the others form a
        leading block that an optimiser can update alone in one call
        (:meth:`minivae.params.FlatArrays.leading`).
    decoder : {"mlp", "conv"}
        "conv": :class:`~minivae.conv.ConvDecoder` for images of ``image_shape`` instead of
        the MLP (``hidden`` then shapes the encoder only).
    image_shape : tuple, optional
        (H, W) or (H, W, c) with H W c = ``input_dim``; needed by ``decoder="conv"``.
    """

    def __init__(self, input_dim, latent_dim, hidden, activation, likelihood, *, dtype, backend,
                 seed, fixed_variance=None, extra_heads=None, extra_params=None, last=(),
                 decoder="mlp", image_shape=None):
        self.input_dim, self.latent_dim = int(input_dim), int(latent_dim)
        self.hidden = tuple(hidden)
        self.likelihood = likelihood
        self.fixed_variance = fixed_variance
        self.dtype = dtype
        self.backend = backend
        impl = backend.kernel_impl
        k, D = self.latent_dim, self.input_dim
        self.encoder = MLP("enc", D, hidden, {"mu": k, "logvar": k, **(extra_heads or {})},
                           activation, impl=impl)
        if likelihood == "bernoulli":
            decoder_heads = {"out": D}
        elif fixed_variance is None:
            decoder_heads = {"mean": D, "logvar": D}
        else:
            decoder_heads = {"mean": D}
        if decoder == "conv":
            self.decoder = ConvDecoder("dec", k, image_shape, decoder_heads, impl=impl)
        else:
            self.decoder = MLP("dec", k, tuple(hidden)[::-1], decoder_heads, activation,
                               impl=impl)
        init_rng = np.random.default_rng(seed)
        host = self.encoder.init_params(init_rng, dtype)
        host.update(self.decoder.init_params(init_rng, dtype))
        for name, shape in (extra_params or {}).items():
            host[name] = np.zeros(shape, dtype=dtype)
        order = [name for name in host if name not in last] + [name for name in last]
        self.params = FlatArrays.copy_of(backend.xp, {name: host[name] for name in order}, dtype)
        self._extra_names = tuple(extra_params or {})
        self._grad_buffers = None

    # ---- state -----------------------------------------------------------------------

    def host_params(self) -> dict:
        """Host copies of every parameter, by name, in layout order."""
        return {name: np.array(self.backend.to_host(value)) for name, value in self.params.items()}

    def load_params(self, arrays: dict, owner: str) -> None:
        """Copy host ``arrays`` (names may carry the prefix ``"param."``) into the parameters.

        Everything is checked before anything is written. CheckpointError if a parameter
        is missing or has another shape; ``owner`` (the model class) is named in the fix.
        """
        arrays = {name.removeprefix("param."): value for name, value in arrays.items()}
        for name, value in self.params.items():
            if name not in arrays:
                raise CheckpointError(
                    f"the state has no parameter {name!r} (it has {sorted(arrays)[:6]}...); it "
                    f"was saved from a model with another architecture ({owner}.load rebuilds "
                    "the saved one)"
                )
            if tuple(arrays[name].shape) != tuple(value.shape):
                raise CheckpointError(
                    f"parameter {name!r} has shape {tuple(arrays[name].shape)} in the state but "
                    f"{tuple(value.shape)} in this model; build the model with the saved "
                    f"configuration ({owner}.load does this)"
                )
        for name, value in self.params.items():
            value[...] = self.backend.asarray(np.asarray(arrays[name]), dtype=self.dtype)

    def gradient_buffers(self) -> FlatArrays:
        """Reused gradient arrays laid out like ``params`` (one optimiser call for all)."""
        if self._grad_buffers is None:
            self._grad_buffers = FlatArrays(
                self.backend.xp, {name: value.shape for name, value in self.params.items()},
                self.dtype)
        return self._grad_buffers

    # ---- device data -----------------------------------------------------------------

    def to_device(self, array):
        """A host array as a C-contiguous device array of the model's dtype."""
        return self.backend.asarray(np.ascontiguousarray(array, dtype=self.dtype))

    def draw_eps(self, rng, n_samples: int, n: int):
        """Standard-normal noise (n_samples, n, k) of the model's dtype from ``rng``."""
        return rng.standard_normal((n_samples, n, self.latent_dim), dtype=self.dtype)

    def check_eps(self, eps, n: int, samples: bool = True):
        """User noise as a device array (S, n, k); ``samples=False`` accepts only (n, k)."""
        given = tuple(np.shape(eps))
        k = self.latent_dim
        allowed = (given == (n, k)) or (samples and len(given) == 3 and given[1:] == (n, k))
        if not allowed:
            expected = f"(L, {n}, {k}) or ({n}, {k})" if samples else f"({n}, {k})"
            raise DataError(f"eps has shape {given}; expected {expected} for a batch of {n} "
                            "examples")
        eps = self.backend.asarray(eps, dtype=self.dtype)
        return self.backend.xp.ascontiguousarray(eps if eps.ndim == 3 else eps[None])

    # ---- forward and backward pieces ---------------------------------------------------

    def encode(self, X) -> dict:
        """Encoder heads of device data ``X`` (n, D): ``{"mu", "logvar", extra...}``.

        Caches what :meth:`encoder_backward` needs.
        """
        return self.encoder.forward(self.params, X)

    def encoder_backward(self, dheads: dict, grads: dict) -> dict:
        """Encoder parameter gradients from its heads' gradients, into ``grads``.

        A head missing from ``dheads`` does not enter the loss: its gradients are zero.
        Derivation: docs/derivations.md, "Dense layer" and "Activations".
        """
        self.encoder.backward(self.params, dheads, grads, need_dx=False)
        return grads

    def _fixed_logvar(self):
        return None if self.fixed_variance is None else math.log(self.fixed_variance)

    def decoder_nll(self, Z, X):
        """``-log p(x | z)`` per row of device ``Z`` (m, k) and ``X`` (m, D); forward only."""
        outputs = self.decoder.forward(self.params, Z)
        if self.likelihood == "bernoulli":
            return losses.bernoulli_nll(outputs["out"], X)
        logvar = outputs["logvar"] if self.fixed_variance is None else self._fixed_logvar()
        return losses.gaussian_nll(outputs["mean"], logvar, X)

    def decoder_loss_and_grads(self, Z, X, scale: float, grads: dict):
        """``-log p(X[i] | Z[i])`` per row, and the gradients of ``scale * sum(nll)``.

        Derivation: docs/derivations.md, "Bernoulli log-likelihood from logits",
        "Gaussian log-likelihood", "Dense layer" and "Activations".

        Returns ``(nll (m,), dZ (m, k), grads)``, the decoder's parameter gradients written
        into ``grads``.
        """
        outputs = self.decoder.forward(self.params, Z)
        nll, doutputs = losses.decoder_nll_and_doutputs(
            outputs, X, scale, fixed_logvar=self._fixed_logvar(), impl=self.backend.kernel_impl)
        dZ = self.decoder.backward(self.params, doutputs, grads, need_dx=True)
        return nll, dZ, grads

    def decode_mean(self, Z):
        """Mean of ``p(x | z)`` for device codes ``Z``: probabilities or Gaussian means."""
        outputs = self.decoder.forward(self.params, Z)
        if self.likelihood == "bernoulli":
            return sigmoid(outputs["out"])
        return outputs["mean"]

    # ---- the ELBO ---------------------------------------------------------------------

    def neg_elbo_and_grads(self, X, eps, grads: dict, beta: float = 1.0):
        """Mean beta-weighted negative ELBO of device data ``X`` (n, D) and its gradient.

        ``eps`` (S, n, k) is the reparameterisation noise. The gradients of every
        parameter are written into ``grads``: :meth:`gradient_buffers` (the training
        step's choice, overwritten by the next step) or ``{}`` (fresh arrays). Extra heads
        and extra parameters, which the ELBO does not see, get zeros. Returns ``(loss,
        grads)``, the loss a float64 scalar on the backend (a 0-d CuPy array on "gpu"),
        so that a training step reads nothing back from the device.

        Derivation: docs/derivations.md, "The whole chain".
        """
        impl = self.backend.kernel_impl
        n, n_samples, k = X.shape[0], eps.shape[0], self.latent_dim

        # Forward 1: encoder q(z|x) = N(mu, diag(exp(logvar))).
        heads = self.encode(X)
        mu, logvar = heads["mu"], heads["logvar"]

        # Forward 2: reparameterisation z_s = mu + exp(logvar/2) * eps_s
        # (docs/derivations.md, "Reparameterisation").
        z = reparam_forward(mu, logvar, eps, impl=impl)

        # Forward 3 + backward 1: decoder and likelihood on the S*n stacked codes; the
        # gradient is that of (1 / (S n)) sum_{s,i} nll_si.
        X_stacked = X if n_samples == 1 else self.backend.xp.concatenate([X] * n_samples)
        nll, dz_stacked, grads = self.decoder_loss_and_grads(
            z.reshape(n_samples * n, k), X_stacked, 1.0 / (n_samples * n), grads)

        # Forward 4: analytic KL(q(z|x) || N(0, I)) ("KL divergence to N(0, I)").
        kl = losses.kl_std_normal(mu, logvar)
        # A float64 scalar where the arrays live: no host read here (fit_loop reads it
        # once per step together with its gradient check).
        loss = (nll.sum().astype(np.float64) / n_samples
                + beta * kl.sum().astype(np.float64)) / n

        # Backward 2: through the reparameterisation, dz -> (dmu, dlogvar).
        dmu, dlogvar = reparam_backward(dz_stacked.reshape(n_samples, n, k), logvar, eps,
                                        impl=impl)

        # Backward 3: the KL term's own gradient, weighted beta / n.
        dmu_kl, dlogvar_kl = losses.kl_std_normal_grad(mu, logvar, scale=beta / n)
        dmu += dmu_kl
        dlogvar += dlogvar_kl

        # Backward 4: encoder heads and body ("Dense layer", "Activations").
        self.encoder_backward({"mu": dmu, "logvar": dlogvar}, grads)
        return loss, self.complete(grads)

    def complete(self, grads: dict) -> dict:
        """``grads`` of the networks completed with zeros for the extra parameters.

        Reused buffers (:meth:`gradient_buffers`) get the zeros written in place; a plain
        dict is completed with fresh zero arrays, in layout order.
        """
        if isinstance(grads, FlatArrays):
            for name in self._extra_names:
                grads[name][...] = 0
            return grads
        xp = self.backend.xp
        return {name: grads[name] if name in grads else xp.zeros_like(value)
                for name, value in self.params.items()}

    def elbo(self, X, rng, n_samples: int, block: int = 1000) -> np.ndarray:
        """Per-example ELBO (beta = 1) of device data ``X``, float64 host array.

        ``n_samples`` draws from ``rng`` per example; ``block`` examples at a time.
        """
        impl, k = self.backend.kernel_impl, self.latent_dim
        elbo = np.empty(X.shape[0])
        for start in range(0, X.shape[0], block):
            X_batch = X[start:start + block]
            n = X_batch.shape[0]
            heads = self.encode(X_batch)
            mu, logvar = heads["mu"], heads["logvar"]
            z = reparam_forward(mu, logvar, self.draw_eps(rng, n_samples, n), impl=impl)
            X_stacked = X_batch if n_samples == 1 else self.backend.xp.concatenate(
                [X_batch] * n_samples)
            nll = self.backend.to_host(self.decoder_nll(z.reshape(n_samples * n, k), X_stacked))
            nll_mean = nll.astype(np.float64).reshape(n_samples, n).mean(axis=0)
            kl = self.backend.to_host(losses.kl_std_normal(mu, logvar)).astype(np.float64)
            elbo[start:start + n] = -nll_mean - kl
        return elbo
