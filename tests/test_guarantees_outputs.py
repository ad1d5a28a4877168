"""Outputs: nothing is replaced unchecked; train and export fail in one sentence.

What appears at an output while it is written is kept; full disks, full temporary folders,
wrong paths and SIGTERM during training end in one sentence and the documented exit code.

Everything runs on real files: real predictions through the public API (a file is created at
the output path from the real ``progress=`` callback of :func:`debcr.model.predict`), the real
command line in a subprocess where it must be the command, and real small file systems (a
tmpfs mounted for the test, as root on Linux; skipped with the reason otherwise).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from lightning.pytorch.callbacks import Callback

from conftest import DATA, ROOT, fmd_frame, fmd_gt, small_disk
from debcr import cli, files
from debcr import config as cfg
from debcr import model as api
from debcr.config import TrainConfig
from debcr.data import crop, io, normalize
from debcr.errors import OutputError, OutputExistsError
from debcr.model import train
from debcr.modelfile import read_header

IMAGE = DATA / "stardist" / "img2d.tif"  # 512 x 512 uint16 nuclei


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _theirs(target: Path) -> None:
    """What another program writes at ``target``: a file, or a Zarr-like folder."""
    if target.suffix == ".zarr":
        target.mkdir()
        (target / "theirs.txt").write_text("theirs")
    else:
        target.write_bytes(b"theirs")


def _is_theirs(target: Path) -> bool:
    if target.suffix == ".zarr":
        return [p.name for p in target.iterdir()] == ["theirs.txt"]
    return target.read_bytes() == b"theirs"


@pytest.fixture(scope="module")
def small_image() -> np.ndarray:
    return tifffile.imread(IMAGE)[:128, :128]


@pytest.fixture(scope="module")
def restored(denoiser, small_image: np.ndarray) -> np.ndarray:
    return api.predict(denoiser, small_image, progress=False)


@pytest.mark.parametrize("name", ["out.tif", "out.npy", "out.zarr", "out.ome.zarr"])
def test_file_created_during_predict_is_kept(
    tmp_path: Path, denoiser, small_image: np.ndarray, restored: np.ndarray, name: str
) -> None:
    # Before: the finished output silently replaced the file created during the run.
    target = tmp_path / name
    kept = tmp_path / name.replace("out.", "out.debcr-1.", 1)

    def meanwhile(done: int, total: int) -> None:
        if not target.exists():
            _theirs(target)

    with pytest.raises(OutputExistsError) as info:
        api.predict(denoiser, small_image, output=target, progress=meanwhile)
    message = str(info.value)
    assert str(target) in message and f"saved as {kept}" in message, message
    assert "\n" not in message
    assert _is_theirs(target)
    np.testing.assert_array_equal(np.asarray(io.load(kept)), restored)
    assert _hidden(tmp_path) == []


def test_second_kept_result_gets_the_next_free_name(
    tmp_path: Path, denoiser, small_image: np.ndarray
) -> None:
    target = tmp_path / "out.tif"
    (tmp_path / "out.debcr-1.tif").write_bytes(b"earlier")

    def meanwhile(done: int, total: int) -> None:
        if not target.exists():
            _theirs(target)

    with pytest.raises(OutputExistsError, match=r"out\.debcr-2\.tif"):
        api.predict(denoiser, small_image, output=target, progress=meanwhile)
    assert (tmp_path / "out.debcr-1.tif").read_bytes() == b"earlier"
    assert io.load(tmp_path / "out.debcr-2.tif").shape == small_image.shape


def test_overwrite_replaces_what_appeared_meanwhile(tmp_path: Path) -> None:
    """With overwrite the final rename replaces, as before (the files API, a real file)."""
    target = tmp_path / "out.csv"
    with files.atomic_output(target, overwrite=True) as tmp:
        tmp.write_text("ours")
        target.write_text("theirs")
    assert target.read_text() == "ours"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


@pytest.mark.parametrize("name", ["out.tif", "out.zarr"])
def test_overwrite_still_replaces_an_existing_output(
    tmp_path: Path, denoiser, small_image: np.ndarray, name: str
) -> None:
    target = tmp_path / name
    _theirs(target)
    api.predict(denoiser, small_image, output=target, progress=False, overwrite=True)
    assert io.load(target).shape == small_image.shape
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "debcr.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        **kwargs,
    )


@pytest.mark.slow  # one real `debcr predict` run
def test_cli_keeps_file_created_during_run_and_exits_2(tmp_path: Path) -> None:
    """`debcr predict` while another program writes the same output."""
    raw = tmp_path / "raw.tif"  # 512 x 512 in 16 tiles: long enough to create the file meanwhile
    tifffile.imwrite(raw, tifffile.imread(IMAGE).astype(np.float32))
    out = tmp_path / "out"
    out.mkdir()
    target, kept = out / "restored.tif", out / "restored.debcr-1.tif"
    slow = ["--tile", "128", "--backend", "torch", "-q"]
    proc = _cli("predict", str(raw), "-o", str(target), *slow)
    try:
        deadline = time.monotonic() + 300
        while not _hidden(out):  # the temporary output exists: the run has checked the target
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the temporary output never appeared"
            time.sleep(0.005)
        _theirs(target)
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert str(target) in stderr and f"saved as {kept}" in stderr, stderr
    assert _is_theirs(target)
    assert io.load(kept).shape == (512, 512)
    assert _hidden(out) == []


# --- Training: full disk, --resume FILE, SIGTERM ---------------------------------------------

PATCH = 32


def _sh(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (too small for a training run's files), unmounted afterwards."""
    with small_disk(tmp_path / "disk", "2m") as mount:
        yield mount


def _resize(mount: Path, size: str) -> None:
    done = _sh("mount", "-o", f"remount,size={size}", str(mount))
    assert done.returncode == 0, done.stderr


def _pairs(field: int) -> dict[str, np.ndarray]:
    gt = crop(normalize(fmd_gt(field), clip=False), PATCH, 0.0)
    low = crop(normalize(fmd_frame(field, 0), clip=False), PATCH, 0.0)
    keep = gt.reshape(len(gt), -1).std(axis=1) > 0.05  # skip empty background
    return {"low": low[keep][:16], "gt": gt[keep][:16]}


@pytest.fixture(scope="module")
def patches(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Real FMD training and validation patches, as NPZ files."""
    folder = tmp_path_factory.mktemp("patches")
    np.savez(folder / "t_train.npz", **_pairs(1))
    np.savez(folder / "t_val.npz", **_pairs(20))
    return folder / "t_train.npz", folder / "t_val.npz"


def _config(run: Path, **overrides) -> TrainConfig:
    settings = dict(
        weights_path=str(run),
        batch_size=4,
        num_steps=4,
        val_freq=2,
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


def _train_cli(config: TrainConfig, patches: tuple[Path, Path], folder: Path) -> int:
    """``debcr train CONFIG --train … --val …``, run in this process."""
    path = folder / "config.in.yaml"
    cfg.save(config, path)
    return cli.main(["train", str(path), "--train", str(patches[0]), "--val", str(patches[1])])


class FillDisk(Callback):
    """Fills the disk of ``path`` after step ``step`` (as another program writing there would)."""

    def __init__(self, path: Path, step: int) -> None:
        self.path, self.step = path, step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with self.path.open("wb") as fh, contextlib.suppress(OSError):
                while True:
                    fh.write(bytes(2**16))


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "error" in line]


@pytest.mark.slow  # two short training runs
def test_train_without_space_is_one_line_and_leaves_nothing(
    disk: Path, tmp_path: Path, patches: tuple[Path, Path], capsys
) -> None:
    # Before: a traceback (exit 1) and a hidden .tmp-resume.ckpt in a run folder that could be
    # neither resumed nor started again.
    run = disk / "run"
    assert _train_cli(_config(run), patches, tmp_path) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and f"cannot write {run}: no space left on the device" in errors[0]
    assert list(disk.iterdir()) == []
    _resize(disk, "32m")  # once there is space, the same command runs
    assert _train_cli(_config(run), patches, tmp_path) == 0
    assert (run / "best.safetensors").is_file()


@pytest.mark.slow  # three short training runs
def test_disk_full_during_training_restarts_or_resumes(
    disk: Path, tmp_path: Path, patches: tuple[Path, Path], capsys
) -> None:
    _resize(disk, "32m")
    run, filler = disk / "run", disk / "filler"
    config = _config(run, train_data=str(patches[0]), val_data=str(patches[1]))
    # Full before the first checkpoint (step 2): nothing to resume, so nothing is kept.
    with pytest.raises(OutputError, match="start the run again") as info:
        train(*patches, config, callbacks=[FillDisk(filler, 1)])
    assert "no space left on the device" in str(info.value)
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]
    filler.unlink()
    # Started again; full after its first checkpoint: resumed from there.
    with pytest.raises(OutputError, match=r"resume from step 2 with `debcr train --resume"):
        train(*patches, config, callbacks=[FillDisk(filler, 2)])
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]
    filler.unlink()
    assert cli.main(["train", "--resume", str(run)]) == 0
    assert json.loads(read_header(run / "last.safetensors")["metadata"])["step"] == 4


def test_resume_of_a_file_is_one_sentence(tmp_path: Path, capsys) -> None:
    model = tmp_path / "best.safetensors"
    model.write_bytes(b"not a folder")
    assert cli.main(["train", "--resume", str(model)]) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and f"{model} is a file" in errors[0], errors
    assert f"--resume {tmp_path}" in errors[0]


def test_sigterm_stops_training_after_the_step_with_exit_143(
    tmp_path: Path, patches: tuple[Path, Path]
) -> None:
    # Before: exit 130 (Ctrl-C's), where the documentation promises 128 + 15. The signal goes to
    # a `debcr train` process, as a batch scheduler sends it, once training is under way.
    run = tmp_path / "run"
    metrics = run / "metrics.csv"
    config = tmp_path / "config.in.yaml"
    cfg.save(_config(run, num_steps=400, val_freq=100, save_freq=1000), config)
    command = [sys.executable, "-m", "debcr.cli", "train", str(config)]
    command += ["--train", str(patches[0]), "--val", str(patches[1])]
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr, subprocess.Popen(command, stderr=stderr) as proc:
        deadline = time.monotonic() + 240
        while not (metrics.is_file() and metrics.read_text().count("\n") >= 3):
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    err = log.read_text()
    assert code == 143, err[-2000:]
    found = re.findall(r"interrupted at step (\d+); resume with", err)
    assert len(found) == 1, err[-2000:]
    assert torch.load(run / "resume.ckpt", weights_only=True)["global_step"] == int(found[0])


# --- Export: its own input, a full temporary folder ------------------------------------------


@pytest.mark.slow  # the shared BMZ package fixture (made once per session)
def test_export_refuses_to_replace_its_input(bmz_package, tmp_path: Path, capsys) -> None:
    # Before: `debcr export pkg.zip pkg.zip --overwrite` replaced the package it read.
    package = tmp_path / "pkg.zip"
    shutil.copyfile(bmz_package[0], package)
    before = package.read_bytes(), package.stat().st_ino
    os.link(package, tmp_path / "same.zip")
    for output in (package, tmp_path / "same.zip"):
        fields = ["--name", "Nuclei denoiser", "--author", "Ada Lovelace"]
        assert cli.main(["export", str(package), str(output), "--overwrite", *fields]) == 2
        errors = _error_lines(capsys.readouterr().err)
        assert len(errors) == 1 and "refusing to overwrite the input file" in errors[0], errors
    assert (package.read_bytes(), package.stat().st_ino) == before


@pytest.mark.slow  # imports bioimageio.core (~5 s)
def test_export_with_a_full_temporary_folder_is_one_sentence(
    disk: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    # Before: a RuntimeError traceback from deep inside torch.save (exit 1).
    (disk / "filler").write_bytes(bytes(2**20))
    monkeypatch.setattr(tempfile, "tempdir", str(disk))  # what TMPDIR=disk sets
    output = tmp_path / "model.zip"
    assert cli.main(["export", "2D_denoising", str(output)]) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1, errors
    assert f"cannot write {disk}: no space left on the device" in errors[0]
    assert "set TMPDIR to a writable folder with room" in errors[0]
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]
    assert not output.exists() and not _hidden(tmp_path)
