"""Helpers shared by the benchmark scripts: timing, tables, test images, subprocesses."""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
SHARED = HERE.parent.parent / "shared"
FMD = SHARED / "data" / "fmd_confocal_bpae_b"
FMD_FIELD19_RAW = [FMD / "raw" / "19" / f"HV110_P05005100{i:02d}.png" for i in range(16)]
FMD_FIELD19_GT = FMD / "gt" / "19" / "avg50.png"
STARDIST_IMG = SHARED / "data" / "stardist" / "img2d.tif"
WEIGHTS_2D_DENOISING = SHARED / "debcr_reference" / "weights" / "2D_denoising"


def time_repeated(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall times (s, ``time.perf_counter``) of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cores, from /proc/stat)."""
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _pid_cpu_seconds(pid: int) -> float:
    """CPU seconds of process ``pid`` and its waited-for children (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # after the command name: state is field 3, utime/stime/cutime/cstime are fields 14–17
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """Context manager: share of the machine's CPU used by *other* processes meanwhile.

    ``fraction`` = (machine busy CPU time − CPU time of this process, its waited-for children
    and the processes in ``pids``) / (cores × wall time). Near 0 on a quiet machine; 0.5 means
    another job took about half of the cores, so timings taken meanwhile are inflated. Entering
    the same instance several times accumulates over all the ``with`` blocks.
    """

    def __init__(self, pids: Sequence[int] = ()) -> None:
        self.pids = list(pids)
        self._other = 0.0
        self._wall = 0.0

    @property
    def fraction(self) -> float:
        return max(0.0, self._other) / max(self._wall * (os.cpu_count() or 1), 1e-9)

    def _own(self) -> float:
        return _own_seconds() + sum(_pid_cpu_seconds(pid) for pid in self.pids)

    def __enter__(self) -> OtherLoad:
        self._t = time.perf_counter()
        self._busy = _busy_seconds()
        self._own0 = self._own()
        return self

    def __exit__(self, *exc: object) -> None:
        self._wall += time.perf_counter() - self._t
        self._other += (_busy_seconds() - self._busy) - (self._own() - self._own0)

    def __str__(self) -> str:
        return f"{100 * self.fraction:.0f}%"


_WORKER_LOOP = r"""
import contextlib as _cl, io as _io, json as _json, sys as _sys, time as _time
_out = _sys.stdout
def _reply(obj):
    _out.write(_json.dumps(obj) + "\n")
    _out.flush()
with _cl.redirect_stdout(_io.StringIO()):
    _t0 = _time.perf_counter()
    setup()
    _setup_s = _time.perf_counter() - _t0
_reply({"ready": True, "setup_s": _setup_s})
for _line in _sys.stdin:
    _req = _json.loads(_line)
    with _cl.redirect_stdout(_io.StringIO()):
        _res = JOBS[_req["job"]](*_req.get("args", []))
    _reply(_res)
"""


class OriginalWorker:
    """A persistent subprocess running ``code`` with another interpreter (the original's env).

    ``code`` must define ``setup()`` (run once; e.g. build the model) and a dict ``JOBS`` of
    functions returning JSON-serialisable results; :meth:`call` runs one job and returns its
    result. Keeping the process alive lets a benchmark interleave the original's runs with ours,
    so that both see the same background load. Prints go to a sink; stderr to a temp file.
    """

    def __init__(self, python: str, code: str, argv: Sequence[str] = (), timeout: float = 1800):
        import tempfile

        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        self._err = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [python, "-c", code + _WORKER_LOOP, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            env=env,
        )
        self.pid = self.proc.pid
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            self.proc.wait()
            self._err.seek(0)
            tail = "\n".join(self._err.read().strip().splitlines()[-15:])
            raise RuntimeError(f"original worker exited (rc={self.proc.returncode}):\n{tail}")
        return json.loads(line)

    def call(self, job: str, *args: object) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"job": job, "args": list(args)}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()

    def __enter__(self) -> OriginalWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def machine_line() -> str:
    import torch

    load = os.getloadavg()
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}, "
        f"Python {platform.python_version()}; load average before run {load[0]:.2f}"
    )


def read_png(path: Path) -> np.ndarray:
    import skimage.io

    return np.asarray(skimage.io.imread(path))


def fmd_mosaic(grid: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, gt): ``grid``×``grid`` mosaics of FMD field 19 (frame i at row i//grid, col i%grid).

    The noisy mosaic uses the raw frames 0 … grid²−1 (distinct noise, same field); the GT mosaic
    repeats the field's avg50 image the same way. uint8, (512·grid)².
    """
    if not 1 <= grid <= 4:
        raise ValueError("grid must be 1..4 (16 raw frames are used)")
    frames = [read_png(p) for p in FMD_FIELD19_RAW[: grid * grid]]
    rows = [np.concatenate(frames[r * grid : (r + 1) * grid], axis=1) for r in range(grid)]
    noisy = np.concatenate(rows, axis=0)
    gt = np.tile(read_png(FMD_FIELD19_GT), (grid, grid))
    return noisy, gt


def run_json(cmd: Sequence[str], timeout: float = 3600, env: dict | None = None) -> dict:
    """Run a subprocess that prints one JSON object as the last stdout line; return it."""
    full_env = dict(os.environ)
    full_env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})
    if env:
        full_env.update(env)
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=full_env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"subprocess failed (rc={proc.returncode}):\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def original_env_info(mode: str) -> dict | None:
    """The original env's marker (see original_env.py) for ``--original`` ``mode`` (auto/skip).

    ``auto`` builds the environment if it does not exist yet (several minutes, once), unless an
    earlier build failed; the reason is printed and None returned when it is unavailable.
    """
    if mode == "skip":
        print("original debcr: skipped (--original skip)", file=sys.stderr)
        return None
    import original_env

    return original_env.build()


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def log(msg: str) -> None:
    """A progress line with the time and the load average (benchmarks run for minutes)."""
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", flush=True)


def command_line(script: str) -> str:
    """The exact command that is running, as a report quotes it."""
    threads = os.environ.get("OMP_NUM_THREADS", "(unset)")
    args = shlex.join(sys.argv[1:])
    return f"OMP_NUM_THREADS={threads} .venv/bin/python benchmarks/{script} {args}".rstrip()


def publish(report: str, path: Path, save: bool) -> None:
    """Print a Markdown report and, if ``save``, write it to ``path``."""
    print("\n" + report)
    if save:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report)
        print(f"written to {path.resolve().relative_to(HERE.parent)}")
