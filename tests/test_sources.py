"""One resolver for every way a user names a model (API, CLI, training, napari)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import REFERENCE
from debcr.errors import ModelFileError
from debcr.model import init, save
from debcr.sources import resolve


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_builtin_names_and_model_files(tmp_path: Path) -> None:
    assert resolve("2D_denoising").kind == "builtin"
    path = save(init(None, seed=1), tmp_path / "m.safetensors")
    assert resolve(path) == resolve(str(path))
    assert resolve(path).kind == "file"


def test_a_run_folder_means_its_best_model_else_its_last(tmp_path: Path) -> None:
    best, last = init(None, seed=1), init(None, seed=2)
    save(last, tmp_path / "last.safetensors")
    assert _same_weights(init(tmp_path), last)
    save(best, tmp_path / "best.safetensors")
    assert resolve(tmp_path).location == tmp_path / "best.safetensors"
    assert _same_weights(init(tmp_path), best)


def test_original_tensorflow_checkpoints_by_prefix_file_or_folder() -> None:
    folder = REFERENCE / "weights" / "2D_denoising"
    for source in (folder / "ckpt-best", folder / "ckpt-best.index", folder):
        assert resolve(source).kind == "tf_checkpoint", source
    assert _same_weights(init(folder / "ckpt-best"), init("2D_denoising"))


def test_unusable_sources_say_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no model chosen: give a built-in model"):
        resolve("  ")
    with pytest.raises(ModelFileError, match=r"no model named 'x': not a built-in model \(2D_"):
        resolve("x")
    with pytest.raises(FileNotFoundError, match="no model file at"):
        resolve(tmp_path / "missing.safetensors")
    with pytest.raises(ModelFileError, match=r"holds no trained model .* and no TensorFlow"):
        resolve(tmp_path)
