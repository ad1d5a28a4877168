"""Train CAREamics N2V2 or Noise2Noise on given patches and predict test images (benchmark helper).

Run with the CAREamics venv's python (``benchmarks/careamics_env.py`` builds it), never the
project's: it imports numpy, torch, careamics and the standard library only, not debcr::

    PY=$(.venv/bin/python benchmarks/careamics_env.py)
    $PY benchmarks/careamics_runner.py --algorithm n2v2 --train TRAIN.npz --val VAL.npz \\
        --steps 2000 --batch 16 --seed 1 --test TEST.npy --out OUT.npy [--workdir D] [--no-augment]

- n2v2: TRAIN/VAL ``low`` (N, P, P) float32 patches -> CAREamics N2V with ``use_n2v2=True``
  (N2V2 U-Net: blur-pool, no top skip; median replacement; CAREamics' defaults: 0.2 % masked
  pixels, ROI 11, U-Net depth 2 / 32 channels, Adam lr 1e-4, ReduceLROnPlateau).
- n2n: TRAIN/VAL ``repeats`` (N, F, P, P) -> N*F pairs frame f -> frame (f+1) % F.

Patches go in as SYX arrays with ``patch_size=P``: CAREamics' random patching then takes exactly
one P-sized crop (the whole patch) per sample. Exactly ``--steps`` optimiser steps: Lightning
``max_steps`` with ``max_epochs=-1`` and ``drop_last`` (every batch has ``--batch`` patches);
CAREamics has no early stopping for N2V/N2N. ``--no-augment`` passes ``augmentations=[]``
(default: flips in X/Y + rot90). CAREamics normalises by the training data's mean/std and
denormalises the prediction, so OUT has the units of TEST. Prediction uses a checkpoint saved
right after the last step. One JSON line on stdout; all else on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("careamics_runner")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algorithm", choices=("n2v2", "n2n"), required=True)
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--val", type=Path, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seed", type=int, required=True, help="≥ 1 (CAREamics rejects 0)")
    p.add_argument("--test", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args()
    if args.seed < 1 or args.steps < 1 or args.batch < 1:
        p.error("--seed, --steps and --batch must be >= 1 (CAREamics rejects seed 0)")
    return args


def load_pairs(path: Path, algorithm: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(inputs, targets) as float32 SYX stacks; targets None for N2V."""
    with np.load(path) as data:
        if algorithm == "n2v2":
            return np.ascontiguousarray(data["low"], dtype=np.float32), None
        rep = np.asarray(data["repeats"], dtype=np.float32)
    p = rep.shape[-1]
    target = np.roll(rep, -1, axis=1)  # frame f -> frame (f + 1) % F
    return rep.reshape(-1, p, p), np.ascontiguousarray(target.reshape(-1, p, p))


def make_config(args: argparse.Namespace, patch: int):
    from careamics.config import create_advanced_n2n_config, create_advanced_n2v_config

    common = dict(
        experiment_name=f"bench_{args.algorithm}",
        data_type="array",
        axes="SYX",
        patch_size=[patch, patch],
        batch_size=args.batch,
        num_epochs=None,  # no max_epochs from CAREamics; max_steps decides
        augmentations=None if args.augment else [],
        num_workers=0,
        trainer_params={"max_steps": args.steps, "max_epochs": -1, "accelerator": "cpu"},
        train_dataloader_params={"shuffle": True, "drop_last": True},
        seed=args.seed,
    )
    if args.algorithm == "n2v2":
        return create_advanced_n2v_config(**common, use_n2v2=True)
    return create_advanced_n2n_config(**common)


def run(args: argparse.Namespace, workdir: Path) -> dict:
    import careamics
    from careamics import CAREamist
    from lightning.pytorch import seed_everything

    seed_everything(args.seed, workers=True)
    x, y = load_pairs(args.train, args.algorithm)
    vx, vy = load_pairs(args.val, args.algorithm)
    if len(x) < args.batch:
        raise SystemExit(f"{len(x)} training samples < batch {args.batch}")
    config = make_config(args, x.shape[-1])
    log.info("config:\n%s", config)
    cm = CAREamist(config, work_dir=workdir, enable_progress_bar=False)
    t0 = time.perf_counter()
    cm.train(train_data=x, train_data_target=y, val_data=vx, val_data_target=vy)
    train_seconds = time.perf_counter() - t0
    steps = int(cm.trainer.global_step)
    ckpt = workdir / "final.ckpt"
    cm.trainer.save_checkpoint(ckpt)
    log.info("trained %d steps (%d train samples/epoch) in %.1f s", steps, len(x), train_seconds)
    if steps != args.steps:
        log.warning("asked for %d steps, Lightning did %d", args.steps, steps)

    test = np.load(args.test).astype(np.float32, copy=False)
    t0 = time.perf_counter()
    preds, _ = cm.predict(test, axes="SYX", data_type="array", checkpoint=ckpt)
    predict_seconds = time.perf_counter() - t0
    out = np.concatenate([np.asarray(p, np.float32).reshape(-1, *test.shape[-2:]) for p in preds])
    if out.shape != test.shape:
        raise RuntimeError(f"prediction shape {out.shape} != test shape {test.shape}")
    np.save(args.out, out)
    return {
        "train_seconds": round(train_seconds, 3),
        "predict_seconds": round(predict_seconds, 3),
        "steps": steps,
        "careamics": careamics.__version__,
        "algorithm": args.algorithm,
    }


def main() -> int:
    args = parse_args()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[careamics_runner] %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="careamics-run-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON line
            result = run(args, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
