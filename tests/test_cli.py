"""The ``debcr`` command: help, version, info, predict, demo; errors as one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import debcr
from conftest import ROOT, fmd_frame
from debcr.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "debcr.cli", *args], capture_output=True, text=True, cwd=ROOT
    )


@pytest.mark.slow
def test_help_and_version_do_not_import_torch() -> None:
    code = (
        "import sys\nfrom debcr.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip().endswith("False"), result.stdout
    assert "predict" in result.stdout and "convert-tf" in result.stdout
    version = _run("--version")
    assert version.stdout.strip() == f"debcr {debcr.__version__}"


def test_info_reports_versions_and_device(capsys) -> None:
    import torch

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"torch: {torch.__version__}" in out
    assert "debcr: " + debcr.__version__ in out
    assert "device: " in out and ("CPU" in out or "CUDA" in out or "MPS" in out)
    assert "threads: " in out


def test_predict_files_and_folders(tmp_path: Path, capsys) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(2):
        tifffile.imwrite(raw / f"img{i}.tif", fmd_frame(19, i)[:96, :80])
    before = {p.name: p.read_bytes() for p in raw.iterdir()}
    out = tmp_path / "restored"
    assert main(["predict", str(raw), "-o", str(out), "-q"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["img0_restored.tif", "img1_restored.tif"]
    restored = tifffile.imread(out / "img0_restored.tif")
    assert restored.shape == (96, 80) and restored.dtype == np.float32
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == before  # inputs untouched
    single = tmp_path / "one.npy"
    assert main(["predict", str(raw / "img1.tif"), "-o", str(single), "-q"]) == 0
    assert np.load(single).shape == (96, 80)
    assert "img1.tif ->" in capsys.readouterr().out


@pytest.mark.slow
def test_user_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    missing = _run("predict", str(tmp_path / "nope.tif"), "-o", str(tmp_path / "o.tif"))
    assert missing.returncode == 2
    assert "error: input" in missing.stderr and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((16, 16), np.uint8))
    bad_model = _run(
        "predict", str(tmp_path / "a.tif"), "-o", str(tmp_path / "b.tif"), "--model", "x"
    )
    assert bad_model.returncode == 2 and "no model named 'x'" in bad_model.stderr
    assert "Traceback" not in bad_model.stderr


@pytest.mark.slow
def test_demo_writes_tiff_and_figure(tmp_path: Path, capsys) -> None:
    assert main(["demo", "-o", str(tmp_path / "demo"), "-q"]) == 0
    out = capsys.readouterr().out
    restored = tifffile.imread(tmp_path / "demo" / "restored.tif")
    assert restored.shape == (512, 512)
    png = tmp_path / "demo" / "comparison.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    psnr = {
        k: float(v) for k, v in (line.split(": ") for line in out.splitlines() if "psnr" in line)
    }
    assert psnr["psnr_restored_db"] > psnr["psnr_noisy_db"] + 5


@pytest.mark.slow
def test_prepare_and_evaluate_commands(tmp_path: Path, capsys) -> None:
    from conftest import FMD

    out = tmp_path / "sets"
    code = main(
        [
            "prepare",
            str(FMD / "raw"),
            str(FMD / "gt"),
            "--name",
            "fmd",
            "-o",
            str(out),
            "--patch",
            "128",
            "--train-groups",
            "1-2",
            "--val-groups",
            "20",
            "--test-groups",
            "19",
        ]
    )
    assert code == 0
    with np.load(out / "fmd_val.npz") as val:
        assert val["low"].shape[1:] == (128, 128) and set(val["groups"]) == {"20"}
    with np.load(out / "fmd_train.npz") as train:
        assert set(train["groups"]) == {"1", "2"}
    assert "train:" in capsys.readouterr().out

    from conftest import fmd_gt

    tifffile.imwrite(tmp_path / "gt.tif", fmd_gt(19))
    tifffile.imwrite(tmp_path / "raw.tif", fmd_frame(19, 0))
    assert main(["predict", str(tmp_path / "raw.tif"), "-o", str(tmp_path / "pred.tif"), "-q"]) == 0
    report = tmp_path / "report"
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "pred.tif"),
                str(tmp_path / "gt.tif"),
                "--input",
                str(tmp_path / "raw.tif"),
                "-o",
                str(report),
            ]
        )
        == 0
    )
    summary = (report / "summary.md").read_text()
    assert "affine" in summary and "minmax" in summary and "raw" in summary
    assert (report / "frc.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("option", ["--tile", "--batch"])
def test_zero_tile_or_batch_is_an_error_not_the_default(option, tmp_path: Path, capsys) -> None:
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((16, 16), np.uint8))
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(tmp_path / "a.tif"), "-o", str(tmp_path / "b.tif"), option, "0"])
    assert stop.value.code == 2
    assert f"argument {option}: must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "b.tif").exists()


def test_zero_tile_size_is_refused_by_predict(denoiser) -> None:
    from debcr.errors import DataError
    from debcr.model import predict

    with pytest.raises(DataError, match="tile_size must be at least 4 pixels, got 0"):
        predict(denoiser, np.zeros((16, 16), np.float32), tile_size=0, progress=False)


def test_train_takes_one_config_and_key_value_overrides(tmp_path: Path, capsys) -> None:
    from debcr.config import TrainConfig, save

    config = tmp_path / "config.yaml"
    save(TrainConfig(weights_path=str(tmp_path / "run")), config)
    assert main(["train", str(config), str(config), "num_steps=2"]) == 2
    assert "give one CONFIG.yaml, got 2" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "run"), str(config)]) == 2
    err = capsys.readouterr().err
    assert f"leave out {config}" in err and "key=value overrides" in err
    assert main(["train", "num_steps=2"]) == 2
    assert "give a CONFIG.yaml" in capsys.readouterr().err
    # An override before the config is still an override, not a file name.
    assert main(["train", "num_steps=0", str(config)]) == 2
    assert "num_steps" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_wrong_device_is_said_once_before_any_input(tmp_path: Path, capsys) -> None:
    """With a built-in model (restored from its header) the device is still checked up front:
    one message, not one failure per input."""
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", np.zeros((32, 32), np.float32))
    argv = [
        "predict",
        str(tmp_path / "a.npy"),
        str(tmp_path / "b.npy"),
        "-o",
        str(tmp_path / "out"),
    ]
    assert main([*argv, "--device", "gpu7", "--keep-going", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("unknown device 'gpu7'") == 1 and "a.npy" not in err, err
    assert not list(tmp_path.glob("out/*"))
