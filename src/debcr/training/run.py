"""Training runs: files on disk, checkpoints, resume, curves.

A run directory (``config.weights_path``) holds:

``config.yaml``
    The configuration the run was started with (``debcr train --resume`` reads it).
``best.safetensors`` / ``last.safetensors``
    Model files (debcr format) of the best validation loss and of the latest step;
    both are always kept.
``resume.ckpt``
    Lightning checkpoint of the latest step with optimiser state, step counter,
    early-stopping state and RNG states, rewritten atomically every ``save_freq``
    steps, so an interruption (even ``kill -9``) loses at most ``save_freq`` steps.
``metrics.csv`` / ``curves.png``
    Training and validation loss/PSNR per step, and their plot.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from debcr.files import atomic_output, move_into_place
from debcr.modelfile import load_model, save_model
from debcr.nn import MRBCR
from debcr.nn.receptive import effective_halo
from debcr.sources import load as load_source
from debcr.training.data import PairDataset, load_pairs
from debcr.training.module import MRBCRModule

logger = logging.getLogger(__name__)

BEST, LAST, RESUME, CONFIG = "best.safetensors", "last.safetensors", "resume.ckpt", "config.yaml"


class RunFiles(Callback):
    """Writes best/last model files and the resume checkpoint, atomically."""

    def __init__(self, run_dir: Path, save_freq: int, metadata: dict[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self.save_freq = save_freq
        self.metadata = metadata
        self.best_loss = math.inf
        self.best_step = -1

    def state_dict(self) -> dict[str, Any]:
        return {"best_loss": self.best_loss, "best_step": self.best_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_loss = state_dict["best_loss"]
        self.best_step = state_dict["best_step"]

    def _save_model(self, trainer: L.Trainer, module: MRBCRModule, name: str, **extra: Any) -> None:
        if trainer.is_global_zero:
            info = {**self.metadata, "step": trainer.global_step, **extra}
            save_model(module.net, self.run_dir / name, metadata=info, overwrite=True)

    def _save_resume(self, trainer: L.Trainer) -> None:
        # One name on every rank: under DDP the ranks agree on the file Lightning writes.
        tmp = self.run_dir / f".tmp-{RESUME}"
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            move_into_place(tmp, self.run_dir / RESUME)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.save_freq == 0:
            self._save_model(trainer, module, LAST)
            self._save_resume(trainer)

    def on_validation_end(self, trainer, module) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        loss = float(metrics["val_loss"])
        if loss < self.best_loss:
            self.best_loss, self.best_step = loss, trainer.global_step
            self._save_model(
                trainer, module, BEST, val_loss=loss, val_psnr=float(metrics["val_psnr"])
            )

    def on_train_end(self, trainer, module) -> None:
        self._save_model(trainer, module, LAST)
        self._save_resume(trainer)


def _loader(
    low, gt, batch_size: int, *, shuffle: bool, workers: int, seed: int | None
) -> DataLoader:
    dataset = PairDataset(low, gt)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        dataset,
        batch_size=min(batch_size, len(dataset)),
        shuffle=shuffle,
        drop_last=shuffle,
        num_workers=workers,
        generator=generator,
        persistent_workers=workers > 0,
    )


def fit(
    train_data: Any,
    val_data: Any,
    config: Any,
    init_model: Any = None,
    *,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> MRBCR:
    """Train m-rBCR; see :func:`debcr.model.train`."""
    from debcr import config as cfg

    config = cfg.load_dict(config) if isinstance(config, dict) else config
    run_dir = Path(config.weights_path)
    resume_ckpt = run_dir / RESUME
    if resume and not resume_ckpt.is_file():
        raise FileNotFoundError(
            f"cannot resume: {resume_ckpt} does not exist (was the run started in {run_dir}?)"
        )
    if not resume and (run_dir / LAST).exists():
        raise FileExistsError(
            f"{run_dir} already holds a training run; resume it (`debcr train --resume "
            f"{run_dir}` or resume=True) or choose another weights_path"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        cfg.save(config, run_dir / CONFIG)

    train_low, train_gt = load_pairs(train_data, "training data")
    val_low, val_gt = load_pairs(val_data, "validation data")
    if config.seed is not None:
        L.seed_everything(config.seed, workers=True, verbose=False)
    net = load_source(init_model if init_model is not None else config.init_model)
    parent = dict(getattr(net, "metadata", {}))
    # The weights will change: provenance, licence text and the cached halo of the starting
    # model no longer describe them.
    net.metadata = {"task": parent.get("task", "")}
    net.train()
    module = MRBCRModule(
        net,
        learning_rate=config.learning_rate,
        adam_eps=config.adam_eps,
        loss=config.loss,
        fft_weight=config.fft_weight,
        augmentation=config.augmentation,
        patch_normalization=config.patch_normalization,
    )
    metadata = {
        "task": parent.get("task", ""),
        "trained_with": "debcr",
        "init_model": str(init_model if init_model is not None else config.init_model),
        "init_source": parent.get("source", ""),
        "init_license": parent.get("license", ""),
        "config": config.to_dict(),
        "normalization": {"method": "percentile", "pmin": 0.1, "pmax": 99.9},
    }
    files = RunFiles(run_dir, config.save_freq, metadata)
    trainer = L.Trainer(
        max_steps=config.num_steps,
        max_epochs=-1,
        # A run shorter than val_freq still validates once, at its end, to keep a best model.
        val_check_interval=min(config.val_freq, config.num_steps),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        num_nodes=config.num_nodes,
        precision=config.precision,
        callbacks=[
            files,
            EarlyStopping(
                monitor="val_loss",
                patience=config.patience,
                mode="min",
                check_on_train_epoch_end=False,
            ),
            *callbacks,
        ],
        logger=CSVLogger(run_dir, name="", version=""),
        enable_checkpointing=False,
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        log_every_n_steps=1,
        deterministic=config.seed is not None,
        default_root_dir=run_dir,
    )
    val_batch = config.val_batch_size or config.batch_size
    trainer.fit(
        module,
        train_dataloaders=_loader(
            train_low,
            train_gt,
            config.batch_size,
            shuffle=True,
            workers=config.num_workers,
            seed=config.seed,
        ),
        val_dataloaders=_loader(
            val_low, val_gt, val_batch, shuffle=False, workers=config.num_workers, seed=None
        ),
        ckpt_path=resume_ckpt if resume else None,
    )
    best = run_dir / BEST if (run_dir / BEST).is_file() else run_dir / LAST
    if trainer.is_global_zero:
        plot_curves(run_dir)
        _store_halo(best)
    return load_model(best)


def _store_halo(path: Path) -> None:
    """Measure the trained model's receptive field once, so predictions need not."""
    model = load_model(path)
    model.metadata["halo"] = effective_halo(model)
    save_model(model, path, overwrite=True)


def read_metrics(run_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """``metric name → [(step, value), …]`` from a run's ``metrics.csv``."""
    series: dict[str, list[tuple[int, float]]] = {}
    path = Path(run_dir) / "metrics.csv"
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            step = int(row["step"])
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    series.setdefault(key, []).append((step, float(value)))
    return series


def plot_curves(run_dir: str | os.PathLike) -> Path:
    """Plot loss and PSNR (training and validation) into ``curves.png``."""
    from matplotlib.figure import Figure

    series = read_metrics(run_dir)
    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "psnr"), strict=True):
        for split in ("train", "val"):
            points = series.get(f"{split}_{metric}", [])
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, "-" if split == "train" else "o-", label=split)
        ax.set_xlabel("step")
        ax.set_ylabel("PSNR (dB)" if metric == "psnr" else "loss")
        ax.legend()
    path = Path(run_dir) / "curves.png"
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path
