"""Exports of every built-in model: BMZ packages (with the Zoo's test), ONNX and TorchScript.

Command (from the repository root; needs ``pip install -e ".[export]"``)::

    .venv/bin/python benchmarks/bench_export.py                 # the four built-in models; ~6 min
    .venv/bin/python benchmarks/bench_export.py --models 2D_denoising --out results/export.md

For each model: the BioImage Model Zoo package (size, ``bioimageio.core`` test result and the
number of checks passed, export time including the test), and the standalone ONNX and TorchScript
files (size, max |Δ| to the PyTorch model on the bundled 512² sample, export time), plus the
forward time of one 1×1×512×512 image in PyTorch, ONNX Runtime and TorchScript (median of 5 after
one warm-up, on the threads torch uses); the max |Δ| is measured on that same image.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import time_repeated
from debcr.interop.bmz import export_bmz
from debcr.interop.portable import (
    check_image,
    export_onnx,
    export_torchscript,
    restorer,
    run_onnx,
    run_torchscript,
)
from debcr.model import init
from debcr.weights import PRETRAINED


def _median_time(fn, repeats: int = 5) -> float:
    return statistics.median(time_repeated(fn, repeats))


def _bench_model(name: str, folder: Path) -> list[str]:
    model = init(name)
    rows = []
    start = time.perf_counter()
    package = export_bmz(model, folder / f"{name}.zip")
    seconds = time.perf_counter() - start
    passed = sum(status == "passed" for _, status in package.checks)
    rows.append(
        f"| {name} | BMZ package | {package.size_bytes / 1e6:.2f} MB | "
        f"{package.status} ({passed}/{len(package.checks)} checks) | "
        f"TS {package.max_abs_diff['torchscript']:.1e}, ONNX {package.max_abs_diff['onnx']:.1e} "
        f"| {seconds:.0f} s | |"
    )
    net = restorer(model)
    image = check_image(net)
    with torch.inference_mode():
        t_torch = _median_time(lambda: net(torch.from_numpy(image)))
    for label, export, run in (
        ("ONNX", export_onnx, run_onnx),
        ("TorchScript", export_torchscript, run_torchscript),
    ):
        path = folder / f"{name}.{'onnx' if label == 'ONNX' else 'pt'}"
        start = time.perf_counter()
        check = export(model, path)
        seconds = time.perf_counter() - start
        forward = _median_time(lambda path=path, run=run: run(path, image))
        rows.append(
            f"| {name} | {label} | {path.stat().st_size / 1e6:.2f} MB | checked | "
            f"{check.max_abs_diff:.1e} | {seconds:.0f} s | {forward:.2f} s "
            f"(PyTorch {t_torch:.2f} s) |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(PRETRAINED), help="comma-separated")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (.md)")
    args = parser.parse_args()
    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs",
        "",
        "| model | format | size | validation | max abs Δ to PyTorch (512² sample) | export time "
        "| forward 1×1×512² |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            lines += _bench_model(name, Path(tmp))
            print("\n".join(lines[-3:]), file=sys.stderr, flush=True)
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(
            "# Exports of the built-in models\n\nCommand: `.venv/bin/python "
            f"benchmarks/bench_export.py --out {args.out}`\n\n{table}\n"
        )


if __name__ == "__main__":
    main()
