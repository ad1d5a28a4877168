"""m-rBCR's training forward with merged weights: the same function as `MRBCR.forward`, less work.

`debcr.nn.fast` rearranges the network for inference, once, from fixed weights. Training needs
all three outputs (the loss scores the full, ½ and ¼ restorations) and gradients for the
original parameters, so here every merged kernel is computed from the parameters inside the
forward pass. The merges are linear in the weights (concatenations, zero padding, products of
two kernels), so autograd carries the gradients back to the same parameters exactly, and the
model, its state dict and its files are unchanged. The rearrangements are those of
`debcr.nn.fast` (see its notes), with the ½ and ¼ heads kept:

* the residual-dense blocks run four convolutions instead of seven and no growing
  concatenations;
* the forward network's fusion 1×1 convolutions run before upsampling, its heads take no
  concatenations, and its linear fusion 3×3 convolutions are folded into the heads;
* the three 9×9 single-output heads run as 3×3 convolutions with 16 outputs on 4×4
  pixel-unshuffled features (where the size allows it).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from debcr.nn.fast import _centre, _halving, _up
from debcr.nn.mrbcr import MRBCR, Fusion, InverseBranch, ResidualDenseBlock, check_input_shape

__all__ = ["merged_forward"]


@functools.cache
def _unshuffle_taps(factor: int, k: int) -> tuple[Tensor, Tensor]:
    """For the 3×3 kernel on ``factor``-unshuffled input that replaces a ``k×k`` one: the
    index of the ``k×k`` tap each of its entries takes (flattened), and where it takes one."""
    half = k // 2
    index = torch.zeros(factor, factor, factor, factor, 3, 3, dtype=torch.long)
    valid = torch.zeros(index.shape, dtype=torch.bool)
    for oy in range(factor):
        for ox in range(factor):
            for iy in range(factor):
                for ix in range(factor):
                    for by in (-1, 0, 1):
                        for bx in (-1, 0, 1):
                            ty = factor * by + iy - oy + half
                            tx = factor * bx + ix - ox + half
                            if 0 <= ty < k and 0 <= tx < k:
                                index[oy, ox, iy, ix, by + 1, bx + 1] = ty * k + tx
                                valid[oy, ox, iy, ix, by + 1, bx + 1] = True
    return index, valid


def _head(x: Tensor, weight: Tensor, bias: Tensor, factor: int = 4) -> Tensor:
    """A ``(1, C, k, k)`` head (k = 2·factor + 1, padding k // 2) on ``x``: as a 3×3
    convolution with ``factor²`` outputs on the unshuffled input where the size allows."""
    k = weight.shape[-1]
    if k != 2 * factor + 1 or x.shape[-2] % factor or x.shape[-1] % factor:
        return F.conv2d(x, weight, bias, padding=k // 2)
    index, valid = _unshuffle_taps(factor, k)
    index, valid = index.to(weight.device), valid.to(weight.device)
    taps = weight[0].flatten(1)[:, index] * valid  # (C, f, f, f, f, 3, 3)
    kernel = taps.permute(1, 2, 0, 3, 4, 5, 6).reshape(factor * factor, -1, 3, 3)
    out = F.conv2d(F.pixel_unshuffle(x, factor), kernel, bias.repeat(factor * factor), padding=1)
    return F.pixel_shuffle(out, factor)


def _rdb(x: Tensor, rdb: ResidualDenseBlock) -> Tensor:
    e, r, s = rdb.expand, rdb.refine, rdb.squeeze
    c, g = e[0].in_channels, e[0].out_channels
    sw = s.weight  # (g, c + 3g, 1, 1)
    # From the block input: all three expansions and the squeeze's share, as one convolution.
    from_x = torch.cat([e[0].weight, e[1].weight[:, :c], e[2].weight[:, :c], _centre(sw[:, :c])])
    a = F.conv2d(x, from_x, torch.cat([e[0].bias, e[1].bias, e[2].bias, s.bias]), padding=1)
    r1 = F.conv2d(F.relu(a[:, :g]), r[0].weight, r[0].bias, padding=1)
    from_r1 = torch.cat(
        [e[1].weight[:, c : c + g], e[2].weight[:, c : c + g], _centre(sw[:, c : c + g])]
    )
    b = F.conv2d(r1, from_r1, padding=1)
    r2 = F.conv2d(F.relu(a[:, g : 2 * g] + b[:, :g]), r[1].weight, r[1].bias, padding=1)
    from_r2 = torch.cat([e[2].weight[:, c + g :], _centre(sw[:, c + g : c + 2 * g])])
    d = F.conv2d(r2, from_r2, padding=1)
    e2 = a[:, 2 * g : 3 * g] + b[:, g : 2 * g] + d[:, :g]
    # The third refinement feeds only the squeeze: refinement and squeeze as one convolution.
    s3 = sw[:, c + 2 * g :, 0, 0]
    refine_squeeze = torch.einsum("os,sikl->oikl", s3, r[2].weight)
    last = F.conv2d(F.relu(e2), refine_squeeze, s3 @ r[2].bias, padding=1)
    return torch.cat([a[:, 3 * g :] + b[:, 2 * g :] + d[:, g:] + last, x], dim=1)


def _branch(x: Tensor, branch: InverseBranch) -> Tensor:
    for conv in branch.row_convs:
        x = F.relu(conv(x))
    for rdb in branch.rdbs:
        x = _rdb(x, rdb)
    return x


def _step(own: Tensor, coarse: Tensor, fusion: Fusion, branch: InverseBranch) -> Tensor:
    """Fusion of a scale's forward output with the upsampled coarser features, then a branch.

    The fusion's 1×1 convolution runs on the coarse features before upsampling (it commutes
    with bilinear resizing)."""
    w, b = fusion.conv1x1.weight, fusion.conv1x1.bias
    fused = F.relu(F.conv2d(own, w[:, :1], b) + _up(F.conv2d(coarse, w[:, 1:]), 2))
    return _branch(fusion.conv3x3(fused), branch)


def merged_forward(model: MRBCR, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``model(x)`` (the full, ½ and ¼ restorations) computed with merged weights.

    Equal to `MRBCR.forward` up to float rounding, with gradients for ``model``'s
    parameters; used by training (`debcr.training.module.MRBCRModule`).
    """
    check_input_shape(x)
    fwd, inv = model.forward_net, model.inverse_net
    width = fwd.fusion.conv3x3.out_channels
    fw, fb = fwd.fusion.conv1x1.weight, fwd.fusion.conv1x1.bias
    h0, h2 = fwd.head0.weight, fwd.head2.weight
    f3w, f3b = fwd.fusion.conv3x3.weight, fwd.fusion.conv3x3.bias
    x2, x4 = x[..., ::2, ::2], x[..., ::4, ::4]
    y0, y2, y4 = fwd.mlp0(x), fwd.mlp2(x2), fwd.mlp4(x4)
    # y0 → [its fusion share, its head share]; y2 → [fusion share as the second input (for f0),
    # as the first input (for f2), head share]; y4 → [fusion share as the second input (f2)].
    m0 = F.conv2d(y0, torch.cat([fw[:, :width], h0[:, :width]]), torch.cat([fb, fwd.head0.bias]))
    m2 = F.conv2d(y2, torch.cat([fw[:, width:], fw[:, :width], h2[:, :width]]))
    up2 = _up(m2[:, : 2 * width], 2)
    pre0 = F.relu(m0[:, :width] + up2[:, :width])
    pre2 = F.relu(up2[:, width:] + _up(F.conv2d(y4, fw[:, width:], fb), 4))
    # The linear fusion 3×3 followed by a head's 1×1 share is one 3×3 convolution; at ½ it is
    # followed by the bilinear halving too (a 4×4 stride-2 convolution).
    k0 = torch.einsum("oc,cikl->oikl", h0[:, width:, 0, 0], f3w)
    k2 = torch.einsum("oc,cikl->oikl", h2[:, width:, 0, 0], f3w)
    i0 = m0[:, width:] + F.conv2d(pre0, k0, h0[:, width:, 0, 0] @ f3b, padding=1)
    bias2 = h2[:, width:, 0, 0] @ f3b + fwd.head2.bias
    i2 = m2[:, 2 * width :] + F.conv2d(pre2, _halving(k2), bias2, stride=2, padding=1)
    i4 = fwd.head4(y4)
    a4 = _branch(i4, inv.branch4)
    a2 = _step(i2, a4, inv.fusion, inv.branch2)
    a0 = _step(i0, a2, inv.fusion, inv.branch0)
    return (
        _head(a0 + i0, inv.head0.weight, inv.head0.bias),
        _head(a2 + i2, inv.head2.weight, inv.head2.bias),
        _head(a4 + i4, inv.head4.weight, inv.head4.bias),
    )
