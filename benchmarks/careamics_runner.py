"""Train CAREamics N2V2, Noise2Noise or CARE on given patches, predict test images (bench helper).

Run with the CAREamics venv's python (``benchmarks/careamics_env.py`` builds it), never the
project's: it imports numpy, torch, careamics and the standard library only, not debcr::

    PY=$(.venv/bin/python benchmarks/careamics_env.py)
    $PY benchmarks/careamics_runner.py --algorithm n2v2 --train TRAIN.npz --val VAL.npz \\
        --steps 2000 --batch 16 --seed 1 --test TEST.npy --out OUT.npy [--workdir D] [--no-augment]

- n2v2: TRAIN/VAL ``low`` (N, P, P) float32 patches -> CAREamics N2V with ``use_n2v2=True``
  (N2V2 U-Net: blur-pool, no top skip; median replacement; CAREamics' defaults: 0.2 % masked
  pixels, ROI 11, U-Net depth 2 / 32 channels, Adam with torch's defaults (lr 1e-3: CAREamics
  0.3.5 passes no optimiser parameters), ReduceLROnPlateau).
- n2n: TRAIN/VAL ``repeats`` (N, F, P, P) -> N*F pairs frame f -> frame (f+1) % F.
- care: TRAIN/VAL ``low`` and ``gt`` (N, P, P) -> supervised CARE on the pairs low -> gt
  (``create_advanced_care_config``, passed ``train_data_target``/``val_data_target``);
  CAREamics 0.3.5's CARE defaults otherwise: MAE loss, U-Net depth 2 / 32 channels with batch
  norm, not residual (its ``UNetModel`` defaults), Adam with torch's defaults (lr 1e-3),
  ReduceLROnPlateau, validation once per epoch, mean/std normalisation of input and target by
  the training data's statistics, no patch filter. CAREamics enables early
  stopping for CARE by default (val_loss, patience 3 epochs); it is switched off here
  (``early_stopping_params={}``) so that every method runs exactly ``--steps`` steps.

Patches go in as SYX arrays with ``patch_size=P``: CAREamics' random patching then takes exactly
one P-sized crop (the whole patch) per sample. Exactly ``--steps`` optimiser steps: Lightning
``max_steps`` with ``max_epochs=-1`` and ``drop_last`` (every batch has ``--batch`` patches);
CAREamics has no early stopping for N2V/N2N. ``--no-augment`` passes ``augmentations=[]``
(default: flips in X/Y + rot90). CAREamics normalises by the training data's mean/std and
denormalises the prediction, so OUT has the units of TEST. Prediction uses a checkpoint saved
right after the last step. ``--test`` is optional (``--timing``-style runs train only). The JSON
reports ``step_times`` (seconds between the ends of consecutive training batches, from a
Lightning callback) beside the totals. One JSON line on stdout; all else on stderr.
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
    p.add_argument("--algorithm", choices=("n2v2", "n2n", "care"), required=True)
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--val", type=Path, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seed", type=int, required=True, help="≥ 1 (CAREamics rejects 0)")
    p.add_argument("--test", type=Path, default=None, help="images to predict (optional)")
    p.add_argument("--out", type=Path, default=None, help="where to save the prediction")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args()
    if args.seed < 1 or args.steps < 1 or args.batch < 1:
        p.error("--seed, --steps and --batch must be >= 1 (CAREamics rejects seed 0)")
    if (args.test is None) != (args.out is None):
        p.error("--test and --out go together")
    return args


def load_pairs(path: Path, algorithm: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(inputs, targets) as float32 SYX stacks; targets None for N2V."""
    with np.load(path) as data:
        if algorithm == "n2v2":
            return np.ascontiguousarray(data["low"], dtype=np.float32), None
        if algorithm == "care":
            low = np.ascontiguousarray(data["low"], dtype=np.float32)
            return low, np.ascontiguousarray(data["gt"], dtype=np.float32)
        rep = np.asarray(data["repeats"], dtype=np.float32)
    p = rep.shape[-1]
    target = np.roll(rep, -1, axis=1)  # frame f -> frame (f + 1) % F
    return rep.reshape(-1, p, p), np.ascontiguousarray(target.reshape(-1, p, p))


def make_config(args: argparse.Namespace, patch: int):
    from careamics.config import (
        create_advanced_care_config,
        create_advanced_n2n_config,
        create_advanced_n2v_config,
    )

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
    if args.algorithm == "care":
        # CAREamics turns early stopping on for CARE (EarlyStopping on val_loss, Lightning's
        # patience 3): {} switches it off, as for N2V/N2N (an empty dict adds no callback)
        return create_advanced_care_config(**common, early_stopping_params={})
    return create_advanced_n2n_config(**common)


def step_timer():
    """A Lightning callback recording the time at the end of every training batch."""
    from lightning.pytorch.callbacks import Callback

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.ends.append(time.perf_counter())

    return StepTimer()


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
    timer = step_timer()
    cm = CAREamist(config, work_dir=workdir, enable_progress_bar=False, callbacks=[timer])
    t0 = time.perf_counter()
    cm.train(train_data=x, train_data_target=y, val_data=vx, val_data_target=vy)
    train_seconds = time.perf_counter() - t0
    steps = int(cm.trainer.global_step)
    ckpt = workdir / "final.ckpt"
    cm.trainer.save_checkpoint(ckpt)
    log.info("trained %d steps (%d train samples/epoch) in %.1f s", steps, len(x), train_seconds)
    if steps != args.steps:
        log.warning("asked for %d steps, Lightning did %d", args.steps, steps)

    result = {
        "train_seconds": round(train_seconds, 3),
        "steps": steps,
        "step_times": [round(b - a, 5) for a, b in zip(timer.ends, timer.ends[1:])],
        "careamics": careamics.__version__,
        "algorithm": args.algorithm,
    }
    if args.test is None:
        return result
    test = np.load(args.test).astype(np.float32, copy=False)
    t0 = time.perf_counter()
    preds, _ = cm.predict(test, axes="SYX", data_type="array", checkpoint=ckpt)
    predict_seconds = time.perf_counter() - t0
    out = np.concatenate([np.asarray(p, np.float32).reshape(-1, *test.shape[-2:]) for p in preds])
    if out.shape != test.shape:
        raise RuntimeError(f"prediction shape {out.shape} != test shape {test.shape}")
    np.save(args.out, out)
    result["predict_seconds"] = round(predict_seconds, 3)
    return result


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
