"""Intensity normalisation to [0, 1] and its inverse.

``normalize(x) = (x - lo) / (hi - lo + eps)``, optionally clipped to [0, 1], where ``lo``/``hi``
are percentiles (default 0.1 / 99.9), the minimum/maximum, or fixed values, computed over the
whole array or per slice along axis 0. This is the normalisation of the original DeBCR, with
``dtype`` always honoured, an optional clip, and an exact inverse (`denormalize`) driven
by a small, JSON-serialisable `NormStats` record.

Memory: statistics are computed on the input as it is (``numpy.percentile`` partitions a copy in
the input dtype, never a float64 copy) and the result is produced in one blockwise pass in the
requested dtype, so only the output array is allocated in full. For arrays too large to read
twice, `compute_stats` takes ``sample=`` to estimate the statistics from a regular
subsample (every k-th row and column of a numpy array or memmap, every k-th 256 × 256 window of
a lazily stored one such as Zarr), then `apply_stats` does the single full pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from debcr.defaults import PMAX, PMIN
from debcr.errors import DataError

__all__ = [
    "DEFAULT_SAMPLE_PIXELS",
    "NormStats",
    "apply_stats",
    "check_percentiles",
    "compute_stats",
    "denormalize",
    "normalize",
    "percentiles_of",
]

#: A good ``sample`` for `compute_stats` on huge arrays: percentiles of a regular
#: subsample of 16 Mpx differ from the exact ones by far less than a grey level in practice.
DEFAULT_SAMPLE_PIXELS = 16_000_000

#: Elements processed per block in the normalisation pass (bounds temporary memory to ~32 MB).
_BLOCK_ELEMENTS = 2**22

_METHODS = ("percentile", "minmax", "fixed")


@dataclass(frozen=True, eq=False)
class NormStats:
    """The intensity range used to normalise an image, so it can be undone or reused.

    Attributes
    ----------
    lo, hi
        Input values mapped to 0 and 1: floats, or read-only 1-D float64 arrays with one entry
        per slice (axis 0) when ``per_slice`` is True. Where ``hi <= lo`` (a constant image)
        everything maps to 0 and `denormalize` returns ``lo``.
    per_slice
        Whether ``lo``/``hi`` are per slice.
    method
        ``'percentile'``, ``'minmax'`` or ``'fixed'`` (how ``lo``/``hi`` were obtained).
    pmin, pmax
        The percentiles used (None for other methods).
    eps
        Added to ``hi - lo`` in the denominator (kept so that the inverse is exact).
    """

    lo: float | np.ndarray
    hi: float | np.ndarray
    per_slice: bool = False
    method: str = "percentile"
    pmin: float | None = None
    pmax: float | None = None
    eps: float = 1e-16

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise DataError(f"unknown normalisation method {self.method!r}; use one of {_METHODS}")
        if self.per_slice:
            lo, hi = (_readonly_vector(v) for v in (self.lo, self.hi))
            if lo.shape != hi.shape:
                raise DataError(
                    f"per-slice lo ({lo.size} values) and hi ({hi.size} values) differ in length"
                )
        else:
            lo, hi = float(self.lo), float(self.hi)
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        object.__setattr__(self, "eps", float(self.eps))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NormStats) and self.to_dict() == other.to_dict()

    __hash__ = None  # mutable-looking array fields: keep instances unhashable

    @property
    def n_slices(self) -> int | None:
        """Number of slices for per-slice statistics, else None."""
        return int(self.lo.size) if self.per_slice else None

    def select(self, index: int | slice) -> NormStats:
        """Statistics for a subset of slices (e.g. a z-range tile); global stats are returned as is.

        An integer index gives global statistics for that single slice.
        """
        if not self.per_slice:
            return self
        if isinstance(index, slice):
            return _replace_range(self, self.lo[index], self.hi[index], per_slice=True)
        return _replace_range(self, float(self.lo[index]), float(self.hi[index]), per_slice=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (floats and lists only), inverse of `from_dict`."""

        def plain(v: float | np.ndarray) -> float | list[float]:
            return [float(x) for x in v] if isinstance(v, np.ndarray) else float(v)

        return {
            "method": self.method,
            "per_slice": self.per_slice,
            "lo": plain(self.lo),
            "hi": plain(self.hi),
            "pmin": self.pmin,
            "pmax": self.pmax,
            "eps": self.eps,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> NormStats:
        """Rebuild statistics saved with `to_dict` (e.g. read from file metadata)."""
        missing = [k for k in ("lo", "hi") if k not in values]
        if missing:
            raise DataError(
                f"normalisation statistics {dict(values)!r} lack {missing}; they must come from "
                "NormStats.to_dict()"
            )
        return cls(
            lo=values["lo"],
            hi=values["hi"],
            per_slice=bool(values.get("per_slice", False)),
            method=values.get("method", "percentile"),
            pmin=values.get("pmin"),
            pmax=values.get("pmax"),
            eps=values.get("eps", 1e-16),
        )


def _readonly_vector(values: Any) -> np.ndarray:
    vec = np.array(values, dtype=np.float64).reshape(-1)
    vec.flags.writeable = False
    return vec


def _replace_range(stats: NormStats, lo: Any, hi: Any, *, per_slice: bool) -> NormStats:
    return NormStats(
        lo=lo,
        hi=hi,
        per_slice=per_slice,
        method=stats.method,
        pmin=stats.pmin,
        pmax=stats.pmax,
        eps=stats.eps,
    )


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _numeric(data: Any) -> np.ndarray:
    """``data`` as a real-valued numpy array without copying (memmaps stay memmaps)."""
    arr = np.asarray(data)
    if arr.dtype == bool:
        return arr.view(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"cannot normalise {arr.dtype} data; give a real-valued numeric array")
    if arr.size == 0:
        raise DataError(f"cannot normalise an empty array (shape {arr.shape})")
    return arr


def _float_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if not np.issubdtype(dt, np.floating):
        raise DataError(
            f"dtype={dt} cannot hold normalised values in [0, 1]; use a float dtype such as "
            "numpy.float32"
        )
    return dt


def _row_blocks(shape: tuple[int, ...]) -> Iterator[slice]:
    """Slices along axis 0 covering about ``_BLOCK_ELEMENTS`` elements each."""
    if not shape:
        yield slice(None)
        return
    per_row = max(1, math.prod(shape[1:]))
    step = max(1, _BLOCK_ELEMENTS // per_row)
    for start in range(0, shape[0], step):
        yield slice(start, start + step)


def _count_nonfinite(arr: np.ndarray) -> int:
    if not np.issubdtype(arr.dtype, np.floating):
        return 0
    if arr.ndim == 0:
        return int(not np.isfinite(arr))
    return sum(
        int(arr[b].size - np.count_nonzero(np.isfinite(arr[b]))) for b in _row_blocks(arr.shape)
    )


def _require_finite(arr: np.ndarray, count: int | None = None) -> None:
    count = _count_nonfinite(arr) if count is None else count
    if count:
        raise DataError(
            f"the data contain {count} non-finite values (NaN or Inf) out of {arr.size}; clean "
            "the data first, e.g. numpy.nan_to_num(x, nan=0.0, posinf=x_max, neginf=x_min)"
        )


def _finite_number(value: Any) -> float | None:
    """``value`` as a float if it is one finite real number, else None."""
    # bool and str convert with float() but are never meant as percentiles.
    if isinstance(value, (bool, np.bool_, str, bytes)):
        return None
    try:
        if np.ndim(value) != 0:
            return None
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def percentiles_of(settings: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """The percentiles a model's normalisation settings (``metadata["normalization"]``) mean.

    ``"percentile"`` (also when unset): its ``pmin``/``pmax``, default `PMIN`/`PMAX`;
    ``"minmax"``: 0 and 100; any other method (fixed values): None.
    """
    settings = dict(settings or {})
    method = settings.get("method", "percentile")
    if method == "minmax":
        return 0.0, 100.0
    if method != "percentile":
        return None
    return float(settings.get("pmin", PMIN)), float(settings.get("pmax", PMAX))


def check_percentiles(pmin: Any, pmax: Any, *, what: str = "(pmin, pmax)") -> tuple[float, float]:
    """Check a lower and an upper percentile: finite numbers with ``0 <= pmin < pmax <= 100``.

    Parameters
    ----------
    pmin, pmax
        The lower and upper percentile.
    what
        How the caller's argument is named in the error message, e.g. ``"percentiles"``.

    Returns
    -------
    (float, float)
        ``pmin`` and ``pmax`` as floats.

    Raises
    ------
    DataError
        If either is not a finite number, is outside [0, 100], or ``pmin >= pmax`` (an empty
        range would map every value to the same level). The message names the problem and
        gives both values.
    """
    low, high = _finite_number(pmin), _finite_number(pmax)
    if low is None or high is None:
        problem = f"{'pmin' if low is None else 'pmax'} is not a finite number"
    elif low < 0.0:
        problem = "pmin is below 0"
    elif high > 100.0:
        problem = "pmax is above 100"
    elif low >= high:
        problem = "pmin must be below pmax"
    else:
        return low, high
    raise DataError(
        f"{what}=({pmin!r}, {pmax!r}) is invalid: {problem}; give two finite numbers with "
        f"0 <= pmin < pmax <= 100 (the defaults are {PMIN} and {PMAX})"
    )


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def _subsample(arr: Any, max_pixels: int, per_slice: bool) -> Any:
    """At most ``max_pixels`` pixels of ``arr`` (per slice when ``per_slice``) for statistics:
    strided from numpy arrays and memmaps, as windows from lazily stored images."""
    if max_pixels < 1:
        raise DataError(f"sample={max_pixels} must be a positive number of pixels (or None)")
    if isinstance(arr, np.ndarray) or per_slice or len(arr.shape) < 2:
        return _strided_sample(arr, max_pixels, per_slice)
    if math.prod(arr.shape) <= max_pixels:
        return arr
    return _window_sample(arr, max_pixels)


def _strided_sample(arr: Any, max_pixels: int, per_slice: bool) -> Any:
    """Every k-th element along the image axes so that at most ``max_pixels`` are read.

    Strided views of a memmap only touch the pages they need, so this is cheap on huge files.
    Per slice, all slices are kept and the limit applies to each slice; otherwise the stride
    is shared by all axes.
    """
    ndim = len(arr.shape)
    axes = list(range(1, ndim)) if per_slice else list(range(ndim))
    count = math.prod(arr.shape[a] for a in axes)
    if count <= max_pixels or not axes:
        return arr
    step = math.ceil((count / max_pixels) ** (1.0 / len(axes)))
    while math.prod(math.ceil(arr.shape[a] / step) for a in axes) > max_pixels:
        step += 1
    index = tuple(slice(None, None, step) if a in axes else slice(None) for a in range(ndim))
    return arr[index]


#: Side of the windows `_window_sample` reads from lazily stored images (a Zarr chunk
#: or TIFF tile of 256 x 256 or more holds one whole window).
_WINDOW_EDGE = 256


def _window_sample(arr: Any, max_pixels: int) -> np.ndarray:
    """At most ``max_pixels`` pixels of a lazily stored array, read as a regular grid of windows.

    Every k-th row and column of a Zarr array touches every chunk: for a sparse 10⁶ × 10⁶ store
    that lists millions of chunks, with memory growing all the while. Windows of
    `_WINDOW_EDGE` pixels, every k-th one along each axis, bound the number of reads to
    ``max_pixels / 256²`` whatever the declared size (a chunk that was never written reads as
    the fill value, without I/O), and are read one at a time.
    """
    shape = tuple(int(n) for n in arr.shape)
    edges = [1] * (len(shape) - 2) + [min(_WINDOW_EDGE, n) for n in shape[-2:]]
    grid = [math.ceil(n / e) for n, e in zip(shape, edges, strict=True)]
    budget = max(1, max_pixels // math.prod(edges))
    step = 1
    while math.prod(math.ceil(g / step) for g in grid) > budget:
        step += 1
    picks = []
    for corner in np.ndindex(*(math.ceil(g / step) for g in grid)):
        key = tuple(
            slice(c * step * e, c * step * e + e) for c, e in zip(corner, edges, strict=True)
        )
        picks.append(np.asarray(arr[key]).reshape(-1))
    return np.concatenate(picks)


def _bounds(
    arr: np.ndarray, pmin: float, pmax: float, by_perc: bool, axis: tuple[int, ...] | None
) -> tuple[np.ndarray, np.ndarray]:
    if by_perc:
        lo, hi = np.percentile(arr, [pmin, pmax], axis=axis)
    else:
        lo, hi = np.min(arr, axis=axis), np.max(arr, axis=axis)
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


def _compute(
    arr: np.ndarray,
    pmin: float,
    pmax: float,
    by_perc: bool,
    vmin: float | None,
    vmax: float | None,
    per_slice: bool,
    eps: float,
) -> NormStats:
    """Statistics of a validated numeric array (no finiteness check here)."""
    fixed = vmin is not None and vmax is not None
    per_slice = per_slice and not fixed and arr.ndim >= 3
    if per_slice and arr.ndim != 3:
        raise DataError(
            f"per_slice needs a 3-D stack (Z, Y, X) but the data have shape {arr.shape}; "
            "squeeze it with debcr.data.io.as_image_stack first"
        )
    if fixed:
        lo, hi = np.float64(vmin), np.float64(vmax)
    else:
        if by_perc:
            check_percentiles(pmin, pmax)
        lo, hi = _bounds(arr, pmin, pmax, by_perc, (1, 2) if per_slice else None)
        if vmin is not None:
            lo = np.full_like(lo, float(vmin))
        if vmax is not None:
            hi = np.full_like(hi, float(vmax))
    if np.any(np.asarray(hi) < np.asarray(lo)) and (vmin is not None or vmax is not None):
        raise DataError(f"vmin={vmin} must not exceed vmax={vmax} (or the computed bound)")
    method = "fixed" if fixed else ("percentile" if by_perc else "minmax")
    return NormStats(
        lo=lo if per_slice else float(lo),
        hi=hi if per_slice else float(hi),
        per_slice=per_slice,
        method=method,
        pmin=float(pmin) if method == "percentile" else None,
        pmax=float(pmax) if method == "percentile" else None,
        eps=eps,
    )


def compute_stats(
    data: Any,
    pmin: float = PMIN,
    pmax: float = PMAX,
    by_perc: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    per_slice: bool = False,
    *,
    eps: float = 1e-16,
    sample: int | None = None,
) -> NormStats:
    """Compute the normalisation range of ``data`` without normalising it.

    Parameters
    ----------
    data
        Image (Y, X) or stack (Z, Y, X): numpy array or memmap (anything ``numpy.asarray``
        accepts; a zarr array is read whole unless ``sample`` is given).
    pmin, pmax
        Percentiles mapped to 0 and 1 when ``by_perc`` is True.
    by_perc
        Percentiles (True) or minimum/maximum (False).
    vmin, vmax
        Fixed bounds; each one given replaces the computed bound. Both given: method ``'fixed'``.
    per_slice
        Separate bounds for each slice along axis 0 (3-D data; ignored for 2-D images).
    eps
        Stored in the statistics and added to ``hi - lo`` when normalising.
    sample
        If given, estimate the bounds from a regular subsample of at most this many pixels
        (per slice when ``per_slice``): every k-th row and column (and slice) of a numpy array
        or memmap, whose untouched pages are never read; of any other array (Zarr, dask,
        views of them), every k-th window of 256 × 256 pixels, so that at most
        ``sample / 65536`` windows are read however large the declared shape (per slice: the
        strided subsample). Use `DEFAULT_SAMPLE_PIXELS` for arrays above ~50 Mpx. None
        computes exact statistics on all pixels.

    Returns
    -------
    NormStats

    Raises
    ------
    DataError
        Non-finite values in the (sampled) data, non-numeric data, or invalid percentiles.
    """
    if sample is not None:
        # Subsample before converting, so a lazy array (memmap, zarr) is only partly read.
        data = _subsample(data, int(sample), per_slice and len(data.shape) == 3)
    arr = _numeric(data)
    _require_finite(arr)
    return _compute(arr, pmin, pmax, by_perc, vmin, vmax, per_slice, eps)


# --------------------------------------------------------------------------------------------
# Applying and inverting
# --------------------------------------------------------------------------------------------


def _per_axis0(values: float | np.ndarray, ndim: int) -> float | np.ndarray:
    """Per-slice values shaped to broadcast against an ``ndim``-D stack (Z, 1, 1)."""
    if isinstance(values, np.ndarray):
        return values.reshape((-1,) + (1,) * (ndim - 1))
    return values


def _check_slices(arr: np.ndarray, stats: NormStats) -> None:
    if stats.per_slice and (arr.ndim != 3 or arr.shape[0] != stats.n_slices):
        raise DataError(
            f"per-slice statistics for {stats.n_slices} slices do not fit data of shape "
            f"{arr.shape}; use stats.select(...) for a sub-range or recompute the statistics"
        )


def _take(values: Any, block: slice) -> Any:
    """The rows of per-slice values that belong to ``block`` (scalars pass through)."""
    return values[block] if isinstance(values, np.ndarray) and values.ndim else values


def _affine(
    arr: np.ndarray,
    sub: float | np.ndarray,
    mul: float | np.ndarray,
    add: float | np.ndarray | None,
    dtype: np.dtype,
    clip: bool,
    check_finite: bool,
) -> np.ndarray:
    """``(arr - sub) * mul + add`` (then clip to [0, 1]) in one blockwise pass into ``dtype``.

    Arithmetic runs in float32 (float64 when the output or the need for exact integers asks
    for it) in blocks along axis 0, so temporaries stay small and float16 outputs do not
    overflow in intermediate steps.
    """
    wide = dtype == np.float64 or (np.issubdtype(dtype, np.integer) and dtype.itemsize > 2)
    work = np.dtype(np.float64 if wide else np.float32)
    direct = dtype == work  # compute straight into the output, no temporary
    out = np.empty(arr.shape, dtype)
    nonfinite = 0
    sub, mul = _per_axis0(sub, arr.ndim), _per_axis0(mul, arr.ndim)
    add = None if add is None else _per_axis0(add, arr.ndim)
    for block in _row_blocks(arr.shape):
        src = arr[block]
        if check_finite:
            nonfinite += _count_nonfinite(src)
        tmp = out[block] if direct else np.empty(src.shape, work)
        np.subtract(src, _take(sub, block), out=tmp, dtype=work, casting="unsafe")
        np.multiply(tmp, _take(mul, block), out=tmp, dtype=work, casting="unsafe")
        if add is not None:
            np.add(tmp, _take(add, block), out=tmp, dtype=work, casting="unsafe")
        if clip:
            np.clip(tmp, 0.0, 1.0, out=tmp)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            np.rint(tmp, out=tmp)
            np.clip(tmp, info.min, info.max, out=tmp)
        if not direct:
            out[block] = tmp
    if nonfinite:
        _require_finite(arr, nonfinite)
    return out


def _scale_and_width(stats: NormStats) -> tuple[Any, Any]:
    """Forward factor 1 / (hi - lo + eps) and inverse width, both 0 for constant ranges."""
    lo, hi = np.asarray(stats.lo), np.asarray(stats.hi)
    span = hi - lo
    constant = span <= 0
    width = np.where(constant, 0.0, span + stats.eps)
    with np.errstate(divide="ignore"):
        scale = np.where(constant, 0.0, 1.0 / np.where(constant, 1.0, width))
    if not stats.per_slice:
        return float(scale), float(width)
    return scale, width


def apply_stats(
    data: Any, stats: NormStats, dtype: Any = np.float32, clip: bool = False
) -> np.ndarray:
    """Normalise ``data`` with precomputed statistics: ``(x - lo) / (hi - lo + eps)``.

    Parameters
    ----------
    data
        Array to normalise (numpy array or memmap; other array-likes are read whole). With
        per-slice statistics it must be (Z, Y, X) with the same Z (see `NormStats.select`).
    stats
        From `compute_stats` or `normalize` (``return_stats=True``).
    dtype
        Float dtype of the result.
    clip
        Clip the result to [0, 1]. Off by default here, because tiles of a large image are
        normalised with whole-image statistics and the model sees values outside [0, 1] too.

    Returns
    -------
    numpy.ndarray
        Normalised array of ``dtype``, same shape as ``data``.

    Raises
    ------
    DataError
        Non-finite values in ``data`` (counted), a non-float ``dtype``, or mismatching slices.
    """
    arr = _numeric(data)
    out_dtype = _float_dtype(dtype)
    _check_slices(arr, stats)
    scale, _ = _scale_and_width(stats)
    return _affine(arr, stats.lo, scale, None, out_dtype, clip, check_finite=True)


def normalize(
    data: Any,
    pmin: float = PMIN,
    pmax: float = PMAX,
    by_perc: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
    per_slice: bool = False,
    eps: float = 1e-16,
    dtype: Any = np.float32,
    clip: bool = True,
    return_stats: bool = False,
) -> np.ndarray | tuple[np.ndarray, NormStats]:
    """Map intensities to [0, 1] as the original DeBCR: ``(x - lo) / (hi - lo + eps)``.

    Parameters
    ----------
    data
        Image (Y, X) or stack (Z, Y, X), any real dtype (numpy array or memmap).
    pmin, pmax
        Percentiles used as ``lo`` and ``hi`` when ``by_perc`` is True.
    by_perc
        True: percentile range; False: minimum/maximum.
    vmin, vmax
        Fixed ``lo``/``hi`` (each one given overrides the computed bound).
    per_slice
        Separate range for every slice along axis 0 of a 3-D stack (a 2-D image is one slice).
    eps
        Added to the denominator.
    dtype
        Float dtype of the result (always honoured).
    clip
        Clip the result to [0, 1] (the original behaviour). Use False for an exact round trip
        through `denormalize`.
    return_stats
        Also return the `NormStats` used.

    Returns
    -------
    numpy.ndarray or (numpy.ndarray, NormStats)
        The normalised array of ``dtype`` (all zeros for a constant image), and the statistics
        when ``return_stats`` is True.

    Raises
    ------
    DataError
        NaN/Inf values (the message gives their number), non-numeric data, invalid percentiles
        or a non-float ``dtype``.
    """
    arr = _numeric(data)
    out_dtype = _float_dtype(dtype)
    _require_finite(arr)  # before percentiles, which NaN would silently poison
    stats = _compute(arr, pmin, pmax, by_perc, vmin, vmax, per_slice, eps)
    scale, _ = _scale_and_width(stats)
    out = _affine(arr, stats.lo, scale, None, out_dtype, clip, check_finite=False)
    return (out, stats) if return_stats else out


def denormalize(data: Any, stats: NormStats, dtype: Any = None) -> np.ndarray:
    """Map normalised values back to input units: ``x * (hi - lo + eps) + lo``.

    Parameters
    ----------
    data
        Normalised array (e.g. a model prediction) of the shape the statistics describe.
    stats
        The statistics used for normalising.
    dtype
        Result dtype. None: the input's float dtype (float32 for non-float input). An integer
        dtype (e.g. the original ``uint16``) rounds and clips to its range.

    Returns
    -------
    numpy.ndarray
        Array in input units; a constant image comes back as its constant ``lo``.
    """
    arr = _numeric(data)
    if dtype is None:
        out_dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.dtype(np.float32)
    else:
        out_dtype = np.dtype(dtype)
    _check_slices(arr, stats)
    _, width = _scale_and_width(stats)
    return _affine(arr, 0.0, width, stats.lo, out_dtype, clip=False, check_finite=False)
