"""Tests of the numpy-only TensorFlow checkpoint reader, on the published m-rBCR weights
and on small checkpoints written here byte by byte."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from debcr.errors import ModelFileError
from debcr.interop import tf_bundle
from debcr.interop.tf_bundle import list_bundle, read_bundle

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "debcr_reference"
WEIGHTS = REFERENCE / "weights"
TASKS = ["2D_denoising", "3D_denoising", "bright_SR", "confocal_SR"]
MODEL_FLOATS = 236_630
DATA_SUFFIX = ".data-00000-of-00001"


def _prefix(task: str) -> Path:
    return WEIGHTS / task / "ckpt-best"


@pytest.fixture(scope="module")
def weights_2d() -> dict[str, np.ndarray]:
    return read_bundle(_prefix("2D_denoising"))


@pytest.fixture
def checkpoint_copy(tmp_path: Path) -> Path:
    """A writable copy of the 2D_denoising checkpoint; returns its prefix."""
    for suffix in (".index", DATA_SUFFIX):
        shutil.copyfile(
            _prefix("2D_denoising").with_name("ckpt-best" + suffix),
            tmp_path / ("ckpt-best" + suffix),
        )
    return tmp_path / "ckpt-best"


# --------------------------------------------------------------------------------------
# crc32c


@pytest.mark.parametrize(
    ("data", "expected"),
    [  # RFC 3720, appendix B.4, and the usual check value
        (b"123456789", 0xE3069283),
        (bytes(32), 0x8A9136AA),
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (b"", 0),
    ],
)
def test_crc32c_known_values(data: bytes, expected: int) -> None:
    assert tf_bundle._crc32c(data) == expected


@settings(max_examples=40, deadline=None)
@given(size=st.integers(4096, 40_000), seed=st.integers(0, 2**32 - 1))
def test_crc32c_lanes_match_bytewise_loop(size: int, seed: int) -> None:
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    bytewise = tf_bundle._crc32c_update(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    assert tf_bundle._crc32c_lanes(data) == bytewise


def test_crc32c_of_one_megabyte_is_fast() -> None:
    import time

    data = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    start = time.perf_counter()
    tf_bundle._crc32c(data)
    assert time.perf_counter() - start < 0.5


# --------------------------------------------------------------------------------------
# The published checkpoints


@pytest.mark.parametrize("task", TASKS)
def test_reference_checkpoints_hold_all_model_floats(task: str) -> None:
    tensors = read_bundle(_prefix(task))
    model = {key: value for key, value in tensors.items() if key.startswith("model/")}
    assert len(model) == 296
    assert all(value.dtype == np.float32 for value in model.values())
    assert sum(value.size for value in model.values()) == MODEL_FLOATS
    # Besides the model only the save counter is numeric; the object graph is a string.
    assert set(tensors) - set(model) == {"save_counter/.ATTRIBUTES/VARIABLE_VALUE"}
    assert tensors["save_counter/.ATTRIBUTES/VARIABLE_VALUE"].dtype == np.int64
    assert "_CHECKPOINTABLE_OBJECT_GRAPH" not in tensors


def test_reference_fixture_weights_found_exactly(weights_2d: dict[str, np.ndarray]) -> None:
    fixture = np.load(REFERENCE / "mrbcr_2D_denoising_reference.npz")
    names = [name for name in fixture.files if name.startswith("w.")]
    by_content = {(value.shape, value.tobytes()): key for key, value in weights_2d.items()}
    matched = {}
    for name in names:
        expected = fixture[name]
        key = by_content.get((expected.shape, expected.tobytes()))
        assert key is not None, f"{name} {expected.shape} is not in the checkpoint"
        np.testing.assert_array_equal(weights_2d[key], expected)
        matched[name] = key
    # One-to-one: every model variable is some fixture weight.
    assert sorted(matched.values()) == sorted(k for k in weights_2d if k.startswith("model/"))


def test_list_bundle_agrees_with_read_bundle(weights_2d: dict[str, np.ndarray]) -> None:
    listing = list_bundle(_prefix("2D_denoising"))
    assert list(listing) == list(weights_2d)
    for key, (dtype, shape) in listing.items():
        assert (dtype, shape) == (weights_2d[key].dtype.name, weights_2d[key].shape)
    kernel = "model/layer_with_weights-0/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    assert listing[kernel] == ("float32", (1, 32))


@pytest.mark.parametrize(
    "path",
    [
        _prefix("2D_denoising"),
        str(_prefix("2D_denoising")) + ".index",
        str(_prefix("2D_denoising")) + DATA_SUFFIX,
        WEIGHTS / "2D_denoising",
    ],
    ids=["prefix", "index", "data", "directory"],
)
def test_accepts_prefix_index_data_file_or_directory(
    path: Path | str, weights_2d: dict[str, np.ndarray]
) -> None:
    tensors = read_bundle(path, verify_checksums=False)
    assert list(tensors) == list(weights_2d)
    assert all(np.array_equal(tensors[key], weights_2d[key]) for key in tensors)


def test_arrays_are_writable(weights_2d: dict[str, np.ndarray]) -> None:
    value = next(iter(weights_2d.values()))
    value_copy = value.copy()
    value[...] = 0  # must not raise: callers may convert in place
    value[...] = value_copy


# --------------------------------------------------------------------------------------
# Bad files


def test_missing_data_file(tmp_path: Path) -> None:
    shutil.copyfile(str(_prefix("2D_denoising")) + ".index", tmp_path / "ckpt-best.index")
    with pytest.raises(
        ModelFileError,
        match=r"data file .*ckpt-best\.data-00000-of-00001"
        r" does not exist",
    ):
        read_bundle(tmp_path / "ckpt-best")
    assert len(list_bundle(tmp_path / "ckpt-best")) == 297  # the index alone suffices


def test_missing_index_file(tmp_path: Path) -> None:
    (tmp_path / ("ckpt-best" + DATA_SUFFIX)).write_bytes(b"\0" * 8)
    with pytest.raises(ModelFileError, match=r"index .*ckpt-best\.index does not exist"):
        read_bundle(tmp_path / "ckpt-best")


def test_index_cut_in_half(tmp_path: Path) -> None:
    index = Path(str(_prefix("2D_denoising")) + ".index").read_bytes()
    (tmp_path / "ckpt-best.index").write_bytes(index[: len(index) // 2])
    with pytest.raises(ModelFileError, match="not a TensorFlow checkpoint index, or is truncated"):
        list_bundle(tmp_path / "ckpt-best")


def test_index_block_outside_file(tmp_path: Path) -> None:
    # The footer survives, but the blocks it points to are gone.
    index = Path(str(_prefix("2D_denoising")) + ".index").read_bytes()
    (tmp_path / "ckpt-best.index").write_bytes(index[: len(index) // 2] + index[-48:])
    with pytest.raises(ModelFileError, match=r"ckpt-best\.index is truncated"):
        list_bundle(tmp_path / "ckpt-best")


def test_data_file_too_short(checkpoint_copy: Path) -> None:
    data_path = Path(str(checkpoint_copy) + DATA_SUFFIX)
    data_path.write_bytes(data_path.read_bytes()[:500_000])
    with pytest.raises(ModelFileError, match=r"data file .* is truncated"):
        read_bundle(checkpoint_copy)


def test_flipped_byte_in_data_file(checkpoint_copy: Path) -> None:
    data_path = Path(str(checkpoint_copy) + DATA_SUFFIX)
    data = bytearray(data_path.read_bytes())
    data[400_000] ^= 0x40  # inside the float32 model values
    data_path.write_bytes(data)
    with pytest.raises(ModelFileError, match=r"is corrupt: .*crc32c.*[Rr]e-copy"):
        read_bundle(checkpoint_copy)
    # Unchecked, the damage goes through: exactly one value differs.
    damaged = read_bundle(checkpoint_copy, verify_checksums=False)
    original = read_bundle(_prefix("2D_denoising"), verify_checksums=False)
    differing = sum(int(np.sum(damaged[key] != original[key])) for key in original)
    assert differing == 1


def test_flipped_byte_in_index(checkpoint_copy: Path) -> None:
    index_path = Path(str(checkpoint_copy) + ".index")
    index = bytearray(index_path.read_bytes())
    index[1000] ^= 0x01
    index_path.write_bytes(index)
    with pytest.raises(ModelFileError, match=r"ckpt-best\.index is corrupt"):
        list_bundle(checkpoint_copy)


def test_other_file_renamed_to_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "weights.index").write_bytes(rng.integers(0, 256, 5000, np.uint8).tobytes())
    with pytest.raises(ModelFileError, match=r"weights\.index is not a TensorFlow checkpoint"):
        read_bundle(tmp_path / "weights.index")
    (tmp_path / "tiny.index").write_bytes(b"hello")
    with pytest.raises(ModelFileError, match=r"tiny\.index is not a TensorFlow checkpoint"):
        read_bundle(tmp_path / "tiny")


def test_directory_with_two_indexes(tmp_path: Path) -> None:
    for name in ("ckpt-1.index", "ckpt-2.index"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"several .*ckpt-1\.index, ckpt-2\.index"):
        read_bundle(tmp_path)


def test_directory_without_index(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"holds no TensorFlow checkpoint index"):
        list_bundle(tmp_path)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_damaged_index_never_raises_raw_errors(data: st.DataObject) -> None:
    index = bytearray(Path(str(_prefix("2D_denoising")) + ".index").read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(index) - 1))
        index[position] = data.draw(st.integers(0, 255))
    index_path = Path(str(_prefix("2D_denoising")) + ".index")
    try:  # unchecked, so the parser itself meets the damage
        header, entries = tf_bundle._parse_index(bytes(index), verify=False)
        tf_bundle._numeric_entries(header, entries, index_path)
    except (tf_bundle._FormatProblem, ModelFileError):
        pass


# --------------------------------------------------------------------------------------
# Small checkpoints written here, for cases the published ones do not cover

_MAGIC = 0xDB4775248B80FB57


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(value)


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in entries)
    return body + (0).to_bytes(4, "little") + (1).to_bytes(4, "little")


def _table(entries: list[tuple[bytes, bytes]], compression: int = 0) -> bytes:
    out = bytearray()

    def add_block(contents: bytes) -> bytes:
        handle = _varint(len(out)) + _varint(len(contents))
        trailer = bytes([compression])
        crc = _mask(tf_bundle._crc32c(contents + trailer))
        out.extend(contents + trailer + crc.to_bytes(4, "little"))
        return handle

    data_handle = add_block(_block(entries))
    meta_handle = add_block(_block([]))
    index_handle = add_block(_block([(entries[-1][0], data_handle)]))
    return bytes(out) + (meta_handle + index_handle).ljust(40, b"\0") + _MAGIC.to_bytes(8, "little")


def _shape(shape: tuple[int, ...]) -> bytes:
    return b"".join(_field(2, _field(1, dim)) for dim in shape)


def _write(
    prefix: Path,
    tensors: dict[str, tuple[int, tuple[int, ...], bytes]],
    *,
    big_endian: bool = False,
    compression: int = 0,
    size_error: int = 0,
    slices: int = 0,
) -> None:
    """Write a one-shard checkpoint: key -> (TF dtype code, shape, raw bytes)."""
    header = _field(1, 1) + _field(2, int(big_endian))
    entries = [(b"", header)]
    data = bytearray()
    for key, (code, shape, raw) in sorted(tensors.items()):
        entry = _field(1, code) + _field(2, _shape(shape)) + _field(4, len(data))
        entry += _field(5, len(raw) + size_error)
        entry += _varint(6 << 3 | 5) + _mask(tf_bundle._crc32c(raw)).to_bytes(4, "little")
        entry += b"".join(_field(7, b"") for _ in range(slices))
        entries.append((key.encode(), entry))
        data.extend(raw)
    Path(str(prefix) + ".index").write_bytes(_table(entries, compression))
    Path(str(prefix) + DATA_SUFFIX).write_bytes(bytes(data))


def test_synthetic_dtypes_and_shapes(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    arrays = {
        "a/float": rng.normal(size=(2, 3, 4)).astype(np.float32),
        "b/double": rng.normal(size=(5,)),
        "c/int32": rng.integers(-100, 100, (3, 2), dtype=np.int32),
        "d/int64": np.array(7, dtype=np.int64),
        "e/uint8": rng.integers(0, 255, (4,), dtype=np.uint8),
        "f/bool": np.array([True, False, True]),
        "g/half": rng.normal(size=(2, 2)).astype(np.float16),
        "h/empty": np.zeros((0, 3), dtype=np.float32),
        "i/big": rng.normal(size=(70, 70)).astype(np.float32),  # crc via numpy lanes
    }
    codes = {
        "float32": 1,
        "float64": 2,
        "int32": 3,
        "int64": 9,
        "uint8": 4,
        "bool": 10,
        "float16": 19,
    }
    tensors = {
        key: (
            codes[value.dtype.name],
            value.shape,
            value.astype(value.dtype.newbyteorder("<")).tobytes(),
        )
        for key, value in arrays.items()
    }
    tensors["_CHECKPOINTABLE_OBJECT_GRAPH"] = (7, (), b"\x05graph")
    _write(tmp_path / "ckpt", tensors)
    result = read_bundle(tmp_path / "ckpt")
    assert list(result) == sorted(arrays)
    for key, value in arrays.items():
        assert result[key].dtype == value.dtype
        np.testing.assert_array_equal(result[key], value)
    assert list_bundle(tmp_path / "ckpt")["a/float"] == ("float32", (2, 3, 4))


def test_synthetic_big_endian(tmp_path: Path) -> None:
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    _write(tmp_path / "ckpt", {"w": (1, (2, 3), value.astype(">f4").tobytes())}, big_endian=True)
    result = read_bundle(tmp_path / "ckpt")["w"]
    assert result.dtype == np.float32 and result.dtype.isnative
    np.testing.assert_array_equal(result, value)


def test_synthetic_unsupported_dtype(tmp_path: Path) -> None:
    _write(tmp_path / "ckpt", {"w": (14, (2,), b"\0" * 4)})  # DT_BFLOAT16
    with pytest.raises(ModelFileError, match=r"'w' .* has DT_BFLOAT16"):
        list_bundle(tmp_path / "ckpt")


def test_synthetic_size_inconsistent_with_shape(tmp_path: Path) -> None:
    _write(tmp_path / "ckpt", {"w": (1, (2, 3), b"\0" * 24)}, size_error=-4)
    with pytest.raises(ModelFileError, match=r"'w' .* stored as 20 bytes.* need 24 bytes"):
        read_bundle(tmp_path / "ckpt")


def test_synthetic_sliced_variable(tmp_path: Path) -> None:
    _write(tmp_path / "ckpt", {"w": (1, (2,), b"\0" * 8)}, slices=2)
    with pytest.raises(ModelFileError, match=r"'w' .* partitioned into 2 slices"):
        read_bundle(tmp_path / "ckpt")


def test_synthetic_snappy_blocks(tmp_path: Path) -> None:
    _write(tmp_path / "ckpt", {"w": (1, (2,), b"\0" * 8)}, compression=1)
    with pytest.raises(ModelFileError, match="snappy-compressed index blocks are not supported"):
        read_bundle(tmp_path / "ckpt")


def test_synthetic_paths_may_be_str_or_pathlike(tmp_path: Path) -> None:
    _write(tmp_path / "ckpt", {"w": (1, (2,), b"\0" * 8)})
    assert list(read_bundle(os.fspath(tmp_path / "ckpt"))) == ["w"]
