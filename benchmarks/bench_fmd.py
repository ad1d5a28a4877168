"""Real-data quality protocol on FMD Confocal_BPAE_B: m-rBCR against CARE and non-local means.

Command (from the repository root; CPU, ≈40 min on a 2-core machine at the defaults)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fmd.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fmd.py --steps 8 --frames 2 --no-save

What it does
------------
1. Prepares the FMD *Confocal_BPAE_B* pairs (noisy single frames ↔ the mean of 50) with
   ``debcr.data.prepare``: train = fields 1–18 (8 frames each), val = field 20, test = field 19;
   ``--patch``² patches without overlap, per-image percentile normalisation (0.1/99.9), background
   filter 0.1. Validation during training uses ``--val-patches`` evenly spaced patches of the
   validation set (the whole set every ``--val-freq`` steps would cost more than training on CPU).
2. Trains m-rBCR twice with ``debcr.model.train`` and identical settings (data, ``--steps``,
   ``--batch``, ``--patch``, learning rate, seed, no augmentation, no early stopping):
   (a) fine-tuning the built-in ``2D_denoising`` model, (b) from scratch (Glorot init). Each run
   returns its best model (lowest validation loss); that model is evaluated.
   (c) the CARE U-Net baseline (``debcr.nn.CAREUNet``, 332,641 parameters) on the very same
   batches and steps with CARE's own optimiser settings (MAE, Adam lr 4e-4), see
   ``_baselines.py``.
3. Restores all ``--frames`` (default 50) raw frames of the test field 19 with
   ``debcr.model.predict(model, frame)`` (defaults: whole-image percentile normalisation, result
   calibrated to the input's units), for: the noisy input itself (identity), non-local means
   (scikit-image, σ estimated per frame, h = 0.8σ), the built-in ``2D_denoising`` model
   zero-shot, the fine-tuned and the scratch model, and CARE (same engine, halo 44 px).
4. Scores every restored frame against ``gt/19/avg50.png`` with ``debcr.metrics.psnr`` and
   ``debcr.metrics.ssim`` under the three conventions: ``raw`` (input units, data_range 255),
   ``minmax`` (each image min-max rescaled, as the original DeBCR tester) and ``affine`` (CARE's
   percentile-normalised GT + least-squares affine fit of the prediction), and prints mean ± std
   over the frames, training wall time and steps, and prediction speed, as Markdown. The report
   (command, date, machine, settings, tables) is written to ``benchmarks/results/fmd_denoising.md``
   unless ``--no-save``.

The original recipe (batch 32, patch 128, 2000 steps) takes hours on a 2-core CPU; the defaults
(batch 8, patch 64, 700 steps) take ≈10–15 min per training run with ``OMP_NUM_THREADS=1`` on
this machine kind (0.9–1.4 s/step, depending on other load), and restoring 50 frames ≈6 min
per model. Intermediate results live in ``benchmarks/_work/bench_fmd/`` (git-ignored);
``--reuse`` picks up finished trainings and scorings with the same settings (after a crash).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from _common import (
    FMD,
    HERE,
    WORK,
    OtherLoad,
    command_line,
    log,
    machine_line,
    publish,
    read_png,
    table,
)

RESULTS = HERE / "results" / "fmd_denoising.md"
OUT = WORK / "bench_fmd"
TRAIN_FIELDS = [str(i) for i in range(1, 19)]
VAL_FIELDS = ["20"]
TEST_FIELD = "19"
BACKGROUND_FILTER = 0.1
RAW_RANGE = 255.0
CONVENTIONS = ("raw", "minmax", "affine")
SHORTS = ("noisy", "nlm", "zeroshot", "finetune", "scratch", "care")
METHODS = (
    "noisy input",
    "non-local means",
    "2D_denoising zero-shot",
    "fine-tuned 2D_denoising",
    "from scratch",
    "CARE U-Net (scratch)",
)
PARAMETERS = dict(zip(METHODS, ("—", "—", "236,630", "236,630", "236,630", "332,641")))


def prepare_data(patch: int) -> tuple[dict[str, Path], dict]:
    """Write fmd_{train,val,test}.npz for ``patch``; return their paths and patch counts."""
    from debcr.data import pairs_from_folders, prepare

    out_dir = OUT / f"data_p{patch}"
    t0 = time.perf_counter()
    result = prepare(
        pairs_from_folders(FMD / "raw", FMD / "gt"),
        name="fmd",
        out_dir=out_dir,
        patch_size=patch,
        split={"train": TRAIN_FIELDS, "val": VAL_FIELDS, "test": [TEST_FIELD]},
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


def val_subset(path: Path, n: int) -> dict[str, np.ndarray]:
    """``n`` evenly spaced patches of the validation set (all when it has fewer)."""
    with np.load(path) as npz:
        low, gt = npz["low"], npz["gt"]
    idx = np.unique(np.linspace(0, len(low) - 1, min(n, len(low))).round().astype(int))
    return {"low": low[idx], "gt": gt[idx]}


def test_frames(n: int) -> tuple[list[Path], np.ndarray]:
    frames = sorted((FMD / "raw" / TEST_FIELD).glob("*.png"))[:n]
    if len(frames) < n:
        raise SystemExit(f"field {TEST_FIELD} has only {len(frames)} raw frames, {n} asked")
    return frames, read_png(FMD / "gt" / TEST_FIELD / "avg50.png").astype(np.float32)


def score(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    from debcr import metrics

    out = {}
    for conv in CONVENTIONS:
        kw = {"data_range": RAW_RANGE} if conv == "raw" else {}
        out[f"psnr_{conv}"] = metrics.psnr(pred, gt, normalization=conv, **kw)
        out[f"ssim_{conv}"] = metrics.ssim(pred, gt, normalization=conv, **kw)
    return out


def evaluate(restore, frames: list[Path], gt: np.ndarray, label: str) -> dict:
    """Restore every frame with ``restore(noisy) -> float32 image`` and score it per frame."""
    per_frame, seconds = [], 0.0
    for i, path in enumerate(frames):
        noisy = read_png(path)
        t0 = time.perf_counter()
        pred = restore(noisy)
        seconds += time.perf_counter() - t0
        per_frame.append(score(pred, gt))
        if (i + 1) % 10 == 0:
            log(f"  {label}: {i + 1}/{len(frames)} frames, {seconds / (i + 1):.2f} s/frame")
    return {"per_frame": per_frame, "predict_s": seconds, "frames": len(frames)}


def train_one(
    name: str,
    init_model: str | None,
    data: dict[str, Path],
    val: dict[str, np.ndarray],
    args: argparse.Namespace,
    out: Path = OUT,
):
    """One ``debcr.model.train`` run in ``out/run_<name>``; returns (best model, training info)."""
    import debcr
    from debcr.config import TrainConfig
    from debcr.training.curves import read_metrics

    run_dir = out / f"run_{name}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    config = TrainConfig(
        weights_path=str(run_dir),
        batch_size=args.batch,
        num_steps=args.steps,
        patience=args.steps,  # no early stopping: both runs take exactly --steps steps
        val_freq=args.val_freq,
        save_freq=args.val_freq,
        learning_rate=args.lr,
        patch_size=args.patch,
        augmentation="none",
        patch_normalization="none",
        seed=args.seed,
        accelerator="cpu",
        progress=False,
    )
    log(f"training '{name}' (init: {init_model or 'Glorot, from scratch'}) for {args.steps} steps")
    with OtherLoad() as load:
        t0 = time.perf_counter()
        model = debcr.model.train(data["train"], val, config, init_model=init_model)
        wall = time.perf_counter() - t0
    series = read_metrics(run_dir)
    val_loss = series.get("val_loss", [])
    best_step, best_loss = min(val_loss, key=lambda sv: sv[1]) if val_loss else (None, None)
    train_loss = [v for _, v in series.get("train_loss", [])]
    info = {
        "init": init_model or "none (Glorot)",
        "wall_s": wall,
        "steps": len(train_loss),
        "best_step": best_step,
        "best_val_loss": best_loss,
        "val_losses": val_loss,
        "first_train_loss": float(np.mean(train_loss[:10])) if train_loss else None,
        "last_train_loss": float(np.mean(train_loss[-10:])) if train_loss else None,
        "other_load": str(load),
    }
    log(
        f"trained '{name}': {info['steps']} steps in {wall:.0f} s "
        f"({wall / max(1, info['steps']):.2f} s/step), best val loss {best_loss} "
        f"at step {best_step}, other CPU load {load}"
    )
    return model, info


def train_care_measured(data: dict, val: dict, args: argparse.Namespace):
    """The CARE U-Net on the same batches and steps as m-rBCR; (best model, training info)."""
    from _baselines import train_care

    log(f"training CARE U-Net for {args.steps} steps on the same batches")
    with OtherLoad() as load:
        model, info = train_care(
            data["train"],
            val,
            steps=args.steps,
            batch=args.batch,
            val_freq=args.val_freq,
            seed=args.seed,
            log=log,
        )
    info["other_load"] = str(load)
    return model, info


def restorer(short: str, data: dict, val: dict, args: argparse.Namespace, res: dict):
    """The function that restores one frame for method ``short`` (training it first)."""
    import debcr
    from _baselines import nlm, predict_care

    if short == "noisy":
        return lambda noisy: noisy.astype(np.float32)
    if short == "nlm":
        return lambda noisy: nlm(noisy)[0]
    if short == "care":
        model, res["train"] = train_care_measured(data, val, args)
        return lambda noisy: predict_care(model, noisy)
    if short == "zeroshot":
        model = debcr.model.init("2D_denoising")
    else:
        init = "2D_denoising" if short == "finetune" else None
        model, res["train"] = train_one(short, init, data, val, args)
    return lambda noisy: debcr.model.predict(model, noisy, progress=False)


def quiet_lightning() -> None:
    """Keep Lightning's info messages and checkpoint-loading notices out of the log."""
    import warnings

    import lightning.pytorch  # noqa: F401  (sets its loggers up on import; adjust them after)

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*weights_only.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")


def settings_key(args: argparse.Namespace) -> str:
    keys = ("steps", "batch", "patch", "lr", "val_freq", "val_patches", "seed")
    blob = json.dumps({k: getattr(args, k) for k in keys}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def mean_std(values: list[float], digits: int) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}"


def result_tables(results: dict[str, dict], args: argparse.Namespace) -> str:
    headers = ["method"] + [
        f"{metric} {conv}" for metric in ("PSNR", "SSIM") for conv in CONVENTIONS
    ]
    rows = []
    for method in METHODS:
        if method not in results:
            continue
        pf = results[method]["eval"]["per_frame"]
        cells = [method]
        for metric, digits in (("psnr", 2), ("ssim", 4)):
            cells += [mean_std([f[f"{metric}_{conv}"] for f in pf], digits) for conv in CONVENTIONS]
        rows.append(cells)
    n = next(iter(results.values()))["eval"]["frames"]
    quality = (
        f"Test field {TEST_FIELD}: mean ± std over {n} raw frames vs gt/{TEST_FIELD}/avg50.png "
        "(PSNR in dB; raw: input units, data_range 255; minmax: per-image min-max; affine: CARE "
        "normalize_minmse)\n\n" + table(headers, rows)
    )
    headers2 = [
        "method",
        "parameters",
        "init",
        "steps (batch × patch²)",
        "training wall time",
        "s/step",
        "best val loss (step)",
        "train loss first→last 10 steps",
        "other CPU load in training",
        "predict s/frame",
        "predict Mpx/s",
    ]
    rows2 = []
    for method in METHODS:
        if method not in results:
            continue
        res, tr = results[method], results[method].get("train")
        ev = res["eval"]
        per_frame = ev["predict_s"] / ev["frames"]
        trained = tr is not None
        rows2.append(
            [
                method,
                PARAMETERS[method],
                tr["init"] if trained else "—",
                f"{tr['steps']} ({args.batch} × {args.patch}²)" if trained else "—",
                f"{tr['wall_s'] / 60:.1f} min ({tr['wall_s']:.0f} s)" if trained else "—",
                f"{tr['wall_s'] / max(1, tr['steps']):.2f}" if trained else "—",
                f"{tr['best_val_loss']:.4f} ({tr['best_step']})" if trained else "—",
                f"{tr['first_train_loss']:.4f} → {tr['last_train_loss']:.4f}" if trained else "—",
                tr["other_load"] if trained else "—",
                f"{per_frame:.2f}" if method != METHODS[0] else "—",
                f"{512 * 512 / 1e6 / per_frame:.3f}" if method != METHODS[0] else "—",
            ]
        )
    return quality + "\n\nTraining and prediction\n\n" + table(headers2, rows2)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=700, help="training steps per run (700)")
    parser.add_argument("--batch", type=int, default=8, help="patches per batch (default 8)")
    parser.add_argument("--patch", type=int, default=64, help="patch side in px (default 64)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    parser.add_argument(
        "--val-freq", type=int, default=None, help="steps between validations (default 50)"
    )
    parser.add_argument(
        "--val-patches", type=int, default=64, help="validation patches used (default 64)"
    )
    parser.add_argument("--frames", type=int, default=50, help="test frames of field 19 (50)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument(
        "--methods",
        default=",".join(SHORTS),
        help=f"comma-separated subset of {','.join(SHORTS)} (default: all)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse finished runs/scores in benchmarks/_work/bench_fmd with the same settings",
    )
    parser.add_argument("--no-save", action="store_true", help=f"don't write {RESULTS.name}")
    args = parser.parse_args()
    args.val_freq = min(args.val_freq or 50, args.steps)
    chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
    method_of = dict(zip(SHORTS, METHODS, strict=True))
    if unknown := [m for m in chosen if m not in method_of]:
        parser.error(f"unknown --methods {unknown}; choose from {list(method_of)}")
    quiet_lightning()

    from debcr.nn import MRBCR, count_parameters

    started = datetime.datetime.now().astimezone()
    load0 = os.getloadavg()
    machine = machine_line()
    print(f"Machine: {machine}")
    print(
        f"Load average at start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; torch threads "
        f"{torch.get_num_threads()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    key = settings_key(args)
    t_all = time.perf_counter()

    data, data_info = prepare_data(args.patch)
    log(
        f"prepared FMD in {data_info['seconds']:.0f} s: patches {data_info['patches']}, images "
        f"{data_info['images']}, background patches dropped {data_info['dropped']}"
    )
    val = val_subset(data["val"], args.val_patches)
    frames, gt = test_frames(args.frames)

    results: dict[str, dict] = {}
    reused: list[str] = []
    for short in SHORTS:
        if short not in chosen:
            continue
        method = method_of[short]
        cache = OUT / f"result_{short}_{key}_f{args.frames}.json"
        if args.reuse and cache.exists():
            results[method] = json.loads(cache.read_text())
            done_at = datetime.datetime.fromtimestamp(cache.stat().st_mtime)
            reused.append(f"{method} ({done_at:%Y-%m-%d %H:%M})")
            log(f"reused {cache.name} for '{method}'")
            continue
        res: dict = {}
        res["eval"] = evaluate(restorer(short, data, val, args, res), frames, gt, method)
        pf = res["eval"]["per_frame"]
        log(
            f"{method}: PSNR raw {statistics.fmean(f['psnr_raw'] for f in pf):.2f} dB, "
            f"SSIM raw {statistics.fmean(f['ssim_raw'] for f in pf):.4f}"
        )
        cache.write_text(json.dumps(res))
        results[method] = res

    total = time.perf_counter() - t_all
    tables = result_tables(results, args)
    load1 = os.getloadavg()
    settings = (
        f"train fields 1–18 ({data_info['patches'].get('train')} patches of {args.patch}², "
        f"{data_info['images'].get('train')} frames), val field 20 "
        f"({len(val['low'])} of {data_info['patches'].get('val')} patches, every "
        f"{args.val_freq} steps), test field {TEST_FIELD} ({len(frames)} raw frames, whole "
        f"512² images); background filter {BACKGROUND_FILTER} "
        f"({data_info['dropped']} patches dropped); batch {args.batch}, {args.steps} steps, "
        f"Adam lr {args.lr:g} (ε 1e-7), loss 'reference', no augmentation, patch normalisation "
        f"'none' (whole-image percentiles), seed {args.seed}, no early stopping, best model by "
        f"validation loss; predict with debcr.model.predict defaults (units 'calibrated'); "
        f"m-rBCR {count_parameters(MRBCR()):,} parameters; CARE U-Net "
        "(depth 2, 32 filters, 3×3, residual; 332,641 parameters) on the same batches and steps "
        "with CSBDeep's defaults MAE loss and Adam lr 4e-4, best state by validation MAE, "
        "predicted with the same tiled engine and calibration; non-local means: scikit-image "
        "fast mode, σ estimated per frame, h = 0.8σ, 5×5 patches, distance 6"
    )
    command = command_line("bench_fmd.py")
    report = (
        "# FMD Confocal_BPAE_B denoising: m-rBCR against CARE and non-local means\n\n"
        f"* Command: `{command}`\n"
        f"* Date: {started:%Y-%m-%d %H:%M %Z} (total run time {total / 60:.1f} min)\n"
        f"* Machine: {machine}; torch threads {torch.get_num_threads()}; load average at end "
        f"{load1[0]:.2f}\n"
        f"* Settings: {settings}\n"
        + (
            f"* Rows reused from earlier runs with identical settings (--reuse; finished at): "
            f"{', '.join(reused)}\n"
            if reused
            else ""
        )
        + "\n"
        + tables
        + "\n"
    )
    publish(report, RESULTS, save=not args.no_save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
