"""Reading the original's TensorFlow checkpoints without TensorFlow, and the built-in models."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REFERENCE, TASKS
from debcr.cli import main
from debcr.errors import ModelFileError
from debcr.interop import convert_tf_checkpoint, read_tf_checkpoint
from debcr.interop.keras_layout import CHECKPOINT_LAYERS, KERAS_TO_TORCH, kernel_to_torch
from debcr.model import init
from debcr.modelfile import load_model
from debcr.nn import MRBCR
from test_tf_bundle import _write


def _prefix(task: str) -> Path:
    return REFERENCE / "weights" / task / "ckpt-best"


def test_layer_tables_cover_every_parameter_once() -> None:
    params = set(MRBCR().state_dict())
    mapped = {f"{v}.{kind}" for v in KERAS_TO_TORCH.values() for kind in ("weight", "bias")}
    assert mapped == params
    assert sorted(CHECKPOINT_LAYERS.values()) == sorted(KERAS_TO_TORCH)


def test_kernel_layouts() -> None:
    dense = np.arange(6, dtype=np.float32).reshape(2, 3)  # in 2, out 3
    assert kernel_to_torch(dense).shape == (3, 2, 1, 1)
    assert kernel_to_torch(dense)[2, 1, 0, 0] == dense[1, 2]
    conv1d = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3)  # k, in, out
    assert kernel_to_torch(conv1d).shape == (3, 2, 1, 5)
    assert kernel_to_torch(conv1d)[2, 1, 0, 4] == conv1d[4, 1, 2]
    conv2d = np.arange(3 * 4 * 2 * 5, dtype=np.float32).reshape(3, 4, 2, 5)  # kh, kw, in, out
    assert kernel_to_torch(conv2d).shape == (5, 2, 3, 4)
    assert kernel_to_torch(conv2d)[4, 1, 2, 3] == conv2d[2, 3, 1, 4]


def test_checkpoint_equals_fixture_weights(fixture_npz) -> None:
    state = read_tf_checkpoint(_prefix("2D_denoising"))
    for key, value in fixture_npz.items():
        if not key.startswith("w."):
            continue
        name, kind = key[2:].rsplit(".", 1)
        ours = state[f"{KERAS_TO_TORCH[name]}.{'weight' if kind == 'kernel' else 'bias'}"]
        expected = kernel_to_torch(value) if kind == "kernel" else value
        np.testing.assert_array_equal(ours, expected, err_msg=key)


def test_converted_checkpoint_reproduces_the_original(fixture_npz) -> None:
    model = init(_prefix("2D_denoising"))  # TF checkpoint converted on the fly
    x = torch.from_numpy(fixture_npz["x0"]).permute(0, 3, 1, 2)
    with torch.no_grad():
        outputs = model(x)
    for scale, got in zip("024", outputs):
        diff = np.abs(got.permute(0, 2, 3, 1).numpy() - fixture_npz[f"out_z{scale}"]).max()
        assert diff <= 1e-5


@pytest.mark.parametrize("task", TASKS)
def test_builtin_models_equal_a_fresh_conversion(task: str) -> None:
    shipped = init(task)
    fresh = read_tf_checkpoint(_prefix(task))
    for key, value in shipped.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), fresh[key], err_msg=f"{task}: {key}")
    assert shipped.metadata["task"] == task
    assert shipped.metadata["license"] == "CC-BY-4.0"
    assert "TensorFlow" in shipped.metadata["converted_from"]
    assert "Yakimovich" in shipped.metadata["attribution"]
    assert shipped.metadata["halo"] % 4 == 0 and 8 <= shipped.metadata["halo"] <= 128
    with torch.no_grad():
        out = shipped.restore(torch.rand(2, 1, 64, 64))
    assert torch.isfinite(out).all()


def test_builtin_2d_denoising_reproduces_fixture(denoiser, fixture_npz) -> None:
    x = torch.from_numpy(fixture_npz["x0"]).permute(0, 3, 1, 2)
    with torch.no_grad():
        z0 = denoiser.restore(x)
    assert np.abs(z0[:, 0].numpy() - fixture_npz["api_predict"]).max() <= 1e-5


@pytest.mark.slow
def test_convert_cli_writes_a_loadable_model(tmp_path: Path, fixture_npz) -> None:
    out = tmp_path / "mine.safetensors"
    assert main(["convert-tf", str(_prefix("bright_SR")), str(out), "--task", "bright_SR"]) == 0
    model = load_model(out)
    assert model.metadata["task"] == "bright_SR"
    np.testing.assert_array_equal(
        model.state_dict()["inverse_net.head0.weight"].numpy(),
        read_tf_checkpoint(_prefix("bright_SR"))["inverse_net.head0.weight"],
    )
    # an existing output is refused without --overwrite, with a one-line error
    assert main(["convert-tf", str(_prefix("bright_SR")), str(out)]) == 2


@pytest.mark.slow
def test_convert_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    convert_tf_checkpoint(_prefix("confocal_SR"), out)
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_tf_checkpoint(_prefix("confocal_SR"), out)


def _copy_checkpoint(tmp_path: Path, task: str = "2D_denoising") -> Path:
    for path in _prefix(task).parent.glob("ckpt-best.*"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / "ckpt-best"


def test_truncated_checkpoint_is_reported(tmp_path: Path) -> None:
    prefix = _copy_checkpoint(tmp_path)
    data = prefix.with_name("ckpt-best.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[:400_000])
    with pytest.raises(ModelFileError, match="truncated"):
        read_tf_checkpoint(prefix)


def test_missing_checkpoint_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="ckpt-none"):
        read_tf_checkpoint(tmp_path / "ckpt-none")


def test_checkpoint_of_another_model_is_rejected(tmp_path: Path) -> None:
    """A valid TF checkpoint that is not m-rBCR names what is missing and what is foreign."""
    kernel = np.ones((3, 3, 1, 8), np.float32)
    key = "model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    _write(tmp_path / "ckpt-1", {key: (1, kernel.shape, kernel.tobytes())})
    with pytest.raises(
        ModelFileError,
        match=r"not a checkpoint of the original DeBCR m-rBCR.*296 model variables are missing",
    ):
        read_tf_checkpoint(tmp_path / "ckpt-1")


def test_checkpoint_with_a_misshaped_layer_is_rejected(tmp_path: Path) -> None:
    from debcr.interop.tf_bundle import read_bundle

    tensors = read_bundle(_prefix("2D_denoising"))
    bad = "model/layer_with_weights-1/layer_with_weights-103/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    tensors[bad] = np.ones((7, 7, 48, 1), np.float32)
    _write(
        tmp_path / "ckpt-2",
        {k: (1 if v.dtype == np.float32 else 9, v.shape, v.tobytes()) for k, v in tensors.items()},
    )
    with pytest.raises(ModelFileError, match=r"wrong shape.*inverse_net.head0.weight"):
        read_tf_checkpoint(tmp_path / "ckpt-2")


def test_optimizer_state_tracked_under_the_model_is_skipped(tmp_path: Path, caplog) -> None:
    """The original's training loop can track its optimizer inside the model object."""
    from debcr.interop.tf_bundle import read_bundle

    tensors = read_bundle(_prefix("2D_denoising"))
    kernel = "model/layer_with_weights-1/layer_with_weights-103/kernel"
    extra = {
        "model/optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE": np.array(150, np.int64),
        "model/optimizer/_learning_rate/.ATTRIBUTES/VARIABLE_VALUE": np.array(1e-3, np.float32),
        f"{kernel}/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE": np.zeros(
            tensors[f"{kernel}/.ATTRIBUTES/VARIABLE_VALUE"].shape, np.float32
        ),
        "step/.ATTRIBUTES/VARIABLE_VALUE": np.array(7, np.int64),
    }
    _write(
        tmp_path / "ckpt-3",
        {
            k: (1 if v.dtype == np.float32 else 9, v.shape, v.tobytes())
            for k, v in {**tensors, **extra}.items()
        },
    )
    with caplog.at_level("DEBUG", logger="debcr.interop.tf_checkpoint"):
        state = read_tf_checkpoint(tmp_path / "ckpt-3")
    reference = read_tf_checkpoint(_prefix("2D_denoising"))
    assert state.keys() == reference.keys()
    assert all(np.array_equal(state[k], reference[k]) for k in state)
    skipped = caplog.text
    assert "skipped 5 variables" in skipped  # the 4 above and the original's save_counter
    assert "model/optimizer/_iterations" in skipped and ".OPTIMIZER_SLOT" in skipped


def test_convert_refuses_an_existing_output_before_reading(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"keep me")
    # A checkpoint that does not exist: the refusal must come first, without reading anything.
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_tf_checkpoint(tmp_path / "no-such-ckpt", tmp_path / "m")
    assert out.read_bytes() == b"keep me"
