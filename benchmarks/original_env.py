"""Build (idempotently) a separate virtual environment with the ORIGINAL TensorFlow debcr 0.1.0.

Command (from the repository root)::

    .venv/bin/python benchmarks/original_env.py            # build if needed, verify, print a table
    .venv/bin/python benchmarks/original_env.py --rebuild  # start from scratch
    .venv/bin/python benchmarks/original_env.py --strategy b --env-dir benchmarks/_work/orig-b

The environment lives in ``benchmarks/_work/debcr-original`` (git-ignored). The original pins
Python 3.9 and ``tensorflow-cpu==2.11``; strategies, tried in order:

a. a working ``python3.9`` (on PATH or under pyenv) + ``pip install 'debcr[tf-cpu]==0.1.0'``
   (exactly the original's pins: TF 2.11, numpy 1.23.5);
b. Python 3.11 + ``debcr==0.1.0 --no-deps`` + a TF 2.x CPU build that exists for 3.11 and still
   ships Keras 2 (``tensorflow-cpu`` 2.15.1 … 2.12.1), plus the original's import-time dependencies.

When the build succeeds, a JSON marker ``benchmarks/_work/debcr-original/debcr_original.json``
records the python path, the strategy, the TensorFlow version and the result of the parity check:
the original's ``debcr.model.init(weights_path=<published 2D_denoising dir>, input_size=128,
ckpt_name='ckpt-best')`` + ``debcr.model.predict`` on the fixture's ``x0[..., 0]``, compared with
the fixture's ``api_predict`` (max abs. difference). A failed build is recorded too (reasons in
``benchmarks/_work/debcr-original-failure.txt``, full pip output in ``debcr-original-build.log``)
and not retried until ``--rebuild``.

Other benchmark scripts call :func:`build` (or :func:`original_python`) to obtain the interpreter;
it returns ``None`` with a printed reason when the original cannot be made available. A file lock
keeps two processes from building at once (the second is told a build is in progress).
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
ENV_DIR = WORK / "debcr-original"
MARKER = ENV_DIR / "debcr_original.json"
LOCK = WORK / "debcr-original.lock"
LOG = WORK / "debcr-original-build.log"
FAILURE = WORK / "debcr-original-failure.txt"
STRATEGIES = ("a", "b")


def use_env_dir(path: Path) -> None:
    """Point this module at another environment directory (e.g. to try strategy (b) aside)."""
    global ENV_DIR, MARKER, LOCK, LOG, FAILURE
    ENV_DIR = Path(path).resolve()
    MARKER = ENV_DIR / "debcr_original.json"
    LOCK = ENV_DIR.parent / f"{ENV_DIR.name}.lock"
    LOG = ENV_DIR.parent / f"{ENV_DIR.name}-build.log"
    FAILURE = ENV_DIR.parent / f"{ENV_DIR.name}-failure.txt"


SHARED = HERE.parent.parent / "shared"
WEIGHTS_DIR = SHARED / "debcr_reference" / "weights" / "2D_denoising"
FIXTURE = SHARED / "debcr_reference" / "mrbcr_2D_denoising_reference.npz"

# TF builds with cp311 wheels that still bundle Keras 2 (TF >= 2.16 switched to Keras 3, where the
# original's LocallyConnected2D import and tf.keras model code would break).
TF_CANDIDATES_PY311 = ("2.15.1", "2.15.0", "2.14.1", "2.13.1", "2.12.1")
# What debcr 0.1.0 imports (tensorflow aside): numpy (pinned ==1.23.5 by the original), PyYAML,
# matplotlib, natsort (declared), scikit-image (skimage.io / skimage.metrics), tifffile.
ORIGINAL_DEPS_PY311 = (
    "numpy>=1.23.5,<2",
    "PyYAML",
    "matplotlib<3.10",
    "natsort",
    "scikit-image<0.23",
    "tifffile<2024.9",
)

VERIFY_SNIPPET = r"""
import json, sys, io, contextlib
import numpy as np
weights, fixture = sys.argv[1], sys.argv[2]
def keras_version():
    from importlib.metadata import version
    for dist in ("keras", "tf-keras"):
        try:
            return version(dist)
        except Exception:
            pass
    return "?"
with contextlib.redirect_stdout(io.StringIO()) as log:
    import tensorflow as tf
    import debcr
    model = debcr.model.init(weights_path=weights, input_size=128, ckpt_name="ckpt-best")
    ref = np.load(fixture)
    out = debcr.model.predict(model, ref["x0"][..., 0], batch_size=32)
diff = float(np.max(np.abs(out.astype(np.float64) - ref["api_predict"].astype(np.float64))))
print(json.dumps({
    "tf_version": tf.__version__,
    "keras_version": getattr(tf.keras, "__version__", None) or keras_version(),
    "numpy_version": np.__version__,
    "debcr_version": debcr.__version__,
    "python_version": sys.version.split()[0],
    "api_predict_max_abs_diff": diff,
    "original_log": [ln for ln in log.getvalue().splitlines() if ln.strip() and "\b" not in ln
                     and "/step" not in ln],
}))
"""


def _log(msg: str) -> None:
    line = f"[original_env {time.strftime('%H:%M:%S')}] {msg}"
    print(line, file=sys.stderr, flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    with LOG.open("a") as fh:
        fh.write(line + "\n")


def _run(cmd: list[str], timeout: float = 3600) -> subprocess.CompletedProcess:
    _log("$ " + " ".join("<python code>" if "\n" in c else c for c in cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    with LOG.open("a") as fh:
        fh.write(proc.stdout[-20000:] + proc.stderr[-20000:] + f"\n[rc={proc.returncode}]\n")
    return proc


def _python_works(exe: str, version: str) -> bool:
    try:
        proc = subprocess.run(
            [exe, "-c", "import sys, venv, ssl; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and proc.stdout.strip() == version


def find_python(version: str) -> str | None:
    """Return a working interpreter for ``version`` ("3.9"), looking on PATH and under pyenv."""
    candidates = []
    which = shutil.which(f"python{version}")
    if which:
        candidates.append(which)  # may be a pyenv shim that refuses to run
    roots = [os.environ.get("PYENV_ROOT", ""), str(Path.home() / ".pyenv")]
    for root in filter(None, roots):
        candidates += sorted(
            glob.glob(f"{root}/versions/{version}.*/bin/python{version}"), reverse=True
        )
    candidates += [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    for exe in candidates:
        if Path(exe).exists() and _python_works(exe, version):
            return exe
    return None


def _env_python() -> Path:
    return ENV_DIR / "bin" / "python"


def _make_venv(base_python: str) -> bool:
    if ENV_DIR.exists():
        shutil.rmtree(ENV_DIR)
    proc = _run([base_python, "-m", "venv", str(ENV_DIR)])
    if proc.returncode != 0:
        return False
    proc = _run([str(_env_python()), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    return proc.returncode == 0


def _pip(*args: str) -> subprocess.CompletedProcess:
    return _run([str(_env_python()), "-m", "pip", "install", "--progress-bar", "off", *args])


def _pip_error(proc: subprocess.CompletedProcess) -> str:
    lines = [
        ln for ln in (proc.stderr + proc.stdout).splitlines() if "ERROR" in ln or "error:" in ln
    ]
    return " | ".join(lines[-4:]) or (proc.stderr.strip().splitlines() or ["(no output)"])[-1]


def _verify() -> dict | None:
    proc = _run(
        [str(_env_python()), "-c", VERIFY_SNIPPET, str(WEIGHTS_DIR), str(FIXTURE)], timeout=1200
    )
    if proc.returncode != 0:
        _log("verification failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1])
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _strategy_a(reasons: list[str]) -> dict | None:
    py39 = find_python("3.9")
    if py39 is None:
        reasons.append("(a) no working python3.9 found (PATH, pyenv)")
        return None
    _log(f"strategy (a): {py39} + debcr[tf-cpu]==0.1.0")
    if not _make_venv(py39):
        reasons.append(f"(a) could not create a venv with {py39}")
        return None
    proc = _pip("debcr[tf-cpu]==0.1.0")
    if proc.returncode != 0:
        reasons.append("(a) pip install 'debcr[tf-cpu]==0.1.0' failed: " + _pip_error(proc))
        return None
    info = _verify()
    if info is None:
        reasons.append("(a) installed, but the original failed to load/predict (see build log)")
        return None
    return {
        "strategy": "a: python3.9 + debcr[tf-cpu]==0.1.0 (original pins)",
        "base_python": py39,
        **info,
    }


def _strategy_b(reasons: list[str]) -> dict | None:
    py311 = find_python("3.11") or (sys.executable if sys.version_info[:2] == (3, 11) else None)
    if py311 is None:
        reasons.append("(b) no working python3.11 found")
        return None
    for tf_version in TF_CANDIDATES_PY311:
        _log(f"strategy (b): {py311} + tensorflow-cpu=={tf_version} + debcr==0.1.0 --no-deps")
        if not _make_venv(py311):
            reasons.append(f"(b) could not create a venv with {py311}")
            return None
        proc = _pip(f"tensorflow-cpu=={tf_version}", *ORIGINAL_DEPS_PY311)
        if proc.returncode != 0:
            reasons.append(f"(b) tensorflow-cpu=={tf_version}: " + _pip_error(proc))
            continue
        proc = _pip("--no-deps", "debcr==0.1.0")
        if proc.returncode != 0:
            reasons.append("(b) pip install debcr==0.1.0 --no-deps failed: " + _pip_error(proc))
            return None
        info = _verify()
        if info is None:
            reasons.append(f"(b) tensorflow-cpu=={tf_version}: the original failed to load/predict")
            continue
        return {
            "strategy": f"b: python3.11 + tensorflow-cpu=={tf_version} + debcr==0.1.0 --no-deps",
            "base_python": py311,
            **info,
        }
    return None


def original_info() -> dict | None:
    """The marker of a finished, verified build, or None."""
    if MARKER.exists() and _env_python().exists():
        try:
            return json.loads(MARKER.read_text())
        except json.JSONDecodeError:
            return None
    return None


def build(rebuild: bool = False, strategies: tuple[str, ...] = STRATEGIES) -> dict | None:
    """Build the environment if needed; return its marker dict, or None (reason on stderr)."""
    if not rebuild:
        info = original_info()
        if info is not None:
            return info
        if FAILURE.exists():
            print(
                "original debcr unavailable (an earlier build failed; rebuild with "
                "benchmarks/original_env.py --rebuild):\n  "
                + FAILURE.read_text().strip().replace("\n", "\n  "),
                file=sys.stderr,
            )
            return None
    WORK.mkdir(parents=True, exist_ok=True)
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                "original debcr unavailable: another process is building the environment "
                f"(see {LOG}); run again when it has finished",
                file=sys.stderr,
            )
            return None
        if not rebuild and original_info() is not None:  # built while we waited
            return original_info()
        if not WEIGHTS_DIR.joinpath("ckpt-best.index").exists() or not FIXTURE.exists():
            print(
                "original debcr unavailable: weights/fixture missing under "
                f"{WEIGHTS_DIR.parent.parent}",
                file=sys.stderr,
            )
            return None
        if MARKER.exists():
            MARKER.unlink()
        if FAILURE.exists():
            FAILURE.unlink()
        t0 = time.perf_counter()
        reasons: list[str] = []
        info = None
        for name in strategies:
            info = (_strategy_a if name == "a" else _strategy_b)(reasons)
            if info is not None:
                break
        if info is None:
            print("original debcr unavailable:\n  " + "\n  ".join(reasons), file=sys.stderr)
            FAILURE.write_text("\n".join(reasons) + "\n")
            return None
        info["python"] = str(_env_python())
        info["build_seconds"] = round(time.perf_counter() - t0, 1)
        info["failed_attempts"] = reasons
        MARKER.write_text(json.dumps(info, indent=2))
        _log(
            f"ready: {info['strategy']} (TF {info['tf_version']}), "
            f"max|Δ| vs api_predict = {info['api_predict_max_abs_diff']:.3g}"
        )
        return info


def original_python(build_if_missing: bool = True) -> str | None:
    """Path of the original env's python, or None with a printed reason."""
    info = original_info()
    if info is None and build_if_missing:
        info = build()
    if info is None:
        if not build_if_missing:
            print(
                "original debcr unavailable: environment not built "
                "(run: .venv/bin/python benchmarks/original_env.py)",
                file=sys.stderr,
            )
        return None
    return info["python"]


def describe(info: dict) -> str:
    """One line naming the original's runtime, for benchmark headers."""
    return (
        f"original debcr {info.get('debcr_version', '0.1.0')} on TensorFlow {info['tf_version']} "
        f"(Keras {info.get('keras_version', '?')}, numpy {info.get('numpy_version', '?')}, "
        f"Python {info.get('python_version', '?')}; strategy {info['strategy'].split(':')[0]})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rebuild", action="store_true", help="delete and rebuild the environment")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="re-run the parity check on an existing environment and update the marker",
    )
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        action="append",
        help="try only this strategy (repeatable; default: a, then b)",
    )
    parser.add_argument(
        "--env-dir",
        type=Path,
        help=f"build/use this directory instead of {ENV_DIR.relative_to(HERE.parent)} "
        "(e.g. to try strategy b without touching the main one)",
    )
    args = parser.parse_args()
    if args.env_dir:
        use_env_dir(args.env_dir)
    info = build(rebuild=args.rebuild, strategies=tuple(args.strategy or STRATEGIES))
    if info is None:
        return 1
    if args.verify:
        fresh = _verify()
        if fresh is None:
            return 1
        info.update(fresh)
        MARKER.write_text(json.dumps(info, indent=2))
    print("| item | value |\n|---|---|")
    for key in (
        "python",
        "strategy",
        "tf_version",
        "keras_version",
        "numpy_version",
        "python_version",
        "debcr_version",
        "build_seconds",
    ):
        print(f"| {key} | {info.get(key)} |")
    print(f"| checkpoint | {WEIGHTS_DIR}/ckpt-best (ckpt_name='ckpt-best') |")
    print(f"| max abs diff vs fixture api_predict | {info['api_predict_max_abs_diff']:.3e} |")
    for reason in info.get("failed_attempts", []):
        print(f"| failed attempt | {reason} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
