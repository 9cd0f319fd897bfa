"""The public finite-difference checker: it passes correct gradients, catches wrong ones,
restores the parameters, and prints a table."""

import numpy as np
import pytest

from minivae.gradcheck import check_gradients, format_table, gradcheck_vae


def _quadratic(rng):
    A = rng.standard_normal((3, 3))
    params = {"x": rng.standard_normal(3), "Y": rng.standard_normal((2, 3))}

    def loss():
        return float(params["x"] @ A @ params["x"] + np.sum(params["Y"] ** 3))

    grads = {"x": (A + A.T) @ params["x"], "Y": 3 * params["Y"] ** 2}
    return loss, params, grads


def test_correct_gradients_pass_and_params_are_restored(rng):
    loss, params, grads = _quadratic(rng)
    before = {name: value.copy() for name, value in params.items()}
    rows = check_gradients(loss, params, grads)
    assert [row["name"] for row in rows] == ["x", "Y"]
    assert rows[1]["shape"] == (2, 3) and rows[1]["n_checked"] == 6
    assert all(row["rel_error"] < 1e-8 for row in rows)
    for name in params:
        np.testing.assert_array_equal(params[name], before[name])


def test_a_wrong_gradient_is_caught(rng):
    loss, params, grads = _quadratic(rng)
    grads["Y"] = grads["Y"].copy()
    grads["Y"][1, 2] *= 1.01
    rows = check_gradients(loss, params, grads)
    assert rows[0]["rel_error"] < 1e-8
    assert rows[1]["rel_error"] > 1e-3


def test_entry_subsampling_is_seeded(rng):
    loss, params, grads = _quadratic(rng)
    first = check_gradients(loss, params, grads, max_entries_per_param=2, seed=3)
    second = check_gradients(loss, params, grads, max_entries_per_param=2, seed=3)
    assert first[1]["n_checked"] == 2 and first == second


def test_float32_parameters_are_refused():
    with pytest.raises(ValueError, match="need float64"):
        check_gradients(lambda: 0.0, {"w": np.zeros(2, np.float32)}, {"w": np.zeros(2)})
    with pytest.raises(ValueError, match="no entry for parameter 'w'"):
        check_gradients(lambda: 0.0, {"w": np.zeros(2)}, {})


def test_gradcheck_vae_and_table():
    rows = gradcheck_vae("bernoulli", "relu", max_entries_per_param=5)
    assert rows[0]["name"] == "enc.0.W" and rows[-1]["name"] == "dec.out.b"
    assert max(row["rel_error"] for row in rows) < 1e-6
    table = format_table(rows)
    assert "enc.logvar.W" in table and "worst relative error" in table
    assert len(table.splitlines()) == len(rows) + 3


def test_params_are_restored_when_the_loss_raises():
    params = {"w": np.array([1.0, 2.0])}
    calls = []

    def loss():
        calls.append(None)
        if len(calls) == 2:
            raise RuntimeError("loss failed")
        return float(params["w"].sum())

    with pytest.raises(RuntimeError, match="loss failed"):
        check_gradients(loss, params, {"w": np.ones(2)})
    np.testing.assert_array_equal(params["w"], [1.0, 2.0])


def test_gradients_below_finite_difference_resolution_are_flagged(rng):
    # f = 1000 + sum(w^2) at w ~ 1e-9: the true gradient 2w ~ 2e-9 is far below the
    # rounding floor eps_mach * 1000 / h ~ 2.2e-7, so the difference cannot check it.
    params = {"w": 1e-9 * (1.0 + rng.random(3)), "v": rng.standard_normal(2)}

    def loss():
        return float(1000.0 + np.sum(params["w"] ** 2) + np.sum(params["v"] ** 2))

    rows = check_gradients(loss, params, {"w": 2 * params["w"], "v": 2 * params["v"]})
    by_name = {row["name"]: row for row in rows}
    assert by_name["w"]["below_fd_resolution"] is True
    assert by_name["w"]["fd_resolution"] == pytest.approx(np.finfo(float).eps * loss() / 1e-6, rel=1e-6)
    assert by_name["v"]["below_fd_resolution"] is False and by_name["v"]["rel_error"] < 1e-6
    table = format_table(rows).splitlines()
    assert "below FD resolution" in table[2] and "below FD resolution" not in table[3]
    assert table[-2] == f"worst relative error: {by_name['v']['rel_error']:.2e}"
    assert table[-1] == "not checked, gradients below finite-difference resolution: w"
