"""The learning curves of a run: ``metrics.csv`` read back and plotted into ``curves.png``."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from debcr.defaults import CURVES_PLOT, METRICS_CSV
from debcr.files import atomic_output

__all__ = ["plot_curves", "read_metrics"]


def read_metrics(run_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """``metric name → [(step, value), …]`` from a run's ``metrics.csv``."""
    series: dict[str, list[tuple[int, float]]] = {}
    path = Path(run_dir) / METRICS_CSV
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            step = int(row["step"])
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    series.setdefault(key, []).append((step, float(value)))
    return series


def plot_curves(run_dir: str | os.PathLike) -> Path:
    """Plot loss and PSNR (training and validation) into ``curves.png``."""
    from matplotlib.figure import Figure

    series = read_metrics(run_dir)
    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "psnr"), strict=True):
        for split in ("train", "val"):
            points = series.get(f"{split}_{metric}", [])
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, "-" if split == "train" else "o-", label=split)
        ax.set_xlabel("step")
        ax.set_ylabel("PSNR (dB)" if metric == "psnr" else "loss")
        ax.legend()
    path = Path(run_dir) / CURVES_PLOT
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path
