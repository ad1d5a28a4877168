"""Damaged files never end in a traceback: readers answer with our error types or a valid load.

Real files (TIFF, PNG, NPY, NPZ, Zarr, debcr model files, BMZ-like zips) are truncated,
bit-flipped and zero-filled with a fixed seed; every damaged copy must either load (an array of
real numbers: the damage hit pixel values only) or raise one of debcr's errors, whose message is a
single line naming the file.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from conftest import DATA
from debcr.cli import main
from debcr.data import load, write
from debcr.errors import DebcrError
from debcr.model import init, predict, save

CASES_PER_KIND = 12
OUTCOMES: Counter = Counter()


def _damage(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    size = len(data)
    if kind == "truncate":
        return data[: int(rng.integers(0, size))]
    buf = bytearray(data)
    if kind == "bitflip":
        for offset in rng.integers(0, size, size=int(rng.integers(1, 64))):
            buf[offset] ^= 1 << int(rng.integers(0, 8))
    else:  # zero-fill a range
        start = int(rng.integers(0, size))
        stop = min(size, start + int(rng.integers(1, max(2, size // 4))))
        buf[start:stop] = bytes(stop - start)
    return bytes(buf)


def _sources(folder: Path) -> dict[str, Path]:
    """Small valid files of every format, made from real data."""
    image = tifffile.imread(DATA / "stardist" / "img2d.tif")[:96, :128]
    stack = tifffile.imread(DATA / "cells3d_nuclei" / "nuclei.tif")[:3, :64, :64]
    files = {
        "tiff": folder / "img.tif",
        "ometiff": folder / "stack.ome.tif",
        "png": folder / "img.png",
        "npy": folder / "img.npy",
        "npz": folder / "pairs.npz",
    }
    tifffile.imwrite(files["tiff"], image, imagej=True, resolution=(1 / 0.2, 1 / 0.2))
    tifffile.imwrite(files["ometiff"], stack, metadata={"axes": "ZYX"})
    Image.fromarray((image // 2).astype(np.uint8)).save(files["png"])
    np.save(files["npy"], image)
    np.savez(files["npz"], low=stack.astype(np.float32), gt=stack.astype(np.float32))
    files["model"] = save(init(seed=0), folder / "model.safetensors")
    return files


def _check(path: Path, read: Callable[[Path], object]) -> str:
    try:
        read(path)
    except DebcrError as exc:
        message = str(exc)
        assert "\n" not in message.strip(), message
        assert path.name in message, message
        return "clear error"
    except FileNotFoundError as exc:  # a zero-length zarr chunk may remove a whole array
        assert path.name in str(exc)
        return "clear error"
    return "loaded"


def _check_cli(path: Path, out: Path) -> str:
    """What a user sees restoring a damaged (lazy) input with ``debcr predict``."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main(["predict", str(path), "-o", str(out), "--tile", "64", "-q"])
    message = stderr.getvalue().strip()
    if code == 0:
        return "loaded"
    assert code == 2 and "Traceback" not in message, message
    assert message.count("\n") == 0 and path.name in message, message
    return "clear error"


def _read_image(path: Path) -> object:
    data = np.asarray(load(path))
    # a flipped BitsPerSample may turn the file into a valid 1-bit (bool) image
    assert np.issubdtype(data.dtype, np.number) or data.dtype == bool
    return data


def _read_lazy_and_restore(path: Path) -> object:
    return predict("2D_denoising", load(path, lazy=True), tile_size=64, progress=False)


def _read_model(path: Path) -> object:
    return init(path)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    return _sources(tmp_path_factory.mktemp("fuzz-src"))


@pytest.mark.parametrize("kind", ["truncate", "bitflip", "zerofill"])
@pytest.mark.parametrize(
    ("fmt", "reader"),
    [
        ("tiff", _read_image),
        ("ometiff", _read_image),
        ("png", _read_image),
        ("npy", _read_image),
        ("npz", lambda p: load(p)),
        ("model", _read_model),
    ],
)
def test_damaged_files_load_or_fail_clearly(sources, tmp_path, fmt, reader, kind) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{fmt}-{kind}".encode()))
    original = sources[fmt].read_bytes()
    for i in range(CASES_PER_KIND):
        target = tmp_path / f"{i}-{sources[fmt].name}"
        target.write_bytes(_damage(original, kind, rng))
        outcome = _check(target, reader)
        # a cut-off file is never a valid image (OME-TIFF used to open as its first plane)
        assert kind != "truncate" or outcome == "clear error", target
        OUTCOMES[(fmt, kind, outcome)] += 1
    assert sum(v for (f, k, _), v in OUTCOMES.items() if (f, k) == (fmt, kind)) >= CASES_PER_KIND


def test_damaged_lazy_tiff_fails_clearly_when_restored(sources, tmp_path) -> None:
    """Truncation found only while tiles are read (lazy input) still names the file."""
    rng = np.random.default_rng(5)
    original = sources["tiff"].read_bytes()
    for i in range(CASES_PER_KIND):
        target = tmp_path / f"{i}-lazy.tif"
        target.write_bytes(_damage(original, "truncate", rng))
        OUTCOMES[("tiff-lazy-predict", "truncate", _check(target, _read_lazy_and_restore))] += 1


@pytest.mark.parametrize("kind", ["truncate", "bitflip", "zerofill"])
def test_damaged_zarr_chunks_load_or_fail_clearly(sources, tmp_path, kind) -> None:
    base = tmp_path / "base.zarr"
    write(base, tifffile.imread(DATA / "cells3d_nuclei" / "nuclei.tif")[:2, :64, :64])
    chunks = sorted(p for p in base.rglob("*") if p.is_file())
    rng = np.random.default_rng(len(kind))
    for i in range(CASES_PER_KIND):
        copy = tmp_path / f"{i}.zarr"
        shutil.copytree(base, copy)
        victim = copy / chunks[int(rng.integers(0, len(chunks)))].relative_to(base)
        victim.write_bytes(_damage(victim.read_bytes(), kind, rng))
        OUTCOMES[("zarr", kind, _check_cli(copy, tmp_path / f"{i}-out.tif"))] += 1


def test_subnormal_values_scale_or_fail_clearly(tmp_path) -> None:
    """float64 images of values near 1e-298 are restored like their scaled-up copies."""
    image = tifffile.imread(DATA / "stardist" / "img2d.tif")[:128, :128].astype(np.float64)
    tiny = image * 1e-300
    try:
        restored = predict("2D_denoising", tiny, progress=False)
    except DebcrError as exc:
        assert "\n" not in str(exc) and "float32" in str(exc), str(exc)
        OUTCOMES[("float64 1e-298", "subnormal", "clear error")] += 1
        return
    reference = predict("2D_denoising", image, progress=False)
    assert np.std(restored) > 0, "a constant garbage image"
    np.testing.assert_allclose(restored / 1e-300, reference, rtol=1e-3, atol=1e-3 * image.max())
