"""Tests of debcr.metrics against analytic cases, scikit-image and real FMD confocal data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.ndimage import gaussian_filter
from skimage.measure import shannon_entropy
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from debcr import metrics
from debcr.errors import DataError
from debcr.metrics import FRCResult, entropy, frc, normalize_pair, nrmse, psnr, rmse, ssim

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIELD = DATA / "fmd_confocal_bpae_b"


@pytest.fixture(scope="module")
def gt() -> np.ndarray:
    image = np.asarray(Image.open(FIELD / "gt" / "19" / "avg50.png"))
    assert image.shape == (512, 512) and image.dtype == np.uint8
    return image


@pytest.fixture(scope="module")
def noisy() -> np.ndarray:
    image = np.asarray(Image.open(FIELD / "raw" / "19" / "HV110_P0500510000.png"))
    assert image.shape == (512, 512) and image.dtype == np.uint8
    return image


def _mm(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return (x - x.min()) / (x.max() - x.min())


# --- identical, noisy, scaled images --------------------------------------------------------


@pytest.mark.parametrize("normalization", metrics.NORMALIZATIONS)
def test_identical_images_score_perfectly(gt, normalization):
    # Decision: PSNR of identical images is +inf (MSE 0), as scikit-image, without warnings.
    assert psnr(gt, gt, normalization=normalization) == math.inf
    assert ssim(gt, gt, normalization=normalization) == pytest.approx(1.0, abs=1e-12)
    assert nrmse(gt, gt, normalization=normalization) == 0.0
    assert rmse(gt, gt, normalization=normalization) == 0.0


def test_psnr_of_known_gaussian_noise(gt):
    rng = np.random.default_rng(0)
    sigma = 6.0
    pred = gt + rng.normal(0.0, sigma, gt.shape)
    # 512² samples estimate the MSE to ±0.3 %, i.e. ±0.012 dB.
    assert psnr(pred, gt, data_range=255) == pytest.approx(20 * math.log10(255 / sigma), abs=0.05)
    # The documented default range of the raw convention is the GT's own max - min.
    span = float(gt.max()) - float(gt.min())
    assert span == 228
    assert psnr(pred, gt) == pytest.approx(20 * math.log10(span / sigma), abs=0.05)
    assert nrmse(pred, gt) == pytest.approx(sigma / span, rel=0.01)
    assert rmse(pred, gt) == pytest.approx(sigma, rel=0.01)


@pytest.mark.parametrize("scale, offset", [(3.7, 12.0), (0.01, -5.0)])
def test_positive_affine_copies(gt, scale, offset):
    pred = scale * gt.astype(np.float64) + offset
    for normalization in ("minmax", "affine"):
        # Rounding of the rescaling leaves ~1e-16 errors, which count as none (inf dB).
        assert psnr(pred, gt, normalization=normalization) == math.inf
        assert ssim(pred, gt, normalization=normalization) == pytest.approx(1.0, abs=1e-9)
        assert nrmse(pred, gt, normalization=normalization) < 1e-10
    assert psnr(pred, gt, normalization="raw") < 20
    assert ssim(pred, gt, normalization="raw") < 0.9
    assert nrmse(pred, gt, normalization="raw") > 0.1


def test_negative_scale_only_affine_is_perfect(gt):
    pred = 255.0 - gt  # an inverted image: the least-squares fit takes alpha = -1
    assert psnr(pred, gt, normalization="affine") == math.inf
    assert psnr(pred, gt, normalization="minmax") < 10


def test_normalize_pair_conventions(gt, noisy):
    p, g = normalize_pair(noisy, gt, "minmax")
    assert (p.min(), p.max(), g.min(), g.max()) == (0.0, 1.0, 0.0, 1.0)
    np.testing.assert_allclose(g, _mm(gt))

    p, g = normalize_pair(noisy, gt, "affine")
    lo, hi = np.percentile(gt, metrics.AFFINE_PERCENTILES)
    np.testing.assert_allclose(g, (gt - lo) / (hi - lo))
    # The fitted prediction is the least-squares affine map: residual orthogonal to 1 and x.
    residual = p - g
    assert abs(residual.mean()) < 1e-12
    assert abs(np.dot(residual.ravel(), noisy.ravel().astype(float))) < 1e-6 * residual.size
    alpha, beta = np.polyfit(noisy.ravel().astype(float), g.ravel(), 1)
    np.testing.assert_allclose(p, alpha * noisy + beta, atol=1e-10)

    p, g = normalize_pair(noisy, gt, "raw")
    np.testing.assert_array_equal(p, noisy)
    np.testing.assert_array_equal(g, gt)
    assert p.dtype == g.dtype == np.float64


def test_normalize_pair_constant_inputs(gt):
    flat = np.full(gt.shape, 7.0)
    p, g = normalize_pair(flat, gt, "minmax")
    assert not p.any()
    p, g = normalize_pair(flat, gt, "affine")
    np.testing.assert_allclose(p, g.mean())  # the best constant fit
    p, g = normalize_pair(gt, flat, "affine")
    assert not g.any()


# --- agreement with scikit-image ---------------------------------------------------------


def test_raw_convention_matches_skimage(gt, noisy):
    assert psnr(noisy, gt, data_range=255) == pytest.approx(
        peak_signal_noise_ratio(gt, noisy, data_range=255), rel=1e-12
    )
    assert ssim(noisy, gt, data_range=228) == pytest.approx(
        structural_similarity(gt.astype(float), noisy.astype(float), data_range=228), rel=1e-12
    )
    expected = normalized_root_mse(gt, noisy, normalization="min-max")
    assert nrmse(noisy, gt) == pytest.approx(expected, rel=1e-12)
    # NRMSE is normalised by the GT range (Eq. 6), so the argument order matters.
    assert nrmse(gt, noisy) == pytest.approx(expected * 228 / 253, rel=1e-12)


def test_minmax_convention_matches_original_tester(gt, noisy):
    a, b = _mm(noisy), _mm(gt)
    assert psnr(noisy, gt, normalization="minmax") == pytest.approx(
        peak_signal_noise_ratio(b, a, data_range=1), rel=1e-12
    )
    assert ssim(noisy, gt, normalization="minmax") == pytest.approx(
        structural_similarity(b, a, data_range=1), rel=1e-12
    )
    assert nrmse(noisy, gt, normalization="minmax") == pytest.approx(
        rmse(noisy, gt, normalization="minmax"), rel=1e-12
    )


def test_real_noisy_frame_scores_sensible(gt, noisy):
    for normalization in metrics.NORMALIZATIONS:
        value = psnr(noisy, gt, normalization=normalization)
        assert 25 < value < 35
        assert 0.6 < ssim(noisy, gt, normalization=normalization) < 0.9
        smoothed = gaussian_filter(noisy.astype(np.float64), 1)
        assert psnr(smoothed, gt, normalization=normalization) > value + 3


def test_stack_ssim_is_mean_over_slices(gt, noisy):
    preds = np.stack([noisy[:256, :256], noisy[256:, 256:]])
    gts = np.stack([gt[:256, :256], gt[256:, 256:]])
    per_slice = [ssim(p, g, data_range=255) for p, g in zip(preds, gts, strict=True)]
    assert ssim(preds, gts, data_range=255) == pytest.approx(np.mean(per_slice), rel=1e-12)
    # PSNR of a stack uses one MSE over all voxels.
    mse = np.mean((preds.astype(float) - gts) ** 2)
    assert psnr(preds, gts, data_range=255) == pytest.approx(10 * np.log10(255**2 / mse))


# --- properties -----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    scale=st.floats(1e-3, 1e3),
    offset=st.floats(-1e4, 1e4),
    normalization=st.sampled_from(["affine", "minmax"]),
)
def test_positive_affine_maps_of_pred_do_not_change_scores(gt, noisy, scale, offset, normalization):
    pred, target = noisy[200:264, 200:264].astype(np.float64), gt[200:264, 200:264]
    mapped = scale * pred + offset
    assert psnr(mapped, target, normalization=normalization) == pytest.approx(
        psnr(pred, target, normalization=normalization), rel=1e-6
    )
    assert ssim(mapped, target, normalization=normalization) == pytest.approx(
        ssim(pred, target, normalization=normalization), rel=1e-6
    )


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), sigma=st.floats(0.1, 50.0))
def test_raw_psnr_and_ssim_are_symmetric(gt, seed, sigma):
    a = gt[100:148, 300:348].astype(np.float64)
    b = a + np.random.default_rng(seed).normal(0.0, sigma, a.shape)
    assert psnr(a, b, data_range=255) == pytest.approx(psnr(b, a, data_range=255), rel=1e-12)
    assert ssim(a, b, data_range=255) == pytest.approx(ssim(b, a, data_range=255), rel=1e-9)


# --- entropy --------------------------------------------------------------------------------


def test_entropy_analytic_cases(gt):
    assert entropy(np.full((32, 32), 9.5)) == 0.0
    ramp = np.tile(np.arange(256, dtype=np.uint8), (64, 1))
    assert entropy(ramp) == pytest.approx(8.0, abs=1e-12)
    assert entropy(ramp.astype(np.float32) / 255 * 3 - 1) == pytest.approx(8.0, abs=1e-12)
    half = np.zeros((16, 16))
    half[:, 8:] = 42.0
    assert entropy(half) == pytest.approx(1.0)
    # Stretching the 3..231 GT to 0..255 keeps its levels distinct, so nothing changes.
    assert entropy(gt) == pytest.approx(shannon_entropy(gt, base=2), rel=1e-12)
    assert entropy(gt) < 5  # sparse nuclei, as the paper's threshold calls it


# --- FRC ------------------------------------------------------------------------------------


def _noisy_pair(image: np.ndarray, sigma: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (image + rng.normal(0, sigma, image.shape), image + rng.normal(0, sigma, image.shape))


def test_frc_of_image_with_itself_is_one(gt):
    result = frc(gt, gt)
    assert isinstance(result, FRCResult)
    np.testing.assert_allclose(result.correlation, 1.0, atol=1e-12)
    assert result.resolution is None  # never below the threshold up to Nyquist
    assert result.frequencies[0] == 0 and result.frequencies[-1] == pytest.approx(0.5)
    assert len(result.frequencies) == len(result.correlation) == 257
    np.testing.assert_allclose(result.threshold_curve, 1 / 7)


def test_frc_of_independent_noise_is_near_zero():
    rng = np.random.default_rng(1)
    result = frc(rng.normal(size=(512, 512)), rng.normal(size=(512, 512)), threshold="half-bit")
    corr = result.correlation
    assert abs(corr[8:].mean()) < 0.01
    assert np.abs(corr[8:]).mean() < 0.06
    assert np.mean(corr[16:] > 1 / 7) < 0.05
    assert np.all(corr[16:] < result.threshold_curve[16:])
    assert result.resolution is not None and result.resolution > 100  # lost at once


def test_frc_resolution_worse_for_blurred_image(gt):
    image = gt.astype(np.float64)
    sharp = frc(*_noisy_pair(image, 10, seed=2)).resolution
    blurred = frc(*_noisy_pair(gaussian_filter(image, 3), 10, seed=3)).resolution
    assert sharp is not None and blurred is not None
    assert 2 < sharp < blurred
    half_bit = frc(*_noisy_pair(image, 10, seed=2), threshold="half-bit").resolution
    assert half_bit >= sharp  # the half-bit curve lies above 1/7 everywhere


def test_single_image_frc(gt):
    image = gt.astype(np.float64)
    sharp = frc(_noisy_pair(image, 10, seed=4)[0])
    blurred = frc(_noisy_pair(gaussian_filter(image, 3), 10, seed=5)[0])
    # Sub-images have half the sampling: rings of the 256² grid reach 1/4 cycle per pixel.
    assert sharp.frequencies[-1] == pytest.approx(0.25)
    assert len(sharp.frequencies) == 129
    assert 4 <= sharp.resolution < blurred.resolution
    # The half-pixel shift of the diagonal split is compensated, so the single-image estimate
    # agrees with the two-image one to within the sampling of its shorter curve.
    two_image = frc(*_noisy_pair(gaussian_filter(image, 3), 10, seed=6)).resolution
    assert 0.8 < blurred.resolution / two_image < 1.4
    # A noise-free smooth image stays correlated up to the sub-image Nyquist frequency.
    smooth = frc(gaussian_filter(image, 3))
    assert smooth.correlation[1:100].min() > 0.9


def test_frc_pixel_size_units(gt):
    a, b = _noisy_pair(gt.astype(np.float64), 10, seed=7)
    pixels = frc(a, b)
    microns = frc(a, b, pixel_size=0.125)
    assert microns.resolution == pytest.approx(pixels.resolution * 0.125)
    np.testing.assert_allclose(microns.frequencies, pixels.frequencies / 0.125)
    np.testing.assert_array_equal(microns.correlation, pixels.correlation)


def test_frcthreshold_curves():
    counts = np.array([1, 10, 100, 1e4, 1e8])
    curve = metrics.threshold_curve("half-bit", counts)
    assert np.all(np.diff(curve) < 0)
    assert curve[0] == pytest.approx(1.0, abs=1e-3)
    assert curve[-1] == pytest.approx(0.2071 / 1.2071, abs=1e-3)
    np.testing.assert_allclose(metrics.threshold_curve(0.5, counts), 0.5)


def test_frc_crossing_is_interpolated():
    freqs = np.array([0.0, 0.1, 0.2, 0.3])
    corr = np.array([1.0, 0.5, 0.3, 0.0])
    threshold = np.full(4, 0.2)
    # Between 0.2 (0.3) and 0.3 (0.0) the curve meets 0.2 a third of the way: f = 0.2333.
    assert metrics.frc_crossing(freqs, corr, threshold) == pytest.approx(0.7 / 3)
    assert metrics.frc_crossing(freqs, np.ones(4), threshold) is None


# --- errors ---------------------------------------------------------------------------------


def test_shape_mismatch_names_both_shapes(gt):
    with pytest.raises(DataError, match=r"\(511, 512\).*\(512, 512\)"):
        psnr(gt[:-1], gt)
    with pytest.raises(DataError, match=r"\(512, 512\).*\(512, 511\)"):
        frc(gt, gt[:, :-1])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda g: psnr(g, g, normalization="zscore"), "unknown normalization 'zscore'"),
        (lambda g: psnr(g, g, normalization="minmax", data_range=255), "fixes the range"),
        (lambda g: psnr(g, g, data_range=-1), "positive finite"),
        (lambda g: ssim(np.zeros((8, 8)), np.zeros((8, 8))), "constant"),
        (lambda g: psnr(np.where(g > 200, np.nan, g), g), "NaN or infinite"),
        (lambda g: psnr(g[None, None], g[None, None]), "4-D"),
        (lambda g: ssim(g[:5, :5], g[:5, :5], data_range=1), "7×7"),
        (lambda g: frc(g, threshold="3-sigma"), "unknown FRC threshold"),
        (lambda g: frc(np.ones((64, 64))), "constant"),
        (lambda g: frc(g[:6, :6], g[:6, :6]), "too small"),
        (lambda g: frc(np.stack([g, g])), "3-D"),
        (lambda g: frc(g, pixel_size=0), "pixel_size"),
        (lambda g: entropy(g.astype(complex)), "real-valued"),
    ],
)
def test_errors_say_what_is_wrong(gt, call, message):
    with pytest.raises(DataError, match=message):
        call(gt)


def test_nrmse_of_constant_gt_is_nan(gt, caplog):
    assert math.isnan(nrmse(gt, np.full(gt.shape, 3.0)))
    assert "undefined" in caplog.text
