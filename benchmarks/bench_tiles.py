"""Tile size per backend: whole-image speed and peak memory on the 2048² FMD mosaic.

Command (from the repository root, on a quiet machine)::

    .venv/bin/python benchmarks/bench_tiles.py --out benchmarks/results/tiles.md
    .venv/bin/python benchmarks/bench_tiles.py --configs openvino:float32:512,openvino:float32:768

Each (backend, precision, tile size) runs in a fresh subprocess: load the 2D_denoising model,
restore a 512² crop once (warm-up: OpenVINO compiles, caches fill), then restore the 2048²
mosaic of FMD field 19 (``_common.fmd_mosaic``) ``--repeats`` times with
``debcr.model.predict(model, image, backend=..., precision=..., tile_size=...)``. Reported: the
median seconds, Mpx/s, and the process's peak resident memory (VmHWM, which includes Python,
torch and the 2048² input, ~0.3 GB before restoring). The defaults in
``debcr.defaults.TILE_SIZE`` come from this table: the fastest tile whose peak stays under
1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import HERE, command_line, log, machine_line, publish, table

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from _common import fmd_mosaic
import debcr
backend, precision, tile, repeats = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
noisy, _ = fmd_mosaic(4)
model = debcr.model.init("2D_denoising")
kw = dict(backend=backend, precision=precision, tile_size=tile, progress=False)
debcr.model.predict(model, noisy[:512, :512], **kw)
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    debcr.model.predict(model, noisy, **kw)
    times.append(time.perf_counter() - t0)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"times": times, "hwm_kb": hwm}))
"""

CONFIGS = [
    ("torch", "bfloat16", 512),
    ("torch", "bfloat16", 768),
    ("torch", "bfloat16", 1024),
    ("openvino", "bfloat16", 512),
    ("openvino", "bfloat16", 768),
    ("openvino", "bfloat16", 1024),
    ("openvino", "bfloat16", 2048),
    ("openvino", "float32", 512),
    ("openvino", "float32", 768),
    ("openvino", "float32", 1024),
    ("openvino", "float32", 2048),
]


def parse_configs(text: str) -> list[tuple[str, str, int]]:
    """``backend:precision:tile,…`` as `CONFIGS` rows."""
    rows = []
    for item in text.split(","):
        backend, precision, tile = item.strip().split(":")
        rows.append((backend, precision, int(tile)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per row (default 2)")
    parser.add_argument("--out", type=Path, default=None, help="write the report here")
    parser.add_argument(
        "--configs",
        type=parse_configs,
        default=CONFIGS,
        help="rows to run, backend:precision:tile comma-separated (default: all of CONFIGS)",
    )
    args = parser.parse_args()
    rows = []
    for backend, precision, tile in args.configs:
        log(f"{backend} {precision} tile {tile}")
        res = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                str(HERE),
                backend,
                precision,
                str(tile),
                str(args.repeats),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        out = json.loads(res.stdout.strip().splitlines()[-1])
        best = sorted(out["times"])[len(out["times"]) // 2]
        peak = out["hwm_kb"] * 1024 / 1e9
        rows.append(
            [
                backend,
                precision,
                tile,
                f"{best:.2f}",
                f"{2048 * 2048 / 1e6 / best:.3f}",
                f"{peak:.2f}",
            ]
        )
    report = "\n\n".join(
        [
            "# Tile size per backend, 2048² FMD mosaic (bench_tiles.py)",
            f"Command: `{command_line('bench_tiles.py')}`  \n{machine_line()}",
            table(["backend", "precision", "tile", "median s", "Mpx/s", "peak RSS GB"], rows),
        ]
    )
    publish(report, args.out, args.out is not None)


if __name__ == "__main__":
    main()
