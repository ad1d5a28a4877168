"""The default intensity map (a monotone curve that keeps the mean), test-time augmentation
and the uncertainty map, on real FMD, cells3d and flowdec images."""

from __future__ import annotations

import logging

import dask.array as da
import numpy as np
import pytest
import tifffile
import torch

from conftest import fmd_frame, fmd_gt
from debcr.data.calibration import (
    CurveMap,
    CurveSums,
    calibrate_output,
    pool_adjacent_violators,
)
from debcr.data.intensity import IntensityMap, block_means, dark_level
from debcr.data.io import load
from debcr.errors import DataError, DebcrError
from debcr.inference.lazy import LAZY_SAMPLE_PIXELS, sample_windows
from debcr.inference.options import PredictOptions, units_for_task
from debcr.inference.tta import uncertainty_path
from debcr.metrics import psnr
from debcr.model import init, predict


@pytest.fixture(scope="module")
def fmd_pair(denoiser) -> tuple[np.ndarray, np.ndarray]:
    """FMD field 19 frame 0 normalised as predict does, and the network output on it."""
    x = fmd_frame(19, 0).astype(np.float32)
    lo, hi = np.percentile(x, [0.1, 99.9])
    y = predict(denoiser, x, units="normalized", precision="float32", progress=False)
    return (x - lo) / (hi - lo), y


def test_pool_adjacent_violators_matches_hand_solved_cases() -> None:
    got = pool_adjacent_violators(np.array([1.0, 3.0, 2.0, 4.0]), np.ones(4))
    np.testing.assert_allclose(got, [1.0, 2.5, 2.5, 4.0])
    # weights decide the pooled value: (3·1 + 2·3) / 4
    got = pool_adjacent_violators(np.array([1.0, 3.0, 2.0, 4.0]), np.array([1.0, 1.0, 3.0, 1.0]))
    np.testing.assert_allclose(got, [1.0, 2.25, 2.25, 4.0])
    # a run that needs pooling backwards over several points
    got = pool_adjacent_violators(np.array([5.0, 1.0, 1.0, 1.0]), np.ones(4))
    np.testing.assert_allclose(got, [2.0, 2.0, 2.0, 2.0])


def test_curve_map_interpolates_inside_and_continues_with_the_gain_outside() -> None:
    """Hand-computed values: inside the points, beyond both ends, NaN, a 0-d input, the
    floor; the caller's array is left as it was."""
    curve = CurveMap(
        ys=np.array([0.0, 1.0, 2.0]), xs=np.array([0.0, 4.0, 6.0]), gain=3.0, shift=1.0, floor=0.5
    )
    y = np.array([[-1.0, 0.5, 1.5], [2.0, 4.0, np.nan]], dtype=np.float32)
    before = y.copy()
    got = curve.apply(y)
    expected = np.array([[0.5, 3.0, 6.0], [7.0, 13.0, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(y, before)
    assert float(curve.apply(np.float32(3.0))) == 6.0 + 3.0 + 1.0


def test_curve_is_monotone_keeps_the_mean_and_is_the_same_tile_by_tile(fmd_pair) -> None:
    x, y = fmd_pair
    whole = CurveSums()
    whole.add(x, y)
    tiled = CurveSums()
    for rows in (slice(0, 200), slice(200, 512)):
        for cols in (slice(0, 312), slice(312, 512)):
            tiled.add(x[rows, cols], y[rows, cols])
    a, b = whole.result(), tiled.result()
    assert isinstance(a, CurveMap) and isinstance(b, CurveMap)
    np.testing.assert_allclose(a.xs, b.xs, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.ys, b.ys, rtol=1e-9, atol=1e-12)
    assert np.all(np.diff(a.xs) >= 0) and np.all(np.diff(a.ys) > 0)
    mapped = a.apply(y)
    assert abs(mapped.mean() - x.mean()) <= 0.005 * abs(x.mean())
    assert mapped.min() >= x.min()
    # monotone as a map too: brighter outputs never come back darker
    order = np.argsort(y.ravel())
    assert np.all(np.diff(mapped.ravel()[order]) >= -1e-6)


def test_constant_and_anti_correlated_outputs_fall_back(caplog) -> None:
    x = np.full((128, 128), 7.0, np.float32)
    rng = np.random.default_rng(0)
    constant = CurveSums()
    constant.add(x, rng.random((128, 128)).astype(np.float32))
    assert constant.result() == IntensityMap(gain=0.0, offset=7.0)
    ramp = np.tile(np.linspace(0, 1, 128, dtype=np.float32), (128, 1))
    anti = CurveSums()
    with caplog.at_level(logging.WARNING):
        anti.add(ramp, 1.0 - ramp)
        assert anti.result() == IntensityMap()
    assert "anti-correlated" in caplog.text


@pytest.mark.slow
def test_default_units_beat_the_affine_map_on_fmd_and_keep_mean_and_dark_level(
    denoiser,
) -> None:
    x = fmd_frame(19, 1)
    gt = fmd_gt(19).astype(np.float32)
    calibrated = predict(denoiser, x, progress=False)
    affine = predict(denoiser, x, units="affine", progress=False)
    gain = psnr(calibrated, gt, data_range=255) - psnr(affine, gt, data_range=255)
    assert gain >= 0.7, f"only {gain:+.2f} dB over the affine map"
    assert calibrated.mean() == pytest.approx(x.mean(), rel=0.005)
    span = float(np.subtract(*np.percentile(x, [99.9, 0.1])))
    moved = dark_level(block_means(calibrated)) - dark_level(block_means(x.astype(float)))
    assert abs(moved) <= 0.005 * span
    assert calibrated.min() >= x.min()


def _hand_tta(model, image: np.ndarray) -> np.ndarray:
    """The 8 rotations/flips made with numpy here, restored one by one and turned back."""
    outs = []
    for transpose in (False, True):
        base = image.T if transpose else image
        for turns in range(4):
            y = predict(
                model,
                np.ascontiguousarray(np.rot90(base, turns)),
                units="normalized",
                precision="float32",
                progress=False,
            )
            y = np.rot90(y, -turns)
            outs.append(y.T if transpose else y)
    return np.stack(outs)


def test_tta_is_the_mean_of_the_eight_hand_made_transforms(denoiser) -> None:
    image = fmd_frame(19, 2)[100:196, 40:180]  # non-square: two tile shapes
    hand = _hand_tta(denoiser, image)
    mean, spread = predict(
        denoiser, image, units="normalized", precision="float32", progress=False, uncertainty=True
    )
    np.testing.assert_allclose(mean, hand.mean(axis=0), atol=2e-5)
    np.testing.assert_allclose(spread, hand.std(axis=0), atol=2e-5)
    only_tta = predict(
        denoiser, image, units="normalized", precision="float32", progress=False, tta=True
    )
    np.testing.assert_allclose(only_tta, mean, atol=1e-6)


def test_uncertainty_is_written_beside_the_result_with_its_metadata(denoiser, tmp_path) -> None:
    source = tmp_path / "field.tif"
    tifffile.imwrite(
        source,
        fmd_frame(19, 3)[:128, :160],
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.25),
        metadata={"unit": "um", "axes": "YX"},
    )
    out = tmp_path / "restored.tif"
    result, spread_path = predict(denoiser, source, output=out, uncertainty=True, progress=False)
    assert result == out and spread_path == tmp_path / "restored.uncertainty.tif"
    restored, meta = load(out, with_metadata=True)
    spread, spread_meta = load(spread_path, with_metadata=True)
    assert spread.shape == restored.shape == (128, 160)
    assert spread_meta.axes == meta.axes and spread_meta.scale == pytest.approx(meta.scale)
    assert spread_meta.scale == pytest.approx((0.25, 0.25))
    # in the result's units: a spread of a few grey levels on 8-bit FMD, never negative
    assert spread.min() >= 0 and 0.05 < float(np.median(spread)) < 10
    assert uncertainty_path("a/b.ome.tif").name == "b.uncertainty.ome.tif"
    assert uncertainty_path("b.ome.zarr").name == "b.uncertainty.ome.zarr"


def test_non_finite_output_is_never_written(tmp_path) -> None:
    model = init("2D_denoising")
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    out = tmp_path / "nan.tif"
    with pytest.raises(DebcrError, match="non-finite"):
        predict(model, fmd_frame(19, 4)[:96, :96], output=out, progress=False, backend="torch")
    assert list(tmp_path.iterdir()) == []


def test_lazy_sample_is_bounded_and_spread() -> None:
    windows = sample_windows((10_000, 2048, 2048))
    pixels = sum((y1 - y0) * (x1 - x0) for _, y0, y1, x0, x1 in windows)
    assert pixels <= LAZY_SAMPLE_PIXELS
    planes = sorted({w[0] for w in sample_windows((60, 256, 256))})
    assert len(planes) == 3 and planes[0] > 0 and planes[-1] < 59  # not the dark end planes
    assert sample_windows((1, 64, 80)) == [(0, 0, 64, 0, 80)]


def test_lazy_refuses_uncertainty(denoiser) -> None:
    with pytest.raises(DataError, match="uncertainty"):
        predict(denoiser, da.zeros((64, 64)), uncertainty=True)


def test_a_packages_normalised_output_comes_back_in_the_inputs_units(denoiser) -> None:
    image = fmd_frame(19, 7)
    normalised = predict(denoiser, image, units="normalized", precision="float32", progress=False)
    expected = predict(denoiser, image, precision="float32", progress=False)
    got = calibrate_output(image, normalised)
    assert np.abs(got - expected).max() <= 1e-3 * np.ptp(expected)
    with pytest.raises(ValueError, match="same shape"):
        calibrate_output(image, normalised[:10])


def test_auto_units_follow_the_models_task(denoiser) -> None:
    assert PredictOptions().for_model(denoiser).units == "calibrated"
    assert PredictOptions().for_model(init("confocal_SR")).units == "affine"
    assert PredictOptions(units="percentile").for_model(init("bright_SR")).units == "percentile"
    # a model fine-tuned from an SR model keeps its parent's task, and so its units
    assert units_for_task("bright_SR") == "affine" and units_for_task("") == "calibrated"
