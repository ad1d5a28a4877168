"""Choose the default training recipe on FMD *validation* data only (never the test field).

Command (from the repository root; 2-core CPU, ≈20 min with two lanes at the defaults)::

    .venv/bin/python benchmarks/bench_recipe.py --jobs 2
    .venv/bin/python benchmarks/bench_recipe.py --steps 6 --val-freq 3 --frames 1 --no-save

Every variant trains m-rBCR with `debcr.model.train` on the same FMD Confocal_BPAE_B patches as
``bench_fmd.py`` (train fields 1–18, ``--patch``² patches, ``--batch``, ``--steps``, seed
``--seed``), validates on evenly spaced patches of field 20, and its best model (lowest
validation loss, of the weight average where the variant keeps one) restores ``--frames`` raw
frames of field 20 with `debcr.model.predict` defaults, scored against field 20's avg50 (PSNR
raw, data range 255; SSIM affine). Field 19, the test field of ``bench_fmd.py`` and
``bench_quality.py``, is never read. The variants differ only in the keys of a recipe
(`debcr.config.RECIPES`) and the starting weights. ``--jobs 2`` trains two variants at once,
each on one thread. Report: ``benchmarks/results/recipe.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from _common import FMD, HERE, WORK, command_line, log, machine_line, publish, read_png, table

RESULTS = HERE / "results" / "recipe.md"
OUT = WORK / "bench_recipe"
VAL_FIELD = "20"

#: name → (starting model, config keys); recipe keys not named come from the recipe.
VARIANTS: dict[str, tuple[str | None, dict]] = {
    "ft_paper": ("2D_denoising", {"recipe": "paper"}),
    "ft_debcr": ("2D_denoising", {"recipe": "debcr"}),
    "ft_debcr_flips": ("2D_denoising", {"recipe": "debcr", "augmentation": "flip_rot90"}),
    "ft_debcr_flips_lr3e-4": (
        "2D_denoising",
        {"recipe": "debcr", "augmentation": "flip_rot90", "learning_rate": 3e-4},
    ),
    "ft_debcr_mse": ("2D_denoising", {"recipe": "debcr", "loss": "mse"}),
    # the fine-tuning rates offered elsewhere (napari's suggestion, the tutorial's)
    "ft_debcr_lr1e-4": ("2D_denoising", {"recipe": "debcr", "learning_rate": 1e-4}),
    "ft_debcr_lr5e-4": ("2D_denoising", {"recipe": "debcr", "learning_rate": 5e-4}),
    "scratch_paper": (None, {"recipe": "paper"}),
    "scratch_debcr": (None, {"recipe": "debcr"}),
}


def run_variant(name: str, args: argparse.Namespace) -> dict:
    """Train and score one variant (in this process); the result is also written as JSON."""
    import torch

    torch.set_num_threads(1)
    import debcr
    from bench_fmd import prepare_data, quiet_lightning, val_subset
    from debcr import metrics
    from debcr.config import TrainConfig
    from debcr.training.curves import read_metrics

    quiet_lightning()
    paths, _ = prepare_data(args.patch)
    val = val_subset(paths["val"], args.val_patches)
    init, keys = VARIANTS[name]
    run_dir = OUT / key(args) / f"run_{name}"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    config = TrainConfig(
        weights_path=str(run_dir),
        batch_size=args.batch,
        num_steps=args.steps,
        patience=args.steps,
        val_freq=args.val_freq,
        save_freq=args.val_freq,
        patch_size=args.patch,
        seed=args.seed,
        accelerator="cpu",
        progress=False,
        **keys,
    )
    t0 = time.perf_counter()
    model = debcr.model.train(paths["train"], val, config, init_model=init)
    wall = time.perf_counter() - t0
    gt = read_png(FMD / "gt" / VAL_FIELD / "avg50.png").astype(np.float32)
    frames = sorted((FMD / "raw" / VAL_FIELD).glob("*.png"))[: args.frames]
    psnr, ssim = [], []
    for path in frames:
        pred = debcr.model.predict(model, read_png(path), progress=False)
        psnr.append(metrics.psnr(pred, gt, normalization="raw", data_range=255.0))
        ssim.append(metrics.ssim(pred, gt, normalization="affine"))
    val_loss = read_metrics(run_dir).get("val_loss", [])
    best_step, best = min(val_loss, key=lambda sv: sv[1])
    result = {
        "variant": name,
        "init": init,
        "config": {
            k: config[k]
            for k in (
                "recipe",
                "learning_rate",
                "lr_schedule",
                "warmup_fraction",
                "ema_decay",
                "augmentation",
                "loss",
            )
        },
        "psnr_raw": float(np.mean(psnr)),
        "ssim_affine": float(np.mean(ssim)),
        "best_val_loss": best,
        "best_step": best_step,
        "wall_s": wall,
    }
    out = OUT / key(args) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, out)
    return result


def key(args: argparse.Namespace) -> str:
    return (
        f"s{args.steps}_b{args.batch}_p{args.patch}_v{args.val_freq}_n{args.val_patches}"
        f"_seed{args.seed}_f{args.frames}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--val-freq", type=int, default=50)
    parser.add_argument("--val-patches", type=int, default=64)
    parser.add_argument("--frames", type=int, default=10, help="raw frames of field 20 scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--reuse", action="store_true", help="keep finished variants")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one variant (a lane)
    args = parser.parse_args()
    if args.one:
        run_variant(args.one, args)
        return 0
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    started = time.time()
    todo = [n for n in names if not (args.reuse and (OUT / key(args) / f"{n}.json").is_file())]
    base = [
        f"--steps={args.steps}",
        f"--batch={args.batch}",
        f"--patch={args.patch}",
        f"--val-freq={args.val_freq}",
        f"--val-patches={args.val_patches}",
        f"--frames={args.frames}",
        f"--seed={args.seed}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running: list[tuple[str, subprocess.Popen]] = []
    while todo or running:
        while todo and len(running) < args.jobs:
            name = todo.pop(0)
            log(f"variant {name}: started")
            cmd = [sys.executable, __file__, *base, "--one", name]
            running.append((name, subprocess.Popen(cmd, env=env)))
        time.sleep(2)
        for item in list(running):
            if item[1].poll() is not None:
                running.remove(item)
                log(f"variant {item[0]}: exit {item[1].returncode}")
    rows = []
    for name in names:
        path = OUT / key(args) / f"{name}.json"
        if not path.is_file():
            rows.append([name, "failed", "", "", "", "", ""])
            continue
        r = json.loads(path.read_text())
        c = r["config"]
        rows.append(
            [
                name,
                r["init"] or "none (Glorot)",
                f"{c['recipe']}: lr {c['learning_rate']:g} {c['lr_schedule']}, warm-up "
                f"{c['warmup_fraction']:g}, EMA {c['ema_decay']:g}, {c['augmentation']}, "
                f"loss {c.get('loss', 'reference')}",
                f"{r['psnr_raw']:.2f}",
                f"{r['ssim_affine']:.4f}",
                f"{r['best_val_loss']:.4f} ({r['best_step']})",
                f"{r['wall_s'] / args.steps:.2f}",
            ]
        )
    report = "\n".join(
        [
            "# Choosing the default training recipe on validation data (FMD field 20)",
            "",
            f"* Command: `{command_line('bench_recipe.py')}`",
            f"* Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
            f"(run time {(time.time() - started) / 60:.1f} min)",
            f"* Machine: {machine_line()}",
            f"* Settings: train fields 1–18 ({args.patch}² patches), batch {args.batch}, "
            f"{args.steps} steps, validation every {args.val_freq} steps on {args.val_patches} "
            f"patches of field 20, seed {args.seed}, one thread per run ({args.jobs} at once); "
            f"scored on {args.frames} raw frames of field 20 vs its avg50 with "
            "`debcr.model.predict` defaults. The test field 19 is not read. Validation "
            "losses compare only variants trained with the same loss.",
            "",
            table(
                [
                    "variant",
                    "init",
                    "settings",
                    "PSNR raw (val field)",
                    "SSIM affine",
                    "best val loss (step)",
                    "s/step (2 runs at once)",
                ],
                rows,
            ),
        ]
    )
    print(report)
    publish(report, RESULTS, not args.no_save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
