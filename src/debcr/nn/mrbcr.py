"""The m-rBCR network of DeBCR as a plain `torch.nn.Module`.

The structure follows the network shipped with the original debcr 0.1.0
(TensorFlow) exactly, so its published weights load one to one:

* three scales made by strided subsampling (``x[::2, ::2]``, ``x[::4, ::4]``);
* a forward ("BCR") sub-network: a 12-layer per-pixel MLP per scale, one shared
  fusion module across scales, and 1×1 heads;
* an inverse sub-network: per scale six 1×5 convolutions along the width and
  four residual-dense blocks, one shared coarse-to-fine fusion, and 9×9 heads
  applied to "features + forward output".

Resize targets are derived from the input, so any height and width divisible
by 4 work (`pad_to_multiple` handles the rest).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debcr.defaults import SIZE_MULTIPLE


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    # TF2 bilinear resize = half-pixel centres, no antialias, edge clamp, which is
    # exactly PyTorch's align_corners=False without antialias.
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class PixelMLP(nn.Module):
    """Per-pixel MLP: ``depth`` 1×1 convolutions with ReLU (the original's Dense stack)."""

    def __init__(self, in_channels: int = 1, width: int = 32, depth: int = 12) -> None:
        super().__init__()
        channels = [in_channels] + [width] * depth
        self.layers = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 1) for c_in, c_out in itertools.pairwise(channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = F.relu(layer(x), inplace=True)
        return x


class Fusion(nn.Module):
    """Concatenate two maps, then 1×1 conv + ReLU and a linear 3×3 conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(in_channels, out_channels, 1)
        self.conv3x3 = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.conv3x3(F.relu(self.conv1x1(torch.cat([a, b], dim=1)), inplace=True))


class ResidualDenseBlock(nn.Module):
    """Residual-dense block with growth 4 and depth 3; adds 4 channels.

    Each step appends ``conv3x3(relu(conv3x3(x)))`` (4 channels) to the running
    features; a 1×1 conv squeezes them to 4 channels, which are put *in front
    of* the block input.
    """

    def __init__(self, in_channels: int, growth: int = 4, depth: int = 3) -> None:
        super().__init__()
        self.expand = nn.ModuleList()
        self.refine = nn.ModuleList()
        for i in range(depth):
            self.expand.append(nn.Conv2d(in_channels + i * growth, growth, 3, padding=1))
            self.refine.append(nn.Conv2d(growth, growth, 3, padding=1))
        self.squeeze = nn.Conv2d(in_channels + depth * growth, growth, 1)

    def forward(self, x: Tensor) -> Tensor:
        features = x
        for expand, refine in zip(self.expand, self.refine):
            features = torch.cat([features, refine(F.relu(expand(features), inplace=True))], dim=1)
        return torch.cat([self.squeeze(features), x], dim=1)


class InverseBranch(nn.Module):
    """Six 1×5 convolutions along the width (ReLU), then four residual-dense blocks."""

    def __init__(self, in_channels: int, width: int = 32, n_conv: int = 6, n_rdb: int = 4) -> None:
        super().__init__()
        channels = [in_channels] + [width] * n_conv
        # The original applies Keras Conv1D to 4-D tensors: a kernel along W only.
        self.row_convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, (1, 5), padding=(0, 2))
            for c_in, c_out in itertools.pairwise(channels)
        )
        self.rdbs = nn.ModuleList(ResidualDenseBlock(width + 4 * i) for i in range(n_rdb))
        self.out_channels = width + 4 * n_rdb

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.row_convs:
            x = F.relu(conv(x), inplace=True)
        for rdb in self.rdbs:
            x = rdb(x)
        return x


class ForwardNet(nn.Module):
    """The forward ("BCR") sub-network: 1-channel inputs at 3 scales → 1-channel maps."""

    def __init__(self, width: int = 32, depth: int = 12) -> None:
        super().__init__()
        self.mlp0 = PixelMLP(1, width, depth)
        self.mlp2 = PixelMLP(1, width, depth)
        self.mlp4 = PixelMLP(1, width, depth)
        self.fusion = Fusion(2 * width, width)
        self.head0 = nn.Conv2d(2 * width, 1, 1)
        self.head2 = nn.Conv2d(2 * width, 1, 1)
        self.head4 = nn.Conv2d(width, 1, 1)

    def forward(self, x0: Tensor, x2: Tensor, x4: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        full, half = x0.shape[-2:], x2.shape[-2:]
        y0, y2, y4 = self.mlp0(x0), self.mlp2(x2), self.mlp4(x4)
        y2_up, y4_up = _resize(y2, full), _resize(y4, full)
        f0 = self.fusion(y0, y2_up)
        f2 = _resize(self.fusion(y2_up, y4_up), half)
        out0 = self.head0(torch.cat([y0, f0], dim=1))
        out2 = self.head2(torch.cat([y2, f2], dim=1))
        out4 = self.head4(y4)
        return out0, out2, out4


class InverseNet(nn.Module):
    """The inverse sub-network: coarse-to-fine restoration from the forward outputs."""

    def __init__(self, width: int = 32, head_kernel: int = 9) -> None:
        super().__init__()
        self.branch4 = InverseBranch(1, width)
        features = self.branch4.out_channels
        self.branch2 = InverseBranch(features, width)
        self.branch0 = InverseBranch(features, width)
        self.fusion = Fusion(features + 1, features)
        pad = head_kernel // 2
        self.head0 = nn.Conv2d(features, 1, head_kernel, padding=pad)
        self.head2 = nn.Conv2d(features, 1, head_kernel, padding=pad)
        self.head4 = nn.Conv2d(features, 1, head_kernel, padding=pad)

    def forward(self, i0: Tensor, i2: Tensor, i4: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a4 = self.branch4(i4)
        a2 = self.branch2(self.fusion(i2, _resize(a4, i2.shape[-2:])))
        a0 = self.branch0(self.fusion(i0, _resize(a2, i0.shape[-2:])))
        # The 1-channel forward output is broadcast-added to every feature channel.
        return self.head0(a0 + i0), self.head2(a2 + i2), self.head4(a4 + i4)


class MRBCR(nn.Module):
    """m-rBCR: multi-stage residual BCR network (236,630 parameters).

    ``forward`` takes a batch ``(N, 1, H, W)`` with H and W divisible by 4 and
    returns the restored images at full, ½ and ¼ resolution (all three are
    supervised in training). `restore` returns only the full-resolution one.
    """

    def __init__(self) -> None:
        super().__init__()
        self.forward_net = ForwardNet()
        self.inverse_net = InverseNet()
        #: Provenance and settings (task, normalisation, source) kept with the weights.
        self.metadata: dict = {}

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        check_input_shape(x)
        x2, x4 = x[..., ::2, ::2], x[..., ::4, ::4]
        return self.inverse_net(*self.forward_net(x, x2, x4))

    def restore(self, x: Tensor) -> Tensor:
        """Full-resolution output only (what inference needs)."""
        return self(x)[0]


class MRBCRRestorer(MRBCR):
    """m-rBCR whose ``forward`` returns only the full-resolution restoration.

    The same parameters (and state-dict keys) as `MRBCR`; this is the form exported to
    TorchScript, ONNX and BioImage Model Zoo packages, whose consumers expect one output.
    """

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        # Tracing records shapes symbolically; a Python check on them would be frozen in.
        if not torch.jit.is_tracing():
            check_input_shape(x)
        x2, x4 = x[..., ::2, ::2], x[..., ::4, ::4]
        return self.inverse_net(*self.forward_net(x, x2, x4))[0]


def check_input_shape(x: Tensor) -> None:
    """Raise a clear error unless ``x`` is ``(N, 1, H, W)`` with H, W divisible by 4."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(
            f"m-rBCR expects a batch of single-channel images shaped (N, 1, H, W); "
            f"got a tensor of shape {tuple(x.shape)}."
        )
    h, w = x.shape[-2:]
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE or h == 0 or w == 0:
        raise ValueError(
            f"m-rBCR needs height and width divisible by {SIZE_MULTIPLE}; got {h}×{w}. "
            "Use debcr.model.predict (which pads and tiles automatically) or "
            "debcr.nn.pad_to_multiple."
        )


def pad_to_multiple(x: Tensor, multiple: int = SIZE_MULTIPLE) -> tuple[Tensor, tuple[int, int]]:
    """Reflect-pad the last two axes of ``x`` up to a multiple of ``multiple``.

    Returns the padded tensor and the original ``(H, W)`` to crop back to.
    """
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def init_glorot_(model: nn.Module) -> nn.Module:
    """Initialise like Keras: Glorot-uniform kernels, zero biases (in place)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return model
