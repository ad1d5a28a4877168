"""An inference-only form of m-rBCR: the same function, rearranged to compute less.

`MRBCR` mirrors the published network layer for layer, so that its weights
load one to one and training sees exactly the original's graph. Restoration needs only the
full-resolution output, and several layers are linear maps that can be merged without changing
the result (up to float rounding). `inference_network` builds `FastMRBCR` from a
model's weights; every inference backend runs it. The rearrangements, all exact:

* the ½ and ¼ heads of the inverse network, unused by restoration, are dropped;
* a 1×1 convolution commutes with bilinear resizing (a per-pixel linear map applied before or
  after an interpolation whose weights sum to one), so the fusion modules' 1×1 convolutions
  run at the coarse scale, before upsampling;
* a linear 3×3 convolution followed by a 1×1 head is one 3×3 convolution with the head's
  outputs; followed by bilinear halving (which, for even sizes, is a 2×2 mean) it is one 4×4
  convolution with stride 2;
* a 1×1 convolution over concatenated maps is a sum of 1×1 convolutions over each map, so the
  forward heads need no concatenation;
* in a residual-dense block the convolutions that read the same features (the three
  expansions and the final squeeze) are merged into one convolution per feature map, with
  the 1×1 squeeze embedded as the centre tap of a 3×3 kernel, and the squeeze of the last
  refinement is folded into that refinement;
* the 9×9 single-output head is a 3×3 convolution with 16 outputs on the 4×4
  pixel-unshuffled features, followed by a pixel shuffle: the same taps, but a dense
  convolution instead of one with a single output channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debcr.nn.mrbcr import MRBCR, Fusion, InverseBranch, ResidualDenseBlock

__all__ = ["FastMRBCR", "has_inference_form", "inference_network"]


def _conv(weight: Tensor, bias: Tensor | None, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    out_ch, in_ch, kh, kw = weight.shape
    conv = nn.Conv2d(in_ch, out_ch, (kh, kw), stride=stride, padding=padding, bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def _centre(weight_1x1: Tensor) -> Tensor:
    """A 1×1 kernel as the centre tap of a 3×3 kernel."""
    return F.pad(weight_1x1, (1, 1, 1, 1))


def _up(x: Tensor, factor: int) -> Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def _halving(weight: Tensor) -> Tensor:
    """The 4×4 stride-2 kernel of a 3×3 convolution (padding 1) followed by a 2×2 mean."""
    out_ch, in_ch = weight.shape[:2]
    merged = weight.new_zeros(out_ch, in_ch, 4, 4)
    for dy in (0, 1):
        for dx in (0, 1):
            merged[:, :, dy : dy + 3, dx : dx + 3] += weight / 4
    return merged


def _unshuffled_head(weight: Tensor, factor: int = 4) -> Tensor:
    """A ``k×k`` single-output kernel (k = 2·factor + 1) as a 3×3 kernel on
    pixel-unshuffled input with ``factor²`` outputs (one per output sub-pixel)."""
    in_ch, k = weight.shape[1], weight.shape[-1]
    if weight.shape[0] != 1 or k != 2 * factor + 1:
        raise ValueError(f"expected a (1, C, {2 * factor + 1}, {2 * factor + 1}) head kernel")
    merged = weight.new_zeros(factor * factor, in_ch, factor, factor, 3, 3)
    half = k // 2
    for oy in range(factor):
        for ox in range(factor):
            for iy in range(factor):
                for ix in range(factor):
                    for by in (-1, 0, 1):
                        for bx in (-1, 0, 1):
                            ty = factor * by + iy - oy + half
                            tx = factor * bx + ix - ox + half
                            if 0 <= ty < k and 0 <= tx < k:
                                merged[oy * factor + ox, :, iy, ix, by + 1, bx + 1] = weight[
                                    0, :, ty, tx
                                ]
    return merged.reshape(factor * factor, in_ch * factor * factor, 3, 3)


class _FastRDB(nn.Module):
    """A residual-dense block with its convolutions merged per input (see the module notes)."""

    def __init__(self, rdb: ResidualDenseBlock) -> None:
        super().__init__()
        e, r, s = rdb.expand, rdb.refine, rdb.squeeze
        c = e[0].in_channels
        g = e[0].out_channels
        sw = s.weight  # (g, c + 3g, 1, 1)
        # From the block input: all three expansions and the squeeze's share.
        self.from_x = _conv(
            torch.cat([e[0].weight, e[1].weight[:, :c], e[2].weight[:, :c], _centre(sw[:, :c])]),
            torch.cat([e[0].bias, e[1].bias, e[2].bias, s.bias]),
            padding=1,
        )
        self.refine0, self.refine1 = r[0], r[1]
        # From the first and second refinements: later expansions and the squeeze's share.
        self.from_r1 = _conv(
            torch.cat(
                [e[1].weight[:, c : c + g], e[2].weight[:, c : c + g], _centre(sw[:, c : c + g])]
            ),
            None,
            padding=1,
        )
        self.from_r2 = _conv(
            torch.cat([e[2].weight[:, c + g :], _centre(sw[:, c + g : c + 2 * g])]), None, padding=1
        )
        # The third refinement feeds only the squeeze: refinement and squeeze as one conv.
        s3 = sw[:, c + 2 * g :, 0, 0]
        self.refine2_squeeze = _conv(
            torch.einsum("os,sikl->oikl", s3, r[2].weight), s3 @ r[2].bias, padding=1
        )
        self.g = g

    def forward(self, x: Tensor) -> Tensor:
        g = self.g
        a = self.from_x(x)
        r1 = self.refine0(F.relu(a[:, :g]))
        b = self.from_r1(r1)
        r2 = self.refine1(F.relu(a[:, g : 2 * g] + b[:, :g]))
        c = self.from_r2(r2)
        e2 = a[:, 2 * g : 3 * g] + b[:, g : 2 * g] + c[:, :g]
        squeezed = a[:, 3 * g :] + b[:, 2 * g :] + c[:, g:] + self.refine2_squeeze(F.relu(e2))
        return torch.cat([squeezed, x], dim=1)


class _FastBranch(nn.Module):
    def __init__(self, branch: InverseBranch) -> None:
        super().__init__()
        self.row_convs = branch.row_convs
        self.rdbs = nn.ModuleList(_FastRDB(rdb) for rdb in branch.rdbs)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.row_convs:
            x = F.relu(conv(x))
        for rdb in self.rdbs:
            x = rdb(x)
        return x


class _Step(nn.Module):
    """One coarse-to-fine step of the inverse network: fusion, then a branch."""

    def __init__(self, fusion: Fusion, branch: InverseBranch, factor: int) -> None:
        super().__init__()
        w, b = fusion.conv1x1.weight, fusion.conv1x1.bias
        self.own = _conv(w[:, :1], b)  # the 1-channel forward output
        self.coarse = _conv(w[:, 1:], None)  # the coarser features, before upsampling
        self.conv3x3 = fusion.conv3x3
        self.branch = _FastBranch(branch)
        self.factor = factor

    def forward(self, own: Tensor, coarse: Tensor) -> Tensor:
        fused = F.relu(self.own(own) + _up(self.coarse(coarse), self.factor))
        return self.branch(self.conv3x3(fused))


class FastMRBCR(nn.Module):
    """Inference-only m-rBCR: ``forward(x)`` returns the full-resolution restoration.

    Built by `inference_network`; takes ``(N, 1, H, W)`` with H and W divisible by 4,
    like `debcr.nn.MRBCR.restore`, and agrees with it to float rounding.
    """

    def __init__(self, model: MRBCR) -> None:
        super().__init__()
        fwd, inv = model.forward_net, model.inverse_net
        width = fwd.fusion.conv3x3.out_channels
        self.mlp0, self.mlp2, self.mlp4 = fwd.mlp0, fwd.mlp2, fwd.mlp4
        fw, fb = fwd.fusion.conv1x1.weight, fwd.fusion.conv1x1.bias
        h0, h2 = fwd.head0.weight, fwd.head2.weight
        f3w, f3b = fwd.fusion.conv3x3.weight, fwd.fusion.conv3x3.bias
        # y0 → [fusion share (first input), head share]
        self.y0_maps = _conv(
            torch.cat([fw[:, :width], h0[:, :width]]), torch.cat([fb, fwd.head0.bias])
        )
        # y2 → [fusion share as second input (f0), as first input (f2), head share]
        self.y2_maps = _conv(torch.cat([fw[:, width:], fw[:, :width], h2[:, :width]]), None)
        # y4 → [fusion share as second input (f2)]; a bias commutes with bilinear upsampling.
        self.y4_maps = _conv(fw[:, width:], fb)
        self.head4 = fwd.head4
        # Fusion 3×3 (linear) then the heads' f-share (1×1): one conv; for ½ also the halving.
        k0 = torch.einsum("oc,cikl->oikl", h0[:, width:, 0, 0], f3w)
        k2 = torch.einsum("oc,cikl->oikl", h2[:, width:, 0, 0], f3w)
        self.f0_head = _conv(k0, h0[:, width:, 0, 0] @ f3b, padding=1)
        bias2 = h2[:, width:, 0, 0] @ f3b + fwd.head2.bias
        self.f2_head = _conv(_halving(k2), bias2, stride=2, padding=1)
        self.width = width
        self.branch4 = _FastBranch(inv.branch4)
        self.step2 = _Step(inv.fusion, inv.branch2, 2)
        self.step0 = _Step(inv.fusion, inv.branch0, 2)
        self.head = _conv(_unshuffled_head(inv.head0.weight), inv.head0.bias.repeat(16), padding=1)
        self.metadata = dict(getattr(model, "metadata", {}))

    def forward(self, x: Tensor) -> Tensor:
        w = self.width
        x2, x4 = x[..., ::2, ::2], x[..., ::4, ::4]
        y0, y2, y4 = self.mlp0(x), self.mlp2(x2), self.mlp4(x4)
        m0, m2 = self.y0_maps(y0), self.y2_maps(y2)
        up2 = _up(m2[:, : 2 * w], 2)
        pre0 = F.relu(m0[:, :w] + up2[:, :w])
        pre2 = F.relu(up2[:, w:] + _up(self.y4_maps(y4), 4))
        i0 = m0[:, w:] + self.f0_head(pre0)
        i2 = m2[:, 2 * w :] + self.f2_head(pre2)
        i4 = self.head4(y4)
        a4 = self.branch4(i4)
        a2 = self.step2(i2, a4)
        a0 = self.step0(i0, a2)
        return F.pixel_shuffle(self.head(F.pixel_unshuffle(a0 + i0, 4)), 4)

    def restore(self, x: Tensor) -> Tensor:
        """Same as ``forward`` (the interface inference expects of a network)."""
        return self(x)


def has_inference_form(model: nn.Module) -> bool:
    """Whether ``model`` is an m-rBCR whose restoration `inference_network` reproduces.

    A subclass that overrides ``restore`` keeps its own (it is run as it is).
    """
    return isinstance(model, MRBCR) and type(model).restore is MRBCR.restore


def inference_network(model: MRBCR) -> FastMRBCR:
    """The inference-only form of ``model`` (a copy: later changes to ``model`` do not reach it).

    Built in float32 on the CPU, in eval mode without gradients; move or cast it as needed.
    """
    import copy

    source = copy.deepcopy(model).float().cpu().eval()
    with torch.no_grad():
        fast = FastMRBCR(source)
    return fast.eval().requires_grad_(False)
