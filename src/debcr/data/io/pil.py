"""PNG and JPEG (via Pillow): reader, writers, and the conversion to 8/16-bit integers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from debcr.data.io.metadata import ImageMetadata
from debcr.data.io.registry import ReadOptions, WriteOptions, register_format
from debcr.data.io.stack import _grey_from_channels
from debcr.errors import DataError

log = logging.getLogger(__name__)


def _read_pil(path: Path, opts: ReadOptions) -> tuple[np.ndarray, ImageMetadata]:
    with Image.open(path) as image:
        if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("RGBA" if "A" in image.mode or image.mode == "P" else "RGB")
        elif image.mode == "1":
            image = image.convert("L")
        arr = np.asarray(image)
    if arr.dtype == np.int32 and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        arr = arr.astype(np.uint16)  # 16-bit files that Pillow opened in 32-bit mode 'I'
    if arr.ndim == 3:
        arr = _grey_from_channels(arr, str(path))
    return arr, ImageMetadata(axes="YX")


#: Overshoot beyond the integer range, as a fraction of the data's range, clipped not rescaled.
_OVERSHOOT = 0.02
#: Float images with values up to this are taken as normalised intensities ([0, 1]).
_NORMALISED_MAX = 2.0


def _to_display_integers(data: Any, bit_depth: int | None, max_bits: int, name: str) -> np.ndarray:
    """Convert data to uint8/uint16 for PNG/JPEG without losing the image content.

    Integer data that fit the target type are kept as is. Float data up to 2 are taken as
    normalised intensities: [0, 1] maps to the full integer range (overshoot is clipped). Float
    data already in the integer range (e.g. a restoration of an 8-bit image, in its units) are
    rounded, keeping their values; a small overshoot (≤ 2 % of the data's range) is clipped.
    Anything else is min-max rescaled with a warning, so a non-constant image never becomes all
    zeros.
    """
    if bit_depth not in (None, 8, 16):
        raise DataError(f"bit_depth={bit_depth!r} for {name}: use 8 or 16")
    if bit_depth == 16 and max_bits == 8:
        raise DataError(f"{name}: JPEG stores 8-bit data only; use .png or .tif for 16-bit")
    arr = np.asarray(data)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"cannot write {arr.dtype} data to {name}; give a real-valued array")
    if np.issubdtype(arr.dtype, np.integer):
        bits = bit_depth or (16 if arr.dtype.itemsize > 1 and max_bits == 16 else 8)
        target = np.uint8 if bits == 8 else np.uint16
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= np.iinfo(target).max:
            return arr.astype(target, copy=False)
        return _rescale(arr, lo, hi, bits, name)
    finite = np.isfinite(arr)
    if not finite.all():
        raise DataError(
            f"cannot write {name}: the data contain {arr.size - int(finite.sum())} NaN/Inf "
            "values; replace them first (e.g. numpy.nan_to_num)"
        )
    lo, hi = float(arr.min()), float(arr.max())
    # Values above 255 in a PNG are kept as 16-bit rather than squeezed into 8 bits.
    bits = bit_depth or (16 if max_bits == 16 and hi > 255 + _OVERSHOOT * 255 else 8)
    top = 2**bits - 1
    dtype = np.uint8 if bits == 8 else np.uint16
    if lo >= -_OVERSHOOT and hi <= _NORMALISED_MAX:
        scaled = np.rint(np.clip(arr.astype(np.float64), 0.0, 1.0) * top)
        return scaled.astype(dtype)
    margin = _OVERSHOOT * (hi - lo)
    if lo >= -margin and hi <= top + margin:
        outside = int(np.count_nonzero((arr < 0) | (arr > top)))
        if outside:
            log.info("%s: %d values just outside [0, %d] were clipped", name, outside, top)
        return np.rint(np.clip(arr, 0, top)).astype(dtype)
    return _rescale(arr, lo, hi, bits, name)


def _rescale(arr: np.ndarray, lo: float, hi: float, bits: int, name: str) -> np.ndarray:
    top = 2**bits - 1
    dtype = np.uint8 if bits == 8 else np.uint16
    if hi == lo:  # constant image: keep its value where it fits, do not invent contrast
        return np.full(arr.shape, np.clip(lo, 0, top), dtype=dtype)
    log.warning(
        "%s: values span [%g, %g], which does not fit %d-bit; rescaling min-max to [0, %d]. "
        "Save as .tif, .npy or .zarr to keep the original values.",
        name,
        lo,
        hi,
        bits,
        top,
    )
    scaled = (arr.astype(np.float64) - lo) * (top / (hi - lo))
    return np.rint(scaled).astype(dtype)


def _prepare_png(data: Any, opts: WriteOptions, name: str) -> np.ndarray:
    return _to_display_integers(data, opts.bit_depth, 16, name)


def _prepare_jpeg(data: Any, opts: WriteOptions, name: str) -> np.ndarray:
    return _to_display_integers(data, opts.bit_depth, 8, name)


def _write_png(path: Path, data: Any, opts: WriteOptions) -> None:
    Image.fromarray(np.ascontiguousarray(data)).save(path, format="PNG")


def _write_jpeg(path: Path, data: Any, opts: WriteOptions) -> None:
    # quality 95: JPEG is lossy; this keeps errors to ~1 grey level on microscopy images.
    Image.fromarray(np.ascontiguousarray(data)).save(path, format="JPEG", quality=95)


register_format(
    ".png", _read_pil, _write_png, name="PNG", planes_as_files=True, prepare=_prepare_png
)
register_format(
    (".jpg", ".jpeg"),
    _read_pil,
    _write_jpeg,
    name="JPEG",
    planes_as_files=True,
    prepare=_prepare_jpeg,
)
