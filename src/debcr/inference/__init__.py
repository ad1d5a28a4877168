"""Tiled whole-image restoration: any size, stacks, data larger than memory, dask.

How an image is restored
------------------------
1. Normalisation statistics (percentiles by default) are computed once on the
   whole image or stack — never per tile, which would make seams.
2. Each slice is cut into tiles whose *cores* partition the slice. Every tile is
   read with a halo around its core (reflect-padded at the image border); the halo
   is the network's effective receptive field, sized to the precision
   (`halo_for`), so a tile's core equals what the network
   computes on the whole image within the precision's own rounding error. Tile origins
   are multiples of 4, keeping the network's strided ½ and ¼ grids aligned with
   the image.
3. Tiles of one size are batched through the network; only the cores are kept
   and written into the output (an array in memory, or a file on disk as the
   tiles finish, so memory stays bounded by the tile size).
4. The result is mapped back to the input's intensity units.

Where each part lives
---------------------
- `options`: `PredictOptions`, checked when made;
- `planes`: the input's axes and channels, views of input and output
  as flat stacks of planes (numpy only);
- `scale`: normalisation statistics and each slice's affine map;
- `tiles`: predict's tiles (`TilePlan`) and halo windows — the
  overlapping patch grids of ``prepare`` and ``stitch`` are `debcr.data.tiling`;
- `engine`: the runner fed tile by tile, the calibration, the
  out-of-memory retry (`predict_array`);
- `lazy`: dask arrays (`predict_dask`).
"""

from __future__ import annotations

from typing import Any

from debcr.defaults import UNITS
from debcr.inference.engine import MIN_TILE, batch_size_for, predict_array
from debcr.inference.lazy import predict_dask
from debcr.inference.options import PredictOptions, Progress
from debcr.inference.scale import SliceScale, slice_scale
from debcr.inference.tiles import TilePlan, plan_tiles

__all__ = [
    "MIN_TILE",
    "UNITS",
    "PredictOptions",
    "Progress",
    "SliceScale",
    "TilePlan",
    "batch_size_for",
    "plan_tiles",
    "predict",
    "predict_array",
    "predict_dask",
    "slice_scale",
]


def predict(model: Any, image: Any, options: PredictOptions) -> Any:
    """Restore ``image`` in memory, to a file, or lazily for a dask array (see the facade)."""
    if type(image).__module__.startswith("dask."):
        return predict_dask(model, image, options)
    return predict_array(model, image, options)
