"""Tests of minivae.metrics: MSE, PSNR and SSIM per image."""

import numpy as np
import pytest

from minivae.errors import DataError
from minivae.metrics import mse, psnr, ssim, summarize


@pytest.fixture
def batch(rng):
    truth = rng.random((4, 16, 13))
    noisy = np.clip(truth + 0.1 * rng.standard_normal(truth.shape), 0.0, 1.0)
    return truth, noisy


def test_mse_and_psnr_match_their_definitions(batch):
    truth, pred = batch
    errors = ((truth - pred) ** 2).mean(axis=(1, 2))
    np.testing.assert_allclose(mse(truth, pred), errors, rtol=1e-12)
    np.testing.assert_allclose(psnr(truth, pred), 10 * np.log10(1.0 / errors), rtol=1e-12)
    np.testing.assert_allclose(psnr(255 * truth, 255 * pred, data_range=255.0),
                               psnr(truth, pred), rtol=1e-12)
    single = mse(truth[0], pred[0])
    assert isinstance(single, float) and single == pytest.approx(errors[0], rel=1e-12)


def test_psnr_of_identical_images_is_inf_without_warning(batch):
    truth, pred = batch
    pred = pred.copy()
    pred[1] = truth[1]
    with np.errstate(all="raise"):
        values = psnr(truth, pred)
    assert values[1] == np.inf and np.isfinite(values[[0, 2, 3]]).all()
    assert psnr(truth[0], truth[0]) == np.inf


def test_ssim_identity_symmetry_and_noise_ordering(rng):
    truth = rng.random((3, 20, 20))
    np.testing.assert_allclose(ssim(truth, truth), 1.0, rtol=1e-12)
    previous = np.ones(3)
    for level in (0.05, 0.1, 0.2, 0.4):
        noisy = np.clip(truth + level * rng.standard_normal(truth.shape), 0, 1)
        values = ssim(truth, noisy)
        np.testing.assert_allclose(values, ssim(noisy, truth), rtol=1e-12)
        assert (values < previous).all()
        previous = values


def test_ssim_of_constant_images_by_hand():
    # Constant images: every local variance and covariance is 0, so the structure term is
    # C2 / C2 = 1 and SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * L)^2.
    a, b = 0.2, 0.5
    expected = (2 * a * b + 1e-4) / (a * a + b * b + 1e-4)
    assert ssim(np.full((12, 12), a), np.full((12, 12), b)) == pytest.approx(expected, rel=1e-12)
    assert ssim(np.full((8, 9), a), np.full((8, 9), b)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("shape", [(11, 11), (16, 13), (32, 32)])
def test_ssim_matches_scikit_image(rng, shape):
    skimage_metrics = pytest.importorskip("skimage.metrics")
    truth = rng.random(shape)
    pred = np.clip(truth + 0.15 * rng.standard_normal(shape), 0, 1)
    theirs = skimage_metrics.structural_similarity(
        truth, pred, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
    )
    assert ssim(truth, pred) == pytest.approx(theirs, rel=1e-10)


def test_flat_rows_with_image_shape(batch):
    truth, pred = batch
    flat = summarize(truth.reshape(4, -1), pred.reshape(4, -1), image_shape=(16, 13))
    assert flat == summarize(truth, pred)
    assert set(flat) == {"mse", "psnr", "ssim"}
    assert flat["ssim"] == pytest.approx(np.mean(ssim(truth, pred)), rel=1e-12)


def test_bad_inputs_give_clear_errors(batch):
    truth, pred = batch
    with pytest.raises(DataError, match="shape"):
        mse(truth, pred[:, :-1])
    with pytest.raises(DataError, match="NaN"):
        psnr(truth, np.where(truth > 0.99, np.nan, pred))
    with pytest.raises(DataError, match="too small"):
        ssim(truth[:, :6, :6], pred[:, :6, :6])
    with pytest.raises(DataError, match="image_shape"):
        mse(truth.reshape(4, -1), pred.reshape(4, -1), image_shape=(5, 5))
    with pytest.raises(ValueError, match="data_range"):
        ssim(truth, pred, data_range=0.0)


def test_integer_images_need_an_explicit_data_range(rng):
    skimage_metrics = pytest.importorskip("skimage.metrics")
    truth = (rng.random((16, 16)) * 255).astype(np.uint8)
    pred = np.clip(truth.astype(int) + rng.integers(-5, 6, truth.shape), 0, 255).astype(np.uint8)
    for metric in (psnr, ssim, summarize):
        with pytest.raises(DataError, match="integer type uint8 need an explicit data_range; pass data_range=255"):
            metric(truth, pred)
    theirs = skimage_metrics.peak_signal_noise_ratio(truth, pred)
    assert psnr(truth, pred, data_range=255) == pytest.approx(theirs, rel=1e-12)
    assert psnr(truth, pred, data_range=255) == pytest.approx(psnr(truth / 255, pred / 255), rel=1e-12)
    assert ssim(truth, pred, data_range=255) == pytest.approx(ssim(truth / 255, pred / 255), rel=1e-12)


def test_truth_spanning_more_than_data_range_is_refused(batch):
    truth, pred = batch
    with pytest.raises(DataError, match=r"truth spans .* more than data_range=1; pass the images' real range"):
        psnr(255 * truth, 255 * pred)
    with pytest.raises(DataError, match="more than data_range=1"):
        ssim(255 * truth, 255 * pred, data_range=1.0)
    # A prediction overshooting [0, 1] (an unclipped decoder mean) is still scored.
    assert np.isfinite(psnr(truth, pred + 0.05)).all()
