"""Intensity units of ``debcr.model.predict``: the new default ``units="calibrated"`` against
``"affine"`` (the previous default) and ``"percentile"``, plus test-time augmentation.

Command (from the repository root; CPU, ≈25–40 min on a shared 2-core machine)::

    .venv/bin/python benchmarks/bench_calibration.py            # writes results/calibration.md
    .venv/bin/python benchmarks/bench_calibration.py --quick    # a few frames per block, prints

Every number comes from a call of ``debcr.model.predict`` with the units of its column (no
network output is cached and re-mapped; only the trained SR model of block C is cached, in
``benchmarks/_work/calib/``). Prediction options other than ``units``/``tta``/``uncertainty``
are the defaults. Definitions used throughout:

* *dark level*: median of the darkest 5 % of the 8×8 block means
  (``debcr.data.intensity.dark_level(block_means(x))``); its offset is given in % of the
  reference image's range (0.1th to 99.9th percentile of its pixels);
* *mean vs X*: ``100·(mean(result)/mean(X) − 1)`` %;
* PSNR: ``debcr.metrics.psnr`` (raw units) with the data range named in each block.

Blocks
------
A. FMD Confocal_BPAE_B field 19, the 50 raw frames, built-in ``2D_denoising``; PSNR against
   ``gt/19/avg50.png`` (data_range 255), mean and dark level against the input frame.
B. The bundled demo sample (``nuclei_noisy`` vs ``nuclei_clean``), ``2D_denoising``; PSNR with
   data_range = the clean image's max − min, as ``debcr.demo.run_demo`` computes it.
C. Simulated resolution enhancement from ``bench_sr.py`` (llsm PSF, FMD-calibrated noise,
   field 19 GT, 5 noise realisations): ``confocal_SR`` zero-shot and ``confocal_SR``
   fine-tuned for ``--sr-steps`` steps on bench_sr's training sets (``bench_sr.prepare_sets``
   and ``bench_fmd.train_one`` with bench_sr's defaults otherwise); metrics against the GT.
D. TTA on FMD field 19 frames 0–9: ``tta=False`` against ``uncertainty=True`` (which runs the
   8-transform TTA and also returns the std map; its restored image is the ``tta=True`` one,
   checked on frame 0); PSNR gain, time per frame, and the Pearson correlation between the
   std map and |restored − avg50|.
E. Volumes: cells3d nuclei (``2D_denoising``), flowdec neuron and bead (``3D_denoising``);
   dark-level offset and mean change against the input.

Timings are wall times (``time.perf_counter``) on a machine possibly shared with other work;
the other processes' CPU share during each block is reported beside it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from _common import FMD, HERE, SHARED, WORK, OtherLoad, log, read_png, table

RESULTS = HERE / "results" / "calibration.md"
CALIB_WORK = WORK / "calib"
DATA = SHARED / "data"
UNITS_A = ("affine", "calibrated", "percentile")
UNITS_B = ("affine", "calibrated", "percentile")
UNITS_C = ("percentile", "affine", "calibrated")
UNITS_E = ("affine", "calibrated")
VOLUMES = {
    "cells3d nuclei": (DATA / "cells3d_nuclei" / "nuclei.tif", "2D_denoising"),
    "flowdec neuron": (DATA / "flowdec" / "neuron-25pct_data.tif", "3D_denoising"),
    "flowdec bead": (DATA / "flowdec" / "bead-25pct_data.tif", "3D_denoising"),
}


# --------------------------------------------------------------------------------------------
# Measures
# --------------------------------------------------------------------------------------------


def dark(image: np.ndarray) -> float:
    """Dark level: median of the darkest 5 % of the 8×8 block means."""
    from debcr.data.intensity import block_means, dark_level

    return dark_level(block_means(np.asarray(image, np.float64)))


def value_range(image: np.ndarray) -> float:
    """The 0.1th to 99.9th percentile range of ``image``."""
    lo, hi = np.percentile(np.asarray(image, np.float64), [0.1, 99.9])
    return float(hi - lo)


def dark_offset(result: np.ndarray, ref: np.ndarray) -> float:
    """Dark level of ``result`` minus ``ref``'s, in % of ``ref``'s range."""
    return 100.0 * (dark(result) - dark(ref)) / value_range(ref)


def mean_change(result: np.ndarray, ref: np.ndarray) -> float:
    """``100·(mean(result)/mean(ref) − 1)`` %."""
    return 100.0 * (float(np.mean(result, dtype=np.float64)) / float(np.mean(ref)) - 1.0)


def psnr(pred: np.ndarray, gt: np.ndarray, data_range: float) -> float:
    from debcr import metrics

    return metrics.psnr(pred, gt, data_range=data_range)


def ms(values: Sequence[float], digits: int = 2, unit: str = "") -> str:
    """Mean ± std (sample std; 0 for one value)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}{unit}"


def signed(values: Sequence[float], digits: int = 2, unit: str = " %") -> str:
    """Signed mean ± std."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):+.{digits}f} ± {sd:.{digits}f}{unit}"


def fmd_frame(index: int) -> np.ndarray:
    return read_png(FMD / "raw" / "19" / f"HV110_P05005100{index:02d}.png")


def fmd_gt19() -> np.ndarray:
    return read_png(FMD / "gt" / "19" / "avg50.png").astype(np.float32)


def restore(model, image: np.ndarray, **kwargs):
    from debcr.model import predict

    return predict(model, image, progress=False, **kwargs)


# --------------------------------------------------------------------------------------------
# Blocks: each returns its Markdown section
# --------------------------------------------------------------------------------------------


def block_a(frames: list[int]) -> str:
    """FMD field 19, 2D_denoising, every units; metrics as rows, units as columns."""
    import debcr

    model = debcr.model.init("2D_denoising")
    gt = fmd_gt19()
    per: dict[str, dict[str, list[float]]] = {u: {} for u in ("input", *UNITS_A)}
    for i in frames:
        x = fmd_frame(i)
        outs = {"input": x.astype(np.float32)}
        outs |= {u: restore(model, x, units=u) for u in UNITS_A}
        for u, r in outs.items():
            rec = per[u]
            rec.setdefault("psnr", []).append(psnr(r, gt, 255.0))
            rec.setdefault("mean", []).append(mean_change(r, x))
            rec.setdefault("dark", []).append(dark_offset(r, x))
        log(
            f"A frame {i}: PSNR "
            + ", ".join(f"{u} {per[u]['psnr'][-1]:.2f}" for u in outs)
            + "; dark "
            + ", ".join(f"{u} {per[u]['dark'][-1]:+.2f} %" for u in UNITS_A)
        )
    first = [k for k, i in enumerate(frames) if i < 3]
    cols = list(per)
    rows = [
        [f"PSNR vs avg50 (dB), all {len(frames)} frames"] + [ms(per[u]["psnr"]) for u in cols],
        [f"PSNR vs avg50 (dB), frames {frames[first[0]]}–{frames[first[-1]]}"]
        + [ms([per[u]["psnr"][k] for k in first]) for u in cols],
        ["mean vs input (%)"] + [signed(per[u]["mean"]) for u in cols],
        ["dark level − input's (% of input range)"] + [signed(per[u]["dark"]) for u in cols],
    ]
    head = ["metric (mean ± std over frames)", "raw frame (input)"] + [
        f"units={u}" + (" (new default)" if u == "calibrated" else "") for u in UNITS_A
    ]
    return (
        f"## A. FMD Confocal_BPAE_B field 19, {len(frames)} raw frames, built-in 2D_denoising\n\n"
        "PSNR against gt/19/avg50.png, data_range 255; mean and dark level against each input "
        "frame.\n\n" + table(head, rows)
    )


def block_b() -> str:
    """The bundled demo sample, PSNR as debcr.demo computes it."""
    import debcr
    from debcr.samples import nuclei

    noisy, clean = nuclei()
    model = debcr.model.init("2D_denoising")
    data_range = float(clean.max() - clean.min())
    outs = {"input": noisy.astype(np.float32)}
    outs |= {u: restore(model, noisy, units=u) for u in UNITS_B}
    rows = [
        ["PSNR vs clean (dB)"] + [f"{psnr(r, clean, data_range):.2f}" for r in outs.values()],
        ["mean vs clean (%)"] + [f"{mean_change(r, clean):+.2f} %" for r in outs.values()],
        ["mean vs input (%)"] + [f"{mean_change(r, noisy):+.2f} %" for r in outs.values()],
        ["dark level − clean's (% of clean range)"]
        + [f"{dark_offset(r, clean):+.2f} %" for r in outs.values()],
    ]
    head = ["metric", "noisy input"] + [f"units={u}" for u in UNITS_B]
    log("B: " + ", ".join(f"{k} {psnr(r, clean, data_range):.2f} dB" for k, r in outs.items()))
    return (
        "## B. Bundled demo sample (nuclei_noisy vs nuclei_clean), built-in 2D_denoising\n\n"
        f"PSNR data_range = clean max − min = {data_range:.1f} (as `debcr.demo.run_demo`); "
        f"means: clean {clean.mean():.2f}, noisy input {noisy.mean():.2f}.\n\n" + table(head, rows)
    )


def sr_args(steps: int) -> argparse.Namespace:
    """bench_sr's defaults, with ``steps`` training steps."""
    return argparse.Namespace(
        steps=steps,
        batch=8,
        patch=64,
        lr=1e-3,
        val_freq=min(50, steps),
        val_patches=64,
        seed=0,
        frames=5,
        cells3d=5,
        train_noise=4,
        psf="llsm",
        psf_radius=10,
        psf_zoom=1.0,
        read_noise=0.0,
        noise_seed=2024,
        rl_grid=[1, 2, 3, 5, 10, 20, 40, 80, 160],
    )


def trained_sr(psf: np.ndarray, args: argparse.Namespace) -> tuple[object, str]:
    """confocal_SR fine-tuned as bench_sr does it; cached as a model file."""
    import debcr
    from bench_fmd import train_one, val_subset
    from bench_sr import prepare_sets, settings_key

    path = CALIB_WORK / f"sr_finetune_{settings_key(args)}.safetensors"
    # How the cached model was trained, so that a rerun's report still says it.
    story = path.with_suffix(".txt")
    if path.exists():
        log(f"C: reusing the trained model {path.relative_to(HERE.parent)}")
        earlier = story.read_text().strip() if story.exists() else "training details not kept"
        return debcr.model.init(path), f"reused from an earlier run ({earlier})"
    data, info = prepare_sets(psf, args)
    val = val_subset(data["val"], args.val_patches)
    model, tr = train_one("sr_finetune", "confocal_SR", data, val, args, out=CALIB_WORK)
    debcr.model.save(model, path, overwrite=True)
    note = (
        f"trained {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}: {tr['steps']} steps "
        f"in {tr['wall_s'] / 60:.1f} min, best val loss "
        f"{tr['best_val_loss']:.4f} at step {tr['best_step']}, other CPU load {tr['other_load']}; "
        f"{info['patches'].get('train')} training patches; saved to "
        f"`{path.relative_to(HERE.parent)}`"
    )
    story.write_text(note + "\n")
    return model, note


def block_c(n_real: int, steps: int) -> str:
    """Simulated SR: zero-shot and fine-tuned confocal_SR, every units, against the GT."""
    import debcr
    from bench_fmd import quiet_lightning
    from bench_sr import TEST_FIELD, degraded, fmd_gt, fmt_frc, load_psf
    from debcr import metrics

    quiet_lightning()
    args = sr_args(steps)
    psf, psf_info = load_psf(args.psf, args.psf_radius, args.psf_zoom)
    gt = fmd_gt(TEST_FIELD)
    lows = degraded(gt, psf, args.frames, args.noise_seed, TEST_FIELD, args.read_noise)[:n_real]
    tuned, train_note = trained_sr(psf, args)
    models = {"confocal_SR zero-shot": debcr.model.init("confocal_SR"), "fine-tuned": tuned}
    cols: dict[str, list[np.ndarray]] = {"degraded input": [x.astype(np.float32) for x in lows]}
    for name, model in models.items():
        for u in UNITS_C:
            cols[f"{name}, {u}"] = [restore(model, x, units=u) for x in lows]
            mean_psnr = statistics.fmean(psnr(r, gt, 255.0) for r in cols[f"{name}, {u}"])
            log(f"C {name} {u}: PSNR {mean_psnr:.2f} dB")
    gt_p999 = float(np.percentile(gt, 99.9))
    rows = [
        ["PSNR vs GT (dB)"] + [ms([psnr(r, gt, 255.0) for r in rs]) for rs in cols.values()],
        ["mean vs GT mean (%)"]
        + [signed([mean_change(r, gt) for r in rs]) for rs in cols.values()],
        ["dark level − GT's (% of GT range)"]
        + [signed([dark_offset(r, gt) for r in rs]) for rs in cols.values()],
        [f"p99.9 (GT: {gt_p999:.1f})"]
        + [ms([float(np.percentile(r, 99.9)) for r in rs], 1) for rs in cols.values()],
        ["FRC resolution (px)"]
        + [fmt_frc([metrics.frc(r, gt).resolution for r in rs]) for rs in cols.values()],
    ]
    return (
        "## C. Simulated resolution enhancement (bench_sr.py data), FMD field 19 GT\n\n"
        f"PSF `{psf_info['source']}` in-focus plane (FWHM {psf_info['fwhm']:.2f} px), "
        f"FMD-calibrated Poisson noise, {len(lows)} noise realisations (bench_sr seeds); mean ± "
        "std over them. PSNR data_range 255. FRC: debcr.metrics.frc(pred, gt).resolution "
        "(≤ 2 px = no crossing, counted as 2). Fine-tuned model: confocal_SR fine-tuned "
        f"{args.steps} steps with bench_fmd.train_one on bench_sr's training sets (batch "
        f"{args.batch}, patch {args.patch}², lr {args.lr:g}, seed {args.seed}, best by val "
        f"loss); {train_note}.\n\n" + table(["metric", *cols], rows)
    )


def block_d(frames: list[int]) -> str:
    """TTA gain and cost, and how well the uncertainty map predicts the error."""
    import debcr

    model = debcr.model.init("2D_denoising")
    gt = fmd_gt19()
    gains, single_s, tta_s, corr, p_single, p_tta = [], [], [], [], [], []
    check = None
    with OtherLoad() as load:
        for i in frames:
            x = fmd_frame(i)
            t0 = time.perf_counter()
            single = restore(model, x)
            t1 = time.perf_counter()
            restored, std = restore(model, x, uncertainty=True)
            t2 = time.perf_counter()
            single_s.append(t1 - t0)
            tta_s.append(t2 - t1)
            p_single.append(psnr(single, gt, 255.0))
            p_tta.append(psnr(restored, gt, 255.0))
            gains.append(p_tta[-1] - p_single[-1])
            err = np.abs(restored.astype(np.float64) - gt)
            corr.append(float(np.corrcoef(std.astype(np.float64).ravel(), err.ravel())[0, 1]))
            log(
                f"D frame {i}: single {p_single[-1]:.2f} dB {single_s[-1]:.1f} s, tta "
                f"{p_tta[-1]:.2f} dB {tta_s[-1]:.1f} s, corr {corr[-1]:.3f}"
            )
            if check is None:
                # The uncertainty call's restored image must be the tta=True one.
                check = float(np.abs(restore(model, x, tta=True) - restored).max())
    rows = [
        ["PSNR vs avg50 (dB)", ms(p_single), ms(p_tta), signed(gains, 2, " dB")],
        [
            "time per frame (s)",
            ms(single_s),
            ms(tta_s),
            f"× {statistics.fmean(tta_s) / statistics.fmean(single_s):.1f}",
        ],
    ]
    return (
        f"## D. Test-time augmentation, FMD field 19 frames {frames[0]}–{frames[-1]}, "
        "2D_denoising, units=calibrated\n\n"
        "Single: `predict(model, x)`; TTA: `predict(model, x, uncertainty=True)` (8 rotations/"
        "flips, also returns the std map; max |restored − predict(tta=True)| on frame "
        f"{frames[0]}: {check:.2g}). Timed alternately in the same run, frame by frame; other "
        f"processes' CPU share meanwhile {load}.\n\n"
        + table(["metric (mean ± std over frames)", "single", "TTA", "TTA − single"], rows)
        + f"\n\nPearson correlation between the uncertainty map and |restored − avg50|: "
        f"{ms(corr, 3)} (mean ± std over {len(frames)} frames)."
    )


def block_e(crop: int | None) -> str:
    """Dark level and mean of restored volumes against their input."""
    import tifffile

    import debcr

    rows = []
    for name, (path, model_name) in VOLUMES.items():
        vol = tifffile.imread(path)
        if crop is not None:
            vol = vol[: min(crop, vol.shape[0])]
        model = debcr.model.init(model_name)
        cells = [name, f"{vol.shape} {vol.dtype}", model_name]
        for u in UNITS_E:
            r = restore(model, vol, units=u)
            cells += [f"{dark_offset(r, vol):+.2f} %", f"{mean_change(r, vol):+.2f} %"]
            log(f"E {name} {u}: {cells[-2]} dark, {cells[-1]} mean")
        rows.append(cells)
    head = ["volume", "shape", "model"]
    head += [f"{u}: {m}" for u in UNITS_E for m in ("dark offset", "mean change")]
    return (
        "## E. Volumes: dark level and mean against the input\n\n"
        "Dark offset: result's dark level − input's, in % of the input's p0.1–p99.9 range "
        "(block means over Y-X of every plane); mean change: 100·(mean(result)/mean(input) − 1)."
        + ("" if crop is None else f" (--quick: first {crop} planes only)")
        + "\n\n"
        + table(head, rows)
    )


def block_f(repeats: int) -> str:
    """Two planes of a lazy 60-plane stack: default units against normalised, same run."""
    import dask.array as da
    import tifffile

    import debcr

    vol = tifffile.imread(VOLUMES["cells3d nuclei"][0])
    model = debcr.model.init("2D_denoising")
    lazy_in = da.from_array(vol, chunks=(1, *vol.shape[1:]))
    restore(model, vol[:2], units="normalized")  # the plane geometry compiled once, untimed
    times: dict[str, list[float]] = {"normalized": [], "auto": []}
    got = None
    for _ in range(repeats):
        for units in times:
            t0 = time.perf_counter()
            planes = debcr.model.predict(model, lazy_in, units=units)[28:30].compute()
            times[units].append(time.perf_counter() - t0)
            if units == "auto":
                got = planes
    memory = restore(model, vol)[28:30]
    mean_diff = 100 * (float(got.mean()) / float(memory.mean()) - 1)
    worst = 100 * float(np.abs(got - memory).max()) / float(np.ptp(memory))
    ratio = statistics.median(times["auto"]) / statistics.median(times["normalized"])
    rows = [
        [u, " / ".join(f"{t:.2f}" for t in ts), f"{statistics.median(ts):.2f}"]
        for u, ts in times.items()
    ]
    return (
        "## F. Lazy (dask) restoration: planes 28–29 of cells3d nuclei (60×256², chunks of one "
        "plane), built-in 2D_denoising\n\n"
        "Time from `predict(model, dask_array)` to the two computed planes (the default units "
        "include fitting the curve on its sample once), alternating, "
        f"{repeats} repeats.\n\n"
        + table(["units", "times (s)", "median (s)"], rows)
        + f"\n\nDefault units / normalised: **{ratio:.2f}×**. Against the in-memory restoration "
        f"of the whole stack: mean {mean_diff:+.2f} %, largest difference {worst:.2f} % of the "
        "range (the sampling error)."
    )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def kept_sections() -> dict[str, str]:
    """The block sections (``## A.`` … up to the next block) of the existing report."""
    if not RESULTS.is_file():
        return {}
    parts = RESULTS.read_text().split("\n## ")[1:]
    return {part[0]: "## " + part.rstrip("\n") for part in parts if part[1:2] == "."}


def header(started: datetime.datetime, note: str) -> str:
    import torch

    from debcr.runtime import cpu_name

    threads = os.environ.get("OMP_NUM_THREADS")
    env = f"OMP_NUM_THREADS={threads} " if threads else ""
    command = f"{env}.venv/bin/python benchmarks/bench_calibration.py {shlex.join(sys.argv[1:])}"
    return (
        "# Intensity units of `debcr.model.predict` and test-time augmentation\n\n"
        f"* Command: `{command.rstrip()}`\n"
        f"* Date: {started:%Y-%m-%d %H:%M %Z}; {note}\n"
        f"* CPU: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), numpy {np.__version__}\n"
        "* Everything goes through `debcr.model.predict` with the units of its column, other "
        "options at their defaults; see the script's docstring for the definitions.\n"
        "* The machine was shared with other work while this ran (other processes' CPU share "
        "per block below): timings are indicative only.\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few frames per block; prints, writes nothing"
    )
    parser.add_argument("--sr-steps", type=int, default=200, help="fine-tuning steps (block C)")
    parser.add_argument(
        "--blocks", default="ABCDEF", help="which blocks to run, in this order (default ABCDEF)"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the other blocks' sections of the existing report (to rerun some blocks)",
    )
    args = parser.parse_args()
    quick = args.quick
    save = not quick
    started = datetime.datetime.now().astimezone()
    CALIB_WORK.mkdir(parents=True, exist_ok=True)

    jobs: dict[str, Callable[[], str]] = {
        "A": lambda: block_a(list(range(3 if quick else 50))),
        "B": block_b,
        "C": lambda: block_c(2 if quick else 5, 4 if quick else args.sr_steps),
        "D": lambda: block_d(list(range(2 if quick else 10))),
        "E": lambda: block_e(4 if quick else None),
        "F": lambda: block_f(1 if quick else 3),
    }
    sections: dict[str, str] = kept_sections() if args.keep else {}
    order = args.blocks.upper()
    t_all = time.perf_counter()
    for key in order:
        log(f"block {key}")
        with OtherLoad() as load:
            t0 = time.perf_counter()
            text = jobs[key]()
            wall = time.perf_counter() - t0
        sections[key] = (
            f"{text}\n\n_Block {key}: {wall / 60:.1f} min; other processes' CPU share {load}._"
        )
        done = f"blocks {''.join(sorted(sections))} done"
        if len(sections) < len(order):
            done += " (run in progress)"
        else:
            done += f", total {(time.perf_counter() - t_all) / 60:.1f} min"
        # Blocks may run in any order (--blocks); the report lists them alphabetically.
        body = "\n\n".join(sections[k] for k in sorted(sections))
        report = header(started, done) + "\n" + body + "\n"
        if save:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(report)
    print("\n" + report)
    if save:
        print(f"written to {RESULTS.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
