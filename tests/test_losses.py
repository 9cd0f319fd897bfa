"""Likelihoods and the KL term: values against direct formulas, gradients against central
finite differences in float64."""

import math

import numpy as np
import pytest
from scipy.special import expit

from minivae import losses
from minivae.gradcheck import check_gradients

TOL = 1e-6


def _assert_rows_pass(rows):
    worst = max(rows, key=lambda row: row["rel_error"])
    assert worst["rel_error"] < TOL, f"{worst['name']}: relative error {worst['rel_error']:.2e}"


def test_bernoulli_nll_equals_cross_entropy(rng):
    logits = rng.standard_normal((5, 7)) * 3
    X = rng.uniform(size=(5, 7))
    p = expit(logits)
    expected = -(X * np.log(p) + (1 - X) * np.log1p(-p)).sum(axis=1)
    np.testing.assert_allclose(losses.bernoulli_nll(logits, X), expected, rtol=1e-12)


def test_bernoulli_nll_is_finite_for_huge_logits():
    logits = np.array([[1000.0, -1000.0, -50.0]])
    X = np.array([[0.0, 1.0, 0.0]])
    nll = losses.bernoulli_nll(logits, X)
    np.testing.assert_allclose(nll, [1000.0 + 1000.0 + math.log1p(math.exp(-50.0))], rtol=1e-12)
    _, dlogits = losses.bernoulli_nll_and_grad(logits, X)
    # sigmoid(-50) = exp(-50) keeps its full relative precision
    np.testing.assert_allclose(dlogits, [[1.0, -1.0, math.exp(-50.0)]], rtol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_bernoulli_gradients_match_finite_differences(rng, scale):
    inputs = {"logits": rng.standard_normal((4, 6)) * 2}
    X = rng.uniform(size=(4, 6))

    def loss():
        return scale * float(losses.bernoulli_nll(inputs["logits"], X).sum())

    dlogits = losses.bernoulli_nll_grad(inputs["logits"], X, scale)
    _assert_rows_pass(check_gradients(loss, inputs, {"logits": dlogits}))
    nll, dlogits_fused = losses.bernoulli_nll_and_grad(inputs["logits"], X, scale)
    np.testing.assert_allclose(nll, losses.bernoulli_nll(inputs["logits"], X), rtol=1e-13)
    # sigmoid(f) - x can be ~0 when x is near sigmoid(f): atol at the rounding level of 1.0
    np.testing.assert_allclose(dlogits_fused, dlogits, rtol=1e-12, atol=1e-15)


def test_gaussian_nll_equals_log_density(rng):
    mean = rng.standard_normal((3, 4))
    logvar = rng.standard_normal((3, 4))
    X = rng.standard_normal((3, 4))
    var = np.exp(logvar)
    expected = -(-0.5 * np.log(2 * np.pi * var) - (X - mean) ** 2 / (2 * var)).sum(axis=1)
    np.testing.assert_allclose(losses.gaussian_nll(mean, logvar, X), expected, rtol=1e-12)
    fixed = losses.gaussian_nll(mean, math.log(0.3), X)
    expected_fixed = -(-0.5 * np.log(2 * np.pi * 0.3) - (X - mean) ** 2 / 0.6).sum(axis=1)
    np.testing.assert_allclose(fixed, expected_fixed, rtol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_gaussian_gradients_match_finite_differences(rng, scale):
    inputs = {"mean": rng.standard_normal((4, 5)), "logvar": rng.standard_normal((4, 5))}
    X = rng.standard_normal((4, 5))

    def loss():
        return scale * float(losses.gaussian_nll(inputs["mean"], inputs["logvar"], X).sum())

    dmean, dlogvar = losses.gaussian_nll_grad(inputs["mean"], inputs["logvar"], X, scale)
    _assert_rows_pass(check_gradients(loss, inputs, {"mean": dmean, "logvar": dlogvar}))


def test_gaussian_gradient_with_fixed_variance(rng):
    inputs = {"mean": rng.standard_normal((3, 4))}
    X = rng.standard_normal((3, 4))
    logvar = math.log(0.7)

    def loss():
        return float(losses.gaussian_nll(inputs["mean"], logvar, X).sum())

    dmean, _ = losses.gaussian_nll_grad(inputs["mean"], logvar, X)
    _assert_rows_pass(check_gradients(loss, inputs, {"mean": dmean}))


def test_kl_matches_monte_carlo_free_closed_form(rng):
    mu = rng.standard_normal((3, 2))
    logvar = rng.standard_normal((3, 2))
    var = np.exp(logvar)
    # KL between 1-D Gaussians N(m, v) || N(0, 1) = 0.5 (v + m^2 - 1 - log v), summed over dims
    expected = (0.5 * (var + mu**2 - 1 - np.log(var))).sum(axis=1)
    np.testing.assert_allclose(losses.kl_std_normal(mu, logvar), expected, rtol=1e-12)
    assert losses.kl_std_normal(np.zeros((1, 3)), np.zeros((1, 3)))[0] == 0.0


@pytest.mark.parametrize("scale", [1.0, 0.7])
def test_kl_gradients_match_finite_differences(rng, scale):
    inputs = {"mu": rng.standard_normal((5, 3)), "logvar": rng.standard_normal((5, 3))}

    def loss():
        return scale * float(losses.kl_std_normal(inputs["mu"], inputs["logvar"]).sum())

    dmu, dlogvar = losses.kl_std_normal_grad(inputs["mu"], inputs["logvar"], scale)
    _assert_rows_pass(check_gradients(loss, inputs, {"mu": dmu, "logvar": dlogvar}))


def test_float32_stays_float32(rng):
    logits = rng.standard_normal((2, 3)).astype(np.float32)
    X = rng.uniform(size=(2, 3)).astype(np.float32)
    nll, dlogits = losses.bernoulli_nll_and_grad(logits, X, 0.5)
    assert nll.dtype == np.float32 and dlogits.dtype == np.float32
    dmu, dlogvar = losses.kl_std_normal_grad(logits, X, 0.5)
    assert dmu.dtype == np.float32 and dlogvar.dtype == np.float32
    assert losses.gaussian_nll(logits, math.log(0.5), X).dtype == np.float32
