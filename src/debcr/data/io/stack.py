"""Dimensionality: turning arrays into single-channel 2-D images or 3-D stacks.

`as_image_stack` drops length-1 axes (without copying: numpy views, ``squeeze`` for
dask-like arrays, a lazy `_SqueezedView` for ``zarr.Array``) and rejects anything that
is not a 2-D image or 3-D stack; `plane_axes` checks that an array with named axes (any
mix of T, Z and C before Y and X) can be restored plane by plane; `_grey_from_channels`
reduces grey images stored as RGB(A) to one channel.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from debcr.errors import DataError

_SUPPORTED_NDIM_TEXT = (
    "debcr supports single-channel 2-D images (Y, X) and 3-D stacks (Z or T, Y, X); "
    "length-1 axes are dropped automatically"
)


def _squeeze_plan(shape: tuple[int, ...], axes: str | None, name: str) -> tuple[int, ...]:
    """Indices of the axes kept by `as_image_stack`; raises DataError if none fit."""
    if axes is not None and len(axes) == len(shape):
        for letter, label in (("C", "channels"), ("S", "colour samples")):
            if letter in axes and shape[axes.index(letter)] > 1:
                raise DataError(
                    f"{name} has {shape[axes.index(letter)]} {label} (axis {letter} of axes "
                    f"{axes!r}, shape {shape}); debcr restores single-channel images: split the "
                    "channels and restore each one separately"
                )
    if any(n == 0 for n in shape):
        raise DataError(f"{name} is empty (shape {shape}); give an image with pixels")
    # Y and X are always kept (a 1-pixel-wide image is still an image); only the leading
    # length-1 axes (T, C, Z of a hyperstack) are dropped.
    lead = len(shape) - 2
    keep = tuple(i for i, n in enumerate(shape) if n != 1 or i >= lead)
    if len(keep) not in (2, 3) or len(shape) < 2:
        raise DataError(
            f"{name} has shape {shape} ({len(keep)}-D after dropping length-1 axes); "
            f"{_SUPPORTED_NDIM_TEXT}. Select one channel/time point or reshape the array first"
        )
    return keep


def plane_axes(shape: tuple[int, ...], axes: str | None, name: str) -> str | None:
    """Check that an array can be restored plane by plane; return its axes, or None.

    With named axes (``axes`` from file metadata or the caller), any mix of time (T), depth
    (Z) and channel (C) axes before Y and X is restorable (TZYX, CZYX, ZCYX, TCZYX, ...);
    length-1 axes of any name are ignored. None means "no usable names": the array must then
    be a 2-D image or 3-D stack after dropping length-1 axes (`as_image_stack`), as
    before, and DataError says so otherwise.

    Parameters
    ----------
    shape
        The array's shape.
    axes
        Its axis letters (e.g. ``ImageMetadata.axes``), or None.
    name
        How to refer to the array in error messages.

    Returns
    -------
    str | None
        ``axes`` when they name a restorable layout, else None.

    Raises
    ------
    DataError
        If the array is empty or cannot be restored plane by plane.
    """
    if any(n == 0 for n in shape):
        raise DataError(f"{name} is empty (shape {shape}); give an image with pixels")
    if axes is None or len(axes) != len(shape) or len(set(axes)) != len(axes):
        _squeeze_plan(shape, None, name)
        return None
    if "S" in axes and shape[axes.index("S")] > 1:
        _squeeze_plan(shape, axes, name)  # the colour message
    big = [a for a, n in zip(axes, shape) if n > 1 and a not in "YX"]
    if "Y" not in axes or "X" not in axes or axes.index("Y") > axes.index("X"):
        if len(big) <= 1 and "C" not in big:
            _squeeze_plan(shape, None, name)
            return None
        raise DataError(
            f"{name} has axes {axes!r} (shape {shape}); debcr needs image axes named Y and X, "
            "in that order"
        )
    if len(big) <= 1 and "C" not in big:
        return axes  # a 2-D image or a Z/T stack, whatever the leading axis is called
    unknown = [a for a in big if a not in "TZC"]
    if unknown:
        raise DataError(
            f"{name} has axes {axes!r} (shape {shape}); axis {unknown[0]!r} is neither time (T), "
            "depth (Z) nor channel (C). debcr restores images with T, Z and C axes plane by "
            "plane; select one entry of the other axes first"
        )
    return axes


def as_image_stack(arr: Any, *, axes: str | None = None, name: str = "the array") -> Any:
    """Return ``arr`` as a 2-D image or 3-D stack, dropping length-1 axes.

    Parameters
    ----------
    arr
        numpy array, ``numpy.memmap``, ``zarr.Array`` or any array-like with ``shape`` and
        ``__getitem__``.
    axes
        Axis letters of ``arr`` (e.g. ``ImageMetadata.axes``); when given, a channel (``C``) or
        colour (``S``) axis longer than 1 gives a clear error instead of being taken for Z.
    name
        How to refer to the array in error messages (e.g. the file name).

    Returns
    -------
    array-like
        ``arr`` itself when it is already 2-D/3-D; otherwise a view without copying: a numpy
        view (memmaps stay memmaps), ``arr.squeeze`` for dask-like arrays, or a lazy indexing
        wrapper for ``zarr.Array``.

    Raises
    ------
    DataError
        If fewer than 2 or more than 3 axes are longer than 1, or a channel axis is longer than 1.
    """
    shape = tuple(int(n) for n in arr.shape)
    keep = _squeeze_plan(shape, axes, name)
    if len(keep) == len(shape):
        return arr
    dropped = tuple(i for i in range(len(shape)) if i not in keep)
    if isinstance(arr, np.ndarray):
        # Index with 0 rather than np.squeeze, which turns a memmap into a plain ndarray.
        return arr[tuple(0 if i in dropped else slice(None) for i in range(len(shape)))]
    if hasattr(arr, "squeeze") and not _is_zarr_array(arr):
        return arr.squeeze(axis=dropped)
    return _SqueezedView(arr, dropped)


def _is_zarr_array(arr: Any) -> bool:
    return type(arr).__module__.startswith("zarr")


class _SqueezedView:
    """Lazy view of an array-like without some length-1 axes (zarr arrays cannot squeeze).

    Supports basic indexing (integers, slices, Ellipsis), ``np.asarray`` and the attributes the
    prediction engine needs (``shape``, ``ndim``, ``dtype``, ``size``, ``nbytes``).
    """

    def __init__(self, base: Any, dropped: tuple[int, ...]) -> None:
        self.base = base
        self._dropped = dropped
        self.shape = tuple(int(n) for i, n in enumerate(base.shape) if i not in dropped)
        self.dtype = np.dtype(base.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def _full_key(self, key: Any) -> tuple[Any, ...]:
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (self.ndim - (len(key) - 1))
            key = key[:at] + fill + key[at + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        parts = iter(key)
        base_ndim = self.ndim + len(self._dropped)
        return tuple(0 if i in self._dropped else next(parts) for i in range(base_ndim))

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.base[self._full_key(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self.base[self._full_key(key)] = value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"<squeezed view {self.shape} {self.dtype} of {self.base!r}>"


def _grey_from_channels(arr: np.ndarray, name: str) -> np.ndarray:
    """Reduce (..., channels) to one channel if the colour channels are equal; alpha ignored."""
    channels = arr.shape[-1]
    colour = arr[..., :3] if channels >= 3 else arr[..., :1]  # LA: grey + alpha
    grey = colour[..., 0]
    if any(not np.array_equal(grey, colour[..., c]) for c in range(1, colour.shape[-1])):
        raise DataError(
            f"{name} is a colour image ({channels} channels that differ); debcr restores "
            "single-channel (grayscale) images: convert it to grayscale or split the channels "
            "and restore each separately"
        )
    return np.ascontiguousarray(grey)
