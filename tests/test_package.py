"""Packaging facts: light imports, README commands, CI script."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT


def test_importing_data_and_config_does_not_import_torch() -> None:
    code = (
        "import sys, debcr, debcr.data, debcr.data.io, debcr.data.tiling\n"
        "print(debcr.__version__, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    version, imported = out.stdout.split()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert imported == "False"


def test_model_module_is_reachable_lazily() -> None:
    import debcr

    assert debcr.model.init is not None
    assert "torch" in sys.modules


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    test_command = next(b for b in blocks if "pytest" in b)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command.strip() in ci
    assert "torch==2.13.0" in test_command  # never an unpinned torch on this machine kind
    main_job = next(b for b in blocks if "debcr demo" in b)
    assert "torch==2.13.0" in main_job
