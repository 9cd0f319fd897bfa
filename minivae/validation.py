"""Checks of user data at the API edge, shared by every model, loader and figure.

Each check raises :class:`minivae.errors.DataError` with a message that names the array,
what is wrong with it (a count and the first location), and what to do about it.
"""

from __future__ import annotations

import math
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


def is_positive_real(value) -> bool:
    """True for a finite real number > 0 (not a bool)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value) and float(value) > 0)


LIKELIHOODS = ("bernoulli", "gaussian")


def check_positive_int(value, name: str) -> int:
    """``value`` as an int, or ValueError naming ``name`` unless it is an integer >= 1."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return int(value)


def check_beta(beta) -> None:
    """ValueError unless the KL weight ``beta`` is a finite real number >= 0."""
    if (not isinstance(beta, numbers.Real) or isinstance(beta, bool)
            or not math.isfinite(beta) or beta < 0):
        raise ValueError(f"beta={beta!r} must be a finite number >= 0")


def check_choice(value, name: str, choices: tuple) -> None:
    """ValueError unless ``value`` is one of ``choices``."""
    if not (isinstance(value, str) and value in choices):
        raise ValueError(f"{name}={value!r} is not one of {choices}")


def check_schedule(epochs, lr, patience, validation_every) -> None:
    """ValueError naming the first malformed argument of a three-phase training schedule:
    ``epochs`` (pre-training, joint, fine-tuning), ``lr``, ``patience`` (None or a positive
    int) and ``validation_every`` (an int of at least 2)."""
    if not (isinstance(epochs, (tuple, list)) and len(epochs) == 3
            and all(is_int(e) and e >= 0 for e in epochs)):
        raise ValueError(
            f"epochs={epochs!r} must be three non-negative integers (pre-training, joint, "
            "fine-tuning), e.g. (300, 600, 150)"
        )
    if not is_positive_real(lr):
        raise ValueError(f"lr={lr!r} must be a positive number, e.g. 1e-3")
    if patience is not None:
        check_positive_int(patience, "patience")
    check_positive_int(validation_every, "validation_every")
    if validation_every < 2:
        raise ValueError(f"validation_every={validation_every!r} must be at least 2")


def check_network(latent_dim, hidden, likelihood, seed) -> tuple:
    """The autoencoder arguments every model shares, checked; returns ``hidden`` as a tuple.

    Raises ValueError naming the argument, its value and what it must be. (The activation
    is checked where the networks are built, :func:`minivae.nn.make_activation`.)
    """
    check_positive_int(latent_dim, "latent_dim")
    hidden = (hidden,) if is_int(hidden) else tuple(hidden)
    if not all(is_int(width) and width >= 1 for width in hidden):
        raise ValueError(f"hidden={hidden!r} must be a sequence of positive integers")
    check_choice(likelihood, "likelihood", LIKELIHOODS)
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    return tuple(int(width) for width in hidden)


# ---- arrays at a model's edge ---------------------------------------------------------


def check_data(X, n_columns: int, name: str = "X", unit_interval: bool = False,
               dtype=None) -> np.ndarray:
    """Validate a 2-D numeric data matrix at the API edge; return it as a host array.

    Parameters
    ----------
    X : array-like of shape (n, n_columns)
    n_columns : int
    name : str
        How the array is called in error messages.
    unit_interval : bool
        Also require every value in [0, 1] (Bernoulli data).
    dtype : numpy dtype or None
        The dtype ``X`` will be cast to; its values must fit in it (a float64 1e39 would
        become inf in float32). None skips that check.

    Raises
    ------
    DataError
        Non-numeric dtype, wrong number of dimensions or columns, no rows, NaN or
        infinite values, values beyond ``dtype``'s range, or (``unit_interval``) values
        outside [0, 1]. The message names the count, the first location and the fix.
    """
    X = numeric_host_array(X, name)
    if X.ndim != 2:
        hint = f"; for one example use {name}.reshape(1, -1)" if X.ndim == 1 else ""
        raise DataError(
            f"{name} must be 2-D (n_examples, {n_columns}); got shape {X.shape}{hint}"
        )
    if X.shape[1] != n_columns:
        raise DataError(
            f"{name} has {X.shape[1]} columns but the model expects {n_columns}; "
            f"pass data with {n_columns} features per row"
        )
    if X.shape[0] == 0:
        raise DataError(f"{name} has no rows; pass at least one example")
    check_finite(X, name)
    if dtype is not None:
        check_representable(X, dtype, name)
    if unit_interval:
        outside = (X < 0) | (X > 1)
        if outside.any():
            row, col = np.argwhere(outside)[0]
            raise DataError(
                f"{name} has {int(outside.sum())} values outside [0, 1] (first at row {row}, "
                f"column {col}: {X[row, col].item()!r}), which a Bernoulli likelihood cannot "
                'model; rescale the data to [0, 1] or use likelihood="gaussian"'
            )
    return X


def check_inputs(X, name: str = "X", n_features: int | None = None, dtype=None) -> np.ndarray:
    """Inputs ``X`` as a finite (n, p) float64 host array (representable in ``dtype``)."""
    X = numeric_host_array(X, name)
    if X.ndim == 1:
        raise DataError(
            f"{name} must be 2-D (n, p); got shape {X.shape}; for one input feature use "
            f"{name}.reshape(-1, 1)"
        )
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"{name} must be 2-D (n, p) with n, p >= 1; got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise DataError(
            f"{name} has {X.shape[1]} columns but the model expects {n_features}; pass rows "
            f"of width {n_features}"
        )
    check_finite(X, name)
    if dtype is not None:
        check_representable(X, dtype, name)
    return X.astype(np.float64, copy=False)


def check_images(Y, likelihood: str, image_shape=None, name: str = "Y",
                  dtype=None) -> np.ndarray:
    """Images ``Y`` (n, H, W) or (n, D) as a finite host array (representable in
    ``dtype``); [0, 1] for Bernoulli."""
    Y = numeric_host_array(Y, name)
    if Y.ndim < 2 or Y.shape[0] == 0 or Y.size == 0:
        raise DataError(
            f"{name} must hold one image per row, shaped (n, H, W) or (n, D); got shape {Y.shape}"
        )
    if image_shape is not None and math.prod(Y.shape[1:]) != math.prod(image_shape):
        raise DataError(
            f"{name} has images of shape {Y.shape[1:]} ({math.prod(Y.shape[1:])} pixels) but "
            f"the model was fitted on images of shape {tuple(image_shape)}; pass images of "
            "that size"
        )
    check_finite(Y, name)
    if dtype is not None:
        check_representable(Y, dtype, name)
    if likelihood == "bernoulli":
        outside = (Y < 0) | (Y > 1)
        if outside.any():
            first = tuple(int(i) for i in np.argwhere(outside)[0])
            raise DataError(
                f"{name} has {int(outside.sum())} values outside [0, 1] (first at index "
                f"{first}: {Y[first]!r}), which a Bernoulli likelihood cannot model; rescale "
                'the images to [0, 1] or use likelihood="gaussian"'
            )
    return Y


def check_groups(groups, n: int, name: str = "groups") -> np.ndarray:
    groups = host_array(groups)
    if groups.dtype == object or groups.dtype.kind not in "biuU":
        raise DataError(
            f"{name} has dtype {groups.dtype}; pass integer or string sequence ids"
        )
    if groups.ndim == 0:
        groups = np.full(n, groups[()])
    if groups.ndim != 1 or groups.shape[0] != n:
        raise DataError(
            f"{name} has shape {groups.shape} but there are {n} examples; pass one sequence "
            "id per example (or None for one sequence)"
        )
    return groups


def float_host_array(values, name: str) -> np.ndarray:
    """``values`` as a float64 host array; None, sparse, complex and non-numbers are refused.

    An object array of numbers is converted. An object array holding something that is not
    a number raises TypeError (the entry's type is wrong, not its value); the other refusals
    are :class:`DataError`.
    """
    if values is None:
        raise DataError(f"{name} is None; pass an array of numbers")
    from scipy import sparse

    if sparse.issparse(values):
        raise DataError(
            f"{name} is a sparse {values.format} matrix of shape {values.shape}; sparse input "
            f"is not supported: convert it with {name}.toarray()"
        )
    values = host_array(values)
    if values.dtype.kind == "c":
        raise DataError(
            f"{name} has dtype {values.dtype}: Complex data not supported; pass real numbers "
            f"(e.g. {name}.real)"
        )
    if values.dtype == object:
        try:
            return values.astype(np.float64)
        except (TypeError, ValueError) as exc:
            error = TypeError if isinstance(exc, TypeError) else DataError
            raise error(f"{name} has dtype object with an entry that is not a number ({exc}); "
                        "pass an array of numbers") from exc
    return numeric_host_array(values, name).astype(np.float64, copy=False)


def _reshape_hint(name: str, size: int, n_features: int | None) -> str:
    """How to turn a 1-D array of ``size`` values into rows of ``n_features`` columns."""
    if n_features is None:
        return (f"{name}.reshape(-1, 1) if it holds one feature, or {name}.reshape(1, -1) if "
                "it is one point")
    if n_features == 1:
        return f"{name}.reshape(-1, 1) for {size} points of one feature"
    if size == n_features:
        return f"{name}.reshape(1, -1) for one point of {n_features} features"
    return f"rows of {n_features} features, as the model was fitted on"


def check_samples(X, name: str = "X", n_features: int | None = None,
                  estimator: str = "the model") -> np.ndarray:
    """``X`` as a finite (n, d) float64 host array of at least one row and one column.

    ``n_features``: the width a fitted ``estimator`` expects (None while fitting). The
    messages follow scikit-learn's wording where its estimator checks look for it
    ("Reshape your data", "0 feature(s)", "X has 2 features, but ... is expecting 3").
    """
    X = float_host_array(X, name)
    if X.ndim != 2:
        hint = f". Reshape your data: {_reshape_hint(name, X.size, n_features)}" if X.ndim == 1 else ""
        raise DataError(f"{name} must be 2-D (one row per point), got shape {X.shape}{hint}")
    if X.shape[0] == 0:
        raise DataError(f"{name} has zero rows (shape {X.shape}); give at least one point")
    if X.shape[1] == 0:
        raise DataError(f"{name} has 0 feature(s) (shape={X.shape}) while a minimum of 1 is "
                        "required; give at least one feature")
    if n_features is not None and X.shape[1] != n_features:
        raise DataError(
            f"{name} has {X.shape[1]} features, but {estimator} is expecting {n_features} "
            f"features as input; give points with the {n_features} columns it was fitted on"
        )
    check_finite(X, name)
    return X


def check_sum_of_squares(values: np.ndarray, dtype, name: str, fix: str) -> None:
    """DataError if a sum of squares of the finite host array ``values`` can overflow ``dtype``.

    A Gaussian likelihood holds ``sum(values**2)`` (times a precision): beyond
    ``sqrt(max / n)`` for ``n`` rows it is infinite, and every result derived from it is
    NaN. ``fix`` says what to do, e.g. "rescale y or use normalize_y=True".
    """
    dtype = np.dtype(dtype)
    if values.size == 0:
        return
    limit = float(np.sqrt(np.finfo(dtype).max / values.shape[0]))
    largest = float(np.max(np.abs(values)))
    if largest > limit:
        raise DataError(
            f"{name} reaches magnitude {largest:.3g}, beyond {limit:.3g} (sqrt of {dtype.name}'s "
            f"largest value over {values.shape[0]} rows), where its sum of squares overflows "
            f"{dtype.name}; {fix}"
        )
