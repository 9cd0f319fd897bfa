"""Image-quality metrics: mean squared error, PSNR and SSIM, per image.

Each metric takes ``truth`` and ``pred`` of one shape: a single image (H, W), which gives
a float, or a batch (n, H, W), which gives a float64 array (n,) of per-image values. A
batch of flattened images (n, H * W) is accepted with ``image_shape=(H, W)``.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from .errors import DataError

SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_SIGMA = 1.5


def _as_image_batch(truth, pred, image_shape=None):
    """Validate a pair of images or batches; return float64 (n, H, W) arrays and whether single."""
    truth = np.asarray(truth, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if truth.shape != pred.shape:
        raise DataError(f"truth has shape {truth.shape} but pred has {pred.shape}; "
                        "compare images of one shape")
    if image_shape is not None:
        height, width = (int(s) for s in image_shape)
        if truth.ndim != 2 or truth.shape[1] != height * width:
            raise DataError(f"image_shape={tuple(image_shape)} needs flattened images (n, {height * width}); "
                            f"got {truth.shape}")
        truth = truth.reshape(-1, height, width)
        pred = pred.reshape(-1, height, width)
    if truth.ndim not in (2, 3):
        raise DataError(f"images have shape {truth.shape}; give one image (H, W), a batch (n, H, W), "
                        "or flattened rows (n, H*W) with image_shape=(H, W)")
    if truth.size == 0:
        raise DataError(f"images have shape {truth.shape}, which holds no pixels")
    for label, values in (("truth", truth), ("pred", pred)):
        bad = ~np.isfinite(values)
        if bad.any():
            raise DataError(f"{label} has {int(bad.sum())} NaN or infinite pixels; "
                            "metrics need finite images")
    single = truth.ndim == 2 and image_shape is None
    if single:
        return truth[None], pred[None], True
    return truth, pred, False


def _resolve_data_range(truth, pred, data_range):
    """Check ``data_range`` against the images; return it as a float (1.0 when None).

    Integer images need an explicit range (255 for uint8); the reference image's span,
    max - min, must not exceed it. The prediction is not checked: reconstructions may
    overshoot the range slightly (an unclipped Gaussian decoder mean).
    """
    dtypes = {np.asarray(truth).dtype, np.asarray(pred).dtype}
    if data_range is None:
        integer = sorted(str(d) for d in dtypes if np.issubdtype(d, np.integer))
        if integer:
            raise DataError(f"images of integer type {', '.join(integer)} need an explicit "
                            "data_range; pass data_range=255 for uint8 images, or scale them "
                            "to [0, 1] first")
        data_range = 1.0
    if not data_range > 0:
        raise ValueError(f"data_range={data_range!r} must be positive (1.0 for images in [0, 1])")
    return float(data_range)


def _check_truth_within_range(truth, data_range):
    """Raise DataError if the reference images span more than ``data_range``."""
    span = float(truth.max() - truth.min())
    if span > data_range:
        raise DataError(f"truth spans {span:g} (values in [{truth.min():g}, {truth.max():g}]), more "
                        f"than data_range={data_range:g}; pass the images' real range "
                        "(data_range=255 for 0..255 images) or scale them to [0, 1]")


def _result(values, single):
    return float(values[0]) if single else values


def mse(truth: ArrayLike, pred: ArrayLike,
        image_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Mean squared error per image.

    Parameters
    ----------
    truth, pred : array_like, shape (H, W) or (n, H, W)
        Reference and reconstructed images; or (n, H * W) with ``image_shape``.
    image_shape : tuple of int, optional
        (H, W) of flattened images.

    Returns
    -------
    float or ndarray of float64, shape (n,)

    Notes
    -----
    .. math:: \\mathrm{MSE} = \\frac{1}{HW} \\sum_{i,j} (x_{ij} - y_{ij})^2
    """
    truth, pred, single = _as_image_batch(truth, pred, image_shape)
    return _result(np.mean((truth - pred) ** 2, axis=(1, 2)), single)


def psnr(truth: ArrayLike, pred: ArrayLike, data_range: float | None = None,
         image_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Peak signal-to-noise ratio per image, in decibels.

    Parameters
    ----------
    truth, pred : array_like, shape (H, W) or (n, H, W)
        Reference and reconstructed images; or (n, H * W) with ``image_shape``.
    data_range : float, optional
        The span of possible pixel values: 1 for images in [0, 1] (the default for float
        images), 255 for uint8. Required for integer-typed images; the span of ``truth``
        must not exceed it (DataError otherwise).
    image_shape : tuple of int, optional
        (H, W) of flattened images.

    Returns
    -------
    float or ndarray of float64, shape (n,)
        ``inf`` for an image identical to its reference.

    Notes
    -----
    .. math:: \\mathrm{PSNR} = 10 \\log_{10} \\frac{R^2}{\\mathrm{MSE}}

    When MSE = 0 the ratio is unbounded; the value is set to ``inf`` explicitly (no
    division-by-zero warning), as scikit-image does.
    """
    data_range = _resolve_data_range(truth, pred, data_range)
    truth, pred, single = _as_image_batch(truth, pred, image_shape)
    _check_truth_within_range(truth, data_range)
    errors = np.mean((truth - pred) ** 2, axis=(1, 2))
    values = np.full(errors.shape, np.inf)
    nonzero = errors > 0
    values[nonzero] = 10.0 * np.log10(data_range**2 / errors[nonzero])
    return _result(values, single)


def _gaussian_window(size, sigma):
    """Normalised 1-D Gaussian weights of odd length ``size``."""
    offsets = np.arange(size) - (size - 1) / 2.0
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def _filter_valid(images, weights):
    """Separable 'valid' weighted window sums of (n, H, W) images: (n, H - k + 1, W - k + 1)."""
    k = weights.size
    rows = np.lib.stride_tricks.sliding_window_view(images, k, axis=2) @ weights
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=1) @ weights


def ssim(truth: ArrayLike, pred: ArrayLike, data_range: float | None = None,
         image_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Structural similarity index per image (Wang et al., 2004).

    Parameters
    ----------
    truth, pred : array_like, shape (H, W) or (n, H, W)
        Reference and reconstructed images, both at least 7 x 7; or (n, H * W) with
        ``image_shape``.
    data_range : float, optional
        The span of possible pixel values L: default 1 for float images; required for
        integer-typed images (255 for uint8); the span of ``truth`` must not exceed it.
    image_shape : tuple of int, optional
        (H, W) of flattened images.

    Returns
    -------
    float or ndarray of float64, shape (n,)
        Mean SSIM over the valid window positions; 1 for identical images. Symmetric in
        its two arguments.

    Notes
    -----
    With Gaussian-weighted local means :math:`\\mu`, variances :math:`\\sigma^2` and
    covariance :math:`\\sigma_{xy}` (weights summing to one; population, not sample,
    moments),

    .. math:: \\mathrm{SSIM}(x, y) = \\frac{(2 \\mu_x \\mu_y + C_1)(2 \\sigma_{xy} + C_2)}
              {(\\mu_x^2 + \\mu_y^2 + C_1)(\\sigma_x^2 + \\sigma_y^2 + C_2)},
              \\quad C_1 = (K_1 L)^2,\\; C_2 = (K_2 L)^2,

    with :math:`K_1 = 0.01`, :math:`K_2 = 0.03`. The window is an 11 x 11 Gaussian with
    :math:`\\sigma = 1.5`, applied separably; for images smaller than 11 pixels on a side
    it is 7 x 7 with the same :math:`\\sigma` (truncated at 2 sigma). Only positions where
    the window lies fully inside the image are averaged. With the 11 x 11 window this
    equals scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``.

    References
    ----------
    Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from
    error visibility to structural similarity", IEEE Trans. Image Processing 13(4), 2004.
    """
    data_range = _resolve_data_range(truth, pred, data_range)
    truth, pred, single = _as_image_batch(truth, pred, image_shape)
    _check_truth_within_range(truth, data_range)
    smallest = min(truth.shape[1:])
    if smallest < 7:
        raise DataError(f"images of shape {truth.shape[1:]} are too small for SSIM; "
                        "it needs at least 7 x 7 pixels")
    window = _gaussian_window(11 if smallest >= 11 else 7, SSIM_SIGMA)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu_x = _filter_valid(truth, window)
    mu_y = _filter_valid(pred, window)
    var_x = _filter_valid(truth * truth, window) - mu_x * mu_x
    var_y = _filter_valid(pred * pred, window) - mu_y * mu_y
    cov_xy = _filter_valid(truth * pred, window) - mu_x * mu_y
    index_map = ((2.0 * mu_x * mu_y + c1) * (2.0 * cov_xy + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    )
    return _result(index_map.mean(axis=(1, 2)), single)


def summarize(truth: ArrayLike, pred: ArrayLike, data_range: float | None = None,
              image_shape: tuple[int, int] | None = None) -> dict[str, float]:
    """Mean MSE, PSNR and SSIM over a batch of images.

    Parameters
    ----------
    truth, pred : array_like, shape (n, H, W) or (H, W)
        Reference and reconstructed images; or (n, H * W) with ``image_shape``.
    data_range : float, optional
        The span of possible pixel values, as in :func:`psnr`.
    image_shape : tuple of int, optional
        (H, W) of flattened images.

    Returns
    -------
    dict
        ``{"mse": float, "psnr": float, "ssim": float}``, each the mean of the per-image
        values. The mean PSNR is ``inf`` if any prediction is exact.
    """
    return {
        "mse": float(np.mean(mse(truth, pred, image_shape=image_shape))),
        "psnr": float(np.mean(psnr(truth, pred, data_range, image_shape=image_shape))),
        "ssim": float(np.mean(ssim(truth, pred, data_range, image_shape=image_shape))),
    }
