"""Read and write microscopy images: TIFF, PNG/JPEG, NPY/NPZ and Zarr v3 / OME-Zarr.

The public API: `load`, `write` and `open_output`. Formats are chosen by file
extension from a small registry (`register_format`); each built-in format module
(``tiff``, ``pil``, ``npy``, ``zarr``) registers itself on import. Images are 2-D ``(Y, X)``
images or 3-D ``(Z or T, Y, X)`` stacks (`as_image_stack`), or, where the file names its
axes, any mix of T, Z and C axes before Y and X. Pixel/voxel sizes, units, frame interval and
channel names travel in `ImageMetadata` (not kept by ``.npy``/``.npz``/PNG/JPEG).

Writing is atomic (`debcr.files.atomic_output`): data go to a hidden temporary sibling
that is renamed into place only when complete. `open_output` does the same for outputs
filled piece by piece (``numpy.memmap`` for ``.npy``/``.tif``, ``zarr.Array`` for ``.zarr``).

Only numpy, tifffile, Pillow and the standard library are imported here; zarr is imported when a
Zarr store is read or written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from debcr.data.io.metadata import ImageMetadata
from debcr.data.io.registry import (
    FileFormat,
    ReadOptions,
    WriteOptions,
    format_for_path,
    register_format,
    supported_formats,
    unregister_format,
)
from debcr.data.io.stack import as_image_stack, plane_axes
from debcr.errors import DataError
from debcr.files import (
    PathLike,
    as_path_list,
    atomic_output,
    check_targets,
    output_errors,
    staged,
)

# The built-in formats register themselves on import, in this order: supported_formats()
# reports TIFF, PNG, JPEG, NPY, NPZ, Zarr.
# isort: off
from debcr.data.io import tiff, pil, npy, zarr  # noqa: F401
# isort: on

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
    "unregister_format",
    "write",
]


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
        Also return an `ImageMetadata`.
    key
        For ``.npz``: the array to return instead of the whole dict. For Zarr groups: the array
        path inside the group (default: the full-resolution OME-Zarr dataset).

    Returns
    -------
    array-like or dict or tuple
        The array as stored (length-1 axes kept, see `as_image_stack`), a
        ``dict[str, numpy.ndarray]`` for ``.npz`` without ``key``, or ``(data, metadata)`` when
        ``with_metadata=True``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    DataError
        Unknown extension, unreadable/corrupt file, colour image, or an array that is neither
        a 2-D image or 3-D stack after dropping length-1 axes nor has axes named in its
        metadata as time (T), depth (Z) and channel (C) before Y and X (e.g. TZYX, CZYX).
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
        zarr.settle_pending_io()
        raise DataError(
            f"could not read {path} as {fmt.name}: {_short_reason(exc)}; check that the file is "
            "complete and really is this format (re-copy or re-export it)"
        ) from exc
    if not isinstance(data, Mapping):
        # Named T, Z and C axes are fine (restored plane by plane); unnamed >3-D data are not.
        plane_axes(tuple(int(n) for n in data.shape), metadata.axes, str(path))
    return (data, metadata) if with_metadata else data


def _short_reason(exc: BaseException, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def _writable_format(path: Path) -> FileFormat:
    """The registered format for ``path``; DataError if it cannot be written."""
    fmt = format_for_path(path)
    if fmt.writer is None:
        raise DataError(f"{fmt.name} files cannot be written ({path}); write .tif instead")
    return fmt


def _write_options(
    *,
    metadata: ImageMetadata | None,
    compression: str | None,
    bit_depth: int | None,
    ome: bool,
    chunks: Sequence[int] | None,
) -> WriteOptions:
    """The `WriteOptions` of the keyword arguments of `write`/`open_output`."""
    return WriteOptions(
        metadata=metadata,
        compression=compression,
        bit_depth=bit_depth,
        ome=ome,
        chunks=None if chunks is None else tuple(int(c) for c in chunks),
    )


def _write_checked(
    fmt: FileFormat,
    path: Path,
    data: Any,
    opts: WriteOptions,
    *,
    overwrite: bool,
    inputs: list[Path],
) -> list[Path]:
    """Write ``data`` (already checked against ``fmt``) atomically; the body of `write`."""
    shape = None if fmt.holds_dict else tuple(data.shape)
    targets = _plan_targets(fmt, path, shape)
    check_targets(targets, inputs, overwrite)  # before any costly conversion
    if fmt.prepare is not None:
        data = fmt.prepare(data, opts, str(path))
    with output_errors(path):  # a full disk, read-only folder: one message, nothing left
        path.parent.mkdir(parents=True, exist_ok=True)
        with staged(targets, overwrite=overwrite) as tmps:
            if len(targets) == 1:
                fmt.writer(tmps[0], data, opts)
            else:
                for z, tmp in enumerate(tmps):
                    fmt.writer(tmp, data[z], opts)
    return targets


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
    fmt = _writable_format(path)
    _check_data(fmt, path, data)
    opts = _write_options(
        metadata=metadata, compression=compression, bit_depth=bit_depth, ome=ome, chunks=chunks
    )
    return _write_checked(fmt, path, data, opts, overwrite=overwrite, inputs=as_path_list(inputs))


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

    Parameters are as for `write`; ``shape`` and ``dtype`` describe the full output.

    Yields
    ------
    array-like
        Writable array supporting ``out[index] = values``. Its contents are initialised to 0.

    Raises
    ------
    DataError, FileExistsError
        As for `write`; checked before anything is created.

    Examples
    --------
    >>> with open_output("restored.tif", (60, 256, 256), "float32", inputs=["raw.tif"]) as out:
    ...     for z in range(60):
    ...         out[z] = predict(raw[z])  # doctest: +SKIP
    """
    path = Path(path)
    fmt = _writable_format(path)
    shape = tuple(int(n) for n in shape)
    dtype = np.dtype(dtype)
    opts = _write_options(
        metadata=metadata, compression=compression, bit_depth=bit_depth, ome=ome, chunks=chunks
    )
    inputs = as_path_list(inputs)
    if fmt.create is None:
        check_targets(_plan_targets(fmt, path, shape), inputs, overwrite)
        buffer = np.zeros(shape, dtype)
        yield buffer
        _check_data(fmt, path, buffer)  # as write() does (.npz, for one, needs a dict)
        _write_checked(fmt, path, buffer, opts, overwrite=overwrite, inputs=inputs)
        return
    check_targets([path], inputs, overwrite)
    # Also covers writes into ``out`` in the caller's block (a Zarr chunk on a full disk);
    # memory-mapped outputs reserve their space when created, so they fail here, not by SIGBUS.
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with staged([path], overwrite=overwrite) as (tmp,):
            try:
                out = fmt.create(tmp, shape, dtype, opts)
                yield out
            except BaseException:
                # zarr writes on its own event loop: a write still pending when a signal or an
                # error stops the caller would re-create the temporary folder after its removal.
                zarr.settle_pending_io()
                raise
            if isinstance(out, np.memmap):
                out.flush()
