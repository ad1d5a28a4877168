"""The Lightning module that trains m-rBCR (the recipe and the data are the mode's)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torchmetrics import MeanMetric

from debcr.nn import MRBCR
from debcr.nn.merged import merged_forward
from debcr.training.modes import Supervised, TrainingMode


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    # Channels-last convolutions train ~1.8× faster on CPU (oneDNN) and suit GPUs as well.
    return x.contiguous(memory_format=torch.channels_last)


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
    """

    def __init__(
        self,
        net: MRBCR,
        mode: TrainingMode | None = None,
        *,
        learning_rate: float = 1e-3,
        adam_eps: float = 1e-7,
    ) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)
        self.mode = mode if mode is not None else Supervised()
        self.learning_rate = learning_rate
        self.adam_eps = adam_eps
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
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        data = self.mode.batch(batch, training=False, batch_index=batch_idx)
        outputs = self._outputs(_channels_last(data.inputs))
        n = data.inputs.shape[0]
        self.val_loss.update(self.mode.loss(outputs, data), n)
        self.val_mse.update(self.mode.squared_error(outputs[0], data), n)

    def _outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if type(self.net).forward is MRBCR.forward:
            return merged_forward(self.net, x)
        return self.net(x)

    def on_validation_epoch_end(self) -> None:
        loss, mse = self.val_loss.compute(), self.val_mse.compute()
        self.val_loss.reset()
        self.val_mse.reset()
        self.log("val_loss", loss, prog_bar=True, sync_dist=False)
        self.log("val_psnr", _psnr(mse), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # The original: Adam with TF defaults (ε = 1e-7), constant learning rate.
        return torch.optim.Adam(self.net.parameters(), lr=self.learning_rate, eps=self.adam_eps)

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
