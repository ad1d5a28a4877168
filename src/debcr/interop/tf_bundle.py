"""Read TensorFlow 2 checkpoints ("tensor bundles") with numpy and the standard library only.

A checkpoint with prefix ``P`` is two or more files:

``P.index``
    A sorted key/value table in the LevelDB table layout. Keys are variable names; the
    empty key holds a ``BundleHeaderProto`` and every other value a ``BundleEntryProto``
    saying where the variable's bytes lie (shard, offset, size), its dtype, shape and
    crc32c.
``P.data-SSSSS-of-NNNNN``
    The raw tensor bytes of shard ``SSSSS``, in the byte order the header names.

Only the handful of protobuf fields needed here are decoded, by hand, so neither
TensorFlow nor protobuf is required. Tables whose blocks are snappy-compressed are
rejected (TensorFlow writes checkpoint indexes uncompressed), as are partitioned
(sliced) variables.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np

from debcr.errors import ModelFileError

__all__ = ["list_bundle", "read_bundle"]

logger = logging.getLogger(__name__)

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the 8-byte magic
_HANDLES_SIZE = 40
_BLOCK_TRAILER_SIZE = 5  # compression type byte + masked crc32c
_COMPRESSION_NONE = 0
_COMPRESSION_SNAPPY = 1
_CRC_MASK_DELTA = 0xA282EAD8
_CRC32C_POLY = 0x82F63B78  # Castagnoli, bit-reversed
_CRC32C_LANES_FROM = 4096  # bytes; below this numpy overhead outweighs its speed
_HEADER_KEY = b""
_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")

# TensorFlow DataType enum values (tensorflow/core/framework/types.proto) numpy can hold.
_NUMPY_DTYPES: dict[int, str] = {
    1: "f4",  # DT_FLOAT
    2: "f8",  # DT_DOUBLE
    3: "i4",  # DT_INT32
    4: "u1",  # DT_UINT8
    5: "i2",  # DT_INT16
    6: "i1",  # DT_INT8
    8: "c8",  # DT_COMPLEX64
    9: "i8",  # DT_INT64
    10: "?",  # DT_BOOL
    17: "u2",  # DT_UINT16
    18: "c16",  # DT_COMPLEX128
    19: "f2",  # DT_HALF
    22: "u4",  # DT_UINT32
    23: "u8",  # DT_UINT64
}
_DT_STRING = 7
_TF_DTYPE_NAMES: dict[int, str] = {
    7: "DT_STRING",
    11: "DT_QINT8",
    12: "DT_QUINT8",
    13: "DT_QINT32",
    14: "DT_BFLOAT16",
    15: "DT_QINT16",
    16: "DT_QUINT16",
    20: "DT_RESOURCE",
    21: "DT_VARIANT",
}

_RECOPY = "Re-download or re-copy the checkpoint files."


# --------------------------------------------------------------------------------------
# Problems found while decoding bytes. The decoders do not know which file they read, so
# they raise these and the callers turn them into ModelFileError naming the file.


class _FormatProblem(Exception):
    """The bytes do not follow the expected layout."""


class _Truncated(_FormatProblem):
    """Something points past the end of the file."""


class _ChecksumMismatch(_FormatProblem):
    """Stored and computed crc32c differ."""


class _NotATable(_FormatProblem):
    """The file does not end with the table magic number."""


# --------------------------------------------------------------------------------------
# crc32c


@lru_cache(maxsize=1)
def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


def _crc32c_update(register: int, data: bytes | bytearray | memoryview) -> int:
    """Advance the raw crc32c register over ``data`` one byte at a time."""
    table = _crc32c_table()
    for byte in data:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


@lru_cache(maxsize=16)
def _zero_run_tables(length: int) -> tuple[list[int], ...]:
    """Four 256-entry tables that advance the register over ``length`` zero bytes.

    That advance is linear over GF(2), so it is fixed by where it sends each of the 32
    single-bit registers; the tables hold those images XOR-ed together for each possible
    value of each register byte.
    """
    table = np.array(_crc32c_table(), dtype=np.uint32)
    images = np.left_shift(np.uint32(1), np.arange(32, dtype=np.uint32))
    for _ in range(length):
        images = table[images & 0xFF] ^ (images >> 8)
    bit_set = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(bool)  # value, bit
    per_byte = images.reshape(4, 8)  # register byte, bit
    selected = np.where(bit_set[None, :, :], per_byte[:, None, :], np.uint32(0))
    return tuple(np.bitwise_xor.reduce(selected, axis=2).tolist())


def _crc32c_lanes(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C of a long buffer: numpy runs many equal slices ("lanes") side by side.

    A byte-at-a-time Python loop manages about 10 MB/s. Instead each lane's register is
    computed independently, then the lanes are chained: the register after lane k is the
    register after lane k-1 advanced over the lane's length of zero bytes, XOR the lane's
    own register (the register update is linear).
    """
    lane = 1 << max(6, len(data).bit_length() // 2)  # about sqrt(len): balances both loops
    count = len(data) // lane
    if count == 0:
        return _crc32c_update(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    columns = np.frombuffer(data, dtype=np.uint8, count=count * lane).reshape(count, lane).T
    table = np.array(_crc32c_table(), dtype=np.uint32)
    registers = np.zeros(count, dtype=np.uint32)
    registers[0] = 0xFFFFFFFF  # the initial value belongs to the first lane only
    for column in np.ascontiguousarray(columns):
        registers = table[(registers ^ column) & 0xFF] ^ (registers >> 8)
    shift0, shift1, shift2, shift3 = _zero_run_tables(lane)
    register = 0
    for lane_register in registers.tolist():
        register = (
            shift0[register & 0xFF]
            ^ shift1[(register >> 8) & 0xFF]
            ^ shift2[(register >> 16) & 0xFF]
            ^ shift3[register >> 24]
            ^ lane_register
        )
    register = _crc32c_update(register, memoryview(data)[count * lane :])
    return register ^ 0xFFFFFFFF


def _crc32c(data: bytes | bytearray | memoryview) -> int:
    """Return the CRC-32C (Castagnoli) checksum of ``data``.

    Parameters
    ----------
    data
        The bytes to checksum.

    Returns
    -------
    int
        The checksum, as TensorFlow and LevelDB compute it before masking.
    """
    if len(data) >= _CRC32C_LANES_FROM:
        return _crc32c_lanes(data)
    return _crc32c_update(0xFFFFFFFF, data) ^ 0xFFFFFFFF


def _unmask_crc(masked: int) -> int:
    # LevelDB stores crcs rotated and offset so that a crc of data holding crcs stays useful.
    rotated = (masked - _CRC_MASK_DELTA) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


# --------------------------------------------------------------------------------------
# Varints and the protobuf wire format


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode the base-128 varint at ``buf[pos:]``; return it and the position after it."""
    value = 0
    shift = 0
    while True:
        if pos >= end:
            raise _FormatProblem("a varint runs past the end of its record")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise _FormatProblem("a varint is longer than 10 bytes")


def _read_fixed(buf: bytes, pos: int, width: int) -> tuple[int, int]:
    if pos + width > len(buf):
        raise _FormatProblem("a fixed-width protobuf field runs past the end of its record")
    return int.from_bytes(buf[pos : pos + width], "little"), pos + width


def _proto_fields(buf: bytes) -> dict[int, list[int | bytes]]:
    """Split a serialized protobuf message into ``{field number: [raw values]}``.

    Varint and fixed-width values come back as unsigned ints, length-delimited ones as bytes.
    """
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos, len(buf))
        number, wire_type = tag >> 3, tag & 7
        value: int | bytes
        if wire_type == 0:
            value, pos = _read_varint(buf, pos, len(buf))
        elif wire_type == 1:
            value, pos = _read_fixed(buf, pos, 8)
        elif wire_type == 5:
            value, pos = _read_fixed(buf, pos, 4)
        elif wire_type == 2:
            length, pos = _read_varint(buf, pos, len(buf))
            if pos + length > len(buf):
                raise _FormatProblem("a protobuf field runs past the end of its record")
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise _FormatProblem(f"unsupported protobuf wire type {wire_type}")
        fields.setdefault(number, []).append(value)
    return fields


def _scalar_field(fields: dict[int, list[int | bytes]], number: int) -> int:
    # proto3: an absent scalar is 0, and a repeated occurrence overrides the earlier one.
    value = fields.get(number, [0])[-1]
    if not isinstance(value, int):
        raise _FormatProblem(f"protobuf field {number} is not a number")
    return value


def _message_field(fields: dict[int, list[int | bytes]], number: int) -> bytes:
    value = fields.get(number, [b""])[-1]
    if not isinstance(value, bytes):
        raise _FormatProblem(f"protobuf field {number} is not a message")
    return value


def _as_int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# --------------------------------------------------------------------------------------
# The LevelDB table layout of the .index file


def _read_block_handle(buf: bytes, pos: int, end: int) -> tuple[tuple[int, int], int]:
    offset, pos = _read_varint(buf, pos, end)
    size, pos = _read_varint(buf, pos, end)
    return (offset, size), pos


def _read_block(table: bytes, handle: tuple[int, int], verify: bool) -> bytes:
    """Return the contents of the block at ``handle``, checking its trailer."""
    offset, size = handle
    trailer_end = offset + size + _BLOCK_TRAILER_SIZE
    blocks_end = len(table) - _FOOTER_SIZE
    if trailer_end > blocks_end:
        raise _Truncated(
            f"a table block at bytes {offset}..{trailer_end} lies beyond the end of the "
            f"{blocks_end} bytes of table data"
        )
    compression = table[offset + size]
    if verify:
        stored = int.from_bytes(table[offset + size + 1 : trailer_end], "little")
        if _unmask_crc(stored) != _crc32c(table[offset : offset + size + 1]):
            raise _ChecksumMismatch(f"the table block at byte {offset} fails its crc32c check")
    if compression == _COMPRESSION_SNAPPY:
        raise _FormatProblem(
            "its blocks are compressed with snappy, and snappy-compressed index blocks are "
            "not supported (TensorFlow writes checkpoint indexes uncompressed); re-save the "
            "checkpoint with TensorFlow"
        )
    if compression != _COMPRESSION_NONE:
        raise _FormatProblem(f"a table block has unknown compression type {compression}")
    return table[offset : offset + size]


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield the ``(key, value)`` pairs of one block, undoing the key prefix compression."""
    if len(block) < 4:
        raise _FormatProblem("a table block is too short to hold its restart count")
    num_restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * num_restarts  # the restart array is only a search aid
    if end < 0:
        raise _FormatProblem("a table block's restart array is larger than the block")
    key = b""
    pos = 0
    while pos < end:
        shared, pos = _read_varint(block, pos, end)
        non_shared, pos = _read_varint(block, pos, end)
        value_length, pos = _read_varint(block, pos, end)
        if shared > len(key) or pos + non_shared + value_length > end:
            raise _FormatProblem("a table entry runs past the end of its block")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        yield key, block[pos : pos + value_length]
        pos += value_length


def _table_entries(table: bytes, verify: bool) -> Iterator[tuple[bytes, bytes]]:
    """Yield every ``(key, value)`` pair of a LevelDB-layout table, in key order."""
    if len(table) < _FOOTER_SIZE:
        raise _NotATable(f"it is only {len(table)} bytes long, shorter than a table footer")
    footer = table[-_FOOTER_SIZE:]
    if int.from_bytes(footer[_HANDLES_SIZE:], "little") != _TABLE_MAGIC:
        raise _NotATable("it does not end with the table magic number")
    _metaindex, pos = _read_block_handle(footer, 0, _HANDLES_SIZE)
    index_handle, _ = _read_block_handle(footer, pos, _HANDLES_SIZE)
    index_block = _read_block(table, index_handle, verify)
    for _separator, handle_bytes in _block_entries(index_block):
        data_handle, _ = _read_block_handle(handle_bytes, 0, len(handle_bytes))
        yield from _block_entries(_read_block(table, data_handle, verify))


# --------------------------------------------------------------------------------------
# Bundle protos


@dataclass(frozen=True)
class _Header:
    num_shards: int
    big_endian: bool


@dataclass(frozen=True)
class _Entry:
    key: str
    dtype_code: int
    shape: tuple[int, ...] | None  # None: unknown rank
    shard_id: int
    offset: int
    size: int
    masked_crc32c: int
    num_slices: int


def _parse_header(value: bytes) -> _Header:
    fields = _proto_fields(value)
    return _Header(
        num_shards=_scalar_field(fields, 1),
        big_endian=_scalar_field(fields, 2) == 1,  # Endianness enum: LITTLE = 0, BIG = 1
    )


def _parse_shape(value: bytes) -> tuple[int, ...] | None:
    fields = _proto_fields(value)
    if _scalar_field(fields, 3):
        return None
    dims = []
    for dim in fields.get(2, []):
        if not isinstance(dim, bytes):
            raise _FormatProblem("a tensor shape dimension is not a message")
        dims.append(_as_int64(_scalar_field(_proto_fields(dim), 1)))
    return tuple(dims)


def _parse_entry(key: str, value: bytes) -> _Entry:
    fields = _proto_fields(value)
    return _Entry(
        key=key,
        dtype_code=_scalar_field(fields, 1),
        shape=_parse_shape(_message_field(fields, 2)),
        shard_id=_scalar_field(fields, 3),
        offset=_as_int64(_scalar_field(fields, 4)),
        size=_as_int64(_scalar_field(fields, 5)),
        masked_crc32c=_scalar_field(fields, 6),
        num_slices=len(fields.get(7, [])),
    )


def _parse_index(table: bytes, verify: bool) -> tuple[_Header, list[_Entry]]:
    header: _Header | None = None
    entries: list[_Entry] = []
    for raw_key, value in _table_entries(table, verify):
        if raw_key == _HEADER_KEY:
            header = _parse_header(value)
            continue
        try:
            key = raw_key.decode("utf-8")
        except UnicodeDecodeError:
            raise _FormatProblem(f"the key {raw_key!r} is not UTF-8 text") from None
        entries.append(_parse_entry(key, value))
    if header is None:
        raise _FormatProblem("it has no bundle header entry")
    return header, entries


# --------------------------------------------------------------------------------------
# Files


def _resolve_prefix(path: str | os.PathLike) -> Path:
    """Turn a prefix, an ``.index`` or ``.data-*`` path, or a directory into the prefix."""
    path = Path(path)
    if path.is_dir():
        indexes = sorted(path.glob("*.index"))
        if not indexes:
            raise ModelFileError(
                f"The directory {path} holds no TensorFlow checkpoint index (*.index). "
                "Pass the checkpoint prefix, e.g. '.../ckpt-best'."
            )
        if len(indexes) > 1:
            names = ", ".join(index.name for index in indexes)
            raise ModelFileError(
                f"The directory {path} holds several TensorFlow checkpoints ({names}). "
                f"Pass the prefix of the one to read, e.g. '{indexes[0].with_suffix('')}'."
            )
        return indexes[0].with_suffix("")
    if path.name.endswith(".index"):
        return path.with_name(path.name[: -len(".index")])
    suffix = _DATA_SUFFIX.search(path.name)
    if suffix:
        return path.with_name(path.name[: suffix.start()])
    return path


def _data_path(prefix: Path, shard_id: int, num_shards: int) -> Path:
    return prefix.with_name(f"{prefix.name}.data-{shard_id:05d}-of-{num_shards:05d}")


def _load_index(prefix: Path, verify: bool) -> tuple[_Header, list[_Entry]]:
    index_path = prefix.with_name(prefix.name + ".index")
    if not index_path.is_file():
        raise ModelFileError(
            f"The TensorFlow checkpoint index {index_path} does not exist: a checkpoint with "
            f"prefix '{prefix}' consists of {index_path.name} and "
            f"{_data_path(prefix, 0, 1).name}. Check the path and pass the prefix without "
            "extension, e.g. '.../ckpt-best'."
        )
    table = index_path.read_bytes()
    try:
        return _parse_index(table, verify)
    except _Truncated as exc:
        raise ModelFileError(
            f"The TensorFlow checkpoint index {index_path} is truncated: {exc}. {_RECOPY}"
        ) from exc
    except _ChecksumMismatch as exc:
        raise ModelFileError(
            f"The TensorFlow checkpoint index {index_path} is corrupt: {exc}. {_RECOPY}"
        ) from exc
    except _NotATable as exc:
        raise ModelFileError(
            f"{index_path} is not a TensorFlow checkpoint index, or is truncated: {exc}. "
            "Pass the prefix of a TensorFlow 2 checkpoint (e.g. '.../ckpt-best'); if it is "
            f"one, {_RECOPY.lower()}"
        ) from exc
    except _FormatProblem as exc:
        raise ModelFileError(
            f"Cannot read the TensorFlow checkpoint index {index_path}: {exc}."
        ) from exc


def _numpy_dtype(entry: _Entry, header: _Header, index_path: Path) -> np.dtype | None:
    """Return the numpy dtype of ``entry``, or None for string tensors (which are skipped)."""
    if entry.dtype_code == _DT_STRING:
        return None
    code = _NUMPY_DTYPES.get(entry.dtype_code)
    if code is None:
        name = _TF_DTYPE_NAMES.get(entry.dtype_code, "an unknown dtype")
        raise ModelFileError(
            f"The variable '{entry.key}' in {index_path} has {name} (TensorFlow dtype code "
            f"{entry.dtype_code}), which debcr cannot read. Convert the variable to float32 "
            "with TensorFlow and save the checkpoint again."
        )
    return np.dtype((">" if header.big_endian else "<") + code)


def _checked_shape(entry: _Entry, dtype: np.dtype, index_path: Path) -> tuple[int, ...]:
    where = f"The variable '{entry.key}' in {index_path}"
    if entry.num_slices:
        raise ModelFileError(
            f"{where} is partitioned into {entry.num_slices} slices, which debcr does not "
            "support. Save the model without variable partitioning."
        )
    if entry.shape is None or any(dim < 0 for dim in entry.shape):
        raise ModelFileError(f"{where} has an unknown shape {entry.shape}. {_RECOPY}")
    expected = dtype.itemsize * math.prod(entry.shape)  # exact: no int64 overflow
    if entry.size != expected:
        raise ModelFileError(
            f"{where} is stored as {entry.size} bytes, but its dtype {dtype.name} and shape "
            f"{entry.shape} need {expected} bytes; the index is corrupt. {_RECOPY}"
        )
    return entry.shape


def _numeric_entries(
    header: _Header, entries: list[_Entry], index_path: Path
) -> list[tuple[_Entry, np.dtype, tuple[int, ...]]]:
    result = []
    for entry in entries:
        dtype = _numpy_dtype(entry, header, index_path)
        if dtype is None:
            logger.debug("skipping string tensor %s", entry.key)
            continue
        result.append((entry, dtype, _checked_shape(entry, dtype, index_path)))
    return result


def _read_tensor(
    file: BinaryIO,
    data_path: Path,
    entry: _Entry,
    dtype: np.dtype,
    shape: tuple[int, ...],
    verify: bool,
) -> np.ndarray:
    end = entry.offset + entry.size
    # Check before allocating, so a corrupt size cannot ask for an absurd buffer.
    if entry.offset < 0 or end > os.fstat(file.fileno()).st_size:
        raise ModelFileError(
            f"The TensorFlow checkpoint data file {data_path} is truncated: the variable "
            f"'{entry.key}' needs bytes {entry.offset}..{end}. {_RECOPY}"
        )
    file.seek(entry.offset)
    buffer = bytearray(entry.size)  # bytearray so the returned array is writable
    if file.readinto(buffer) != entry.size:
        raise ModelFileError(
            f"The TensorFlow checkpoint data file {data_path} could not be read in full at "
            f"bytes {entry.offset}..{end} (variable '{entry.key}'). {_RECOPY}"
        )
    if verify and _crc32c(buffer) != _unmask_crc(entry.masked_crc32c):
        raise ModelFileError(
            f"The TensorFlow checkpoint data file {data_path} is corrupt: the bytes of the "
            f"variable '{entry.key}' fail their crc32c check. {_RECOPY}"
        )
    array = np.frombuffer(buffer, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


# --------------------------------------------------------------------------------------
# Public API


def list_bundle(prefix: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """List the numeric tensors of a TensorFlow checkpoint without reading its data.

    Parameters
    ----------
    prefix
        The checkpoint prefix (``.../ckpt-best``), its ``.index`` or ``.data-*`` file, or a
        directory holding exactly one ``*.index`` file. Only the index is read.

    Returns
    -------
    dict[str, tuple[str, tuple[int, ...]]]
        Variable key → (numpy dtype name, shape), in key order, for the same tensors
        `read_bundle` returns (string tensors are left out).

    Raises
    ------
    ModelFileError
        If the index is missing, not a checkpoint index, truncated or corrupt, or holds a
        variable of an unsupported dtype, an inconsistent size or a partitioned variable.
    """
    prefix = _resolve_prefix(prefix)
    header, entries = _load_index(prefix, verify=True)
    index_path = prefix.with_name(prefix.name + ".index")
    return {
        entry.key: (dtype.newbyteorder("=").name, shape)
        for entry, dtype, shape in _numeric_entries(header, entries, index_path)
    }


def read_bundle(
    prefix: str | os.PathLike, *, verify_checksums: bool = True
) -> dict[str, np.ndarray]:
    """Read every numeric tensor of a TensorFlow 2 checkpoint.

    Parameters
    ----------
    prefix
        The checkpoint prefix (``.../ckpt-best`` for ``ckpt-best.index`` and
        ``ckpt-best.data-00000-of-00001``), the path of its ``.index`` or of one of its
        ``.data-*`` files, or a directory holding exactly one ``*.index`` file.
    verify_checksums
        Check the crc32c of every index block and every tensor. Leave on unless the
        files were checked before; it costs about 0.1 s per MB of tensor data.

    Returns
    -------
    dict[str, numpy.ndarray]
        Variable key (e.g. ``model/layer_with_weights-0/bias/.ATTRIBUTES/VARIABLE_VALUE``)
        → writable array in native byte order, with the stored dtype (float32 stays
        float32) and shape, in key order. String tensors, such as the object graph under
        ``_CHECKPOINTABLE_OBJECT_GRAPH``, are skipped.

    Raises
    ------
    ModelFileError
        If the index or a data file is missing, a file is not a checkpoint, truncated or
        corrupt (checksum mismatch), or a variable has an unsupported dtype, a size that
        does not match its dtype and shape, or is partitioned into slices.
    """
    prefix = _resolve_prefix(prefix)
    header, entries = _load_index(prefix, verify=verify_checksums)
    index_path = prefix.with_name(prefix.name + ".index")
    numeric = _numeric_entries(header, entries, index_path)
    by_shard: dict[int, list[tuple[_Entry, np.dtype, tuple[int, ...]]]] = {}
    for item in numeric:
        by_shard.setdefault(item[0].shard_id, []).append(item)
    tensors: dict[str, np.ndarray] = {}
    for shard_id, items in sorted(by_shard.items()):
        data_path = _shard_path(prefix, shard_id, header, index_path)
        with data_path.open("rb") as file:
            for entry, dtype, shape in items:
                tensors[entry.key] = _read_tensor(
                    file, data_path, entry, dtype, shape, verify_checksums
                )
    return {entry.key: tensors[entry.key] for entry, _, _ in numeric}


def _shard_path(prefix: Path, shard_id: int, header: _Header, index_path: Path) -> Path:
    if shard_id >= header.num_shards:
        raise ModelFileError(
            f"The TensorFlow checkpoint index {index_path} refers to data shard {shard_id}, "
            f"but says it has {header.num_shards} shards; it is corrupt. {_RECOPY}"
        )
    data_path = _data_path(prefix, shard_id, header.num_shards)
    if not data_path.is_file():
        raise ModelFileError(
            f"The TensorFlow checkpoint data file {data_path} does not exist, although its "
            f"index {index_path.name} does. Copy all files of the checkpoint "
            f"({index_path.name} and {prefix.name}.data-*) into the same directory."
        )
    return data_path
