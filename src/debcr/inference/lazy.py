"""The dask path: a lazy restoration of a `dask.array.Array`, block by block."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from debcr.data.calibration import CurveMap, CurveSums
from debcr.data.intensity import CalibrationSums, IntensityMap
from debcr.data.normalize import DEFAULT_SAMPLE_PIXELS, NormStats, compute_stats
from debcr.errors import DataError
from debcr.inference.engine import default_halo, predict_array
from debcr.inference.options import PredictOptions
from debcr.inference.scale import slice_scale
from debcr.inference.tiles import check_halo, round_up
from debcr.runtime import inference_device, resolve_precision

#: Pixels of the sample the calibration of a lazy result is computed from (about three
#: 256² planes: slicing two planes then costs about five).
LAZY_SAMPLE_PIXELS = 3 * 256 * 256
#: Largest side of a sampled window (larger planes contribute several windows).
SAMPLE_WINDOW = 256


def predict_dask(model: Any, image: Any, options: PredictOptions | None = None) -> Any:
    """Lazy restoration of a `dask.array.Array`, block by block with a halo.

    Normalisation statistics come from a strided sample of the whole array; each
    block is restored by `predict_array` with ``map_overlap`` supplying
    the neighbouring pixels its halo needs (image borders are reflect-padded exactly as
    in memory). The intensity calibration comes from a bounded, evenly spread sample of the
    input restored once when the lazy result is made (`sampled_mapping`), so slicing a
    few planes costs a few planes. It runs on any dask scheduler, including
    ``dask.distributed``.
    """
    import dask.array as da

    opts = (options or PredictOptions()).for_model(model)
    if image.ndim not in (2, 3):
        raise DataError(
            f"a dask input must be 2-D (Y, X) or 3-D (Z/T, Y, X); got shape {image.shape}"
        )
    if opts.output is not None:
        raise DataError("output= is not supported for dask inputs; call .to_zarr() on the result")
    if opts.halo is not None:
        check_halo(int(opts.halo), image.shape)
    if opts.uncertainty:
        raise DataError(
            "uncertainty= is not supported for dask inputs; restore with tta=True lazily, or "
            "pass the array in memory (np.asarray) or as a file to get the uncertainty map"
        )
    normalize = opts.normalize
    if normalize is True:
        sample = np.asarray(_strided(image, DEFAULT_SAMPLE_PIXELS).compute())
        normalize = compute_stats(sample, pmin=opts.pmin, pmax=opts.pmax)
    stats = normalize if isinstance(normalize, NormStats) else None
    precision = resolve_precision(opts.precision, inference_device(opts.device))
    halo = int(opts.halo if opts.halo is not None else default_halo(model, precision))
    block_options = replace(
        opts,
        normalize=False,
        units="normalized",
        halo=halo,
        precision=precision,
        progress=False,
        overwrite=False,
    )

    lo, width = _lazy_scale(stats, image)
    safe = da.where(width > 0, width, 1.0)
    x = da.where(width > 0, (image.astype(np.float32) - lo) / safe, 0.0).astype(np.float32)
    # Blocks must start on the network's multiple-of-4 grid and be at least a halo wide.
    chunk_yx = tuple(max(round_up(max(c)), round_up(max(halo, 1))) for c in x.chunks[-2:])
    x = x.rechunk(((1,) if x.ndim == 3 else ()) + chunk_yx)
    depth = {x.ndim - 2: halo, x.ndim - 1: halo}
    if x.ndim == 3:
        depth[0] = 0

    def restore_block(block: np.ndarray) -> np.ndarray:
        return predict_array(model, block, block_options)

    y = da.map_overlap(restore_block, x, depth=depth, boundary="none", dtype=np.float32)
    if opts.units in ("calibrated", "affine"):
        y = sampled_mapping(model, x, halo, block_options, opts.units).apply(y)
    if opts.units != "normalized":
        y = y * width + lo
    return y.astype(np.float32)


def sample_windows(shape: tuple[int, ...], budget: int = LAZY_SAMPLE_PIXELS) -> list[tuple]:
    """Evenly spread windows ``(z, y0, y1, x0, x1)`` of a ``(Z, Y, X)`` shape holding about
    ``budget`` pixels: planes spread over Z, positions spread over each plane's window grid."""
    planes, height, width = shape
    side_y, side_x = min(height, SAMPLE_WINDOW), min(width, SAMPLE_WINDOW)
    # Whole windows only, spread from edge to edge (overlapping where the side does not
    # divide the plane): a sliver at the border would stand for a window's share.
    rows = np.linspace(0, height - side_y, -(-height // side_y)).round().astype(int)
    cols = np.linspace(0, width - side_x, -(-width // side_x)).round().astype(int)
    grid = [
        (z, int(y), int(y) + side_y, int(x), int(x) + side_x)
        for z in range(planes)
        for y in rows
        for x in cols
    ]
    count = max(1, min(len(grid), budget // (side_y * side_x)))
    # The centres of ``count`` equal runs of the grid: no run's end (often a dark first or
    # last plane) is favoured.
    picks = ((np.arange(count) + 0.5) * len(grid) / count).astype(int)
    return [grid[i] for i in picks]


def sampled_mapping(
    model: Any, x: Any, halo: int, block_options: PredictOptions, units: str
) -> CurveMap | IntensityMap:
    """The calibration of a lazy restoration from a bounded sample, computed once, now.

    The windows of `sample_windows` (about `LAZY_SAMPLE_PIXELS` pixels, evenly
    spread over the planes and over each plane) are restored with their halo of context,
    exactly as the blocks of the result are, and their statistics make the map applied to
    every block. Slicing a few planes of the result then costs a few planes (plus this sample
    once), not a pass over the whole stack.
    """
    stack = x if x.ndim == 3 else x[None]
    calib = CurveSums() if units == "calibrated" else CalibrationSums()
    _, height, width = stack.shape
    for z, y0, y1, x0, x1 in sample_windows(tuple(stack.shape)):
        top, left = max(0, y0 - halo), max(0, x0 - halo)
        window = np.asarray(stack[z, top : min(height, y1 + halo), left : min(width, x1 + halo)])
        restored = predict_array(model, window, block_options)
        core = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
        calib.add(window[core], restored[core])
    return calib.result()


def _lazy_scale(stats: NormStats | None, image: Any) -> tuple[Any, Any]:
    """(lo, width) broadcastable against ``image``: scalars, or per slice for 3-D stacks."""
    if stats is None:
        return np.float32(0.0), np.float32(1.0)
    scales = [slice_scale(stats, z) for z in range(image.shape[0] if stats.per_slice else 1)]
    lo = np.array([s.lo for s in scales], dtype=np.float64)
    width = np.array([s.width for s in scales], dtype=np.float64)
    if stats.per_slice:
        return lo[:, None, None], width[:, None, None]
    return lo[0], width[0]


def _strided(image: Any, max_pixels: int) -> Any:
    step = max(1, math.ceil((math.prod(image.shape) / max_pixels) ** (1 / image.ndim)))
    return image[(slice(None, None, step),) * image.ndim]
