"""Tests of debcr.data.normalize against hand-computed numpy values on real data."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from debcr.data.normalize import (
    DEFAULT_SAMPLE_PIXELS,
    NormStats,
    apply_stats,
    compute_stats,
    denormalize,
    normalize,
)
from debcr.errors import DataError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NUCLEI = DATA / "cells3d_nuclei" / "nuclei.tif"
FMD_GT = DATA / "fmd_confocal_bpae_b" / "gt" / "19" / "avg50.png"


@pytest.fixture(scope="module")
def fmd() -> np.ndarray:
    return np.asarray(Image.open(FMD_GT))


@pytest.fixture(scope="module")
def nuclei() -> np.ndarray:
    return tifffile.imread(NUCLEI)


def reference(x: np.ndarray, lo, hi, eps: float = 1e-16, clip: bool = True) -> np.ndarray:
    """The original DeBCR formula in float64."""
    y = (x.astype(np.float64) - lo) / (hi - lo + eps)
    return np.clip(y, 0, 1) if clip else y


def test_percentile_matches_numpy_on_fmd(fmd: np.ndarray) -> None:
    lo, hi = np.percentile(fmd, 0.1), np.percentile(fmd, 99.9)
    out, stats = normalize(fmd, return_stats=True)
    assert out.dtype == np.float32 and out.shape == fmd.shape
    assert stats.lo == lo and stats.hi == hi and stats.method == "percentile"
    np.testing.assert_allclose(out, reference(fmd, lo, hi), rtol=1e-6, atol=1e-7)
    assert out.min() == 0.0 and out.max() == 1.0


def test_custom_percentiles_and_minmax(nuclei: np.ndarray) -> None:
    lo, hi = np.percentile(nuclei, [2, 98])
    np.testing.assert_allclose(normalize(nuclei, 2, 98), reference(nuclei, lo, hi), atol=1e-6)
    mm = normalize(nuclei, by_perc=False, return_stats=True)
    assert mm[1].method == "minmax" and mm[1].lo == nuclei.min() and mm[1].hi == nuclei.max()
    np.testing.assert_allclose(mm[0], reference(nuclei, nuclei.min(), nuclei.max()), atol=1e-6)


def test_fixed_range(nuclei: np.ndarray) -> None:
    out, stats = normalize(nuclei, vmin=1000, vmax=20000, return_stats=True)
    assert stats.method == "fixed" and (stats.lo, stats.hi) == (1000.0, 20000.0)
    np.testing.assert_allclose(out, reference(nuclei, 1000, 20000), atol=1e-6)
    half = normalize(nuclei, vmin=0, return_stats=True)[1]  # only one bound fixed
    assert half.lo == 0.0 and half.hi == np.percentile(nuclei, 99.9)
    with pytest.raises(DataError, match="vmin"):
        normalize(nuclei, vmin=5, vmax=1)


def test_per_slice_matches_loop(nuclei: np.ndarray) -> None:
    out, stats = normalize(nuclei, per_slice=True, return_stats=True)
    assert stats.per_slice and stats.n_slices == 60
    for z in (0, 17, 59):
        lo, hi = np.percentile(nuclei[z], [0.1, 99.9])
        assert stats.lo[z] == lo and stats.hi[z] == hi
        np.testing.assert_allclose(out[z], reference(nuclei[z], lo, hi), atol=1e-6)
    # a 2-D image is a single slice: same as global
    img = nuclei[5]
    np.testing.assert_array_equal(normalize(img, per_slice=True), normalize(img))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtype_is_honoured(nuclei: np.ndarray, dtype) -> None:
    out = normalize(nuclei, dtype=dtype, clip=False)
    assert out.dtype == np.dtype(dtype)
    assert np.isfinite(out).all()  # float16 must not overflow on uint16 input
    lo, hi = np.percentile(nuclei, [0.1, 99.9])
    tol = {np.float16: 2e-3, np.float32: 1e-6, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(out, reference(nuclei, lo, hi, clip=False), atol=tol, rtol=tol)


def test_integer_dtype_refused(fmd: np.ndarray) -> None:
    with pytest.raises(DataError, match="float dtype"):
        normalize(fmd, dtype=np.uint8)


def test_clip_on_and_off(fmd: np.ndarray) -> None:
    unclipped = normalize(fmd, pmin=5, pmax=95, clip=False)
    clipped = normalize(fmd, pmin=5, pmax=95)
    assert unclipped.min() < 0 and unclipped.max() > 1
    np.testing.assert_array_equal(clipped, np.clip(unclipped, 0, 1))


@pytest.mark.parametrize("per_slice", [False, True])
def test_denormalize_round_trip_real(nuclei: np.ndarray, per_slice: bool) -> None:
    y, stats = normalize(nuclei, clip=False, per_slice=per_slice, return_stats=True)
    back = denormalize(y, stats)
    assert back.dtype == np.float32
    span = float(nuclei.max()) - float(nuclei.min())
    np.testing.assert_allclose(back, nuclei, rtol=0, atol=span * 2e-7)
    exact = denormalize(y, stats, dtype=np.uint16)
    assert exact.dtype == np.uint16
    np.testing.assert_array_equal(exact, nuclei)


def test_apply_stats_equals_normalize_and_select(nuclei: np.ndarray) -> None:
    stats = compute_stats(nuclei, per_slice=True)
    np.testing.assert_array_equal(
        apply_stats(nuclei, stats, clip=True), normalize(nuclei, per_slice=True)
    )
    part = apply_stats(nuclei[10:20], stats.select(slice(10, 20)))
    np.testing.assert_array_equal(part, apply_stats(nuclei, stats)[10:20])
    one = stats.select(3)
    assert not one.per_slice and one.lo == stats.lo[3]
    with pytest.raises(DataError, match="60 slices"):
        apply_stats(nuclei[:5], stats)


def test_constant_image_gives_zeros_and_back(nuclei: np.ndarray) -> None:
    flat = np.full((32, 32), 7, np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, stats = normalize(flat, return_stats=True)
        assert out.dtype == np.float32 and not out.any()
        back = denormalize(out, stats)
    np.testing.assert_array_equal(back, 7)
    stack = nuclei[:3].copy()
    stack[1] = 123  # one constant slice in a per-slice stack
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, st3 = normalize(stack, per_slice=True, clip=False, return_stats=True, dtype=np.float16)
    assert np.isfinite(y).all() and not y[1].any()
    np.testing.assert_array_equal(denormalize(y.astype(np.float32), st3, dtype=np.uint16)[1], 123)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_reported(fmd: np.ndarray, bad: float) -> None:
    x = fmd.astype(np.float32)
    x[3, 4] = bad
    x[100, 7] = bad
    for call in (normalize, compute_stats):
        with pytest.raises(DataError, match=r"2 non-finite values.*nan_to_num"):
            call(x)
    with pytest.raises(DataError, match="2 non-finite"):
        apply_stats(x, NormStats(lo=0.0, hi=255.0))


def test_bad_inputs(fmd: np.ndarray) -> None:
    with pytest.raises(DataError, match="pmin"):
        normalize(fmd, pmin=50, pmax=10)
    with pytest.raises(DataError, match="empty"):
        normalize(np.zeros((0, 4)))
    with pytest.raises(DataError, match="real-valued"):
        normalize(fmd.astype(np.complex64))
    with pytest.raises(DataError, match="3-D"):
        normalize(np.zeros((2, 2, 4, 4)), per_slice=True)


def test_stats_dict_round_trip(nuclei: np.ndarray) -> None:
    for stats in (
        compute_stats(nuclei),
        compute_stats(nuclei, per_slice=True),
        compute_stats(nuclei, by_perc=False),
        compute_stats(nuclei, vmin=0, vmax=1),
    ):
        text = json.dumps(stats.to_dict())
        again = NormStats.from_dict(json.loads(text))
        assert again == stats
        np.testing.assert_array_equal(apply_stats(nuclei, again), apply_stats(nuclei, stats))
    with pytest.raises(DataError, match="lack"):
        NormStats.from_dict({"lo": 1.0})
    with pytest.raises(DataError, match="method"):
        NormStats(lo=0, hi=1, method="zscore")


def test_stats_are_immutable(nuclei: np.ndarray) -> None:
    stats = compute_stats(nuclei, per_slice=True)
    with pytest.raises(ValueError, match="read-only"):
        stats.lo[0] = 0
    with pytest.raises(AttributeError):
        stats.lo = 0  # type: ignore[misc]


def test_sampled_stats_on_memmap(tmp_path: Path, nuclei: np.ndarray) -> None:
    np.save(tmp_path / "n.npy", nuclei)
    mm = np.load(tmp_path / "n.npy", mmap_mode="r")
    exact = compute_stats(nuclei)
    approx = compute_stats(mm, sample=200_000)
    span = exact.hi - exact.lo
    assert abs(approx.lo - exact.lo) < 0.02 * span and abs(approx.hi - exact.hi) < 0.02 * span
    per = compute_stats(mm, per_slice=True, sample=10_000)
    assert per.n_slices == 60
    assert compute_stats(mm, sample=DEFAULT_SAMPLE_PIXELS) == exact  # small: nothing skipped
    out = apply_stats(mm, approx)
    assert out.dtype == np.float32 and out.shape == nuclei.shape
    with pytest.raises(DataError, match="sample"):
        compute_stats(mm, sample=0)


_images = st.sampled_from([np.uint8, np.uint16, np.float32]).flatmap(
    lambda dt: hnp.arrays(
        dtype=dt,
        shape=hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=10),
        elements=(
            st.floats(-1e4, 1e4, width=32) if dt == np.float32 else hnp.from_dtype(np.dtype(dt))
        ),
    )
)


@settings(deadline=None, max_examples=40)
@given(x=_images, per_slice=st.booleans(), by_perc=st.booleans())
def test_property_denormalize_inverts_normalize(x: np.ndarray, per_slice: bool, by_perc: bool):
    y, stats = normalize(x, clip=False, per_slice=per_slice, by_perc=by_perc, return_stats=True)
    assert y.dtype == np.float32 and y.shape == x.shape
    back = denormalize(y, stats, dtype=np.float64)
    span = float(np.max(x)) - float(np.min(x))
    np.testing.assert_allclose(back, x.astype(np.float64), rtol=1e-6, atol=span * 1e-6 + 1e-9)
    clipped = normalize(x, per_slice=per_slice, by_perc=by_perc)
    assert clipped.min() >= 0.0 and clipped.max() <= 1.0
