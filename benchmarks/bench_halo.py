"""How much halo do tiles need? Seam error versus halo, against each precision's own error.

Command (from the repository root)::

    .venv/bin/python benchmarks/bench_halo.py --out benchmarks/results/halo.md

For each published model and a real image it suits, the whole image is restored as one tile
(float32, PyTorch backend, exact receptive-field halo for the border) — the reference. Then:

* **precision error**: the same whole-image restoration in bfloat16, compared with the float32
  reference: max |Δ| and mean |Δ| in normalised units (the network's units). float16 is not
  measured: CPUs emulate it slowly, and it keeps the exact float32 halo;
* **seam error per halo**: the image restored in float32 with small tiles (128² cores, so the
  image has many seams) and a halo of 0–88 px, compared with the same reference.

A halo is "below the precision's error" when its seam max |Δ| is below that precision's own
max |Δ| on every image: a tiled bf16 result is then as close to the float32 whole-image result
as an untiled bf16 one. The table also lists which halo the receptive-field rule
(:func:`debcr.nn.effective_halo`) gives at each influence tolerance, which is how
:data:`debcr.nn.receptive.HALO_TOLERANCES` maps a precision to a halo for any model.
PSNR against the FMD ground truth is reported for the FMD image (data_range 255).

``--images validation`` measures instead on images not used to set any default (FMD fields
3, 8 and 14, frame 0 — never the test field 19; stardist; cells3d planes 10 and 50; the
flowdec neuron's planes 10 and 40), adds the error of OpenVINO's bfloat16 (the CPU default
where bfloat16 is native) to the precision rows and chooses a halo **per model**: the
smallest whose seam error is below that model's smallest bfloat16 error (over its images and
both backends) on every one of its images. With 4 px of margin, never more than the
receptive-field rule's halo, those choices are the built-in models' stored ``halo_bfloat16``
(``debcr.weights.MEASURED_HALOS``)::

    .venv/bin/python benchmarks/bench_halo.py --images validation \
        --out benchmarks/results/halo_validation.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile

from _common import (
    FMD,
    FMD_FIELD19_GT,
    FMD_FIELD19_RAW,
    SHARED,
    STARDIST_IMG,
    command_line,
    log,
    machine_line,
    publish,
    read_png,
    table,
)

HALOS = (0, 8, 16, 24, 32, 40, 44, 48, 52, 56, 64, 72, 88)
TOLERANCES = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2)
TILE = 128


def _fmd_frame0(field: int) -> np.ndarray:
    return read_png(FMD / "raw" / str(field) / "HV110_P0500510000.png")


def _images(which: str) -> list[tuple[str, str, np.ndarray]]:
    nuclei = tifffile.imread(SHARED / "data" / "cells3d_nuclei" / "nuclei.tif")
    neuron = tifffile.imread(SHARED / "data" / "flowdec" / "neuron-25pct_data.tif")
    if which == "validation":
        return [
            *(("2D_denoising", f"FMD field {f}, frame 0", _fmd_frame0(f)) for f in (3, 8, 14)),
            ("2D_denoising", "stardist img2d (512²)", tifffile.imread(STARDIST_IMG)),
            *(("3D_denoising", f"cells3d nuclei, z {z}", nuclei[z]) for z in (10, 50)),
            *(("confocal_SR", f"flowdec neuron, z {z}", neuron[z]) for z in (10, 40)),
            *(("bright_SR", f"flowdec neuron, z {z}", neuron[z]) for z in (10, 40)),
        ]
    return [
        ("2D_denoising", "FMD field 19, frame 0 (512²)", read_png(FMD_FIELD19_RAW[0])),
        ("2D_denoising", "stardist img2d (512²)", tifffile.imread(STARDIST_IMG)),
        ("3D_denoising", "cells3d nuclei, z 30 (256²)", nuclei[30]),
        ("confocal_SR", "flowdec neuron, z 25", neuron[neuron.shape[0] // 2]),
        ("bright_SR", "flowdec neuron, z 25", neuron[neuron.shape[0] // 2]),
    ]


def _restore(model, image, **kw) -> np.ndarray:
    from debcr.model import predict

    return predict(model, image, units="normalized", progress=False, **kw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the report here")
    parser.add_argument(
        "--images",
        choices=("published", "validation"),
        default="published",
        help="the images of results/halo.md, or validation images and a choice per model",
    )
    args = parser.parse_args()
    validation = args.images == "validation"
    lows = [("bfloat16", "torch")] + ([("bfloat16", "openvino")] if validation else [])

    from skimage.metrics import peak_signal_noise_ratio

    from debcr.data.normalize import compute_stats
    from debcr.defaults import HALO_TOLERANCES
    from debcr.model import init
    from debcr.nn import effective_halo

    gt = read_png(FMD_FIELD19_GT).astype(np.float64)
    rows_err, rows_seam, rows_tol = [], [], []
    worst_seam = {h: 0.0 for h in HALOS}
    worst_precision = {"bfloat16": np.inf}
    # per model: its smallest PyTorch-bfloat16 error and its worst seam error per halo
    model_error: dict[str, float] = {}
    model_seam: dict[str, dict[int, float]] = {}
    fmd_whole = None
    for name, what, image in _images(args.images):
        log(f"{name} on {what}")
        model = init(name)
        side = max(image.shape)
        exact = effective_halo(model)
        ref = _restore(model, image, precision="float32", backend="torch", tile_size=side)
        stats = compute_stats(image)
        for precision, backend in lows:
            low = _restore(
                model, image, precision=precision, backend=backend, tile_size=side, halo=exact
            )
            diff = np.abs(low - ref)
            model_error[name] = min(model_error.get(name, np.inf), float(diff.max()))
            if backend == "torch":
                worst_precision[precision] = min(worst_precision[precision], float(diff.max()))
            rows_err.append(
                [name, what, f"{precision} ({backend})", f"{diff.max():.2e}", f"{diff.mean():.2e}"]
            )
        seams = []
        for halo in HALOS:
            tiled = _restore(
                model, image, precision="float32", backend="torch", tile_size=TILE, halo=halo
            )
            diff = float(np.abs(tiled - ref).max())
            worst_seam[halo] = max(worst_seam[halo], diff)
            per_model = model_seam.setdefault(name, {})
            per_model[halo] = max(per_model.get(halo, 0.0), diff)
            cell = f"{diff:.1e}"
            if "FMD" in what and "19" in what:
                raw = tiled * (stats.hi - stats.lo + stats.eps) + stats.lo
                cell += f" ({peak_signal_noise_ratio(gt, raw, data_range=255):.3f} dB)"
            seams.append(cell)
        rows_seam.append([name, what, *seams])
        rows_tol.append([name, *(effective_halo(model, t) for t in TOLERANCES)])
        if "FMD" in what and "19" in what:
            raw = ref * (stats.hi - stats.lo + stats.eps) + stats.lo
            fmd_whole = peak_signal_noise_ratio(gt, raw, data_range=255)

    chosen = {
        p: min((h for h in HALOS if worst_seam[h] < err), default=max(HALOS))
        for p, err in worst_precision.items()
    }
    per_model = [
        [
            name,
            f"{model_error[name]:.2e}",
            min((h for h in HALOS if seam[h] < model_error[name]), default=max(HALOS)),
            effective_halo(init(name), HALO_TOLERANCES["bfloat16"]),
        ]
        for name, seam in (model_seam.items() if validation else ())
    ]
    seam_title = f"## Seam error: tiles of {TILE}² in float32, max |Δ| vs the whole image, per halo"
    if fmd_whole is not None:
        seam_title += f" (FMD: PSNR vs avg50 GT in brackets; whole image {fmd_whole:.3f} dB)"
    sections = [
        "# Halo versus seam error (bench_halo.py)",
        f"Command: `{command_line('bench_halo.py')}`  \n{machine_line()}",
        "## Precision's own error (whole image, vs float32; normalised units)",
        table(["model", "image", "precision (backend)", "max |Δ|", "mean |Δ|"], rows_err),
        seam_title,
        table(["model", "image", *(f"halo {h}" for h in HALOS)], rows_seam),
        "## Halo from the receptive-field rule at each influence tolerance",
        table(["model", *(f"tol {t:g}" for t in TOLERANCES)], rows_tol),
        "## Smallest halo with seam error below the precision's error on every image",
        table(
            ["precision", "smallest precision max |Δ|", "halo"],
            [[p, f"{worst_precision[p]:.2e}", chosen[p]] for p in chosen],
        ),
    ]
    if validation:
        sections += [
            "## Per model: smallest halo with seam error below its own smallest bfloat16 "
            "error (PyTorch or OpenVINO) on every one of its images",
            table(
                ["model", "smallest bf16 max |Δ|", "halo", "the rule's halo (tol 5e-4)"],
                per_model,
            ),
        ]
    report = "\n\n".join(sections)
    publish(report, args.out, args.out is not None)


if __name__ == "__main__":
    main()
