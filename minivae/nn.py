"""Layers and activations with hand-written backward passes.

A layer's ``forward`` caches what its ``backward`` needs; ``backward`` returns the
gradient with respect to the layer's input and stores parameter gradients under the
parameters' names. Parameters are not held by the layers: they live in one ordered dict
owned by the model (``model.params``), and layers read them by name. That keeps a single
source of truth for the optimiser, checkpoints and device transfers.

Conventions (ARCHITECTURE.md): a dense layer computes ``x @ W + b`` with ``W`` of shape
``(fan_in, fan_out)``; batches are rows. Derivations: docs/derivations.md, "Dense layer"
and "Activations".
"""

from __future__ import annotations

import numpy as np

from .kernels import add_bias, bias_grad
from .kernels._cuda import array_module
from .params import FlatArrays

ACTIVATIONS = ("relu", "tanh", "softplus")


def softplus(x):
    r"""``log(1 + exp(x))`` computed without overflow, elementwise.

    Notes
    -----
    .. math:: \operatorname{softplus}(x) = \max(x, 0) + \log(1 + e^{-|x|})

    The exponent is never positive, so nothing overflows, and ``log1p`` keeps full
    precision where ``e^{-|x|}`` is tiny. (NumPy's ``logaddexp(0, x)`` computes the same
    but is about 15x slower.)
    """
    xp = array_module(x)
    result = xp.abs(x)
    xp.negative(result, out=result)
    xp.exp(result, out=result)
    xp.log1p(result, out=result)
    result += xp.maximum(x, 0)
    return result


def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))``, overflow-free for any ``x``.

    Notes
    -----
    Computed as ``exp(x - softplus(x))``: for large negative ``x`` this is ``exp(x)`` to
    full relative precision, for large positive ``x`` it rounds to 1, and no
    intermediate overflows.
    """
    xp = array_module(x)
    result = softplus(x)
    xp.subtract(x, result, out=result)
    xp.exp(result, out=result)
    return result


class ReLU:
    """``y = max(x, 0)``. Backward: ``dx = dy * [x > 0]`` (docs/derivations.md, "Activations")."""

    name = "relu"

    def cache_output(self, y):
        """Adopt ``y = max(x, 0)`` computed elsewhere (a dense layer's fused bias + ReLU) as
        this activation's forward output, for :meth:`backward`."""
        self._y = y
        return y

    @property
    def output(self):
        """The last forward output (its sign is the backward's mask)."""
        return self._y

    def forward(self, x, inplace=False):
        """(n, d) -> (n, d); caches the output (its sign is the mask).

        ``inplace=True`` overwrites ``x`` with the output (saves a temporary).
        """
        y = array_module(x).maximum(x, 0, out=x if inplace else None)
        self._y = y
        return y

    def backward(self, dy):
        """``dx = dy * [y > 0]``; overwrites ``dy`` in place and returns it.

        Derivation: docs/derivations.md, "Activations".
        """
        dy *= self._y > 0
        return dy


class Tanh:
    """``y = tanh(x)``. Backward: ``dx = dy * (1 - y^2)`` (docs/derivations.md, "Activations")."""

    name = "tanh"

    def forward(self, x, inplace=False):
        """(n, d) -> (n, d); caches the output.

        ``inplace=True`` overwrites ``x`` with the output (saves a temporary).
        """
        y = array_module(x).tanh(x, out=x if inplace else None)
        self._y = y
        return y

    def backward(self, dy):
        """``dx = dy * (1 - y^2)``; overwrites ``dy`` in place and returns it.

        Derivation: docs/derivations.md, "Activations".
        """
        dy *= 1 - self._y * self._y
        return dy


class Softplus:
    """``y = log(1 + exp(x))``. Backward: ``dx = dy * sigmoid(x)``
    (docs/derivations.md, "Activations")."""

    name = "softplus"

    def forward(self, x, inplace=False):
        """(n, d) -> (n, d); caches the input, so ``x`` is never overwritten
        (``inplace`` is accepted for a uniform interface)."""
        self._x = x
        return softplus(x)

    def backward(self, dy):
        """``dx = dy * sigmoid(x)``; overwrites ``dy`` in place and returns it.

        Derivation: docs/derivations.md, "Activations".
        """
        dy *= sigmoid(self._x)
        return dy


def make_activation(name: str):
    """A fresh activation object for ``name`` in ``ACTIVATIONS``; ValueError otherwise."""
    table = {"relu": ReLU, "tanh": Tanh, "softplus": Softplus}
    if name not in table:
        raise ValueError(f"activation={name!r} is not one of {ACTIVATIONS}")
    return table[name]()


class Dense:
    """Affine layer ``y = x @ W + b`` reading ``W``, ``b`` from a parameter dict.

    Parameters
    ----------
    name : str
        Prefix of the parameter names: the layer uses ``params[name + ".W"]`` of shape
        ``(fan_in, fan_out)`` and ``params[name + ".b"]`` of shape ``(fan_out,)``.
    fan_in, fan_out : int
    impl : {"cpu", "cuda", "reference"}
        Kernel implementation for the bias add and the bias gradient
        (:func:`minivae.kernels.add_bias`, :func:`minivae.kernels.bias_grad`); "cpu" on
        non-NumPy (CuPy) arrays falls back to the array-generic reference.
    """

    def __init__(self, name: str, fan_in: int, fan_out: int, impl: str = "cpu"):
        self.name = name
        self.fan_in = fan_in
        self.fan_out = fan_out
        self.W_name = name + ".W"
        self.b_name = name + ".b"
        self.impl = impl

    def _impl_for(self, *arrays):
        """The kernel implementation for these arrays: the layer's, unless they are not
        all C-contiguous arrays of one dtype (then the array-generic reference, which
        broadcasts and casts as NumPy does), or "cpu" meets CuPy arrays."""
        first = arrays[0]
        for a in arrays:
            if a is not None and (a.dtype != first.dtype or not a.flags.c_contiguous):
                return "reference"
        if self.impl == "cpu" and not isinstance(first, np.ndarray):
            return "reference"
        return self.impl

    def init_params(self, rng: np.random.Generator, dtype) -> dict:
        """Glorot-uniform weights and zero biases, as host arrays.

        Notes
        -----
        ``W ~ U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))`` (Glorot & Bengio 2010),
        drawn as ``rng.uniform(-a, a, size=(fan_in, fan_out))`` in float64 and then cast to
        ``dtype``; ``b = 0``. A peer implementation reproduces it by copying the arrays.
        """
        bound = np.sqrt(6.0 / (self.fan_in + self.fan_out))
        W = rng.uniform(-bound, bound, size=(self.fan_in, self.fan_out)).astype(dtype)
        b = np.zeros(self.fan_out, dtype=dtype)
        return {self.W_name: W, self.b_name: b}

    def forward(self, params: dict, x, relu: bool = False):
        """``y = x @ W + b``, or ``max(x @ W + b, 0)`` with ``relu`` (one fused pass for the
        bias and the ReLU after the matrix product).

        Parameters
        ----------
        params : dict of arrays
        x : (n, fan_in) array
        relu : bool

        Returns
        -------
        y : (n, fan_out) array
        """
        self._x = x
        y = x @ params[self.W_name]
        b = params[self.b_name]
        return add_bias(y, b, relu, impl=self._impl_for(y, b))

    def backward(self, params: dict, dy, grads: dict, need_dx: bool = True, relu_output=None):
        """Backward of ``y = x @ W + b``: ``dW = x^T dy``, ``db = sum_rows dy``, ``dx = dy W^T``.

        With ``relu_output`` (the output of a ReLU applied to ``y``), ``dy`` is the gradient
        with respect to that output and is first masked in place, ``dy * [relu_output > 0]``,
        in the same pass as ``db``.

        Derivation: docs/derivations.md, "Dense layer" (and "Activations" for the mask).

        Parameters
        ----------
        params : dict of arrays
        dy : (n, fan_out) array
            Gradient of the loss with respect to the layer output.
        grads : dict
            Receives ``grads[name + ".W"]`` (fan_in, fan_out) and ``grads[name + ".b"]``
            (fan_out,) as new arrays; a :class:`FlatArrays` (a model's reused gradient
            buffers) is written in place instead.
        need_dx : bool
            False skips the input gradient (first layer of a network).
        relu_output : (n, fan_out) array or None

        Returns
        -------
        dx : (n, fan_in) array, or None when ``need_dx`` is False
        """
        xp = array_module(dy)
        buffers = isinstance(grads, FlatArrays)
        if buffers:
            db = grads[self.b_name]
        else:
            db = grads[self.b_name] = xp.empty(dy.shape[1], dtype=dy.dtype)
        bias_grad(dy, db, relu_output, impl=self._impl_for(dy, db, relu_output))
        if buffers:
            xp.matmul(self._x.T, dy, out=grads[self.W_name])
        else:
            grads[self.W_name] = self._x.T @ dy
        return dy @ params[self.W_name].T if need_dx else None


class MLP:
    """A multilayer perceptron body with one or more linear heads.

    ``h_0 = x``, ``h_i = act(h_{i-1} @ W_i + b_i)`` for each hidden width, then for each
    head ``out[head] = h_last @ W_head + b_head``. Parameter names: ``{prefix}.{i}.W``,
    ``{prefix}.{i}.b`` for the hidden layers (i = 0, 1, ...), then ``{prefix}.{head}.W``,
    ``{prefix}.{head}.b`` in the order the heads are given.

    Parameters
    ----------
    prefix : str
        e.g. ``"enc"`` or ``"dec"``.
    input_dim : int
    hidden : sequence of int
        Widths of the hidden layers (may be empty: heads act on the input directly).
    heads : dict of str -> int
        Output width of each head, e.g. ``{"mu": k, "logvar": k}``.
    activation : {"relu", "tanh", "softplus"}
    impl : {"cpu", "cuda", "reference"}
        Kernel implementation of the layers' bias and ReLU passes (:class:`Dense`).

    Notes
    -----
    The encoder of a VAE is ``MLP("enc", D, hidden, {"mu": k, "logvar": k})``; a model that
    needs an extra encoder output (the regression model's ``logsigma``) adds a head.
    """

    def __init__(self, prefix: str, input_dim: int, hidden, heads: dict, activation: str,
                 impl: str = "cpu"):
        self.prefix = prefix
        self.layers = []
        self.activations = []
        fan_in = input_dim
        for i, width in enumerate(hidden):
            self.layers.append(Dense(f"{prefix}.{i}", fan_in, int(width), impl))
            self.activations.append(make_activation(activation))
            fan_in = int(width)
        self.heads = {head: Dense(f"{prefix}.{head}", fan_in, int(width), impl)
                      for head, width in heads.items()}

    def init_params(self, rng: np.random.Generator, dtype) -> dict:
        """Host parameters of every layer in name order (see :meth:`Dense.init_params`)."""
        params = {}
        for layer in [*self.layers, *self.heads.values()]:
            params.update(layer.init_params(rng, dtype))
        return params

    def forward(self, params: dict, x) -> dict:
        """Run the body and every head.

        Parameters
        ----------
        x : (n, input_dim) array

        Returns
        -------
        outputs : dict head -> (n, width) array
        """
        h = x
        for layer, activation in zip(self.layers, self.activations):
            if activation.name == "relu":
                h = activation.cache_output(layer.forward(params, h, relu=True))
            else:
                h = activation.forward(layer.forward(params, h), inplace=True)
        if len(self.heads) == 1:
            return {head: layer.forward(params, h) for head, layer in self.heads.items()}
        return self._heads_forward(params, h)

    def _heads_forward(self, params: dict, h) -> dict:
        """Every head from one product with the heads' weights side by side.

        ``h @ [W_1 W_2 ...] + [b_1 b_2 ...]`` is one matrix product instead of one per
        head (the VAE's ``mu`` and ``logvar`` heads: one 400 x 40 product instead of two
        400 x 20 ones); the outputs are copied out as contiguous arrays.
        """
        xp = array_module(h)
        layers = list(self.heads.values())
        W = xp.concatenate([params[layer.W_name] for layer in layers], axis=1)
        b = xp.concatenate([params[layer.b_name] for layer in layers])
        out = h @ W
        add_bias(out, b, False, impl=layers[0]._impl_for(out, b))
        self._heads_cache = (h, W)
        outputs, start = {}, 0
        for head, layer in self.heads.items():
            outputs[head] = xp.ascontiguousarray(out[:, start : start + layer.fan_out])
            start += layer.fan_out
        return outputs

    def _heads_backward(self, doutputs: dict, grads: dict, need_dx: bool):
        """Backward of :meth:`_heads_forward`: the heads' output gradients side by side
        (zeros for a head absent from ``doutputs``) give every head's ``dW`` and ``db`` from
        one product and one column sum, and ``dh = sum_head dout_head W_head^T`` from one
        product. Derivation: docs/derivations.md, "Dense layer"."""
        h, W = self._heads_cache
        xp = array_module(h)
        dout = xp.zeros((h.shape[0], W.shape[1]), dtype=W.dtype)
        start = 0
        for head, layer in self.heads.items():
            if head in doutputs:
                if tuple(doutputs[head].shape) != (h.shape[0], layer.fan_out):
                    raise ValueError(
                        f"{self.prefix}: the gradient of head {head!r} has shape "
                        f"{tuple(doutputs[head].shape)}; expected {(h.shape[0], layer.fan_out)}"
                    )
                dout[:, start : start + layer.fan_out] = doutputs[head]
            start += layer.fan_out
        db = xp.empty(W.shape[1], dtype=W.dtype)
        layers = list(self.heads.values())
        bias_grad(dout, db, impl=layers[0]._impl_for(dout, db))
        dW = h.T @ dout
        start = 0
        for layer in layers:
            stop = start + layer.fan_out
            for name, block in ((layer.W_name, dW[:, start:stop]), (layer.b_name, db[start:stop])):
                if isinstance(grads, FlatArrays):
                    grads[name][...] = block
                else:
                    grads[name] = xp.ascontiguousarray(block)
            start = stop
        return dout @ W.T if need_dx else None

    def backward(self, params: dict, doutputs: dict, grads: dict, need_dx: bool = True):
        """Backward through the heads and the body.

        Derivation: docs/derivations.md, "Dense layer" and "Activations" (the chain rule
        sums the heads' contributions to the last hidden layer).

        Parameters
        ----------
        doutputs : dict head -> (n, width) array
            Gradient of the loss with respect to each head's output; a head left out does
            not enter the loss (its parameter gradients are zeros).
        grads : dict
            Receives the gradient of every parameter of this network, by name (written in
            place when it is a :class:`FlatArrays`, see :meth:`Dense.backward`).
        need_dx : bool
            False skips the gradient with respect to the network input.

        Returns
        -------
        dx : (n, input_dim) array, or None when ``need_dx`` is False
        """
        has_body = bool(self.layers)
        if not any(head in doutputs for head in self.heads) and has_body:
            raise ValueError(
                f"{self.prefix}: doutputs has no gradient for any head {list(self.heads)}"
            )
        if len(self.heads) > 1:
            dh = self._heads_backward(doutputs, grads, has_body or need_dx)
        else:
            (head, layer), = self.heads.items()
            if head in doutputs:
                dh = layer.backward(params, doutputs[head], grads, need_dx=has_body or need_dx)
            else:  # no body (checked above): the head's gradients are zero, no input gradient
                dh = None
                for name in (layer.W_name, layer.b_name):
                    if isinstance(grads, FlatArrays):
                        grads[name][...] = 0
                    else:
                        grads[name] = array_module(params[name]).zeros_like(params[name])
        for i in range(len(self.layers) - 1, -1, -1):
            need = (i > 0) or need_dx
            activation = self.activations[i]
            if activation.name == "relu":
                dh = self.layers[i].backward(params, dh, grads, need_dx=need,
                                             relu_output=activation.output)
            else:
                dh = self.layers[i].backward(params, activation.backward(dh), grads,
                                             need_dx=need)
        return dh
