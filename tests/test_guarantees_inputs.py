"""Inputs are not believed blindly: declared sizes, calibration, and one line per bad file.

Each test crafts a real file (TIFF bytes, a Zarr store) and reads it with the real readers; the
TIFF tags written are read back with tifffile directly, not only through ``debcr.data.io``.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from conftest import fmd_frame
from debcr.data.io import ImageMetadata, load, write
from debcr.data.normalize import compute_stats
from debcr.errors import DataError
from debcr.inference.tiles import check_halo, plan_tiles

#: Declared by the crafted files: 10⁶ × 10⁶ uint16 pixels are 1.8 TiB, more than any machine.
HUGE = 1_000_000


def _tiff_bytes(width: int, height: int, *, compression: int = 1, payload: int = 16) -> bytes:
    """A little-endian baseline TIFF of one uint16 strip declaring ``width`` × ``height`` pixels
    but holding only ``payload`` bytes of pixel data."""
    entries = [
        (256, 4, width),  # ImageWidth
        (257, 4, height),  # ImageLength
        (258, 3, 16),  # BitsPerSample
        (259, 3, compression),
        (262, 3, 1),  # PhotometricInterpretation: min-is-black
        (273, 4, 0),  # StripOffsets, filled in below
        (277, 3, 1),  # SamplesPerPixel
        (278, 4, height),  # RowsPerStrip: one strip
        (279, 4, payload),  # StripByteCounts
    ]
    pixels_at = 8 + 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for tag, kind, value in entries:
        value = pixels_at if tag == 273 else value
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, 1) + packed
    return bytes(out + struct.pack("<I", 0) + bytes(payload))


def test_tiff_declaring_more_pixels_than_it_holds_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "liar.tif"
    path.write_bytes(_tiff_bytes(HUGE, HUGE))
    for lazy in (False, True):
        with pytest.raises(DataError, match=r"declares 1000000×1000000 uint16 .* holds only 16"):
            load(path, lazy=lazy)


def test_npy_declaring_more_values_than_it_holds_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "small.npy", np.zeros((4, 4), np.uint16))
    raw = (tmp_path / "small.npy").read_bytes()
    # Same header length (its padding absorbs the longer shape), same 32 bytes of data.
    header = raw[10:128].decode("latin1").replace("(4, 4)", f"({HUGE}, {HUGE})")
    header = header.rstrip().ljust(117) + "\n"
    (tmp_path / "liar.npy").write_bytes(raw[:10] + header.encode("latin1") + raw[128:])
    for lazy in (False, True):
        with pytest.raises(DataError, match=r"declares 1000000×1000000 uint16 .* holds only 32"):
            load(tmp_path / "liar.npy", lazy=lazy)


def test_tiff_strip_larger_than_memory_is_refused_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "zip.tif"
    path.write_bytes(_tiff_bytes(HUGE, HUGE, compression=8))  # deflate: any size may be true
    for lazy in (False, True):
        with pytest.raises(DataError, match=r"1000000×1000000 uint16 pixels, would take 1\.8 TiB"):
            load(path, lazy=lazy)


def test_sampling_a_sparse_zarr_reads_a_bounded_number_of_chunks(tmp_path: Path) -> None:
    # 100 000² pixels in 512² chunks: 38 000 chunks declared, one of them written.
    store = zarr.storage.LoggingStore(zarr.storage.LocalStore(tmp_path / "sparse.zarr"))
    array = zarr.create_array(store=store, shape=(100_000,) * 2, chunks=(512, 512), dtype="u2")
    array[:512, :512] = fmd_frame()
    store.counter.clear()
    stats = compute_stats(array, sample=1_000_000)
    assert store.counter["get"] <= 100  # every k-th row and column would read all 38 000
    assert 0 <= stats.lo <= stats.hi <= 255


def test_a_halo_wider_than_the_image_or_memory_is_refused() -> None:
    with pytest.raises(DataError, match=r"800064×800064 float32 .* would take 2\.3 TiB"):
        plan_tiles((64, 64), 64, 400_000)
    with pytest.raises(DataError, match=r"halo 100000 is wider than the image \(64×48 pixels\)"):
        check_halo(100_000, (3, 64, 48))
    check_halo(64, (3, 64, 48))  # as wide as the image: context that is really there


def _tags(path: Path) -> tuple[float, int, str]:
    """(XResolution as a number, ResolutionUnit, OME-XML or '') read with tifffile's tags."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        num, den = page.tags["XResolution"].value
        return num / den, int(page.tags["ResolutionUnit"].value), tif.ome_metadata or ""


@pytest.mark.parametrize(
    ("name", "unit", "size", "per_cm"),
    [
        ("o.ome.tif", "um", 0.1, 1e5),  # OME-TIFF
        ("o.tif", "nm", 65.0, 1e7 / 65),  # int32: tifffile's JSON ("shaped") TIFF
    ],
)
def test_written_resolution_tags_are_pixels_per_centimetre(
    tmp_path: Path, name: str, unit: str, size: float, per_cm: float
) -> None:
    data = np.zeros((2, 8, 8), np.uint16 if name.endswith("ome.tif") else np.int32)
    meta = ImageMetadata(axes="ZYX", scale=(0.5, size, size), unit=unit)
    write(tmp_path / name, data, metadata=meta)
    resolution, resunit, _ = _tags(tmp_path / name)
    assert resunit == 3 and resolution == pytest.approx(per_cm, rel=1e-6)  # CENTIMETER


def test_unknown_sizes_are_not_written(tmp_path: Path) -> None:
    data = np.zeros((2, 8, 8), np.uint16)
    # A scale without a unit: OME would read micrometres, tag readers inches; neither is known.
    write(tmp_path / "a.ome.tif", data, metadata=ImageMetadata(axes="ZYX", scale=(2, 3, 3)))
    resolution, resunit, ome = _tags(tmp_path / "a.ome.tif")
    assert (resolution, resunit) == (1.0, 1) and "PhysicalSize" not in ome
    # Calibrated in Y and X only (ImageJ without spacing): no Z spacing is invented.
    tifffile.imwrite(
        tmp_path / "ij.tif", data, imagej=True, resolution=(5, 5), metadata={"unit": "um"}
    )
    image, meta = load(tmp_path / "ij.tif", with_metadata=True)
    write(tmp_path / "b.ome.tif", image, metadata=meta)
    resolution, resunit, ome = _tags(tmp_path / "b.ome.tif")
    assert (resunit, resolution) == (3, pytest.approx(5e4))
    assert 'PhysicalSizeX="0.2"' in ome and "PhysicalSizeZ" not in ome
    write(tmp_path / "c.tif", image, metadata=meta)  # ImageJ again: no made-up spacing
    with tifffile.TiffFile(tmp_path / "c.tif") as tif:
        assert "spacing" not in tif.imagej_metadata
    known = ImageMetadata(axes="ZYX", scale=(0.4, 0.2, 0.2), unit="um")
    write(tmp_path / "d.ome.tif", image, metadata=known)
    assert re.search(r'PhysicalSizeZ="0\.4"', _tags(tmp_path / "d.ome.tif")[2])


def test_default_dpi_is_no_calibration(tmp_path: Path) -> None:
    frame = fmd_frame()[:32, :32]
    Image.fromarray(frame).save(tmp_path / "pillow.tif", dpi=(72, 72))
    tifffile.imwrite(tmp_path / "dpi96.tif", frame, resolution=(96, 96), resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "cm.tif", frame, resolution=(5e4, 5e4), resolutionunit="CENTIMETER")
    for name in ("pillow.tif", "dpi96.tif"):
        assert load(tmp_path / name, with_metadata=True)[1].scale is None, name
    meta = load(tmp_path / "cm.tif", with_metadata=True)[1]
    assert meta.scale == pytest.approx((0.2, 0.2)) and meta.unit == "micrometer"


@pytest.mark.slow
def test_bad_inputs_each_end_in_exactly_one_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # A tiled, compressed TIFF with one damaged tile (read through zarr, concurrently).
    tifffile.imwrite(tmp_path / "damaged.tif", fmd_frame(), tile=(128, 128), compression="zlib")
    with tifffile.TiffFile(tmp_path / "damaged.tif") as tif:
        start, count = tif.pages[0].dataoffsets[5], tif.pages[0].databytecounts[5]
    raw = bytearray((tmp_path / "damaged.tif").read_bytes())
    raw[start : start + count] = b"\xff" * count
    (tmp_path / "damaged.tif").write_bytes(bytes(raw))
    # An ImageJ stack cut in half: tifffile logs two ERROR lines while opening it.
    tifffile.imwrite(tmp_path / "ij.tif", rng.integers(0, 255, (4, 64, 64), np.uint8), imagej=True)
    whole = (tmp_path / "ij.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "huge.tif").write_bytes(_tiff_bytes(HUGE, HUGE))
    tifffile.imwrite(tmp_path / "fine.tif", fmd_frame()[:64, :64])  # fails only for the halo
    names = ["damaged.tif", "cut.tif", "huge.tif", "fine.tif"]
    command = [sys.executable, "-m", "debcr.cli", "predict", *names, "-o", "out"]
    result = subprocess.run(
        [*command, "--halo", "400000", "--keep-going", "-q"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    lines = result.stderr.splitlines()
    assert result.returncode == 2
    assert len(lines) == len(names) + 1, result.stderr  # one per input, then the summary
    for name, line in zip(names, lines, strict=False):
        assert line.startswith(f"debcr predict: error: {name}: "), result.stderr
    assert "damaged or incomplete" in lines[0] and "incomplete (truncated?)" in lines[1]
    assert "holds only 16 bytes" in lines[2] and "halo 400000 is wider than the image" in lines[3]
