"""What predict restores: the input resolved to an array, its axes and channels, and views of
input and output as one flat stack of (Y, X) planes (numpy only).

Every plane is restored on its own; a `Layout` says which planes there are, which
channel each belongs to and how the output is shaped. The views read and write only what is
indexed, so memmaps, zarr arrays and lazily decoded TIFFs stay on disk.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from debcr.data.io import ImageMetadata, as_image_stack, load
from debcr.data.io.stack import plane_axes
from debcr.errors import DataError


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
    """Plane ``index`` of a `_Planes` stack, read only where indexed (tile windows)."""

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
class Layout:
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


def _stack_view(out: Any, stack_shape: tuple[int, ...]) -> Any:
    """View the output (input's shape) as the (Z, Y, X) stack the engine writes."""
    if isinstance(out, np.ndarray):
        return out.reshape(stack_shape)
    if len(out.shape) == 2:
        return _OnePlane(out)
    return as_image_stack(out)


def as_stack(
    image: Any, metadata: ImageMetadata | None = None, channels: Sequence[int | str] | None = None
) -> Layout:
    """The planes to restore: 2-D images and 3-D stacks as before; with named axes (from the
    file or ``axes=``) any mix of T, Z and C axes, channel by channel.

    Parameters
    ----------
    image
        The input array (or array-like).
    metadata
        Its metadata (axis letters, channel names), if any.
    channels
        The channels to restore, by index or name; None for all.

    Raises
    ------
    DataError
        If the array cannot be restored plane by plane, or ``channels`` names no channel of it.
    """
    shape = tuple(int(n) for n in image.shape)
    meta = metadata or ImageMetadata()
    axes = plane_axes(shape, meta.axes, "the input image")
    many = axes is not None and sum(n > 1 and a not in "YX" for a, n in zip(axes, shape)) > 1
    has_c = axes is not None and "C" in axes and shape[axes.index("C")] > 1
    if channels is None and not (many or has_c):
        stack = as_image_stack(image, name="the input image")
        if len(stack.shape) == 2:
            stack = stack[None] if isinstance(stack, np.ndarray) else _OnePlane(stack)
        if stack.shape[-1] < 1 or stack.shape[-2] < 1:
            raise DataError(f"the input image is empty (shape {tuple(image.shape)})")
        out_meta = replace(meta, extra={}) if meta.axes is not None else None
        return Layout(stack=stack, out_shape=shape, metadata=out_meta)
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
    return Layout(
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


def resolve_input(image: Any, axes: str | None = None) -> tuple[Any, list[Path], ImageMetadata]:
    """The input as an array-like, the files it came from, and its metadata.

    Parameters
    ----------
    image
        A path to an image file (opened lazily), or an array-like (anything else goes through
        `numpy.asarray`).
    axes
        Axis letters naming the array's axes (``axes=`` of predict), or None.

    Returns
    -------
    tuple
        The array-like; the files it came from (never to be overwritten); its metadata (axes,
        pixel size... read from the file; ``axes`` names them for arrays).
    """
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


def check_dtype(image: Any) -> None:
    """Refuse arrays that hold no real-valued intensities (DataError): text, objects, complex."""
    dtype = np.dtype(image.dtype)
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_) or np.issubdtype(
        dtype, np.complexfloating
    ):
        raise DataError(
            f"the input image has dtype {dtype}; debcr restores real-valued intensity images "
            "(integer or float)"
        )
