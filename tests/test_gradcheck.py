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
