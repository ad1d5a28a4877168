"""NumPy ``.npy`` (one array, memory-mappable) and ``.npz`` (named arrays) files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from debcr.data.io.memory import check_memory, format_bytes
from debcr.data.io.metadata import ImageMetadata
from debcr.data.io.registry import ReadOptions, WriteOptions, register_format
from debcr.errors import DataError
from debcr.files import reserve


def _check_npy_size(path: Path, lazy: bool) -> None:
    """Refuse an ``.npy`` whose header declares more data than the file holds, or, read
    eagerly, more than the free memory (a 128-byte header can declare 1.8 TiB)."""
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
        except ValueError:
            return  # not an .npy (an .npz renamed): _read_npy says so
        read_header = np.lib.format.read_array_header_1_0
        if version != (1, 0):  # 2.0 (and 3.0, 2.0 with a UTF-8 header) have 4-byte lengths
            read_header = np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(fh)
        start = fh.tell()
    if dtype.hasobject:
        return  # refused by np.load(allow_pickle=False)
    nbytes = math.prod(shape) * dtype.itemsize
    held = path.stat().st_size - start
    if nbytes > held:
        raise DataError(
            f"could not read {path} as NPY: it declares {'×'.join(map(str, shape))} {dtype} "
            f"values ({format_bytes(nbytes)}) but holds only {format_bytes(held)} of them; the "
            "file is damaged or incomplete: re-copy or re-export it"
        )
    if not lazy:
        check_memory(
            nbytes,
            f"the {'×'.join(map(str, shape))} {dtype} values of {path}",
            "read it with load(path, lazy=True), which keeps it on disk",
        )


def _read_npy(path: Path, opts: ReadOptions) -> tuple[np.ndarray, ImageMetadata]:
    _check_npy_size(path, opts.lazy)
    arr = np.load(path, mmap_mode="r" if opts.lazy else None, allow_pickle=False)
    if not isinstance(arr, np.ndarray):  # a .npz archive renamed to .npy
        arr.close()
        raise DataError(f"{path} is an .npz archive, not an .npy array; rename it to .npz")
    return arr, ImageMetadata()


def _write_npy(path: Path, data: Any, opts: WriteOptions) -> None:
    np.save(path, np.asarray(data), allow_pickle=False)


def _create_npy(path: Path, shape: tuple[int, ...], dtype: np.dtype, opts: WriteOptions) -> Any:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    reserve(path, path.stat().st_size)  # a full disk: ENOSPC now, not SIGBUS when filled
    return out


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


register_format(".npy", _read_npy, _write_npy, name="NPY", create=_create_npy)
register_format(".npz", _read_npz, _write_npz, name="NPZ", keyed=True, holds_dict=True)
