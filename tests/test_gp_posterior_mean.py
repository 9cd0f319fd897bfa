"""The GP posterior mean as a differentiable function: forward against independent
computations, backward against central finite differences (float64, rel. error < 1e-6)."""

import numpy as np
import pytest

from minivae.errors import DataError
from minivae.gp import posterior_mean, posterior_mean_backward
from minivae.kernels.rbf import rbf_matrix_reference

N_TRAIN, N_TEST, N_FEATURES = 9, 6, 3
FD_STEP = 1e-5


def central_differences(loss, x):
    """d loss / d x by central differences, one element at a time (x is restored)."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        original = x[idx]
        x[idx] = original + FD_STEP
        up = loss()
        x[idx] = original - FD_STEP
        down = loss()
        x[idx] = original
        grad[idx] = (up - down) / (2 * FD_STEP)
    return grad


def relative_error(mine, theirs):
    """max |mine - theirs| / max(|mine|, |theirs|): the error relative to the gradient's scale."""
    scale = max(np.max(np.abs(mine)), np.max(np.abs(theirs)))
    return np.max(np.abs(mine - theirs)) / scale


def make_problem(rng, ard, n_outputs, amp_train, amp_test):
    X_train = rng.uniform(-2, 2, size=(N_TRAIN, N_FEATURES))
    X_test = rng.uniform(-2, 2, size=(N_TEST, N_FEATURES))
    Z = rng.normal(size=(N_TRAIN, n_outputs))
    n_ls = N_FEATURES if ard else 1
    theta = np.concatenate(
        [np.log(rng.uniform(0.8, 2.0, size=n_ls)), [np.log(1.3), np.log(0.2)]]
    )
    a = rng.uniform(0.5, 1.5, size=N_TRAIN) if amp_train else None
    b = rng.uniform(0.5, 1.5, size=N_TEST) if amp_test else None
    weights = rng.normal(size=(N_TEST, n_outputs))  # loss = sum(weights * mean)
    return X_train, Z, X_test, theta, a, b, weights


AMPLITUDES = [(False, False), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize("ard", [False, True], ids=["iso", "ard"])
@pytest.mark.parametrize("n_outputs", [1, 4])
@pytest.mark.parametrize("amp_train,amp_test", AMPLITUDES, ids=["noamp", "amptrain", "amptest", "ampboth"])
def test_backward_matches_finite_differences(rng, ard, n_outputs, amp_train, amp_test):
    X_train, Z, X_test, theta, a, b, weights = make_problem(rng, ard, n_outputs, amp_train, amp_test)

    def loss():
        mean, _ = posterior_mean(X_train, Z, X_test, theta, a, b)
        return float(np.sum(weights * mean))

    _, cache = posterior_mean(X_train, Z, X_test, theta, a, b)
    grads = posterior_mean_backward(weights, cache)

    checks = [("dZ", grads["dZ"], Z), ("dtheta", grads["dtheta"], theta)]
    if amp_train:
        checks.append(("damp_train", grads["damp_train"], a))
    else:
        assert grads["damp_train"] is None
    if amp_test:
        checks.append(("damp_test", grads["damp_test"], b))
    else:
        assert grads["damp_test"] is None
    for name, mine, wrt in checks:
        numeric = central_differences(loss, wrt)
        assert mine.shape == wrt.shape, f"{name}: shape {mine.shape} vs {wrt.shape}"
        err = relative_error(mine, numeric)
        assert err < 1e-6, f"{name}: analytic {mine} vs finite differences {numeric} (rel err {err:.2e})"


@pytest.mark.parametrize("ard", [False, True], ids=["iso", "ard"])
def test_mean_matches_direct_solve_with_amplitudes(rng, ard):
    X_train, Z, X_test, theta, a, b, _ = make_problem(rng, ard, 3, True, True)
    lengthscale, variance, noise = np.exp(theta[:-2]), np.exp(theta[-2]), np.exp(theta[-1])
    K = rbf_matrix_reference(X_train, None, lengthscale, variance, a)
    K_star = rbf_matrix_reference(X_test, X_train, lengthscale, variance, b, a)
    expected = K_star @ np.linalg.solve(K + noise * np.eye(N_TRAIN), Z)
    mean, _ = posterior_mean(X_train, Z, X_test, theta, a, b)
    # LU solve versus Cholesky solve on a matrix of condition number < 1e3: the two agree
    # to a few hundred ulps, not to the last bit; 1e-10 is still far below any real error.
    np.testing.assert_allclose(mean, expected, rtol=1e-10)


@pytest.mark.parametrize("ard", [False, True], ids=["iso", "ard"])
def test_mean_matches_scikit_learn_without_amplitudes(rng, ard):
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    X_train, Z, X_test, theta, _, _, _ = make_problem(rng, ard, 2, False, False)
    lengthscale, variance, noise = np.exp(theta[:-2]), np.exp(theta[-2]), np.exp(theta[-1])
    kernel = ConstantKernel(variance) * RBF(lengthscale) + WhiteKernel(noise)
    reference = GaussianProcessRegressor(kernel, alpha=0.0, optimizer=None).fit(X_train, Z)
    mean, _ = posterior_mean(X_train, Z, X_test, theta)
    # Same formulas, other call order (float64; measured agreement ~1e-14): see test_gp.py's
    # SKLEARN_RTOL.
    np.testing.assert_allclose(mean, reference.predict(X_test), rtol=1e-11)


def test_mean_at_training_inputs_approaches_targets_for_small_noise(rng):
    X_train = np.linspace(0, 1, 6)[:, None]
    Z = rng.normal(size=(6, 2))
    theta = np.log([0.3, 1.0, 1e-10])
    mean, _ = posterior_mean(X_train, Z, X_train, theta)
    np.testing.assert_allclose(mean, Z, rtol=1e-6, atol=1e-6)  # Z entries can be ~0


def test_shape_errors_are_data_errors(rng):
    X_train, Z, X_test, theta, _, _, _ = make_problem(rng, False, 2, False, False)
    with pytest.raises(DataError, match="Z has 8 rows but X_train has 9"):
        posterior_mean(X_train, Z[:-1], X_test, theta)
    with pytest.raises(DataError, match="X_test has 2 columns but X_train has 3"):
        posterior_mean(X_train, Z, X_test[:, :2], theta)
    with pytest.raises(DataError, match=r"amp_train has shape \(4,\); expected \(9,\)"):
        posterior_mean(X_train, Z, X_test, theta, amp_train=np.ones(4))
    with pytest.raises(ValueError, match="theta has shape"):
        posterior_mean(X_train, Z, X_test, theta[:2])
