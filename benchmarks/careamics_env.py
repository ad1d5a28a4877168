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
TORCHVISION_PIN = "torchvision==0.28.0"  # the build for torch 2.13
log = logging.getLogger("careamics_env")
_TV_GUARD = """

def _fake_if_ops(name):  # added by debcr's benchmarks/careamics_env.py
    return torch.library.register_fake(name) if torchvision.extension._has_ops() else (lambda f: f)
"""


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


def _pip(python: Path, log_file: Path, *args: str) -> None:
    cmd = [str(python), "-m", "pip", "install", "--progress-bar", "off", *args]
    log.info("$ %s", " ".join(cmd))
    with log_file.open("a") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log_file.read_text().strip().splitlines()[-5:]
        raise RuntimeError(f"pip failed (see {log_file}):\n" + "\n".join(tail))


def _patch_torchvision(python: Path) -> None:
    """Let torchvision import without its C++ ops (PyPI's build needs CUDA torch's libraries).

    torchvision 0.28 registers fake kernels for ``torchvision::nms``/``qnms`` unconditionally,
    which raises when ``_C.so`` failed to load; guard those two like its other registrations.
    """
    if subprocess.run([str(python), "-c", "import torchvision"], capture_output=True).returncode:
        code = "import importlib.util as u; print(u.find_spec('torchvision').origin)"
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
        path = Path(out.stdout.strip()).with_name("_meta_registrations.py")
        log.info("torchvision's C++ ops do not load with CPU torch; patching %s", path)
        text = path.read_text().replace("@torch.library.register_fake(", "@_fake_if_ops(")
        anchor = "import torchvision.extension  # noqa: F401\n"
        if anchor not in text:
            raise RuntimeError(f"torchvision does not import and {path} is not as expected")
        path.write_text(text.replace(anchor, anchor + _TV_GUARD, 1))


def ensure_env(path: Path | None = None) -> Path:
    """Create the CAREamics venv at ``path`` if needed; return its python executable.

    careamics (0.3.5) pins ``torchvision<=0.26.0``, i.e. torch <= 2.11, which contradicts
    ``torch==2.13.0``: pip backtracks for ages. So careamics is installed ``--no-deps`` and its
    declared requirements follow without that torchvision cap, with ``torchvision==0.28.0`` (the
    build for torch 2.13; careamics uses torchvision only in LVAE models and the bioimage.io
    export, not in N2V/N2N).
    """
    path = Path(path or DEFAULT_PATH).expanduser()
    python = _python(path)
    if python.exists() and _imports(python):
        log.info("CAREamics venv ready: %s", python)
        return python
    log.info("creating venv %s", path)
    venv.EnvBuilder(with_pip=True, clear=python.exists()).create(path)
    constraints = path / "constraints.txt"
    constraints.write_text(f"{TORCH_PIN}\n{TORCHVISION_PIN}\n")
    log_file = path / "pip-install.log"
    log.info("installing careamics (%s); a few minutes, progress in %s", TORCH_PIN, log_file)
    _pip(python, log_file, "--no-deps", "careamics")
    code = (
        "from importlib.metadata import requires; print('\\n'.join(r for r in "
        "requires('careamics') if 'extra ==' not in r and not r.startswith('torchvision')))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    _pip(python, log_file, "-c", str(constraints), "torchvision", *out.stdout.splitlines())
    _patch_torchvision(python)
    if not _imports(python):
        raise RuntimeError(f"careamics installed but does not import (see {log_file})")
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
