"""Evaluate restorations against ground truth and write a report (the paper's Fig. 3 and 7).

`evaluate` scores a prediction (and optionally the raw input, as the baseline) image by
image against the ground truth with `debcr.metrics` — PSNR, SSIM and NRMSE under each
intensity convention, the GT entropy, and the FRC resolution against the GT — and writes

``metrics.csv``
    One row per image × convention × source (``prediction`` / ``input``).
``summary.md``
    Mean ± standard deviation per metric, source and convention, and the same split into
    sparse (GT entropy < 5 bits) and dense images as in the paper's Fig. 3d.
``frc.png``
    Mean FRC curves prediction vs GT and input vs GT with the threshold, and their
    difference (paper Fig. 7).
``comparison.png``
    Input / prediction / GT side by side, full view and a zoom on the image centre.

Every file is written atomically (`debcr.data.io.atomic_output`). Only numpy,
scikit-image (through `debcr.metrics`), matplotlib (``Figure``, no pyplot) and numpy-only
debcr modules are imported.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from numpy.typing import ArrayLike

from debcr.data.io import as_image_stack, load
from debcr.data.show import show
from debcr.errors import DataError
from debcr.files import atomic_output, check_targets
from debcr.metrics import (
    NORMALIZATIONS,
    entropy,
    frc,
    frc_crossing,
    normalize_pair,
    nrmse,
    psnr,
    ssim,
    threshold_curve,
)

__all__ = ["CSV_COLUMNS", "METRICS", "REPORT_FILES", "SPARSE_ENTROPY", "evaluate"]

log = logging.getLogger(__name__)

#: GT entropy (bits) below which the paper calls an image sparse (Fig. 3d).
SPARSE_ENTROPY = 5.0

#: Per-image scores summarised in the report, in column order.
METRICS: tuple[str, ...] = ("psnr", "ssim", "nrmse", "frc_resolution")

#: Columns of ``metrics.csv``.
CSV_COLUMNS: tuple[str, ...] = (
    "image",
    "source",
    "normalization",
    "psnr",
    "ssim",
    "nrmse",
    "frc_resolution",
    "gt_entropy",
    "density",
)

#: Report files by key of the returned ``files`` dict.
REPORT_FILES: dict[str, str] = {
    "metrics_csv": "metrics.csv",
    "summary_md": "summary.md",
    "frc_png": "frc.png",
    "comparison_png": "comparison.png",
}

_LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "nrmse": "NRMSE",
    "frc_resolution": "FRC resolution",
}
_FORMATS = {"psnr": ".2f", "ssim": ".4f", "nrmse": ".4f", "frc_resolution": ".2f"}
_CONVENTIONS = {
    "minmax": "prediction and GT each min-max rescaled to [0, 1] (original DeBCR), data range 1",
    "affine": "GT percentile-normalised (0.1/99.9), prediction least-squares affine-fitted "
    "to it (CARE normalize_minmse), data range 1",
    "raw": "intensities as given",
}

PathLike = str | os.PathLike


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _load(source: Any, role: str) -> tuple[np.ndarray, Path | None, tuple[int, ...]]:
    """An array or a file (read with debcr.data.load) as an (N, H, W) stack.

    Returns the stack, the file path (None for an array) and the image's own 2-D/3-D shape.
    """
    path = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        data = load(path)
        if isinstance(data, Mapping):
            raise DataError(
                f"the {role} file {path} holds several arrays ({', '.join(data)}); save the "
                f"{role} alone (e.g. as .tif or .npy) and pass that file"
            )
    else:
        data = source
    arr = np.asarray(as_image_stack(np.asarray(data), name=f"the {role}"))
    if arr.dtype.kind not in "biuf":
        raise DataError(f"the {role} has dtype {arr.dtype}; evaluation needs real-valued images")
    if arr.dtype.kind == "f":
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise DataError(
                f"the {role} contains {bad} NaN or infinite value(s); replace or mask them "
                "before evaluating"
            )
    return (arr[None] if arr.ndim == 2 else arr), path, arr.shape


def _normalizations(normalization: str | Sequence[str]) -> tuple[str, ...]:
    chosen = (normalization,) if isinstance(normalization, str) else tuple(normalization)
    if not chosen:
        raise DataError(f"normalization is empty; choose from {', '.join(NORMALIZATIONS)}")
    for name in chosen:
        if name not in NORMALIZATIONS:
            raise DataError(
                f"unknown normalization {name!r}; use one or more of {', '.join(NORMALIZATIONS)}"
            )
    return tuple(dict.fromkeys(chosen))  # drop repeats, keep the order given


def _names(names: Sequence[str] | None, n: int, gt_path: Path | None, is_stack: bool) -> list[str]:
    if names is not None:
        names = [names] if isinstance(names, str) else [str(s) for s in names]
        if len(names) != n:
            raise DataError(
                f"names has {len(names)} entries but there are {n} image(s); give one name "
                "per image (slice) or none"
            )
        return names
    base = gt_path.name.split(".")[0] if gt_path is not None else "image"
    return [f"{base}_{i:04d}" for i in range(n)] if is_stack else [base]


def _raw_range(gt: np.ndarray, data_range: float | None) -> float:
    # One range for the whole GT (not per image), so all images of a stack share one
    # intensity scale and an empty slice does not make the range 0.
    if data_range is not None:
        value = float(data_range)
        if not (math.isfinite(value) and value > 0):
            raise DataError(f"data_range must be a positive finite number, got {data_range!r}")
        return value
    value = float(gt.max()) - float(gt.min())
    if value <= 0:
        raise DataError(
            f"the ground truth is constant ({float(gt.min())!r}), so the 'raw' convention has "
            "no data range; pass data_range or leave 'raw' out of normalization"
        )
    return value


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def _stats(values: Sequence[float]) -> dict[str, float | int]:
    """Mean, population std and count of the defined (non-NaN) values."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    if np.isinf(arr).any():  # e.g. PSNR of a perfect image: the mean is inf, std undefined
        return {"mean": float(np.mean(arr)), "std": math.nan, "n": int(arr.size)}
    return {"mean": float(np.mean(arr)), "std": float(np.std(arr)), "n": int(arr.size)}


def _summarise(
    rows: list[dict[str, Any]], normalizations: Sequence[str], sources: Sequence[str]
) -> dict[str, dict[str, dict[str, dict[str, float | int]]]]:
    return {
        norm: {
            src: {
                metric: _stats(
                    [r[metric] for r in rows if r["normalization"] == norm and r["source"] == src]
                )
                for metric in METRICS
            }
            for src in sources
        }
        for norm in normalizations
    }


def _frc_of(pred: np.ndarray, gt: np.ndarray, threshold: Any, pixel_size: float | None) -> Any:
    """FRC against the GT, or None where it is undefined (a constant image)."""
    if pred.max() == pred.min() or gt.max() == gt.min():
        return None
    return frc(pred, gt, threshold=threshold, pixel_size=pixel_size)


def _pair_scores(
    pred: np.ndarray, gt: np.ndarray, norm: str, raw_range: float | None
) -> dict[str, float]:
    """PSNR, SSIM and NRMSE of one image pair under one intensity convention."""
    # Normalise once, then score the normalised pair as raw data with the convention's
    # range: the same values as psnr(..., normalization=norm) etc.
    p_n, g_n = normalize_pair(pred, gt, norm)
    peak = raw_range if norm == "raw" else 1.0
    return {
        "psnr": psnr(p_n, g_n, data_range=peak),
        "ssim": ssim(p_n, g_n, data_range=peak),
        "nrmse": nrmse(p_n, g_n),
    }


def _score(
    sources: dict[str, np.ndarray],
    gt: np.ndarray,
    names: list[str],
    normalizations: Sequence[str],
    raw_range: float | None,
    threshold: Any,
    pixel_size: float | None,
) -> tuple[list[dict[str, Any]], dict[str, list[Any]], list[float]]:
    """CSV rows, FRC results per source (None where undefined) and GT entropy per image."""
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[Any]] = {src: [] for src in sources}
    entropies: list[float] = []
    for i, name in enumerate(names):
        g = gt[i].astype(np.float64)
        gt_entropy = entropy(g)
        entropies.append(gt_entropy)
        density = "sparse" if gt_entropy < SPARSE_ENTROPY else "dense"
        for src, stack in sources.items():
            p = stack[i].astype(np.float64)
            result = _frc_of(p, g, threshold, pixel_size)
            curves[src].append(result)
            resolution = math.nan
            if result is not None and result.resolution is not None:
                resolution = result.resolution
            for norm in normalizations:
                rows.append(
                    {
                        "image": name,
                        "source": src,
                        "normalization": norm,
                        **_pair_scores(p, g, norm, raw_range),
                        "frc_resolution": resolution,
                        "gt_entropy": gt_entropy,
                        "density": density,
                    }
                )
        log.debug("scored image %d/%d (%s)", i + 1, len(names), name)
    return rows, curves, entropies


# --------------------------------------------------------------------------------------------
# Report files
# --------------------------------------------------------------------------------------------


def _fmt(stat: Mapping[str, float | int], spec: str, empty: str = "–") -> str:
    mean, std = stat["mean"], stat["std"]
    if stat["n"] == 0:
        return empty
    if math.isinf(mean):
        return "inf" if mean > 0 else "-inf"
    text = format(mean, spec)
    # One image has no spread; NaN std comes from infinite values (left out above).
    return text if stat["n"] < 2 or math.isnan(std) else f"{text} ± {format(std, spec)}"


def _cells(stats: Mapping[str, Mapping[str, float | int]], total: int) -> list[str]:
    cells = []
    for m in METRICS:
        # An FRC that never falls below the threshold has no resolution value (finer than the
        # highest measurable frequency), which the table says instead of a bare dash.
        text = _fmt(stats[m], _FORMATS[m], "no crossing" if m == "frc_resolution" else "–")
        n = stats[m]["n"]
        if 0 < n < total:  # a mean over some images only must say so
            text += f" (n={n} of {total})"
        cells.append(text)
    return cells


def _write_csv(path: Path, rows: list[dict[str, Any]], overwrite: bool, inputs: list[Path]) -> None:
    with atomic_output(path, overwrite=overwrite, inputs=inputs) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow(
                    {k: format(v, ".10g") if isinstance(v, float) else v for k, v in row.items()}
                )


def _summary_header(report: dict[str, Any], described: dict) -> list[str]:
    unit = "px" if report["pixel_size"] is None else "units of pixel_size"
    n_sparse = report["by_density"]["sparse"]["n_images"]
    n_dense = report["by_density"]["dense"]["n_images"]
    return [
        "# DeBCR evaluation report",
        "",
        f"- prediction: {described['prediction']}",
        f"- ground truth: {described['gt']}",
        f"- input: {described['input']}",
        f"- images: {report['n_images']} ({n_sparse} sparse, {n_dense} dense; sparse = GT "
        f"entropy < {SPARSE_ENTROPY:g} bits)",
        f"- GT entropy (bits): {_fmt(report['gt_entropy'], '.3f')}",
        f"- FRC resolution against the GT, threshold {report['frc_threshold']}, in {unit}; "
        "images whose FRC never falls below the threshold (resolution at or beyond Nyquist) "
        "are left out of its mean, which then says over how many images it was taken",
        "",
        "Values are mean ± standard deviation over images (population std).",
        "",
    ]


def _convention_tables(report: dict[str, Any], sources: Sequence[str]) -> list[str]:
    lines: list[str] = []
    header = "| source | " + " | ".join(_LABELS[m] for m in METRICS) + " |"
    rule = "|---" * (len(METRICS) + 1) + "|"
    for norm in report["normalizations"]:
        lines += [f"## Normalisation: {norm}", "", _CONVENTIONS[norm], "", header, rule]
        for src in sources:
            stats = report["summary"][norm][src]
            cells = _cells(stats, report["n_images"])
            lines.append(f"| {src} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _density_table(report: dict[str, Any], sources: Sequence[str]) -> list[str]:
    lines = [
        f"## Sparse (GT entropy < {SPARSE_ENTROPY:g} bits) vs dense images",
        "",
        "| normalization | source | subset | n | " + " | ".join(_LABELS[m] for m in METRICS) + " |",
        "|---" * (len(METRICS) + 4) + "|",
    ]
    for norm in report["normalizations"]:
        for src in sources:
            for subset in ("sparse", "dense"):
                part = report["by_density"][subset]
                if part["n_images"] == 0:
                    continue
                stats = part["summary"][norm][src]
                cells = _cells(stats, part["n_images"])
                lines.append(
                    f"| {norm} | {src} | {subset} | {part['n_images']} | "
                    + " | ".join(cells)
                    + " |"
                )
    return lines


def _summary_markdown(report: dict[str, Any], sources: Sequence[str], described: dict) -> str:
    lines = _summary_header(report, described)
    lines += _convention_tables(report, sources)
    lines += _density_table(report, sources)
    return "\n".join(lines) + "\n"


def _mean_curve(results: list[Any]) -> np.ndarray | None:
    curves = [r.correlation for r in results if r is not None]
    return np.mean(curves, axis=0) if curves else None


def _plot_frc_gain(
    ax: Any, freqs: np.ndarray, means: dict[str, np.ndarray | None], unit: str
) -> None:
    """The difference panel: mean FRC of the prediction minus that of the input."""
    if means["prediction"] is not None and means["input"] is not None:
        diff = means["prediction"] - means["input"]
        ax.plot(freqs, diff, color="k")
        ax.fill_between(freqs, diff, 0, where=diff >= 0, color="tab:green", alpha=0.4)
        ax.fill_between(freqs, diff, 0, where=diff < 0, color="tab:red", alpha=0.4)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlabel(f"spatial frequency ({unit})")
    ax.set_ylabel("FRC(prediction) − FRC(input)")
    ax.set_title("FRC gain of the prediction over the input")


def _frc_figure(curves: dict[str, list[Any]], report: dict[str, Any]) -> Figure:
    defined = [r for results in curves.values() for r in results if r is not None]
    has_input = "input" in curves
    fig = Figure(figsize=(11 if has_input else 5.5, 4.2), layout="constrained")
    axes = fig.subplots(1, 2 if has_input else 1, squeeze=False)[0]
    unit = "1/pixel" if report["pixel_size"] is None else "1/unit"
    if not defined:
        axes[0].text(0.5, 0.5, "FRC undefined (constant images)", ha="center", va="center")
        return fig
    freqs = defined[0].frequencies
    threshold = np.mean([r.threshold_curve for r in defined], axis=0)
    means = {src: _mean_curve(results) for src, results in curves.items()}
    ax = axes[0]
    colours = {"prediction": "tab:red", "input": "tab:blue"}
    length = "pixels" if report["pixel_size"] is None else "units"
    for src, curve in means.items():
        if curve is None:
            continue
        # The legend describes the curve it labels: where this mean curve falls below the drawn
        # threshold (summary.md's per-image mean averages only the images whose curves cross).
        crossing = frc_crossing(freqs, curve, threshold)
        where = (
            "never below the threshold"
            if crossing is None
            else f"below the threshold at {1 / crossing:.3g} {length}"
        )
        ax.plot(freqs, curve, color=colours[src], label=f"{src} vs GT, mean curve: {where}")
    ax.plot(freqs, threshold, "k--", lw=1, label=f"threshold {report['frc_threshold']}")
    ax.set_xlabel(f"spatial frequency ({unit})")
    ax.set_ylabel("FRC")
    ax.set_ylim(-0.1, 1.05)
    ax.set_title("Fourier ring correlation with the ground truth")
    ax.legend(loc="upper right", fontsize="small")
    if has_input:
        _plot_frc_gain(axes[1], freqs, means, unit)
    return fig


def _comparison_figure(stacks: dict[str, np.ndarray], names: list[str]) -> Figure:
    """Full images (row 1) and a centre zoom (row 2) of the middle image, via data.show."""
    z = len(names) // 2
    height, width = next(iter(stacks.values())).shape[-2:]
    zh, zw = max(min(height, 16), height // 4), max(min(width, 16), width // 4)
    y0, x0 = (height - zh) // 2, (width - zw) // 2
    fig = show(dict(stacks), slices=[z, z], figsize=(4, 4), show_ids=False)
    n_cols = len(stacks)
    for col, title in enumerate(stacks):
        full, zoom = fig.axes[col], fig.axes[n_cols + col]
        full.add_patch(
            Rectangle((x0 - 0.5, y0 - 0.5), zw, zh, fill=False, edgecolor="cyan", linewidth=1.2)
        )
        # The zoom row shows the same panel, so it keeps the full image's display range.
        zoom.set_xlim(x0 - 0.5, x0 + zw - 0.5)
        zoom.set_ylim(y0 + zh - 0.5, y0 - 0.5)
        zoom.set_title(f"{title} (centre {zh}×{zw})")
    fig.suptitle(names[z])
    return fig


def _save_figure(
    fig: Figure, path: Path, overwrite: bool, inputs: list[Path], dpi: int = 100
) -> None:
    with atomic_output(path, overwrite=overwrite, inputs=inputs) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)


def _check_outputs(out_dir: Path, overwrite: bool, inputs: list[Path]) -> dict[str, Path]:
    """The report paths, refused up front if one exists (without overwrite) or is an input.

    Checked before any work, so a refused run neither wastes time nor leaves a report that
    mixes new and old files; atomic_output repeats the checks when each file is written.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"report folder {out_dir} is a file; give a folder path for the report")
    targets = {key: out_dir / name for key, name in REPORT_FILES.items()}
    check_targets(list(targets.values()), inputs, overwrite)
    return targets


# --------------------------------------------------------------------------------------------
# Steps of evaluate
# --------------------------------------------------------------------------------------------


def _plan_outputs(
    pred: Any,
    gt: Any,
    input: Any,
    out_dir: PathLike | None,
    overwrite: bool,
    frc_threshold: str | float,
    pixel_size: float | None,
) -> dict[str, Path]:
    """The report paths (empty without out_dir), once the options and outputs are checked.

    Everything that can be refused without reading an image is refused here, before any work.
    """
    threshold_curve(frc_threshold, np.ones(1))
    if pixel_size is not None and not (math.isfinite(pixel_size) and pixel_size > 0):
        raise DataError(f"pixel_size must be a positive finite number, got {pixel_size!r}")
    if out_dir is None:
        return {}
    given_paths = [Path(x) for x in (pred, gt, input) if isinstance(x, (str, os.PathLike))]
    return _check_outputs(Path(out_dir), overwrite, given_paths)


def _read_images(
    pred: Any, gt: Any, input: Any
) -> tuple[np.ndarray, tuple[int, ...], dict[str, np.ndarray], dict[str, Path | None]]:
    """Read the images and refuse any whose shape differs from the ground truth's.

    Returns the GT stack, the GT image's own 2-D/3-D shape, the prediction (and input) stacks
    by role, and the file path of each role (None for an array or an input not given).
    """
    gt_arr, gt_path, gt_shape = _load(gt, "ground truth")
    stacks: dict[str, np.ndarray] = {}
    paths: dict[str, Path | None] = {"prediction": None, "gt": gt_path, "input": None}
    for role, source in (("prediction", pred), ("input", input)):
        if source is None:
            continue
        stacks[role], paths[role], shape = _load(source, role)
        if shape != gt_shape:
            raise DataError(
                f"the {role} has shape {shape} but the ground truth has shape {gt_shape}; "
                "give images of the same size and number"
            )
    return gt_arr, gt_shape, stacks, paths


def _report(
    rows: list[dict[str, Any]],
    entropies: list[float],
    names: list[str],
    normalizations: tuple[str, ...],
    sources: tuple[str, ...],
    *,
    data_range: float | None,
    frc_threshold: str | float,
    pixel_size: float | None,
) -> dict[str, Any]:
    """The dict evaluate returns, with ``files`` still empty."""
    n_sparse = sum(e < SPARSE_ENTROPY for e in entropies)
    by_density: dict[str, dict[str, Any]] = {}
    for subset, count in (("sparse", n_sparse), ("dense", len(entropies) - n_sparse)):
        part = [r for r in rows if r["density"] == subset]
        by_density[subset] = {
            "n_images": count,
            "summary": _summarise(part, normalizations, sources),
        }
    return {
        "n_images": len(names),
        "names": names,
        "normalizations": normalizations,
        "sources": sources,
        "data_range": data_range,
        "frc_threshold": frc_threshold,
        "pixel_size": pixel_size,
        "gt_entropy": _stats(entropies),
        "summary": _summarise(rows, normalizations, sources),
        "by_density": by_density,
        "rows": rows,
        "files": {},
    }


def _write_report(
    targets: dict[str, Path],
    report: dict[str, Any],
    stacks: dict[str, np.ndarray],
    gt: np.ndarray,
    curves: dict[str, list[Any]],
    paths: dict[str, Path | None],
    overwrite: bool,
) -> None:
    """Write every file of the report, each atomically."""
    inputs = [p for p in paths.values() if p is not None]
    described = {
        role: "none" if role == "input" and "input" not in stacks else "array" for role in paths
    }
    described |= {role: str(p) for role, p in paths.items() if p is not None}
    _write_csv(targets["metrics_csv"], report["rows"], overwrite, inputs)
    with atomic_output(targets["summary_md"], overwrite=overwrite, inputs=inputs) as tmp:
        tmp.write_text(_summary_markdown(report, report["sources"], described), encoding="utf-8")
    _save_figure(_frc_figure(curves, report), targets["frc_png"], overwrite, inputs)
    shown = {"input": stacks["input"]} if "input" in stacks else {}
    shown |= {"prediction": stacks["prediction"], "GT": gt}
    comparison = _comparison_figure(shown, report["names"])
    _save_figure(comparison, targets["comparison_png"], overwrite, inputs)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def evaluate(
    pred: ArrayLike | PathLike,
    gt: ArrayLike | PathLike,
    input: ArrayLike | PathLike | None = None,  # named as the CLI option --input
    out_dir: PathLike | None = None,
    *,
    normalization: str | Sequence[str] = NORMALIZATIONS,
    names: Sequence[str] | None = None,
    overwrite: bool = False,
    data_range: float | None = None,
    pixel_size: float | None = None,
    frc_threshold: str | float = "1/7",
) -> dict[str, Any]:
    """Score a prediction (and the input) against the ground truth and write a report.

    Parameters
    ----------
    pred, gt, input
        Prediction, ground truth and (optionally) the raw input it was restored from: arrays
        or image files read with `debcr.data.load` (TIFF, PNG, NPY, Zarr, ...). Each is
        a 2-D image or an ``(N, H, W)`` stack of images (length-1 axes are dropped); all must
        have the same shape. Each image (slice) is scored separately.
    out_dir
        Folder for ``metrics.csv``, ``summary.md``, ``frc.png`` and ``comparison.png``
        (created if missing). None computes the numbers without writing files.
    normalization
        Conventions to report, one or several of ``"minmax"``, ``"affine"``, ``"raw"`` (see
        `debcr.metrics.normalize_pair`). Images are normalised one by one.
    names
        One name per image for the CSV; default ``<gt file stem>_0000, ...`` (``image_0000``
        for arrays), or just the stem for a single 2-D image.
    overwrite
        Replace an existing report; without it an existing report file raises
        FileExistsError before anything is computed.
    data_range
        Peak value of the ``"raw"`` convention; default ``max(gt) - min(gt)`` over the whole
        GT (one range for all images of a stack).
    pixel_size
        Physical pixel size, to report FRC resolutions in physical units instead of pixels.
    frc_threshold
        ``"1/7"``, ``"half-bit"`` or a number in (0, 1) (see `debcr.metrics.frc`).

    Returns
    -------
    dict
        ``n_images``, ``names``, ``normalizations``, ``sources`` (``prediction``, and
        ``input`` if given), ``data_range`` (of ``"raw"``, else None), ``frc_threshold``,
        ``pixel_size``; ``gt_entropy`` (``{"mean", "std", "n"}``); ``summary``
        (``summary[normalization][source][metric] -> {"mean", "std", "n"}`` for the metrics
        ``psnr``, ``ssim``, ``nrmse``, ``frc_resolution``); ``by_density``
        (``{"sparse" | "dense": {"n_images", "summary"}}``, split at GT entropy 5 bits);
        ``rows`` (the CSV rows as dicts); ``files`` (key -> Path of each written file, empty
        without ``out_dir``). Undefined values are NaN (``nan`` in the CSV) and left out of
        means and counts: the FRC resolution of an image whose FRC never falls below the
        threshold (finer than 2 pixels) or of a constant image, and the NRMSE against a
        constant GT. PSNR of a perfect image is inf (its mean is then inf).

    Raises
    ------
    DataError
        Shapes that differ (the message names both), non-finite values, unreadable files, an
        unknown convention, wrong number of names, or an output that would replace an input.
    FileExistsError
        A report file exists and ``overwrite`` is False.

    Examples
    --------
    >>> report = evaluate("restored.tif", "gt.tif", "raw.tif", "report/")  # doctest: +SKIP
    >>> report["summary"]["minmax"]["prediction"]["psnr"]["mean"]  # doctest: +SKIP
    """
    normalizations = _normalizations(normalization)
    targets = _plan_outputs(pred, gt, input, out_dir, overwrite, frc_threshold, pixel_size)
    gt_arr, gt_shape, stacks, paths = _read_images(pred, gt, input)
    image_names = _names(names, gt_arr.shape[0], paths["gt"], len(gt_shape) == 3)
    raw_range = _raw_range(gt_arr, data_range) if "raw" in normalizations else None

    log.info("evaluating %d image(s) under %s", len(image_names), ", ".join(normalizations))
    rows, curves, entropies = _score(
        stacks, gt_arr, image_names, normalizations, raw_range, frc_threshold, pixel_size
    )
    report = _report(
        rows,
        entropies,
        image_names,
        normalizations,
        tuple(stacks),
        data_range=raw_range,
        frc_threshold=frc_threshold,
        pixel_size=pixel_size,
    )
    if not targets:
        return report

    _write_report(targets, report, stacks, gt_arr, curves, paths, overwrite)
    report["files"] = dict(targets)
    log.info("wrote the evaluation report to %s", Path(out_dir))
    return report
