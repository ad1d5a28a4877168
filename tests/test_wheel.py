"""First run from a wheel: the built-in weights, the sample and the napari manifest are inside it.

The wheel is built from this checkout and installed (not editable) into a fresh virtual
environment. Its dependencies are borrowed from the test environment through a path entry, so
no download is needed, but debcr itself can only come from the wheel: the editable install's
hook lives in a ``.pth`` file of the test environment, which a path entry does not run.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT
from debcr._version import DISTRIBUTION, __version__


def _run(args: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_demo_and_builtin_model_from_a_wheel(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, ROOT])
    (wheel,) = dist.glob("*.whl")
    assert wheel.name.startswith(f"{DISTRIBUTION.replace('-', '_')}-{__version__}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    for task in ("2D_denoising", "3D_denoising", "bright_SR", "confocal_SR"):
        assert f"debcr/weights/{task}.safetensors" in names
    assert {"debcr/samples/nuclei_noisy.tif", "debcr/napari/napari.yaml"} <= names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    venv_site = Path(
        _run([python, "-c", "import site; print(site.getsitepackages()[0])"]).stdout.strip()
    )
    (venv_site / "borrowed_dependencies.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n", encoding="utf-8"
    )
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    code = (
        "import debcr, debcr.model\n"
        "m = debcr.model.init('2D_denoising')\n"
        "print(debcr.__file__, m.metadata['task'])"
    )
    where, task = _run([python, "-c", code], env=env, cwd=tmp_path).stdout.split()
    assert Path(where).is_relative_to(venv) and task == "2D_denoising"
    _run([venv / "bin" / "debcr", "demo", "-o", "out"], env=env, cwd=tmp_path)
    assert (tmp_path / "out" / "restored.tif").is_file()
    assert (tmp_path / "out" / "comparison.png").is_file()
    info = _run([venv / "bin" / "debcr", "info"], env=env, cwd=tmp_path).stdout
    assert f"distribution {DISTRIBUTION})" in info
