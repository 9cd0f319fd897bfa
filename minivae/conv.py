"""A convolutional decoder with hand-written backward: dense code -> feature map -> sub-pixel
convolutions up to the image.

``z`` (n, k) -> ``h = relu(z @ W_fc + b_fc)`` reshaped to an (H/2^S, W/2^S, C_0) feature map,
then for each of the S stages a 3x3 convolution with zero ("same") padding to 4 C_{s+1}
channels followed by a depth-to-space shuffle that doubles the height and width (the
"sub-pixel" convolution, Shi et al. 2016): the four channel groups of a pixel become its
2x2 block in the output. The last stage gives ``len(heads) * c`` channels at the image size,
one block of ``c`` image channels per head ("out", or "mean" and "logvar"); hidden stages
end in a ReLU. Feature maps are NHWC (batch, height, width, channels), so a convolution is
one matrix product of the 3x3 patches (im2col) with a (9 C_in, C_out) weight, done by
:class:`~minivae.nn.Dense`, whose bias/ReLU kernels and gradient buffers it reuses.

Derivation: docs/derivations.md, "Convolutional decoder".
"""

from __future__ import annotations

import numpy as np

from .kernels._cuda import array_module
from .nn import Dense

DEFAULT_CHANNELS = (16, 8)


def im2col(x):
    """3x3 patches of an NHWC map with zero padding: (n, h, w, c) -> (n h w, 9 c).

    Column ``(3 dy + dx) c + ci`` of row ``(b, i, j)`` holds ``x[b, i + dy - 1, j + dx - 1, ci]``
    (zero outside the map).
    """
    xp = array_module(x)
    n, h, w, c = x.shape
    padded = xp.zeros((n, h + 2, w + 2, c), dtype=x.dtype)
    padded[:, 1:-1, 1:-1] = x
    cols = xp.empty((n, h, w, 3, 3, c), dtype=x.dtype)
    for dy in range(3):
        for dx in range(3):
            cols[:, :, :, dy, dx] = padded[:, dy:dy + h, dx:dx + w]
    return cols.reshape(n * h * w, 9 * c)


def col2im(dcols, shape):
    """Adjoint of :func:`im2col`: patch gradients (n h w, 9 c) summed back onto the map
    of ``shape`` (n, h, w, c)."""
    xp = array_module(dcols)
    n, h, w, c = shape
    patches = xp.ascontiguousarray(dcols.reshape(n, h, w, 9, c).transpose(3, 0, 1, 2, 4))
    padded = xp.zeros((n, h + 2, w + 2, c), dtype=dcols.dtype)
    for dy in range(3):
        for dx in range(3):
            padded[:, dy:dy + h, dx:dx + w] += patches[3 * dy + dx]
    return xp.ascontiguousarray(padded[:, 1:-1, 1:-1])


def depth_to_space(y):
    """(n, h, w, 4 c) -> (n, 2h, 2w, c): channel ``(2 a + b) c + ci`` of pixel (i, j) goes to
    pixel (2i + a, 2j + b), channel ci."""
    xp = array_module(y)
    n, h, w, c4 = y.shape
    c = c4 // 4
    return xp.ascontiguousarray(
        y.reshape(n, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)).reshape(n, 2 * h, 2 * w, c)


def space_to_depth(x):
    """Inverse (and adjoint) of :func:`depth_to_space`: (n, 2h, 2w, c) -> (n h w, 4 c)."""
    xp = array_module(x)
    n, h2, w2, c = x.shape
    h, w = h2 // 2, w2 // 2
    return xp.ascontiguousarray(
        x.reshape(n, h, 2, w, 2, c).transpose(0, 1, 3, 2, 4, 5)).reshape(n * h * w, 4 * c)


def check_conv_image_shape(image_shape, stages: int = len(DEFAULT_CHANNELS)) -> tuple:
    """``(H, W, c)`` from an image shape (H, W) or (H, W, c) that the decoder can produce.

    ValueError unless H and W are multiples of ``2 ** stages`` (each stage doubles them).
    """
    shape = tuple(int(s) for s in image_shape)
    factor = 2 ** stages
    if len(shape) not in (2, 3) or shape[0] % factor or shape[1] % factor:
        raise ValueError(
            f"decoder='conv' needs images of shape (H, W) or (H, W, channels) with H and W "
            f"multiples of {factor}; these have shape {shape}. Pad or crop the images, or use "
            "decoder='mlp'"
        )
    return shape if len(shape) == 3 else (*shape, 1)


class ConvDecoder:
    """Decoder network with the interface of :class:`~minivae.nn.MLP` (``init_params``,
    ``forward``, ``backward``) for images.

    Parameters
    ----------
    prefix : str
        Parameter names: ``{prefix}.fc.W/b`` (k, h0 w0 C_0), then ``{prefix}.conv{s}.W/b``
        (9 C_s, 4 C_{s+1}) for each stage.
    latent_dim : int
    image_shape : tuple
        (H, W) or (H, W, c); H and W multiples of ``2 ** len(channels)``.
    heads : dict of str -> int
        Output heads, each of width H W c (e.g. ``{"out": H * W}``); each row of a head is
        an image flattened in C order.
    channels : tuple of int
        C_0, C_1, ...: the feature channels entering each stage.
    impl : {"cpu", "cuda", "reference"}
        Kernel implementation of the bias and ReLU passes (:class:`~minivae.nn.Dense`).
    """

    def __init__(self, prefix: str, latent_dim: int, image_shape, heads: dict,
                 channels=DEFAULT_CHANNELS, impl: str = "cpu"):
        self.prefix = prefix
        self.channels = tuple(int(c) for c in channels)
        self.image_shape = check_conv_image_shape(image_shape, len(self.channels))
        H, W, c = self.image_shape
        for head, width in heads.items():
            if int(width) != H * W * c:
                raise ValueError(f"{prefix}: head {head!r} has width {width}; a convolutional "
                                 f"decoder of {self.image_shape} images gives {H * W * c}")
        self.heads = tuple(heads)
        factor = 2 ** len(self.channels)
        self.base = (H // factor, W // factor)
        self.fc = Dense(f"{prefix}.fc", int(latent_dim),
                        self.base[0] * self.base[1] * self.channels[0], impl)
        outs = (*self.channels[1:], len(self.heads) * c)
        self.convs = [Dense(f"{prefix}.conv{s}", 9 * cin, 4 * cout, impl)
                      for s, (cin, cout) in enumerate(zip(self.channels, outs))]

    def init_params(self, rng: np.random.Generator, dtype) -> dict:
        """Host parameters, Glorot-uniform weights over each product's (fan_in, fan_out)."""
        params = self.fc.init_params(rng, dtype)
        for layer in self.convs:
            params.update(layer.init_params(rng, dtype))
        return params

    def forward(self, params: dict, z) -> dict:
        """Every head for codes ``z`` (n, k): ``{head: (n, H W c)}``; caches for backward."""
        n = z.shape[0]
        h = self.fc.forward(params, z, relu=True)
        self._relu_outputs = [h]
        x = h.reshape(n, *self.base, self.channels[0])
        for s, layer in enumerate(self.convs):
            last = s == len(self.convs) - 1
            y = layer.forward(params, im2col(x), relu=not last)
            if not last:
                self._relu_outputs.append(y)
            x = depth_to_space(y.reshape(n, x.shape[1], x.shape[2], -1))
        c = self.image_shape[2]
        xp = array_module(x)
        return {head: xp.ascontiguousarray(x[..., i * c:(i + 1) * c]).reshape(n, -1)
                for i, head in enumerate(self.heads)}

    def backward(self, params: dict, doutputs: dict, grads: dict, need_dx: bool = True):
        """Parameter gradients into ``grads`` (in place for a
        :class:`~minivae.params.FlatArrays`) from the heads' gradients (a head left out
        contributes zero); returns dz (n, k) or None."""
        if not any(head in doutputs for head in self.heads):
            raise ValueError(f"{self.prefix}: doutputs has no gradient for any head "
                             f"{list(self.heads)}")
        H, W, c = self.image_shape
        first = next(doutputs[head] for head in self.heads if head in doutputs)
        xp = array_module(first)
        n = first.shape[0]
        dx = xp.zeros((n, H, W, len(self.heads) * c), dtype=first.dtype)
        for i, head in enumerate(self.heads):
            if head in doutputs:
                if tuple(doutputs[head].shape) != (n, H * W * c):
                    raise ValueError(f"{self.prefix}: the gradient of head {head!r} has shape "
                                     f"{tuple(doutputs[head].shape)}; expected {(n, H * W * c)}")
                dx[..., i * c:(i + 1) * c] = doutputs[head].reshape(n, H, W, c)
        for s in range(len(self.convs) - 1, -1, -1):
            relu_output = None if s == len(self.convs) - 1 else self._relu_outputs[s + 1]
            dy = space_to_depth(dx)
            dcols = self.convs[s].backward(params, dy, grads, need_dx=True,
                                           relu_output=relu_output)
            side = 2 ** s
            shape = (n, self.base[0] * side, self.base[1] * side, self.channels[s])
            dx = col2im(dcols, shape)
        return self.fc.backward(params, dx.reshape(n, -1), grads, need_dx=need_dx,
                                relu_output=self._relu_outputs[0])


__all__ = ["ConvDecoder", "DEFAULT_CHANNELS", "check_conv_image_shape", "col2im",
           "depth_to_space", "im2col", "space_to_depth"]
