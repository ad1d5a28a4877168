"""Tiled whole-image restoration: any size, stacks, data larger than memory, dask.

How an image is restored
------------------------
1. Normalisation statistics (percentiles by default) are computed once on the
   whole image or stack — never per tile, which would make seams.
2. Each slice is cut into tiles whose *cores* partition the slice. Every tile is
   read with a halo around its core (reflect-padded at the image border); the halo
   is the network's effective receptive field, sized to the precision
   (:func:`~debcr.nn.receptive.halo_for`), so a tile's core equals what the network
   computes on the whole image within the precision's own rounding error. Tile origins
   are multiples of 4, keeping the network's strided ½ and ¼ grids aligned with
   the image.
3. Tiles of one size are batched through the network; only the cores are kept
   and written into the output (an array in memory, or a file on disk as the
   tiles finish, so memory stays bounded by the tile size).
4. The result is mapped back to the input's intensity units.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from debcr.backends import BACKENDS, Runner, make_runner
from debcr.data.intensity import (
    BLOCK,
    SAMPLE_PIXELS,
    CalibrationSums,
    IntensityMap,
    calibrate,
)
from debcr.data.io import ImageMetadata, as_image_stack, load, open_output
from debcr.data.io.stack import _plane_axes
from debcr.data.normalize import DEFAULT_SAMPLE_PIXELS, NormStats, compute_stats
from debcr.defaults import BATCH_SIZE, PATCH_BATCH, PATCH_EDGE, PMAX, PMIN, TILE_SIZE
from debcr.errors import DataError, DebcrError
from debcr.files import PathLike
from debcr.nn import SIZE_MULTIPLE
from debcr.nn.receptive import halo_for
from debcr.runtime import release_memory, resolve_device, resolve_precision, tune_allocator

logger = logging.getLogger(__name__)

#: Smallest tile core the out-of-memory retry goes down to.
MIN_TILE = 64
#: ``progress`` of :func:`debcr.model.predict`: a tqdm bar (True), none (False), or a
#: callback ``(tiles_done, tiles_total)``; an exception raised by the callback cancels the run.
Progress = bool | Callable[[int, int], object]

#: How restored intensities are reported (see :func:`debcr.model.predict`).
UNITS = ("calibrated", "percentile", "normalized")


def _round_up(value: int, multiple: int = SIZE_MULTIPLE) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class TilePlan:
    """Tiles of one slice: cores partition the slice, inputs add a halo on every side."""

    shape: tuple[int, int]
    core: tuple[int, int]
    halo: int

    @property
    def input_size(self) -> tuple[int, int]:
        """Size of every tile fed to the network."""
        return (self.core[0] + 2 * self.halo, self.core[1] + 2 * self.halo)

    def starts(self, axis: int) -> list[int]:
        """Core origins along ``axis``: multiples of 4, together covering the whole axis."""
        length, core = self.shape[axis], self.core[axis]
        # Rounded up, the last core may reach past the end (into reflect padding), never short.
        last = _round_up(max(0, length - core))
        starts = [*list(range(0, last, core)), last]
        return sorted(set(starts))

    def segments(self, axis: int) -> list[tuple[int, int]]:
        """Per tile along ``axis``: (core origin, end of the part it writes).

        Each tile writes from its origin up to the next tile's origin, so every pixel
        is written (and counted in the calibration) exactly once.
        """
        starts = self.starts(axis)
        return list(zip(starts, [*starts[1:], self.shape[axis]]))

    def tiles(self) -> list[tuple[int, int, int, int]]:
        """All tiles as (y, x, y_end, x_end) of the region they write, row-major."""
        return [(y, x, ye, xe) for y, ye in self.segments(0) for x, xe in self.segments(1)]


def plan_tiles(shape: tuple[int, int], tile: int, halo: int) -> TilePlan:
    """Plan tiles for a slice of ``shape`` with cores of at most ``tile`` pixels."""
    core = tuple(min(_round_up(tile), _round_up(n)) for n in shape)
    return TilePlan(shape=(int(shape[0]), int(shape[1])), core=core, halo=halo)


@contextlib.contextmanager
def _damaged_input(where: str) -> Iterator[None]:
    """Turn a decoding failure of lazily read input pixels into one clear DataError."""
    try:
        yield
    except (DebcrError, MemoryError):
        raise
    except Exception as exc:  # codecs and storage libraries raise many types for damaged data
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise DataError(
            f"could not read {where} of the input ({reason}); the file is damaged or incomplete: "
            "re-copy or re-export it"
        ) from exc


def _read_window(image: Any, y0: int, x0: int, size: tuple[int, int]) -> np.ndarray:
    """Read ``image[y0:y0+h, x0:x0+w]``, reflect-padding wherever it leaves the image."""
    h, w = size
    height, width = image.shape
    ys, ye = max(y0, 0), min(y0 + h, height)
    xs, xe = max(x0, 0), min(x0 + w, width)
    with _damaged_input(f"rows {ys}–{ye}, columns {xs}–{xe}"):
        block = np.asarray(image[ys:ye, xs:xe], dtype=np.float32)
    pad = ((ys - y0, y0 + h - ye), (xs - x0, x0 + w - xe))
    if any(p for pair in pad for p in pair):
        # numpy's reflect keeps mirroring for pads wider than the image; a 1-pixel axis
        # cannot be mirrored, so it is repeated instead.
        mode = "reflect" if min(block.shape) > 1 else "edge"
        block = np.pad(block, pad, mode=mode)
    return block


@dataclass(frozen=True)
class SliceScale:
    """Percentile normalisation of one slice: ``x_norm = (x - lo) / width``."""

    lo: float = 0.0
    width: float = 1.0

    def forward(self, a: np.ndarray) -> np.ndarray:
        if self.width <= 0:  # constant image: nothing to scale
            return np.zeros_like(a)
        return (a - self.lo) / self.width

    def inverse(self, a: np.ndarray) -> np.ndarray:
        return a * max(self.width, 0.0) + self.lo


def slice_scale(stats: NormStats | None, z: int) -> SliceScale:
    """The affine map of slice ``z`` into the network's units (identity without stats)."""
    if stats is None:
        return SliceScale()
    sliced = stats.select(z) if stats.per_slice else stats
    lo, hi = float(sliced.lo), float(sliced.hi)
    return SliceScale(lo=lo, width=hi - lo + sliced.eps if hi > lo else 0.0)


class _Calibration(CalibrationSums):
    """Statistics of input and output gathered tile by tile for ``units="calibrated"``.

    See :mod:`debcr.data.intensity`: a least-squares fit of the output onto the
    (normalised) input, its offset corrected so the dark level (median of the darkest 5 % of
    8×8 block means) stays at the input's, and a floor at the input's minimum.
    """

    def mapping(self) -> IntensityMap:
        return self.result()


def _batched(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass
class _Engine:
    runner: Runner
    device: torch.device
    batch: int
    tile: int
    halo: int
    units: str = "calibrated"

    def forward(self, tiles: np.ndarray) -> np.ndarray:
        return self.runner.run(tiles)

    def run_slice(
        self, image: Any, out: Any, z: int, scale: SliceScale, calib: _Calibration, bar: Any
    ) -> None:
        """Write the network output (normalised units) of slice ``z`` into ``out[z]``.

        Reading (and normalising) the next batch of tiles and writing the previous one run in
        two helper threads while the network computes, so disk-to-disk restoration runs at
        the network's speed; at most three batches are held at once.
        """
        plan = plan_tiles(image.shape, self.tile, self.halo)
        h = self.halo
        groups = list(_batched(plan.tiles(), self.batch))

        def read(group: list) -> np.ndarray:
            return np.stack(
                [
                    scale.forward(_read_window(image, y - h, x - h, plan.input_size))
                    for y, x, _, _ in group
                ]
            )

        def write(group: list, windows: np.ndarray, restored: np.ndarray) -> None:
            for (y, x, ye, xe), window, tile in zip(group, windows, restored):
                core = tile[h : h + ye - y, h : h + xe - x]
                calib.add(window[h : h + ye - y, h : h + xe - x], core)
                out[z, y:ye, x:xe] = core
            bar.update(len(group))

        with (
            ThreadPoolExecutor(1, "debcr-read") as reader,
            ThreadPoolExecutor(1, "debcr-write") as writer,
        ):
            reading = reader.submit(read, groups[0])
            writing = None
            for i, group in enumerate(groups):
                windows = reading.result()
                if i + 1 < len(groups):
                    reading = reader.submit(read, groups[i + 1])
                try:
                    restored = self.forward(windows)
                finally:
                    if writing is not None:
                        writing.result()
                writing = writer.submit(write, group, windows, restored)
            writing.result()

    def total_tiles(self, shape: tuple[int, ...]) -> int:
        return shape[0] * len(plan_tiles(shape[1:], self.tile, self.halo).tiles())


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class _OnePlane:
    """A 2-D array-like seen as a stack of one slice, read and written only where indexed.

    Lazy inputs (a compressed TIFF opened as a zarr array) and zarr outputs cannot take
    ``[None]`` or reshape.
    """

    def __init__(self, plane: Any) -> None:
        self.plane = plane
        self.shape = (1, *plane.shape)
        self.dtype = plane.dtype
        self.ndim = 3

    def __getitem__(self, key: Any) -> Any:
        first, *rest = key if isinstance(key, tuple) else (key,)
        if isinstance(first, (int, np.integer)) and first in (0, -1):
            return self.plane[tuple(rest)] if rest else self.plane
        return np.asarray(self.plane[tuple(rest)] if rest else self.plane)[None][first]

    def __setitem__(self, key: tuple, value: Any) -> None:
        self.plane[key[1:]] = value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.plane, dtype=dtype)[None]


class _Plane:
    """Plane ``index`` of a :class:`_Planes` stack, read only where indexed (tile windows)."""

    def __init__(self, planes: _Planes, index: int) -> None:
        self.planes, self.index = planes, index
        self.shape = planes.shape[1:]
        self.dtype = planes.dtype
        self.ndim = 2

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.planes[(self.index, *(key if isinstance(key, tuple) else (key,)))]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[:, :], dtype=dtype)


class _Planes:
    """The 2-D (Y, X) planes of an array with named axes, seen as one flat (N, Y, X) stack.

    Plane ``k`` is the ``k``-th combination, in C order, of the entries listed in ``lead`` (one
    ``(axis, entries)`` pair per non-image axis, e.g. the selected channels); axes not listed
    have length 1. Only what is indexed is read or written, so memmaps and zarr arrays stay
    on disk.
    """

    def __init__(self, base: Any, iy: int, ix: int, lead: list[tuple[int, list[int]]]) -> None:
        self.base, self.iy, self.ix, self.lead = base, iy, ix, lead
        self.counts = tuple(len(entries) for _, entries in lead)
        self.shape = (math.prod(self.counts), int(base.shape[iy]), int(base.shape[ix]))
        self.dtype = np.dtype(base.dtype)
        self.ndim = 3

    def _key(self, k: int, ys: Any, xs: Any) -> tuple[Any, ...]:
        key: list[Any] = [0] * len(self.base.shape)
        for (axis, entries), i in zip(self.lead, np.unravel_index(k, self.counts)):
            key[axis] = entries[int(i)]
        key[self.iy], key[self.ix] = ys, xs
        return tuple(key)

    def __getitem__(self, key: Any) -> Any:
        first, *rest = key if isinstance(key, tuple) else (key,)
        ys, xs = (*rest, slice(None), slice(None))[:2]
        if isinstance(first, (int, np.integer)):
            k = int(first) + (self.shape[0] if first < 0 else 0)
            if not rest:
                return _Plane(self, k)
            return np.asarray(self.base[self._key(k, ys, xs)])
        planes = [np.asarray(self.base[self._key(k, ys, xs)]) for k in range(self.shape[0])[first]]
        return np.stack(planes) if planes else np.empty((0, *self.shape[1:]), self.dtype)[:, ys, xs]

    def __setitem__(self, key: tuple, value: Any) -> None:
        first, *rest = key
        ys, xs = (*rest, slice(None), slice(None))[:2]
        self.base[self._key(int(first), ys, xs)] = value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[:], dtype=dtype)


@dataclass
class _Layout:
    """How an input is restored: a flat (N, Y, X) stack of planes, and the output's form.

    ``channels`` lists, per restored channel, the (P, Y, X) stack of that channel's planes
    (normalisation statistics are computed per channel), or is None for a single channel.
    """

    stack: Any
    out_shape: tuple[int, ...]
    metadata: ImageMetadata | None = None
    iy: int = -2
    ix: int = -1
    lead: list[tuple[int, list[int]]] | None = None
    ic: int | None = None
    channels: list[Any] | None = field(default=None, repr=False)

    def channel_of_planes(self) -> np.ndarray:
        """For each plane of the flat stack, the index of its channel (all 0 without one)."""
        count = self.stack.shape[0]
        if self.lead is None or self.ic is None:
            return np.zeros(count, dtype=int)
        index = np.unravel_index(np.arange(count), [len(e) for _, e in self.lead])
        return np.asarray(index[[i for i, _ in self.lead].index(self.ic)])

    def out_view(self, out: Any) -> Any:
        """The output (``out_shape``) as the flat (N, Y, X) stack the engine writes."""
        if self.lead is None:
            return _stack_view(out, self.stack.shape)
        if isinstance(out, np.ndarray) and self.ix == out.ndim - 1 and self.iy == out.ndim - 2:
            return out.reshape(self.stack.shape)
        lead = [(axis, list(range(len(entries)))) for axis, entries in self.lead]
        return _Planes(out, self.iy, self.ix, lead)


def _as_stack(
    image: Any, metadata: ImageMetadata | None = None, channels: Sequence[int | str] | None = None
) -> _Layout:
    """The planes to restore: 2-D images and 3-D stacks as before; with named axes (from the
    file or ``axes=``) any mix of T, Z and C axes, channel by channel."""
    shape = tuple(int(n) for n in image.shape)
    meta = metadata or ImageMetadata()
    axes = _plane_axes(shape, meta.axes, "the input image")
    many = axes is not None and sum(n > 1 and a not in "YX" for a, n in zip(axes, shape)) > 1
    has_c = axes is not None and "C" in axes and shape[axes.index("C")] > 1
    if channels is None and not (many or has_c):
        stack = as_image_stack(image, name="the input image")
        if len(stack.shape) == 2:
            stack = stack[None] if isinstance(stack, np.ndarray) else _OnePlane(stack)
        if stack.shape[-1] < 1 or stack.shape[-2] < 1:
            raise DataError(f"the input image is empty (shape {tuple(image.shape)})")
        out_meta = replace(meta, extra={}) if meta.axes is not None else None
        return _Layout(stack=stack, out_shape=shape, metadata=out_meta)
    if axes is None or ("C" not in axes and channels is not None):
        raise DataError(
            f"channels={list(channels or [])!r} was given, but the input (shape {shape}, axes "
            f"{meta.axes!r}) has no channel axis C; leave channels unset or give axes="
        )
    iy, ix = axes.index("Y"), axes.index("X")
    lead = [(i, list(range(n))) for i, (a, n) in enumerate(zip(axes, shape)) if a not in "YX"]
    ic = axes.find("C") if "C" in axes else None
    selected = [0] if ic is None else _channel_indices(channels, shape[ic], meta.channel_names)
    lead = [(i, selected if i == ic else entries) for i, entries in lead]
    lead = [(i, entries) for i, entries in lead if len(entries) > 1 or i == ic]
    per_channel = [
        _Planes(image, iy, ix, [(i, [c] if i == ic else entries) for i, entries in lead])
        for c in selected
    ]
    out_shape = tuple(len(selected) if i == ic else n for i, n in enumerate(shape))
    names = meta.channel_names
    if ic is not None and names is not None and len(names) == shape[ic]:
        names = tuple(names[c] for c in selected)
    out_meta = replace(meta, extra={}, channel_names=names if names else None)
    return _Layout(
        stack=_Planes(image, iy, ix, lead),
        out_shape=out_shape,
        metadata=out_meta,
        iy=iy,
        ix=ix,
        lead=lead,
        ic=ic,
        channels=per_channel if len(selected) > 1 else None,
    )


def _channel_indices(
    channels: Sequence[int | str] | None, count: int, names: Sequence[str] | None
) -> list[int]:
    """Indices of the channels to restore: all, or those given by index or by name."""
    if channels is None:
        return list(range(count))
    if isinstance(channels, (int, str)):
        channels = [channels]
    picked = []
    for c in channels:
        if isinstance(c, str):
            if not names or c not in names:
                raise DataError(
                    f"no channel named {c!r}; the input's channels are "
                    f"{list(names) if names else 'unnamed'} (give indices 0..{count - 1})"
                )
            picked.append(list(names).index(c))
        elif isinstance(c, (int, np.integer)) and -count <= int(c) < count:
            picked.append(int(c) % count)
        else:
            raise DataError(f"channel {c!r} does not exist; the input has channels 0..{count - 1}")
    if not picked or len(set(picked)) != len(picked):
        raise DataError(f"channels={list(channels)!r} must name distinct channels, at least one")
    return picked


def _plane_stats(
    layout: _Layout, normalize: bool | NormStats, pmin: float, pmax: float
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


def _resolve_input(image: Any, axes: str | None = None) -> tuple[Any, list[Path], ImageMetadata]:
    """Array-like of the input, the files it came from (never to be overwritten), and its
    metadata (axes, pixel size... read from the file; ``axes`` names them for arrays)."""
    meta = ImageMetadata()
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        data, meta = load(path, lazy=True, with_metadata=True)
        if isinstance(data, dict):
            if "low" not in data:
                raise DataError(
                    f"{path} holds several arrays ({', '.join(data)}); name one as "
                    f"'{path}' with key= in debcr.data.load, or store the input under 'low'"
                )
            data = data["low"]
        inputs = [path]
    elif isinstance(image, torch.Tensor):
        data, inputs = image.detach().cpu().numpy(), []
    else:
        data, inputs = (image if hasattr(image, "shape") else np.asarray(image)), []
    if axes is not None:
        if len(axes) != len(data.shape):
            raise DataError(
                f"axes={axes!r} names {len(axes)} axes but the input has {len(data.shape)} "
                f"(shape {tuple(data.shape)}); give one letter per axis, e.g. 'TCZYX'"
            )
        keep = meta.scale if meta.axes is not None and len(meta.axes) == len(axes) else None
        meta = replace(meta, axes=axes, scale=keep)
    return data, inputs, meta


def _check_dtype(image: Any) -> None:
    dtype = np.dtype(image.dtype)
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_) or np.issubdtype(
        dtype, np.complexfloating
    ):
        raise DataError(
            f"the input image has dtype {dtype}; debcr restores real-valued intensity images "
            "(integer or float)"
        )


@dataclass(frozen=True)
class PredictOptions:
    """How to restore: the options of :func:`debcr.model.predict`, carried as one object.

    The facade builds it from its keyword arguments; :func:`predict`, :func:`predict_array`
    and :func:`predict_dask` take it as it is. See :func:`debcr.model.predict` for what each
    field means.
    """

    batch_size: int | None = None
    tile_size: int | None = None
    halo: int | None = None
    normalize: bool | NormStats = True
    pmin: float = PMIN
    pmax: float = PMAX
    units: str = "calibrated"
    device: str | torch.device | None = None
    #: ``"auto"``: bfloat16 where the device computes it natively, else float32.
    precision: str = "auto"
    #: ``"auto"``, ``"torch"`` or ``"openvino"`` (see :mod:`debcr.backends`).
    backend: str = "auto"
    output: PathLike | None = None
    overwrite: bool = False
    progress: Progress = True
    #: Axis letters of an array input (e.g. ``'TCZYX'``); files name their axes themselves.
    #: Without them, arrays must be 2-D images or 3-D stacks (after dropping length-1 axes).
    axes: str | None = None
    #: Channels to restore, by index or by name (default: all); the output keeps only these.
    #: Every channel is normalised with its own statistics, over all of its planes.
    channels: Sequence[int | str] | None = None


def predict(model: torch.nn.Module, image: Any, options: PredictOptions) -> Any:
    """Restore ``image`` in memory, to a file, or lazily for a dask array (see the facade)."""
    if _is_dask(image):
        return predict_dask(model, image, options)
    return predict_array(model, image, options)


def _is_dask(image: Any) -> bool:
    return type(image).__module__.startswith("dask.")


def batch_size_for(image: Any, batch_size: int | None, device: torch.device) -> int:
    """Tiles per forward pass: as asked, else stacks of small patches (the paper's workflow)
    :data:`~debcr.defaults.PATCH_BATCH` at a time, else the device's default."""
    if batch_size is not None:
        return int(batch_size)
    shape = getattr(image, "shape", None)
    if shape is not None and len(shape) == 3 and max(shape[1:]) <= PATCH_EDGE:
        return PATCH_BATCH
    return BATCH_SIZE["cpu" if device.type == "cpu" else "accelerator"]


def predict_array(
    model: torch.nn.Module, image: Any, options: PredictOptions | None = None
) -> np.ndarray | Path:
    """Restore an image or stack held in memory, in a memmap/zarr array, or in a file.

    ``model`` is an :class:`~debcr.nn.MRBCR` or any network with a ``restore`` method (the
    CARE baseline). See :func:`debcr.model.predict` for the options.
    """
    opts = options or PredictOptions()
    source, inputs, metadata = _resolve_input(image, opts.axes)
    _check_dtype(source)
    layout = _as_stack(source, metadata, opts.channels)
    stack, out_shape = layout.stack, layout.out_shape
    stats = _plane_stats(layout, opts.normalize, opts.pmin, opts.pmax)
    engine = _engine_for(model, image, opts)
    output = opts.output
    target = (
        open_output(
            output,
            out_shape,
            np.float32,
            overwrite=opts.overwrite,
            inputs=inputs,
            metadata=layout.metadata,
        )
        if output is not None
        else contextlib.nullcontext(np.empty(out_shape, np.float32))
    )
    try:
        with target as out:
            out_stack = layout.out_view(out)
            _run(engine, stack, out_stack, stats, opts, layout.channel_of_planes())
    finally:
        # The tuned allocator keeps what the forwards freed; hand it back between calls.
        release_memory()
    return Path(output) if output is not None else out


def _stack_view(out: Any, stack_shape: tuple[int, ...]) -> Any:
    """View the output (input's shape) as the (Z, Y, X) stack the engine writes."""
    if isinstance(out, np.ndarray):
        return out.reshape(stack_shape)
    if len(out.shape) == 2:
        return _OnePlane(out)
    return as_image_stack(out)


def _stats_for(
    stack: Any, normalize: bool | NormStats, pmin: float, pmax: float
) -> NormStats | None:
    if isinstance(normalize, NormStats):
        return normalize
    if not normalize:
        return None
    sample = DEFAULT_SAMPLE_PIXELS if math.prod(stack.shape) > DEFAULT_SAMPLE_PIXELS else None
    with _damaged_input("the intensities"):
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


def _engine_for(model: torch.nn.Module, image: Any, opts: PredictOptions) -> _Engine:
    """The runner and tiling for ``opts``: backend, precision, halo and tile size resolved."""
    if opts.backend not in BACKENDS:
        raise DataError(
            f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {opts.backend!r}"
        )
    dev = resolve_device(opts.device)
    precision = resolve_precision(opts.precision, dev)
    tune_allocator()
    runner = make_runner(model, opts.backend, dev, precision)
    kind = runner.backend if dev.type == "cpu" else "accelerator"
    engine = _Engine(
        runner=runner,
        device=dev,
        batch=batch_size_for(image, opts.batch_size, dev),
        tile=int(opts.tile_size if opts.tile_size is not None else TILE_SIZE[kind]),
        halo=int(opts.halo if opts.halo is not None else halo_for(model, precision)),
        units=opts.units,
    )
    _check_engine(engine)
    logger.debug(
        "restoring with %s (%s) on %s: tile %d, halo %d, batch %d",
        runner.backend,
        precision,
        dev,
        engine.tile,
        engine.halo,
        engine.batch,
    )
    return engine


def _check_engine(engine: _Engine) -> None:
    if engine.batch < 1:
        raise DataError(f"batch_size must be at least 1, got {engine.batch}")
    if engine.tile < SIZE_MULTIPLE:
        raise DataError(f"tile_size must be at least {SIZE_MULTIPLE} pixels, got {engine.tile}")
    if engine.halo < 0 or engine.halo % SIZE_MULTIPLE:
        raise DataError(
            f"halo must be a non-negative multiple of {SIZE_MULTIPLE}, got {engine.halo}"
        )
    if engine.units not in UNITS:
        raise DataError(f"units must be one of {', '.join(map(repr, UNITS))}, got {engine.units!r}")


class _CallbackBar:
    """The part of tqdm's interface the engine uses, reporting to ``callback(done, total)``."""

    def __init__(self, callback: Callable[[int, int], object], total: int) -> None:
        self.callback, self.total, self.done = callback, total, 0

    def __enter__(self) -> _CallbackBar:
        self.callback(0, self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        self.done += n
        self.callback(self.done, self.total)


def _progress_bar(progress: Progress, total: int) -> Any:
    if callable(progress):
        return _CallbackBar(progress, total)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="restoring", unit="tile", disable=not progress)


def _run(
    engine: _Engine,
    stack: Any,
    out: Any,
    stats: NormStats | None,
    opts: PredictOptions,
    channel_of_plane: np.ndarray,
) -> None:
    # Channels differ in brightness: each gets its own intensity calibration.
    calibs = {int(c): _Calibration() for c in np.unique(channel_of_plane)}
    total = engine.total_tiles(tuple(stack.shape))
    with _progress_bar(opts.progress, total) as bar:
        for z in range(stack.shape[0]):
            calib = calibs[int(channel_of_plane[z])]
            while True:
                try:
                    engine.run_slice(stack[z], out, z, slice_scale(stats, z), calib, bar)
                    break
                except RuntimeError as exc:
                    if not _is_oom(exc):
                        raise
                    if not _shrink(engine):
                        raise DebcrError(
                            f"out of memory on {engine.device} even with batch_size=1 and "
                            f"tile_size={engine.tile}; free memory on the device or use "
                            "device='cpu'"
                        ) from exc
                    if engine.device.type == "cuda":
                        torch.cuda.empty_cache()
    calibrated = opts.units == "calibrated"
    mappings = {c: calib.mapping() if calibrated else IntensityMap() for c, calib in calibs.items()}
    planes = [mappings[int(c)] for c in channel_of_plane]
    _finish(out, stats, planes, to_input_units=opts.units != "normalized")


def _finish(
    out: Any, stats: NormStats | None, mappings: list[IntensityMap], to_input_units: bool
) -> None:
    """Second pass, in row blocks: calibrate (each plane with its channel's map) and map back
    to the input's units."""
    rows = max(1, (1 << 22) // max(1, out.shape[-1]))
    for z in range(out.shape[0]):
        scale = slice_scale(stats, z)
        for r in range(0, out.shape[1], rows):
            block = mappings[z].apply(np.asarray(out[z, r : r + rows], dtype=np.float32))
            out[z, r : r + rows] = scale.inverse(block) if to_input_units else block


def _shrink(engine: _Engine) -> bool:
    """Halve the batch, then the tile, after an out-of-memory error; False if at the minimum."""
    if engine.batch > 1:
        engine.batch //= 2
    elif engine.tile > MIN_TILE:
        engine.tile = _round_up(engine.tile // 2)
    else:
        return False
    logger.warning(
        "Out of memory on %s: retrying with batch_size=%d, tile_size=%d",
        engine.device,
        engine.batch,
        engine.tile,
    )
    return True


def predict_dask(model: torch.nn.Module, image: Any, options: PredictOptions | None = None) -> Any:
    """Lazy restoration of a :class:`dask.array.Array`, block by block with a halo.

    Normalisation statistics come from a strided sample of the whole array; each
    block is restored by :func:`predict_array` with ``map_overlap`` supplying the
    neighbouring pixels its halo needs (image borders are reflect-padded exactly as
    in memory), and the intensity calibration is a lazy reduction over the whole
    result. It runs on any dask scheduler, including ``dask.distributed``.
    """
    import dask.array as da

    opts = options or PredictOptions()
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
    chunk_yx = tuple(max(_round_up(max(c)), _round_up(max(halo, 1))) for c in x.chunks[-2:])
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
    """Dask version of :meth:`_Calibration.mapping`: (gain, offset, floor) as lazy scalars.

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
