"""The quick loop's Lightning canary: two real training steps through ``debcr.model.train``.

Every other training test is marked ``slow``; this one is not, so ``pytest -m "not slow"``
still drives the real Lightning trainer (data loaders, the training module, validation,
the run-folder callback) and fails when any of them breaks.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import torch

from conftest import fmd_frame, fmd_gt
from debcr.config import TrainConfig
from debcr.data import crop, normalize
from debcr.defaults import BEST_MODEL, LAST_MODEL, RESUME_CHECKPOINT, RUN_CONFIG
from debcr.model import train
from debcr.modelfile import read_header

PATCH = 16


def _pairs(field: int) -> dict[str, np.ndarray]:
    low = crop(normalize(fmd_frame(field, 0), clip=False)[:64, :64], PATCH, 0.0)
    gt = crop(normalize(fmd_gt(field), clip=False)[:64, :64], PATCH, 0.0)
    return {"low": low[:4], "gt": gt[:4]}


def test_two_lightning_steps_write_a_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = TrainConfig(
        weights_path=str(run),
        batch_size=2,
        num_steps=2,
        val_freq=2,
        save_freq=1,
        patch_size=PATCH,
        accelerator="cpu",
        devices=1,
        progress=False,
        seed=3,
    )
    model = train(_pairs(1), _pairs(20), config)
    for name in (BEST_MODEL, LAST_MODEL, RESUME_CHECKPOINT, RUN_CONFIG, "metrics.csv"):
        assert (run / name).is_file(), name
    with (run / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [0, 1]
    losses = [float(r["train_loss"]) for r in rows]
    assert all(math.isfinite(v) and v > 0 for v in losses)
    val = [float(r["val_loss"]) for r in rows if r.get("val_loss")]
    assert len(val) == 1 and math.isfinite(val[0])
    best = json.loads(read_header(run / BEST_MODEL)["metadata"])
    assert best["mode"] == "supervised" and best["step"] == 2
    assert model.metadata["halo"] > 0  # the best model's receptive field was measured
    with torch.inference_mode():
        out = model.restore(torch.from_numpy(_pairs(19)["low"][:1, None].copy()))
    assert tuple(out.shape) == (1, 1, PATCH, PATCH) and torch.isfinite(out).all()
