"""Paired training patches for Lightning: validation, loading, augmentation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from debcr.data.io import load
from debcr.errors import DataError
from debcr.nn import SIZE_MULTIPLE


def load_pairs(source: Any, what: str = "training data") -> tuple[np.ndarray, np.ndarray]:
    """``(low, gt)`` float32 arrays ``(N, P, P)`` from a dict-like or an NPZ path.

    Raises
    ------
    DataError
        If keys are missing, shapes differ or are not stacks of square patches with a
        side divisible by 4, or values are not finite.
    """
    if isinstance(source, (str, os.PathLike)):
        source = load(Path(source))
    if not hasattr(source, "__getitem__") or isinstance(source, np.ndarray):
        raise DataError(
            f"{what} must be a dict or NPZ file with arrays 'low' and 'gt' "
            f"(got {type(source).__name__})"
        )
    try:
        low, gt = np.asarray(source["low"]), np.asarray(source["gt"])
    except KeyError as exc:
        raise DataError(
            f"{what} has no array {exc.args[0]!r}; expected keys 'low' (input) and 'gt' "
            "(ground truth) — `debcr prepare` writes them"
        ) from None
    if low.ndim == 2:
        low, gt = low[None], gt[None]
    if low.shape != gt.shape:
        raise DataError(f"{what}: 'low' {low.shape} and 'gt' {gt.shape} must have the same shape")
    if low.ndim != 3 or low.shape[0] == 0:
        raise DataError(f"{what}: expected a stack of patches (N, P, P), got shape {low.shape}")
    _, h, w = low.shape
    if h != w or h % SIZE_MULTIPLE:
        raise DataError(
            f"{what}: patches must be square with a side divisible by {SIZE_MULTIPLE}, "
            f"got {h}×{w}; crop them with debcr.data.crop or `debcr prepare`"
        )
    for name, arr in (("low", low), ("gt", gt)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise DataError(f"{what}: '{name}' holds {bad} NaN/Inf values; clean the data first")
    return low.astype(np.float32, copy=False), gt.astype(np.float32, copy=False)


class PairDataset(Dataset):
    """Map-style dataset of ``(low, gt)`` patch pairs shaped ``(1, P, P)``."""

    def __init__(self, low: np.ndarray, gt: np.ndarray) -> None:
        self.low = torch.from_numpy(np.ascontiguousarray(low))
        self.gt = torch.from_numpy(np.ascontiguousarray(gt))

    def __len__(self) -> int:
        return self.low.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.low[index, None], self.gt[index, None]


def augment(low: torch.Tensor, gt: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips (and 90° rotations) of a batch, the same for input and target."""
    if kind == "none":
        return low, gt
    n = low.shape[0]
    flips = torch.rand(n, 2, device=low.device) < 0.5
    turns = torch.randint(0, 4 if kind == "flip_rot90" else 1, (n,), device=low.device)
    out_low, out_gt = [], []
    for i in range(n):
        a, b = low[i], gt[i]
        dims = [d for d, flip in zip((-2, -1), flips[i].tolist(), strict=True) if flip]
        if dims:
            a, b = a.flip(dims), b.flip(dims)
        k = int(turns[i])
        if k:
            a, b = a.rot90(k, (-2, -1)), b.rot90(k, (-2, -1))
        out_low.append(a)
        out_gt.append(b)
    return torch.stack(out_low), torch.stack(out_gt)


def minmax_per_patch(x: torch.Tensor) -> torch.Tensor:
    """The original loader's per-patch rescale to [0, 1] (a constant patch becomes 1)."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    width = hi - lo
    return torch.where(width > 0, (x - lo) / width.clamp_min(1e-12), torch.ones_like(x))
