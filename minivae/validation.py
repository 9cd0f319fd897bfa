"""Checks of user data at the API edge, shared by every model, loader and figure.

Each check raises :class:`minivae.errors.DataError` with a message that names the array,
what is wrong with it (a count and the first location), and what to do about it.
"""

from __future__ import annotations

import numbers

import numpy as np

from .errors import DataError


def is_int(value) -> bool:
    """True for Python and NumPy integers, False for bools (``True`` is not a layer width)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def derived_seed(seed: int, stream: int) -> int:
    """A 32-bit seed for one named random stream of a model seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def host_array(values) -> np.ndarray:
    """``values`` as a NumPy array: CuPy arrays are copied to the host, NumPy arrays are not."""
    if hasattr(values, "__cuda_array_interface__") and not isinstance(values, np.ndarray):
        return values.get()
    return np.asarray(values)


def numeric_host_array(values, name: str) -> np.ndarray:
    """:func:`host_array`, refusing anything that is not bool, integer or floating point."""
    values = host_array(values)
    if values.dtype.kind not in "biuf":
        raise DataError(
            f"{name} has dtype {values.dtype}, which is not numeric; pass an array of numbers "
            f"(e.g. {name}.astype(np.float64))"
        )
    return values


def _first_location(bad: np.ndarray) -> str:
    """'row r' (or 'row r, column c' for a matrix) of the first True entry of ``bad``."""
    if bad.ndim == 2:
        row, col = np.argwhere(bad)[0]
        return f"row {row}, column {col}"
    if bad.ndim == 0:
        return "row 0"
    return f"row {int(np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))[0])}"


def check_finite(values: np.ndarray, name: str) -> None:
    """DataError if the host array ``values`` holds NaN or infinite entries.

    The message gives how many there are and where the first one is, e.g.
    "X has 3 NaN values (first at row 17, column 4); remove or impute them".
    """
    if values.dtype.kind not in "fc":
        return
    for what, bad, fix in (("NaN", np.isnan(values), "remove or impute them"),
                           ("infinite", np.isinf(values), "remove them or clip to a finite range")):
        count = int(bad.sum())
        if count:
            raise DataError(f"{name} has {count} {what} values (first at {_first_location(bad)}); "
                            f"{fix}")


def check_representable(values: np.ndarray, dtype, name: str) -> None:
    """DataError if the finite host array ``values`` holds magnitudes beyond ``dtype``'s range.

    Call it after :func:`check_finite`, on data about to be cast to the model's
    ``dtype``: a float64 value above float32's largest finite value (3.4e+38) would
    become infinite in the cast. Integer and float sources narrower than ``dtype`` always
    fit, and are not scanned.

    The message gives how many values are too large, the largest magnitude and where the
    first one is, e.g. "X has 2 values beyond float32's range (largest magnitude 1e+39,
    first at row 0, column 0; float32 holds up to 3.4e+38); rescale the data or use
    dtype='float64'".
    """
    dtype = np.dtype(dtype)
    if values.dtype.kind != "f" or values.size == 0:
        return
    limit = float(np.finfo(dtype).max)
    if float(np.finfo(values.dtype).max) <= limit:
        return
    largest = max(float(np.max(values)), -float(np.min(values)))
    if largest <= limit:
        return
    too_large = np.abs(values) > limit
    wider = " or use dtype='float64'" if dtype.itemsize < 8 else ""
    raise DataError(
        f"{name} has {int(too_large.sum())} values beyond {dtype.name}'s range (largest "
        f"magnitude {largest:.3g}, first at {_first_location(too_large)}; {dtype.name} holds "
        f"up to {limit:.2g}); rescale the data{wider}"
    )
