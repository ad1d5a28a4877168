"""Read and write microscopy images: TIFF, PNG/JPEG, NPY/NPZ and Zarr v3 / OME-Zarr.

Formats are chosen by file extension from a small registry (:func:`register_format`), so a new
format (e.g. CZI) is one call. Images are single-channel 2-D ``(Y, X)`` images or 3-D
``(Z or T, Y, X)`` stacks; :func:`as_image_stack` turns anything else with only length-1 extra
axes into one of those and rejects the rest.

Writing is atomic: data go to a hidden temporary sibling (``.tmp-<id>.<name>``) that is renamed
into place only when complete, so a crash never leaves a half-written output and never destroys
the previous file. :func:`open_output` does the same for outputs filled piece by piece (tiled
prediction of images larger than memory): it yields a disk-backed array (``numpy.memmap`` for
``.npy``/``.tif``, ``zarr.Array`` for ``.zarr``).

Only numpy, tifffile, Pillow and the standard library are imported here; zarr is imported when a
Zarr store is read or written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image

from debcr.errors import DataError
from debcr.files import PathLike, as_path_list, atomic_output, check_targets, staged

__all__ = [
    "FileFormat",
    "ImageMetadata",
    "ReadOptions",
    "WriteOptions",
    "as_image_stack",
    "atomic_output",
    "format_for_path",
    "load",
    "open_output",
    "register_format",
    "supported_formats",
    "write",
]

log = logging.getLogger(__name__)

#: Files above this size are written as BigTIFF (classic TIFF offsets are 32-bit).
BIGTIFF_THRESHOLD = 2**31
#: Zarr arrays up to this size are stored as one chunk.
SMALL_ZARR_BYTES = 4 * 2**20
#: Lateral Zarr chunk edge for larger arrays: 512 x 512 float32 is 1 MiB per chunk.
ZARR_CHUNK_EDGE = 512

_SUPPORTED_NDIM_TEXT = (
    "debcr supports single-channel 2-D images (Y, X) and 3-D stacks (Z or T, Y, X); "
    "length-1 axes are dropped automatically"
)

# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------

# Canonical unit names follow OME-NGFF (UDUNITS-2); ImageJ and OME-TIFF use short forms.
_UNIT_ALIASES = {
    "um": "micrometer",
    "µm": "micrometer",  # micro sign U+00B5
    "μm": "micrometer",  # greek mu U+03BC
    "\\u00b5m": "micrometer",  # as ImageJ escapes it in descriptions
    "micron": "micrometer",
    "microns": "micrometer",
    "micrometre": "micrometer",
    "nm": "nanometer",
    "nanometre": "nanometer",
    "mm": "millimeter",
    "millimetre": "millimeter",
    "cm": "centimeter",
    "centimetre": "centimeter",
    "m": "meter",
    "metre": "meter",
}
_IMAGEJ_UNITS = {"micrometer": "micron", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm"}
_OME_TIFF_UNITS = {"micrometer": "µm", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm"}


def _canonical_unit(unit: Any) -> str | None:
    """Return the OME-NGFF name of a length unit, or None for 'pixel'/empty/unknown types."""
    if not isinstance(unit, str) or not unit.strip() or unit.strip().lower() in {"pixel", "pixels"}:
        return None
    text = unit.strip()
    return _UNIT_ALIASES.get(text.lower(), _UNIT_ALIASES.get(text, text))


@dataclass(frozen=True)
class ImageMetadata:
    """Minimal image metadata carried from input to output files.

    Attributes
    ----------
    axes
        One letter per array axis, e.g. ``'ZYX'``, ``'TYX'``, ``'YX'`` (tifffile/ImageJ letters:
        T time, Z depth, C channel, Y, X, S colour sample; ``'Q'``/``'I'`` mean unknown), or None.
    scale
        Physical size of one pixel along each axis, in the order of ``axes`` (1.0 where unknown),
        or None when the file carries no calibration.
    unit
        Length unit of the spatial entries of ``scale`` (OME-NGFF names, e.g. ``'micrometer'``).
    extra
        Small JSON-serialisable values (e.g. normalisation statistics) stored alongside the data
        where the format allows (ImageJ properties, shaped-TIFF JSON, Zarr attributes).
    """

    axes: str | None = None
    scale: tuple[float, ...] | None = None
    unit: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Normalise here so that every constructor path (readers, from_dict) yields equal objects.
        if self.axes is not None:
            if not isinstance(self.axes, str) or not self.axes.isalpha():
                raise DataError(
                    f"metadata axes {self.axes!r} must be a string of axis letters such as 'ZYX'"
                )
            object.__setattr__(self, "axes", self.axes.upper())
        if self.scale is not None:
            scale = tuple(float(s) for s in self.scale)
            if self.axes is not None and len(scale) != len(self.axes):
                raise DataError(
                    f"metadata scale {scale} has {len(scale)} entries but axes {self.axes!r} has "
                    f"{len(self.axes)}; give one pixel size per axis"
                )
            object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "unit", _canonical_unit(self.unit))
        object.__setattr__(self, "extra", dict(self.extra))

    def scale_of(self, axis: str) -> float | None:
        """Pixel size along ``axis`` (a letter such as ``'X'``), or None if unknown."""
        if self.axes is None or self.scale is None or axis.upper() not in self.axes:
            return None
        return self.scale[self.axes.index(axis.upper())]

    def squeezed(self, shape: Sequence[int]) -> ImageMetadata:
        """Metadata for ``as_image_stack(array)`` of an array with this ``shape``.

        Drops the entries of the length-1 axes that :func:`as_image_stack` removes; axes or
        scale that do not match ``shape`` are dropped (set to None).
        """
        shape = tuple(int(n) for n in shape)
        keep = _squeeze_plan(shape, self.axes, "metadata")
        axes = self.axes if self.axes is not None and len(self.axes) == len(shape) else None
        scale = self.scale if self.scale is not None and len(self.scale) == len(shape) else None
        return replace(
            self,
            axes=None if axes is None else "".join(axes[i] for i in keep),
            scale=None if scale is None else tuple(scale[i] for i in keep),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dictionary (inverse of :meth:`from_dict`)."""
        return {
            "axes": self.axes,
            "scale": None if self.scale is None else list(self.scale),
            "unit": self.unit,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ImageMetadata:
        """Build from :meth:`to_dict` output; missing keys default to None/empty."""
        return cls(
            axes=values.get("axes"),
            scale=values.get("scale"),
            unit=values.get("unit"),
            extra=values.get("extra") or {},
        )


def _default_axes(ndim: int) -> str:
    """Axes assumed for an array without metadata (single-channel convention of debcr)."""
    defaults = {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TCZYX"}
    if ndim not in defaults:
        raise DataError(f"cannot name the axes of a {ndim}-D array; {_SUPPORTED_NDIM_TEXT}")
    return defaults[ndim]


def _axes_for_write(
    ndim: int, metadata: ImageMetadata | None, allowed: str | None = None
) -> str | None:
    """Axes to store for an ``ndim``-D array.

    The metadata's axes if they fit the array (and, if given, the ``allowed`` letter order of
    the format); else 'YX'/'ZYX' for 2-D/3-D data; else, only for formats that must name every
    axis (``allowed`` given, e.g. OME), a TCZYX-style default; otherwise None, so that no axis
    meaning is invented (a made-up 'C' would later be refused as a channel axis).
    """
    axes = metadata.axes if metadata is not None else None
    if axes is not None and len(axes) == ndim and len(set(axes)) == ndim:
        if allowed is None or _in_order(axes, allowed):
            return axes
        log.info("axes %r cannot be stored in this format; using defaults", axes)
    if ndim in (2, 3) or allowed is not None:
        return _default_axes(ndim)
    return None


def _in_order(axes: str | None, order: str) -> bool:
    """True if every letter of ``axes`` occurs in ``order`` and in the same relative order."""
    if axes is None:
        return False
    positions = [order.find(a) for a in axes]
    return all(p >= 0 for p in positions) and positions == sorted(positions)


def _fit_metadata(
    metadata: ImageMetadata | None, ndim: int, allowed: str | None = None
) -> ImageMetadata:
    """Metadata with axes storable for an ``ndim``-D array; a scale that does not fit is dropped.

    When axes are replaced by defaults the scale is kept by position (same number of axes).
    """
    meta = metadata or ImageMetadata()
    scale = meta.scale if meta.scale is not None and len(meta.scale) == ndim else None
    return replace(meta, axes=_axes_for_write(ndim, meta, allowed), scale=scale)


def _sizes(meta: ImageMetadata) -> dict[str, float]:
    """Known (positive) pixel sizes by axis letter."""
    if meta.axes is None or meta.scale is None:
        return {}
    return {a: s for a, s in zip(meta.axes, meta.scale, strict=True) if s > 0}


# --------------------------------------------------------------------------------------------
# Dimensionality
# --------------------------------------------------------------------------------------------


def _squeeze_plan(shape: tuple[int, ...], axes: str | None, name: str) -> tuple[int, ...]:
    """Indices of the axes kept by :func:`as_image_stack`; raises DataError if none fit."""
    if axes is not None and len(axes) == len(shape):
        for letter, label in (("C", "channels"), ("S", "colour samples")):
            if letter in axes and shape[axes.index(letter)] > 1:
                raise DataError(
                    f"{name} has {shape[axes.index(letter)]} {label} (axis {letter} of axes "
                    f"{axes!r}, shape {shape}); debcr restores single-channel images: split the "
                    "channels and restore each one separately"
                )
    if any(n == 0 for n in shape):
        raise DataError(f"{name} is empty (shape {shape}); give an image with pixels")
    # Y and X are always kept (a 1-pixel-wide image is still an image); only the leading
    # length-1 axes (T, C, Z of a hyperstack) are dropped.
    lead = len(shape) - 2
    keep = tuple(i for i, n in enumerate(shape) if n != 1 or i >= lead)
    if len(keep) not in (2, 3) or len(shape) < 2:
        raise DataError(
            f"{name} has shape {shape} ({len(keep)}-D after dropping length-1 axes); "
            f"{_SUPPORTED_NDIM_TEXT}. Select one channel/time point or reshape the array first"
        )
    return keep


def as_image_stack(arr: Any, *, axes: str | None = None, name: str = "the array") -> Any:
    """Return ``arr`` as a 2-D image or 3-D stack, dropping length-1 axes.

    Parameters
    ----------
    arr
        numpy array, ``numpy.memmap``, ``zarr.Array`` or any array-like with ``shape`` and
        ``__getitem__``.
    axes
        Axis letters of ``arr`` (e.g. ``ImageMetadata.axes``); when given, a channel (``C``) or
        colour (``S``) axis longer than 1 gives a clear error instead of being taken for Z.
    name
        How to refer to the array in error messages (e.g. the file name).

    Returns
    -------
    array-like
        ``arr`` itself when it is already 2-D/3-D; otherwise a view without copying: a numpy
        view (memmaps stay memmaps), ``arr.squeeze`` for dask-like arrays, or a lazy indexing
        wrapper for ``zarr.Array``.

    Raises
    ------
    DataError
        If fewer than 2 or more than 3 axes are longer than 1, or a channel axis is longer than 1.
    """
    shape = tuple(int(n) for n in arr.shape)
    keep = _squeeze_plan(shape, axes, name)
    if len(keep) == len(shape):
        return arr
    dropped = tuple(i for i in range(len(shape)) if i not in keep)
    if isinstance(arr, np.ndarray):
        # Index with 0 rather than np.squeeze, which turns a memmap into a plain ndarray.
        return arr[tuple(0 if i in dropped else slice(None) for i in range(len(shape)))]
    if hasattr(arr, "squeeze") and not _is_zarr_array(arr):
        return arr.squeeze(axis=dropped)
    return _SqueezedView(arr, dropped)


def _is_zarr_array(arr: Any) -> bool:
    return type(arr).__module__.startswith("zarr")


class _SqueezedView:
    """Lazy view of an array-like without some length-1 axes (zarr arrays cannot squeeze).

    Supports basic indexing (integers, slices, Ellipsis), ``np.asarray`` and the attributes the
    prediction engine needs (``shape``, ``ndim``, ``dtype``, ``size``, ``nbytes``).
    """

    def __init__(self, base: Any, dropped: tuple[int, ...]) -> None:
        self.base = base
        self._dropped = dropped
        self.shape = tuple(int(n) for i, n in enumerate(base.shape) if i not in dropped)
        self.dtype = np.dtype(base.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def _full_key(self, key: Any) -> tuple[Any, ...]:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (self.ndim - (len(key) - 1))
            key = key[:at] + fill + key[at + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        parts = iter(key)
        base_ndim = self.ndim + len(self._dropped)
        return tuple(0 if i in self._dropped else next(parts) for i in range(base_ndim))

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.base[self._full_key(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self.base[self._full_key(key)] = value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"<squeezed view {self.shape} {self.dtype} of {self.base!r}>"


# --------------------------------------------------------------------------------------------
# Format registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadOptions:
    """Options passed to a format reader."""

    lazy: bool = False
    key: str | None = None


@dataclass(frozen=True)
class WriteOptions:
    """Options passed to a format writer (see :func:`write`)."""

    metadata: ImageMetadata | None = None
    compression: str | None = None
    bit_depth: int | None = None
    ome: bool = False
    chunks: tuple[int, ...] | None = None


Reader = Callable[[Path, ReadOptions], tuple[Any, ImageMetadata]]
Writer = Callable[[Path, Any, WriteOptions], None]
Creator = Callable[[Path, tuple[int, ...], np.dtype, WriteOptions], Any]
Preparer = Callable[[Any, WriteOptions, str], Any]


@dataclass(frozen=True)
class FileFormat:
    """One registered file format.

    Attributes
    ----------
    name
        Human-readable name used in messages (``'TIFF'``).
    extensions
        Lower-case suffixes including the dot, e.g. ``('.tif', '.tiff')``.
    reader
        ``reader(path, ReadOptions) -> (array or dict of arrays, ImageMetadata)``, or None.
    writer
        ``writer(temporary_path, data, WriteOptions)``; writes one complete file/directory.
    directory
        True if the format is stored as a directory (Zarr).
    keyed
        True if ``load(..., key=...)`` selects an array inside the file.
    planes_as_files
        True if 3-D data are written as one file per plane (``<stem>_0001<ext>``, ...).
    holds_dict
        True if the format stores a dict of named arrays (``.npz``) rather than one array.
    create
        ``create(temporary_path, shape, dtype, WriteOptions) -> writable array`` for
        :func:`open_output`; None means the output is buffered in memory and written at the end.
    prepare
        Optional conversion of the whole data before it is split into planes (PNG/JPEG
        rescaling, so that all planes share one intensity mapping).
    """

    name: str
    extensions: tuple[str, ...]
    reader: Reader | None = None
    writer: Writer | None = None
    directory: bool = False
    keyed: bool = False
    planes_as_files: bool = False
    holds_dict: bool = False
    create: Creator | None = None
    prepare: Preparer | None = None


_FORMATS: dict[str, FileFormat] = {}


def register_format(
    extensions: str | Iterable[str],
    reader: Reader | None,
    writer: Writer | None,
    *,
    name: str | None = None,
    directory: bool = False,
    keyed: bool = False,
    planes_as_files: bool = False,
    holds_dict: bool = False,
    create: Creator | None = None,
    prepare: Preparer | None = None,
) -> FileFormat:
    """Register (or replace) the reader/writer for file extensions.

    Parameters
    ----------
    extensions
        One or more suffixes, e.g. ``'.czi'`` or ``['.tif', '.tiff']`` (case-insensitive; a
        leading dot is added if missing). Multi-part suffixes such as ``'.ome.zarr'`` win over
        shorter ones.
    reader, writer
        See :class:`FileFormat`; either may be None for read-only or write-only formats.
    name
        Display name; defaults to the first extension without the dot, upper-cased.
    directory, keyed, planes_as_files, holds_dict, create, prepare
        See :class:`FileFormat`.

    Returns
    -------
    FileFormat
        The registered format.
    """
    exts = (extensions,) if isinstance(extensions, str) else tuple(extensions)
    if not exts:
        raise DataError("register_format needs at least one extension such as '.tif'")
    exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in exts)
    fmt = FileFormat(
        name=name or exts[0].lstrip(".").upper(),
        extensions=exts,
        reader=reader,
        writer=writer,
        directory=directory,
        keyed=keyed,
        planes_as_files=planes_as_files,
        holds_dict=holds_dict,
        create=create,
        prepare=prepare,
    )
    for ext in exts:
        _FORMATS[ext] = fmt
    return fmt


def supported_formats() -> tuple[FileFormat, ...]:
    """All registered formats, in registration order (each once)."""
    unique: dict[int, FileFormat] = {}
    for fmt in _FORMATS.values():
        unique.setdefault(id(fmt), fmt)
    return tuple(unique.values())


def _extension_list() -> str:
    return ", ".join(sorted(_FORMATS))


def format_for_path(path: PathLike) -> FileFormat:
    """The registered format for ``path``, chosen by its (longest matching) extension.

    Raises
    ------
    DataError
        If no registered extension matches; the message lists the supported ones.
    """
    name = Path(path).name.lower()
    matches = [ext for ext in _FORMATS if name.endswith(ext) and len(name) > len(ext)]
    if not matches:
        raise DataError(
            f"unknown file type for {path}: supported extensions are {_extension_list()}; "
            "rename or convert the file"
        )
    return _FORMATS[max(matches, key=len)]


# --------------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------------


def load(
    path: PathLike,
    *,
    lazy: bool = False,
    with_metadata: bool = False,
    key: str | None = None,
) -> Any:
    """Read an image, stack or training set, choosing the reader by extension.

    Parameters
    ----------
    path
        ``.tif``/``.tiff`` (incl. ImageJ, OME-TIFF), ``.png``, ``.jpg``/``.jpeg``, ``.npy``,
        ``.npz``, or a ``.zarr``/``.ome.zarr`` directory.
    lazy
        Avoid reading pixel data now: TIFF returns a ``numpy.memmap`` when the file is
        uncompressed and contiguous, else a read-only ``zarr.Array`` over the TIFF
        (``tifffile.imread(aszarr=True)``), which decodes chunks on access; NPY returns a
        read-only memmap. Zarr is always lazy; PNG/JPEG/NPZ are always read eagerly.
    with_metadata
        Also return an :class:`ImageMetadata`.
    key
        For ``.npz``: the array to return instead of the whole dict. For Zarr groups: the array
        path inside the group (default: the full-resolution OME-Zarr dataset).

    Returns
    -------
    array-like or dict or tuple
        The array as stored (length-1 axes kept, see :func:`as_image_stack`), a
        ``dict[str, numpy.ndarray]`` for ``.npz`` without ``key``, or ``(data, metadata)`` when
        ``with_metadata=True``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    DataError
        Unknown extension, unreadable/corrupt file, colour image, or an array that is not a 2-D
        image or 3-D stack after dropping length-1 axes.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"input file not found: {path} (absolute: {path.absolute()}); check the path"
        )
    fmt = format_for_path(path)
    if fmt.reader is None:
        raise DataError(f"{fmt.name} files cannot be read ({path}); convert it to TIFF")
    if key is not None and not fmt.keyed:
        raise DataError(
            f"key={key!r} was given for {path}, but {fmt.name} files hold a single array; "
            "leave key unset (it selects arrays inside .npz files and Zarr groups)"
        )
    try:
        data, metadata = fmt.reader(path, ReadOptions(lazy=lazy, key=key))
    except (DataError, MemoryError):
        raise
    except Exception as exc:  # any library error here means the file is unusable
        raise DataError(
            f"could not read {path} as {fmt.name}: {_short_reason(exc)}; check that the file is "
            "complete and really is this format (re-copy or re-export it)"
        ) from exc
    if not isinstance(data, Mapping):
        _squeeze_plan(tuple(data.shape), metadata.axes, str(path))
    return (data, metadata) if with_metadata else data


def _short_reason(exc: BaseException, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# TIFF
# --------------------------------------------------------------------------------------------

# Pixel sizes in TIFF resolution tags are per resolution unit; we report micrometres.
_RESUNIT_TO_MICROMETER = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}


def _read_tiff(path: Path, opts: ReadOptions) -> tuple[Any, ImageMetadata]:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        metadata = _tiff_metadata(tif, series)
        data = None if opts.lazy else series.asarray()
    if data is None:
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
    return node if isinstance(node, zarr.Array) else node["0"]


def _tiff_metadata(tif: tifffile.TiffFile, series: Any) -> ImageMetadata:
    axes = series.axes
    page = series.pages[0] if series.pages and series.pages[0] is not None else tif.pages[0]
    sizes: dict[str, float] = {}
    unit: str | None = None
    extra: dict[str, Any] = {}
    if tif.is_ome:
        sizes, unit = _ome_tiff_sizes(tif.ome_metadata)
    elif tif.is_imagej:
        ij = tif.imagej_metadata or {}
        unit = _canonical_unit(ij.get("unit"))
        sizes = _resolution_sizes(page, 1.0)
        if ij.get("spacing"):
            sizes["Z"] = float(ij["spacing"])
        if ij.get("finterval"):
            sizes["T"] = float(ij["finterval"])
        extra = _json_or_empty((ij.get("Properties") or {}).get("debcr"))
        if unit is None and sizes.get("X") == 1.0 and sizes.get("Y") == 1.0:
            sizes = {k: v for k, v in sizes.items() if k not in "XY"}
    else:
        shaped = (tif.shaped_metadata or ({},))[0] if tif.is_shaped else {}
        scale = shaped.get("scale")
        if isinstance(scale, list) and len(scale) == len(axes):
            sizes = {a: float(s) for a, s in zip(axes, scale, strict=True)}
            unit = shaped.get("unit")
        else:
            sizes, unit = _resolution_tags(page)
        extra = shaped.get("debcr") if isinstance(shaped.get("debcr"), dict) else {}
    scale = tuple(sizes.get(a, 1.0) for a in axes) if sizes else None
    return ImageMetadata(axes=axes, scale=scale, unit=unit, extra=extra)


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
    """Pixel size from plain TIFF tags; the default (1, 1) without a unit is no calibration."""
    factor = _RESUNIT_TO_MICROMETER.get(int(getattr(page, "resolutionunit", 1) or 1))
    sizes = _resolution_sizes(page, factor or 1.0)
    if factor is None:
        if sizes.get("X", 1.0) == 1.0 and sizes.get("Y", 1.0) == 1.0:
            return {}, None
        return sizes, None
    return sizes, "micrometer"


def _ome_tiff_sizes(xml: str | None) -> tuple[dict[str, float], str | None]:
    """PhysicalSize{X,Y,Z} and TimeIncrement of the first OME image (malformed XML: none)."""
    try:
        root = ET.fromstring(xml or "")
    except ET.ParseError:
        log.warning("ignoring malformed OME-XML metadata")
        return {}, None
    pixels = next((el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return {}, None
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
    return sizes, unit


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
    sizes = _sizes(meta)
    kwargs: dict[str, Any] = {"photometric": "minisblack", "bigtiff": bigtiff}
    if "X" in sizes and "Y" in sizes:
        kwargs["resolution"] = (1.0 / sizes["X"], 1.0 / sizes["Y"])
    if ome:
        md: dict[str, Any] = {"axes": meta.axes}
        unit = _OME_TIFF_UNITS.get(meta.unit or "", meta.unit)
        for axis in "XYZ":
            if axis in sizes:
                md[f"PhysicalSize{axis}"] = sizes[axis]
                if unit:
                    md[f"PhysicalSize{axis}Unit"] = unit
        kwargs.update(ome=True, metadata=md)
    elif imagej:
        md = {"axes": meta.axes}
        if meta.unit:
            md["unit"] = _IMAGEJ_UNITS.get(meta.unit, meta.unit)
        if "Z" in sizes:
            md["spacing"] = sizes["Z"]
        if "T" in sizes:
            md["finterval"] = sizes["T"]
        if meta.extra:
            md["Properties"] = {"debcr": json.dumps(meta.extra)}
        kwargs.update(imagej=True, metadata=md)
    else:
        md = {} if meta.axes is None else {"axes": meta.axes}
        if meta.scale is not None:
            md.update(scale=list(meta.scale), unit=meta.unit)
            if meta.unit == "micrometer":
                kwargs["resolutionunit"] = "MICROMETER"
        if meta.extra:
            md["debcr"] = dict(meta.extra)
        kwargs["metadata"] = md
    return kwargs


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
    return tifffile.memmap(path, shape=shape, dtype=dtype, **kwargs)


# --------------------------------------------------------------------------------------------
# PNG / JPEG
# --------------------------------------------------------------------------------------------


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


def _grey_from_channels(arr: np.ndarray, name: str) -> np.ndarray:
    """Reduce (..., channels) to one channel if the colour channels are equal; alpha ignored."""
    channels = arr.shape[-1]
    colour = arr[..., :3] if channels >= 3 else arr[..., :1]  # LA: grey + alpha
    grey = colour[..., 0]
    if any(not np.array_equal(grey, colour[..., c]) for c in range(1, colour.shape[-1])):
        raise DataError(
            f"{name} is a colour image ({channels} channels that differ); debcr restores "
            "single-channel (grayscale) images: convert it to grayscale or split the channels "
            "and restore each separately"
        )
    return np.ascontiguousarray(grey)


def _to_display_integers(data: Any, bit_depth: int | None, max_bits: int, name: str) -> np.ndarray:
    """Convert data to uint8/uint16 for PNG/JPEG without losing the image content.

    Integer data that fit the target type are kept as is. Float data within [0, 1] map to the
    full integer range; anything else is min-max rescaled with a warning, so a non-constant
    image never becomes all zeros.
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
    bits = bit_depth or 8
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        scaled = np.rint(arr.astype(np.float64) * (2**bits - 1))
        return scaled.astype(np.uint8 if bits == 8 else np.uint16)
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


# --------------------------------------------------------------------------------------------
# NPY / NPZ
# --------------------------------------------------------------------------------------------


def _read_npy(path: Path, opts: ReadOptions) -> tuple[np.ndarray, ImageMetadata]:
    arr = np.load(path, mmap_mode="r" if opts.lazy else None, allow_pickle=False)
    if not isinstance(arr, np.ndarray):  # a .npz archive renamed to .npy
        arr.close()
        raise DataError(f"{path} is an .npz archive, not an .npy array; rename it to .npz")
    return arr, ImageMetadata()


def _write_npy(path: Path, data: Any, opts: WriteOptions) -> None:
    np.save(path, np.asarray(data), allow_pickle=False)


def _create_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype, opts: WriteOptions) -> Any:
    return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


def _read_npz(path: Path, opts: ReadOptions) -> tuple[Any, ImageMetadata]:
    with np.load(path, allow_pickle=False) as archive:
        if not hasattr(archive, "files"):
            raise DataError(f"{path} is a single .npy array, not an .npz archive; rename it")
        if opts.key is None:
            return {name: archive[name] for name in archive.files}, ImageMetadata()
        if opts.key not in archive.files:
            raise DataError(
                f"{path} has no array {opts.key!r}; it contains {archive.files}; pass one of "
                "these as key="
            )
        return archive[opts.key], ImageMetadata()


def _write_npz(path: Path, data: Any, opts: WriteOptions) -> None:
    arrays = {str(k): np.asarray(v) for k, v in data.items()}
    (np.savez_compressed if opts.compression else np.savez)(path, **arrays)


# --------------------------------------------------------------------------------------------
# Zarr v3 / OME-Zarr
# --------------------------------------------------------------------------------------------

_NGFF_AXIS_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}


def _read_zarr(path: Path, opts: ReadOptions) -> tuple[Any, ImageMetadata]:
    import zarr

    node = zarr.open(store=str(path), mode="r")
    if isinstance(node, zarr.Array):
        if opts.key is not None:
            raise DataError(f"{path} is a single Zarr array; leave key unset")
        return node, _zarr_array_metadata(node)
    multiscales = _find_multiscales(dict(node.attrs))
    if multiscales:
        datasets = multiscales[0].get("datasets") or []
        if not datasets:
            raise DataError(f"{path}: OME-Zarr multiscales lists no datasets")
        paths = [d.get("path") for d in datasets]
        name = opts.key if opts.key is not None else paths[0]
        if name not in paths and opts.key is not None:
            raise DataError(f"{path} has no dataset {name!r}; it has {paths}; pass one as key=")
        arr = node[name]
        meta = _ngff_metadata(multiscales[0], datasets[paths.index(name)], arr.ndim)
        extra = node.attrs.get("debcr")
        return arr, replace(meta, extra=extra if isinstance(extra, dict) else {})
    arrays = sorted(k for k, _ in node.arrays())
    if opts.key is None and len(arrays) != 1:
        raise DataError(
            f"{path} is a Zarr group with arrays {arrays} and no OME-Zarr multiscales metadata; "
            "pass key= to choose one"
        )
    name = opts.key if opts.key is not None else arrays[0]
    if name not in node:
        raise DataError(f"{path} has no array {name!r}; it has {arrays}; pass one as key=")
    arr = node[name]
    return arr, _zarr_array_metadata(arr)


def _find_multiscales(attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """NGFF 0.5 keeps metadata under ``attributes.ome``; 0.4 (``.zattrs``) at the top level."""
    ome = attrs.get("ome")
    if isinstance(ome, dict) and isinstance(ome.get("multiscales"), list):
        return ome["multiscales"]
    found = attrs.get("multiscales")
    return found if isinstance(found, list) else []


def _ngff_metadata(
    multiscale: Mapping[str, Any], dataset: Mapping[str, Any], ndim: int
) -> ImageMetadata:
    axes_meta = multiscale.get("axes") or []
    names = [a.get("name", "") if isinstance(a, dict) else str(a) for a in axes_meta]
    if len(names) != ndim:
        return ImageMetadata()
    axes = "".join(n.upper() if len(n) == 1 and n.isalpha() else "Q" for n in names)
    if len(set(axes)) != len(axes):
        axes = None
    units = [a.get("unit") for a in axes_meta if isinstance(a, dict) and a.get("type") == "space"]
    scale = np.ones(ndim)
    found = False
    for transforms in (
        dataset.get("coordinateTransformations"),
        multiscale.get("coordinateTransformations"),
    ):
        for t in transforms or []:
            if t.get("type") == "scale" and len(t.get("scale") or []) == ndim:
                scale = scale * np.asarray(t["scale"], dtype=float)
                found = True
    return ImageMetadata(
        axes=axes,
        scale=tuple(float(s) for s in scale) if found and axes else None,
        unit=next((u for u in units if u), None),
    )


def _zarr_array_metadata(arr: Any) -> ImageMetadata:
    stored = arr.attrs.get("debcr")
    if isinstance(stored, dict):
        return ImageMetadata.from_dict(stored)
    names = getattr(arr.metadata, "dimension_names", None)
    if names and all(isinstance(n, str) and len(n) == 1 for n in names):
        axes = "".join(n.upper() for n in names)
        if len(set(axes)) == len(axes):
            return ImageMetadata(axes=axes)
    return ImageMetadata()


def _zarr_compressors(compression: str | None) -> Any:
    """Compressor spec for zarr.create_array: 'auto' (zarr default), None, or one codec."""
    if compression is None:
        return "auto"
    from zarr import codecs

    choices = {
        "none": None,
        "zstd": codecs.ZstdCodec(),
        "gzip": codecs.GzipCodec(),
        "zlib": codecs.GzipCodec(),
        "blosc": codecs.BloscCodec(),
    }
    if compression.lower() not in choices:
        raise DataError(
            f"unsupported Zarr compression {compression!r}; use one of {sorted(choices)} or None"
        )
    return choices[compression.lower()]


def _default_chunks(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    """Whole array when small, else one plane-tile of at most 512 x 512 per chunk."""
    if math.prod(shape) * dtype.itemsize <= SMALL_ZARR_BYTES or len(shape) < 2:
        return tuple(max(1, n) for n in shape)
    lead = (1,) * (len(shape) - 2)
    return lead + tuple(max(1, min(n, ZARR_CHUNK_EDGE)) for n in shape[-2:])


def _create_zarr(path: Path, shape: tuple[int, ...], dtype: np.dtype, opts: WriteOptions) -> Any:
    import zarr

    ome = opts.ome or path.name.lower().endswith(".ome.zarr")
    meta = _fit_metadata(opts.metadata, len(shape), "TCZYX" if ome else None)
    kwargs = {
        "shape": shape,
        "dtype": dtype,
        "chunks": tuple(opts.chunks) if opts.chunks else _default_chunks(shape, dtype),
        "compressors": _zarr_compressors(opts.compression),
        "dimension_names": None if meta.axes is None else [a.lower() for a in meta.axes],
    }
    if not ome:
        return zarr.create_array(
            store=str(path), zarr_format=3, attributes={"debcr": meta.to_dict()}, **kwargs
        )
    sizes = _sizes(meta)
    axes_meta = []
    for a in meta.axes:
        entry = {"name": a.lower(), "type": _NGFF_AXIS_TYPES[a]}
        if entry["type"] == "space" and meta.unit:
            entry["unit"] = meta.unit
        axes_meta.append(entry)
    scale = [sizes.get(a, 1.0) for a in meta.axes]
    multiscale = {
        "axes": axes_meta,
        "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        ],
    }
    attributes: dict[str, Any] = {"ome": {"version": "0.5", "multiscales": [multiscale]}}
    if meta.extra:
        attributes["debcr"] = dict(meta.extra)
    group = zarr.open_group(store=str(path), mode="w-", zarr_format=3, attributes=attributes)
    return group.create_array("0", **kwargs)


def _write_zarr(path: Path, data: Any, opts: WriteOptions) -> None:
    shape = tuple(int(n) for n in data.shape)
    target = _create_zarr(path, shape, np.dtype(data.dtype), opts)
    _copy_blockwise(data, target)


def _copy_blockwise(src: Any, dst: Any) -> None:
    """Copy along axis 0 in chunk-aligned blocks so lazy sources are never read whole."""
    if not src.shape or src.shape[0] == 0:
        dst[...] = np.asarray(src)
        return
    step = int(dst.chunks[0]) if getattr(dst, "chunks", None) else src.shape[0]
    for start in range(0, src.shape[0], step):
        dst[start : start + step] = np.asarray(src[start : start + step])


# --------------------------------------------------------------------------------------------
# write / open_output
# --------------------------------------------------------------------------------------------


def _plane_path(path: Path, index: int, count: int) -> Path:
    """``out.png`` -> ``out_0001.png`` (1-based, at least 4 digits) for plane ``index``."""
    suffix = path.suffix
    stem = path.name[: -len(suffix)] if suffix else path.name
    return path.with_name(f"{stem}_{index + 1:0{max(4, len(str(count)))}d}{suffix}")


def _plan_targets(fmt: FileFormat, path: Path, shape: Sequence[int] | None) -> list[Path]:
    """Output paths: one per plane for a 3-D stack in a planes_as_files format, else ``path``."""
    if not fmt.planes_as_files or shape is None:
        return [path]
    if len(shape) not in (2, 3):
        raise DataError(
            f"cannot write a {len(shape)}-D array with shape {tuple(shape)} to {path}: "
            f"{fmt.name} files hold 2-D images (3-D stacks become one file per plane)"
        )
    if len(shape) == 2:
        return [path]
    return [_plane_path(path, i, shape[0]) for i in range(shape[0])]


def _check_data(fmt: FileFormat, path: Path, data: Any) -> None:
    if fmt.holds_dict:
        if not isinstance(data, Mapping):
            raise DataError(
                f"{path}: .npz files hold named arrays; pass a dict such as "
                "{'low': low, 'gt': gt} (or write a single array to .npy/.tif)"
            )
        return
    if isinstance(data, Mapping):
        raise DataError(
            f"{path}: {fmt.name} holds a single array but a dict was given; write it to .npz or "
            "pass one array"
        )
    if not (hasattr(data, "shape") and hasattr(data, "dtype")):
        raise DataError(f"cannot write {type(data).__name__} to {path}; pass a numpy array")


def write(
    path: PathLike,
    data: Any,
    *,
    overwrite: bool = False,
    metadata: ImageMetadata | None = None,
    inputs: PathLike | Iterable[PathLike] = (),
    compression: str | None = None,
    bit_depth: int | None = None,
    ome: bool = False,
    chunks: Sequence[int] | None = None,
) -> list[Path]:
    """Write ``data`` atomically, choosing the writer by extension.

    Parameters
    ----------
    path
        Output path; its extension selects the format. Missing parent folders are created.
    data
        Array-like (numpy, memmap, zarr, dask); for ``.npz`` a dict of arrays such as
        ``{'low': ..., 'gt': ...}``.
    overwrite
        Replace an existing output. Without it an existing output raises FileExistsError.
    metadata
        Axes, pixel size and extras to store (TIFF: ImageJ hyperstack for uint8/uint16/float32,
        OME-TIFF for ``*.ome.tif``, else tifffile JSON; Zarr: attributes / NGFF). Default axes
        are 'YX' for 2-D and 'ZYX' for 3-D.
    inputs
        Paths that must never be written to (the files the data came from); compared after
        resolving links, even with ``overwrite=True``.
    compression
        TIFF: a tifffile codec name such as ``'zlib'`` or ``'zstd'``. Zarr: ``'zstd'``,
        ``'gzip'``, ``'blosc'`` or ``'none'`` (default: zarr's default, zstd). NPZ: any value
        selects ``numpy.savez_compressed``.
    bit_depth
        PNG: 8 or 16 (default: 16 for 16-bit integers, else 8); JPEG: 8 only. Float data in
        [0, 1] map to the full range; other data that do not fit are min-max rescaled (warning).
    ome
        Zarr: write an OME-Zarr (NGFF 0.5) group with a single resolution level at ``'0'``
        (implied by a ``.ome.zarr`` name).
    chunks
        Zarr chunk shape (default: whole array if <= 4 MiB, else (1, ..., 512, 512)).

    Returns
    -------
    list of Path
        The files or directories written (several for a 3-D stack written to PNG/JPEG:
        ``<stem>_0001.png``, ``<stem>_0002.png``, ...).

    Raises
    ------
    DataError
        Unknown extension, unwritable data, or an output that is one of ``inputs``.
    FileExistsError
        If an output exists and ``overwrite`` is False.
    """
    path = Path(path)
    fmt = format_for_path(path)
    if fmt.writer is None:
        raise DataError(f"{fmt.name} files cannot be written ({path}); write .tif instead")
    _check_data(fmt, path, data)
    opts = WriteOptions(
        metadata=metadata,
        compression=compression,
        bit_depth=bit_depth,
        ome=ome,
        chunks=None if chunks is None else tuple(int(c) for c in chunks),
    )
    shape = None if fmt.holds_dict else tuple(data.shape)
    targets = _plan_targets(fmt, path, shape)
    check_targets(targets, as_path_list(inputs), overwrite)  # before any costly conversion
    if fmt.prepare is not None:
        data = fmt.prepare(data, opts, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged(targets) as tmps:
        if len(targets) == 1:
            fmt.writer(tmps[0], data, opts)
        else:
            for z, tmp in enumerate(tmps):
                fmt.writer(tmp, data[z], opts)
    return targets


@contextlib.contextmanager
def open_output(
    path: PathLike,
    shape: Sequence[int],
    dtype: Any,
    *,
    overwrite: bool = False,
    metadata: ImageMetadata | None = None,
    inputs: PathLike | Iterable[PathLike] = (),
    compression: str | None = None,
    bit_depth: int | None = None,
    ome: bool = False,
    chunks: Sequence[int] | None = None,
) -> Iterator[Any]:
    """Create an output to fill piece by piece; it appears at ``path`` only if the block succeeds.

    ``.npy`` yields a ``numpy.memmap`` (``numpy.lib.format.open_memmap``), ``.tif`` a
    ``numpy.memmap`` of an uncompressed TIFF (``tifffile.memmap``; ``compression`` is refused)
    and ``.zarr``/``.ome.zarr`` a ``zarr.Array``: all live on disk, so outputs larger than memory
    work. Other formats (PNG, JPEG) yield an in-memory numpy array that is written on exit.
    The output is created under a temporary name next to ``path``; on normal exit it is flushed
    and renamed onto ``path`` (replacing an old output only then), on an exception it is deleted
    and any previous file at ``path`` is left untouched.

    Parameters are as for :func:`write`; ``shape`` and ``dtype`` describe the full output.

    Yields
    ------
    array-like
        Writable array supporting ``out[index] = values``. Its contents are initialised to 0.

    Raises
    ------
    DataError, FileExistsError
        As for :func:`write`; checked before anything is created.

    Examples
    --------
    >>> with open_output("restored.tif", (60, 256, 256), "float32", inputs=["raw.tif"]) as out:
    ...     for z in range(60):
    ...         out[z] = predict(raw[z])  # doctest: +SKIP
    """
    path = Path(path)
    fmt = format_for_path(path)
    if fmt.writer is None:
        raise DataError(f"{fmt.name} files cannot be written ({path}); write .tif instead")
    shape = tuple(int(n) for n in shape)
    dtype = np.dtype(dtype)
    opts = WriteOptions(
        metadata=metadata,
        compression=compression,
        bit_depth=bit_depth,
        ome=ome,
        chunks=None if chunks is None else tuple(int(c) for c in chunks),
    )
    inputs = as_path_list(inputs)
    if fmt.create is None:
        check_targets(_plan_targets(fmt, path, shape), inputs, overwrite)
        buffer = np.zeros(shape, dtype)
        yield buffer
        write(
            path,
            buffer,
            overwrite=overwrite,
            metadata=metadata,
            inputs=inputs,
            compression=compression,
            bit_depth=bit_depth,
            ome=ome,
            chunks=chunks,
        )
        return
    check_targets([path], inputs, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged([path]) as (tmp,):
        out = fmt.create(tmp, shape, dtype, opts)
        yield out
        if isinstance(out, np.memmap):
            out.flush()


# --------------------------------------------------------------------------------------------
# Built-in formats
# --------------------------------------------------------------------------------------------

register_format((".tif", ".tiff"), _read_tiff, _write_tiff, name="TIFF", create=_create_tiff)
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
register_format(".npy", _read_npy, _write_npy, name="NPY", create=_create_npy)
register_format(".npz", _read_npz, _write_npz, name="NPZ", keyed=True, holds_dict=True)
register_format(
    (".zarr", ".ome.zarr"),
    _read_zarr,
    _write_zarr,
    name="Zarr",
    directory=True,
    keyed=True,
    create=_create_zarr,
)
