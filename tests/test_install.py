"""Install facts: what the base requirements carry where, the Python they need, and restoring
without OpenVINO (a subprocess in which it cannot be imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from conftest import ROOT, fmd_frame
from debcr import backends

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
README = (ROOT / "README.md").read_text(encoding="utf-8")

#: Platforms (sys.platform, platform.machine(), python_version) and whether OpenVINO publishes
#: packages there (pip install --dry-run --platform ... openvino, checked for 2026.4.1).
PLATFORMS = [
    ("linux", "x86_64", "3.11", True),
    ("linux", "aarch64", "3.14", True),
    ("win32", "AMD64", "3.12", True),
    ("darwin", "arm64", "3.13", True),
    ("darwin", "x86_64", "3.11", True),  # OpenVINO 2025.4.1, the last for Intel Macs
    ("win32", "ARM64", "3.12", False),
    ("linux", "riscv64", "3.11", False),
    ("linux", "x86_64", "3.15", False),
]
_SYSTEMS = {"linux": "Linux", "win32": "Windows", "darwin": "Darwin"}


def _base_requirements(env: dict[str, str]) -> set[str]:
    """The names of the base requirements that ``pip install debcr-torch`` installs in ``env``."""
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    return {r.name for r in reqs if r.marker is None or r.marker.evaluate(env)}


@pytest.mark.parametrize(("system", "machine", "python", "has_wheels"), PLATFORMS)
def test_base_install_carries_openvino_where_it_has_packages(
    system: str, machine: str, python: str, has_wheels: bool, monkeypatch
) -> None:
    env = default_environment() | {
        "sys_platform": system,
        "platform_system": _SYSTEMS[system],
        "platform_machine": machine,
        "python_version": python,
        "python_full_version": f"{python}.0",
    }
    required = _base_requirements(env)
    assert "torch" in required
    assert ("openvino" in required) is has_wheels, (system, machine, python)
    # The hint and the fallback's log line judge the platform the same way.
    monkeypatch.setattr(backends.sys, "platform", system)
    monkeypatch.setattr(backends.platform, "machine", lambda: machine)
    monkeypatch.setattr(backends.sys, "version_info", tuple(map(int, python.split("."))))
    assert backends.openvino_wheels() is has_wheels


def test_this_install_has_the_fast_path_by_default() -> None:
    """Here (Linux x86_64) the plain install brings OpenVINO and ``auto`` restores with it."""
    assert "openvino" in _base_requirements(default_environment())
    metadata.version("openvino")  # installed by the README's commands
    line, hint = backends.describe_path("cpu")
    assert line.startswith("OpenVINO · ") and hint is None
    # `pip install "debcr-torch[fast]"` (older instructions) still resolves, adding nothing.
    assert PYPROJECT["project"]["optional-dependencies"]["fast"] == []


def test_python_floor_is_the_one_the_requirements_need() -> None:
    """zarr 3, a base requirement, publishes packages for Python 3.11 and newer only."""
    ours = SpecifierSet(PYPROJECT["project"]["requires-python"])
    zarr_needs = SpecifierSet(metadata.metadata("zarr")["Requires-Python"])
    assert "3.10" not in zarr_needs and "3.10" not in ours
    assert "3.11" in zarr_needs and "3.11" in ours
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py311"
    assert "Python ≥ 3.11" in README and "Python ≥ 3.10" not in README


# Makes OpenVINO look absent, as an install without it would: `import openvino` (and of its
# submodules) raises ModuleNotFoundError and `importlib.util.find_spec("openvino")` is None.
_HIDE_OPENVINO = """
import sys

sys.modules["openvino"] = None
"""

# Two models restored with the defaults (backend "auto"), then the path as debcr info says it.
_RESTORE = """
import json, logging, sys
import numpy as np
import debcr
from debcr.backends import system_info

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
image = np.load(sys.argv[1])
for name in ("2D_denoising", "confocal_SR"):
    out = debcr.model.predict(debcr.model.init(name), image, progress=False)
    np.save(sys.argv[2] + name + ".npy", out)
info = system_info()
print(json.dumps({key: info.get(key) for key in ("inference path", "hint", "openvino")}))
"""


@pytest.mark.slow
def test_restores_with_pytorch_and_says_so_once_without_openvino(tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(_HIDE_OPENVINO, encoding="utf-8")
    image = fmd_frame(19)[:96, :128]
    np.save(tmp_path / "image.npy", image)
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(hide), str(ROOT / "src")])}
    result = subprocess.run(
        [sys.executable, "-c", _RESTORE, str(tmp_path / "image.npy"), str(tmp_path / "out_")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    said = [line for line in result.stderr.splitlines() if "OpenVINO" in line]
    assert said == [
        "debcr.backends: OpenVINO is not installed; restoring with PyTorch "
        "(pip install openvino for faster CPU restoration)"
    ], result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["inference path"].startswith("PyTorch · ")
    assert "pip install openvino" in info["hint"]
    assert info["openvino"] != "not installed"  # installed, only hidden: the import is refused

    import debcr

    for name in ("2D_denoising", "confocal_SR"):
        restored = np.load(tmp_path / f"out_{name}.npy")
        precision = info["inference path"].split(" · ")[1]
        expected = debcr.model.predict(
            debcr.model.init(name), image, backend="torch", precision=precision, progress=False
        )
        np.testing.assert_allclose(restored, expected, rtol=0, atol=1e-3 * float(np.ptp(image)))
