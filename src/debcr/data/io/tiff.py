"""TIFF (plain, ImageJ hyperstack, OME-TIFF) reader, writer and memory-mapped creator."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from debcr.data.io.memory import check_memory, format_bytes
from debcr.data.io.metadata import (
    ImageMetadata,
    _canonical_time_unit,
    _canonical_unit,
    _fit_metadata,
    _in_order,
    _sizes,
)
from debcr.data.io.registry import ReadOptions, WriteOptions, register_format
from debcr.data.io.stack import _grey_from_channels
from debcr.errors import DataError
from debcr.files import reserve

log = logging.getLogger(__name__)

#: Files above this size are written as BigTIFF (classic TIFF offsets are 32-bit).
BIGTIFF_THRESHOLD = 2**31

# ImageJ and OME-TIFF spell the canonical (OME-NGFF) units in short forms.
_IMAGEJ_UNITS = {"micrometer": "micron", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm"}
_OME_TIFF_UNITS = {"micrometer": "µm", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm"}
_IMAGEJ_TIME_UNITS = {"second": "sec", "millisecond": "ms", "microsecond": "us", "minute": "min"}
_OME_TIME_UNITS = {"second": "s", "millisecond": "ms", "microsecond": "µs", "nanosecond": "ns"}
_OME_TIME_UNITS.update(minute="min", hour="h")

# Pixel sizes in TIFF resolution tags are per resolution unit; we report micrometres.
_RESUNIT_TO_MICROMETER = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}
# Dots per inch that image programs write when they know no size (72: the TIFF/Photoshop/
# Pillow default, 96: the screen default); read as calibration, 72 dpi would be 352.8 µm/px.
_DEFAULT_DPI = (72.0, 96.0)
# How many of a length unit make a centimetre: written tags count pixels per centimetre, the
# one metric ResolutionUnit of baseline TIFF that every tag reader knows.
_PER_CENTIMETER = {"nanometer": 1e7, "micrometer": 1e4, "millimeter": 10.0, "centimeter": 1.0}
_PER_CENTIMETER["meter"] = 0.01


def _check_complete(tif: tifffile.TiffFile) -> None:
    """Refuse a TIFF whose chain of image directories points past the end of the file.

    Writers often put the directories of later planes at the end; a truncated file then still
    opens, as its first plane only (tifffile just logs the bad offset): a silently wrong image.
    """
    position = tif.pages.next_page_offset  # where the last directory stores the next one's
    if position is None:
        return
    fh = tif.filehandle
    fh.seek(position)
    raw = fh.read(tif.tiff.offsetsize)
    complete = len(raw) == tif.tiff.offsetsize
    following = struct.unpack(tif.tiff.offsetformat, raw)[0] if complete else fh.size
    if following >= fh.size:
        # load() words this as "could not read <path> as TIFF: …; re-copy or re-export it"
        raise ValueError(
            f"the file is incomplete (truncated?): after {len(tif.pages)} image plane(s) it "
            f"points to more data at byte {following}, beyond its end ({fh.size} bytes)"
        )


def _check_declared_size(series: Any, path: Path, lazy: bool) -> None:
    """Refuse a TIFF whose declared pixels are not in the file or cannot fit in memory.

    A few hundred bytes can declare 10⁶ × 10⁶ pixels; believed, that becomes a 1.8 TiB
    allocation. Checked before any pixel is read: pixel data beyond the end of the file (cut
    off), uncompressed data shorter than its declared size, and, against the free memory, one
    decoded strip or tile (every read decodes at least one) and, read eagerly, the whole image.
    """
    size = path.stat().st_size
    key = series.keyframe
    if series.dataoffset is not None:  # one uncompressed block: O(1), however many planes
        _check_held(path, series.shape, series.dtype, series.nbytes, size - series.dataoffset)
    else:
        for page in series.pages:
            _check_page_data(page, path, size)
    check_memory(
        math.prod(key.chunks) * key.dtype.itemsize,
        f"one piece (strip or tile) of {path}, {_describe(key.chunks, key.dtype)} pixels,",
        "re-save it in tiles (e.g. tifffile.imwrite(..., tile=(512, 512))) or check that "
        "the file is not damaged",
    )
    if not lazy:
        check_memory(
            int(series.nbytes),
            f"the {_describe(series.shape, series.dtype)} pixels that {path} declares",
            "read it with load(path, lazy=True), which keeps it on disk, or check that the "
            "file is not damaged",
        )


def _check_page_data(page: Any, path: Path, size: int) -> None:
    """Refuse a plane whose pixel data reach past the end of the file or, uncompressed, are
    shorter than declared."""
    if page is None:
        return
    counts, offsets = page.databytecounts, page.dataoffsets
    end = max((o + c for o, c in zip(offsets, counts, strict=True) if c), default=0)
    if end > size:
        raise DataError(
            f"could not read {path} as TIFF: it is incomplete (truncated?), its pixel data "
            f"reach byte {end}, beyond its end ({size} bytes); re-copy or re-export it"
        )
    key = page.keyframe
    if key.compression == 1 and all(counts):
        _check_held(path, key.shape, key.dtype, key.nbytes, sum(counts))


def _check_held(path: Path, shape: tuple[int, ...], dtype: Any, nbytes: int, held: int) -> None:
    """Refuse uncompressed pixels of ``nbytes`` of which the file holds only ``held`` bytes."""
    if nbytes > held:
        raise DataError(
            f"could not read {path} as TIFF: it declares {_describe(shape, dtype)} pixels "
            f"({format_bytes(nbytes)}) but holds only {format_bytes(max(held, 0))} of them; the "
            "file is damaged or incomplete: re-copy or re-export it"
        )


def _describe(shape: tuple[int, ...], dtype: Any) -> str:
    """``'1000000×1000000 uint16'``."""
    return f"{'×'.join(str(int(n)) for n in shape)} {np.dtype(dtype)}"


@contextlib.contextmanager
def _tifffile_messages(path: Path) -> Iterator[None]:
    """Hold back what tifffile logs while ``path`` is opened: when opening then fails, the
    error says what is wrong and tifffile's lines (``ERROR: … invalid page offset``) are only
    noise before it; when it succeeds, they are passed on as warnings naming the file."""
    records: list[logging.LogRecord] = []
    source = logging.getLogger("tifffile")
    handler = _Collect(records)
    propagate = source.propagate
    source.addHandler(handler)
    source.propagate = False
    try:
        yield
    finally:
        source.removeHandler(handler)
        source.propagate = propagate
    for record in records:
        log.warning("%s: %s", path.name, record.getMessage())


class _Collect(logging.Handler):
    """A logging handler that keeps the records in a list."""

    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _read_tiff(path: Path, opts: ReadOptions) -> tuple[Any, ImageMetadata]:
    with _tifffile_messages(path), tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        _check_complete(tif)
        _check_declared_size(series, path, opts.lazy)
        metadata = _tiff_metadata(tif, series)
        data = None if opts.lazy else series.asarray()
    if data is None:
        with _tifffile_messages(path):
            data = _open_tiff_lazy(path)
    elif metadata.axes and "S" in metadata.axes and data.shape[metadata.axes.index("S")] > 1:
        data, metadata = _grey_from_samples(data, metadata, str(path))
    return data, metadata


def _open_tiff_lazy(path: Path) -> Any:
    try:
        return tifffile.memmap(path, mode="r")
    except ValueError:  # compressed, tiled or scattered strips: not memory-mappable
        pass
    import zarr

    node = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    # Pyramidal TIFFs open as a group of levels; level "0" is full resolution.
    array = node if isinstance(node, zarr.Array) else node["0"]
    # A truncated file still opens; decoding its last chunk now (cheap) makes the damage an
    # error of load() naming the file, not a library error deep inside a later tile read.
    array[tuple(slice(max(0, n - c), n) for n, c in zip(array.shape, array.chunks, strict=True))]
    return array


def _tiff_metadata(tif: tifffile.TiffFile, series: Any) -> ImageMetadata:
    axes = series.axes
    page = series.pages[0] if series.pages and series.pages[0] is not None else tif.pages[0]
    sizes: dict[str, float] = {}
    unit: str | None = None
    extra: dict[str, Any] = {}
    time_unit: str | None = None
    channels: Any = None
    if tif.is_ome:
        sizes, unit, time_unit, channels = _ome_tiff_sizes(tif.ome_metadata)
    elif tif.is_imagej:
        ij = tif.imagej_metadata or {}
        unit = _canonical_unit(ij.get("unit"))
        sizes = _resolution_sizes(page, 1.0)
        if ij.get("spacing"):
            sizes["Z"] = float(ij["spacing"])
        if ij.get("finterval"):
            sizes["T"] = float(ij["finterval"])
            time_unit = ij.get("tunit") or "second"  # ImageJ's default is seconds
        channels = _imagej_channel_names(ij, axes, series.shape)
        extra = _json_or_empty((ij.get("Properties") or {}).get("debcr"))
        if unit is None and sizes.get("X") == 1.0 and sizes.get("Y") == 1.0:
            sizes = {k: v for k, v in sizes.items() if k not in "XY"}
    else:
        shaped = (tif.shaped_metadata or ({},))[0] if tif.is_shaped else {}
        scale = shaped.get("scale")
        if isinstance(scale, list) and len(scale) == len(axes):
            placeholders = shaped.get("uncalibrated")
            placeholders = placeholders if isinstance(placeholders, str) else ""
            sizes = {a: float(s) for a, s in zip(axes, scale, strict=True) if a not in placeholders}
            unit = shaped.get("unit")
        else:
            sizes, unit = _resolution_tags(page)
        extra = shaped.get("debcr") if isinstance(shaped.get("debcr"), dict) else {}
        time_unit, channels = shaped.get("time_unit"), shaped.get("channel_names")
    # Sizes the file does not give are placeholders (1.0), marked so that no writer stores them.
    scale = tuple(sizes.get(a, 1.0) for a in axes) if sizes else None
    if "T" not in axes or "T" not in sizes:
        time_unit = None
    return ImageMetadata(
        axes=axes,
        scale=scale,
        uncalibrated="".join(a for a in axes if a not in sizes),
        unit=unit,
        extra=extra,
        time_unit=time_unit if isinstance(time_unit, str) else None,
        channel_names=_channel_names(channels, axes, series.shape),
    )


def _channel_names(names: Any, axes: str, shape: tuple[int, ...]) -> tuple[str, ...] | None:
    """``names`` if they are one string per entry of the C axis, else None."""
    if "C" not in axes or not isinstance(names, (list, tuple)):
        return None
    count = shape[axes.index("C")]
    if len(names) != count or not all(isinstance(n, str) and n for n in names):
        return None
    return tuple(names)


def _imagej_channel_names(ij: dict[str, Any], axes: str, shape: tuple[int, ...]) -> Any:
    """ImageJ keeps one label per plane, channels varying fastest; those of the first planes."""
    labels = ij.get("Labels")
    if "C" not in axes or not isinstance(labels, list):
        return None
    return labels[: shape[axes.index("C")]]


def _resolution_sizes(page: Any, factor: float) -> dict[str, float]:
    """Pixel sizes along X and Y from the resolution tags (pixels per unit), times ``factor``."""
    try:
        xres, yres = page.resolution
    except (AttributeError, TypeError, ValueError):
        return {}
    if not xres or not yres:
        return {}
    return {"X": factor / float(xres), "Y": factor / float(yres)}


def _resolution_tags(page: Any) -> tuple[dict[str, float], str | None]:
    """Pixel size from plain TIFF tags; the default (1, 1) without a unit is no calibration,
    and neither is a print or screen default (72 or 96 dots per inch), nor a file without
    resolution tags (tifffile then reports 1 pixel per inch, TIFF's default unit)."""
    if "XResolution" not in page.tags or "YResolution" not in page.tags:
        return {}, None
    resunit = int(getattr(page, "resolutionunit", 1) or 1)
    factor = _RESUNIT_TO_MICROMETER.get(resunit)
    sizes = _resolution_sizes(page, factor or 1.0)
    if resunit == 2 and set(_resolution_sizes(page, 1.0).values()) <= {1 / d for d in _DEFAULT_DPI}:
        return {}, None
    if factor is None:
        if sizes.get("X", 1.0) == 1.0 and sizes.get("Y", 1.0) == 1.0:
            return {}, None
        return sizes, None
    return sizes, "micrometer"


def _ome_tiff_sizes(
    xml: str | None,
) -> tuple[dict[str, float], str | None, str | None, list[str] | None]:
    """PhysicalSize{X,Y,Z}, TimeIncrement, their units and the channel names of the first OME
    image (malformed XML: none)."""
    try:
        root = ET.fromstring(xml or "")
    except ET.ParseError:
        log.warning("ignoring malformed OME-XML metadata")
        return {}, None, None, None
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return {}, None, None, None
    sizes = {}
    for axis, attr in (
        ("X", "PhysicalSizeX"),
        ("Y", "PhysicalSizeY"),
        ("Z", "PhysicalSizeZ"),
        ("T", "TimeIncrement"),
    ):
        if pixels.get(attr):
            sizes[axis] = float(pixels.get(attr))
    unit = _canonical_unit(pixels.get("PhysicalSizeXUnit", "µm")) if "X" in sizes else None
    time_unit = pixels.get("TimeIncrementUnit", "s") if "T" in sizes else None
    channels = [el.get("Name") for el in pixels if el.tag.rsplit("}", 1)[-1] == "Channel"]
    return sizes, unit, _canonical_time_unit(time_unit), channels


def _json_or_empty(text: Any) -> dict[str, Any]:
    if not isinstance(text, str):
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _grey_from_samples(
    data: np.ndarray, metadata: ImageMetadata, name: str
) -> tuple[np.ndarray, ImageMetadata]:
    """Drop the colour-sample axis of a grey image stored as RGB(A); colour raises DataError."""
    axis = metadata.axes.index("S")
    data = _grey_from_channels(np.moveaxis(data, axis, -1), name)
    axes = metadata.axes.replace("S", "")
    scale = None if metadata.scale is None else metadata.scale[:axis] + metadata.scale[axis + 1 :]
    return data, replace(metadata, axes=axes, scale=scale)


_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


def _tiff_write_kwargs(
    path: Path, shape: tuple[int, ...], dtype: np.dtype, opts: WriteOptions
) -> dict[str, Any]:
    """tifffile.imwrite/memmap arguments.

    ``*.ome.tif`` -> OME-TIFF; uint8/uint16/float32 with ImageJ-orderable axes below 2 GB ->
    ImageJ hyperstack (what Fiji reads natively); anything else -> tifffile's JSON ("shaped")
    description, which keeps axes, scale and extras for debcr and tifffile readers.
    """
    nbytes = math.prod(shape) * dtype.itemsize
    bigtiff = nbytes > BIGTIFF_THRESHOLD
    ome = path.name.lower().endswith((".ome.tif", ".ome.tiff"))
    meta = _fit_metadata(opts.metadata, len(shape), "TZCYX" if ome else None)
    imagej = not ome and not bigtiff and dtype in _IMAGEJ_DTYPES and _in_order(meta.axes, "TZCYX")
    if not ome and not imagej and not meta.extra and _ome_fallback(meta.axes):
        ome = True  # e.g. CZYX: not an ImageJ order, but OME-TIFF names every axis for Fiji
    sizes = _sizes(meta)
    names = _channel_names(meta.channel_names, meta.axes or "", shape)
    kwargs: dict[str, Any] = {"photometric": "minisblack", "bigtiff": bigtiff}
    if imagej and "X" in sizes and "Y" in sizes:
        # ImageJ's convention: pixels per the description's unit, ResolutionUnit NONE.
        kwargs["resolution"] = (1.0 / sizes["X"], 1.0 / sizes["Y"])
    elif not imagej:
        kwargs.update(_centimeter_resolution(sizes, meta.unit))
    if ome:
        md: dict[str, Any] = {"axes": meta.axes}
        unit = _OME_TIFF_UNITS.get(meta.unit or "", meta.unit)
        for axis in "XYZ" if unit else "":  # without a unit, OME would read micrometres
            if axis in sizes:
                md[f"PhysicalSize{axis}"] = sizes[axis]
                if unit:
                    md[f"PhysicalSize{axis}Unit"] = unit
        if "T" in sizes:
            md["TimeIncrement"] = sizes["T"]
            if meta.time_unit:
                md["TimeIncrementUnit"] = _OME_TIME_UNITS.get(meta.time_unit, meta.time_unit)
        if names:
            md["Channel"] = {"Name": list(names)}
        kwargs.update(ome=True, metadata=md)
    elif imagej:
        md = {"axes": meta.axes}
        if meta.unit:
            md["unit"] = _IMAGEJ_UNITS.get(meta.unit, meta.unit)
        if "Z" in sizes:
            md["spacing"] = sizes["Z"]
        if "T" in sizes:
            md["finterval"] = sizes["T"]
            if meta.time_unit:
                md["tunit"] = _IMAGEJ_TIME_UNITS.get(meta.time_unit, meta.time_unit)
        if names:  # one label per plane; ImageJ's plane order has the channel varying fastest
            md["Labels"] = list(names) * (math.prod(shape[:-2]) // len(names))
        if meta.extra:
            md["Properties"] = {"debcr": json.dumps(meta.extra)}
        kwargs.update(imagej=True, metadata=md)
    else:
        md = {} if meta.axes is None else {"axes": meta.axes}
        if meta.scale is not None:
            md.update(scale=list(meta.scale), unit=meta.unit)
            if meta.uncalibrated:
                md["uncalibrated"] = meta.uncalibrated
        if meta.time_unit:
            md["time_unit"] = meta.time_unit
        if names:
            md["channel_names"] = list(names)
        if meta.extra:
            md["debcr"] = dict(meta.extra)
        kwargs["metadata"] = md
    return kwargs


def _centimeter_resolution(sizes: dict[str, float], unit: str | None) -> dict[str, Any]:
    """Resolution tags for tag readers: pixels per centimetre when the pixel size and its
    length unit are known, else none (tifffile then writes 1 pixel per no unit: uncalibrated)."""
    per_cm = _PER_CENTIMETER.get(unit or "")
    if per_cm is None or "X" not in sizes or "Y" not in sizes:
        return {}
    return {
        "resolution": (per_cm / sizes["X"], per_cm / sizes["Y"]),
        "resolutionunit": "CENTIMETER",
    }


def _ome_fallback(axes: str | None) -> bool:
    """True if ``axes`` name only T, Z, C, Y, X, end in YX, but are not in ImageJ's order."""
    return (
        axes is not None
        and axes.endswith("YX")
        and set(axes) <= set("TZCYX")
        and not _in_order(axes, "TZCYX")
    )


def _write_tiff(path: Path, data: Any, opts: WriteOptions) -> None:
    arr = np.asarray(data)
    kwargs = _tiff_write_kwargs(path, arr.shape, arr.dtype, opts)
    tifffile.imwrite(path, arr, compression=opts.compression, **kwargs)


def _create_tiff(path: Path, shape: tuple[int, ...], dtype: np.dtype, opts: WriteOptions) -> Any:
    if opts.compression:
        raise DataError(
            f"cannot write {path.name} piece by piece with compression={opts.compression!r}: "
            "a memory-mapped TIFF must be uncompressed; drop compression or write .zarr"
        )
    kwargs = _tiff_write_kwargs(path, shape, dtype, opts)
    out = tifffile.memmap(path, shape=shape, dtype=dtype, **kwargs)
    reserve(path, path.stat().st_size)  # a full disk: ENOSPC now, not SIGBUS when filled
    return out


register_format((".tif", ".tiff"), _read_tiff, _write_tiff, name="TIFF", create=_create_tiff)
