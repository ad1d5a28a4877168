"""Into the network's units and back: normalisation statistics of the whole input (or of each
channel), never of a tile, and the affine map of each slice (numpy only)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from debcr.data.normalize import DEFAULT_SAMPLE_PIXELS, NormStats, compute_stats
from debcr.errors import DataError
from debcr.inference.planes import Layout
from debcr.inference.tiles import damaged_input


@dataclass(frozen=True)
class SliceScale:
    """Percentile normalisation of one slice: ``x_norm = (x - lo) / width``."""

    lo: float = 0.0
    width: float = 1.0

    def forward(self, a: np.ndarray) -> np.ndarray:
        """Input units to the network's."""
        if self.width <= 0:  # constant image: nothing to scale
            return np.zeros_like(a)
        return (a - self.lo) / self.width

    def inverse(self, a: np.ndarray) -> np.ndarray:
        """The network's units back to the input's."""
        return a * max(self.width, 0.0) + self.lo


def slice_scale(stats: NormStats | None, z: int) -> SliceScale:
    """The affine map of slice ``z`` into the network's units (identity without stats)."""
    if stats is None:
        return SliceScale()
    sliced = stats.select(z) if stats.per_slice else stats
    lo, hi = float(sliced.lo), float(sliced.hi)
    return SliceScale(lo=lo, width=hi - lo + sliced.eps if hi > lo else 0.0)


def _stats_for(
    stack: Any, normalize: bool | NormStats, pmin: float, pmax: float
) -> NormStats | None:
    """Statistics of the whole of ``stack`` for ``normalize`` (None: no normalisation).

    Raises
    ------
    DataError
        If the input cannot be read, holds non-finite values, or has a range float32 cannot
        hold.
    """
    if isinstance(normalize, NormStats):
        return normalize
    if not normalize:
        return None
    sample = DEFAULT_SAMPLE_PIXELS if math.prod(stack.shape) > DEFAULT_SAMPLE_PIXELS else None
    with damaged_input("the intensities"):
        stats = compute_stats(stack, pmin=pmin, pmax=pmax, sample=sample)
    _check_float32_range(stats)
    return stats


def _check_float32_range(stats: NormStats) -> None:
    """Refuse intensity ranges that float32 (the network's and the result's type) cannot hold."""
    lo, hi = np.asarray(stats.lo, dtype=np.float64), np.asarray(stats.hi, dtype=np.float64)
    width, top = hi - lo, np.maximum(np.abs(lo), np.abs(hi))
    f32 = np.finfo(np.float32)
    if np.any((width > 0) & (width < f32.tiny)) or np.any(top > f32.max):
        raise DataError(
            f"the input's intensities (from {float(np.min(lo)):.3g} to {float(np.max(hi)):.3g}) "
            "cannot be represented in float32, in which debcr restores and returns images; "
            "rescale the image into a normal range (e.g. multiply it by a power of ten) first"
        )


def plane_stats(
    layout: Layout, normalize: bool | NormStats, pmin: float, pmax: float
) -> NormStats | None:
    """Normalisation statistics: of the whole input, or per channel over all of its planes
    (then as per-plane statistics of the flat stack, each plane with its channel's)."""
    if layout.channels is None or normalize is not True:
        return _stats_for(layout.stack, normalize, pmin, pmax)
    per_channel = [_stats_for(planes, True, pmin, pmax) for planes in layout.channels]
    channel_of_plane = layout.channel_of_planes()
    first = per_channel[0]
    return NormStats(
        lo=np.array([per_channel[c].lo for c in channel_of_plane], dtype=np.float64),
        hi=np.array([per_channel[c].hi for c in channel_of_plane], dtype=np.float64),
        per_slice=True,
        method=first.method,
        pmin=first.pmin,
        pmax=first.pmax,
        eps=first.eps,
    )
