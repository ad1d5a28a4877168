"""Training without ground truth on FMD Confocal_BPAE_B: m-rBCR Noise2Noise and N2V2 against
supervised m-rBCR and CAREamics, mean ± std over seeds; and Noise2Void on one noisy volume.

Command (from the repository root; CPU)::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_selfsup.py
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_selfsup.py --steps 10 --frames 2 \\
        --seeds 0 --no-save          # a smoke run

What it does
------------
1. Prepares FMD *Confocal_BPAE_B* three ways from the same frames (train fields 1–18, 8 raw
   frames each; val field 20; test field 19), ``--patch``² patches without overlap and without a
   background filter, so every row sees the same pixels:
   supervised pairs ``debcr.data.prepare`` (noisy frame ↔ avg50, each image normalised on its
   own); Noise2Noise ``debcr.data.prepare_noise2noise`` (the 8 frames of a field normalised
   together, ``repeats``); Noise2Void ``debcr.data.prepare_noise2void`` (each noisy frame on its
   own). The ground truth is used *only* by the supervised row and for scoring.
2. Trains, for every seed in ``--seeds``, with identical steps, batch, patch size, learning rate,
   augmentation and validation subset: m-rBCR supervised (the reference loss), m-rBCR
   Noise2Noise (reference loss, and with ``loss: mse`` to test whether the loss's L1-like
   frequency term hurts with noisy targets), m-rBCR N2V2 (``mode: noise2void``, CAREamics'
   masking defaults: 0.2 % of pixels, 11 × 11 median without the centre), and CAREamics N2V2 and
   CAREamics Noise2Noise on the identical patches (CAREamics installed into its own environment,
   see ``careamics_env.py`` / ``careamics_runner.py``; its seeds are ours + 1, as it refuses
   seed 0). No early stopping; m-rBCR's best model (lowest validation loss) is used, CAREamics'
   model after the last step (its runner's choice).
3. Restores all ``--frames`` raw frames of test field 19 (each normalised with its 0.1/99.9
   percentiles; the output brought to the input's units by the function behind
   ``debcr.model.predict``'s default ``units="calibrated"``, for every row including
   CAREamics) and scores them against ``gt/19/avg50.png`` with
   ``debcr.metrics`` (raw: input units, data range 255; affine: CARE's ``normalize_minmse``).
   Rows: the noisy input, ``2D_denoising`` zero-shot, and the trained ones as mean ± std over
   the seeds of each run's mean over the frames.
4. Noise2Void on one image with no repeats at all: the cells3d nuclei volume
   (``../shared/data/cells3d_nuclei``, high SNR) with Poisson–Gaussian noise simulated from the
   FMD calibration (~16 photons at the nuclei, gain 4.1 DN/photon, offset 3.7 DN), m-rBCR N2V2
   trained on that noisy volume alone, scored against the clean volume; montage written to
   ``benchmarks/results/selfsup_cells3d.png``.

The report goes to ``benchmarks/results/selfsup.md`` unless ``--no-save``. Intermediate results
live in ``benchmarks/_work/bench_selfsup/``; ``--reuse`` picks up finished (row, seed) results
with the same settings.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from _common import FMD, HERE, WORK, OtherLoad, command_line, log, machine_line, publish, table
from bench_fmd import read_png, score

RESULTS = HERE / "results" / "selfsup.md"
MONTAGE = HERE / "results" / "selfsup_cells3d.png"
OUT = WORK / "bench_selfsup"
CELLS3D = HERE.parent.parent / "shared" / "data" / "cells3d_nuclei" / "nuclei.tif"
TRAIN_FIELDS = [str(i) for i in range(1, 19)]
SPLIT = {"train": TRAIN_FIELDS, "val": ["20"], "test": ["19"]}
TEST_FIELD = "19"
ROWS = {
    "noisy": "noisy input",
    "zeroshot": "2D_denoising zero-shot",
    "sup": "m-rBCR supervised (reference loss)",
    "n2n": "m-rBCR Noise2Noise (reference loss)",
    "n2n_mse": "m-rBCR Noise2Noise (loss mse)",
    "n2v2": "m-rBCR N2V2",
    "care_n2n": "CAREamics Noise2Noise (U-Net)",
    "care_n2v2": "CAREamics N2V2 (U-Net)",
}
TRAINED = ("sup", "n2n", "n2n_mse", "n2v2", "care_n2n", "care_n2v2")


# -- data ------------------------------------------------------------------------------------


def prepare_sets(patch: int) -> dict[str, dict[str, Path]]:
    """The supervised, Noise2Noise and Noise2Void sets of the same frames (cached on disk)."""
    from debcr.data import pairs_from_folders, prepare, prepare_noise2noise, prepare_noise2void

    out = OUT / f"data_p{patch}"
    fields = {**{f: FMD / "raw" / f for f in TRAIN_FIELDS}, "20": FMD / "raw" / "20"}
    fields["19"] = FMD / "raw" / "19"
    jobs = {
        "sup": lambda: prepare(
            pairs_from_folders(FMD / "raw", FMD / "gt"),
            name="sup",
            out_dir=out,
            patch_size=patch,
            split=SPLIT,
            overwrite=True,
        ),
        "n2n": lambda: prepare_noise2noise(
            fields, "n2n", out, patch_size=patch, split=SPLIT, overwrite=True
        ),
        "n2v": lambda: prepare_noise2void(
            fields, "n2v", out, patch_size=patch, split=SPLIT, overwrite=True
        ),
    }
    paths = {}
    for name, job in jobs.items():
        files = {s: out / f"{name}_{s}.npz" for s in ("train", "val")}
        if not all(f.exists() for f in files.values()):
            job()
        paths[name] = files
    return paths


def subset(path: Path, n: int) -> dict[str, np.ndarray]:
    """``n`` evenly spaced items of a validation set (its patch arrays, no ``info``)."""
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in ("low", "gt", "repeats") if k in npz}
    size = len(next(iter(arrays.values())))
    idx = np.unique(np.linspace(0, size - 1, min(n, size)).round().astype(int))
    return {k: v[idx] for k, v in arrays.items()}


def test_frames(n: int) -> tuple[np.ndarray, np.ndarray]:
    frames = sorted((FMD / "raw" / TEST_FIELD).glob("*.png"))[:n]
    return np.stack([read_png(p) for p in frames]), read_png(
        FMD / "gt" / TEST_FIELD / "avg50.png"
    ).astype(np.float32)


def percentile_scale(frame: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(frame, [0.1, 99.9])
    return float(lo), float(hi)


def calibrated(frame: np.ndarray, output: np.ndarray) -> np.ndarray:
    """A network output (normalised units) in the frame's units, as ``debcr.model.predict``'s
    default ``units="calibrated"`` maps it: the same function for every row."""
    from debcr.data.intensity import CalibrationSums

    sums = CalibrationSums(frame.size)
    sums.add(frame.astype(np.float32), output.astype(np.float32))
    return np.asarray(sums.result().apply(output), dtype=np.float32)


# -- training --------------------------------------------------------------------------------


def run_config(name: str, seed: int, args: argparse.Namespace, **fields) -> object:
    """The settings every trained m-rBCR row shares, in a fresh run folder ``OUT/name``."""
    from debcr.config import TrainConfig

    run_dir = OUT / name
    shutil.rmtree(run_dir, ignore_errors=True)
    return TrainConfig(
        weights_path=str(run_dir),
        batch_size=args.batch,
        num_steps=args.steps,
        patience=args.steps,  # no early stopping: every run takes exactly --steps steps
        val_freq=args.val_freq,
        save_freq=args.val_freq,
        learning_rate=args.lr,
        patch_size=args.patch,
        augmentation=args.augmentation,
        seed=seed,
        accelerator="cpu",
        progress=False,
        **fields,
    )


def train_mrbcr(row: str, seed: int, sets: dict, val: dict, args: argparse.Namespace):
    """One m-rBCR run; (best model, info)."""
    import debcr

    mode = {"sup": "supervised", "n2n": "noise2noise", "n2n_mse": "noise2noise"}.get(
        row, "noise2void"
    )
    data = {"supervised": "sup", "noise2noise": "n2n", "noise2void": "n2v"}[mode]
    config = run_config(
        f"run_{row}_s{seed}", seed, args, mode=mode, loss="mse" if row == "n2n_mse" else "reference"
    )
    with OtherLoad() as load:
        t0 = time.perf_counter()
        model = debcr.model.train(sets[data]["train"], val[data], config)
        wall = time.perf_counter() - t0
    return model, {"train_s": wall, "steps": args.steps, "other_load": str(load)}


def careamics_python() -> str:
    from careamics_env import ensure_env

    return str(ensure_env())


def train_predict_careamics(
    row: str, seed: int, sets: dict, val: dict, frames_norm: np.ndarray, args
) -> tuple[np.ndarray, dict]:
    """Train CAREamics on the same patches and predict the normalised test frames."""
    work = OUT / f"careamics_{row}_s{seed}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = "n2n" if row == "care_n2n" else "n2v"
    key = "repeats" if data == "n2n" else "low"
    with np.load(sets[data]["train"]) as npz:
        np.savez(work / "train.npz", **{key: npz[key]})
    np.savez(work / "val.npz", **{key: val[data][key]})
    np.save(work / "test.npy", frames_norm.astype(np.float32))
    cmd = [
        careamics_python(),
        str(HERE / "careamics_runner.py"),
        "--algorithm",
        "n2n" if data == "n2n" else "n2v2",
        "--train",
        str(work / "train.npz"),
        "--val",
        str(work / "val.npz"),
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--seed",
        str(seed + 1),  # CAREamics refuses seed 0
        "--test",
        str(work / "test.npy"),
        "--out",
        str(work / "out.npy"),
        "--workdir",
        str(work / "run"),
        "--augment" if args.augmentation != "none" else "--no-augment",
    ]
    with OtherLoad() as load:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        raise RuntimeError(f"CAREamics run failed (rc {proc.returncode}):\n{tail}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info.update(other_load=str(load), train_s=info["train_seconds"])
    return np.load(work / "out.npy"), info


# -- scoring ---------------------------------------------------------------------------------


def scores_of(preds: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Mean over frames of each metric."""
    per_frame = [score(p, gt) for p in preds]
    return {k: statistics.fmean(f[k] for f in per_frame) for k in per_frame[0]}


def run_row(row: str, seed: int, sets, val, frames, gt, args) -> dict:
    import debcr

    scales = [percentile_scale(f) for f in frames]
    if row == "noisy":
        return {"scores": scores_of(frames.astype(np.float32), gt)}
    if row.startswith("care_"):
        norm = np.stack([(f - lo) / (hi - lo) for f, (lo, hi) in zip(frames, scales)])
        out, info = train_predict_careamics(row, seed, sets, val, norm, args)
        preds = np.stack([calibrated(f, o) for f, o in zip(frames, out)])
        return {"scores": scores_of(preds, gt), "train": info}
    if row == "zeroshot":
        model, info = debcr.model.init("2D_denoising"), None
    else:
        model, info = train_mrbcr(row, seed, sets, val, args)
    t0 = time.perf_counter()
    preds = np.stack(
        [
            calibrated(f, debcr.model.predict(model, f, units="normalized", progress=False))
            for f in frames
        ]
    )
    result = {"scores": scores_of(preds, gt), "predict_s": time.perf_counter() - t0}
    if info:
        result["train"] = info
    return result


def mean_std(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def fmd_table(results: dict[str, list[dict]]) -> str:
    headers = ["method", "seeds", "PSNR raw", "PSNR affine", "SSIM raw", "SSIM affine"]
    headers += ["training s (mean)", "other CPU load"]
    rows = []
    for row, label in ROWS.items():
        runs = results.get(row)
        if not runs:
            continue
        cells = [label, str(len(runs)) if row in TRAINED else "—"]
        for metric, digits in (("psnr", 2), ("ssim", 4)):
            for conv in ("raw", "affine"):
                cells.append(mean_std([r["scores"][f"{metric}_{conv}"] for r in runs], digits))
        trained = [r["train"] for r in runs if "train" in r]
        cells.append(f"{statistics.fmean(t['train_s'] for t in trained):.0f}" if trained else "—")
        cells.append(", ".join(t["other_load"] for t in trained) if trained else "—")
        rows.append(cells)
    return table(headers, rows)


# -- Noise2Void on one noisy volume ----------------------------------------------------------


def noisy_cells3d(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) cells3d nuclei with FMD-calibrated Poisson–Gaussian noise, in DN."""
    import tifffile

    clean = tifffile.imread(CELLS3D).astype(np.float64)
    photons = clean / np.percentile(clean, 99) * 16.0  # ~16 photons at the bright nuclei
    rng = np.random.default_rng(seed)
    noisy = 4.1 * rng.poisson(photons) + 3.7 + rng.normal(0, 1.0, clean.shape)
    return noisy.astype(np.float32), (4.1 * photons + 3.7).astype(np.float32)


def psnr_volume(pred: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    from debcr import metrics

    rng = float(clean.max() - clean.min())
    return {
        "psnr_raw": metrics.psnr(pred, clean, data_range=rng),
        "psnr_affine": metrics.psnr(pred, clean, normalization="affine"),
    }


def cells3d_part(args: argparse.Namespace) -> tuple[str, dict]:
    """N2V2 on the noisy volume alone (no repeats, no ground truth), scored against the clean."""
    import debcr
    from debcr.data import prepare_noise2void

    noisy, clean = noisy_cells3d()
    rows: dict[str, list[dict]] = {"noisy input": [{"scores": psnr_volume(noisy, clean)}]}
    zero = debcr.model.predict(debcr.model.init("2D_denoising"), noisy, progress=False)
    rows["2D_denoising zero-shot"] = [{"scores": psnr_volume(zero, clean)}]
    sets = prepare_noise2void(noisy, patch_size=args.patch, split=(0.9, 0.1, 0.0)).arrays
    runs, best = [], None
    for seed in args.seeds:
        config = run_config(f"run_cells3d_n2v2_s{seed}", seed, args, mode="noise2void")
        t0 = time.perf_counter()
        model = debcr.model.train(
            {"low": sets["train"]["low"]}, {"low": sets["val"]["low"]}, config
        )
        wall = time.perf_counter() - t0
        pred = debcr.model.predict(model, noisy, progress=False)
        runs.append({"scores": psnr_volume(pred, clean), "train": {"train_s": wall}})
        best = pred if best is None else best
        log(f"cells3d N2V2 seed {seed}: {runs[-1]['scores']}")
    rows["m-rBCR N2V2 (trained on the noisy volume only)"] = runs
    if not args.no_save:  # a smoke run leaves the published montage alone
        write_montage(noisy, zero, best, clean)
    headers = ["method", "seeds", "PSNR raw (clean range)", "PSNR affine", "training s"]
    body = []
    for label, rs in rows.items():
        trained = [r["train"]["train_s"] for r in rs if "train" in r]
        body.append(
            [
                label,
                str(len(rs)) if trained else "—",
                mean_std([r["scores"]["psnr_raw"] for r in rs], 2),
                mean_std([r["scores"]["psnr_affine"] for r in rs], 2),
                f"{statistics.fmean(trained):.0f}" if trained else "—",
            ]
        )
    return table(headers, body), {k: [r["scores"] for r in v] for k, v in rows.items()}


def write_montage(noisy, zero, n2v, clean) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = noisy.shape[0] // 2
    images = [noisy[z], zero[z], n2v[z], clean[z]]
    titles = ["noisy (simulated)", "2D_denoising zero-shot", "m-rBCR N2V2", "clean"]
    lo, hi = np.percentile(clean[z], [0.5, 99.8])
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    for ax, im, title in zip(axes, images, titles):
        ax.imshow(im, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"cells3d nuclei, plane {z}")
    fig.tight_layout()
    MONTAGE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(MONTAGE, dpi=80)
    plt.close(fig)


# -- main ------------------------------------------------------------------------------------


def settings_key(args: argparse.Namespace) -> str:
    keys = ("steps", "batch", "patch", "lr", "val_freq", "val_patches", "frames", "augmentation")
    blob = json.dumps({k: getattr(args, k) for k in keys}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (300)")
    parser.add_argument("--batch", type=int, default=8, help="patches per batch (8)")
    parser.add_argument("--patch", type=int, default=64, help="patch side in px (64)")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate (1e-3)")
    parser.add_argument("--val-freq", type=int, default=50, help="steps between validations")
    parser.add_argument("--val-patches", type=int, default=64, help="validation items (64)")
    parser.add_argument("--frames", type=int, default=50, help="test frames of field 19 (50)")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (0,1,2)")
    parser.add_argument(
        "--augmentation",
        default="none",
        choices=("none", "flip_rot90"),
        help="for every trained row (none, as the paper's recipe)",
    )
    parser.add_argument("--methods", default=",".join(ROWS), help=f"subset of {','.join(ROWS)}")
    parser.add_argument("--no-cells3d", action="store_true", help="skip the cells3d N2V part")
    parser.add_argument("--reuse", action="store_true", help="reuse finished (row, seed) results")
    parser.add_argument("--no-save", action="store_true", help=f"don't write {RESULTS.name}")
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help=f"report file (results/{RESULTS.name})"
    )
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.val_freq = min(args.val_freq, args.steps)
    chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
    if unknown := [m for m in chosen if m not in ROWS]:
        parser.error(f"unknown --methods {unknown}; choose from {list(ROWS)}")
    from bench_fmd import quiet_lightning

    quiet_lightning()
    started = datetime.datetime.now().astimezone()
    machine = machine_line()
    OUT.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    sets = prepare_sets(args.patch)
    val = {
        "sup": subset(sets["sup"]["val"], args.val_patches),
        "n2n": subset(sets["n2n"]["val"], max(1, args.val_patches // 8)),
        "n2v": subset(sets["n2v"]["val"], args.val_patches),
    }
    frames, gt = test_frames(args.frames)
    key = settings_key(args)
    results: dict[str, list[dict]] = {}
    reused = []
    for row in chosen:
        for seed in args.seeds if row in TRAINED else [0]:
            cache = OUT / f"result_{row}_s{seed}_{key}.json"
            if args.reuse and cache.exists():
                results.setdefault(row, []).append(json.loads(cache.read_text()))
                reused.append(f"{row}/{seed}")
                continue
            log(f"{ROWS[row]}, seed {seed}")
            res = run_row(row, seed, sets, val, frames, gt, args)
            log(f"  {res['scores']}  {res.get('train', '')}")
            cache.write_text(json.dumps(res))
            results.setdefault(row, []).append(res)
    cells3d_table = ""
    if not args.no_cells3d:
        cells3d_table, _ = cells3d_part(args)
    total = time.perf_counter() - t_all
    with np.load(sets["n2n"]["train"]) as npz:
        n2n_shape = npz["repeats"].shape
    careamics = ""
    if any(r.startswith("care_") for r in results):
        runs = [r for k in results if k.startswith("care_") for r in results[k]]
        careamics = f"CAREamics {runs[0]['train'].get('careamics', '?')}; "
    settings = (
        f"train fields 1–18 (8 frames each; {n2n_shape[0]} patch locations of {args.patch}², i.e. "
        f"{n2n_shape[0] * n2n_shape[1]} noisy patches), val field 20 ({args.val_patches} items, "
        f"every {args.val_freq} steps), test field 19 ({len(frames)} raw 512² frames); no "
        f"background filter; batch {args.batch}, {args.steps} steps, lr {args.lr:g}, "
        f"augmentation '{args.augmentation}' for every trained row, seeds {args.seeds}, no early "
        "stopping, best model by validation loss; m-rBCR N2V2 with 0.2 % masked pixels and an "
        "11 × 11 median neighbourhood without the centre (CAREamics' defaults); every row's "
        "output (normalised units) brought to the input's units by debcr's calibration (the "
        f"default units='calibrated' of predict), CAREamics' too; {careamics}torch threads "
        f"{torch.get_num_threads()}"
    )
    report = (
        "# Training without ground truth: Noise2Noise and N2V2 (m-rBCR and CAREamics)\n\n"
        f"* Command: `{command_line('bench_selfsup.py')}`\n"
        f"* Date: {started:%Y-%m-%d %H:%M %Z} (total run time {total / 60:.1f} min)\n"
        f"* Machine: {machine}\n"
        f"* Settings: {settings}\n"
        + (f"* Reused (row/seed, --reuse): {', '.join(reused)}\n" if reused else "")
        + "\nFMD Confocal_BPAE_B, test field 19 against avg50 (mean ± std over seeds of the mean "
        "over frames; PSNR in dB; raw: data range 255; affine: CARE's normalize_minmse)\n\n"
        + fmd_table(results)
        + "\n"
        + (
            "\nNoise2Void on one noisy volume with no repeats (cells3d nuclei 60×256×256 with "
            "simulated Poisson–Gaussian noise; trained on that volume alone; scored against the "
            f"clean volume; montage `results/{MONTAGE.name}`)\n\n" + cells3d_table + "\n"
            if cells3d_table
            else ""
        )
    )
    publish(report, args.output, save=not args.no_save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
