"""The documentation site builds in strict mode, with every tutorial executed during the build."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("tutorial_*.py"))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    # mkdocs-gallery skips scripts it ran before (by checksum); the generated folder is a build
    # artefact (git-ignored), so removing it makes every tutorial run in this build.
    shutil.rmtree(ROOT / "docs" / "generated", ignore_errors=True)
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return out


@pytest.mark.slow
def test_every_tutorial_ran_and_shows_its_output(site: Path) -> None:
    assert len(TUTORIALS) >= 5
    for script in TUTORIALS:
        page = site / "generated" / "tutorials" / script.stem / "index.html"
        html = page.read_text(encoding="utf-8")
        assert "<img" in html, f"{script.name}: no figure on {page}"
        assert "Out:" in html or "mkd-result-output" in html or "pre" in html, script.name


@pytest.mark.slow
def test_reference_pages_are_generated(site: Path) -> None:
    from debcr.cli import build_parser

    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in commands:
        assert f"usage: debcr {name}" in cli, name
    api = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("debcr.model.predict", "debcr.model.init", "debcr.data.load", "debcr.metrics"):
        assert name in api, name
