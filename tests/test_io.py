"""Tests of debcr.data.io on real microscopy files from shared/data."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from debcr.data import io
from debcr.data.io import (
    ImageMetadata,
    as_image_stack,
    load,
    open_output,
    register_format,
    supported_formats,
    unregister_format,
    write,
)
from debcr.data.io import tiff as io_tiff
from debcr.data.io import zarr as io_zarr
from debcr.errors import DataError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NUCLEI = DATA / "cells3d_nuclei" / "nuclei.tif"
IMG2D = DATA / "stardist" / "img2d.tif"
FMD_GT = DATA / "fmd_confocal_bpae_b" / "gt" / "19" / "avg50.png"
BEAD = DATA / "flowdec" / "bead-25pct_data.tif"


META3D = ImageMetadata(axes="ZYX", scale=(0.29, 0.26, 0.26), unit="um", extra={"note": [1, 2]})


@pytest.fixture(scope="module")
def nuclei() -> np.ndarray:
    return tifffile.imread(NUCLEI)


@pytest.fixture(scope="module")
def img2d() -> np.ndarray:
    return tifffile.imread(IMG2D)


@pytest.fixture(scope="module")
def fmd() -> np.ndarray:
    return np.asarray(Image.open(FMD_GT))


def leftovers(folder: Path) -> list[str]:
    """Temporary/backup siblings that atomic writes must never leave behind."""
    return [p.name for p in folder.iterdir() if p.name.startswith((".tmp-", ".old-"))]


# ------------------------------------------------------------------------------------------
# Reading real files
# ------------------------------------------------------------------------------------------


def test_load_real_files(nuclei: np.ndarray, img2d: np.ndarray, fmd: np.ndarray) -> None:
    vol, meta = load(NUCLEI, with_metadata=True)
    assert vol.shape == (60, 256, 256) and vol.dtype == np.uint16
    np.testing.assert_array_equal(vol, nuclei)
    assert meta.axes is not None and meta.axes.endswith("YX") and meta.scale is None
    img, meta2 = load(IMG2D, with_metadata=True)
    assert img.shape == (512, 512) and img.dtype == np.uint16 and meta2.axes == "YX"
    png = load(str(FMD_GT))
    assert png.shape == (512, 512) and png.dtype == np.uint8
    np.testing.assert_array_equal(png, fmd)


def test_lazy_tiff_memmap_or_zarr(nuclei: np.ndarray, img2d: np.ndarray) -> None:
    # img2d.tif is uncompressed and contiguous -> memory map
    mm = load(IMG2D, lazy=True)
    assert isinstance(mm, np.memmap)
    np.testing.assert_array_equal(mm, img2d)
    # nuclei.tif is deflate-compressed -> chunked zarr view decoding on access
    lazy = load(NUCLEI, lazy=True)
    assert not isinstance(lazy, np.ndarray)
    assert lazy.shape == nuclei.shape and lazy.dtype == nuclei.dtype
    np.testing.assert_array_equal(lazy[30, 100:120], nuclei[30, 100:120])


def test_lazy_npy_is_memmap(tmp_path: Path, img2d: np.ndarray) -> None:
    write(tmp_path / "a.npy", img2d)
    mm = load(tmp_path / "a.npy", lazy=True)
    assert isinstance(mm, np.memmap) and not mm.flags.writeable
    np.testing.assert_array_equal(mm, img2d)


# ------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["tif", "tiff", "ome.tif", "npy", "zarr", "ome.zarr"])
@pytest.mark.parametrize("which", ["nuclei", "img2d"])
def test_round_trip_formats(tmp_path: Path, ext: str, which: str, request) -> None:
    data = request.getfixturevalue(which)
    (out,) = write(tmp_path / f"out.{ext}", data)
    back = load(out)
    assert back.shape == data.shape and back.dtype == data.dtype
    np.testing.assert_array_equal(np.asarray(back), data)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.uint8])
def test_tiff_keeps_dtype(tmp_path: Path, nuclei: np.ndarray, dtype) -> None:
    data = nuclei[:4].astype(dtype)
    write(tmp_path / "d.tif", data)
    back = load(tmp_path / "d.tif")
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, data)


@pytest.mark.parametrize("name", ["m.tif", "m.ome.tif", "m.zarr", "m.ome.zarr"])
def test_axes_and_scale_survive(tmp_path: Path, nuclei: np.ndarray, name: str) -> None:
    write(tmp_path / name, nuclei, metadata=META3D)
    _, meta = load(tmp_path / name, with_metadata=True)
    assert meta.axes == "ZYX" and meta.unit == "micrometer"
    assert meta.scale == pytest.approx((0.29, 0.26, 0.26), rel=1e-6)
    if not name.endswith("ome.tif"):  # OME-XML has no slot for free-form extras
        assert meta.extra == {"note": [1, 2]}


def test_tiff_is_imagej_hyperstack(tmp_path: Path, nuclei: np.ndarray) -> None:
    meta = ImageMetadata(axes="TYX", scale=(2.0, 0.5, 0.5), unit="micron")
    write(tmp_path / "t.tif", nuclei.astype(np.float32), metadata=meta)
    with tifffile.TiffFile(tmp_path / "t.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "TYX"
        assert tif.imagej_metadata["unit"] == "micron"
        assert tif.series[0].dtype == np.float32
    _, meta2 = load(tmp_path / "t.tif", with_metadata=True)
    assert meta2.axes == "TYX" and meta2.scale == pytest.approx((2.0, 0.5, 0.5))


def test_non_imagej_dtype_keeps_metadata(tmp_path: Path, img2d: np.ndarray) -> None:
    meta = ImageMetadata(axes="YX", scale=(0.1, 0.2), unit="nm", extra={"a": 1})
    write(tmp_path / "f64.tif", img2d.astype(np.float64), metadata=meta)
    back, meta2 = load(tmp_path / "f64.tif", with_metadata=True)
    assert back.dtype == np.float64
    assert meta2 == ImageMetadata(axes="YX", scale=(0.1, 0.2), unit="nanometer", extra={"a": 1})


def test_tiff_compression_and_bigtiff_choice(tmp_path: Path, nuclei: np.ndarray) -> None:
    write(tmp_path / "z.tif", nuclei, compression="zlib")
    with tifffile.TiffFile(tmp_path / "z.tif") as tif:
        assert tif.pages[0].compression != 1
    np.testing.assert_array_equal(load(tmp_path / "z.tif"), nuclei)
    opts = io.WriteOptions()
    big = io_tiff._tiff_write_kwargs(Path("b.tif"), (3, 2**15, 2**15), np.dtype(np.float32), opts)
    small = io_tiff._tiff_write_kwargs(Path("s.tif"), (3, 256, 256), np.dtype(np.float32), opts)
    assert big["bigtiff"] is True and "imagej" not in big
    assert small["bigtiff"] is False and small["imagej"] is True


def test_imagej_singleton_axes_are_squeezed(tmp_path: Path, nuclei: np.ndarray) -> None:
    hyper = nuclei[None, :5, None]  # T=1, Z=5, C=1
    tifffile.imwrite(tmp_path / "h.tif", hyper, imagej=True, metadata={"axes": "TZCYX"})
    data, meta = load(tmp_path / "h.tif", with_metadata=True)
    stack = as_image_stack(data, axes=meta.axes)
    assert stack.shape == (5, 256, 256)
    assert meta.squeezed(data.shape).axes[-2:] == "YX"
    np.testing.assert_array_equal(stack, nuclei[:5])


def test_png_round_trips(tmp_path: Path, fmd: np.ndarray, img2d: np.ndarray) -> None:
    write(tmp_path / "g.png", fmd)
    back = load(tmp_path / "g.png")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, fmd)
    write(tmp_path / "g16.png", img2d)  # uint16 stays 16-bit
    back16 = load(tmp_path / "g16.png")
    assert back16.dtype == np.uint16
    np.testing.assert_array_equal(back16, img2d)


def test_jpeg_round_trip_is_close(tmp_path: Path, fmd: np.ndarray) -> None:
    write(tmp_path / "g.jpg", fmd)
    back = load(tmp_path / "g.jpg")
    assert back.dtype == np.uint8 and back.shape == fmd.shape
    assert np.abs(back.astype(float) - fmd).mean() < 1.0
    with pytest.raises(DataError, match="8-bit"):
        write(tmp_path / "h.jpeg", fmd, bit_depth=16)


def test_png_float_unit_range_is_not_zeros(tmp_path: Path, fmd: np.ndarray) -> None:
    x = fmd.astype(np.float32) / 255.0 * 0.9 + 0.05  # float data in [0, 1]
    write(tmp_path / "f.png", x)
    back = load(tmp_path / "f.png")
    assert back.dtype == np.uint8 and back.max() > 0
    assert np.abs(back / 255.0 - x).max() <= 1 / 255
    write(tmp_path / "f16.png", x, bit_depth=16)
    back16 = load(tmp_path / "f16.png")
    assert back16.dtype == np.uint16
    assert np.abs(back16 / 65535.0 - x).max() <= 1 / 65535


def test_png_float_out_of_range_rescales_with_warning(
    tmp_path: Path, img2d: np.ndarray, caplog
) -> None:
    x = img2d.astype(np.float32) * 3.5 - 200.0  # far below 0: cannot be stored as it is
    with caplog.at_level(logging.WARNING, logger="debcr.data.io"):
        write(tmp_path / "r.png", x)
    assert "rescaling" in caplog.text
    back = load(tmp_path / "r.png")
    assert back.dtype == np.uint16 and back.min() == 0 and back.max() == 65535
    assert np.corrcoef(back.ravel(), x.ravel())[0, 1] > 0.999
    with caplog.at_level(logging.WARNING, logger="debcr.data.io"):
        write(tmp_path / "r8.png", x, bit_depth=8)
    assert load(tmp_path / "r8.png").max() == 255


def test_png_of_a_restored_8bit_image_keeps_its_values(
    tmp_path: Path, fmd: np.ndarray, caplog
) -> None:
    """A float restoration in the input's 8-bit units is rounded, not stretched (no warning)."""
    from debcr.model import predict

    restored = predict("2D_denoising", fmd[:128, :128], progress=False)
    assert restored.dtype == np.float32 and 1.0 < restored.max() <= 255 * 1.02
    with caplog.at_level(logging.INFO, logger="debcr.data.io"):
        write(tmp_path / "restored.png", restored)
    assert "rescaling" not in caplog.text
    back = load(tmp_path / "restored.png")
    assert back.dtype == np.uint8
    assert np.abs(back - np.clip(restored, 0, 255)).max() <= 0.5 + 1e-4


def test_png_stack_one_file_per_plane(tmp_path: Path, nuclei: np.ndarray) -> None:
    paths = write(tmp_path / "s.png", nuclei[:3])
    assert [p.name for p in paths] == ["s_0001.png", "s_0002.png", "s_0003.png"]
    for z, p in enumerate(paths):
        np.testing.assert_array_equal(load(p), nuclei[z])
    with pytest.raises(FileExistsError, match=r"s_0001\.png"):
        write(tmp_path / "s.png", nuclei[:3])


def test_grey_rgb_png_is_2d_and_colour_refused(tmp_path: Path, fmd: np.ndarray) -> None:
    Image.fromarray(np.stack([fmd] * 3 + [np.full_like(fmd, 255)], -1)).save(tmp_path / "g.png")
    grey = load(tmp_path / "g.png")
    assert grey.shape == fmd.shape
    np.testing.assert_array_equal(grey, fmd)
    colour = np.stack([fmd, fmd[::-1], fmd], -1)
    Image.fromarray(colour).save(tmp_path / "c.png")
    with pytest.raises(DataError, match="colour") as info:
        load(tmp_path / "c.png")
    assert "c.png" in str(info.value) and "split the channels" in str(info.value)


def test_npz_dict_round_trip(tmp_path: Path, fmd: np.ndarray) -> None:
    pairs = {"low": fmd[:64, :64][None], "gt": fmd[64:128, :64][None]}
    write(tmp_path / "t.npz", pairs)
    back = load(tmp_path / "t.npz")
    assert isinstance(back, dict) and sorted(back) == ["gt", "low"]
    np.testing.assert_array_equal(back["gt"], pairs["gt"])
    np.testing.assert_array_equal(load(tmp_path / "t.npz", key="low"), pairs["low"])
    with pytest.raises(DataError, match="'low'"):
        load(tmp_path / "t.npz", key="nope")
    with pytest.raises(DataError, match=r"\{'low': low, 'gt': gt\}"):
        write(tmp_path / "u.npz", fmd)
    with pytest.raises(DataError, match="key"):
        load(FMD_GT, key="low")


def test_ome_zarr_metadata_layout(tmp_path: Path, nuclei: np.ndarray) -> None:
    write(tmp_path / "v.zarr", nuclei, metadata=META3D, ome=True)
    attrs = json.loads((tmp_path / "v.zarr" / "zarr.json").read_text())["attributes"]
    ms = attrs["ome"]["multiscales"][0]
    assert attrs["ome"]["version"] == "0.5"
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert ms["datasets"][0]["path"] == "0"
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.29, 0.26, 0.26]
    arr, meta = load(tmp_path / "v.zarr", with_metadata=True)
    assert type(arr).__name__ == "Array" and meta.axes == "ZYX"
    np.testing.assert_array_equal(arr[:], nuclei)


def test_ngff_04_group_is_read(tmp_path: Path, img2d: np.ndarray) -> None:
    import zarr

    group = zarr.open_group(str(tmp_path / "old.ome.zarr"), mode="w", zarr_format=2)
    group.create_array("s0", data=img2d[None, None], chunks=(1, 1, 256, 256))
    group.create_array("s1", data=img2d[None, None, ::2, ::2], chunks=(1, 1, 256, 256))
    axes = [
        {"name": "t", "type": "time"},
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    datasets = [
        {"path": p, "coordinateTransformations": [{"type": "scale", "scale": [1, 1, s, s]}]}
        for p, s in (("s0", 0.5), ("s1", 1.0))
    ]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    arr, meta = load(tmp_path / "old.ome.zarr", with_metadata=True)
    assert arr.shape == (1, 1, 512, 512) and meta.axes == "TCYX"
    assert meta.scale == (1.0, 1.0, 0.5, 0.5) and meta.unit == "micrometer"
    stack = as_image_stack(arr, axes=meta.axes)
    assert stack.shape == (512, 512)
    np.testing.assert_array_equal(stack[100:110, 5], img2d[100:110, 5])
    np.testing.assert_array_equal(np.asarray(stack), img2d)
    assert meta.squeezed(arr.shape) == ImageMetadata(axes="YX", scale=(0.5, 0.5), unit="um")
    assert load(tmp_path / "old.ome.zarr", key="s1").shape == (1, 1, 256, 256)


def test_zarr_chunks_and_compression(tmp_path: Path, nuclei: np.ndarray) -> None:
    big = np.tile(nuclei[:2].astype(np.float32), (1, 4, 3))  # 2 x 1024 x 768 float32 = 6 MiB
    write(tmp_path / "c.zarr", big, compression="gzip")
    arr = load(tmp_path / "c.zarr")
    assert arr.chunks == (1, 512, 512)
    np.testing.assert_array_equal(arr[:], big)
    write(tmp_path / "n.zarr", nuclei[:2], compression="none", chunks=(1, 128, 128))
    assert load(tmp_path / "n.zarr").chunks == (1, 128, 128)
    with pytest.raises(DataError, match="compression"):
        write(tmp_path / "x.zarr", nuclei[:2], compression="lzma-9000")


# ------------------------------------------------------------------------------------------
# Dimensionality
# ------------------------------------------------------------------------------------------


def test_as_image_stack_squeezes_views(tmp_path: Path, nuclei: np.ndarray) -> None:
    five = nuclei[None, :4, None]
    stack = as_image_stack(five)
    assert stack.shape == (4, 256, 256) and np.shares_memory(stack, nuclei)
    assert as_image_stack(nuclei) is nuclei
    assert as_image_stack(nuclei[:1]).shape == (256, 256)
    np.save(tmp_path / "m.npy", five)
    assert isinstance(as_image_stack(load(tmp_path / "m.npy", lazy=True)), np.memmap)


@pytest.mark.parametrize(
    ("shape", "axes", "match"),
    [
        ((2, 3, 8, 9), None, "2-D images"),
        ((9,), None, "2-D images"),
        ((2, 3, 1, 8, 9), None, "2-D images"),
        ((3, 8, 9), "CYX", "channels"),
        ((8, 9, 3), "YXS", "colour"),
        ((0, 9), None, "empty"),
    ],
)
def test_as_image_stack_rejects(shape, axes, match) -> None:
    with pytest.raises(DataError, match=match):
        as_image_stack(np.zeros(shape, np.uint8), axes=axes)


def test_zarr_squeezed_view_indexing(tmp_path: Path, nuclei: np.ndarray) -> None:
    write(tmp_path / "a.zarr", nuclei[None, :3, None])
    view = as_image_stack(load(tmp_path / "a.zarr"))
    assert view.shape == (3, 256, 256) and view.ndim == 3 and len(view) == 3
    np.testing.assert_array_equal(view[1], nuclei[1])
    np.testing.assert_array_equal(view[..., 7], nuclei[:3, :, 7])
    np.testing.assert_array_equal(view[2, 10:20, ::3], nuclei[2, 10:20, ::3])
    np.testing.assert_array_equal(np.asarray(view), nuclei[:3])


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothere\.tif"):
        load(tmp_path / "nothere.tif")


def test_unknown_extension(tmp_path: Path) -> None:
    (tmp_path / "x.bmpx").write_bytes(b"123")
    with pytest.raises(DataError, match=r"x\.bmpx.*\.tif") as info:
        load(tmp_path / "x.bmpx")
    assert ".zarr" in str(info.value)
    with pytest.raises(DataError, match="unknown file type"):
        write(tmp_path / "y.czi", np.zeros((4, 4)))


@pytest.mark.parametrize("name", ["bad.tif", "bad.png", "bad.npy", "bad.npz", "bad.jpg"])
def test_corrupt_files(tmp_path: Path, name: str) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / name).write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match=f"could not read .*{name}"):
        load(tmp_path / name)


def test_truncated_npy_and_tif(tmp_path: Path, nuclei: np.ndarray) -> None:
    np.save(tmp_path / "t.npy", nuclei)
    raw = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"could not read .*t\.npy as NPY"):
        load(tmp_path / "t.npy")
    tifffile.imwrite(tmp_path / "t.tif", nuclei)
    raw = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(raw[:1000])
    with pytest.raises(DataError, match=r"could not read .*t\.tif as TIFF"):
        load(tmp_path / "t.tif")


def test_load_rejects_4d(tmp_path: Path) -> None:
    np.save(tmp_path / "four.npy", np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"four\.npy.*2-D images.*3-D stacks"):
        load(tmp_path / "four.npy")


def test_existing_output_needs_overwrite(tmp_path: Path, img2d: np.ndarray) -> None:
    write(tmp_path / "o.tif", img2d)
    with pytest.raises(FileExistsError, match=r"o\.tif.*overwrite=True"):
        write(tmp_path / "o.tif", img2d[::-1])
    write(tmp_path / "o.tif", img2d[::-1], overwrite=True)
    np.testing.assert_array_equal(load(tmp_path / "o.tif"), img2d[::-1])
    write(tmp_path / "o.zarr", img2d)
    write(tmp_path / "o.zarr", img2d[::-1], overwrite=True)  # directory replaced
    np.testing.assert_array_equal(load(tmp_path / "o.zarr")[:], img2d[::-1])
    assert leftovers(tmp_path) == []


def test_inputs_are_protected(tmp_path: Path, img2d: np.ndarray) -> None:
    src = tmp_path / "in.tif"
    write(src, img2d)
    os.symlink(src, tmp_path / "alias.tif")
    for target in (src, tmp_path / "alias.tif", tmp_path / "sub" / ".." / "in.tif"):
        with pytest.raises(DataError, match="refusing to overwrite the input"):
            write(target, img2d[::-1], overwrite=True, inputs=[src])
    with pytest.raises(DataError, match="refusing"):
        with open_output(src, img2d.shape, img2d.dtype, overwrite=True, inputs=str(src)):
            pass
    np.testing.assert_array_equal(load(src), img2d)


# ------------------------------------------------------------------------------------------
# Atomic writing
# ------------------------------------------------------------------------------------------


def test_writer_failure_leaves_old_file(tmp_path: Path, img2d: np.ndarray, monkeypatch) -> None:
    write(tmp_path / "a.npy", img2d)

    def broken_save(file, arr, **kwargs):
        Path(file).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write(tmp_path / "a.npy", img2d[::-1], overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        write(tmp_path / "new.npy", img2d)
    monkeypatch.undo()
    np.testing.assert_array_equal(load(tmp_path / "a.npy"), img2d)
    assert not (tmp_path / "new.npy").exists() and leftovers(tmp_path) == []


def test_zarr_failure_mid_copy(tmp_path: Path, nuclei: np.ndarray, monkeypatch) -> None:
    write(tmp_path / "v.zarr", nuclei[:2])

    def broken_copy(src, dst):
        dst[0] = np.asarray(src[0])
        raise RuntimeError("interrupted")

    monkeypatch.setattr(io_zarr, "_copy_blockwise", broken_copy)
    with pytest.raises(RuntimeError, match="interrupted"):
        write(tmp_path / "v.zarr", nuclei[2:4], overwrite=True)
    monkeypatch.undo()
    np.testing.assert_array_equal(load(tmp_path / "v.zarr")[:], nuclei[:2])
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["o.tif", "o.npy", "o.zarr", "o.ome.zarr", "o.png"])
def test_open_output_tiles(tmp_path: Path, nuclei: np.ndarray, name: str) -> None:
    data = nuclei[:3]
    with open_output(tmp_path / name, data.shape, data.dtype, metadata=META3D) as out:
        assert not (tmp_path / name).exists()  # invisible until complete
        for z in range(3):
            for y in range(0, 256, 128):
                out[z, y : y + 128] = data[z, y : y + 128]
    if name.endswith(".png"):
        np.testing.assert_array_equal(load(tmp_path / "o_0002.png"), data[1])
        return
    back, meta = load(tmp_path / name, with_metadata=True)
    np.testing.assert_array_equal(np.asarray(back), data)
    if name != "o.npy":
        assert meta.axes == "ZYX" and meta.scale == pytest.approx(META3D.scale)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["o.tif", "o.npy", "o.zarr"])
def test_open_output_failure_keeps_old(tmp_path: Path, img2d: np.ndarray, name: str) -> None:
    write(tmp_path / name, img2d)
    with pytest.raises(RuntimeError, match="tile failed"):
        with open_output(tmp_path / name, img2d.shape, np.float32, overwrite=True) as out:
            out[:100] = 1.0
            raise RuntimeError("tile failed")
    back = load(tmp_path / name)
    assert back.dtype == img2d.dtype
    np.testing.assert_array_equal(np.asarray(back), img2d)
    with pytest.raises(RuntimeError):
        with open_output(tmp_path / "fresh.tif", (4, 8, 8), np.uint16):
            raise RuntimeError("boom")
    assert not (tmp_path / "fresh.tif").exists() and leftovers(tmp_path) == []


def test_open_output_refuses_existing_and_compressed_memmap(tmp_path: Path) -> None:
    write(tmp_path / "e.npy", np.zeros((4, 4)))
    with pytest.raises(FileExistsError, match="overwrite"):
        with open_output(tmp_path / "e.npy", (4, 4), np.float32):
            pass
    with pytest.raises(DataError, match="zarr"):
        with open_output(tmp_path / "c.tif", (4, 4), np.float32, compression="zlib"):
            pass
    assert leftovers(tmp_path) == []


def test_a_tiff_without_resolution_tags_is_uncalibrated(tmp_path: Path) -> None:
    # tifffile reports 1 pixel per inch where the tags are missing: not a 25,400 µm pixel.
    with tifffile.TiffFile(BEAD) as tif:
        assert "XResolution" not in tif.pages[0].tags
    data, meta = load(BEAD, with_metadata=True)
    assert data.shape == (64, 64, 64)
    assert meta.scale is None and meta.unit is None
    write(tmp_path / "b.ome.zarr", data, metadata=meta)
    _, back = load(tmp_path / "b.ome.zarr", with_metadata=True)
    assert back.scale is None or all(v == 1.0 for v in back.scale)


def _file_rss() -> int:
    """Bytes of file-backed pages resident in this process (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssFile in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux /proc")
def test_release_mapped_hands_back_pages_and_keeps_the_data(
    tmp_path: Path, nuclei: np.ndarray
) -> None:
    from debcr.data.io.memory import release_mapped

    data = np.tile(nuclei.astype(np.float32), (4, 1, 1))  # 240 × 256² float32: 60 MiB
    with open_output(tmp_path / "o.tif", data.shape, np.float32) as out:
        before = _file_rss()
        out[:] = data
        written = _file_rss()
        assert written - before > 0.8 * data.nbytes
        release_mapped(out[10:])  # a view of the mapping hands back the whole mapping
        assert written - _file_rss() > 0.8 * data.nbytes
        np.testing.assert_array_equal(out[100], data[100])  # mapped again on access
    np.testing.assert_array_equal(np.asarray(load(tmp_path / "o.tif")), data)

    inputs = load(tmp_path / "o.tif", lazy=True)  # an uncompressed TIFF: memory-mapped
    assert isinstance(inputs, np.memmap) and inputs.mode == "r"
    total = float(inputs.sum(dtype=np.float64))
    read = _file_rss()
    release_mapped(inputs, data, None)  # arrays that are no mapping are left alone
    assert read - _file_rss() > 0.8 * data.nbytes
    assert float(inputs.sum(dtype=np.float64)) == total

    private = np.load(_npy(tmp_path, data[:8]), mmap_mode="c")  # copy-on-write: changes kept
    private[0] = -1.0
    release_mapped(private)
    assert (private[0] == -1.0).all()


def _npy(folder: Path, data: np.ndarray) -> Path:
    np.save(folder / "d.npy", data)
    return folder / "d.npy"


# ------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------


def test_register_custom_format(tmp_path: Path, img2d: np.ndarray) -> None:
    def reader(path, opts):
        return np.loadtxt(path, dtype=np.uint16, ndmin=2), ImageMetadata(axes="YX")

    def writer(path, data, opts):
        np.savetxt(path, np.asarray(data), fmt="%d")

    fmt = register_format("TXTIMG", reader, writer, name="Text image")
    try:
        assert fmt in supported_formats() and fmt.extensions == (".txtimg",)
        write(tmp_path / "a.TXTIMG", img2d[:16, :16])
        np.testing.assert_array_equal(load(tmp_path / "a.TXTIMG"), img2d[:16, :16])
    finally:
        unregister_format(".txtimg")
    names = {f.name for f in supported_formats()}
    assert {"TIFF", "PNG", "JPEG", "NPY", "NPZ", "Zarr"} <= names


# ------------------------------------------------------------------------------------------
# Property test
# ------------------------------------------------------------------------------------------

_arrays = st.sampled_from([np.uint8, np.uint16, np.float32]).flatmap(
    lambda dt: hnp.arrays(
        dtype=dt,
        shape=hnp.array_shapes(min_dims=2, max_dims=3, min_side=2, max_side=12),
        elements=hnp.from_dtype(np.dtype(dt), allow_nan=False, allow_infinity=False),
    )
)


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(data=_arrays, ext=st.sampled_from(["tif", "npy", "zarr"]))
def test_property_round_trip(data: np.ndarray, ext: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (path,) = write(Path(folder) / f"p.{ext}", data)
        back = np.asarray(load(path))
    assert back.dtype == data.dtype and back.shape == data.shape
    np.testing.assert_array_equal(back, data)


def test_rgb_tiff_grey_collapses_colour_refused(tmp_path: Path, fmd: np.ndarray) -> None:
    tifffile.imwrite(tmp_path / "g.tif", np.stack([fmd] * 3, -1), photometric="rgb")
    grey, meta = load(tmp_path / "g.tif", with_metadata=True)
    assert grey.shape == fmd.shape and meta.axes == "YX"
    np.testing.assert_array_equal(grey, fmd)
    tifffile.imwrite(tmp_path / "c.tif", np.stack([fmd, fmd.T, fmd], -1), photometric="rgb")
    with pytest.raises(DataError, match="colour"):
        load(tmp_path / "c.tif")


def test_jpeg_of_16bit_data_rescales(tmp_path: Path, img2d: np.ndarray, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="debcr.data.io"):
        write(tmp_path / "w.jpg", img2d * 100)  # values up to 23500 do not fit 8 bits
    assert "8-bit" in caplog.text
    back = load(tmp_path / "w.jpg")
    assert back.dtype == np.uint8 and back.max() >= 250
