"""Training patches for Lightning: loading and checking them, datasets, order, augmentation."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from debcr.data.io import load
from debcr.data.normalize import normalize
from debcr.data.sets import check_patch_shape
from debcr.defaults import PMAX, PMIN
from debcr.errors import DataError

logger = logging.getLogger(__name__)

#: A float array whose 99.9th percentile is above this, or whose 0.1th is below
#: `RAW_LOW`, holds raw intensities: normalised patches (`debcr prepare`: each image's 0.1/99.9
#: percentiles mapped to 0 and 1, no clipping) stay within about -0.1…1.5.
RAW_HIGH = 4.0
RAW_LOW = -1.0


def _open(source: Any, what: str, keys: str) -> Any:
    """A dict-like split from a dict-like or an NPZ path; DataError for anything else."""
    if isinstance(source, (str, os.PathLike)):
        source = load(Path(source))
    if not hasattr(source, "__getitem__") or isinstance(source, np.ndarray):
        raise DataError(
            f"{what} must be a dict or NPZ file with {keys} (got {type(source).__name__})"
        )
    return source


def _mode_hint(source: Any) -> str:
    """Which mode the keys of ``source`` suggest, as the end of a sentence ('' if none)."""
    keys = set(source.keys()) if hasattr(source, "keys") else set()
    if "repeats" in keys:
        return "; it holds 'repeats' (repeated noisy frames): set mode: noise2noise"
    if "low" in keys and "gt" not in keys:
        return "; it holds only noisy images ('low'): set mode: noise2void"
    return ""


def _array(source: Any, key: str, what: str, expected: str) -> np.ndarray:
    try:
        return np.asarray(source[key])
    except KeyError:
        raise DataError(
            f"{what} has no array {key!r}; expected {expected}{_mode_hint(source)}"
        ) from None


def _check_patches(arr: np.ndarray, name: str, what: str) -> None:
    """Square patches with a side divisible by 4 in the last two axes, all finite."""
    h, w = arr.shape[-2:]
    if h != w:
        raise DataError(
            f"{what}: patches must be square, got {h}×{w}; crop them with debcr.data.crop or "
            "`debcr prepare`"
        )
    check_patch_shape(arr.shape, f"{what}: patches")
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise DataError(f"{what}: '{name}' holds {bad} NaN/Inf values; clean the data first")


def load_pairs(source: Any, what: str = "training data") -> tuple[np.ndarray, np.ndarray]:
    """``(low, gt)`` float32 arrays ``(N, P, P)`` from a dict-like or an NPZ path.

    Raises
    ------
    DataError
        If keys are missing, shapes differ or are not stacks of square patches with a
        side divisible by 4, or values are not finite.
    """
    source = _open(source, what, "arrays 'low' and 'gt'")
    expected = "keys 'low' (input) and 'gt' (ground truth) — `debcr prepare` writes them"
    low = _array(source, "low", what, expected)
    gt = _array(source, "gt", what, expected)
    if low.ndim == 2:
        low, gt = low[None], gt[None]
    if low.shape != gt.shape:
        raise DataError(f"{what}: 'low' {low.shape} and 'gt' {gt.shape} must have the same shape")
    if low.ndim != 3 or low.shape[0] == 0:
        raise DataError(f"{what}: expected a stack of patches (N, P, P), got shape {low.shape}")
    _check_patches(low, "low", what)
    _check_patches(gt, "gt", what)
    return low.astype(np.float32, copy=False), gt.astype(np.float32, copy=False)


def load_patches(source: Any, what: str = "training data") -> np.ndarray:
    """Noisy patches ``low`` ``(N, P, P)`` float32 (Noise2Void) from a dict-like or NPZ path."""
    source = _open(source, what, "an array 'low' of noisy patches")
    low = _array(source, "low", what, "'low' (noisy patches; `debcr prepare --mode noise2void`)")
    if low.ndim == 2:
        low = low[None]
    if low.ndim != 3 or low.shape[0] == 0:
        raise DataError(f"{what}: expected a stack of patches (N, P, P), got shape {low.shape}")
    _check_patches(low, "low", what)
    return low.astype(np.float32, copy=False)


def load_repeats(source: Any, what: str = "training data") -> np.ndarray:
    """Repeated noisy frames ``repeats`` ``(N, F, P, P)`` float32 (Noise2Noise), ``F >= 2``."""
    source = _open(source, what, "an array 'repeats' of repeated noisy frames")
    repeats = _array(
        source,
        "repeats",
        what,
        "'repeats' (N locations × F frames × P × P; `debcr prepare --mode noise2noise`)",
    )
    if repeats.ndim != 4 or repeats.shape[0] == 0:
        raise DataError(
            f"{what}: 'repeats' must be (N locations, F frames, P, P), got shape {repeats.shape}"
        )
    if repeats.shape[1] < 2:
        raise DataError(
            f"{what}: 'repeats' has {repeats.shape[1]} frame per location; Noise2Noise needs at "
            "least 2 independent noisy frames of each field"
        )
    _check_patches(repeats, "repeats", what)
    return repeats.astype(np.float32, copy=False)


class EpochOrder(Sampler[int]):
    """A random order of ``n`` items per epoch that depends only on the seed and the epoch.

    Lightning announces each epoch (``set_epoch``). A run resumed in the middle of an epoch
    gives ``skip`` (items of epoch ``skip_epoch`` that its steps used already): that epoch then
    continues where the interrupted run was, so the resumed run sees the batches the
    uninterrupted one would have seen (torch's own shuffling starts every resumed epoch anew).
    """

    def __init__(self, n: int, seed: int, *, skip_epoch: int = 0, skip: int = 0) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0
        self.skip_epoch = skip_epoch
        self.skip = skip

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        if self.skip and self.epoch == self.skip_epoch:
            order, self.skip = order[self.skip :], 0
        return iter(order)


class PairDataset(Dataset):
    """Map-style dataset of ``(low, gt)`` patch pairs shaped ``(1, P, P)``."""

    def __init__(self, low: np.ndarray, gt: np.ndarray) -> None:
        self.low = torch.from_numpy(np.ascontiguousarray(low))
        self.gt = torch.from_numpy(np.ascontiguousarray(gt))

    def __len__(self) -> int:
        return self.low.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.low[index, None], self.gt[index, None]


class PatchDataset(Dataset):
    """Map-style dataset of single patches ``(1, P, P)`` (as one-element tuples)."""

    def __init__(self, low: np.ndarray) -> None:
        self.low = torch.from_numpy(np.ascontiguousarray(low))

    def __len__(self) -> int:
        return self.low.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor]:
        return (self.low[index, None],)


class RepeatsDataset(Dataset):
    """The frames of one patch location: all of them, or a fixed pair.

    With ``random_pairs`` an item is the ``(F, P, P)`` stack of one location, from which
    `draw_pairs` takes two distinct frames when the batch is trained on (torch's generator,
    seeded by the run and restored on resume, so a resumed run draws the same pairs).
    Otherwise the items are the fixed pairs ``(f, f + 1 mod F)`` of every location and frame,
    ``(1, P, P)`` each, for a validation loss that is the same for the same network.
    """

    def __init__(self, repeats: np.ndarray, *, random_pairs: bool) -> None:
        self.repeats = torch.from_numpy(np.ascontiguousarray(repeats))
        self.random_pairs = random_pairs
        self.frames = int(self.repeats.shape[1])

    def __len__(self) -> int:
        n = self.repeats.shape[0]
        return n if self.random_pairs else n * self.frames

    def frame_pair(self, index: int) -> tuple[int, int, int]:
        """``(location, input frame, target frame)`` of the fixed item ``index``."""
        location, first = divmod(index, self.frames)
        return location, first, (first + 1) % self.frames

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        if self.random_pairs:
            return (self.repeats[index],)
        location, first, second = self.frame_pair(index)
        frames = self.repeats[location]
        return frames[first, None], frames[second, None]


def draw_pairs(stacks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two distinct random frames of every ``(F, P, P)`` stack of a batch, ``(B, 1, P, P)`` each."""
    n, frames = stacks.shape[:2]
    first = torch.randint(frames, (n,))
    second = torch.randint(frames - 1, (n,))
    second = second + (second >= first)
    rows = torch.arange(n)
    return stacks[rows, first, None], stacks[rows, second, None]


def augment(low: torch.Tensor, gt: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips (and 90° rotations) of a batch, the same for input and target."""
    if kind == "none":
        return low, gt
    n = low.shape[0]
    flips = torch.rand(n, 2, device=low.device) < 0.5
    turns = torch.randint(0, 4 if kind == "flip_rot90" else 1, (n,), device=low.device)
    out_low, out_gt = [], []
    for i in range(n):
        a, b = low[i], gt[i]
        dims = [d for d, flip in zip((-2, -1), flips[i].tolist(), strict=True) if flip]
        if dims:
            a, b = a.flip(dims), b.flip(dims)
        k = int(turns[i])
        if k:
            a, b = a.rot90(k, (-2, -1)), b.rot90(k, (-2, -1))
        out_low.append(a)
        out_gt.append(b)
    return torch.stack(out_low), torch.stack(out_gt)


def minmax_per_patch(x: torch.Tensor) -> torch.Tensor:
    """The original loader's per-patch rescale to [0, 1] (a constant patch becomes 1)."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    width = hi - lo
    return torch.where(width > 0, (x - lo) / width.clamp_min(1e-12), torch.ones_like(x))


def normalise_raw(
    arrays: dict[str, np.ndarray], what: str
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Normalise the arrays of a split that hold raw intensities, as `debcr prepare` would.

    The network trains on normalised patches (an image's 0.1/99.9 percentiles mapped to 0
    and 1). Arrays of an integer type, or float arrays far outside that range (see
    `RAW_HIGH`), were not prepared: each is mapped with its own percentiles over all its
    patches, unclipped, and a warning says so once. `debcr prepare` normalises every image
    with its own percentiles, which suits images of different brightness better.

    Returns
    -------
    arrays, record
        The arrays (normalised ones replaced, float32) and, per normalised array, the
        percentiles used and the values mapped to 0 and 1 (empty when nothing was raw).
    """
    out, record = dict(arrays), {}
    for key, arr in arrays.items():
        if not _raw(arr):
            continue
        # One stack of planes, whatever the mode's layout ((N, P, P) or (N, F, P, P)).
        planes = arr.reshape(-1, *arr.shape[-2:])
        scaled, stats = normalize(
            planes, PMIN, PMAX, clip=False, dtype=np.float32, return_stats=True
        )
        out[key] = scaled.reshape(arr.shape)
        record[key] = {"pmin": PMIN, "pmax": PMAX, "lo": float(stats.lo), "hi": float(stats.hi)}
    if record:
        described = "; ".join(f"'{k}': {r['lo']:g} → 0, {r['hi']:g} → 1" for k, r in record.items())
        logger.warning(
            "%s held raw intensities, normalised here with their %g/%g percentiles over all "
            "patches (%s); `debcr prepare` normalises each image on its own, which suits images "
            "of different brightness better",
            what,
            PMIN,
            PMAX,
            described,
        )
    return out, record


def _raw(arr: np.ndarray) -> bool:
    """Whether ``arr`` holds raw intensities rather than normalised ones."""
    if arr.dtype.kind in "uib":
        return True
    sample = np.ravel(arr)[:: max(1, arr.size // 1_000_000)]
    lo, hi = np.percentile(sample, [PMIN, PMAX])
    return bool(hi > RAW_HIGH or lo < RAW_LOW)
