"""A progress bar over the steps of a run.

A run is step-based (``max_steps``, ``max_epochs=-1``); Lightning's bar counts the batches
of each epoch and is labelled with the epoch ("Epoch 6"; older versions "Epoch 6/-2", from
``max_epochs - 1``), which says nothing about how far the run is. This bar shows
``step/num_steps`` over the whole run and, on resume, starts at the restored step.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar

__all__ = ["StepProgressBar"]


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar counting the steps of the run instead of an epoch's batches."""

    @property
    def train_description(self) -> str:
        return "training"

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.train_progress_bar = bar = self.init_train_tqdm()
        bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
        # tqdm measures the rate (and so the remaining time) from `initial` on.
        bar.initial = bar.n = trainer.global_step
        bar.refresh()

    def on_train_epoch_start(self, trainer: Any, *_: Any) -> None:
        """One bar for the whole run: nothing to reset at a new epoch."""

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        step = trainer.global_step
        if bar is not None and not bar.disable and self._should_update(step, bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=True)
