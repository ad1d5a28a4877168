"""The README as a user reads it: install lines name our distribution, every code block runs.

The two set-up commands are CI itself (``.ci/run``, checked in test_package) and the demo (also
run here, from the command-line block). The Python blocks run in a folder laid out as they
expect (``cells.tif``, ``raw/<field>.tif`` …, made from real FMD frames); the command-line block
runs line by line in a second such folder, with step counts scaled down where named below.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from conftest import FMD, REFERENCE, ROOT, fmd_frame, fmd_gt
from debcr._version import DISTRIBUTION

README = (ROOT / "README.md").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
#: README commands that would run for hours, and the short form the test runs instead.
SCALED_DOWN = {"num_steps=4000": "num_steps=4"}
#: A short training run: the README trains with whatever config.yaml the user wrote.
CONFIG_YAML = (
    "num_steps: 2\nbatch_size: 2\nval_freq: 2\nsave_freq: 1\npatience: 10\npatch_size: 128\n"
    "accelerator: cpu\nprogress: false\nseed: 0\nweights_path: runs/cells\n"
)


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)\n```", README, flags=re.S)


def _documents() -> dict[str, str]:
    pages = {"README.md": README}
    for path in (ROOT / "docs").rglob("*.md"):
        if "generated" not in path.parts:
            pages[str(path.relative_to(ROOT))] = path.read_text(encoding="utf-8")
    return pages


def test_distribution_name_is_ours_everywhere() -> None:
    assert PYPROJECT["project"]["name"] == DISTRIBUTION == "debcr-torch"
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    manifest = (ROOT / "src" / "debcr" / "napari" / "napari.yaml").read_text(encoding="utf-8")
    assert re.search(rf"^name: {DISTRIBUTION}$", manifest, flags=re.M)  # npe2 requires it
    installs = 0
    for page, text in _documents().items():
        for found in re.findall(r"pip install ([^`\n]*)", text):
            installs += 1
            command = re.split(r"&&|;|\)|\(", found)[0]
            for word in command.split():
                word = word.strip("\"'")
                if not word or word.startswith("-") or "==" in word:
                    continue
                name, _, extra = word.partition("[")
                # Installing by the name "debcr" would fetch the original TensorFlow package.
                assert name != "debcr", f"{page}: 'pip install {found}' installs the original"
                assert name in (".", DISTRIBUTION) or not name.startswith("debcr"), found
                for wanted in extra.rstrip("]").split(","):
                    assert not wanted or wanted in extras, f"{page}: unknown extra in {found!r}"
    assert installs >= 5
    assert f'pip install "{DISTRIBUTION}[napari]"' in README
    assert 'pip install -e ".[napari]"' in README


def _fmd_crop(field: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A noisy frame and its ground truth, cropped (different fields give different images)."""
    frame, gt = fmd_frame(field, 0), fmd_gt(field)
    return frame[128 : 128 + size, 128 : 128 + size], gt[128 : 128 + size, 128 : 128 + size]


def _flat_pairs(folder: Path, fields: range) -> None:
    """``raw/<field>.tif`` and ``gt/<field>.tif`` (the flat layout of pairs_from_folders)."""
    from debcr.data import write

    for field in fields:
        noisy, gt = _fmd_crop(field)
        write(folder / "raw" / f"{field}.tif", noisy)
        write(folder / "gt" / f"{field}.tif", gt)


@pytest.fixture
def python_workspace(tmp_path: Path) -> Path:
    from debcr.data import write

    write(tmp_path / "cells.tif", fmd_frame(19, 0)[:256, :256])
    write(tmp_path / "huge.tif", fmd_frame(19, 1)[:320, :288])
    write(tmp_path / "stack.zarr", np.stack([fmd_frame(19, i)[:128, :128] for i in range(2)]))
    _flat_pairs(tmp_path, range(1, 5))
    (tmp_path / "config.yaml").write_text(CONFIG_YAML, encoding="utf-8")
    return tmp_path


@pytest.mark.slow
def test_python_blocks_run(python_workspace: Path, monkeypatch) -> None:
    blocks = _blocks("python")
    assert len(blocks) == 2
    monkeypatch.chdir(python_workspace)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    restored, image = namespace["restored"], namespace["image"]
    assert restored.shape == image.shape == (256, 256) and restored.dtype == np.float32
    assert (python_workspace / "cells_restored.tif").is_file()
    assert (python_workspace / "huge_restored.zarr").is_dir()
    assert namespace["lazy"].compute().shape == (2, 128, 128)
    assert namespace["patches"].shape[1:] == (128, 128)
    assert (python_workspace / "data" / "cells_train.npz").is_file()
    assert (python_workspace / "runs" / "cells" / "best.safetensors").is_file()
    assert type(namespace["best"]).__name__ == "MRBCR"
    assert namespace["denoiser"].metadata["mode"] == "noise2void"
    assert (python_workspace / "runs" / "noisy" / "best.safetensors").is_file()


@pytest.fixture
def cli_workspace(tmp_path: Path) -> Path:
    _flat_pairs(tmp_path, range(1, 21))
    (tmp_path / "config.yaml").write_text(CONFIG_YAML, encoding="utf-8")
    (tmp_path / "old_run").mkdir()
    (tmp_path / "old_run" / "weights").symlink_to(REFERENCE / "weights" / "2D_denoising")
    return tmp_path


@pytest.mark.slow
def test_command_line_block_runs(cli_workspace: Path) -> None:
    (block,) = _blocks("bash")[2:]
    for original, short in SCALED_DOWN.items():
        assert original in block, f"README no longer says {original}; update SCALED_DOWN"
        block = block.replace(original, short)
    debcr = Path(sys.executable).with_name("debcr")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for line in block.splitlines():
        command = line.split("#")[0].strip()
        args = shlex.split(command)
        assert args[0] == "debcr"
        # The shell expands raw/*.tif for the user; the test does it the same way.
        expanded = (
            [
                str(p.relative_to(cli_workspace))
                for a in args[1:]
                for p in (sorted(cli_workspace.glob(a)) if "*" in a else [cli_workspace / a])
            ]
            if "*" in command
            else args[1:]
        )
        result = subprocess.run(
            [str(debcr), *expanded],
            cwd=cli_workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"{command}\n{result.stderr[-2000:]}"
    assert len(list((cli_workspace / "restored").glob("*_restored.tif"))) == 20
    assert (cli_workspace / "my_model.safetensors").is_file()
    assert (cli_workspace / "runs" / "cells" / "best.safetensors").is_file()
    assert (cli_workspace / "runs" / "noisy" / "best.safetensors").is_file()
    assert (cli_workspace / "report" / "metrics.csv").is_file()
    assert (cli_workspace / "demo_output" / "comparison.png").is_file()
    assert FMD.is_dir()
