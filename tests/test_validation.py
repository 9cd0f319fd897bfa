"""The shared checks of user data (minivae/validation.py) and their use at the VAE's edge."""

import numpy as np
import pytest

from minivae import VAE
from minivae.errors import DataError
from minivae.validation import check_finite, check_representable, is_int

FLOAT32_MAX = float(np.finfo(np.float32).max)


def test_values_beyond_float32_are_counted_and_located():
    X = np.zeros((4, 3))
    X[2, 1] = 1e39
    X[3, 0] = -5e200
    with pytest.raises(DataError) as info:
        check_representable(X, np.float32, "X")
    assert str(info.value) == (
        "X has 2 values beyond float32's range (largest magnitude 5e+200, first at row 2, "
        "column 1; float32 holds up to 3.4e+38); rescale the data or use dtype='float64'"
    )
    with pytest.raises(DataError, match=r"Y has 1 values .* first at row 3;"):
        check_representable(np.array([0.0, 1.0, 2.0, -1e39]), "float32", "Y")


def test_values_within_range_pass():
    # The largest float32 itself, either sign, and the whole float64 range in float64.
    check_representable(np.array([[FLOAT32_MAX, -FLOAT32_MAX, 0.0]]), np.float32, "X")
    check_representable(np.array([1e300, -1e300]), np.float64, "X")
    # Sources that always fit are not scanned: float32, integers, booleans, empty.
    check_representable(np.full(3, np.finfo(np.float32).max), np.float32, "X")
    check_representable(np.array([np.iinfo(np.int64).max]), np.float32, "X")
    check_representable(np.ones(2, dtype=bool), np.float32, "X")
    check_representable(np.zeros((0, 3)), np.float32, "X")


def test_just_above_float32_max_is_refused():
    # The next float64 above float32's maximum would still round to it, but the check is
    # about the range, and the cast of values well above it (here 1e39) gives inf.
    above = np.nextafter(FLOAT32_MAX, np.inf)
    with pytest.raises(DataError, match="1 values beyond float32's range"):
        check_representable(np.array([above]), np.float32, "X")
    with np.errstate(over="ignore"):
        assert np.isinf(np.float64(1e39).astype(np.float32))


def test_check_finite_and_is_int_are_unchanged():
    with pytest.raises(DataError, match=r"X has 1 NaN values \(first at row 1, column 0\)"):
        check_finite(np.array([[0.0], [np.nan]]), "X")
    assert is_int(np.int64(3)) and not is_int(True) and not is_int(1.0)


@pytest.mark.parametrize("method", ["elbo", "encode", "fit", "reconstruct"])
def test_vae_refuses_data_that_overflow_its_dtype(method):
    # Before the check, the float32 cast made these inf and the ELBO NaN.
    vae = VAE(3, 2, hidden=(4,), likelihood="gaussian")
    X = np.zeros((4, 3))
    X[1, 2] = 1e39
    call = {"fit": lambda: vae.fit(X, epochs=1, progress=False)}.get(
        method, lambda: getattr(vae, method)(X))
    before = {name: np.array(value) for name, value in vae.params.items()}
    with pytest.raises(DataError, match=r"X has 1 values beyond float32's range \(largest "
                                        r"magnitude 1e\+39, first at row 1, column 2"):
        call()
    for name, value in vae.params.items():
        np.testing.assert_array_equal(value, before[name])


def test_vae_validation_data_is_checked_too():
    vae = VAE(3, 2, hidden=(4,), likelihood="gaussian")
    with pytest.raises(DataError, match="validation_data has 1 values beyond float32's range"):
        vae.fit(np.zeros((4, 3)), epochs=1, progress=False,
                validation_data=np.array([[0.0, 0.0, -1e39]]))


def test_float64_vae_accepts_what_float64_holds():
    vae = VAE(3, 2, hidden=(4,), likelihood="gaussian", dtype="float64")
    assert np.all(np.isfinite(vae.encode(np.full((2, 3), 1e39))[0]))


def test_vae_decode_refuses_codes_that_overflow_its_dtype():
    vae = VAE(3, 2, hidden=(4,), likelihood="gaussian")
    with pytest.raises(DataError, match="Z has 1 values beyond float32's range"):
        vae.decode(np.array([[0.0, 1e39]]))


def test_varegressor_refuses_data_that_overflow_its_dtype():
    from minivae.var import VARegressor

    rng = np.random.default_rng(0)
    X = np.linspace(0.0, 1.0, 6)[:, None]
    Y = rng.uniform(size=(6, 2, 2))
    model = VARegressor(latent_dim=2, hidden=(3,), n_anchor=3, n_query=2, epochs=(0, 0, 0),
                        likelihood="gaussian")
    with pytest.raises(DataError, match="Y has 1 values beyond float32's range"):
        model.fit(X, np.where(np.arange(24).reshape(6, 2, 2) == 5, 1e39, Y), progress=False)
    with pytest.raises(DataError, match="X has 1 values beyond float32's range"):
        model.fit(np.where(np.arange(6)[:, None] == 2, -1e39, X), Y, progress=False)
    model.fit(X, Y, progress=False)
    with pytest.raises(DataError, match="X_new has 1 values beyond float32's range"):
        model.predict(np.array([[1e39]]))
