"""Model files: safetensors + metadata, never pickles; clear errors for bad files; registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from debcr.errors import ModelFileError
from debcr.model import init, save
from debcr.modelfile import (
    CHECKSUM_KEY,
    FORMAT,
    StoredModel,
    file_checksum,
    load_model,
    read_header,
    tensor_checksum,
)
from debcr.weights import PRETRAINED, available


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = init(seed=3)
    path = save(model, tmp_path / "model", metadata={"task": "mine", "note": "ü"})
    assert path.name == "model.safetensors"
    assert path.read_bytes()[8:9] == b"{"  # a JSON header, not a pickle
    loaded = load_model(path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    assert loaded.metadata["task"] == "mine" and loaded.metadata["note"] == "ü"
    assert loaded.metadata["normalization"]["method"] == "percentile"
    header = read_header(path)
    assert header["format"] == FORMAT and header["architecture"] == "m-rBCR"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary left


def test_existing_model_file_is_not_overwritten(tmp_path: Path) -> None:
    model = init(seed=1)
    path = save(model, tmp_path / "m.safetensors")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save(init(seed=2), path)
    assert path.read_bytes() == before
    save(init(seed=2), path, overwrite=True)
    assert path.read_bytes() != before


def test_untrained_models_differ_by_seed_and_repeat_with_it() -> None:
    a, b, c = init(seed=1), init(seed=1), init(seed=2)
    w = "inverse_net.head0.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])
    assert a.metadata["source"] == "untrained"


def test_random_bytes_are_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ModelFileError, match="not a safetensors model file"):
        load_model(path)


def test_truncated_model_file(tmp_path: Path) -> None:
    path = save(init(seed=0), tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:300_000])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        load_model(path)


def test_foreign_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match="not a debcr model file"):
        load_model(path)


def _rewrite(path: Path, tensors: dict, header: dict) -> None:
    """Write a model file as another tool would, with a checksum that fits ``tensors``."""
    save_file(tensors, str(path), metadata={**header, CHECKSUM_KEY: tensor_checksum(tensors)})


def test_damaged_weights_are_detected(tmp_path: Path) -> None:
    path = save(init(seed=0), tmp_path / "m.safetensors")
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")  # the tensor bytes follow the header
    rng = np.random.default_rng(0)
    for offset in rng.choice(np.arange(start, len(data)), size=400, replace=False):
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"m\.safetensors is damaged"):
        load_model(path)


def test_files_without_checksum_load_with_a_warning(tmp_path: Path, caplog) -> None:
    path = save(init(seed=0), tmp_path / "old.safetensors")
    header = {k: v for k, v in read_header(path).items() if k != CHECKSUM_KEY}
    save_file(init(seed=0).state_dict(), str(path), metadata=header)
    with caplog.at_level("WARNING", logger="debcr.modelfile"):
        model = load_model(path)
    assert "old.safetensors has no checksum" in caplog.text
    assert torch.equal(
        model.state_dict()["inverse_net.head0.bias"], init(seed=0).inverse_net.head0.bias
    )


def test_builtin_files_carry_a_matching_checksum(caplog) -> None:
    for entry in PRETRAINED.values():
        assert len(read_header(entry.path)[CHECKSUM_KEY]) == 64
        with caplog.at_level("WARNING", logger="debcr.modelfile"):
            load_model(entry.path)
    assert "checksum" not in caplog.text


def test_mismatched_parameters(tmp_path: Path) -> None:
    path = save(init(seed=0), tmp_path / "m.safetensors")
    header = read_header(path)
    tensors = {k: v for k, v in init(seed=0).state_dict().items() if "head0" not in k}
    _rewrite(path, tensors, header)
    with pytest.raises(ModelFileError, match="4 missing"):
        load_model(path)


def test_newer_format_and_other_architecture(tmp_path: Path) -> None:
    path = save(init(seed=0), tmp_path / "m.safetensors")
    tensors = init(seed=0).state_dict()
    _rewrite(path, tensors, {**read_header(path), "format_version": "99"})
    with pytest.raises(ModelFileError, match="newer debcr"):
        load_model(path)
    _rewrite(path, tensors, {**read_header(path), "format_version": "1", "architecture": "UNet"})
    with pytest.raises(ModelFileError, match="architecture UNet"):
        load_model(path)


def test_missing_model_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="2D_denoising, 3D_denoising, bright_SR, confocal_SR"):
        init("2d_denoise")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nothing.safetensors")


def test_registry_lists_the_four_published_models() -> None:
    assert available() == ["2D_denoising", "3D_denoising", "bright_SR", "confocal_SR"]
    for entry in PRETRAINED.values():
        meta = json.loads(read_header(entry.path)["metadata"])
        assert meta["license"] == "CC-BY-4.0" and "CC BY 4.0" in meta["attribution"]
    licence = PRETRAINED["2D_denoising"].path.with_name("LICENSE-weights.txt").read_text()
    assert "Attribution 4.0 International" in licence


def test_file_checksum_reads_the_tensor_checksum_from_the_bytes(tmp_path: Path) -> None:
    """The torch-free checksum of `StoredModel` equals the one of the loaded tensors."""
    paths = [save(init(seed=3), tmp_path / "new.safetensors")]
    paths += [p.path for p in PRETRAINED.values()]
    for path in paths:
        expected = tensor_checksum(load_model(path).state_dict())
        assert file_checksum(path) == expected
        stored = StoredModel.read(path)
        assert stored is not None and stored.checksum == expected
        assert stored.metadata == load_model(path).metadata


def test_a_file_of_other_dtypes_is_loaded_whole(tmp_path: Path) -> None:
    """float64 weights: `file_checksum` does not name them, so the file is not stored."""
    path = save(init(seed=0), tmp_path / "m.safetensors")
    tensors = {k: v.double() for k, v in init(seed=0).state_dict().items()}
    _rewrite(path, tensors, read_header(path))
    assert file_checksum(path) is None
    assert StoredModel.read(path) is None


def test_a_file_replaced_after_reading_is_refused(tmp_path: Path) -> None:
    """A `StoredModel` names the weights it read: loading other weights from its path (a run
    replaced the file meanwhile) must fail, or a conversion of the new weights would be kept
    under the old checksum."""
    path = save(init(seed=0), tmp_path / "m.safetensors")
    stored = StoredModel.read(path)
    save(init(seed=1), path, overwrite=True)
    with pytest.raises(ModelFileError, match="changed while it was in use"):
        stored.load()


@pytest.mark.parametrize("change", ["trailing bytes", "truncated"])
def test_file_checksum_refuses_what_safetensors_refuses(tmp_path: Path, change: str) -> None:
    path = tmp_path / "m.safetensors"
    data = PRETRAINED["2D_denoising"].path.read_bytes()
    path.write_bytes(data + b"\0" * 16 if change == "trailing bytes" else data[:-16])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        StoredModel.read(path)
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        load_model(path)
