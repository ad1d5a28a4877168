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
    Training and validation loss/PSNR per step, and their plot, over the whole run: a resumed
    run keeps the rows of the steps before its checkpoint (see `debcr.training.history`).

Ctrl-C (SIGINT) or SIGTERM stops a run cleanly after the current step: the last model and the
resume checkpoint are written for that step and `TrainingInterrupted` (a
`KeyboardInterrupt`) says where to resume from; a second signal stops at once, and the
run then resumes from its last periodic checkpoint.

A full disk or read-only file system is one `OutputError`: the space a
run needs is checked when it starts, a write that fails later leaves no temporary file, and
the folder stays usable: resumed from its last checkpoint, or, when the run failed before its
first one, emptied of what the run wrote so that it can be started again.

`fit` is a short pipeline: read the data for the training mode, choose the starting
model, open the run folder (checking its space), record provenance, build the trainer, train,
finish.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch.utils.data import DataLoader, Dataset

from debcr.config import TrainConfig, load_dict
from debcr.config import save as save_config
from debcr.data.io import load
from debcr.data.sets import SetInfo
from debcr.defaults import (
    BEST_MODEL,
    CURVES_PLOT,
    LAST_MODEL,
    METRICS_CSV,
    RESUME_CHECKPOINT,
    RUN_CONFIG,
)
from debcr.errors import ConfigError, OutputError
from debcr.files import check_space, move_into_place, output_error, output_errors, remove
from debcr.modelfile import load_model, read_header, save_model
from debcr.nn import MRBCR
from debcr.nn.receptive import store_halos
from debcr.runtime import default_precision, tune_allocator
from debcr.sources import load as load_source
from debcr.training.curves import plot_curves
from debcr.training.data import EpochOrder, normalise_raw
from debcr.training.history import MetricsLog
from debcr.training.modes import TrainingMode, check_data_mode, mode_for, normalization_of
from debcr.training.module import MRBCRModule
from debcr.training.progress import StepProgressBar

logger = logging.getLogger(__name__)


class _WithoutLightningTips(logging.Filter):
    """Drops Lightning's tips for its cloud services: nothing a debcr user needs to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


_WITHOUT_TIPS = _WithoutLightningTips()


class TrainingInterrupted(KeyboardInterrupt):
    """Training was stopped with Ctrl-C or SIGTERM; ``run_dir`` resumes from step ``step``.

    ``step`` is ``None`` when the run was stopped before its first checkpoint (there is then
    nothing to resume: start it again). ``signal`` names the signal (``"SIGINT"`` for Ctrl-C).
    """

    def __init__(self, run_dir: Path, step: int | None, signal: str = "SIGINT") -> None:
        self.run_dir = Path(run_dir)
        self.step = step
        self.signal = signal
        if step is None:
            text = f"training interrupted before its first checkpoint in {run_dir}; start it again"
        else:
            text = (
                f"training interrupted at step {step}; resume it with resume=True "
                f"(CLI: debcr train --resume {run_dir})"
            )
        super().__init__(text)


class _StopHere(Exception):
    """Raised after the step at which a requested stop (Ctrl-C) was saved."""


class RunFiles(Callback):
    """Writes best/last model files, the resume checkpoint and ``metrics.csv`` (in step)."""

    def __init__(
        self, run_dir: Path, save_freq: int, metadata: dict[str, Any], history: MetricsLog
    ) -> None:
        self.run_dir = Path(run_dir)
        self.save_freq = save_freq
        self.metadata = metadata
        self.history = history
        self.best_loss = math.inf
        self.best_step = -1
        self.saved_step: int | None = None  # the step of the resume checkpoint on disk
        self.stop_requested = False  # set by the Ctrl-C handler, acted on after the step
        self.stop_signal = "SIGINT"  # the signal that asked for the stop
        self.stop_saved = False  # the step at which the stop was requested is saved
        self.exception: BaseException | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"best_loss": self.best_loss, "best_step": self.best_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_loss = state_dict["best_loss"]
        self.best_step = state_dict["best_step"]

    def _save_model(self, trainer: L.Trainer, module: MRBCRModule, name: str, **extra: Any) -> None:
        if trainer.is_global_zero:
            info = {**self.metadata, "step": trainer.global_step, **extra}
            save_model(module.model_to_save(), self.run_dir / name, metadata=info, overwrite=True)

    def _save_resume(self, trainer: L.Trainer) -> None:
        # The metrics of every step the checkpoint covers are on disk before it is.
        self.history.flush()
        # One name on every rank: under DDP the ranks agree on the file Lightning writes.
        tmp = self.run_dir / f".tmp-{RESUME_CHECKPOINT}"
        try:
            trainer.save_checkpoint(tmp, weights_only=False)  # optimiser, loops, callbacks too
            if trainer.is_global_zero:
                move_into_place(tmp, self.run_dir / RESUME_CHECKPOINT)
        except BaseException:  # a full disk, a signal: no partial checkpoint is left
            remove(tmp)
            raise
        self.saved_step = trainer.global_step

    def on_train_start(self, trainer, module) -> None:
        # After a resume the step is the checkpoint's: later rows of metrics.csv are dropped.
        self.history.begin(trainer.global_step)
        # A checkpoint is written before the validation of its step; best.safetensors may
        # hold a better model from that validation, which a resumed run must not replace.
        best = _recorded_val_loss(self.run_dir / BEST_MODEL) if trainer.global_step > 0 else None
        if best is not None and best < self.best_loss:
            self.best_loss = best

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        # Under DDP every rank stops at the same step if any of them was asked to.
        stop = trainer.strategy.reduce_boolean_decision(self.stop_requested, all=False)
        if stop or trainer.global_step % self.save_freq == 0:
            self._save_model(trainer, module, LAST_MODEL)
            self._save_resume(trainer)
        self.stop_saved = stop

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        # A requested stop ends the run before the next step, once Lightning has logged the
        # metrics (and run the validation) of the step saved for it, as after a periodic save.
        if self.stop_saved:
            raise _StopHere

    def on_exception(self, trainer, module, exception: BaseException) -> None:
        self.exception = exception

    def on_validation_end(self, trainer, module) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        loss = float(metrics["val_loss"])
        if loss < self.best_loss:
            self.best_loss, self.best_step = loss, trainer.global_step
            self._save_model(
                trainer, module, BEST_MODEL, val_loss=loss, val_psnr=float(metrics["val_psnr"])
            )

    def on_train_end(self, trainer, module) -> None:
        self._save_model(trainer, module, LAST_MODEL)
        self._save_resume(trainer)


def _checkpoint_step(path: Path) -> int:
    """The step of a resume checkpoint (its tensors are mapped, not read)."""
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])


def _recorded_val_loss(path: Path) -> float | None:
    """The validation loss recorded in a model file of the run, if any."""
    if not path.is_file():
        return None
    value = json.loads(read_header(path).get("metadata", "{}")).get("val_loss")
    return None if value is None else float(value)


def _loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    workers: int,
    seed: int | None,
    resume_step: int = 0,
    ranks: int = 1,
) -> DataLoader:
    """The data loader of a split; shuffled (in `EpochOrder`) for training.

    A run resumed at ``resume_step`` on one process continues the interrupted epoch's order.
    The loader's own generator (seeds of the iterators and workers) keeps torch's global one,
    which augmentation draws from and a checkpoint restores, untouched.
    """
    if seed is None:
        seed = int(torch.randint(2**31 - 1, ()))
    batch_size = min(batch_size, len(dataset))
    sampler = None
    if shuffle:
        # Under DDP Lightning splits this order between the ranks (not resumed mid-epoch).
        per_epoch = len(dataset) // batch_size
        epoch, used = divmod(resume_step, per_epoch) if ranks == 1 else (0, 0)
        sampler = EpochOrder(len(dataset), seed, skip_epoch=epoch, skip=used * batch_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=shuffle,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=workers > 0,
    )


def fit(
    train_data: Any,
    val_data: Any,
    config: TrainConfig | dict[str, Any],
    init_model: Any = None,
    *,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
) -> MRBCR:
    """Train m-rBCR; see `debcr.model.train`."""
    config = load_dict(config) if isinstance(config, dict) else config
    tune_allocator()
    mode = mode_for(config)
    train_split, val_split = _read_split(train_data), _read_split(val_data)
    check_data_mode(mode, train_split, "training data")
    check_data_mode(mode, val_split, "validation data")
    # Raw intensities (a dict of uint8 patches) are normalised as `debcr prepare` would, once.
    what = ("training data", "validation data")
    train_arrays, train_raw = normalise_raw(mode.load(train_split, what[0]), what[0])
    val_arrays, val_raw = normalise_raw(mode.load(val_split, what[1]), what[1])
    if config.seed is not None:
        L.seed_everything(config.seed, workers=True, verbose=False)
    start = init_model if init_model is not None else config.init_model
    net, parent = _starting_model(start)
    # Only data that can be trained on, and a model to start from, open (or create) the folder.
    before = _run_files(Path(config.weights_path))
    run_dir = _open_run(config, resume, _space_needed(net, resume))
    precision = trainer_precision(config)
    if rank_zero_only.rank == 0:
        logger.info("training precision: %s (config: %s)", precision, config.precision)
    metadata = _provenance(config, mode, start, parent, normalization_of(train_split), precision)
    metadata["training_data"] = {
        "train": _data_provenance(train_data, train_split, train_arrays, train_raw),
        "val": _data_provenance(val_data, val_split, val_arrays, val_raw),
    }
    history = MetricsLog(run_dir)
    files = RunFiles(run_dir, config.save_freq, metadata, history)
    if resume:  # what an interruption before the first new checkpoint resumes from
        files.saved_step = _checkpoint_step(run_dir / RESUME_CHECKPOINT)
    trainer = _trainer(config, precision, history, files, callbacks)
    with _disk_errors(files, resume, before), _interruptible(trainer, files, run_dir, history):
        _fit(
            trainer,
            MRBCRModule(
                net,
                mode,
                learning_rate=config.learning_rate,
                adam_eps=config.adam_eps,
                lr_schedule=config.lr_schedule,
                warmup_fraction=config.warmup_fraction,
                total_steps=config.num_steps,
                ema_decay=config.ema_decay,
            ),
            train_dataloaders=_loader(
                mode.dataset(train_arrays, training=True),
                config.batch_size,
                shuffle=True,
                workers=config.num_workers,
                seed=config.seed,
                resume_step=files.saved_step or 0,
                ranks=trainer.world_size,
            ),
            val_dataloaders=_loader(
                mode.dataset(val_arrays, training=False),
                config.val_batch_size or config.batch_size,
                shuffle=False,
                workers=config.num_workers,
                seed=None,
            ),
            ckpt_path=run_dir / RESUME_CHECKPOINT if resume else None,
        )
    return _finish(run_dir, trainer, history)


def _fit(trainer: L.Trainer, module: MRBCRModule, **kwargs: Any) -> None:
    # The resume checkpoint is ours and holds only tensors and plain values (Lightning takes
    # `weights_only` for loading it since 2.5).
    if "weights_only" in inspect.signature(trainer.fit).parameters:
        kwargs["weights_only"] = True
    trainer.fit(module, **kwargs)


@contextlib.contextmanager
def _interruptible(
    trainer: L.Trainer, files: RunFiles, run_dir: Path, history: MetricsLog
) -> Iterator[None]:
    """Turn Ctrl-C into a clean stop after the current step, then `TrainingInterrupted`.

    The first Ctrl-C asks `RunFiles` to save the step it is in and stop; a second one
    interrupts at once (Lightning then exits; the run resumes from its last checkpoint).
    """

    def request_stop(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if files.stop_requested:
            raise KeyboardInterrupt(name)
        files.stop_requested, files.stop_signal = True, name
        logger.warning("stopping after the current step (press Ctrl-C again to stop at once)")

    previous = {sig: signal.signal(sig, request_stop) for sig in _stop_signals()}
    try:
        yield
    except (_StopHere, KeyboardInterrupt) as exc:
        raise _interrupted(trainer, run_dir, files, history, exc) from None
    except SystemExit:
        # Lightning answers a KeyboardInterrupt (the second Ctrl-C) with sys.exit(1), and after
        # SIGTERM it exits itself once the step (saved for the stop) is done.
        if isinstance(files.exception, KeyboardInterrupt) or files.stop_requested:
            raise _interrupted(trainer, run_dir, files, history, files.exception) from None
        raise
    finally:
        # Lightning leaves SIGINT ignored after a KeyboardInterrupt.
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_signals() -> list[signal.Signals]:
    """The signals that stop a run after its step: SIGINT, and SIGTERM unless it is ignored.

    Signal handlers can only be set from the main thread; elsewhere no signal can arrive.
    """
    if threading.current_thread() is not threading.main_thread():
        return []
    wanted = [signal.SIGINT]
    if hasattr(signal, "SIGTERM") and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
        wanted.append(signal.SIGTERM)
    return wanted


def _interrupted(
    trainer: L.Trainer,
    run_dir: Path,
    files: RunFiles,
    history: MetricsLog,
    cause: BaseException | None,
) -> TrainingInterrupted:
    """Plot the curves so far; the exception that reports where to resume from.

    The signal is the one a stop was requested with, unless ``cause`` names another: the
    command line turns SIGTERM and SIGHUP into ``KeyboardInterrupt("SIGTERM")`` and so on.
    """
    # Yet another Ctrl-C only leaves the curves of the last checkpoint.
    with contextlib.suppress(KeyboardInterrupt):
        history.flush()
        if trainer.is_global_zero and history.path.is_file():
            plot_curves(run_dir)
    name = files.stop_signal
    if isinstance(cause, KeyboardInterrupt) and cause.args:
        name = str(cause.args[0])
    return TrainingInterrupted(run_dir, files.saved_step, name)


#: What a new run writes in its folder (deleted again when it fails before its first checkpoint).
_RUN_FILES = (BEST_MODEL, LAST_MODEL, RESUME_CHECKPOINT, METRICS_CSV, CURVES_PLOT, RUN_CONFIG)


@contextlib.contextmanager
def _disk_errors(files: RunFiles, resume: bool, before: set[str] | None) -> Iterator[None]:
    """A full disk or read-only file system while training: one OutputError saying what to do.

    A new run that fails before its first checkpoint is removed again (it cannot be resumed,
    and its files would stop it from being started again): the files of `_RUN_FILES` not
    in ``before`` (see `_run_files`).
    """
    try:
        yield
    except Exception as exc:  # OSError, or a library's error reporting one (see output_error)
        cause = exc.__cause__ if isinstance(exc, OutputError) else exc
        run_dir = files.run_dir
        if files.saved_step is None:
            advice = "free some space (or make it writable), then start the run again"
        else:
            advice = (
                f"free some space (or make it writable), then resume from step {files.saved_step} "
                f"with `debcr train --resume {run_dir}` (resume=True)"
            )
        error = None if cause is None else output_error(cause, run_dir, advice)
        if error is None:
            raise
        if files.saved_step is None and not resume:
            _remove_run(run_dir, before)
        raise error from exc


def _run_files(run_dir: Path) -> set[str] | None:
    """Which of `_RUN_FILES` are in ``run_dir``; None when there is no such folder."""
    if not run_dir.is_dir():
        return None
    return {name for name in _RUN_FILES if (run_dir / name).exists()}


def _remove_run(run_dir: Path, before: set[str] | None) -> None:
    """Delete the run files that were not there ``before``, and the folder if it was not."""
    for name in set(_RUN_FILES) - (before or set()):
        remove(run_dir / name)
    if before is None:
        with contextlib.suppress(OSError):
            run_dir.rmdir()


def _space_needed(net: MRBCR, resume: bool) -> int:
    """Bytes a run may need on disk at once beyond what its folder holds already.

    A model file holds the weights; the resume checkpoint the weights and Adam's two moments.
    Each is replaced atomically (the new file is written before the old one goes). A new run
    writes best, last and the checkpoint, and at times a second last or checkpoint; a resumed
    run only the new copy of one of them. Plus 1 MiB for the metrics, curves and headers.
    """
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    checkpoint = 3 * weights
    if resume:
        return checkpoint + 2**20
    return 3 * weights + 2 * checkpoint + 2**20


def _open_run(config: TrainConfig, resume: bool, space: int) -> Path:
    """Check that the run folder can be started (or resumed), with ``space`` bytes free.

    A new run's config is recorded in it. A full or read-only disk is an OutputError here,
    before any training, and a folder created for the run is removed again then.
    """
    run_dir = Path(config.weights_path)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(
            f"weights_path {run_dir} is a file, but a training run is a folder; give the run's "
            "folder (a new one to start a run)"
        )
    resume_ckpt = run_dir / RESUME_CHECKPOINT
    if resume and not resume_ckpt.is_file():
        raise FileNotFoundError(
            f"cannot resume: {resume_ckpt} does not exist (was the run started in {run_dir}?)"
        )
    if not resume and (run_dir / LAST_MODEL).exists():
        raise FileExistsError(
            f"{run_dir} already holds a training run; resume it (`debcr train --resume "
            f"{run_dir}` or resume=True) or choose another weights_path"
        )
    created = not run_dir.exists()
    with output_errors(run_dir):
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            check_space(run_dir, space)
            if not resume:
                save_config(config, run_dir / RUN_CONFIG)
        except BaseException:
            if created:  # nothing was written in it (the config is written atomically)
                with contextlib.suppress(OSError):
                    run_dir.rmdir()
            raise
    return run_dir


def _read_split(source: Any) -> Any:
    """A split as given (arrays) or read from its NPZ file, with its ``info`` record."""
    if isinstance(source, (str, os.PathLike)):
        return load(Path(source))
    return source


def _starting_model(start: Any) -> tuple[MRBCR, dict[str, Any]]:
    """The network to train, in training mode, and the metadata of where it came from."""
    net = load_source(start)
    parent = dict(getattr(net, "metadata", {}))
    # The weights will change: provenance, licence text and the cached halo of the starting
    # model no longer describe them.
    net.metadata = {"task": parent.get("task", "")}
    net.train()
    return net, parent


def _provenance(
    config: TrainConfig,
    mode: TrainingMode,
    start: Any,
    parent: dict[str, Any],
    normalization: dict[str, Any],
    precision: str,
) -> dict[str, Any]:
    """What the trained model files record about their making.

    ``config`` is recorded as given (``precision: auto`` stays ``auto``, as in the run's
    ``config.yaml``, so a resumed run chooses again for the machine it runs on), and
    ``precision`` is the Lightning precision the run trained at, ``mode`` the training mode.
    """
    return {
        "task": parent.get("task", ""),
        "trained_with": "debcr",
        "init_model": str(start),
        "init_source": parent.get("source", ""),
        "init_license": parent.get("license", ""),
        "config": config.to_dict(),
        "recipe": config.recipe,
        "precision": precision,
        "normalization": normalization,
        "mode": mode.name,
    }


def _data_provenance(
    source: Any, split: Any, arrays: dict[str, Any], normalised_here: dict[str, Any]
) -> dict[str, Any]:
    """Where one split came from: its file, its ``debcr prepare`` record, its shapes, and the
    arrays that held raw intensities and were normalised by `normalise_raw`."""
    record: dict[str, Any] = {"arrays": {k: list(v.shape) for k, v in arrays.items()}}
    if normalised_here:
        record["normalised_here"] = normalised_here
    if isinstance(source, (str, os.PathLike)):
        record["file"] = str(Path(source).resolve())
    info = SetInfo.from_split(split)
    if info is not None:
        record.update(info.provenance())
    return record


#: Lightning's name of each precision `debcr.runtime.default_precision` chooses.
_LIGHTNING_PRECISION = {"bfloat16": "bf16-mixed", "float32": "32-true"}


def trainer_precision(config: TrainConfig) -> str:
    """Lightning's precision for ``config``: its ``precision``, with ``auto`` resolved.

    ``auto`` is ``bf16-mixed`` where `debcr.runtime.default_precision` is ``bfloat16``
    for the device the trainer uses (a CPU computing bfloat16 natively, a CUDA GPU of compute
    capability 8.0 or later), and ``32-true`` elsewhere (Apple MPS included). It never
    chooses ``16-mixed``, whose checkpoints hold a gradient scaler: a run started with
    ``auto`` resumes on another machine with the precision that machine computes fastest.
    """
    if config.precision != "auto":
        return config.precision
    device = _trainer_device(config)
    if device.type == "cuda" and not torch.cuda.is_initialized() and _may_fork(config):
        # Asking the GPU would initialise CUDA, after which Lightning cannot fork the ranks.
        logger.info("precision auto: float32 for a forked multi-GPU run; set bf16-mixed to use it")
        chosen = "float32"
    else:
        chosen = default_precision(device)
    return _LIGHTNING_PRECISION.get(chosen, "32-true")


def _trainer_device(config: TrainConfig) -> torch.device:
    """The (first) device Lightning trains on for ``config.accelerator`` and ``devices``."""
    accelerator = config.accelerator
    mps = torch.backends.mps.is_available()
    if accelerator == "auto":  # Lightning's order: MPS, then CUDA, then the CPU
        accelerator = "mps" if mps else "cuda" if torch.cuda.is_available() else "cpu"
    elif accelerator == "gpu":
        accelerator = "mps" if mps else "cuda"
    if accelerator != "cuda":
        return torch.device(accelerator)
    if not torch.cuda.is_available():
        return torch.device("cpu")  # Lightning refuses the run itself, with its own message
    devices = config.devices
    return torch.device("cuda", devices[0] if isinstance(devices, list) else 0)


def _may_fork(config: TrainConfig) -> bool:
    """Whether Lightning may fork the processes of this run (CUDA must not be set up then).

    ``ddp_notebook`` forks; so does the ``auto`` strategy on several GPUs in an interactive
    session (Lightning's ``ddp_fork`` choice there).
    """
    interactive = hasattr(sys, "ps1") or bool(sys.flags.interactive)
    return config.strategy == "ddp_notebook" or (config.strategy == "auto" and interactive)


def _trainer(
    config: TrainConfig,
    precision: str,
    history: MetricsLog,
    files: RunFiles,
    callbacks: Sequence[Callback],
) -> L.Trainer:
    run_dir = files.run_dir
    progress = [StepProgressBar()] if config.progress else []
    # Set when a trainer is built rather than at import (both calls are idempotent).
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_WITHOUT_TIPS)
    # Lightning 2.6 builds torch pytree specs in a way torch 2.13 deprecates, once per run; the
    # warning names Lightning's code and nothing the user can change.
    warnings.filterwarnings(
        "ignore", message=r".*isinstance\(treespec, LeafSpec\)", module=r"lightning\."
    )
    return L.Trainer(
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
        precision=precision,
        callbacks=[
            files,
            EarlyStopping(
                monitor="val_loss",
                patience=config.patience,
                mode="min",
                check_on_train_epoch_end=False,
            ),
            *progress,
            *callbacks,
        ],
        logger=history,
        enable_checkpointing=False,
        enable_progress_bar=config.progress,
        enable_model_summary=False,
        log_every_n_steps=1,
        deterministic=config.seed is not None,
        default_root_dir=run_dir,
    )


def _finish(run_dir: Path, trainer: L.Trainer, history: MetricsLog) -> MRBCR:
    """Plot the curves, measure the best model's halo once, and return the best model."""
    best = run_dir / BEST_MODEL if (run_dir / BEST_MODEL).is_file() else run_dir / LAST_MODEL
    history.flush()
    if trainer.is_global_zero:
        plot_curves(run_dir)
        _store_halo(best)
    return load_model(best)


def _store_halo(path: Path) -> None:
    """Measure the trained model's receptive field once, so predictions need not."""
    model = load_model(path)
    store_halos(model)
    save_model(model, path, overwrite=True)
