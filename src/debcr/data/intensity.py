"""Intensity units of restored images: noise level, dark level and the map back to the input.

The network works in normalised units; `debcr.model.predict` maps its output back to
the input's units. The straight-line mapping (``units="affine"``, the default for
resolution-enhancement models; denoising models use `debcr.data.calibration`, which
falls back to this one) is built here from statistics
that can be accumulated tile by tile or computed lazily on a dask array:

1. **Least-squares fit** ``gain * output + offset`` to the input. Restoration removes zero-mean
   noise, so the input is an unbiased estimate of the clean image and the fit keeps its mean
   brightness and contrast.
2. **Dark level held.** One affine map for a whole image cannot follow a network whose output
   is not affine in its input; the fit then lifts the background (a zero background came back
   at 650–730 DN). The offset is corrected so that the *dark level* (the median of the darkest
   5 %) of the result lies within `DARK_RANGE_TOLERANCE` of the input's range (0.1th to
   99.9th percentile) of the input's, both measured on `BLOCK` × `BLOCK` block
   means. Averaging removes the noise that makes an input's darkest pixels darker than its
   background (by about two noise levels), so a restoration that removes noise is held to the
   background the input really has, neither lifted above it nor pushed down into the noise.
3. **Floor.** Nothing is returned below the input's minimum: undershoot (ringing around
   bright objects) is an artefact, never a measured intensity.

Quantiles come from a regular strided subsample of at most `SAMPLE_PIXELS` pixels (and
of the block means), so memory stays bounded for images of any size. Everything here is numpy
only. ``benchmarks/bench_calibration.py`` compares this mapping with the alternatives.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BLOCK",
    "DARK_FRACTION",
    "DARK_RANGE_TOLERANCE",
    "SAMPLE_PIXELS",
    "CalibrationSums",
    "IntensityMap",
    "block_means",
    "block_means_of",
    "calibrate",
    "dark_level",
    "difference_sample",
    "noise_from_differences",
    "noise_level",
]

logger = logging.getLogger(__name__)

#: The dark level of an image is the median of its darkest ``DARK_FRACTION`` of pixels.
DARK_FRACTION = 0.05
#: How far the calibrated dark level may sit from the input's background, as a fraction of
#: the input's range (0.1th to 99.9th percentile).
DARK_RANGE_TOLERANCE = 0.004
#: Side of the blocks whose means give the input's background (noise averaged out).
BLOCK = 8
#: Pixels sampled (strided) for the quantiles and the noise level of the calibration.
SAMPLE_PIXELS = 1_000_000

_MAD_TO_SIGMA = 1.482602218505602


def dark_level(image: Any, fraction: float = DARK_FRACTION) -> float:
    """Median of the darkest ``fraction`` of the pixels (the ``50 * fraction`` percentile)."""
    values = np.asarray(image, dtype=np.float64).ravel()
    if values.size == 0:
        return 0.0
    return float(np.percentile(values, 50.0 * fraction))


def block_means(image: Any, size: int = BLOCK) -> Any:
    """Means of ``size`` × ``size`` blocks over the last two axes (partial blocks dropped).

    An image smaller than one block is returned as it is.
    """
    h, w = (image.shape[-2] // size) * size, (image.shape[-1] // size) * size
    if h == 0 or w == 0:
        return image
    lead = image.shape[:-2]
    cut = image[..., :h, :w]
    return cut.reshape(*lead, h // size, size, w // size, size).mean(axis=(-3, -1))


def _blocks(image: np.ndarray, size: int = BLOCK) -> np.ndarray:
    """The ``size`` × ``size`` blocks of a 2-D image as ``(rows, cols, size, size)``; in an image
    smaller than a block every pixel is a block (as `block_means` returns it whole)."""
    h, w = (image.shape[0] // size) * size, (image.shape[1] // size) * size
    if h == 0 or w == 0:
        return image[:, :, None, None]
    cut = image[:h, :w]
    return cut.reshape(h // size, size, w // size, size).swapaxes(1, 2)


def block_means_of(blocks: list[np.ndarray], mapping: Any = None) -> np.ndarray:
    """The means of kept output blocks (`CalibrationSums.samples`), each block mapped
    pixel by pixel through ``mapping`` (a callable) first when given."""
    if not blocks:
        return np.zeros(0)
    return np.concatenate([(b if mapping is None else mapping(b)).mean(axis=-1) for b in blocks])


def noise_from_differences(diffs: Any) -> float:
    """Noise level (standard deviation) from differences of neighbouring pixels.

    The difference of two pixels carrying independent noise of level σ has spread σ·√2;
    the median absolute deviation ignores the few differences that cross edges.
    """
    d = np.asarray(diffs, dtype=np.float64).ravel()
    d = d[np.isfinite(d)]
    if d.size == 0:
        return 0.0
    mad = np.median(np.abs(d - np.median(d)))
    return float(_MAD_TO_SIGMA * mad / math.sqrt(2.0))


def difference_sample(image: Any, step: int = 1) -> Any:
    """Horizontal differences of neighbouring pixels on every ``step``-th row and column.

    Works on anything sliceable with numpy semantics (numpy, dask, zarr read as numpy);
    slices of a stack (``(Z, Y, X)``) are also taken every ``step``-th.
    """
    a = image
    lead = (slice(None, None, step),) * (a.ndim - 2)
    rows = a[(*lead, slice(None, None, step), slice(None))]
    return (rows[..., 1:] - rows[..., :-1])[..., ::step]


def noise_level(image: Any) -> float:
    """Robust noise level of an image or stack, in its units (MAD of pixel differences).

    0 for images whose background is exactly flat (e.g. zero with photon noise only).
    """
    a = np.asarray(image, dtype=np.float64)
    if a.ndim < 2 or a.shape[-1] < 2:
        return 0.0
    return noise_from_differences(difference_sample(a))


@dataclass(frozen=True)
class IntensityMap:
    """``max(gain * y + offset, floor)``: the network output ``y`` in the input's units."""

    gain: float = 1.0
    offset: float = 0.0
    floor: float = -math.inf

    def apply(self, y: Any) -> Any:
        """Map ``y`` (numpy or dask array); returns float32 for numpy input."""
        mapped = y * np.float32(self.gain) + np.float32(self.offset)
        if math.isfinite(self.floor):
            mapped = np.maximum(mapped, np.float32(self.floor))
        return mapped


def calibrate(
    sums: Any,
    x_sample: Any,
    x_blocks: Any,
    y_blocks: Any,
    x_min: float,
) -> IntensityMap:
    """The default mapping (see the module docstring) from accumulated statistics.

    Parameters
    ----------
    sums
        ``(n, Σy, Σy², Σxy, Σx, Σx²)`` over all pixels (``x`` input, ``y`` network output).
    x_sample
        The input, a regular subsample (for its range).
    x_blocks, y_blocks
        Block means (`block_means`) of input and output at the same places, a regular
        subsample: their dark levels are compared with the noise averaged out in both.
    x_min
        The input's minimum over all pixels.
    """
    n, sy, syy, sxy, sx, sxx = (float(v) for v in sums)
    if n < 2:
        return IntensityMap()
    mean_x, mean_y = sx / n, sy / n
    if sxx - sx * sx / n <= 1e-12 * max(sxx, 1e-30):
        # A constant input restores to itself (it is not "anti-correlated" with anything).
        return IntensityMap(gain=0.0, offset=mean_x)
    var = syy - sy * sy / n
    if var <= 1e-12 * max(syy, 1e-30):
        return IntensityMap()
    gain = (sxy - sx * sy / n) / var
    if gain <= 0:
        logger.warning(
            "The restored image is anti-correlated with the input; intensities are not "
            "calibrated (is the model meant for this kind of image?)"
        )
        return IntensityMap()
    offset = mean_x - gain * mean_y
    target = dark_level(x_blocks)
    fitted = gain * dark_level(y_blocks) + offset
    lo, hi = np.percentile(np.asarray(x_sample, dtype=np.float64), [0.1, 99.9])
    tolerance = DARK_RANGE_TOLERANCE * (hi - lo)
    offset += min(max(fitted, target - tolerance), target + tolerance) - fitted
    return IntensityMap(gain=float(gain), offset=float(offset), floor=float(x_min))


class CalibrationSums:
    """Statistics for `calibrate`, accumulated tile by tile in bounded memory.

    Sums run over every pixel; one pixel in ``step²`` (every ``step``-th row and column of
    each tile) is kept for the quantiles and the noise level. ``step`` starts from ``total``
    (the number of pixels to come, if known) and doubles whenever more than twice
    ``max_samples`` pixels are kept, thinning what was kept the same way.
    """

    def __init__(self, total: int | None = None, max_samples: int = SAMPLE_PIXELS) -> None:
        self.sums = np.zeros(6)  # n, Σy, Σy², Σxy, Σx, Σx²
        self.max_samples = max(1, int(max_samples))
        self.step = max(1, math.ceil(math.sqrt(max(1, total or 0) / self.max_samples)))
        # Block means are BLOCK² times fewer than pixels; they are thinned with the pixels, and
        # new tiles are sampled at the same stride as what was kept, so no tile (plane) weighs
        # more than another in the dark level.
        self.block_step = max(1, self.step // BLOCK)
        self.x_min = math.inf
        self._kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._count = 0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add a 2-D tile of input ``x`` and output ``y`` (same shape)."""
        if x.size == 0:
            return
        x64, y64 = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
        self.sums += (x64.size, y64.sum(), y64 @ y64, x64 @ y64, x64.sum(), x64 @ x64)
        self.x_min = min(self.x_min, float(x.min()))
        s, sb = self.step, self.block_step
        kept = (
            np.array(x[::s, ::s], dtype=np.float32),
            np.array(block_means(x.astype(np.float64))[::sb, ::sb], dtype=np.float32),
            np.array(_blocks(y)[::sb, ::sb], dtype=np.float32),
        )
        self._kept.append(kept)
        self._count += kept[0].size
        self._thin()

    def merge(self, other: CalibrationSums) -> None:
        """Add the statistics gathered by ``other`` (e.g. on another block)."""
        self.sums += other.sums
        self.x_min = min(self.x_min, other.x_min)
        self._kept.extend(other._kept)
        self._count += other._count
        self._thin()

    def _thin(self) -> None:
        while self._count > 2 * self.max_samples:
            self.step *= 2
            self.block_step *= 2
            self._kept = [tuple(a[::2, ::2] for a in k) for k in self._kept]  # type: ignore[misc]
            self._count = sum(k[0].size for k in self._kept)

    def samples(self) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """The kept subsamples: input pixels ``(n,)``, input block means ``(m,)``, and the
        output's pixels in the same blocks, one ``(blocks, pixels per block)`` array per tile
        (a non-linear map of the output changes its block means, so they are kept whole)."""
        if not self._kept:
            return np.zeros(0), np.zeros(0), []
        x, xb = (np.concatenate([k[i].ravel() for k in self._kept]) for i in range(2))
        yb = [k[2].reshape(-1, k[2].shape[-2] * k[2].shape[-1]) for k in self._kept]
        return x, xb, yb

    def result(self) -> IntensityMap:
        """The calibrated mapping of everything added so far."""
        if not self._kept:
            return IntensityMap()
        x, xb, yb = self.samples()
        return calibrate(self.sums, x, xb, block_means_of(yb), self.x_min)
