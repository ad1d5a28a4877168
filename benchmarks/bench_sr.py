"""Simulated resolution enhancement (deconvolution): m-rBCR against Richardson–Lucy and CARE.

Command (from the repository root; CPU, ≈25–35 min on a 2-core machine at the defaults)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sr.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sr.py --steps 8 --frames 2 --no-save

No real low/high-resolution pairs are available here, so the degraded images are simulated from
real high-SNR images with a measured PSF and the FMD noise calibration.

What it does
------------
1. Ground truth: FMD *Confocal_BPAE_B* ``gt/<field>/avg50.png`` (mean of 50 frames, 512² uint8);
   train = fields 1–18, val = field 20, test = field 19. Out-of-domain test: the ``--cells3d``
   (default 5) central z-slices of skimage's ``cells3d`` nuclei (256², uint16), mapped linearly
   to FMD-like DN: ``3.7 + 70·(x − p0.1)/(p95 − p0.1)`` clipped at 0, with the 0.1th and 95th
   percentiles of those slices (FMD nuclei: 95th percentile ≈ 71 DN, offset 3.7 DN).
2. PSF: the in-focus plane of a measured bead PSF. Default ``--psf llsm``: the lattice
   light-sheet bead of pycudadecon (0.101 µm pixels), plane of the brightest voxel, background
   (median of the 10-px border) subtracted, clipped at 0, cropped to ``--psf-radius`` (10 px:
   ~89 % of the energy within 30 px; farther out the plane is mostly camera noise, which
   clipping would turn into a spurious flat halo), normalised to sum 1. Its FWHM, ≈3.1 px, is
   printed. ``--psf widefield`` takes the flowdec/EPFL widefield bead kernel instead, whose
   in-focus plane is only ≈1.4 px wide (too narrow to matter); ``--psf-zoom`` rescales the PSF
   bilinearly (e.g. to a coarser assumed pixel size). Blurring: ``scipy.signal.fftconvolve``
   (mode "same") on the image reflect-padded by the PSF radius, so borders stay bright.
3. Noise: FMD-calibrated Poisson–Gaussian, photons = clip(blurred − 3.7, 0)/4.1,
   noisy = 4.1·Poisson(photons) + 3.7 (+ N(0, ``--read-noise``²), default 0: the FMD
   calibration shows negligible read noise); float32, not quantised. Every image's noise comes
   from its own generator seeded with (``--noise-seed``, field, realisation), so the data do not
   depend on the order of generation. ``--train-noise`` (4) realisations per training field, 1
   for the validation field, ``--frames`` (5) for the test field 19, 1 per cells3d slice.
4. Sets: ``debcr.data.prepare`` (whole-image 0.1/99.9 percentile normalisation as in
   ``debcr.model.predict``, ``--patch``² patches without overlap, background filter 0.1),
   written to ``benchmarks/_work/bench_sr/``.
5. Methods, all on identical data: the degraded input; Richardson–Lucy with the true PSF
   (``_baselines.richardson_lucy`` on the image reflect-padded by 2× the PSF radius, then
   cropped, because scikit-image pads with zeros), iterations chosen on field 20 by raw PSNR
   from ``--rl-grid`` (1–160; at this noise level the optimum is a few iterations);
   ``confocal_SR`` and ``bright_SR`` zero-shot; m-rBCR from scratch and fine-tuned from
   ``confocal_SR`` (``debcr.model.train``: ``--steps`` 300, ``--batch`` 8, ``--patch`` 64,
   validation on 64 patches every 50 steps, seed 0, no early stopping, best model by validation
   loss, as ``bench_fmd.py``); the CARE U-Net of ``_baselines.py`` on the same batches and
   steps. Prediction with ``debcr.model.predict`` defaults (whole-image percentiles,
   ``units="calibrated"``).
6. Metrics per test image against its GT (GT units): ``debcr.metrics.psnr`` / ``ssim`` in the
   conventions raw (data_range 255), minmax and affine, and the FRC resolution
   ``debcr.metrics.frc(pred, gt).resolution`` (1/7 threshold, pixels; None = the curve never
   drops below the threshold up to Nyquist, shown as ≤ 2 px). Mean ± std over the test images,
   separately for FMD field 19 and for cells3d; training wall time; prediction Mpx/s.
   The report goes to ``benchmarks/results/sr_simulated.md`` unless ``--no-save``.

``--reuse`` picks up finished method results with the same settings from the work folder.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from scipy.signal import fftconvolve

from _common import (
    FMD,
    HERE,
    SHARED,
    WORK,
    command_line,
    log,
    machine_line,
    publish,
    read_png,
    table,
)
from bench_fmd import (
    mean_std,
    quiet_lightning,
    score,
    train_care_measured,
    train_one,
    val_subset,
)

RESULTS = HERE / "results" / "sr_simulated.md"
OUT = WORK / "bench_sr"
DATA = SHARED / "data"
PSF_FILES = {
    "llsm": DATA / "pycudadecon" / "psf.tif",
    "widefield": DATA / "flowdec" / "bead-25pct_kernel.tif",
}
CELLS3D = DATA / "cells3d_nuclei" / "nuclei.tif"
TRAIN_FIELDS = [str(i) for i in range(1, 19)]
VAL_FIELD = "20"
TEST_FIELD = "19"
#: FMD Confocal_BPAE_B noise calibration (shared/data/README.md): var ≈ 4.13·(mean − 3.7).
GAIN = 4.1
OFFSET = 3.7
#: cells3d is mapped so that its 95th percentile lies this many DN above the offset (FMD ≈ 71).
CELLS3D_P95_DN = 70.0
BACKGROUND_FILTER = 0.1
RAW_RANGE = 255.0
CONVENTIONS = ("raw", "minmax", "affine")
SHORTS = ("input", "rl", "confocal_SR", "bright_SR", "scratch", "finetune", "care")
METHODS = (
    "degraded input",
    "Richardson–Lucy (true PSF)",
    "confocal_SR zero-shot",
    "bright_SR zero-shot",
    "m-rBCR from scratch",
    "m-rBCR fine-tuned from confocal_SR",
    "CARE U-Net (scratch)",
)
TEST_SETS = ("fmd19", "cells3d")


# --------------------------------------------------------------------------------------------
# PSF
# --------------------------------------------------------------------------------------------


def _half_width(profile: np.ndarray) -> float:
    """FWHM (px) of a 1-D profile around its maximum, by linear interpolation at half max."""
    p = np.asarray(profile, np.float64)
    i = int(p.argmax())
    half = p[i] / 2
    left = i
    while left > 0 and p[left] > half:
        left -= 1
    right = i
    while right < p.size - 1 and p[right] > half:
        right += 1
    x_left = left + (half - p[left]) / (p[left + 1] - p[left])
    x_right = right - 1 + (p[right - 1] - half) / (p[right - 1] - p[right])
    return float(x_right - x_left)


def fwhm(psf: np.ndarray) -> tuple[float, float]:
    """FWHM (px) along y and x through the peak of a 2-D PSF."""
    y, x = np.unravel_index(int(psf.argmax()), psf.shape)
    return _half_width(psf[:, x]), _half_width(psf[y])


def load_psf(source: str, radius: int, zoom: float) -> tuple[np.ndarray, dict]:
    """The 2-D PSF used for blurring (sum 1, odd square) and a description of it."""
    import tifffile

    volume = tifffile.imread(PSF_FILES[source]).astype(np.float64)
    z, _, _ = np.unravel_index(int(volume.argmax()), volume.shape)
    plane = volume[z]
    border = np.ones(plane.shape, bool)
    border[10:-10, 10:-10] = False
    # The border median is the camera offset plus background of the measured bead image.
    background = float(np.median(plane[border]))
    plane = np.clip(plane - background, 0.0, None)
    if zoom != 1.0:
        plane = np.clip(ndimage.zoom(plane, zoom, order=1), 0.0, None)
    y, x = np.unravel_index(int(plane.argmax()), plane.shape)
    r = min(radius, y, x, plane.shape[0] - 1 - y, plane.shape[1] - 1 - x)
    psf = plane[y - r : y + r + 1, x - r : x + r + 1]
    psf = (psf / psf.sum()).astype(np.float64)
    fy, fx = fwhm(psf)
    info = {
        "source": str(PSF_FILES[source].relative_to(SHARED.parent)),
        "plane": int(z),
        "planes": int(volume.shape[0]),
        "background": background,
        "zoom": zoom,
        "size": psf.shape[0],
        "fwhm_y": fy,
        "fwhm_x": fx,
        "fwhm": (fy + fx) / 2,
    }
    return psf, info


def blur(image: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """PSF convolution with reflected borders (zero padding would darken the image edges)."""
    r = psf.shape[0] // 2
    padded = np.pad(np.asarray(image, np.float64), r, mode="reflect")
    return fftconvolve(padded, psf, mode="same")[r:-r, r:-r]


def add_noise(blurred: np.ndarray, rng: np.random.Generator, read_noise: float) -> np.ndarray:
    """FMD-calibrated Poisson–Gaussian noise on a noise-free image in DN."""
    photons = np.clip(blurred - OFFSET, 0.0, None) / GAIN
    noisy = GAIN * rng.poisson(photons) + OFFSET
    if read_noise > 0:
        noisy = noisy + rng.normal(0.0, read_noise, blurred.shape)
    return noisy.astype(np.float32)


def rng_for(seed: int, group: str, realisation: int) -> np.random.Generator:
    # One generator per image, keyed by its identity, so data don't depend on generation order.
    key = sum(ord(c) << (8 * i) for i, c in enumerate(group))
    return np.random.default_rng([seed, key, realisation])


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def fmd_gt(field: str) -> np.ndarray:
    return read_png(FMD / "gt" / field / "avg50.png").astype(np.float32)


def cells3d_gt(count: int) -> tuple[list[np.ndarray], dict]:
    """``count`` central z-slices of cells3d nuclei mapped to FMD-like DN."""
    import tifffile

    volume = tifffile.imread(CELLS3D).astype(np.float64)
    start = (volume.shape[0] - count) // 2
    slices = volume[start : start + count]
    lo, p95 = (float(v) for v in np.percentile(slices, [0.1, 95]))
    scale = CELLS3D_P95_DN / (p95 - lo)
    gts = [np.clip(OFFSET + (s - lo) * scale, 0.0, None).astype(np.float32) for s in slices]
    info = {
        "z": list(range(start, start + count)),
        "p0.1": lo,
        "p95": p95,
        "scale": scale,
        "max_dn": float(max(g.max() for g in gts)),
    }
    return gts, info


def degraded(
    gt: np.ndarray, psf: np.ndarray, n: int, seed: int, group: str, read_noise: float
) -> np.ndarray:
    """``n`` independent noisy realisations of the blurred ``gt``, stacked (n, H, W)."""
    b = blur(gt, psf)
    return np.stack([add_noise(b, rng_for(seed, group, r), read_noise) for r in range(n)])


def prepare_sets(psf: np.ndarray, args: argparse.Namespace) -> tuple[dict[str, Path], dict]:
    """Simulate the FMD fields and write sr_{train,val,test}.npz with ``debcr.data.prepare``."""
    from debcr.data import prepare

    t0 = time.perf_counter()
    count = {f: args.train_noise for f in TRAIN_FIELDS} | {VAL_FIELD: 1, TEST_FIELD: args.frames}
    pairs = [
        (degraded(fmd_gt(f), psf, n, args.noise_seed, f, args.read_noise), fmd_gt(f), f)
        for f, n in count.items()
    ]
    result = prepare(
        pairs,
        name="sr",
        out_dir=OUT / f"data_{settings_key(args, data_only=True)}",
        patch_size=args.patch,
        split={"train": TRAIN_FIELDS, "val": [VAL_FIELD], "test": [TEST_FIELD]},
        background_filter=BACKGROUND_FILTER,
        overwrite=True,
    )
    info = {
        "patches": dict(result.patches),
        "images": dict(result.images),
        "dropped": result.dropped,
        "seconds": time.perf_counter() - t0,
    }
    return dict(result.paths), info


def test_sets(
    psf: np.ndarray, args: argparse.Namespace
) -> tuple[dict[str, list[tuple[np.ndarray, np.ndarray]]], dict]:
    """(degraded, gt) pairs of the two test sets: FMD field 19 and cells3d slices."""
    gt19 = fmd_gt(TEST_FIELD)
    fmd = [
        (noisy, gt19)
        for noisy in degraded(gt19, psf, args.frames, args.noise_seed, TEST_FIELD, args.read_noise)
    ]
    gts, info = cells3d_gt(args.cells3d)
    cells = [
        (degraded(g, psf, 1, args.noise_seed, f"cells3d-{z}", args.read_noise)[0], g)
        for z, g in zip(info["z"], gts)
    ]
    return {"fmd19": fmd, "cells3d": cells}, info


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------


def rl_padded(image: np.ndarray, psf: np.ndarray, iterations: int) -> np.ndarray:
    """Richardson–Lucy on the reflect-padded image (scikit-image pads with zeros), cropped."""
    from _baselines import richardson_lucy

    pad = 2 * (psf.shape[0] // 2)
    out = richardson_lucy(np.pad(image, pad, mode="reflect"), psf, iterations)
    return out[pad:-pad, pad:-pad]


def tune_rl(psf: np.ndarray, args: argparse.Namespace) -> tuple[int, list[tuple[int, float]]]:
    """Iterations with the best raw PSNR on the validation field 20 (one noise realisation)."""
    from debcr import metrics

    gt = fmd_gt(VAL_FIELD)
    noisy = degraded(gt, psf, 1, args.noise_seed, VAL_FIELD, args.read_noise)[0]
    grid = []
    for n in args.rl_grid:
        p = metrics.psnr(rl_padded(noisy, psf, n), gt, normalization="raw", data_range=RAW_RANGE)
        grid.append((n, p))
        log(f"  RL {n} iterations on field {VAL_FIELD}: PSNR raw {p:.2f} dB")
    return max(grid, key=lambda t: t[1])[0], grid


def restorer(
    short: str,
    psf: np.ndarray,
    data: dict[str, Path],
    val: dict[str, np.ndarray],
    args: argparse.Namespace,
    res: dict,
) -> Callable[[np.ndarray], np.ndarray]:
    """The function restoring one degraded image for method ``short`` (trained/tuned first)."""
    import debcr
    from _baselines import predict_care

    if short == "input":
        return lambda x: x.astype(np.float32)
    if short == "rl":
        log(f"tuning Richardson–Lucy iterations on field {VAL_FIELD}")
        n, grid = tune_rl(psf, args)
        res["rl"] = {"iterations": n, "grid": grid}
        log(f"  chose {n} iterations")
        return lambda x: rl_padded(x, psf, n)
    if short == "care":
        model, res["train"] = train_care_measured(data, val, args)
        return lambda x: predict_care(model, x)
    if short in ("confocal_SR", "bright_SR"):
        model = debcr.model.init(short)
    else:
        init = "confocal_SR" if short == "finetune" else None
        model, res["train"] = train_one(f"sr_{short}", init, data, val, args, out=OUT)
    return lambda x: debcr.model.predict(model, x, progress=False)


def frc_resolution(pred: np.ndarray, gt: np.ndarray) -> float | None:
    from debcr import metrics

    return metrics.frc(pred, gt).resolution


def evaluate(
    restore: Callable[[np.ndarray], np.ndarray],
    sets: dict[str, list[tuple[np.ndarray, np.ndarray]]],
    label: str,
) -> dict:
    """Restore and score every test image; per set: per-image scores, seconds, pixels."""
    out = {}
    for name, pairs in sets.items():
        per_image, seconds, pixels = [], 0.0, 0
        for low, gt in pairs:
            t0 = time.perf_counter()
            pred = restore(low)
            seconds += time.perf_counter() - t0
            pixels += low.size
            if pred.shape != gt.shape or not np.isfinite(pred).all():
                raise RuntimeError(f"{label} returned shape {pred.shape} / non-finite values")
            scores = score(pred, gt)
            scores["frc"] = frc_resolution(pred, gt)
            per_image.append(scores)
        out[name] = {"per_image": per_image, "predict_s": seconds, "pixels": pixels}
        pf = per_image
        log(
            f"  {label} on {name}: PSNR raw {statistics.fmean(f['psnr_raw'] for f in pf):.2f} "
            f"dB, SSIM raw {statistics.fmean(f['ssim_raw'] for f in pf):.4f}, "
            f"FRC {fmt_frc([f['frc'] for f in pf])}, {seconds:.1f} s"
        )
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def fmt_frc(values: list[float | None]) -> str:
    """Mean ± std in px; None (no crossing up to Nyquist) counts as 2 px and makes it a bound."""
    if all(v is None for v in values):
        return "≤ 2 px (all)"
    filled = [2.0 if v is None else v for v in values]
    text = mean_std(filled, 2) + " px"
    n_none = sum(v is None for v in values)
    return f"≤ {text} ({n_none}/{len(values)} ≤ 2 px)" if n_none else text


def settings_key(args: argparse.Namespace, data_only: bool = False) -> str:
    keys = ["psf", "psf_zoom", "psf_radius", "read_noise", "noise_seed", "train_noise", "patch"]
    keys += ["frames", "cells3d"]
    if not data_only:
        keys += ["steps", "batch", "lr", "val_freq", "val_patches", "seed", "rl_grid"]
    blob = json.dumps({k: getattr(args, k) for k in keys}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def quality_table(results: dict[str, dict], test_set: str) -> str:
    headers = ["method"]
    headers += [f"{m} {c}" for m in ("PSNR", "SSIM") for c in CONVENTIONS] + ["FRC resolution"]
    rows = []
    for method in METHODS:
        if method not in results:
            continue
        pf = results[method]["eval"][test_set]["per_image"]
        cells = [method]
        for metric, digits in (("psnr", 2), ("ssim", 4)):
            cells += [mean_std([f[f"{metric}_{c}"] for f in pf], digits) for c in CONVENTIONS]
        cells.append(fmt_frc([f["frc"] for f in pf]))
        rows.append(cells)
    return table(headers, rows)


def cost_table(results: dict[str, dict], args: argparse.Namespace, params: dict) -> str:
    headers = [
        "method",
        "parameters",
        "training wall time",
        "s/step",
        "best val loss (step)",
        "other CPU load in training",
        "predict Mpx/s (FMD 512²)",
        "predict Mpx/s (cells3d 256²)",
    ]
    rows = []
    for method, short in zip(METHODS, SHORTS):
        if method not in results:
            continue
        res = results[method]
        tr = res.get("train")
        if short == "rl":
            param = f"{res['rl']['iterations']} iterations (tuned on field {VAL_FIELD})"
        else:
            param = params.get(short, "—")
        speed = []
        for name in TEST_SETS:
            ev = res["eval"][name]
            speed.append("—" if short == "input" else f"{ev['pixels'] / 1e6 / ev['predict_s']:.3f}")
        rows.append(
            [
                method,
                param,
                f"{tr['wall_s'] / 60:.1f} min ({tr['steps']} steps)" if tr else "—",
                f"{tr['wall_s'] / max(1, tr['steps']):.2f}" if tr else "—",
                f"{tr['best_val_loss']:.4f} ({tr['best_step']})" if tr else "—",
                tr["other_load"] if tr else "—",
                *speed,
            ]
        )
    return table(headers, rows)


def sanity(psf: np.ndarray, args: argparse.Namespace) -> dict:
    """Reference numbers on field 19 that isolate the blur, the noise and the GT itself."""
    from debcr import metrics

    gt = fmd_gt(TEST_FIELD)
    b = blur(gt, psf)
    noise_only = add_noise(gt.astype(np.float64), rng_for(args.noise_seed, "noise-only", 0), 0.0)
    noisy = degraded(gt, psf, 1, args.noise_seed, TEST_FIELD, args.read_noise)[0]
    # What units="calibrated" would make of a perfect restoration: the GT fitted by least
    # squares to the degraded input (the calibration target of debcr.model.predict).
    slope, intercept = np.polyfit(gt.ravel(), noisy.ravel(), 1)
    ideal = slope * gt + intercept

    def raw(x: np.ndarray) -> float:
        return metrics.psnr(x, gt, normalization="raw", data_range=RAW_RANGE)

    return {
        "gt_single_frc": metrics.frc(gt).resolution,
        "blur_only_frc": metrics.frc(b, gt).resolution,
        "blur_only_psnr": raw(b),
        "noise_only_frc": metrics.frc(noise_only, gt).resolution,
        "noise_only_psnr": raw(noise_only),
        "calib_slope": float(slope),
        "calib_intercept": float(intercept),
        "calib_ideal_psnr": raw(ideal),
    }


def px(value: float | None) -> str:
    return "≤ 2 px (no crossing)" if value is None else f"{value:.2f} px"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (300)")
    parser.add_argument("--batch", type=int, default=8, help="patches per batch (default 8)")
    parser.add_argument("--patch", type=int, default=64, help="patch side in px (default 64)")
    parser.add_argument("--lr", type=float, default=1e-3, help="m-rBCR Adam learning rate")
    parser.add_argument("--val-freq", type=int, default=50, help="steps between validations")
    parser.add_argument("--val-patches", type=int, default=64, help="validation patches used")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--frames", type=int, default=5, help="noise realisations of field 19")
    parser.add_argument("--cells3d", type=int, default=5, help="central cells3d z-slices (5)")
    parser.add_argument(
        "--train-noise", type=int, default=4, help="noise realisations per training field (4)"
    )
    parser.add_argument("--psf", choices=sorted(PSF_FILES), default="llsm", help="PSF source")
    parser.add_argument("--psf-radius", type=int, default=10, help="PSF crop radius in px (10)")
    parser.add_argument(
        "--psf-zoom", type=float, default=1.0, help="bilinear PSF rescale factor (1 = measured)"
    )
    parser.add_argument("--read-noise", type=float, default=0.0, help="Gaussian read noise, DN")
    parser.add_argument("--noise-seed", type=int, default=2024, help="seed of the simulation")
    parser.add_argument(
        "--rl-grid",
        type=lambda s: [int(v) for v in s.split(",")],
        default=[1, 2, 3, 5, 10, 20, 40, 80, 160],
        help="Richardson–Lucy iterations tried on field 20 (default 1,2,3,5,10,20,40,80,160)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(SHORTS),
        help=f"comma-separated subset of {','.join(SHORTS)} (default: all)",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="reuse finished method results with the same settings"
    )
    parser.add_argument("--no-save", action="store_true", help=f"don't write {RESULTS.name}")
    args = parser.parse_args()
    args.val_freq = min(args.val_freq, args.steps)
    chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
    method_of = dict(zip(SHORTS, METHODS, strict=True))
    if unknown := [m for m in chosen if m not in method_of]:
        parser.error(f"unknown --methods {unknown}; choose from {list(method_of)}")
    quiet_lightning()

    from debcr.nn import MRBCR, CAREUNet, count_parameters

    started = datetime.datetime.now().astimezone()
    machine = machine_line()
    print(f"Machine: {machine}")
    print(
        f"torch threads {torch.get_num_threads()}; OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', '(unset)')}"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()

    psf, psf_info = load_psf(args.psf, args.psf_radius, args.psf_zoom)
    other = "widefield" if args.psf == "llsm" else "llsm"
    other_fwhm = load_psf(other, args.psf_radius, 1.0)[1]["fwhm"]
    log(
        f"PSF {psf_info['source']} plane {psf_info['plane']}/{psf_info['planes']}, "
        f"{psf_info['size']}² px, FWHM y {psf_info['fwhm_y']:.2f} px, x {psf_info['fwhm_x']:.2f} "
        f"px (mean {psf_info['fwhm']:.2f} px); in-focus FWHM of the {other} PSF: "
        f"{other_fwhm:.2f} px"
    )
    data, data_info = prepare_sets(psf, args)
    log(
        f"prepared simulated sets in {data_info['seconds']:.0f} s: patches "
        f"{data_info['patches']}, images {data_info['images']}, dropped {data_info['dropped']}"
    )
    val = val_subset(data["val"], args.val_patches)
    sets, cells_info = test_sets(psf, args)
    checks = sanity(psf, args)
    log(f"sanity: {checks}")

    n_mrbcr = count_parameters(MRBCR())
    params = {s: f"{n_mrbcr:,}" for s in ("confocal_SR", "bright_SR", "scratch", "finetune")}
    params["care"] = f"{count_parameters(CAREUNet()):,}"

    key = settings_key(args)
    results: dict[str, dict] = {}
    for short in SHORTS:
        if short not in chosen:
            continue
        method = method_of[short]
        cache = OUT / f"result_{short}_{key}.json"
        if args.reuse and cache.exists():
            results[method] = json.loads(cache.read_text())
            log(f"reused {cache.name} for '{method}'")
            continue
        res: dict = {}
        res["eval"] = evaluate(restorer(short, psf, data, val, args, res), sets, method)
        cache.write_text(json.dumps(res))
        results[method] = res

    total = time.perf_counter() - t_all
    load1 = os.getloadavg()
    rl = next((r["rl"] for r in results.values() if "rl" in r), None)
    rl_line = "; ".join(f"{n}: {p:.2f} dB" for n, p in rl["grid"]) if rl is not None else "not run"
    command = command_line("bench_sr.py")
    zoom = f", rescaled ×{args.psf_zoom:g} (bilinear)" if args.psf_zoom != 1.0 else ""
    psf_text = (
        f"`{psf_info['source']}` (measured bead), in-focus plane z = {psf_info['plane']} of "
        f"{psf_info['planes']}{zoom}, border median ({psf_info['background']:.0f}) subtracted, "
        f"clipped ≥ 0, cropped to {psf_info['size']}×{psf_info['size']} px, sum 1; FWHM "
        f"{psf_info['fwhm']:.2f} px (y {psf_info['fwhm_y']:.2f}, x {psf_info['fwhm_x']:.2f}); "
        f"for comparison the in-focus plane of the {other} PSF has FWHM {other_fwhm:.2f} px. "
        "Blur: fftconvolve 'same' on the image reflect-padded by the PSF radius"
    )
    noise_text = (
        f"Poisson–Gaussian with the FMD calibration: photons = clip(blurred − {OFFSET}, 0) / "
        f"{GAIN}, noisy = {GAIN}·Poisson(photons) + {OFFSET}"
        + (f" + N(0, {args.read_noise:g}²)" if args.read_noise > 0 else ", no read noise")
        + f", float32 (not quantised); seeds ({args.noise_seed}, image id, realisation)"
    )
    data_text = (
        f"GT = FMD Confocal_BPAE_B gt/<field>/avg50.png; train fields 1–18 × {args.train_noise} "
        f"noise realisations ({data_info['patches'].get('train')} patches of {args.patch}² after "
        f"the background filter {BACKGROUND_FILTER}, {data_info['dropped']} dropped over all "
        f"sets), val field {VAL_FIELD} × 1 ({len(val['low'])} of "
        f"{data_info['patches'].get('val')} patches used, every {args.val_freq} steps), test "
        f"field {TEST_FIELD} × {args.frames} realisations (whole 512² images); out-of-domain test: "
        f"cells3d nuclei z = {cells_info['z'][0]}–{cells_info['z'][-1]} (256²), mapped "
        f"{OFFSET} + (x − {cells_info['p0.1']:.0f}) × {cells_info['scale']:.5f} DN (p0.1 → "
        f"{OFFSET} DN, p95 = {cells_info['p95']:.0f} → {OFFSET + CELLS3D_P95_DN:.1f} DN, max "
        f"{cells_info['max_dn']:.0f} DN), clipped ≥ 0, 1 realisation each"
    )
    train_text = (
        f"batch {args.batch}, {args.steps} steps, patch {args.patch}², seed {args.seed}, no "
        f"early stopping, best model by validation loss; m-rBCR: debcr.model.train, Adam lr "
        f"{args.lr:g}, loss 'reference', no augmentation, patch normalisation 'none'; CARE U-Net "
        "(depth 2, 32 filters, residual) on the same batches, MAE, Adam lr 4e-4 (_baselines.py); "
        "prediction: debcr.model.predict defaults (whole-image 0.1/99.9 percentiles, units "
        "'calibrated'), CARE through the same engine (halo 44); Richardson–Lucy: scikit-image on "
        "the image reflect-padded by 2× the PSF radius, with the true PSF, iterations by raw PSNR "
        f"on field {VAL_FIELD} ({rl_line})"
    )
    sanity_text = (
        f"single-image FRC of GT field {TEST_FIELD}: {px(checks['gt_single_frc'])} (measurable "
        f"down to 4 px); blur only (no noise) vs GT: FRC {px(checks['blur_only_frc'])}, PSNR raw "
        f"{checks['blur_only_psnr']:.2f} dB; noise only (no blur) vs GT: FRC "
        f"{px(checks['noise_only_frc'])}, PSNR raw {checks['noise_only_psnr']:.2f} dB. "
        f"units='calibrated' fits the output to the degraded input: for the GT itself that fit "
        f"is {checks['calib_slope']:.3f}·GT + {checks['calib_intercept']:.2f}, PSNR raw "
        f"{checks['calib_ideal_psnr']:.2f} dB — the ceiling of a perfect restoration under the "
        "raw convention with these units"
    )
    n19 = len(sets["fmd19"])
    nc = len(sets["cells3d"])
    report = (
        "# Simulated resolution enhancement (deconvolution): m-rBCR against Richardson–Lucy "
        "and CARE\n\n"
        f"* Command: `{command}`\n"
        f"* Date: {started:%Y-%m-%d %H:%M %Z} (total run time {total / 60:.1f} min)\n"
        f"* Machine: {machine}; torch threads {torch.get_num_threads()}; load average at end "
        f"{load1[0]:.2f}\n"
        f"* PSF: {psf_text}\n"
        f"* Noise: {noise_text}\n"
        f"* Data: {data_text}\n"
        f"* Training / methods: {train_text}\n"
        f"* Sanity (field {TEST_FIELD}): {sanity_text}\n\n"
        "PSNR in dB against the GT in DN (raw: data_range 255; minmax: per-image min-max; "
        "affine: CARE normalize_minmse); FRC resolution: debcr.metrics.frc(pred, gt), 1/7 "
        "threshold, in pixels (lower is better; ≤ 2 px = no crossing up to Nyquist, counted as "
        "2 px in the mean).\n\n"
        f"## FMD field {TEST_FIELD} (in domain): mean ± std over {n19} noise realisations\n\n"
        + quality_table(results, "fmd19")
        + f"\n\n## cells3d nuclei (out of domain): mean ± std over {nc} z-slices\n\n"
        + quality_table(results, "cells3d")
        + "\n\n## Training and prediction\n\n"
        + cost_table(results, args, params)
        + "\n"
    )
    publish(report, RESULTS, save=not args.no_save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
