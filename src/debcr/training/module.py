"""The Lightning module that trains m-rBCR (the data and the loss are the mode's)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch.optim.swa_utils import AveragedModel
from torchmetrics import MeanMetric

from debcr.nn import MRBCR
from debcr.nn.merged import merged_forward
from debcr.training.modes import Supervised, TrainingMode


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    # Channels-last convolutions train ~1.8× faster on CPU (oneDNN) and suit GPUs as well.
    return x.contiguous(memory_format=torch.channels_last)


#: Where the cosine schedule ends, as a fraction of the learning rate.
FINAL_LR_FRACTION = 0.01


def lr_factor(step: int, total: int, schedule: str, warmup: int) -> float:
    """The learning rate of optimiser step ``step`` (from 0), as a fraction of the base rate.

    ``constant``: 1. ``cosine``: a linear rise over the first ``warmup`` steps (from
    1/``warmup``), then a half cosine from 1 down to `FINAL_LR_FRACTION` at step ``total``.
    """
    if schedule == "constant":
        return 1.0
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))


def _ema(decay: float) -> Callable[[list, list, torch.Tensor], None]:
    """An in-place average update with the decay warmed up: min(decay, (1 + n) / (10 + n))."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        count = float(n)
        weight = 1 - min(decay, (1 + count) / (10 + count))
        for avg, cur in zip(averaged, current, strict=True):
            avg.lerp_(cur, weight)

    return update


def _psnr(mse: torch.Tensor) -> torch.Tensor:
    """PSNR for data range 1 (the original's metric)."""
    return -10 * torch.log10(mse.float().clamp_min(1e-12))


class MRBCRModule(L.LightningModule):
    """Wraps an `MRBCR` (kept plain) with its training mode and optimiser.

    The mode (`debcr.training.modes`) builds each batch and gives the loss. Validation
    runs over the *whole* validation set (the original used one random batch); ``val_loss``
    is the patch-weighted mean of the loss, ``val_psnr`` the PSNR (range 1) of the
    full-resolution output against the batch's target over all validation pixels that the
    mode scores (all pixels; the masked ones in Noise2Void). In the self-supervised modes the
    target is noisy, so this PSNR is far below the PSNR against clean data; it still rises as
    the network improves.

    The network runs with merged weights (`debcr.nn.merged.merged_forward`: the same function
    and gradients, fewer and larger convolutions) unless its class overrides ``forward``.

    With ``ema_decay`` > 0 an exponential moving average of the weights (``ema``, a
    submodule, so that the resume checkpoint holds it) is updated after every optimiser
    step; validation and `model_to_save` use it. The learning rate follows ``lr_schedule``
    (`lr_factor`) over ``total_steps``.
    """

    def __init__(
        self,
        net: MRBCR,
        mode: TrainingMode | None = None,
        *,
        learning_rate: float = 1e-3,
        adam_eps: float = 1e-7,
        lr_schedule: str = "constant",
        warmup_fraction: float = 0.0,
        total_steps: int = 1,
        ema_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)
        self.mode = mode if mode is not None else Supervised()
        self.learning_rate = learning_rate
        self.adam_eps = adam_eps
        self.lr_schedule = lr_schedule
        self.total_steps = total_steps
        self.warmup_steps = round(warmup_fraction * total_steps)
        self.ema: AveragedModel | None = None
        if ema_decay > 0:
            self.ema = AveragedModel(self.net, multi_avg_fn=_ema(ema_decay), use_buffers=True)
            self.ema.requires_grad_(False)
        self.val_loss = MeanMetric()
        self.val_mse = MeanMetric()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        data = self.mode.batch(batch, training=True)
        outputs = self._outputs(_channels_last(data.inputs))
        loss = self.mode.loss(outputs, data)
        n = data.inputs.shape[0]
        mse = self.mode.squared_error(outputs[0].detach(), data)
        self.log("train_loss", loss, prog_bar=True, batch_size=n)
        self.log("train_psnr", _psnr(mse), prog_bar=True, batch_size=n)
        if self._trainer is not None:  # a step may also be taken by hand (parity tests)
            self.log("lr", self.optimizers().param_groups[0]["lr"], batch_size=n)
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Here, not in on_train_batch_end: callbacks (the resume checkpoint) see the step's
        # average before the module's own batch-end hook runs.
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    def model_to_save(self) -> MRBCR:
        """The network that is validated and saved: the weights' average, if kept."""
        return self.net if self.ema is None else self.ema.module

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        data = self.mode.batch(batch, training=False, batch_index=batch_idx)
        outputs = self._outputs(_channels_last(data.inputs), self.model_to_save())
        n = data.inputs.shape[0]
        self.val_loss.update(self.mode.loss(outputs, data), n)
        self.val_mse.update(self.mode.squared_error(outputs[0], data), n)

    def _outputs(self, x: torch.Tensor, net: MRBCR | None = None) -> tuple[torch.Tensor, ...]:
        net = self.net if net is None else net
        if type(net).forward is MRBCR.forward:
            return merged_forward(net, x)
        return net(x)

    def on_validation_epoch_end(self) -> None:
        loss, mse = self.val_loss.compute(), self.val_mse.compute()
        self.val_loss.reset()
        self.val_mse.reset()
        self.log("val_loss", loss, prog_bar=True, sync_dist=False)
        self.log("val_psnr", _psnr(mse), prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        # The original: Adam with TF defaults (ε = 1e-7), constant learning rate.
        optimizer = torch.optim.Adam(
            self.net.parameters(), lr=self.learning_rate, eps=self.adam_eps
        )
        total, schedule, warmup = self.total_steps, self.lr_schedule, self.warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, total, schedule, warmup)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["debcr_rng"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("debcr_rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
