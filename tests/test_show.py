"""Tests of debcr.data.show (the preview grid) on real microscopy data from shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from matplotlib.figure import Figure
from PIL import Image

from debcr.data.show import show
from debcr.errors import DataError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NUCLEI = DATA / "cells3d_nuclei" / "nuclei.tif"
FMD_GT = DATA / "fmd_confocal_bpae_b" / "gt" / "19" / "avg50.png"


@pytest.fixture(scope="module")
def nuclei() -> np.ndarray:
    stack = tifffile.imread(NUCLEI)
    assert stack.shape == (60, 256, 256) and stack.dtype == np.uint16
    return stack


@pytest.fixture(scope="module")
def fmd() -> np.ndarray:
    image = np.asarray(Image.open(FMD_GT))
    assert image.shape == (512, 512) and image.dtype == np.uint8
    return image


def _grid(fig: Figure) -> tuple[int, int]:
    """(rows, columns) of the figure's subplot grid."""
    return fig.axes[0].get_subplotspec().get_gridspec().get_geometry()


def _cell(ax) -> tuple[int, int]:
    spec = ax.get_subplotspec()
    return spec.rowspan.start, spec.colspan.start


def _shown(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array())


def _slice_id(ax) -> int:
    return int(ax.get_title().rsplit("slice ", 1)[1])


# --- layout ----------------------------------------------------------------------------


def test_grid_has_one_column_per_dataset_and_one_row_per_slice(nuclei):
    scaled = (nuclei // 2).astype(np.uint16)
    fig = show([nuclei, scaled], slices=[3, 10, 42])
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3 * 2
    assert _grid(fig) == (3, 2)
    for ax in fig.axes:
        row, col = _cell(ax)
        z = [3, 10, 42][row]
        expected = (nuclei, scaled)[col][z]
        np.testing.assert_array_equal(_shown(ax), expected)
        assert ax.get_title() == f"data {col}, slice {z}"
        assert not ax.axison


def test_transpose_gives_one_row_per_dataset(nuclei):
    scaled = (nuclei // 2).astype(np.uint16)
    fig = show([nuclei, scaled], slices=[3, 10, 42], transpose=True)
    assert len(fig.axes) == 2 * 3
    assert _grid(fig) == (2, 3)
    for ax in fig.axes:
        row, col = _cell(ax)
        z = [3, 10, 42][col]
        np.testing.assert_array_equal(_shown(ax), (nuclei, scaled)[row][z])
        assert ax.get_title() == f"data {row}, slice {z}"


def test_figure_size_is_panel_size_times_grid(nuclei):
    fig = show([nuclei, nuclei, nuclei], slices=[0, 1], figsize=(2, 3))
    np.testing.assert_allclose(fig.get_size_inches(), (2 * 3, 3 * 2))
    fig = show([nuclei, nuclei, nuclei], slices=[0, 1], figsize=(2, 3), transpose=True)
    np.testing.assert_allclose(fig.get_size_inches(), (2 * 2, 3 * 3))
    np.testing.assert_allclose(show(nuclei, slices=0).get_size_inches(), (5, 5))


# --- titles ------------------------------------------------------------------------------


def test_titles_and_slice_ids(nuclei):
    fig = show([nuclei, nuclei], slices=[7], titles=["input", "prediction"])
    assert [ax.get_title() for ax in fig.axes] == ["input, slice 7", "prediction, slice 7"]

    fig = show([nuclei, nuclei], slices=[7], titles=["input", "prediction"], show_ids=False)
    assert [ax.get_title() for ax in fig.axes] == ["input", "prediction"]

    fig = show([nuclei, nuclei], slices=[7], show_titles=False)
    assert [ax.get_title() for ax in fig.axes] == ["slice 7", "slice 7"]

    fig = show([nuclei, nuclei], slices=[7], show_titles=False, show_ids=False)
    assert [ax.get_title() for ax in fig.axes] == ["", ""]


def test_dict_keys_are_default_titles(nuclei):
    low = nuclei[:, ::2, ::2]
    fig = show({"low": low, "gt": nuclei}, slices=[5])
    assert [ax.get_title() for ax in fig.axes] == ["low, slice 5", "gt, slice 5"]
    np.testing.assert_array_equal(_shown(fig.axes[0]), low[5])
    np.testing.assert_array_equal(_shown(fig.axes[1]), nuclei[5])

    fig = show({"low": low, "gt": nuclei}, slices=[5], titles=["a", "b"])
    assert [ax.get_title() for ax in fig.axes] == ["a, slice 5", "b, slice 5"]


# --- 2-D images and mixed datasets -----------------------------------------------------


def test_2d_image_is_one_slice(fmd):
    fig = show(fmd)  # default slices=(-1,) must pick slice 0 of a single image
    assert len(fig.axes) == 1
    assert fig.axes[0].get_title() == "data 0, slice 0"
    np.testing.assert_array_equal(_shown(fig.axes[0]), fmd)
    with pytest.raises(DataError, match=r"slice 1 does not exist in dataset 0.*\(512, 512\)"):
        show(fmd, slices=[1])


def test_datasets_of_different_lengths_and_sizes(nuclei, fmd):
    short = nuclei[:20]
    fig = show([nuclei, short, fmd], slices=[0])
    assert [_shown(ax).shape for ax in fig.axes] == [(256, 256), (256, 256), (512, 512)]
    fig = show([nuclei, short], slices=[19])
    np.testing.assert_array_equal(_shown(fig.axes[1]), short[19])
    with pytest.raises(DataError, match=r"slice 30 does not exist in dataset 1 .*\(20, 256, 256\)"):
        show([nuclei, short], slices=[30])


# --- random slices -----------------------------------------------------------------------


def test_random_slice_is_reproducible_and_shared_by_the_row(nuclei):
    short = nuclei[:20]
    first = show([nuclei, short], slices=[-1, -1, -1, -1], seed=123)
    again = show([nuclei, short], slices=[-1, -1, -1, -1], seed=123)
    ids = [_slice_id(ax) for ax in first.axes]
    assert ids == [_slice_id(ax) for ax in again.axes]
    for ax in first.axes:
        row, col = _cell(ax)
        z = _slice_id(ax)
        assert 0 <= z < 20  # valid in the shortest dataset
        assert z == ids[2 * row]  # every column of a row shows the same slice
        np.testing.assert_array_equal(_shown(ax), (nuclei, short)[col][z])


def test_random_slices_vary_with_the_seed(nuclei):
    ids = {_slice_id(show(nuclei, seed=seed).axes[0]) for seed in range(12)}
    assert len(ids) > 1


def test_default_and_caller_slices_are_not_mutated(nuclei):
    defaults = show.__defaults__
    requested = [-1, 4]
    show(nuclei, slices=requested, seed=1)
    assert requested == [-1, 4]
    # The original replaced -1 in its default list by the drawn index, so every later
    # call showed that same slice; here unseeded default calls keep drawing anew.
    ids = {_slice_id(show(nuclei).axes[0]) for _ in range(12)}
    assert len(ids) > 1
    assert show.__defaults__ == defaults


# --- display range and zoom --------------------------------------------------------------


def test_display_range_is_robust_to_hot_pixels(nuclei):
    image = nuclei[10].copy()
    image[100, 100] = 65535
    fig = show(image)
    lo, hi = fig.axes[0].images[0].get_clim()
    expected = np.percentile(image, [0.1, 99.9])
    np.testing.assert_allclose((lo, hi), expected)
    assert hi < 65535

    fig = show(image, percentiles=(0, 100))
    assert fig.axes[0].images[0].get_clim() == (image.min(), 65535)


def test_fixed_display_range(nuclei):
    fig = show([nuclei, nuclei], slices=[1, 2], vmin=100, vmax=2000)
    assert all(ax.images[0].get_clim() == (100, 2000) for ax in fig.axes)

    fig = show(nuclei, slices=[1], vmin=100)
    lo, hi = fig.axes[0].images[0].get_clim()
    assert lo == 100
    assert hi == pytest.approx(np.percentile(nuclei[1], 99.9))


def test_zoom_crops_every_panel(nuclei, fmd):
    fig = show([nuclei, fmd], slices=[0], zoom=(10, 60, 30, 130))
    np.testing.assert_array_equal(_shown(fig.axes[0]), nuclei[0, 10:60, 30:130])
    np.testing.assert_array_equal(_shown(fig.axes[1]), fmd[10:60, 30:130])
    with pytest.raises(DataError, match=r"zoom .* outside dataset 0 .*256 x 256"):
        show([nuclei, fmd], slices=[0], zoom=(0, 300, 0, 10))
    with pytest.raises(DataError, match="not a region"):
        show(nuclei, zoom=(60, 10, 0, 10))
    with pytest.raises(DataError, match="four integers"):
        show(nuclei, zoom=(0, 10, 0))


# --- saving ------------------------------------------------------------------------------


def test_figure_saves_to_png(nuclei, fmd, tmp_path):
    fig = show({"nuclei": nuclei, "fmd": fmd}, slices=[0], figsize=(2, 2), seed=0)
    path = tmp_path / "preview.png"
    fig.savefig(path, dpi=50)
    assert path.exists() and path.stat().st_size > 0
    with Image.open(path) as png:
        assert png.size == (2 * 2 * 50, 2 * 50)
        pixels = np.asarray(png)
    assert pixels.std() > 0  # something was drawn


# --- errors ------------------------------------------------------------------------------


def test_bad_data_is_refused(nuclei):
    with pytest.raises(DataError, match="data is empty"):
        show([])
    with pytest.raises(DataError, match="data is empty"):
        show({})
    with pytest.raises(DataError, match=r"dataset 1 .*\(2, 60, 256, 256\).* is 4-D"):
        show([nuclei, np.stack([nuclei, nuclei])])
    with pytest.raises(DataError, match=r"dataset 0 .*\(256,\).* is 1-D"):
        show(nuclei[0, 0])
    with pytest.raises(DataError, match="no pixels"):
        show(nuclei[:0])
    with pytest.raises(DataError, match="dtype"):
        show(np.zeros((4, 4), dtype=complex))
    with pytest.raises(DataError, match="not str"):
        show("nuclei.tif")


def test_bad_arguments_are_refused(nuclei):
    with pytest.raises(DataError, match="negative"):
        show(nuclei, slices=[-2])
    with pytest.raises(DataError, match="slices is empty"):
        show(nuclei, slices=[])
    with pytest.raises(DataError, match="not an integer"):
        show(nuclei, slices=[1.5])
    with pytest.raises(DataError, match="titles has 1 entries but data has 2"):
        show([nuclei, nuclei], titles=["only one"])
    with pytest.raises(DataError, match="percentiles"):
        show(nuclei, percentiles=(99, 1))
    with pytest.raises(DataError, match="vmin 5 is greater than vmax 1"):
        show(nuclei, vmin=5, vmax=1)
    with pytest.raises(DataError, match="figsize"):
        show(nuclei, figsize=(0, 5))


def test_lazy_and_boolean_arrays(nuclei):
    import dask.array as da

    lazy = da.from_array(nuclei, chunks=(1, 256, 256))
    fig = show({"lazy": lazy, "mask": nuclei > 1000}, slices=[12], zoom=(0, 32, 0, 64))
    np.testing.assert_array_equal(_shown(fig.axes[0]), nuclei[12, :32, :64])
    np.testing.assert_array_equal(_shown(fig.axes[1]), (nuclei[12, :32, :64] > 1000))
