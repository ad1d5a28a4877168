"""Zarr v3 arrays and OME-Zarr (NGFF 0.4 read, 0.5 write) groups; zarr is imported lazily."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from debcr.data.io.metadata import ImageMetadata, _fit_metadata, _sizes
from debcr.data.io.registry import ReadOptions, WriteOptions, register_format
from debcr.errors import DataError

#: Zarr arrays up to this size are stored as one chunk.
SMALL_ZARR_BYTES = 4 * 2**20
#: Lateral Zarr chunk edge for larger arrays: 512 x 512 float32 is 1 MiB per chunk.
ZARR_CHUNK_EDGE = 512

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
        names = _omero_channel_names(dict(node.attrs), meta.axes, arr.shape)
        extra = extra if isinstance(extra, dict) else {}
        return arr, replace(meta, extra=extra, channel_names=names)
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
    times = [a.get("unit") for a in axes_meta if isinstance(a, dict) and a.get("type") == "time"]
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
        time_unit=next((u for u in times if u), None) if axes and "T" in axes else None,
    )


def _omero_channel_names(
    attrs: Mapping[str, Any], axes: str | None, shape: tuple[int, ...]
) -> tuple[str, ...] | None:
    """Channel labels of the ``omero`` block (NGFF 0.5: under ``ome``), one per C entry."""
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else attrs
    omero = ome.get("omero") or attrs.get("omero")
    if not axes or "C" not in axes or not isinstance(omero, dict):
        return None
    channels = omero.get("channels")
    if not isinstance(channels, list) or len(channels) != shape[axes.index("C")]:
        return None
    labels = [c.get("label") if isinstance(c, dict) else None for c in channels]
    return tuple(labels) if all(isinstance(n, str) and n for n in labels) else None


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


def _create_zarr_with_metadata(
    path: Path, shape: tuple[int, ...], dtype: np.dtype, opts: WriteOptions
) -> Any:
    """`_create_zarr`, then the NGFF metadata it does not write: the unit of the time
    axis and the channel names (``omero`` block)."""
    target = _create_zarr(path, shape, dtype, opts)
    if not (opts.ome or path.name.lower().endswith(".ome.zarr")):
        return target
    meta = _fit_metadata(opts.metadata, len(shape), "TCZYX")
    names = meta.channel_names
    if meta.axes is None or "C" not in meta.axes or len(names or ()) != shape[meta.axes.index("C")]:
        names = None
    if not (meta.time_unit and "T" in meta.axes) and not names:
        return target
    import zarr

    group = zarr.open_group(store=str(path), mode="r+")
    ome = dict(group.attrs["ome"])
    if meta.time_unit:
        for axis in ome["multiscales"][0]["axes"]:
            if axis.get("type") == "time":
                axis["unit"] = meta.time_unit
    if names:
        ome["omero"] = {"channels": [{"label": n} for n in names]}
    group.attrs["ome"] = ome
    return target


def _write_zarr(path: Path, data: Any, opts: WriteOptions) -> None:
    shape = tuple(int(n) for n in data.shape)
    target = _create_zarr_with_metadata(path, shape, np.dtype(data.dtype), opts)
    _copy_blockwise(data, target)


def _copy_blockwise(src: Any, dst: Any) -> None:
    """Copy along axis 0 in chunk-aligned blocks so lazy sources are never read whole."""
    if not src.shape or src.shape[0] == 0:
        dst[...] = np.asarray(src)
        return
    step = int(dst.chunks[0]) if getattr(dst, "chunks", None) else src.shape[0]
    for start in range(0, src.shape[0], step):
        dst[start : start + step] = np.asarray(src[start : start + step])


def settle_pending_io(timeout: float = 30.0) -> None:
    """Wait for the chunk reads (and writes) that zarr still runs after one of them failed or
    the caller was stopped.

    zarr reads the chunks of one request concurrently on its own event loop; when one chunk
    cannot be decoded (a damaged TIFF tile), the request raises at once while the other reads
    run on. Left pending when the program exits, each one prints asyncio's "Task was destroyed
    but it is pending!" after debcr's own one-line message. Call this where such a failure is
    turned into a `DataError`; it does nothing if zarr was never used.
    """
    if "zarr" not in sys.modules:
        return
    from zarr.core import sync

    running = sync.loop[0]
    if running is None or not running.is_running():
        return
    settled = asyncio.run_coroutine_threadsafe(_gather_others(), running)
    # A read that hangs must not hang the error message too: after the timeout it is left.
    with contextlib.suppress(Exception):
        settled.result(timeout)


async def _gather_others() -> None:
    """Await every other task of the running loop, keeping (and so silencing) their errors."""
    current = asyncio.current_task()
    await asyncio.gather(
        *(t for t in asyncio.all_tasks() if t is not current), return_exceptions=True
    )


register_format(
    (".zarr", ".ome.zarr"),
    _read_zarr,
    _write_zarr,
    name="Zarr",
    directory=True,
    keyed=True,
    create=_create_zarr_with_metadata,
)
