"""Helpers shared by the benchmark scripts: timing, tables, test images, subprocesses."""

from __future__ import annotations

import json
import os
import platform
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


class OtherLoad:
    """Context manager: share of the machine's CPU used by *other* processes meanwhile.

    ``fraction`` = (machine busy CPU time − this process's and its waited-for children's CPU
    time) / (cores × wall time). Near 0 on a quiet machine; 0.5 means another job took about
    half of the cores, so timings taken meanwhile are inflated.
    """

    fraction: float = 0.0

    def __enter__(self) -> OtherLoad:
        self._t = time.perf_counter()
        self._busy = _busy_seconds()
        self._own = _own_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._t
        other = (_busy_seconds() - self._busy) - (_own_seconds() - self._own)
        self.fraction = max(0.0, other) / max(wall * (os.cpu_count() or 1), 1e-9)

    def __str__(self) -> str:
        return f"{100 * self.fraction:.0f}%"


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
