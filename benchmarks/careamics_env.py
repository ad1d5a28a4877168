"""Build (idempotently) a separate virtual environment with CAREamics, for the benchmarks.

Command (from the repository root)::

    .venv/bin/python benchmarks/careamics_env.py [--path DIR]   # build if needed, print python

The venv (default ``~/.cache/debcr/bench/careamics-venv``) gets ``careamics`` from PyPI with torch
held at the local CPU wheel (``pip -c constraints.txt`` with ``torch==2.13.0``). Benchmarks call
:func:`ensure_env` for the interpreter and run ``benchmarks/careamics_runner.py`` with it;
:func:`careamics_version` tells which CAREamics release they ran. Standard library only.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import venv
from pathlib import Path

DEFAULT_PATH = Path.home() / ".cache" / "debcr" / "bench" / "careamics-venv"
TORCH_PIN = "torch==2.13.0"
log = logging.getLogger("careamics_env")


def _python(path: Path) -> Path:
    return path / "bin" / "python"


def _imports(python: Path) -> bool:
    proc = subprocess.run([str(python), "-c", "import careamics"], capture_output=True)
    return proc.returncode == 0


def careamics_version(python: Path | str) -> str:
    """The CAREamics version installed for ``python`` (its distribution metadata)."""
    code = "from importlib.metadata import version; print(version('careamics'))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def ensure_env(path: Path | None = None) -> Path:
    """Create the CAREamics venv at ``path`` if needed; return its python executable."""
    path = Path(path or DEFAULT_PATH).expanduser()
    python = _python(path)
    if python.exists() and _imports(python):
        log.info("CAREamics venv ready: %s", python)
        return python
    log.info("creating venv %s", path)
    venv.EnvBuilder(with_pip=True, clear=python.exists()).create(path)
    constraints = path / "constraints.txt"
    constraints.write_text(TORCH_PIN + "\n")
    cmd = [str(python), "-m", "pip", "install", "--progress-bar", "off", "-c", str(constraints)]
    log.info("installing careamics (%s); this takes a few minutes", TORCH_PIN)
    proc = subprocess.run([*cmd, "careamics"], capture_output=True, text=True)
    (path / "pip-install.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not _imports(python):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError("installing careamics failed:\n" + "\n".join(tail))
    log.info("installed careamics %s into %s", careamics_version(python), path)
    return python


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=None, help=f"venv (default {DEFAULT_PATH})")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[careamics_env] %(message)s")
    python = ensure_env(args.path)
    log.info("careamics %s", careamics_version(python))
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
