"""Show slices of several image stacks side by side in one matplotlib figure.

`show` is the DeBCR ``debcr.data.show`` preview grid: one column per dataset
(e.g. input, prediction, ground truth) and one row per requested slice. It builds a
`matplotlib.figure.Figure` directly, without pyplot, so it works headless, selects
no backend and leaves no figure open in a global registry; save the result with
``fig.savefig(path)``.

Only numpy, matplotlib and the numpy-only `debcr.data.normalize` are used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from debcr.data.normalize import check_percentiles
from debcr.defaults import PERCENTILES
from debcr.errors import DataError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["RANDOM_SLICE", "show"]

#: Slice index that asks `show` for a random slice.
RANDOM_SLICE = -1


@dataclass(frozen=True)
class _Dataset:
    """One column of the grid: an array-like of 2 or 3 dimensions and its title."""

    index: int
    title: str
    array: Any  # numpy array or a lazy array-like (dask, zarr) with shape/ndim/__getitem__

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.array.shape)

    @property
    def n_slices(self) -> int:
        """Number of slices; a 2-D image counts as one."""
        return 1 if len(self.shape) == 2 else self.shape[0]

    def describe(self) -> str:
        return f"dataset {self.index} ({self.title!r}, shape {self.shape})"

    def panel(self, z: int, zoom: tuple[int, int, int, int] | None) -> np.ndarray:
        """Slice ``z`` (cropped to ``zoom``) as a numpy array, reading nothing else."""
        rows = slice(zoom[0], zoom[1]) if zoom is not None else slice(None)
        cols = slice(zoom[2], zoom[3]) if zoom is not None else slice(None)
        key = (rows, cols) if len(self.shape) == 2 else (z, rows, cols)
        image = np.asarray(self.array[key])
        return image.astype(np.uint8) if image.dtype == np.bool_ else image


def show(
    data: Any,
    slices: int | Sequence[int] = (RANDOM_SLICE,),
    titles: Sequence[str] = (),
    figsize: tuple[float, float] = (5, 5),
    cmap: Any = "inferno",
    show_titles: bool = True,
    show_ids: bool = True,
    transpose: bool = False,
    *,
    seed: int | np.random.Generator | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    percentiles: tuple[float, float] = PERCENTILES,
    zoom: tuple[int, int, int, int] | None = None,
) -> Figure:
    """Draw a grid of image slices: one column per dataset, one row per slice index.

    Parameters
    ----------
    data : array, sequence of arrays or mapping of name to array
        The datasets to compare. Each is a ``(Z, H, W)`` stack or a single ``(H, W)``
        image (treated as a stack of one slice). Datasets may differ in length and in
        image size. A single array is shown as one dataset; a mapping (such as an
        opened NPZ file ``{'low': ..., 'gt': ...}``) uses its keys as default titles.
        Lazy array-likes (dask, zarr) are accepted; only the shown slices are read.
    slices : int or sequence of int, default ``(-1,)``
        Slice indices, one grid row each. ``-1`` draws a random slice that is valid in
        every dataset; the drawn index is the same for all datasets of the row, so
        input, prediction and ground truth show the same slice. Other negative values
        are refused. The caller's sequence is never modified.
    titles : sequence of str, default ``()``
        One title per dataset. Empty means the mapping keys, or ``"data 0"``,
        ``"data 1"``, ... for a sequence.
    figsize : (float, float), default ``(5, 5)``
        Width and height of one panel in inches; the figure is this times the number
        of grid columns and rows.
    cmap : str or matplotlib colormap, default ``"inferno"``
        Colormap of every panel.
    show_titles : bool, default True
        Put the dataset title above each panel.
    show_ids : bool, default True
        Put the slice index (``"slice 3"``) above each panel.
    transpose : bool, default False
        Swap the grid: one row per dataset and one column per slice index.
    seed : int, numpy Generator or None, default None
        Seed of ``numpy.random.default_rng`` for the random slices; an int makes the
        figure reproducible.
    vmin, vmax : float or None, default None
        Fixed display range for all panels. A bound left as None comes from
        ``percentiles`` of each panel on its own.
    percentiles : (float, float), default ``(0.1, 99.9)``
        Low and high percentile of a panel's finite pixel values used as its display
        range, so single hot or dead pixels do not wash out the image: two finite
        numbers ``(pmin, pmax)`` with ``0 <= pmin < pmax <= 100``.
    zoom : (y0, y1, x0, x1) or None, default None
        Show only rows ``y0:y1`` and columns ``x0:x1`` of every panel. The region must
        lie inside every dataset's image.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, not yet drawn; save it with ``fig.savefig(path)``. Its axes are in
        row-major order, ``fig.axes[row * n_columns + column]``.

    Raises
    ------
    DataError
        If ``data`` is empty or not arrays, a dataset is not 2-D or 3-D or has no
        pixels, a requested slice is missing from a dataset (the message names the
        dataset, its shape and the slice), or an argument is out of range.

    Examples
    --------
    >>> fig = show({"low": low, "pred": pred, "gt": gt}, slices=[-1, 10], seed=0)
    >>> fig.savefig("preview.png")
    """
    datasets = _datasets(data, titles)
    rows = _resolve_slices(slices, datasets, seed)
    box = _check_zoom(zoom, datasets)
    low_pct, high_pct = check_percentiles(*_percentile_pair(percentiles), what="percentiles")
    _check_limits(vmin, vmax)
    panel_w, panel_h = _check_figsize(figsize)

    n_rows, n_cols = len(rows), len(datasets)
    if transpose:
        n_rows, n_cols = n_cols, n_rows
    # matplotlib is imported here, not at module import: restoring never draws a figure and
    # its import costs a third of a second of every command's start.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel_w * n_cols, panel_h * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, z in enumerate(rows):
        for dataset in datasets:
            ax = axes[dataset.index, r] if transpose else axes[r, dataset.index]
            image = dataset.panel(z, box)
            lo, hi = _display_range(image, vmin, vmax, low_pct, high_pct)
            ax.imshow(image, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_axis_off()
            parts = ([dataset.title] if show_titles else []) + ([f"slice {z}"] if show_ids else [])
            if parts:
                ax.set_title(", ".join(parts))
    return fig


# --- argument checks ---------------------------------------------------------------------


def _is_array_like(obj: object) -> bool:
    return hasattr(obj, "shape") and hasattr(obj, "dtype") and hasattr(obj, "__getitem__")


def _datasets(data: Any, titles: Sequence[str]) -> list[_Dataset]:
    if isinstance(data, Mapping):
        names = [str(key) for key in data]
        items: list[Any] = list(data.values())
    elif _is_array_like(data):
        names, items = ["data 0"], [data]
    elif isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise DataError(
            f"data must be an array, a list of arrays or a dict of arrays, "
            f"not {type(data).__name__}"
        )
    else:
        items = list(data)
        names = [f"data {i}" for i in range(len(items))]
    if not items:
        raise DataError("data is empty: give at least one (Z, H, W) or (H, W) array to show")

    if isinstance(titles, str):
        titles = [titles]
    titles = list(titles)
    if titles and len(titles) != len(items):
        raise DataError(
            f"titles has {len(titles)} entries but data has {len(items)} datasets; "
            f"give one title per dataset or none"
        )
    names = [str(t) for t in titles] or names

    datasets = []
    for i, (name, item) in enumerate(zip(names, items, strict=True)):
        array = item if _is_array_like(item) else np.asarray(item)
        dataset = _Dataset(i, name, array)
        if len(dataset.shape) not in (2, 3):
            raise DataError(
                f"{dataset.describe()} is {len(dataset.shape)}-D; show needs a 3-D (Z, H, W) "
                f"stack or a 2-D (H, W) image (squeeze or select channel axes first)"
            )
        kind = np.dtype(array.dtype).kind
        if kind not in "biuf":
            raise DataError(
                f"{dataset.describe()} has dtype {array.dtype}; show needs real numbers"
            )
        if 0 in dataset.shape:
            raise DataError(f"{dataset.describe()} has no pixels to show")
        datasets.append(dataset)
    return datasets


def _resolve_slices(
    slices: int | Sequence[int],
    datasets: list[_Dataset],
    seed: int | np.random.Generator | None,
) -> list[int]:
    """Replace each random slice by a drawn index valid in all datasets; check the others."""
    requested = [slices] if isinstance(slices, (int, np.integer)) else list(slices)
    if not requested:
        raise DataError("slices is empty: give at least one slice index, or -1 for random")
    for z in requested:
        if isinstance(z, (bool, np.bool_)) or not isinstance(z, (int, np.integer)):
            raise DataError(f"slice index {z!r} is not an integer")
        if z < 0 and z != RANDOM_SLICE:
            raise DataError(
                f"slice index {z} is negative; use indices >= 0, or {RANDOM_SLICE} "
                f"for a random slice"
            )

    rng = np.random.default_rng(seed)
    shortest = min(datasets, key=lambda d: d.n_slices)
    resolved = []
    for z in requested:
        if z == RANDOM_SLICE:
            resolved.append(int(rng.integers(0, shortest.n_slices)))
            continue
        for dataset in datasets:
            if z >= dataset.n_slices:
                raise DataError(
                    f"slice {z} does not exist in {dataset.describe()}: it has "
                    f"{dataset.n_slices} slice(s), valid indices are 0..{dataset.n_slices - 1}"
                    f" (or {RANDOM_SLICE} for a random slice)"
                )
        resolved.append(int(z))
    return resolved


def _check_zoom(
    zoom: Sequence[int] | None, datasets: list[_Dataset]
) -> tuple[int, int, int, int] | None:
    if zoom is None:
        return None
    values = list(zoom)
    if len(values) != 4 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values
    ):
        raise DataError(f"zoom must be four integers (y0, y1, x0, x1), got {zoom!r}")
    y0, y1, x0, x1 = (int(v) for v in values)
    if not (0 <= y0 < y1 and 0 <= x0 < x1):
        raise DataError(
            f"zoom {(y0, y1, x0, x1)} is not a region: need 0 <= y0 < y1 and 0 <= x0 < x1"
        )
    for dataset in datasets:
        height, width = dataset.shape[-2:]
        if y1 > height or x1 > width:
            raise DataError(
                f"zoom {(y0, y1, x0, x1)} reaches outside {dataset.describe()}: images are "
                f"{height} x {width} pixels"
            )
    return y0, y1, x0, x1


def _percentile_pair(percentiles: Sequence[float]) -> tuple[Any, Any]:
    """The two entries of ``percentiles``; their values are checked by check_percentiles."""
    values = list(percentiles)
    if len(values) != 2:
        raise DataError(f"percentiles must be two numbers (low, high), got {percentiles!r}")
    return values[0], values[1]


def _check_limits(vmin: float | None, vmax: float | None) -> None:
    for name, value in (("vmin", vmin), ("vmax", vmax)):
        if value is not None and not np.isfinite(value):
            raise DataError(f"{name} must be a finite number or None, got {value!r}")
    if vmin is not None and vmax is not None and vmin > vmax:
        raise DataError(f"vmin {vmin} is greater than vmax {vmax}")


def _check_figsize(figsize: Sequence[float]) -> tuple[float, float]:
    values = list(figsize)
    if len(values) != 2 or not all(np.isfinite(v) and v > 0 for v in values):
        raise DataError(
            f"figsize must be two positive numbers (width, height) of one panel in inches, "
            f"got {figsize!r}"
        )
    return float(values[0]), float(values[1])


def _display_range(
    image: np.ndarray,
    vmin: float | None,
    vmax: float | None,
    low_pct: float,
    high_pct: float,
) -> tuple[float | None, float | None]:
    """Display range of one panel: the given bounds, else the panel's percentiles."""
    if vmin is not None and vmax is not None:
        return vmin, vmax
    values = image[np.isfinite(image)] if image.dtype.kind == "f" else image.ravel()
    if values.size == 0:  # all NaN / inf: let matplotlib decide
        return vmin, vmax
    low, high = (float(v) for v in np.percentile(values, [low_pct, high_pct]))
    if vmin is not None:
        return vmin, max(high, vmin)
    if vmax is not None:
        return min(low, vmax), vmax
    return low, high
