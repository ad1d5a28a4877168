"""Tests for debcr.data.tiling: patch grid, crop, stitch and blending windows."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from debcr.data.tiling import (
    PAD_MODES,
    WINDOWS,
    PatchGrid,
    blend_window,
    crop,
    patch_grid,
    stitch,
)
from debcr.errors import DataError

# Sizes that caught the original: primes, 1, just below/above a patch.
_AWKWARD_SIZES = [1, 2, 3, 7, 13, 61, 63, 64, 65, 127, 129, 251, 293, 300]
_sizes = st.one_of(st.integers(1, 300), st.sampled_from(_AWKWARD_SIZES))
_overlaps = st.floats(0.0, 0.9, exclude_max=True, allow_nan=False)


def _random(shape: tuple[int, ...], seed: int = 0, dtype: type = np.float64) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, shape).astype(dtype)


# --- round trip ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    height=_sizes,
    width=_sizes,
    n_slices=st.sampled_from([None, 1, 2, 3]),
    patch=st.tuples(st.integers(8, 64), st.integers(8, 64)),
    overlap=st.tuples(_overlaps, _overlaps),
    window=st.sampled_from(WINDOWS),
    pad_mode=st.sampled_from(PAD_MODES),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_stitch_inverts_crop(
    height, width, n_slices, patch, overlap, window, pad_mode, dtype, seed
):
    shape = (height, width) if n_slices is None else (n_slices, height, width)
    grid = patch_grid((height, width), patch, overlap)
    # Tiny steps on big images give ~10^5 patches; they test nothing new but take seconds.
    assume(grid.n_patches * (n_slices or 1) <= 3000)
    x = _random(shape, seed, dtype)

    patches = crop(x, patch, overlap, pad_mode=pad_mode)
    restored = stitch(patches, overlap=overlap, image_shape=x.shape, window=window)

    assert patches.shape == ((n_slices or 1) * grid.n_patches, *patch)
    assert restored.shape == x.shape
    np.testing.assert_allclose(restored, x, rtol=0, atol=1e-6)


# --- the original DeBCR's bugs ------------------------------------------------------


def test_non_square_grid_patches_are_the_right_crops():
    # Original indexed z*nx*ny + ix*nx + iy, so patches of a 3x5 grid collided.
    x = _random((2, 256, 384))
    patches = crop(x, 128, (0.5, 0.5))

    assert crop(x, 128, (0.5, 0.5), dry_run=True) == (30, (3, 5))
    assert patches.shape == (30, 128, 128)
    for z in range(2):
        for iy in range(3):
            for ix in range(5):
                expected = x[z, iy * 64 : iy * 64 + 128, ix * 64 : ix * 64 + 128]
                np.testing.assert_array_equal(patches[z * 15 + iy * 5 + ix], expected)


def test_remainder_is_not_dropped():
    # Original: 300x300 came back as 256x256.
    x = _random((300, 300), seed=1)
    patches = crop(x, 128, 0.5)
    n_patches, counts = crop(x, 128, 0.5, dry_run=True)

    assert counts == (4, 4)
    assert n_patches == len(patches) == 16
    np.testing.assert_allclose(stitch(patches, image_shape=x.shape), x, atol=1e-6)
    # The original's call form returns the padded grid extent, image in the top-left.
    padded = stitch(patches, counts, 0.5)
    assert padded.shape == (1, 320, 320)
    np.testing.assert_allclose(padded[0, :300, :300], x, atol=1e-6)


def test_reflect_padding_mirrors_the_border():
    x = _random((300, 300), seed=2)
    patches = crop(x, 128, 0.5)  # padded to 320: rows 300..319 mirror rows 298..279
    last = patches[-1]  # origin (192, 192)
    np.testing.assert_array_equal(last[108:, :108], x[298:278:-1, 192:])
    np.testing.assert_array_equal(last[:108, 108:], x[192:, 298:278:-1])


def test_constant_padding_is_zero():
    x = _random((7, 5), seed=3) + 5.0
    patch = crop(x, 16, 0.5, pad_mode="constant")
    assert patch.shape == (1, 16, 16)
    np.testing.assert_array_equal(patch[0, :7, :5], x)
    assert not patch[0, 7:].any()
    assert not patch[0, :, 5:].any()


def test_image_smaller_than_patch():
    x = _random((7, 5), seed=4)
    patches = crop(x, 128)

    assert patches.shape == (1, 128, 128)
    np.testing.assert_array_equal(patches[0, :7, :5], x)
    restored = stitch(patches, image_shape=x.shape)
    assert restored.shape == (7, 5)
    np.testing.assert_allclose(restored, x, atol=1e-6)


@pytest.mark.parametrize("pad_mode", PAD_MODES)
def test_one_pixel_image(pad_mode):
    x = np.array([[3.5]])
    patches = crop(x, 8, 0.5, pad_mode=pad_mode)
    assert patches.shape == (1, 8, 8)
    assert patches[0, 0, 0] == 3.5
    if pad_mode != "constant":
        assert np.all(patches == 3.5)
    assert stitch(patches, image_shape=(1, 1)) == pytest.approx(3.5)


@pytest.mark.parametrize("overlap", [0.0, 0.5, (0.0, 0.75)])
@pytest.mark.parametrize("window", WINDOWS)
def test_constant_image_has_no_zero_seams_or_border(overlap, window):
    # Original: np.hanning is 0 at both ends, so seams (0 overlap) and the border were 0.
    x = np.full((2, 200, 260), 7.0)
    patches = crop(x, 64, overlap)
    for kwargs in ({"image_shape": x.shape}, {"patch_num": crop(x, 64, overlap, True)[1]}):
        out = stitch(patches, overlap=overlap, window=window, **kwargs)
        assert (out != 0).all()
        np.testing.assert_allclose(out, 7.0, rtol=1e-6)


# --- blending -----------------------------------------------------------------------


@pytest.mark.parametrize("window", ["hann", "linear"])
def test_overlap_is_a_smooth_transition(window):
    # Two 16x16 patches, 8 columns shared: left one all 0, right one all 1.
    patches = np.stack([np.zeros((16, 16)), np.ones((16, 16))])
    out = stitch(patches, overlap=0.5, image_shape=(16, 24), window=window)

    np.testing.assert_allclose(out[:, :8], 0.0, atol=1e-7)
    np.testing.assert_allclose(out[:, 16:], 1.0, atol=1e-7)
    seam = out[:, 8:16]
    assert np.all((seam > 0) & (seam < 1))
    assert np.all(np.diff(seam, axis=1) > 0)  # rises monotonically from 0 to 1
    np.testing.assert_allclose(seam, np.broadcast_to(seam[0], seam.shape))  # same in every row


def test_uniform_window_averages_the_overlap():
    patches = np.stack([np.zeros((16, 16)), np.ones((16, 16))])
    out = stitch(patches, overlap=0.5, image_shape=(16, 24), use_cosine=False)
    np.testing.assert_allclose(out[:, 8:16], 0.5)


@pytest.mark.parametrize("kind", WINDOWS)
@pytest.mark.parametrize("size", [1, 2, 3, 8, 63, 64, (5, 17), (128, 32)])
def test_blend_window_is_positive_and_peaks_at_one(kind, size):
    w = blend_window(size, kind)
    expected_shape = (size, size) if isinstance(size, int) else size
    assert w.shape == expected_shape
    assert w.dtype == np.float64
    assert (w > 0).all()
    assert w.max() == pytest.approx(1.0)
    np.testing.assert_allclose(w, w[::-1, ::-1])  # symmetric


@pytest.mark.parametrize("kind", ["hann", "linear"])
def test_blend_window_sums_to_constant_at_half_overlap(kind):
    w = blend_window((1, 64), kind)[0]
    np.testing.assert_allclose(w[:32] + w[32:], w[0] + w[32])
    assert w[0] < 0.02  # tapers strongly towards the edge
    assert w[0] < w[1] < w[31]


def test_hann_window_values():
    p = 16
    t = (np.arange(p) + 0.5) / p
    expected = np.sin(np.pi * t) ** 2
    np.testing.assert_allclose(blend_window((1, p), "hann")[0], expected / expected.max())


# --- grid, order, dry runs, dtypes, 2-D/3-D -----------------------------------------


def test_patch_grid_fields_and_row_major_origins():
    grid = patch_grid((100, 50), (10, 20), (0.5, 0.25))

    assert isinstance(grid, PatchGrid)
    assert grid.step == (5, 15)
    assert grid.counts == (1 + 18, 1 + 2)
    assert grid.padded_shape == (100, 50)
    assert grid.n_patches == 57
    assert grid.origins.shape == (57, 2)
    assert grid.origins[:4].tolist() == [[0, 0], [0, 15], [0, 30], [5, 0]]
    assert grid.origins[-1].tolist() == [90, 30]


def test_step_rounds_half_up_and_is_at_least_one():
    assert patch_grid((100, 100), 9, 0.5).step == (5, 5)  # 4.5 -> 5, not banker's 4
    assert patch_grid((100, 100), (8, 128), (0.89, 0.5)).step == (1, 64)
    assert patch_grid((100, 100), 1, 0.5).step == (1, 1)


def test_patch_grid_pads_to_cover_the_image():
    grid = patch_grid((300, 7), 128, (0.5, 0.0))
    assert grid.counts == (4, 1)
    assert grid.padded_shape == (320, 128)
    assert grid.pad_width == (20, 121)


def test_patch_order_is_row_major():
    # Each pixel holds its own coordinates, so a patch's top-left tells its origin.
    rows, cols = np.mgrid[0:40, 0:70]
    x = np.stack([rows * 1000 + cols, rows * 1000 + cols + 10**6])
    patches = crop(x, 20, 0.5)
    grid = patch_grid((40, 70), 20, 0.5)
    origins = [(z, y, xx) for z in range(2) for y, xx in grid.origins]
    assert [int(p[0, 0]) for p in patches] == [z * 10**6 + y * 1000 + xx for z, y, xx in origins]
    assert grid.origins[:7, 0].tolist() == [0] * 6 + [10]


def test_crop_dry_run_does_not_copy():
    # A broadcast view is 0 bytes; a real crop of it would allocate ~1.5 GB.
    data = np.broadcast_to(np.float32(1), (12, 4000, 4000))
    assert crop(data, 128, 0.5, dry_run=True) == (12 * 62 * 62, (62, 62))


def test_stitch_dry_run():
    patches = np.zeros((30, 128, 128), dtype=np.float32)
    assert stitch(patches, (3, 5), dry_run=True) == (2, (256, 384))
    assert stitch(patches, image_shape=(250, 380), dry_run=True) == (2, (250, 380))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float16, np.float32])
def test_dtypes(dtype):
    x = (np.arange(2 * 40 * 30) % 200).reshape(2, 40, 30).astype(dtype)
    patches = crop(x, 16, 0.5)
    assert patches.dtype == dtype
    assert not np.shares_memory(patches, x)
    out = stitch(patches, image_shape=x.shape)
    assert out.dtype == np.float32  # blended values are not integers
    np.testing.assert_allclose(out, x.astype(np.float32), atol=1e-4)


def test_float64_patches_give_float32():
    out = stitch(np.ones((1, 8, 8)), image_shape=(8, 8))
    assert out.dtype == np.float32


def test_output_rank_rule():
    x2 = _random((20, 30))
    assert stitch(crop(x2, 16), image_shape=x2.shape).shape == (20, 30)
    x3 = _random((1, 20, 30))
    assert stitch(crop(x3, 16), image_shape=x3.shape).shape == (1, 20, 30)
    # Several slices can only come back as a stack, whatever image_shape says.
    x3 = _random((3, 20, 30))
    assert stitch(crop(x3, 16), image_shape=(20, 30)).shape == (3, 20, 30)
    # Without image_shape: always a stack of the padded extent.
    assert stitch(crop(x2, 16), (2, 3)).shape == (1, 24, 32)


def test_stitch_does_not_hold_all_weighted_patches():
    x = _random((4, 512, 512), dtype=np.float32)
    patches = crop(x, 64, 0.75)  # 29 x 29 grid: 3364 patches
    weighted_stack_bytes = patches.size * 8
    tracemalloc.start()
    try:
        stitch(patches, overlap=0.75, image_shape=x.shape)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < weighted_stack_bytes / 4


# --- errors -------------------------------------------------------------------------


@pytest.mark.parametrize("overlap", [0.9, 1.0, -0.1, (0.5, 0.95), float("nan"), "half"])
def test_bad_overlap(overlap):
    with pytest.raises(DataError, match=r"overlap must be in \[0, 0\.9\)"):
        crop(np.zeros((32, 32)), 16, overlap)
    with pytest.raises(DataError, match=r"overlap must be in \[0, 0\.9\)"):
        stitch(np.zeros((1, 16, 16)), overlap=overlap, image_shape=(16, 16))


def test_overlap_not_a_pair():
    with pytest.raises(DataError, match=r"pair \(oy, ox\)"):
        patch_grid((32, 32), 16, (0.1, 0.2, 0.3))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 16, 16), ()])
def test_bad_ndim(shape):
    with pytest.raises(DataError, match=r"2-D image \(H, W\) or a 3-D stack \(Z, H, W\)"):
        crop(np.zeros(shape), 8)


def test_empty_image():
    with pytest.raises(DataError, match="empty"):
        crop(np.zeros((0, 16, 16)), 8)


@pytest.mark.parametrize("size", [0, -4, 2.5, (8, 0), (8, 8, 8)])
def test_bad_patch_size(size):
    with pytest.raises(DataError, match="patch_size must be a positive int"):
        crop(np.zeros((16, 16)), size)


def test_patch_count_mismatch():
    patches = np.zeros((29, 128, 128))
    with pytest.raises(DataError, match=r"29 patches.*3x5 grid.*multiple of 15"):
        stitch(patches, image_shape=(256, 384))
    with pytest.raises(DataError, match=r"29 patches.*multiple of 15"):
        stitch(patches, (3, 5))


def test_patch_num_disagrees_with_image_shape():
    with pytest.raises(DataError, match=r"patch_num \(5, 3\) does not match the \(3, 5\) grid"):
        stitch(np.zeros((15, 128, 128)), (5, 3), image_shape=(256, 384))


def test_slice_count_disagrees_with_image_shape():
    with pytest.raises(DataError, match="has 3 slices but the 30 patches make 2"):
        stitch(np.zeros((30, 128, 128)), image_shape=(3, 256, 384))


def test_stitch_needs_a_grid():
    with pytest.raises(DataError, match=r"patch_num \(ny, nx\) or image_shape"):
        stitch(np.zeros((4, 8, 8)))


def test_stitch_needs_3d_patches():
    with pytest.raises(DataError, match=r"\(N, ph, pw\), got shape \(8, 8\)"):
        stitch(np.zeros((8, 8)), image_shape=(8, 8))


def test_bad_window_and_pad_mode():
    with pytest.raises(DataError, match="window must be one of"):
        stitch(np.zeros((1, 8, 8)), image_shape=(8, 8), window="gauss")
    with pytest.raises(DataError, match="window must be one of"):
        blend_window(8, "gauss")
    with pytest.raises(DataError, match="pad_mode must be one of"):
        crop(np.zeros((8, 8)), 8, pad_mode="wrap")


def test_complex_patches_rejected():
    with pytest.raises(DataError, match="real numbers"):
        stitch(np.zeros((1, 8, 8), dtype=complex), image_shape=(8, 8))
