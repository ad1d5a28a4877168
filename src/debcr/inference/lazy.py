"""The dask path: a lazy restoration of a :class:`dask.array.Array`, block by block."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from debcr.data.intensity import BLOCK, SAMPLE_PIXELS, calibrate
from debcr.data.normalize import DEFAULT_SAMPLE_PIXELS, NormStats, compute_stats
from debcr.errors import DataError
from debcr.inference.engine import predict_array
from debcr.inference.options import PredictOptions
from debcr.inference.scale import slice_scale
from debcr.inference.tiles import round_up
from debcr.nn.receptive import halo_for
from debcr.runtime import resolve_device, resolve_precision


def predict_dask(model: torch.nn.Module, image: Any, options: PredictOptions | None = None) -> Any:
    """Lazy restoration of a :class:`dask.array.Array`, block by block with a halo.

    Normalisation statistics come from a strided sample of the whole array; each
    block is restored by :func:`~debcr.inference.predict_array` with ``map_overlap`` supplying
    the neighbouring pixels its halo needs (image borders are reflect-padded exactly as
    in memory), and the intensity calibration is a lazy reduction over the whole
    result. It runs on any dask scheduler, including ``dask.distributed``.
    """
    import dask.array as da

    opts = (options or PredictOptions()).for_model(model)
    if image.ndim not in (2, 3):
        raise DataError(
            f"a dask input must be 2-D (Y, X) or 3-D (Z/T, Y, X); got shape {image.shape}"
        )
    if opts.output is not None:
        raise DataError("output= is not supported for dask inputs; call .to_zarr() on the result")
    normalize = opts.normalize
    if normalize is True:
        sample = np.asarray(_strided(image, DEFAULT_SAMPLE_PIXELS).compute())
        normalize = compute_stats(sample, pmin=opts.pmin, pmax=opts.pmax)
    stats = normalize if isinstance(normalize, NormStats) else None
    precision = resolve_precision(opts.precision, resolve_device(opts.device))
    halo = int(opts.halo if opts.halo is not None else halo_for(model, precision))
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
    if opts.units == "calibrated":
        gain, offset, floor = _lazy_calibration(x, y)
        y = da.maximum(y * gain + offset, floor)
    if opts.units != "normalized":
        y = y * width + lo
    return y.astype(np.float32)


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


def _lazy_calibration(x: Any, y: Any) -> tuple[Any, Any, Any]:
    """Dask version of :meth:`debcr.data.intensity.CalibrationSums.result`: (gain, offset,
    floor) as lazy scalars.

    Sums run over all pixels; dark levels and the noise level come from a strided
    subsample, so memory stays bounded whatever the size of the image.
    """
    import dask
    import dask.array as da

    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    n = float(np.prod(x.shape))
    sums = [n, y64.sum(), (y64 * y64).sum(), (x64 * y64).sum(), x64.sum(), (x64 * x64).sum()]
    step = max(1, math.ceil((math.prod(x.shape) / SAMPLE_PIXELS) ** (1 / x.ndim)))
    every = (slice(None, None, step),) * x.ndim
    axes = {x.ndim - 2: BLOCK, x.ndim - 1: BLOCK}
    small = any(x.shape[a] < BLOCK for a in axes)

    def blocks(a: Any) -> Any:
        return _strided(
            a if small else da.coarsen(np.mean, a, axes, trim_excess=True), SAMPLE_PIXELS
        )

    def solve(sums: list, xs: np.ndarray, xb: np.ndarray, yb: np.ndarray, x_min: float) -> Any:
        m = calibrate(sums, xs, xb, yb, float(x_min))
        return np.array([m.gain, m.offset, m.floor], dtype=np.float32)

    coeffs = da.from_delayed(
        dask.delayed(solve)(sums, x[every], blocks(x64), blocks(y64), x.min()),
        (3,),
        dtype=np.float32,
    )
    return coeffs[0], coeffs[1], coeffs[2]


def _strided(image: Any, max_pixels: int) -> Any:
    step = max(1, math.ceil((math.prod(image.shape) / max_pixels) ** (1 / image.ndim)))
    return image[(slice(None, None, step),) * image.ndim]
