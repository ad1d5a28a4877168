"""Cut images into overlapping patches and blend patches back into images.

The grid always covers the whole image: the image is padded at the bottom and
right so that the last patch ends at or beyond the border, and `stitch`
crops the padding away again when it is told the original image shape. Patch
order is row-major within a slice and slices follow each other, so patch
``z * ny * nx + iy * nx + ix`` starts at ``(iy * step_y, ix * step_x)`` of slice ``z``.

Axis naming: arrays are ``(Z, H, W)`` stacks; ``y`` is axis 1 (rows, the DeBCR
paper's "X") and ``x`` is axis 2 (columns, the paper's "Y").

Only numpy is used, so this module stays importable without torch. These patch grids are the
paper's workflow (``crop``/``stitch``, training patches); `debcr.model.predict` tiles
whole images with halos of its own, in `debcr.inference.tiles`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from debcr.errors import DataError

__all__ = [
    "MAX_OVERLAP",
    "PAD_MODES",
    "WINDOWS",
    "PatchGrid",
    "blend_window",
    "crop",
    "patch_grid",
    "stitch",
]

#: Overlap must lie in ``[0, MAX_OVERLAP)``; above that the patch count explodes.
MAX_OVERLAP = 0.9
#: Blending windows understood by `stitch` and `blend_window`.
WINDOWS = ("hann", "linear", "uniform")
#: Padding modes understood by `crop`.
PAD_MODES = ("reflect", "symmetric", "edge", "constant")

WindowKind = Literal["hann", "linear", "uniform"]
PadMode = Literal["reflect", "symmetric", "edge", "constant"]
IntPair = tuple[int, int]


@dataclass(frozen=True)
class PatchGrid:
    """Placement of overlapping patches over one image (one slice of a stack).

    Attributes
    ----------
    image_shape : tuple of int
        ``(H, W)`` of the image the grid covers.
    patch_size : tuple of int
        ``(ph, pw)``.
    step : tuple of int
        ``(sy, sx)``: distance between neighbouring patch origins.
    counts : tuple of int
        ``(ny, nx)``: number of patches along rows and columns.
    padded_shape : tuple of int
        ``((ny - 1) * sy + ph, (nx - 1) * sx + pw)``: the extent the patches span,
        never smaller than ``image_shape``.
    """

    image_shape: IntPair
    patch_size: IntPair
    step: IntPair
    counts: IntPair
    padded_shape: IntPair

    @property
    def n_patches(self) -> int:
        """Number of patches per slice, ``ny * nx``."""
        return self.counts[0] * self.counts[1]

    @property
    def pad_width(self) -> IntPair:
        """Rows and columns added at the bottom and right of the image."""
        return (
            self.padded_shape[0] - self.image_shape[0],
            self.padded_shape[1] - self.image_shape[1],
        )

    @property
    def origins(self) -> np.ndarray:
        """``(ny * nx, 2)`` int array of ``(y, x)`` patch origins in row-major order."""
        ys = np.arange(self.counts[0]) * self.step[0]
        xs = np.arange(self.counts[1]) * self.step[1]
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        return np.stack([yy.ravel(), xx.ravel()], axis=1)


def _is_int(value: object) -> bool:
    # bool is an int subclass but patch_size=True is surely a mistake.
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _as_pair(value: object) -> tuple | None:
    """``(v, v)`` for a scalar, the items of a sequence, None for anything else."""
    if np.ndim(value) == 0:
        return (value, value)
    try:
        return tuple(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def _int_pair(value: int | Sequence[int], name: str) -> IntPair:
    """Read a positive int or a pair of positive ints."""
    pair = _as_pair(value)
    if pair is None or len(pair) != 2 or not all(_is_int(v) and v > 0 for v in pair):
        raise DataError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _overlap_pair(overlap: float | Sequence[float]) -> tuple[float, float]:
    """Read an overlap fraction or a pair of them, each in ``[0, MAX_OVERLAP)``."""
    pair = _as_pair(overlap)
    if pair is None or len(pair) != 2:
        raise DataError(f"overlap must be a number or a pair (oy, ox), got {overlap!r}")
    for value in pair:
        try:
            ok = 0.0 <= float(value) < MAX_OVERLAP
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise DataError(
                f"overlap must be in [0, {MAX_OVERLAP}) per axis, got {value!r} "
                f"(in overlap={overlap!r})"
            )
    return float(pair[0]), float(pair[1])


def _axis_step(patch: int, overlap: float) -> int:
    # Round half up (not Python's banker's rounding) so e.g. p=9, o=0.5 gives step 5.
    return max(1, math.floor(patch * (1.0 - overlap) + 0.5))


def _axis_count(length: int, patch: int, step: int) -> int:
    # One patch plus as many steps as needed for the last patch to reach the border.
    return 1 + math.ceil(max(0, length - patch) / step)


def patch_grid(
    image_shape: Sequence[int],
    patch_size: int | Sequence[int] = 128,
    overlap: float | Sequence[float] = (0.5, 0.5),
) -> PatchGrid:
    """Compute the patch grid that covers an image completely.

    Parameters
    ----------
    image_shape : sequence of int
        ``(H, W)`` of one image.
    patch_size : int or (int, int), default 128
        Patch height and width; one int means square patches.
    overlap : float or (float, float), default (0.5, 0.5)
        Fraction of a patch shared with its neighbour, per axis ``(oy, ox)``,
        each in ``[0, 0.9)``.

    Returns
    -------
    PatchGrid
        ``step = max(1, round(p * (1 - o)))`` and
        ``count = 1 + ceil(max(0, L - p) / step)`` per axis.

    Raises
    ------
    DataError
        If a size is not a positive int or an overlap is outside ``[0, 0.9)``.
    """
    if np.ndim(image_shape) != 1:
        raise DataError(f"image_shape must be a pair (H, W), got {image_shape!r}")
    shape = _int_pair(tuple(image_shape), "image_shape")
    patch = _int_pair(patch_size, "patch_size")
    over = _overlap_pair(overlap)
    step = (_axis_step(patch[0], over[0]), _axis_step(patch[1], over[1]))
    counts = (
        _axis_count(shape[0], patch[0], step[0]),
        _axis_count(shape[1], patch[1], step[1]),
    )
    padded = ((counts[0] - 1) * step[0] + patch[0], (counts[1] - 1) * step[1] + patch[1])
    return PatchGrid(shape, patch, step, counts, padded)


def _as_patch_stack(data: np.ndarray) -> np.ndarray:
    """View a 2-D image as a one-slice stack; reject other ranks and empty arrays."""
    if data.ndim not in (2, 3):
        raise DataError(
            f"expected a 2-D image (H, W) or a 3-D stack (Z, H, W), got shape {data.shape}"
        )
    if data.size == 0:
        raise DataError(f"cannot cut an empty array of shape {data.shape} into patches")
    return data[np.newaxis] if data.ndim == 2 else data


def _pad_axis(stack: np.ndarray, axis: int, width: int, mode: str) -> np.ndarray:
    if width == 0:
        return stack
    # A single row or column has nothing to mirror; repeating it is the only sensible
    # fill. numpy's reflect mirrors repeatedly when the pad is wider than the image.
    if mode in ("reflect", "symmetric") and stack.shape[axis] == 1:
        mode = "edge"
    pads = [(0, 0)] * stack.ndim
    pads[axis] = (0, width)
    return np.pad(stack, pads, mode=mode)  # type: ignore[call-overload]


def _pad_stack(stack: np.ndarray, grid: PatchGrid, mode: str) -> np.ndarray:
    """Pad a ``(Z, H, W)`` stack at the bottom and right to the grid's extent."""
    pad_y, pad_x = grid.pad_width
    return _pad_axis(_pad_axis(stack, 1, pad_y, mode), 2, pad_x, mode)


def crop(
    data: np.ndarray,
    patch_size: int | Sequence[int] = 128,
    overlap: float | Sequence[float] = (0.5, 0.5),
    dry_run: bool = False,
    pad_mode: PadMode = "reflect",
) -> np.ndarray | tuple[int, IntPair]:
    """Cut an image or a stack into overlapping patches covering all of it.

    Parameters
    ----------
    data : ndarray
        2-D image ``(H, W)`` (treated as one slice) or 3-D stack ``(Z, H, W)``.
    patch_size : int or (int, int), default 128
        Patch height and width.
    overlap : float or (float, float), default (0.5, 0.5)
        Overlap fraction per axis, each in ``[0, 0.9)``.
    dry_run : bool, default False
        Only compute the number of patches and the grid, without copying data.
    pad_mode : {"reflect", "symmetric", "edge", "constant"}, default "reflect"
        How the bottom/right padding that completes the last row and column of
        patches is filled (numpy ``np.pad`` modes; "constant" pads zeros). With
        "reflect" or "symmetric", an axis of length 1 is padded by repetition.

    Returns
    -------
    ndarray or tuple
        Patches ``(Z * ny * nx, ph, pw)`` with the input's dtype, patch
        ``z * ny * nx + iy * nx + ix`` starting at ``(iy * sy, ix * sx)`` of slice
        ``z``; with ``dry_run=True`` the tuple ``(n_patches, (ny, nx))``.

    Raises
    ------
    DataError
        For arrays that are not 2-D or 3-D, empty arrays, bad patch sizes,
        overlaps or pad modes.
    """
    stack = _as_patch_stack(np.asarray(data))
    if pad_mode not in PAD_MODES:
        raise DataError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    grid = patch_grid(stack.shape[1:], patch_size, overlap)
    n_total = stack.shape[0] * grid.n_patches
    if dry_run:
        return n_total, grid.counts
    padded = _pad_stack(stack, grid, pad_mode)
    (ph, pw), (sy, sx) = grid.patch_size, grid.step
    # Every window position, then keep one every `step`: shape (Z, ny, nx, ph, pw).
    windows = sliding_window_view(padded, (ph, pw), axis=(1, 2))[:, ::sy, ::sx]
    return windows.reshape(n_total, ph, pw)  # reshape of a strided view copies


def _window_1d(length: int, kind: str) -> np.ndarray:
    """Strictly positive 1-D blending weights peaking at 1."""
    # Sampling at pixel centres (i + 0.5) keeps both ends above zero, unlike
    # np.hanning, whose zero ends blanked image borders and seams in the original.
    centres = (np.arange(length) + 0.5) / length
    if kind == "hann":
        weights = np.sin(np.pi * centres) ** 2
    elif kind == "linear":
        weights = 1.0 - np.abs(2.0 * centres - 1.0)
    else:
        weights = np.ones(length)
    # Peak 1 keeps weights and their sums O(1) whatever the patch size.
    return weights / weights.max()


def _check_window(kind: str) -> None:
    if kind not in WINDOWS:
        raise DataError(f"window must be one of {WINDOWS}, got {kind!r}")


def blend_window(patch_size: int | Sequence[int], kind: WindowKind = "hann") -> np.ndarray:
    """Weights for blending overlapping patches, strictly positive everywhere.

    The window is the outer product of 1-D windows sampled at pixel centres,
    ``t = (i + 0.5) / p``, each scaled to a maximum of 1:

    - ``"hann"``: ``sin(pi * t) ** 2``;
    - ``"linear"``: triangle ``1 - |2 t - 1|``;
    - ``"uniform"``: ones (plain averaging).

    With 50 % overlap and even ``p`` both "hann" and "linear" sum to a constant
    between neighbouring patches, and the smallest weight (at the patch corner)
    is ``sin(pi / (2 p)) ** 4`` or ``1 / p ** 2`` relative to the peak.

    Parameters
    ----------
    patch_size : int or (int, int)
        Patch height and width.
    kind : {"hann", "linear", "uniform"}, default "hann"
        Window shape.

    Returns
    -------
    ndarray
        float64 array of shape ``(ph, pw)``, all values in ``(0, 1]``.
    """
    _check_window(kind)
    ph, pw = _int_pair(patch_size, "patch_size")
    return np.outer(_window_1d(ph, kind), _window_1d(pw, kind))


def _axis_weight_sum(grid: PatchGrid, axis: int, kind: str) -> np.ndarray:
    """Sum of the 1-D windows of all patches along one axis, over the padded extent."""
    window = _window_1d(grid.patch_size[axis], kind)
    total = np.zeros(grid.padded_shape[axis])
    for i in range(grid.counts[axis]):
        start = i * grid.step[axis]
        total[start : start + window.size] += window
    return total


def _stitch_grid(
    patch_shape: IntPair,
    patch_num: Sequence[int] | None,
    overlap: float | Sequence[float],
    image_shape: Sequence[int] | None,
) -> PatchGrid:
    """The grid the patches were cut with, from the image shape or the patch counts."""
    if image_shape is not None:
        if np.ndim(image_shape) != 1 or len(image_shape) not in (2, 3):
            raise DataError(f"image_shape must be (H, W) or (Z, H, W), got {image_shape!r}")
        grid = patch_grid(tuple(image_shape)[-2:], patch_shape, overlap)
        if patch_num is not None and _int_pair(patch_num, "patch_num") != grid.counts:
            raise DataError(
                f"patch_num {tuple(patch_num)} does not match the {grid.counts} grid of an "
                f"image of shape {tuple(image_shape)} with patches {patch_shape}; "
                "pass only one of them"
            )
        return grid
    if patch_num is None:
        raise DataError("stitch needs patch_num (ny, nx) or image_shape to know the grid")
    counts = _int_pair(patch_num, "patch_num")
    over = _overlap_pair(overlap)
    # Without the original size, the image is the full extent the patches span.
    extent = [
        (n - 1) * _axis_step(p, o) + p for n, p, o in zip(counts, patch_shape, over, strict=True)
    ]
    return patch_grid(extent, patch_shape, overlap)


def stitch(
    data: np.ndarray,
    patch_num: Sequence[int] | None = None,
    overlap: float | Sequence[float] = (0.5, 0.5),
    use_cosine: bool = True,
    dry_run: bool = False,
    image_shape: Sequence[int] | None = None,
    window: WindowKind | None = None,
) -> np.ndarray | tuple[int, IntPair]:
    """Blend patches made by `crop` back into images (weighted average).

    Parameters
    ----------
    data : ndarray
        Patches ``(N, ph, pw)`` in `crop` order; ``N`` must be a multiple of
        ``ny * nx``, the number of slices being ``N // (ny * nx)``.
    patch_num : (int, int), optional
        Grid counts ``(ny, nx)`` as returned by ``crop(..., dry_run=True)``.
        Optional when ``image_shape`` is given (then it must agree with it).
    overlap : float or (float, float), default (0.5, 0.5)
        The overlap the patches were cut with.
    use_cosine : bool, default True
        Kept for compatibility with DeBCR: True selects the "hann" window, False
        plain averaging ("uniform"). Ignored when ``window`` is given.
    dry_run : bool, default False
        Only compute the output size.
    image_shape : sequence of int, optional
        Shape of the image that was cut: ``(H, W)`` or ``(Z, H, W)``. The grid is
        derived from it and the result is cropped to exactly ``(H, W)`` per slice.
        Without it the result has the padded extent of the grid,
        ``((ny - 1) * sy + ph, (nx - 1) * sx + pw)``, as in DeBCR.
    window : {"hann", "linear", "uniform"}, optional
        Blending window, see `blend_window`.

    Returns
    -------
    ndarray or tuple
        float32 images (whatever the patch dtype, since blended values are not
        integers; accumulation is in float64). The result is 2-D ``(H, W)`` only
        when ``image_shape`` has two entries and there is one slice, so that
        ``stitch(crop(x), image_shape=x.shape)`` has the shape of ``x``;
        otherwise ``(Z, H, W)``. With ``dry_run=True`` the tuple
        ``(n_slices, (H, W))``.

    Raises
    ------
    DataError
        If the patches are not a 3-D array, their number does not fill whole
        grids, the grid is unknown or inconsistent, or an option is invalid.
    """
    patches = np.asarray(data)
    if patches.ndim != 3:
        raise DataError(f"expected patches of shape (N, ph, pw), got shape {patches.shape}")
    if patches.dtype.kind not in "biuf":
        raise DataError(f"patches must be real numbers or booleans, got dtype {patches.dtype}")
    kind = window if window is not None else ("hann" if use_cosine else "uniform")
    _check_window(kind)
    grid = _stitch_grid(patches.shape[1:], patch_num, overlap, image_shape)
    n_slices, rest = divmod(patches.shape[0], grid.n_patches)
    if rest or n_slices == 0:
        raise DataError(
            f"got {patches.shape[0]} patches, but a {grid.counts[0]}x{grid.counts[1]} grid "
            f"needs a positive multiple of {grid.n_patches} (one grid per slice)"
        )
    if image_shape is not None and len(image_shape) == 3 and image_shape[0] != n_slices:
        raise DataError(
            f"image_shape {tuple(image_shape)} has {image_shape[0]} slices but the "
            f"{patches.shape[0]} patches make {n_slices}"
        )
    out_h, out_w = grid.image_shape
    if dry_run:
        return n_slices, (out_h, out_w)

    weights = blend_window(grid.patch_size, kind)
    # The windows are separable, so their sum over the grid is the outer product
    # of the per-axis sums; every pixel is covered, so it is strictly positive.
    norm = np.outer(_axis_weight_sum(grid, 0, kind), _axis_weight_sum(grid, 1, kind))
    norm = norm[:out_h, :out_w]
    out = np.empty((n_slices, out_h, out_w), dtype=np.float32)
    origins = grid.origins
    for z in range(n_slices):
        first = z * grid.n_patches
        acc = _accumulate(patches[first : first + grid.n_patches], origins, weights, grid)
        out[z] = acc[:out_h, :out_w] / norm
    if image_shape is not None and len(image_shape) == 2 and n_slices == 1:
        return out[0]
    return out


def _accumulate(
    patches: np.ndarray, origins: np.ndarray, weights: np.ndarray, grid: PatchGrid
) -> np.ndarray:
    """Weighted sum of one slice's patches, one patch at a time (bounded memory)."""
    ph, pw = grid.patch_size
    acc = np.zeros(grid.padded_shape, dtype=np.float64)
    for patch, (y, x) in zip(patches, origins, strict=True):
        acc[y : y + ph, x : x + pw] += weights * patch
    return acc
