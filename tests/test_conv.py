"""The convolutional decoder: patch and shuffle maps against loops, forward against a plain
convolution, every backward against central finite differences in float64."""

import numpy as np
import pytest

from minivae.autoencoder import Autoencoder
from minivae.backend import get_backend
from minivae.conv import (ConvDecoder, check_conv_image_shape, col2im, depth_to_space, im2col,
                          space_to_depth)
from minivae.gradcheck import check_gradients

TOL = 1e-6
SHAPES = [(1, 3, 5, 1), (3, 4, 4, 3), (2, 1, 6, 2), (1, 2, 2, 5)]


def _im2col_loops(x):
    n, h, w, c = x.shape
    cols = np.zeros((n, h, w, 3, 3, c))
    for b in range(n):
        for i in range(h):
            for j in range(w):
                for dy in range(3):
                    for dx in range(3):
                        y, x_ = i + dy - 1, j + dx - 1
                        if 0 <= y < h and 0 <= x_ < w:
                            cols[b, i, j, dy, dx] = x[b, y, x_]
    return cols.reshape(n * h * w, 9 * c)


def _depth_to_space_loops(y):
    n, h, w, c4 = y.shape
    c = c4 // 4
    out = np.empty((n, 2 * h, 2 * w, c))
    for i in range(h):
        for j in range(w):
            for a in range(2):
                for b in range(2):
                    out[:, 2 * i + a, 2 * j + b] = y[:, i, j, (2 * a + b) * c:(2 * a + b + 1) * c]
    return out


@pytest.mark.parametrize("shape", SHAPES)
def test_im2col_matches_loops_and_col2im_is_its_adjoint(shape, rng):
    x = rng.standard_normal(shape)
    cols = im2col(x)
    np.testing.assert_array_equal(cols, _im2col_loops(x))
    D = rng.standard_normal(cols.shape)
    back = col2im(D, shape)
    assert back.shape == shape and back.flags.c_contiguous
    np.testing.assert_allclose(np.sum(cols * D), np.sum(x * back), rtol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_depth_to_space_matches_loops_and_space_to_depth_inverts_it(shape, rng):
    n, h, w, c = shape
    y = rng.standard_normal((n, h, w, 4 * c))
    out = depth_to_space(y)
    np.testing.assert_array_equal(out, _depth_to_space_loops(y))
    np.testing.assert_array_equal(space_to_depth(out), y.reshape(n * h * w, 4 * c))


def _reference_forward(decoder, params, z):
    """The decoder by explicit convolution sums, without im2col or shuffles."""
    n = z.shape[0]
    x = np.maximum(z @ params["dec.fc.W"] + params["dec.fc.b"], 0)
    x = x.reshape(n, *decoder.base, decoder.channels[0])
    for s, layer in enumerate(decoder.convs):
        h, w, cin = x.shape[1:]
        W = params[layer.W_name].reshape(3, 3, cin, -1)
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        y = np.zeros((n, h, w, W.shape[-1])) + params[layer.b_name]
        for dy in range(3):
            for dx in range(3):
                y += np.einsum("nhwc,co->nhwo", padded[:, dy:dy + h, dx:dx + w], W[dy, dx])
        if s < len(decoder.convs) - 1:
            y = np.maximum(y, 0)
        x = _depth_to_space_loops(y)
    c = decoder.image_shape[2]
    return {head: x[..., i * c:(i + 1) * c].reshape(n, -1) for i, head in enumerate(decoder.heads)}


def _decoder(image_shape, heads, channels=(3, 2), impl="cpu"):
    size = int(np.prod(image_shape))
    return ConvDecoder("dec", 3, image_shape, {head: size for head in heads}, channels, impl)


CASES = [((8, 12), ("out",), (3, 2)), ((4, 8, 3), ("mean", "logvar"), (5, 3)),
         ((2, 6), ("out",), (4,)), ((8, 8), ("mean",), (2, 3, 2))]


@pytest.mark.parametrize("image_shape, heads, channels", CASES)
def test_forward_matches_explicit_convolutions(image_shape, heads, channels, rng):
    decoder = _decoder(image_shape, heads, channels, impl="reference")
    params = decoder.init_params(rng, np.float64)
    params = {name: value + 0.1 * rng.standard_normal(value.shape)
              for name, value in params.items()}
    z = rng.standard_normal((3, 3))
    outputs = decoder.forward(params, z)
    expected = _reference_forward(decoder, params, z)
    assert list(outputs) == list(heads)
    for head in heads:
        np.testing.assert_allclose(outputs[head], expected[head], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("image_shape, heads, channels", CASES)
@pytest.mark.parametrize("n", [1, 3])
def test_backward_matches_finite_differences(image_shape, heads, channels, n, rng):
    decoder = _decoder(image_shape, heads, channels)
    params = decoder.init_params(rng, np.float64)
    # Biases away from zero, so that no ReLU input sits at its kink within the step.
    params = {name: value + 0.3 * rng.standard_normal(value.shape)
              for name, value in params.items()}
    z = rng.standard_normal((n, 3))
    weights = {head: rng.standard_normal((n, int(np.prod(image_shape)))) for head in heads}
    used = heads[:1] if len(heads) > 1 else heads  # a head left out has zero gradient

    def loss():
        outputs = decoder.forward(params, z)
        return float(sum(np.sum(weights[head] * outputs[head]) for head in used))

    loss()
    grads = {}
    dz = decoder.backward(params, {head: weights[head] for head in used}, grads)
    rows = check_gradients(loss, {**params, "z": z}, {**grads, "z": dz})
    worst = max(rows, key=lambda row: row["rel_error"])
    assert worst["rel_error"] < TOL, f"{worst['name']}: relative error {worst['rel_error']:.2e}"


@pytest.mark.parametrize("likelihood, image_shape", [("bernoulli", (4, 8)),
                                                     ("gaussian", (8, 4, 2))])
def test_elbo_gradient_with_the_conv_decoder_matches_finite_differences(likelihood, image_shape,
                                                                        rng):
    D = int(np.prod(image_shape))
    ae = Autoencoder(D, 2, (5,), "tanh", likelihood, dtype=np.dtype("float64"),
                     backend=get_backend("cpu"), seed=3, decoder="conv", image_shape=image_shape)
    assert isinstance(ae.decoder, ConvDecoder)
    for value in ae.params.values():
        value += 0.2 * rng.standard_normal(value.shape)
    X = rng.uniform(size=(3, D))
    eps = rng.standard_normal((2, 3, 2))
    _, grads = ae.neg_elbo_and_grads(X, eps, {})
    rows = check_gradients(lambda: float(ae.neg_elbo_and_grads(X, eps, {})[0]), ae.params, grads)
    worst = max(rows, key=lambda row: row["rel_error"])
    assert worst["rel_error"] < TOL, f"{worst['name']}: relative error {worst['rel_error']:.2e}"


def test_cpu_and_cuda_sim_agree(rng):
    shape = (8, 8)
    nets = [Autoencoder(64, 3, (6,), "relu", "bernoulli", dtype=np.dtype("float32"),
                        backend=get_backend(device), seed=5, decoder="conv", image_shape=shape)
            for device in ("cpu", "cuda-sim")]
    X = rng.uniform(size=(4, 64)).astype(np.float32)
    eps = rng.standard_normal((1, 4, 3)).astype(np.float32)
    (loss_cpu, g_cpu), (loss_sim, g_sim) = [net.neg_elbo_and_grads(X, eps, {}) for net in nets]
    # float32: the cuda bias-gradient and likelihood kernels sum the same terms in another
    # order than the cpu ones, a few units in the last place of sums of up to 256 terms
    # (measured: loss equal, gradients within 1.5e-7 of values up to 0.8).
    np.testing.assert_allclose(float(loss_sim), float(loss_cpu), rtol=1e-6)
    for name in g_cpu:
        np.testing.assert_allclose(g_sim[name], g_cpu[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("shape", [(30, 32), (32,), (32, 30, 1), (4, 4, 4, 1)])
def test_image_shapes_the_decoder_cannot_make_are_refused(shape):
    with pytest.raises(ValueError, match="multiples of 4.*decoder='mlp'"):
        check_conv_image_shape(shape)
    assert check_conv_image_shape((8, 4)) == (8, 4, 1)


def test_head_width_must_match_the_image():
    with pytest.raises(ValueError, match="head 'out' has width 10"):
        ConvDecoder("dec", 2, (4, 4), {"out": 10})
