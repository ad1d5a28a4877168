"""Training with Lightning on real FMD patches: files, best/last, seeds, resume, early stop."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import fmd_frame, fmd_gt
from debcr.config import TrainConfig
from debcr.data import crop, normalize
from debcr.errors import DataError
from debcr.model import init, train
from debcr.modelfile import load_model, read_header

PATCH = 32


def _pairs(field: int, frames: int) -> dict[str, np.ndarray]:
    gt = normalize(fmd_gt(field), clip=False)
    lows, gts = [], []
    for i in range(frames):
        lows.append(crop(normalize(fmd_frame(field, i), clip=False), PATCH, 0.0))
        gts.append(crop(gt, PATCH, 0.0))
    low, target = np.concatenate(lows), np.concatenate(gts)
    keep = target.reshape(len(target), -1).std(axis=1) > 0.05  # skip empty background
    return {"low": low[keep][:64], "gt": target[keep][:64]}


@pytest.fixture(scope="module")
def data() -> tuple[dict, dict]:
    return _pairs(1, 1), _pairs(20, 1)


def _config(run: Path, **overrides) -> TrainConfig:
    settings = dict(
        weights_path=str(run),
        batch_size=4,
        num_steps=8,
        val_freq=4,
        save_freq=2,
        patience=10,
        patch_size=PATCH,
        accelerator="cpu",
        devices=1,
        progress=False,
        seed=7,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def _steps(run: Path, key: str) -> list[int]:
    with (run / "metrics.csv").open() as fh:
        return [int(row["step"]) for row in csv.DictReader(fh) if row.get(key)]


def _all_steps(run: Path) -> list[int]:
    with (run / "metrics.csv").open() as fh:
        return [int(row["step"]) for row in csv.DictReader(fh)]


def _ckpt_step(path: Path) -> int:
    return torch.load(path, weights_only=True, map_location="cpu")["global_step"]


#: What Lightning printed on every run or resume before debcr silenced it at its source.
NOISE = ("weights_only", "exists and is not empty", "Epoch ")


@pytest.mark.slow
def test_training_writes_best_last_logs_and_curves(data, tmp_path: Path) -> None:
    run = tmp_path / "run"
    model = train(*data, _config(run))
    names = {p.name for p in run.iterdir()}
    assert {
        "best.safetensors",
        "last.safetensors",
        "resume.ckpt",
        "metrics.csv",
        "curves.png",
        "config.yaml",
    } <= names
    assert not [n for n in names if n.startswith(".tmp")]
    assert len(_steps(run, "val_loss")) == 2  # the whole validation set, every 4 steps
    assert len(_steps(run, "train_loss")) >= 8
    best = json.loads(read_header(run / "best.safetensors")["metadata"])
    with (run / "metrics.csv").open() as fh:
        val = [float(r["val_loss"]) for r in csv.DictReader(fh) if r.get("val_loss")]
    assert best["val_loss"] == pytest.approx(min(val), rel=1e-6)
    reloaded = load_model(run / "best.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key])
    assert json.loads(read_header(run / "last.safetensors")["metadata"])["step"] == 8


@pytest.mark.slow
def test_same_seed_same_weights(data, tmp_path: Path) -> None:
    a = train(*data, _config(tmp_path / "a", num_steps=4))
    b = train(*data, _config(tmp_path / "b", num_steps=4))
    c = train(*data, _config(tmp_path / "c", num_steps=4, seed=8))
    key = "inverse_net.head0.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], c.state_dict()[key])


def _raw_pairs(field: int) -> dict[str, np.ndarray]:
    """Uint8 patches straight from the PNG files (not normalised), 32 pairs."""
    low, gt = crop(fmd_frame(field, 0), PATCH, 0.0), crop(fmd_gt(field), PATCH, 0.0)
    keep = gt.reshape(len(gt), -1).std(axis=1) > 10
    return {"low": low[keep][:32], "gt": gt[keep][:32]}


@pytest.mark.slow
def test_raw_arrays_are_normalised_as_prepare_would_and_recorded(tmp_path: Path, caplog) -> None:
    # Before: raw uint8 patches trained on 0–255 values (loss in the hundreds).
    train_raw, val_raw = _raw_pairs(1), _raw_pairs(20)
    assert train_raw["low"].dtype == np.uint8

    def by_hand(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for key, arr in arrays.items():
            lo, hi = np.percentile(arr.astype(np.float64), [0.1, 99.9])
            out[key] = ((arr - lo) / (hi - lo)).astype(np.float32)
        return out

    with caplog.at_level("WARNING", logger="debcr"):
        train(train_raw, val_raw, _config(tmp_path / "raw", num_steps=4))
    lines = [r.getMessage() for r in caplog.records if "raw intensities" in r.getMessage()]
    assert len(lines) == 2 and lines[0].startswith("training data held raw intensities"), lines
    assert "'low'" in lines[0] and "'gt'" in lines[0] and "debcr prepare" in lines[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="debcr"):
        prepared = train(
            by_hand(train_raw),
            by_hand(val_raw),
            _config(tmp_path / "norm", num_steps=4, recipe="paper"),
        )
    assert not [r for r in caplog.records if "raw intensities" in r.getMessage()]
    # The loss of the first step (before any update) sees only the data: the same to float
    # rounding. (Weights after a few Adam steps are not compared: Adam turns a rounding-level
    # difference of a near-zero gradient into a full step of either sign.)
    first = [_curve(tmp_path / name)[0][0] for name in ("raw", "norm")]
    assert first[0] == pytest.approx(first[1], rel=1e-5) and first[0] < 5, first
    saved = load_model(tmp_path / "raw" / "best.safetensors").metadata["training_data"]
    lo, hi = np.percentile(train_raw["low"].astype(np.float64), [0.1, 99.9])
    assert saved["train"]["normalised_here"]["low"] == pytest.approx(
        {"pmin": 0.1, "pmax": 99.9, "lo": lo, "hi": hi}
    )
    assert "normalised_here" not in prepared.metadata["training_data"]["train"]


@pytest.mark.slow
def test_fine_tuning_starts_from_the_builtin_model(data, tmp_path: Path) -> None:
    base = init("2D_denoising")
    tuned = train(
        *data,
        _config(tmp_path / "ft", num_steps=4, learning_rate=1e-4, augmentation="flip_rot90"),
        init_model="2D_denoising",
    )
    key = "inverse_net.head0.weight"
    delta = (tuned.state_dict()[key] - base.state_dict()[key]).abs()
    assert 0 < float(delta.max()) < 0.05  # moved a little from the published weights
    assert tuned.metadata["task"] == "2D_denoising"
    # provenance of the published weights is not carried over to changed weights
    assert "converted_from" not in tuned.metadata
    assert tuned.metadata["init_model"] == "2D_denoising"
    assert tuned.metadata["init_license"] == "CC-BY-4.0"
    assert tuned.metadata["halo"] % 4 == 0 and tuned.metadata["halo"] > 0


@pytest.mark.slow
def test_resume_continues_from_the_last_step(data, tmp_path: Path) -> None:
    run = tmp_path / "r"
    train(*data, _config(run, num_steps=6))
    with pytest.raises(FileExistsError, match="resume"):
        train(*data, _config(run, num_steps=6))
    train(*data, _config(run, num_steps=10), resume=True)
    steps = _steps(run, "train_loss")
    assert max(steps) == 9 and len(steps) == len(set(steps))  # continued, not restarted
    assert json.loads(read_header(run / "last.safetensors")["metadata"])["step"] == 10


@pytest.mark.slow
def test_resume_keeps_the_whole_history_once(
    data, tmp_path: Path, capfd: pytest.CaptureFixture, recwarn: pytest.WarningsRecorder
) -> None:
    from lightning.pytorch.callbacks import Callback

    class KeepCheckpointOf(Callback):  # resume.ckpt of step 4, as if killed after step 8
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 4:
                shutil.copy(run / "resume.ckpt", tmp_path / "step4.ckpt")

    run = tmp_path / "h"
    train(*data, _config(run, num_steps=8), callbacks=[KeepCheckpointOf()])
    assert _all_steps(run) == list(range(8))  # one row per step: train and validation merged
    assert _steps(run, "val_loss") == [3, 7]
    shutil.copy(tmp_path / "step4.ckpt", run / "resume.ckpt")
    assert _ckpt_step(run / "resume.ckpt") == 4
    train(*data, _config(run, num_steps=10), resume=True)
    # rows 4–7 of the interrupted segment were replaced by the resumed ones, not repeated
    assert _all_steps(run) == list(range(10))
    assert _steps(run, "val_loss") == [3, 7]
    train(*data, _config(run, num_steps=12), resume=True)
    assert _all_steps(run) == list(range(12))
    assert _steps(run, "train_loss") == list(range(12))
    assert _steps(run, "val_loss") == [3, 7, 11]
    # curves.png is plotted from this whole history
    from debcr.training import read_metrics

    assert [s for s, _ in read_metrics(run)["train_loss"]] == list(range(12))
    assert (run / "curves.png").stat().st_mtime >= (run / "metrics.csv").stat().st_mtime
    best = json.loads(read_header(run / "best.safetensors")["metadata"])
    with (run / "metrics.csv").open() as fh:
        val = [float(r["val_loss"]) for r in csv.DictReader(fh) if r.get("val_loss")]
    assert best["val_loss"] == pytest.approx(min(val), rel=1e-6)
    # no Lightning noise about torch.load, the log folder or epochs, also on resume
    # (Lightning's loggers write to stderr themselves, its warnings go through `warnings`)
    said = [capfd.readouterr().err] + [str(w.message) for w in recwarn]
    assert not [text for text in said if any(n in text for n in NOISE)], said


@pytest.mark.slow
def test_early_stopping_after_patience(data, tmp_path: Path) -> None:
    run = tmp_path / "es"
    train(*data, _config(run, num_steps=40, val_freq=2, patience=2, learning_rate=1.0))
    last = json.loads(read_header(run / "last.safetensors")["metadata"])["step"]
    assert last < 40  # stopped early: Adam with lr 1 wrecks the model, validation never improves


@pytest.mark.slow
def test_bad_training_data_is_reported(data, tmp_path: Path) -> None:
    train_set, val_set = data
    with pytest.raises(DataError, match=r"'low' .* and 'gt' .* must have the same shape"):
        train(
            {"low": train_set["low"], "gt": train_set["gt"][:3]}, val_set, _config(tmp_path / "x")
        )
    with pytest.raises(DataError, match="no array 'gt'"):
        train({"low": train_set["low"]}, val_set, _config(tmp_path / "y"))
    with pytest.raises(DataError, match=r"patches 30×30 .* multiples of 4"):
        bad = {"low": train_set["low"][:, :30, :30], "gt": train_set["gt"][:, :30, :30]}
        train(bad, val_set, _config(tmp_path / "z"))


def _cli_train(run: Path, data_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "debcr.cli",
        "train",
        str(run / "config.in.yaml"),
        "--train",
        str(data_dir / "t_train.npz"),
        "--val",
        str(data_dir / "t_val.npz"),
        *extra,
    ]


def _write_data(data, folder: Path) -> None:
    np.savez(folder / "t_train.npz", **data[0])
    np.savez(folder / "t_val.npz", **data[1])


@pytest.mark.slow
def test_kill_9_loses_at_most_save_freq_steps(data, tmp_path: Path) -> None:
    from debcr import config as cfg

    run = tmp_path / "k"
    run.mkdir()
    _write_data(data, tmp_path)
    cfg.save(_config(run / "out", num_steps=400, val_freq=50, save_freq=3), run / "config.in.yaml")
    proc = subprocess.Popen(
        _cli_train(run, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    resume = run / "out" / "resume.ckpt"
    deadline = time.time() + 240
    step = 0
    while time.time() < deadline and step < 7:
        time.sleep(0.5)
        if resume.exists():
            step = torch.load(resume, weights_only=False, map_location="cpu")["global_step"]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert step >= 7, proc.stderr.read().decode()[-2000:]
    with (run / "out" / "metrics.csv").open() as fh:
        done = max(int(r["step"]) for r in csv.DictReader(fh)) + 1
    saved = torch.load(resume, weights_only=False, map_location="cpu")["global_step"]
    assert done - saved <= 3 + 1  # at most save_freq steps (+ the one in flight) lost
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "debcr.cli",
            "train",
            "--resume",
            str(run / "out"),
            f"num_steps={saved + 4}",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        json.loads(read_header(run / "out" / "last.safetensors")["metadata"])["step"] == saved + 4
    )
    # the steps after the checkpoint that the killed run had logged are replaced, not repeated
    assert _all_steps(run / "out") == list(range(saved + 4))
    assert not [n for n in NOISE if n in result.stderr], result.stderr[-2000:]


@pytest.mark.slow
def test_ctrl_c_saves_the_step_says_so_and_the_run_resumes(data, tmp_path: Path) -> None:
    from debcr import config as cfg

    run = tmp_path / "c"
    run.mkdir()
    _write_data(data, tmp_path)
    out = run / "out"
    # save_freq beyond the run: only the stop itself can have written the resume checkpoint
    config = _config(out, num_steps=400, val_freq=4, save_freq=1000, progress=True)
    cfg.save(config, run / "config.in.yaml")
    proc = subprocess.Popen(
        _cli_train(run, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
        if (out / "metrics.csv").is_file() and len(_all_steps(out)) >= 3:
            break
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 130, stderr[-3000:]
    line = r"interrupted at step (\d+); resume with `debcr train --resume (.+)`"
    found = re.findall(line, stderr)
    assert len(found) == 1, stderr[-3000:]
    step, folder = int(found[0][0]), Path(found[0][1])
    assert folder == out and 3 <= step < 400
    assert _ckpt_step(out / "resume.ckpt") == step  # the step it stopped at is saved
    assert json.loads(read_header(out / "last.safetensors")["metadata"])["step"] == step
    assert _all_steps(out) == list(range(step))  # and so are its metrics
    assert (out / "curves.png").is_file()
    assert not [n for n in os.listdir(out) if n.startswith(".tmp")]

    result = subprocess.run(
        [sys.executable, "-m", "debcr.cli", "train", "--resume", str(out), f"num_steps={step + 4}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(read_header(out / "last.safetensors")["metadata"])["step"] == step + 4
    assert _all_steps(out) == list(range(step + 4))  # continued from the step, history kept
    # A step-based progress bar; no Lightning noise about torch.load or the log folder.
    for text in (stdout, stderr, result.stdout, result.stderr):
        assert not [n for n in NOISE if n in text], text[-3000:]
    assert "/400" in stdout and f"/{step + 4}" in result.stdout


# Two Ctrl-C after step 5 of a run saving every 3 steps, in a process of its own (the signals go
# to the whole process, which must not be the test runner's).
_CTRL_C_TWICE = """
import json, os, signal, sys
import numpy as np
from lightning.pytorch.callbacks import Callback
from debcr.config import TrainConfig
from debcr.model import train
from debcr.training import TrainingInterrupted

class CtrlCTwice(Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == 5:
            os.kill(os.getpid(), signal.SIGINT)  # asks to stop after this step
            os.kill(os.getpid(), signal.SIGINT)  # stops at once

train_set, val_set = dict(np.load(sys.argv[1])), dict(np.load(sys.argv[2]))
config = TrainConfig(**json.loads(sys.argv[3]))
before = signal.getsignal(signal.SIGINT)
try:
    train(train_set, val_set, config, callbacks=[CtrlCTwice()])
except TrainingInterrupted as stop:
    print(json.dumps({"step": stop.step, "run_dir": str(stop.run_dir), "message": str(stop),
                      "handler_kept": signal.getsignal(signal.SIGINT) is before}))
"""


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_at_the_last_checkpoint(data, tmp_path: Path) -> None:
    run = tmp_path / "cc"
    for name, arrays in zip(("train", "val"), data, strict=True):
        np.savez(tmp_path / f"{name}.npz", **arrays)
    settings = _config(run, num_steps=40, save_freq=3).model_dump()
    arrays = [str(tmp_path / "train.npz"), str(tmp_path / "val.npz")]
    result = subprocess.run(
        [sys.executable, "-c", _CTRL_C_TWICE, *arrays, json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stop = json.loads(result.stdout.strip().splitlines()[-1])
    assert "interrupted at step 3" in stop["message"]
    assert stop["handler_kept"]  # Lightning left it ignored
    assert stop["step"] == 3 and stop["run_dir"] == str(run)
    assert _ckpt_step(run / "resume.ckpt") == 3
    train(*data, _config(run, num_steps=6, save_freq=3), resume=True)
    assert _all_steps(run) == list(range(6))


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(data, tmp_path: Path) -> None:
    from debcr import config as cfg

    run = tmp_path / "d"
    run.mkdir()
    _write_data(data, tmp_path)
    cfg.save(
        _config(run / "out", num_steps=4, val_freq=2, devices=2, strategy="ddp"),
        run / "config.in.yaml",
    )
    result = subprocess.run(_cli_train(run, tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gloo" in result.stderr or "distributed" in result.stderr.lower()
    assert json.loads(read_header(run / "out" / "last.safetensors")["metadata"])["step"] == 4
    assert len(_steps(run / "out", "val_loss")) == 2


def test_training_and_prediction_normalise_alike(denoiser) -> None:
    """Patches from `prepare` are exactly what `predict` feeds the network for that image."""
    from debcr.data import prepare
    from debcr.data.normalize import compute_stats
    from debcr.inference import slice_scale

    image = fmd_frame(19, 0)
    result = prepare(
        [image], [fmd_gt(19)], patch_size=128, split=(1.0, 0.0, 0.0), return_arrays=True
    )
    patches = result.arrays["train"]["low"]
    scale = slice_scale(compute_stats(image[None]), 0)
    network_input = scale.forward(image.astype(np.float32))
    np.testing.assert_allclose(patches[0], network_input[:128, :128], rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_model_records_the_percentiles_its_patches_were_normalised_with(tmp_path: Path) -> None:
    from debcr.data import prepare

    low = [fmd_frame(f, 0)[:128, :128] for f in (1, 20)]
    gt = [fmd_gt(f)[:128, :128] for f in (1, 20)]
    written = prepare(
        low,
        gt,
        name="p",
        out_dir=tmp_path,
        patch_size=PATCH,
        split={"train": [0], "val": [1]},
        pmin=2.0,
        pmax=99.0,
    )
    run = tmp_path / "run"
    model = train(written.paths["train"], written.paths["val"], _config(run, num_steps=2))
    expected = {"method": "percentile", "pmin": 2.0, "pmax": 99.0}
    assert model.metadata["normalization"] == expected
    header = json.loads(read_header(run / "last.safetensors")["metadata"])
    assert header["normalization"] == expected
    # Arrays without a prepare record are taken to use the published models' normalisation.
    plain = train(_pairs(1, 1), _pairs(20, 1), _config(tmp_path / "plain", num_steps=2))
    assert plain.metadata["normalization"] == {"method": "percentile", "pmin": 0.1, "pmax": 99.9}


# --- the mode catalogue and the sets of in-memory data --------------------------------


def test_every_mode_of_the_catalogue_is_complete_and_read_by_config_cli_and_training() -> None:
    import argparse
    import typing

    from debcr.cli import build_parser
    from debcr.modes import MODES, load_reference
    from debcr.training.modes import MODES as STRATEGIES
    from debcr.training.modes import TrainingMode, strategy_class

    assert typing.get_args(TrainConfig.model_fields["mode"].annotation) == tuple(MODES)
    assert TrainConfig().mode == next(iter(MODES))
    prepare_parser = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices["prepare"]
    mode_option = next(a for a in prepare_parser._actions if a.dest == "mode")
    assert tuple(mode_option.choices) == tuple(MODES)
    assert list(STRATEGIES) == list(MODES)
    for name, spec in MODES.items():
        assert callable(load_reference(spec.builder)) and callable(
            load_reference(spec.layer_builder)
        )
        cls = strategy_class(name)
        assert issubclass(cls, TrainingMode) and STRATEGIES[name] is cls
        assert cls().name == name and cls().spec is spec


def test_layer_data_becomes_the_sets_of_each_mode_with_a_held_out_tenth() -> None:
    from debcr.training.inputs import preview_input, training_sets

    rng = np.random.default_rng(0)
    frames = rng.random((3, 64, 96)).astype(np.float32)
    train, val, note = training_sets(frames, None, _config(Path("x"), mode="noise2noise"))
    assert train["repeats"].shape == (5, 3, 32, 32) and val["repeats"].shape == (1, 3, 32, 32)
    assert note == "validation: the last tenth of the training layer"
    assert preview_input(val).shape == (32, 32)
    train, val, note = training_sets(frames[0], frames[1], _config(Path("x"), mode="noise2void"))
    assert set(train) == set(val) == {"low"} and len(train["low"]) == len(val["low"]) == 6
    assert note == ""
    pairs = (rng.random((20, 32, 32)), rng.random((20, 32, 32)))
    train, val, note = training_sets(pairs, None, _config(Path("x")))
    assert len(train["low"]) == 18 and len(val["gt"]) == 2
    assert note == "validation: the last tenth of the training patches"
    with pytest.raises(DataError, match="Noise2Noise needs a stack of repeated noisy frames"):
        training_sets(frames[0], None, _config(Path("x"), mode="noise2noise"))


_KILLED_RUN = """
import os, signal, sys
from lightning.pytorch.callbacks import Callback
from debcr import config as cfg
from debcr.model import train

class KillAt(Callback):  # kill -9 at a step between two checkpoints
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)

config = cfg.load(sys.argv[1])
callbacks = [KillAt()] if int(sys.argv[2]) > 0 else []
train(config.train_data, config.val_data, config, callbacks=callbacks)
"""


def _curve(run: Path) -> dict[int, tuple[float, float]]:
    with (run / "metrics.csv").open() as fh:
        return {
            int(r["step"]): (float(r["train_loss"]), float(r["lr"])) for r in csv.DictReader(fh)
        }


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["supervised", "noise2noise"])
def test_killed_run_resumes_on_the_same_curve(data, tmp_path: Path, mode: str) -> None:
    """Schedule, weight average, data order, augmentation and Noise2Noise pairs continue
    exactly after kill -9."""
    from debcr import config as cfg

    if mode == "supervised":
        _write_data(data, tmp_path)
    else:  # three "acquisitions" of every location
        for split, name in zip(data, ("t_train", "t_val"), strict=True):
            low, gt = split["low"], split["gt"]
            np.savez(tmp_path / f"{name}.npz", repeats=np.stack([low, gt, (low + gt) / 2], 1))
    runs = {}
    for name, kill_at in (("straight", 0), ("killed", 8)):
        out = tmp_path / name
        # the default recipe: cosine schedule with warm-up, weight average, flips/rotations
        config = _config(
            out,
            num_steps=12,
            val_freq=4,
            save_freq=3,
            recipe="debcr",
            augmentation="flip_rot90",
            mode=mode,
            train_data=str(tmp_path / "t_train.npz"),
            val_data=str(tmp_path / "t_val.npz"),
        )
        assert (config.lr_schedule, config.augmentation) == ("cosine", "flip_rot90")
        assert config.ema_decay > 0
        cfg.save(config, tmp_path / f"{name}.yaml")
        proc = subprocess.run(
            [sys.executable, "-c", _KILLED_RUN, str(tmp_path / f"{name}.yaml"), str(kill_at)],
            capture_output=True,
            text=True,
        )
        runs[name] = out
        if kill_at:
            assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
            assert _ckpt_step(out / "resume.ckpt") == 6
            assert max(_curve(out)) >= 6  # a step after the checkpoint was logged, then lost
        else:
            assert proc.returncode == 0, proc.stderr[-2000:]
    resumed = subprocess.run(
        [sys.executable, "-m", "debcr.cli", "train", "--resume", str(runs["killed"])],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight, killed = _curve(runs["straight"]), _curve(runs["killed"])
    assert sorted(killed) == sorted(straight) == list(range(12))
    for step in range(12):
        assert killed[step] == pytest.approx(straight[step], rel=1e-6), step
    # warm-up (1 step of 12 at 5 %), then a decay to 1 % of the rate
    rates = [straight[s][1] for s in range(12)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] < rates[1] / 5
    for name in ("last.safetensors", "best.safetensors"):
        a = load_model(runs["straight"] / name).state_dict()
        b = load_model(runs["killed"] / name).state_dict()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_run_from_before_recipes_resumes_with_the_paper_recipe(data, tmp_path: Path) -> None:
    run = tmp_path / "old"
    _write_data(data, tmp_path)
    config = _config(
        run,
        num_steps=4,
        recipe="paper",
        train_data=str(tmp_path / "t_train.npz"),
        val_data=str(tmp_path / "t_val.npz"),
    )
    train(config.train_data, config.val_data, config)
    # config.yaml as a version without recipes wrote it
    written = yaml.safe_load((run / "config.yaml").read_text())
    for key in ("recipe", "lr_schedule", "warmup_fraction", "ema_decay"):
        del written[key]
    (run / "config.yaml").write_text(yaml.safe_dump(written))
    result = subprocess.run(
        [sys.executable, "-m", "debcr.cli", "train", "--resume", str(run), "num_steps=6"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("`Trainer.fit` stopped") == 1, result.stderr[-2000:]
    assert "litlogger" not in result.stderr and "LeafSpec" not in result.stderr, result.stderr
    assert [rate for _, rate in _curve(run).values()] == pytest.approx([1e-3] * 6)
    assert "recipe: paper" in (run / "config.yaml").read_text()
