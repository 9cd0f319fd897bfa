"""First-order optimisers that update parameter arrays in place on their own device.

Each optimiser takes the parameters and their gradients as dicts keyed by parameter name
(the layout of ``model.params``), keeps its per-parameter state (momentum, accumulated
squares, moments) under the same names, and can hand that state back as host arrays for a
checkpoint and take it again on resume. Arrays are NumPy or CuPy; the state is created in
the array module of the parameter it belongs to, and nothing here moves data between host
and device except :meth:`state_arrays` (to host) and the first step after
:meth:`load_state_arrays` (to the parameter's device).

``impl`` names the kernel implementation (``"cpu"`` or ``"cuda"``, the backend's
``kernel_impl``; ``"reference"`` for the plain NumPy specification); only Adam has a
fused kernel, the others are two or three array operations.

Flat fast path: when the parameters and the gradients are both
:class:`~minivae.params.FlatArrays` with the same layout (a model's parameters and its reused
gradient buffers), :meth:`Optimizer.step` updates all of them with one call over the
flat buffers; the state is then kept in flat buffers too, and its per-name entries are
views into them, so checkpoints and the per-name path see the same numbers. The update of
every entry is the same arithmetic either way (bit-identical results).
"""

from __future__ import annotations

import abc
import math
import numbers

import numpy as np

from .kernels import adam_step
from .kernels._cuda import array_module
from .params import FlatArrays
from .validation import host_array

OPTIMIZERS = ("adam", "adagrad", "sgd")
#: The name under which _update receives the whole flat buffer (flat fast path).
_FLAT = object()


def _check_grad(name, param, grad):
    if grad.shape != param.shape:
        raise ValueError(
            f"gradient of {name!r} has shape {grad.shape} but the parameter has shape "
            f"{param.shape}; the backward pass must return one gradient per parameter entry"
        )


class Optimizer(abc.ABC):
    """Shared bookkeeping: the step count ``t`` and per-parameter state slots.

    Subclasses define ``name``, ``_slots`` (the state arrays per parameter, e.g.
    ``("m", "v")``), :meth:`_update` and :meth:`config`.
    """

    name = ""
    _slots: tuple = ()

    def __init__(self, lr, impl="cpu"):
        if not (isinstance(lr, numbers.Real) and not isinstance(lr, bool)
                and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr={lr!r} must be a finite positive number, e.g. 1e-3")
        self.lr = float(lr)
        self.impl = impl
        self.t = 0
        self._state: dict[str, dict] = {slot: {} for slot in self._slots}
        self._pending: dict[str, dict] = {slot: {} for slot in self._slots}
        self._flat_state: dict | None = None  # slot -> flat buffer (and the layout), _flat_slots

    def _load_slot(self, slot, name, param, xp):
        """Loaded state for ``name`` (taken off the pending list) on ``param``'s device, or
        None when there is none; the shape is checked against the parameter's."""
        loaded = self._pending[slot].pop(name, None)
        if loaded is None:
            return None
        if loaded.shape != param.shape:
            raise ValueError(
                f"loaded optimiser state {slot}.{name} has shape {loaded.shape} but the "
                f"parameter has shape {param.shape}; the checkpoint is from another model"
            )
        return xp.asarray(loaded, dtype=param.dtype)

    def _slot(self, slot, name, param):
        """The ``slot`` array of parameter ``name``: zeros on first use, or the loaded state."""
        if name is _FLAT:
            return self._flat_state[slot]
        state = self._state[slot]
        if name not in state:
            xp = array_module(param)
            loaded = self._load_slot(slot, name, param, xp)
            state[name] = (xp.zeros_like(param) if loaded is None
                           else xp.array(loaded, dtype=param.dtype, order="C"))
        return state[name]

    def _flat_slots(self, params: FlatArrays) -> None:
        """Make every slot one flat buffer laid out like ``params``; the per-name state
        (existing or loaded) is copied in and becomes views into it."""
        if self._flat_state is not None and self._flat_state["layout"] == params.layout:
            return
        xp = array_module(params.flat)
        shapes = dict(params.layout)
        flat_state = {"layout": params.layout}
        for slot in self._slots:
            buffers = FlatArrays(xp, shapes, params.flat.dtype)
            for name, view in buffers.items():
                old = self._state[slot].get(name)
                if old is None:
                    old = self._load_slot(slot, name, params[name], xp)
                if old is not None:
                    if tuple(old.shape) != tuple(view.shape):
                        raise ValueError(
                            f"optimiser state {slot}.{name} has shape {tuple(old.shape)} but "
                            f"the parameter has shape {tuple(view.shape)}; this optimiser "
                            "(or its checkpoint) belongs to another model"
                        )
                    view[...] = old
                self._state[slot][name] = view
            flat_state[slot] = buffers.flat
        self._flat_state = flat_state

    def step(self, params: dict, grads: dict) -> None:
        """Update ``params[name]`` in place for every ``name`` in ``grads``.

        Parameters
        ----------
        params : dict of str -> array
            All parameters, by name.
        grads : dict of str -> array
            d(loss)/d(param) for the parameters to update, same shapes; parameters whose
            name is absent are left alone (frozen).
        """
        if (isinstance(params, FlatArrays) and isinstance(grads, FlatArrays)
                and params.leads_with(grads)):
            # one layout: the names and shapes match by construction, one kernel call
            self.t += 1
            self._flat_slots(grads)
            self._update(_FLAT, params.flat[:grads.flat.size], grads.flat)
            return
        unknown = [name for name in grads if name not in params]
        if unknown:
            raise ValueError(
                f"gradients given for {unknown}, which are not parameters; "
                f"the parameters are {list(params)}"
            )
        for name, grad in grads.items():
            _check_grad(name, params[name], grad)
        self.t += 1
        for name, grad in grads.items():
            self._update(name, params[name], grad)

    @abc.abstractmethod
    def _update(self, name, param, grad):
        """Update ``param`` in place from ``grad`` (step count ``self.t`` already advanced)."""

    def config(self) -> dict:
        """JSON-serialisable hyperparameters and step count (for checkpoint metadata)."""
        return {"name": self.name, "lr": self.lr, "t": self.t}

    def state_arrays(self) -> dict:
        """Host copies of the state: ``"<slot>.<param name>"`` arrays and a 0-d ``"t"``."""
        arrays = {"t": np.array(self.t, dtype=np.int64)}
        for slot in self._slots:
            for name, array in self._pending[slot].items():
                arrays[f"{slot}.{name}"] = array.copy()
            for name, array in self._state[slot].items():
                arrays[f"{slot}.{name}"] = np.array(host_array(array))
        return arrays

    def load_state_arrays(self, arrays: dict) -> None:
        """Restore the state saved by :meth:`state_arrays`.

        The arrays move to each parameter's device on the next :meth:`step`.
        """
        if "t" not in arrays:
            raise ValueError(
                f"optimiser state has no step count 't' (keys: {sorted(arrays)}); "
                "it was not written by state_arrays"
            )
        self.t = int(arrays["t"])
        self._flat_state = None
        self._state = {slot: {} for slot in self._slots}
        self._pending = {slot: {} for slot in self._slots}
        for key, array in arrays.items():
            if key == "t":
                continue
            slot, _, name = key.partition(".")
            if slot not in self._pending or not name:
                raise ValueError(
                    f"optimiser state key {key!r} is not '<slot>.<parameter>' with slot in "
                    f"{list(self._slots)}; the state is from another optimiser"
                )
            self._pending[slot][name] = np.asarray(array)


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (heavy-ball) momentum.

    Notes
    -----
    Without momentum: :math:`\\theta \\leftarrow \\theta - \\mathrm{lr}\\, g`.
    With momentum :math:`\\mu`: :math:`b \\leftarrow \\mu b + g`,
    :math:`\\theta \\leftarrow \\theta - \\mathrm{lr}\\, b` (the PyTorch convention).
    """

    name = "sgd"

    def __init__(self, lr, momentum=0.0, impl="cpu"):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum={momentum!r} must be in [0, 1), e.g. 0.9")
        self.momentum = float(momentum)
        self._slots = ("velocity",) if self.momentum > 0 else ()
        super().__init__(lr, impl)

    def _update(self, name, param, grad):
        if self.momentum > 0:
            velocity = self._slot("velocity", name, param)
            velocity *= self.momentum
            velocity += grad
            param -= self.lr * velocity
        else:
            param -= self.lr * grad

    def config(self) -> dict:
        return {**super().config(), "momentum": self.momentum}


class Adagrad(Optimizer):
    """Adagrad (Duchi, Hazan & Singer 2011), the optimiser of Kingma & Welling's experiments.

    Notes
    -----
    :math:`G \\leftarrow G + g^2`, :math:`\\theta \\leftarrow \\theta - \\mathrm{lr}\\,
    g / (\\sqrt{G} + \\epsilon)`, elementwise.
    """

    name = "adagrad"
    _slots = ("sum_sq",)

    def __init__(self, lr, eps=1e-8, impl="cpu"):
        if not eps > 0:
            raise ValueError(f"eps={eps!r} must be positive, e.g. 1e-8")
        super().__init__(lr, impl)
        self.eps = float(eps)

    def _update(self, name, param, grad):
        sum_sq = self._slot("sum_sq", name, param)
        sum_sq += grad * grad
        xp = array_module(param)
        param -= self.lr * grad / (xp.sqrt(sum_sq) + self.eps)

    def config(self) -> dict:
        return {**super().config(), "eps": self.eps}


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) through the fused kernel :func:`minivae.kernels.adam_step`.

    Notes
    -----
    :math:`m \\leftarrow \\beta_1 m + (1-\\beta_1) g`,
    :math:`v \\leftarrow \\beta_2 v + (1-\\beta_2) g^2`,
    :math:`\\theta \\leftarrow \\theta - \\frac{\\mathrm{lr}}{1-\\beta_1^t}
    \\frac{m}{\\sqrt{v/(1-\\beta_2^t)} + \\epsilon}`, one pass over memory per parameter.
    """

    name = "adam"
    _slots = ("m", "v")

    def __init__(self, lr, beta1=0.9, beta2=0.999, eps=1e-8, impl="cpu"):
        for label, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{label}={beta!r} must be in [0, 1)")
        if not eps > 0:
            raise ValueError(f"eps={eps!r} must be positive, e.g. 1e-8")
        super().__init__(lr, impl)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.eps = float(eps)

    def _update(self, name, param, grad):
        m = self._slot("m", name, param)
        v = self._slot("v", name, param)
        if grad.dtype != param.dtype or not grad.flags.c_contiguous:
            grad = array_module(param).ascontiguousarray(grad, dtype=param.dtype)
        adam_step(param, grad, m, v, self.lr, self.beta1, self.beta2, self.eps, self.t,
                  impl=self.impl)

    def config(self) -> dict:
        return {**super().config(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


_CLASSES = {"adam": Adam, "adagrad": Adagrad, "sgd": SGD}


def make_optimizer(name, lr, impl="cpu", **kwargs) -> Optimizer:
    """The optimiser called ``name`` ("adam", "adagrad" or "sgd") with learning rate ``lr``.

    ``kwargs`` go to the class (``momentum`` for SGD; ``eps`` for Adagrad; ``beta1``,
    ``beta2``, ``eps`` for Adam).
    """
    try:
        cls = _CLASSES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"optimizer={name!r} is not one of {list(OPTIMIZERS)}"
        ) from None
    return cls(lr, impl=impl, **kwargs)
