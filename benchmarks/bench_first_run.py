"""The first run in a fresh environment: `debcr predict` of one image, per path.

Commands (from the repository root)::

    .venv/bin/python benchmarks/bench_first_run.py            # 3 rounds, one 512² image
    .venv/bin/python benchmarks/bench_first_run.py --save     # write results/first_run.md
    .venv/bin/python benchmarks/bench_first_run.py --grids 1,2,4 --skip-converting  # by size

Each run is a fresh process with an empty debcr cache (``DEBCR_CACHE_DIR`` set to a new
temporary folder), restoring FMD Confocal_BPAE_B field 19 raw frame 0 (512², PNG) with the
built-in ``2D_denoising`` to a TIFF, as a new user's first command would (``--grids``: also
mosaics of grid × grid raw frames 0, 1, … of that field, 512·grid px square, as uint8 TIFFs —
where the paths' start-up costs stop mattering):

* ``default``: ``debcr predict in.png -o out.tif`` (backend ``auto``: OpenVINO, starting from
  the conversion shipped with debcr);
* ``torch``: the same with ``--backend torch``;
* ``openvino, converting``: the default with the shipped conversions hidden (what every first
  run cost before they were shipped: the network is converted first);
* ``default, warm`` and ``torch, warm``: the same two commands again in a fresh process but with
  a cache that earlier runs filled (one untimed call each first) — what every later command
  costs.

The variants run in turn, ``--repeats`` times (interleaved, so a shared machine's background
load reaches all alike); reported are the wall times of the processes, median and each, and
the ratio to the PyTorch path's median of the same kind (first or warm).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tifffile

from _common import (
    FMD_FIELD19_RAW,
    HERE,
    command_line,
    fmd_mosaic,
    fmt,
    log,
    machine_line,
    median,
    publish,
    table,
)
from debcr.runtime import cpu_name, native_bf16

ROOT = HERE.parent
DEBCR = [sys.executable, "-c", "import sys; from debcr.cli import main; sys.exit(main())"]
#: The default command with the shipped conversions hidden (a folder that does not exist).
HIDDEN = [
    sys.executable,
    "-c",
    "import sys; from pathlib import Path; import debcr.backends.openvino_runner as o; "
    "o.SHIPPED = Path('/nonexistent'); from debcr.cli import main; sys.exit(main())",
]


def variants(image: Path, out: Path) -> dict[str, list[str]]:
    args = ["predict", str(image), "-o", str(out), "--overwrite", "-q"]
    default, torch = [*DEBCR, *args], [*DEBCR, *args, "--backend", "torch"]
    return {
        "default (openvino, shipped)": default,
        "torch": torch,
        "openvino, converting": [*HIDDEN, *args],
        "default, warm": default,
        "torch, warm": torch,
    }


def timed_run(cmd: list[str], cache: str | None = None) -> float:
    """Wall time of ``cmd`` in a fresh process; with a new, empty debcr cache unless ``cache``."""
    with tempfile.TemporaryDirectory(prefix="debcr-cache-") as empty:
        env = {**os.environ, "DEBCR_CACHE_DIR": cache or empty}
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True)
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-converting", action="store_true", help="omit the slow variant")
    parser.add_argument("--save", action="store_true", help="write results/first_run.md")
    parser.add_argument(
        "--grids",
        default="1",
        help="comma-separated mosaic sizes: grid × grid frames of 512² (1 = the PNG frame itself)",
    )
    args = parser.parse_args()
    grids = [int(g) for g in args.grids.split(",")]
    if any(not 1 <= g <= 4 for g in grids):
        parser.error(f"--grids must be between 1 and 4 (16 frames), got {args.grids!r}")

    header = f"{cpu_name()}, native bf16: {'yes' if native_bf16() else 'no'}; {machine_line()}"
    with tempfile.TemporaryDirectory(prefix="debcr-first-run-") as tmp:
        runs: dict[tuple[int, str], list[str]] = {}
        for grid in grids:
            image = FMD_FIELD19_RAW[0]
            if grid > 1:
                image = Path(tmp) / f"mosaic_{grid}.tif"
                tifffile.imwrite(image, fmd_mosaic(grid)[0])
            for name, cmd in variants(image, Path(tmp) / f"out_{grid}.tif").items():
                if not (args.skip_converting and name == "openvino, converting"):
                    runs[grid, name] = cmd
        times: dict[tuple[int, str], list[float]] = {key: [] for key in runs}
        warm_cache = Path(tmp) / "cache"
        for (_, name), cmd in runs.items():
            if name.endswith(", warm"):
                timed_run(cmd, str(warm_cache))  # fills the cache as a first run does
        for r in range(args.repeats):
            for (grid, name), cmd in runs.items():
                cache = str(warm_cache) if name.endswith(", warm") else None
                times[grid, name].append(timed_run(cmd, cache))
                log(f"round {r + 1}: {512 * grid}² {name} {times[grid, name][-1]:.2f} s")
    rows = []
    for (grid, name), ts in times.items():
        torch_median = median(times[grid, "torch, warm" if name.endswith(", warm") else "torch"])
        rows.append(
            [
                f"{512 * grid}²",
                name,
                f"**{fmt(median(ts))}**",
                ", ".join(fmt(t) for t in ts),
                f"{fmt(median(ts) / torch_median)}×",
            ]
        )
    sizes = ", ".join(f"{512 * g}²" for g in grids)
    report = "\n".join(
        [
            f"# First run in a fresh environment: one image ({sizes})",
            "",
            f"Command: `{command_line('bench_first_run.py')}`",
            "",
            f"Machine: {header}",
            "",
            "Each run: a fresh process, an empty cache (`DEBCR_CACHE_DIR` a new folder), "
            "FMD field 19 raw frame 0 (512² PNG; larger sizes: mosaics of raw frames 0, 1, … "
            f"as uint8 TIFF) restored with `2D_denoising`; {args.repeats} "
            "rounds, the variants interleaved. Commands: default `debcr predict in.png -o "
            "out.tif --overwrite -q`; torch: the same with `--backend torch`; openvino, "
            "converting: the default with the shipped conversions hidden "
            "(`debcr.backends.openvino_runner.SHIPPED` pointed at a missing folder); warm: "
            "the default and torch commands with a cache filled by earlier runs; `/ torch` "
            "divides by the torch row of the same kind.",
            "",
            table(["image", "variant", "median (s)", "rounds (s)", "/ torch"], rows),
            "",
        ]
    )
    publish(report, HERE / "results" / "first_run.md", args.save)


if __name__ == "__main__":
    main()
