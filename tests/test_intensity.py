"""Intensity units of restored images: the default calibration invents no intensities.

Criteria (issue "Trustworthy outputs", item 3), on images with dark backgrounds restored with
``units="calibrated"`` (the default): the dark level (median of the darkest 5 %) of the result
stays within 2 % of the input's (p99.9 − p0.1) range of the input's, and no value falls below
the input's minimum by more than the input's noise level. The old least-squares mapping fails
every one of the real-data checks below (see benchmarks/bench_calibration.py).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile
from skimage.metrics import peak_signal_noise_ratio

from conftest import DATA, fmd_frame, fmd_gt
from debcr.data.intensity import (
    CalibrationSums,
    IntensityMap,
    block_means,
    calibrate,
    dark_level,
    difference_sample,
    noise_level,
)
from debcr.model import init, predict


def sparse_spots(size: int = 256, spots: int = 12, seed: int = 0) -> np.ndarray:
    """A few Gaussian spots on a zero background with Poisson noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    clean = np.zeros((size, size))
    for _ in range(spots):
        cy, cx = rng.uniform(10, size - 10, 2)
        s, a = rng.uniform(1.5, 3.5), rng.uniform(50, 400)
        clean += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return rng.poisson(clean).astype(np.float32)


def assert_invents_nothing(restored: np.ndarray, image: np.ndarray) -> None:
    image = np.asarray(image, dtype=np.float64)
    span = float(np.subtract(*np.percentile(image, [99.9, 0.1])))
    sigma = noise_level(image)
    offset = (dark_level(restored) - dark_level(image)) / span
    below = float(restored.min() - image.min())
    assert abs(offset) <= 0.02, f"dark level moved by {100 * offset:+.2f} % of the range"
    assert below >= -sigma, f"minimum {below:+.1f} below the input's (noise {sigma:.2f})"
    # the default map's own bounds (docs/concepts.md): the dark level of 8×8 block means within
    # 0.5 % of the range, the mean within 1 %, nothing below the input's minimum
    blocks = (dark_level(block_means(restored)) - dark_level(block_means(image))) / span
    assert abs(blocks) <= 0.005, f"block dark level moved by {100 * blocks:+.2f} % of the range"
    assert restored.mean() == pytest.approx(image.mean(), rel=0.01)
    assert restored.min() >= image.min()


@pytest.fixture(scope="module")
def volume_denoiser():
    return init("3D_denoising")


# ----------------------------------------------------------------------------- helpers


def test_noise_level_is_the_standard_deviation_of_the_noise() -> None:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:256, :256]
    smooth = 100 + 50 * np.sin(xx / 20) * np.cos(yy / 30)
    assert noise_level(smooth + rng.normal(0, 3, smooth.shape)) == pytest.approx(3, rel=0.05)
    stack = np.stack([smooth] * 3) + rng.normal(0, 5, (3, 256, 256))
    assert noise_level(stack) == pytest.approx(5, rel=0.05)
    assert noise_level(np.zeros((32, 32))) == 0.0
    assert noise_level(np.ones((4, 1))) == 0.0


def test_dark_level_is_the_median_of_the_darkest_five_percent() -> None:
    values = np.arange(1000, dtype=float)
    assert dark_level(values) == pytest.approx(np.median(values[:50]), abs=0.5)


def test_difference_sample_strides_rows_and_columns() -> None:
    a = np.arange(100.0).reshape(10, 10) ** 2
    d = difference_sample(a, 3)
    assert d.shape == (4, 3)
    assert d[1, 1] == a[3, 4] - a[3, 3]


def test_mapping_holds_the_dark_level_and_floors_at_the_input_minimum() -> None:
    rng = np.random.default_rng(2)
    clean = np.zeros((128, 128))
    clean[40:80, 40:80] = 1.0
    x = clean + rng.normal(0, 0.01, clean.shape)
    y = np.sqrt(clean) * 0.5 + 0.3  # not affine in x: a least-squares fit lifts the background
    y[60, 20] = -5.0  # undershoot
    sums = (x.size, y.sum(), (y * y).sum(), (x * y).sum(), x.sum(), (x * x).sum())
    m = calibrate(sums, x, block_means(x), block_means(y), float(x.min()))
    out = m.apply(y)
    assert out.min() == pytest.approx(x.min())
    # held to the background (noise averaged out: 0 here), not to the noise-darkened pixels
    span = float(np.subtract(*np.percentile(x, [99.9, 0.1])))
    held = dark_level(block_means(out)) - dark_level(block_means(x))
    assert abs(held) <= 0.004 * span + 1e-9
    assert abs(dark_level(out)) < 0.005


def test_calibration_sums_keep_a_bounded_sample() -> None:
    rng = np.random.default_rng(3)
    x = rng.gamma(2.0, 1.0, (512, 512))
    y = 0.5 * x + 0.1
    small = CalibrationSums(max_samples=5000)
    for r in range(0, 512, 64):
        for c in range(0, 512, 128):
            small.add(x[r : r + 64, c : c + 128], y[r : r + 64, c : c + 128])
    assert small.step > 1 and small._count <= 2 * small.max_samples
    whole = CalibrationSums()
    whole.add(x, y)
    a, b = small.result(), whole.result()
    assert a.gain == pytest.approx(2.0) and b.gain == pytest.approx(2.0)
    assert a.offset == pytest.approx(b.offset, abs=1e-6) and a.floor == b.floor


def test_identity_without_data() -> None:
    assert CalibrationSums().result() == IntensityMap()


# ----------------------------------------------------------------------------- restoration


def test_constant_image_is_not_called_anti_correlated(denoiser, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        for normalize in (True, False):
            out = predict(
                denoiser, np.full((48, 48), 7, np.float32), normalize=normalize, progress=False
            )
            np.testing.assert_allclose(out, 7.0, atol=1e-4)
    assert "anti-correlated" not in caplog.text


def test_sparse_spots_on_zero_stay_on_zero(denoiser) -> None:
    image = sparse_spots()
    restored = predict(denoiser, image, progress=False)
    assert_invents_nothing(restored, image)
    assert restored.min() >= 0.0
    # the spots keep their brightness: the total signal within 10 % (the floor removes the
    # fit's undershoot around the spots, which adds ~6 %)
    assert restored.sum() == pytest.approx(image.sum(), rel=0.1)


@pytest.mark.slow
def test_nuclei_background_is_not_lifted(denoiser) -> None:
    image = tifffile.imread(DATA / "cells3d_nuclei" / "nuclei.tif")[26:34]
    assert_invents_nothing(predict(denoiser, image, progress=False), image)


@pytest.mark.slow
def test_neuron_background_is_not_lifted(volume_denoiser, caplog) -> None:
    image = tifffile.imread(DATA / "flowdec" / "neuron-25pct_data.tif")
    with caplog.at_level(logging.WARNING, logger="debcr.data.calibration"):
        restored = predict(volume_denoiser, image[20:30], progress=False)
    assert_invents_nothing(restored, image[20:30])
    assert "dark level" not in caplog.text
    # The whole volume: the network flattens the widefield haze, so the curve keeps the mean
    # but cannot hold the dark level within 0.5 % (docs/concepts.md): measured +1.41 %, and
    # the user is told so, with the alternative.
    restored = predict(volume_denoiser, image, progress=False)
    span = float(np.subtract(*np.percentile(image, [99.9, 0.1])))
    moved = (dark_level(block_means(restored)) - dark_level(block_means(image))) / span
    assert 0.005 < moved < 0.02
    assert restored.mean() == pytest.approx(image.mean(), rel=0.01)
    assert "units='affine' holds the dark level" in caplog.text


@pytest.mark.slow
def test_bead_background_is_not_lifted(volume_denoiser) -> None:
    image = tifffile.imread(DATA / "flowdec" / "bead-25pct_data.tif")  # 64³
    assert_invents_nothing(predict(volume_denoiser, image, progress=False), image)


@pytest.mark.slow
def test_fmd_denoising_keeps_its_psnr(denoiser) -> None:
    # The monotone curve gives 36.05–36.06 dB on frames 0–2 (the affine map 35.13–35.16);
    # benchmarks/results/calibration.md has all 50 frames.
    gt = fmd_gt(19).astype(np.float32)
    psnrs = [
        peak_signal_noise_ratio(
            gt, predict(denoiser, fmd_frame(19, i), progress=False), data_range=255
        )
        for i in (5, 6)
    ]
    assert np.mean(psnrs) >= 35.8
