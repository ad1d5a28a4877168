"""Packaging facts: light imports, README commands, CI script."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import ROOT


def _fresh_python(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.slow
def test_importing_data_config_and_metrics_does_not_import_torch() -> None:
    # In a fresh interpreter: the test process itself has long imported torch.
    words = _fresh_python(
        "import sys, debcr, debcr.data, debcr.data.io, debcr.data.tiling, debcr.config\n"
        "import debcr.metrics, debcr.evaluate, debcr.files, debcr.defaults\n"
        "cfg = debcr.config.TrainConfig()\n"
        "print(debcr.__version__, type(cfg).__name__,"
        " *(m in sys.modules for m in ('torch', 'lightning', 'napari')))"
    )
    version, config_class, *loaded = words
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert config_class == "TrainConfig"
    assert loaded == ["False", "False", "False"]


@pytest.mark.slow
def test_restoring_does_not_import_matplotlib() -> None:
    # matplotlib's import is a third of a second of every command's start; only figures need it.
    words = _fresh_python(
        "import sys, numpy as np, debcr.cli, debcr.data, debcr.model, debcr.inference\n"
        "model = debcr.model.init(seed=0)\n"
        "out = debcr.model.predict(model, np.random.default_rng(0).random((64, 64)),"
        " backend='torch', progress=False)\n"
        "print(out.shape, 'matplotlib' in sys.modules)"
    )
    assert words == ["(64,", "64)", "False"]


@pytest.mark.slow
def test_model_module_is_imported_on_first_access() -> None:
    """``debcr.model`` loads on first access, still without torch (restoring with OpenVINO does
    not need it); torch comes with the network class."""
    words = _fresh_python(
        "import sys, debcr\n"
        "before = 'torch' in sys.modules\n"
        "init = debcr.model.init\n"
        "facade = 'torch' in sys.modules\n"
        "network = debcr.model.MRBCR\n"
        "print(before, facade, init.__module__, callable(init), 'torch' in sys.modules)"
    )
    assert words == ["False", "False", "debcr.model", "True", "True"]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    test_command = next(b for b in blocks if "pytest" in b)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command.strip() in ci
    assert "torch==2.13.0" in test_command  # never an unpinned torch on this machine kind
    main_job = next(b for b in blocks if "debcr demo" in b)
    assert "torch==2.13.0" in main_job
