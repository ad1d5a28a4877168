"""The file-format registry: formats chosen by extension, and the options passed to them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from debcr.data.io.metadata import ImageMetadata
from debcr.errors import DataError
from debcr.files import PathLike


@dataclass(frozen=True)
class ReadOptions:
    """Options passed to a format reader."""

    lazy: bool = False
    key: str | None = None


@dataclass(frozen=True)
class WriteOptions:
    """Options passed to a format writer (see `write`)."""

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
        `open_output`; None means the output is buffered in memory and
        written at the end.
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


def _normalise_extensions(extensions: str | Iterable[str], caller: str) -> tuple[str, ...]:
    """Lower-case suffixes with a leading dot; at least one."""
    exts = (extensions,) if isinstance(extensions, str) else tuple(extensions)
    if not exts:
        raise DataError(f"{caller} needs at least one extension such as '.tif'")
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in exts)


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
        See `FileFormat`; either may be None for read-only or write-only formats.
    name
        Display name; defaults to the first extension without the dot, upper-cased.
    directory, keyed, planes_as_files, holds_dict, create, prepare
        See `FileFormat`.

    Returns
    -------
    FileFormat
        The registered format.
    """
    exts = _normalise_extensions(extensions, "register_format")
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


def unregister_format(extensions: str | Iterable[str]) -> None:
    """Remove the registration of file extensions (the inverse of `register_format`).

    Parameters
    ----------
    extensions
        One or more suffixes, spelled as for `register_format` (case-insensitive; a
        leading dot is added if missing).

    Raises
    ------
    DataError
        If an extension is not registered; nothing is removed then.
    """
    exts = _normalise_extensions(extensions, "unregister_format")
    missing = [ext for ext in exts if ext not in _FORMATS]
    if missing:
        raise DataError(
            f"cannot unregister {missing}: not registered; registered extensions are "
            f"{_extension_list()}"
        )
    for ext in exts:
        del _FORMATS[ext]


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
