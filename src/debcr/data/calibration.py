"""The default map of a restoration back to the input's intensities: a monotone curve that
keeps the mean (numpy only).

Restoration removes zero-mean noise, so over all pixels whose *restored* value is ``v`` the
mean of the *input* estimates the clean intensity there: the curve ``E[input | restored = v]``
maps the network output to the input's units without an affine compromise. It is built from
additive statistics only — per fine bin of the output its count, ``Σ output`` and ``Σ input``
— so it can be gathered tile by tile or block by block in bounded memory, and combined:

1. The fine bins (`FINE_BINS` over `FINE_RANGE` in the network's units, plus one
   bin each for what falls below or above) are merged into up to `CURVE_BINS` bins of
   equal pixel count (quantile bins).
2. In each, the mean input over the mean output is one point of the curve; the points are
   made non-decreasing by pooling adjacent violators, weighted by the counts.
3. The output is mapped through the curve by linear interpolation; beyond the outermost
   points the curve continues with the least-squares gain of the whole image, so peaks are
   neither clipped nor invented.
4. The dark level is held as the affine map holds it: where the result's (median of the
   darkest 5 % of 8×8 block means) lies farther than 0.4 % of the input's range from the
   input's, the curve's darker half is moved towards it, by most at the darkest point and
   tapering to nothing at the median pixel. (A network that flattens a varying background —
   widefield haze — otherwise gets the darkest places mapped to the average background.)
5. The mean of the result is the input's: the offset left by interpolation within bins and
   by the dark-level hold is computed from the fine bins and removed.
6. Nothing is returned below the input's minimum.

Images too small for `MIN_CURVE_BINS` bins of `PIXELS_PER_BIN` pixels, constant
inputs and anti-correlated outputs fall back to the affine calibration of
`debcr.data.intensity`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from debcr.data.intensity import (
    DARK_RANGE_TOLERANCE,
    CalibrationSums,
    IntensityMap,
    block_means_of,
    dark_level,
)
from debcr.errors import DataError

__all__ = [
    "CURVE_BINS",
    "FINE_BINS",
    "FINE_RANGE",
    "CurveMap",
    "CurveSums",
    "calibrate_output",
    "pool_adjacent_violators",
]

logger = logging.getLogger(__name__)

#: Fine bins of the network output (normalised units) in which the statistics are gathered.
FINE_BINS = 8192
#: Range of the fine bins in the network's units; outputs outside land in two end bins.
FINE_RANGE = (-1.0, 3.0)
#: Most points on the curve (bins of equal pixel count).
CURVE_BINS = 512
#: Fewest pixels per curve bin (the mean input over fewer is too noisy)...
PIXELS_PER_BIN = 200
#: ...and fewest bins for a curve; smaller images get the affine calibration.
MIN_CURVE_BINS = 8
#: Rounds of the (linearised) dark-level correction.
DARK_ROUNDS = 4
#: Beyond this distance from the input's dark level (a fraction of its range) a warning says
#: the dark level could not be held.
DARK_LEVEL_BOUND = 0.005


def pool_adjacent_violators(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to ``values`` in weighted least squares.

    Adjacent values that decrease are pooled into their weighted mean until none does.
    """
    means: list[float] = []
    mass: list[float] = []
    sizes: list[int] = []
    for v, w in zip(np.asarray(values, float), np.asarray(weights, float)):
        means.append(v)
        mass.append(w)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            w2 = mass[-2] + mass[-1]
            m2 = (means[-2] * mass[-2] + means[-1] * mass[-1]) / w2 if w2 > 0 else means[-1]
            means[-2:] = [m2]
            mass[-2:] = [w2]
            sizes[-2:] = [sizes[-2] + sizes[-1]]
    return np.repeat(np.array(means), sizes)


@dataclass(frozen=True)
class CurveMap:
    """The output ``y`` (network units) mapped through the curve ``(ys, xs)`` into the input's
    units: interpolation inside, the slope ``gain`` beyond, then ``+ shift``, floored.

    ``gain`` is the curve's mean slope (weighted least squares over its points); it also
    scales a small spread of the output (the uncertainty map) into the input's units."""

    ys: np.ndarray
    xs: np.ndarray
    gain: float
    shift: float = 0.0
    floor: float = -math.inf

    def curve(self, y: np.ndarray) -> np.ndarray:
        """The curve without shift and floor (float64)."""
        y = np.asarray(y, dtype=np.float64)
        mapped = np.asarray(np.interp(y, self.ys, self.xs))  # an array for 0-d input too
        # Only the tails (about one curve bin's half at each end) continue with the gain:
        # computed where they are, not as two more whole-image arrays.
        for outside, y0, x0 in (
            (y < self.ys[0], self.ys[0], self.xs[0]),
            (y > self.ys[-1], self.ys[-1], self.xs[-1]),
        ):
            if outside.any():
                mapped[outside] = x0 + self.gain * (y[outside] - y0)
        return mapped

    def apply(self, y: Any) -> Any:
        """Map ``y`` (numpy array, or a dask array block by block); float32 out."""
        if hasattr(y, "map_blocks"):
            return y.map_blocks(self.apply, dtype=np.float32)
        mapped = self.curve(y)
        mapped += self.shift
        if math.isfinite(self.floor):
            np.maximum(mapped, self.floor, out=mapped)
        return mapped.astype(np.float32)


class CurveSums:
    """Statistics for the curve, accumulated tile by tile: additive, fixed size, combinable
    with ``+=``. Also gathers the affine calibration's statistics for its fallback."""

    def __init__(self) -> None:
        self.counts = np.zeros(FINE_BINS + 2)
        self.sum_y = np.zeros(FINE_BINS + 2)
        self.sum_x = np.zeros(FINE_BINS + 2)
        self.affine = CalibrationSums()

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add a 2-D tile of input ``x`` and output ``y`` (same shape, network units)."""
        if x.size == 0:
            return
        x64, y64 = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
        lo, hi = FINE_RANGE
        index = np.floor((y64 - lo) * (FINE_BINS / (hi - lo))) + 1
        index = np.clip(np.nan_to_num(index, nan=0.0), 0, FINE_BINS + 1).astype(np.intp)
        size = FINE_BINS + 2
        self.counts += np.bincount(index, minlength=size)
        self.sum_y += np.bincount(index, weights=y64, minlength=size)
        self.sum_x += np.bincount(index, weights=x64, minlength=size)
        self.affine.add(x, y)

    def __iadd__(self, other: CurveSums) -> CurveSums:
        self.counts += other.counts
        self.sum_y += other.sum_y
        self.sum_x += other.sum_x
        self.affine.merge(other.affine)
        return self

    def result(self) -> CurveMap | IntensityMap:
        """The curve of everything added so far (the affine map where no curve can be made)."""
        affine = self.affine.result()
        n = float(self.counts.sum())
        bins = min(CURVE_BINS, int(n // PIXELS_PER_BIN))
        if bins < MIN_CURVE_BINS or affine.gain <= 0 or not math.isfinite(affine.floor):
            # Too small, a constant input or an anti-correlated output: as the affine map.
            return affine
        filled = self.counts > 0
        counts, sum_y, sum_x = self.counts[filled], self.sum_y[filled], self.sum_x[filled]
        # Quantile bins: each fine bin joins the curve bin its first pixel falls into.
        before = np.cumsum(counts) - counts
        group = np.minimum((before * bins / n).astype(np.intp), bins - 1)
        g_counts = np.bincount(group, weights=counts)
        keep = g_counts > 0
        g_counts = g_counts[keep]
        ys = np.bincount(group, weights=sum_y)[keep] / g_counts
        xs = pool_adjacent_violators(np.bincount(group, weights=sum_x)[keep] / g_counts, g_counts)
        if ys.size < 2:
            return affine
        gain = _weighted_slope(ys, xs, g_counts)
        gain = gain if gain > 0 else affine.gain
        mean_x = float(sum_x.sum()) / n

        def curve_with(points: np.ndarray) -> CurveMap:
            curve = CurveMap(ys=ys, xs=points, gain=gain)
            shift = mean_x - float(counts @ curve.curve(sum_y / counts)) / n
            return CurveMap(ys=ys, xs=points, gain=gain, shift=shift, floor=affine.floor)

        curve = curve_with(xs)
        # Dark level held (as the affine map holds it): where the network flattened a varying
        # background, the conditional mean lifts the darkest places to the average background.
        # The correction is linearised; a few rounds land it within the bound.
        samples = self.affine.samples()
        for _ in range(DARK_ROUNDS):
            lower = _dark_correction(curve, g_counts, *samples)
            if lower is None:
                break
            curve = curve_with(pool_adjacent_violators(curve.xs - lower, g_counts))
        _warn_if_dark_level_moved(curve, *samples)
        return curve


def calibrate_output(image: Any, output: Any, pmin: float = 0.1, pmax: float = 99.9) -> np.ndarray:
    """Bring a restoration in normalised units (e.g. from a BMZ package run by
    bioimageio.core, deepImageJ or ONNX Runtime) into ``image``'s units, as
    `debcr.model.predict` does by default.

    Parameters
    ----------
    image
        The input the restoration was made from: a 2-D image or a stack of planes.
    output
        The network output in normalised units, the same shape.
    pmin, pmax
        The percentiles the input was normalised with (the package's ``scale_range``).

    Returns
    -------
    numpy.ndarray
        float32, the same shape, through the monotone curve built from all of ``image``.
    """
    from debcr.data.normalize import compute_stats

    x = np.asarray(image, dtype=np.float32)
    y = np.asarray(output, dtype=np.float32)
    if x.shape != y.shape or x.ndim not in (2, 3):
        raise DataError(
            f"image and output must be 2-D images or stacks of the same shape; got "
            f"{x.shape} and {y.shape}"
        )
    stats = compute_stats(x, pmin=pmin, pmax=pmax)
    lo, width = float(stats.lo), float(stats.hi) - float(stats.lo)
    width = width if width > 0 else 1.0
    sums = CurveSums()
    for plane_x, plane_y in zip(x.reshape(-1, *x.shape[-2:]), y.reshape(-1, *y.shape[-2:])):
        sums.add((plane_x - lo) / width, plane_y)
    return sums.result().apply(y) * np.float32(width) + np.float32(lo)


def _dark_correction(
    curve: CurveMap,
    counts: np.ndarray,
    x: np.ndarray,
    x_blocks: np.ndarray,
    y_blocks: list[np.ndarray],
) -> np.ndarray | None:
    """How much to lower each curve point so that the result's dark level (of block means)
    lies within `debcr.data.intensity.DARK_RANGE_TOLERANCE` of the input's range of
    the input's, or None when it does.

    The correction is largest at the darkest point and tapers to nothing at the median
    pixel; the mean is then restored by the curve's shift, which lifts everything by the
    correction's mean, so the correction is scaled to land on the bound after that lift.
    """
    if x.size == 0 or x_blocks.size == 0:
        return None
    lo, hi = np.percentile(x, [0.1, 99.9])
    # Aim a little inside the bound: the blocks are a sample, and the floor moves them too.
    aim = 0.9 * DARK_RANGE_TOLERANCE * float(hi - lo)
    moved = dark_level(block_means_of(y_blocks, curve.apply)) - dark_level(x_blocks)
    if abs(moved) <= aim:
        return None
    quantile = (np.cumsum(counts) - counts / 2) / counts.sum()
    taper = np.clip(1.0 - quantile / 0.5, 0.0, 1.0)
    mean_taper = float(counts @ taper) / float(counts.sum())
    excess = moved - math.copysign(aim, moved)
    return taper * (excess / (1.0 - mean_taper))


def _warn_if_dark_level_moved(
    curve: CurveMap, x: np.ndarray, x_blocks: np.ndarray, y_blocks: list[np.ndarray]
) -> None:
    """Say so when the dark level could not be held within `DARK_LEVEL_BOUND`."""
    if x.size == 0 or x_blocks.size == 0:
        return
    lo, hi = np.percentile(x, [0.1, 99.9])
    span = float(hi - lo)
    moved = dark_level(block_means_of(y_blocks, curve.apply)) - dark_level(x_blocks)
    if span > 0 and abs(moved) > DARK_LEVEL_BOUND * span:
        logger.warning(
            "The restored dark level lies %.1f %% of the input's range %s the input's: the "
            "network gives the darkest places and the average background the same values "
            "(e.g. it flattened out-of-focus haze), and the mean is kept. units='affine' holds "
            "the dark level instead, at the cost of the mean",
            100 * abs(moved) / span,
            "above" if moved > 0 else "below",
        )


def _weighted_slope(ys: np.ndarray, xs: np.ndarray, weights: np.ndarray) -> float:
    w = weights / weights.sum()
    my, mx = float(w @ ys), float(w @ xs)
    var = float(w @ (ys - my) ** 2)
    return float(w @ ((ys - my) * (xs - mx))) / var if var > 0 else 0.0
