"""The CARE U-Net (CSBDeep) as a plain `torch.nn.Module`: the field's standard baseline.

Same layout as CSBDeep's ``unet_block`` with CARE's defaults for 2-D denoising: depth 2,
32 first-level filters, 3×3 kernels, two convolutions per level, ReLU, max-pooling,
nearest-neighbour up-sampling, skip connections by concatenation, a linear 1×1 head and a
residual output (the network predicts ``x + f(x)``). With one input and one output channel
it has exactly 332,641 parameters, as the Keras original.

It is provided so that m-rBCR can be compared with CARE on identical data and budgets
(``benchmarks/``); it is not a trainer of its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _conv(c_in: int, c_out: int, kernel: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)


class CAREUNet(nn.Module):
    """CSBDeep's CARE U-Net.

    Parameters
    ----------
    depth : int
        Number of pooling levels (CARE: 2).
    filters : int
        Filters of the first level; doubled at every level down (CARE: 32).
    kernel : int
        Convolution kernel size (CARE: 3).
    channels : int
        Input and output channels (1 for a grey-level image).
    residual : bool
        Predict ``x + f(x)`` (CARE's default when input and output channels agree).
    """

    def __init__(
        self,
        depth: int = 2,
        filters: int = 32,
        kernel: int = 3,
        channels: int = 1,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.residual = residual
        self.down = nn.ModuleList()
        c_in = channels
        for level in range(depth):
            width = filters * 2**level
            self.down.append(
                nn.ModuleList([_conv(c_in, width, kernel), _conv(width, width, kernel)])
            )
            c_in = width
        # CSBDeep's bottom: n_conv-1 convolutions at the next width, then back to the level above.
        self.bottom = nn.ModuleList(
            [
                _conv(c_in, filters * 2**depth, kernel),
                _conv(filters * 2**depth, filters * 2 ** max(0, depth - 1), kernel),
            ]
        )
        self.up = nn.ModuleList()
        c_in = filters * 2 ** max(0, depth - 1)
        for level in reversed(range(depth)):
            skip = filters * 2**level
            width = filters * 2**level
            out = filters * 2 ** max(0, level - 1)
            self.up.append(
                nn.ModuleList([_conv(c_in + skip, width, kernel), _conv(width, out, kernel)])
            )
            c_in = out
        self.head = nn.Conv2d(c_in, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Restore a batch ``(N, C, H, W)``; H and W must be multiples of ``2**depth``."""
        skips = []
        y = x
        for convs in self.down:
            for conv in convs:
                y = F.relu(conv(y))
            skips.append(y)
            y = F.max_pool2d(y, 2)
        for conv in self.bottom:
            y = F.relu(conv(y))
        for convs, skip in zip(self.up, reversed(skips)):
            y = F.interpolate(y, scale_factor=2, mode="nearest")
            y = torch.cat([y, skip], dim=1)
            for conv in convs:
                y = F.relu(conv(y))
        y = self.head(y)
        return x + y if self.residual else y

    def restore(self, x: Tensor) -> Tensor:
        """Full-resolution restoration (the same interface as `debcr.nn.MRBCR.restore`)."""
        return self.forward(x)
