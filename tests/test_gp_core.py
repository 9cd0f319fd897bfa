"""The GP core (factorise, Factor.solve, Factor.cross, predictive) against plain NumPy."""

import numpy as np
import pytest

from minivae.gp import _log_marginal_likelihood_and_jitter, factorise, predictive


def _numpy_reference(X, Y, Xq, lengthscale, s, noise, a, b):
    def k(A, B, ua, ub):
        d2 = (((A[:, None, :] - B[None, :, :]) / lengthscale) ** 2).sum(-1)
        return s * np.outer(ua, ub) * np.exp(-0.5 * d2)

    K = k(X, X, a, a) + noise * np.eye(X.shape[0])
    Ks = k(Xq, X, b, a)
    mean = Ks @ np.linalg.solve(K, Y)
    var = s * b**2 - np.einsum("ij,ji->i", Ks, np.linalg.solve(K, Ks.T))
    return mean, var


@pytest.mark.parametrize("amplitudes", [False, True])
@pytest.mark.parametrize("n, m, d, k", [(1, 1, 1, 1), (7, 3, 2, 5), (13, 17, 3, 1)])
def test_predictive_matches_numpy(amplitudes, n, m, d, k):
    rng = np.random.default_rng(n * 100 + m + 10 * d)
    X, Xq = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    Y = rng.normal(size=(n, k))
    ell = np.exp(rng.normal(size=d) * 0.3)
    noise = 0.05
    theta = np.concatenate([np.log(ell), [np.log(1.0), np.log(noise)]])
    a = rng.uniform(0.5, 2.0, n) if amplitudes else None
    b = rng.uniform(0.5, 2.0, m) if amplitudes else None
    f = factorise(X, theta, amplitudes=a)
    mean, var = predictive(f, f.solve(Y), Xq, amp_test=b, return_var=True)
    ones_n, ones_m = np.ones(n), np.ones(m)
    ref_mean, ref_var = _numpy_reference(
        X, Y, Xq, ell, 1.0, noise, ones_n if a is None else a, ones_m if b is None else b
    )
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(var, np.maximum(ref_var, 0.0), rtol=1e-9, atol=1e-12)
    assert f.jitter == 0.0


@pytest.mark.parametrize("amplitudes", [False, True])
def test_predictive_covariance_diagonal_is_the_variance(amplitudes):
    rng = np.random.default_rng(3)
    X, Xq, Y = rng.normal(size=(9, 2)), rng.normal(size=(4, 2)), rng.normal(size=9)
    theta = np.log([0.8, 1.3, 0.1])
    a = rng.uniform(0.5, 2.0, 9) if amplitudes else None
    b = rng.uniform(0.5, 2.0, 4) if amplitudes else None
    f = factorise(X, theta, amplitudes=a)
    alpha = f.solve(Y)
    mean_v, var = predictive(f, alpha, Xq, amp_test=b, return_var=True)
    mean_c, cov = predictive(f, alpha, Xq, amp_test=b, return_cov=True)
    assert mean_v.shape == (4,) and cov.shape == (4, 4)
    np.testing.assert_allclose(mean_c, mean_v, rtol=0, atol=0)
    np.testing.assert_allclose(np.diagonal(cov), var, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n", [7, 300])  # below and above the potri switch (backend._POTRI_MIN_N)
def test_workspace_holds_k_l_and_w_with_the_same_results(n):
    """With a workspace, K, L and W of the LML gradient live in it: no n x n array per call,
    and the same bits as without."""
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    theta = np.log([0.9, 1.3, 0.2])
    workspace = np.empty((n, n))
    factor = factorise(X, theta, out=workspace)
    assert np.shares_memory(factor.L, workspace)
    np.testing.assert_array_equal(factor.L, factorise(X, theta).L)
    for _ in range(2):  # a reused workspace is overwritten in full
        got = _log_marginal_likelihood_and_jitter(X, Y, theta, "cpu", True, True, workspace)
        expected = _log_marginal_likelihood_and_jitter(X, Y, theta, "cpu", True, True)
        assert got[0] == expected[0]
        np.testing.assert_array_equal(got[1], expected[1])
        theta = theta + 0.1
