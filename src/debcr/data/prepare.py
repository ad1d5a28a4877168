"""Turn paired images into DeBCR training sets: normalise, cut into patches, split, save.

:func:`prepare` reads pairs of degraded (``low``) and ground-truth (``gt``) images one image at
a time, normalises each image on its own with whole-image percentiles, cuts both into aligned
patches with :func:`debcr.data.tiling.crop`, optionally drops background patches, and writes
``<name>_train.npz``, ``<name>_val.npz`` and ``<name>_test.npz`` with the keys ``low`` and
``gt`` (``(N, P, P)`` float32) that the original DeBCR trains on.

Split by group, never by patch. The original split the patches 0.8/0.1/0.1 in order after
cropping, so overlapping patches of one field of view ended up in both training and test data
and test scores were inflated. Here every image belongs to a *group* (a field of view, e.g. the
FMD field folder, or one image in the simple 1:1 case) and whole groups are assigned to the
sets, so no pixel of a validation or test image is ever seen in training.

Several noisy frames may share one ground truth (the FMD layout: many frames per field, one
average per field): describe the data as :class:`Pair` records, e.g. with
:func:`pairs_from_folders`.

Only numpy and the debcr data modules are used (no torch), so GUIs and CLIs can import this
module quickly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from debcr.data.io import as_image_stack, format_for_path, load, write
from debcr.data.normalize import check_percentiles, normalize
from debcr.data.tiling import crop, patch_grid
from debcr.defaults import PMAX, PMIN, SIZE_MULTIPLE
from debcr.errors import DataError
from debcr.files import atomic_output

__all__ = [
    "BACKGROUND_PERCENTILE",
    "SETS",
    "Pair",
    "PrepareResult",
    "pairs_from_folders",
    "prepare",
    "split_groups",
]

log = logging.getLogger(__name__)

#: The sets written by :func:`prepare`, in this order (file suffixes ``_train.npz`` ...).
SETS = ("train", "val", "test")

#: Percentile of a normalised ground-truth patch compared with ``background_filter``. A high
#: percentile rather than the maximum, so that a few hot pixels do not keep a background patch,
#: yet a patch with only a small piece of a cell (~0.1 % of its pixels) is kept.
BACKGROUND_PERCENTILE = 99.9

#: Version of the ``info`` record stored in the NPZ files.
INFO_VERSION = 1

ImageSource = str | os.PathLike | np.ndarray | Sequence[Any]
"""Images: a file (a 3-D file is a stack of images), a folder of image files, an array
(2-D image or 3-D stack of images), or a list of these."""

SplitSpec = Sequence[float] | Mapping[str, Any]
"""Fractions ``(train, val, test)`` of the groups, or explicit ``{"train": [groups], ...}``."""


# --------------------------------------------------------------------------------------------
# Describing the data
# --------------------------------------------------------------------------------------------


def _group_id(value: Any) -> str:
    """Group ids are strings; ints are accepted so that ``range(1, 19)`` names FMD fields."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (str, int, np.integer)):
        raise DataError(
            f"group id {value!r} must be a string or an integer (e.g. the field folder name)"
        )
    text = str(value)
    if not text:
        raise DataError("group id must not be empty")
    return text


@dataclass(frozen=True)
class Pair:
    """Degraded images and their ground truth, belonging to one group (field of view).

    Attributes
    ----------
    low
        The degraded images: a file (a 3-D file holds one image per slice), a folder of image
        files, an array (2-D, or 3-D with one image per slice), or a list of these.
    gt
        The ground truth, in the same forms: either one image per ``low`` image (paired in
        order) or a single image shared by all of them (e.g. the average of many frames).
    group
        The field of view the images show. Whole groups go to one set (train, val or test),
        so give images that overlap or are neighbouring planes of one volume the same group.
        Integers are converted to strings.
    """

    low: Any
    gt: Any
    group: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "group", _group_id(self.group))


def _natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders '2' before '10' (digit runs compare as numbers)."""
    # re.split with a capturing group alternates text and digit runs, so the tuples of two
    # names compare str with str and int with int at every position.
    parts = re.split(r"(\d+)", name.lower())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def _is_image_path(path: Path) -> bool:
    """True for readable single-image files (and Zarr directories); hidden files never."""
    if path.name.startswith("."):
        return False
    try:
        fmt = format_for_path(path)
    except DataError:
        return False
    # .npz holds named arrays, not one image; a plain folder named like a file is not a store.
    return fmt.reader is not None and not fmt.holds_dict and (fmt.directory or path.is_file())


def _is_folder(path: Path) -> bool:
    """A folder of images, as opposed to a directory-based image file such as ``x.zarr``."""
    return path.is_dir() and not _is_image_path(path)


def _list_images(folder: Path) -> list[Path]:
    """Image files of ``folder`` (not recursive) in natural order; DataError if there are none."""
    files = sorted((p for p in folder.iterdir() if _is_image_path(p)), key=_natural_key_of)
    if not files:
        raise DataError(
            f"folder {folder} contains no image files (supported: .tif, .png, .jpg, .npy, .zarr "
            "...); check the path"
        )
    return files


def _natural_key_of(path: Path) -> tuple[Any, ...]:
    return _natural_key(path.name)


def pairs_from_folders(low_root: str | os.PathLike, gt_root: str | os.PathLike) -> list[Pair]:
    """Pair the images of two folders, grouped by field of view.

    Two layouts are understood:

    - **one subfolder per field** (FMD): ``low_root/<field>/*`` holds the noisy frames and
      ``gt_root/<field>/*`` either one ground truth (shared by all frames) or as many images as
      there are frames (paired in natural order). The group is the subfolder name.
    - **flat**: ``low_root/<file>`` and ``gt_root/<file>`` with the same file name form a pair
      (CSBDeep's convention); the group is the file name without its extension.

    Parameters
    ----------
    low_root, gt_root
        Folders of degraded and ground-truth images.

    Returns
    -------
    list of Pair
        One pair per field (subfolder layout) or per file (flat layout), in natural order
        ('2' before '10'). ``Pair.low``/``Pair.gt`` are tuples of file paths (a single path for
        a shared ground truth), so they can be filtered or shortened before :func:`prepare`.

    Raises
    ------
    DataError
        If a folder is missing or empty, a field or file has no ground truth, or a field has a
        number of ground-truth images other than 1 or its number of frames.
    """
    low_root, gt_root = Path(low_root), Path(gt_root)
    for role, root in (("low", low_root), ("gt", gt_root)):
        if not root.is_dir():
            raise DataError(f"{role} folder {root} does not exist or is not a folder")
    fields = sorted((p for p in low_root.iterdir() if _is_folder(p)), key=_natural_key_of)
    fields = [p for p in fields if not p.name.startswith(".")]
    if fields:
        return [_field_pair(folder, gt_root / folder.name) for folder in fields]
    low_files = _list_images(low_root)
    pairs = []
    for path in low_files:
        target = gt_root / path.name
        if not target.exists():
            raise DataError(
                f"no ground truth for {path}: expected {target} (files are paired by name)"
            )
        pairs.append(Pair(low=(path,), gt=target, group=path.stem))
    return pairs


def _field_pair(low_folder: Path, gt_folder: Path) -> Pair:
    if not gt_folder.is_dir():
        raise DataError(f"field {low_folder.name!r} has no ground-truth folder {gt_folder}")
    frames, targets = _list_images(low_folder), _list_images(gt_folder)
    if len(targets) == 1:
        return Pair(low=tuple(frames), gt=targets[0], group=low_folder.name)
    if len(targets) != len(frames):
        raise DataError(
            f"field {low_folder.name!r}: {low_folder} has {len(frames)} images but {gt_folder} "
            f"has {len(targets)}; give one ground truth per field or one per image"
        )
    return Pair(low=tuple(frames), gt=tuple(targets), group=low_folder.name)


# --------------------------------------------------------------------------------------------
# Images: references that are read one at a time
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _ImageRef:
    """One 2-D image: a whole 2-D file/array or one slice of a 3-D one, read on demand."""

    label: str
    path: Path | None = None
    array: Any = None
    index: int | None = None

    def read(self) -> np.ndarray:
        stack = _open_stack(self.path) if self.path is not None else self.array
        return np.asarray(stack if self.index is None else stack[self.index])


def _open_stack(path: Path) -> Any:
    """The image or stack in ``path``, lazily where the format allows (one slice is read)."""
    data, meta = load(path, lazy=True, with_metadata=True)
    if isinstance(data, Mapping):
        raise DataError(
            f"{path} holds several named arrays; pass one of them, e.g. np.load(path)['low']"
        )
    return as_image_stack(data, axes=meta.axes, name=str(path))


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, str)


def _stack_refs(stack: Any, label: str, path: Path | None) -> list[_ImageRef]:
    """References to the images of an opened 2-D image or 3-D stack."""
    array = None if path is not None else stack
    if len(stack.shape) == 2:
        return [_ImageRef(label, path, array)]
    return [_ImageRef(f"{label}[{z}]", path, array, z) for z in range(stack.shape[0])]


def _image_refs(source: Any, label: str) -> list[_ImageRef]:
    """Expand a source into 2-D image references (reading only shapes)."""
    if isinstance(source, _ImageRef):
        return [source]
    if _is_array(source):
        return _stack_refs(as_image_stack(source, name=label), label, None)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if _is_folder(path):
            return [ref for p in _list_images(path) for ref in _image_refs(p, str(p))]
        return _stack_refs(_open_stack(path), str(path), path)
    if isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        refs = [ref for i, s in enumerate(source) for ref in _image_refs(s, f"{label}[{i}]")]
        if not refs:
            raise DataError(f"{label} is an empty list; give at least one image")
        return refs
    raise DataError(
        f"{label}: cannot use {type(source).__name__} as images; give a file or folder path, "
        "an array, or a list of these"
    )


def _units(source: Any, role: str) -> list[Any]:
    """Split a ``low``/``gt`` argument of the 1:1 form into its paired entries (groups).

    A folder or list gives one entry per file/element; a single 3-D file or array gives one
    entry per slice; a single 2-D image is one entry.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if _is_folder(path):
            return list(_list_images(path))
        stack = _open_stack(path)
        return [source] if len(stack.shape) == 2 else _stack_refs(stack, str(path), path)
    if _is_array(source):
        stack = as_image_stack(source, name=f"{role} array")
        return [stack] if len(stack.shape) == 2 else _stack_refs(stack, f"{role} array", None)
    if isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        return list(source)
    raise DataError(
        f"{role}: cannot use {type(source).__name__} as images; give a file or folder path, an "
        "array, or a list of these"
    )


def _describe(source: Any) -> str:
    """Short name of a source for error messages (paths, shapes, first and last entries)."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, _ImageRef):
        return source.label
    if _is_array(source):
        return f"array of shape {tuple(source.shape)}"
    items = list(source)
    shown = (
        [_describe(x) for x in items]
        if len(items) <= 3
        else [
            _describe(items[0]),
            "...",
            _describe(items[-1]),
        ]
    )
    return f"[{', '.join(shown)}]"


def _as_pairs(low: Any, gt: Any) -> list[Pair]:
    """The pairs of either calling form of :func:`prepare`."""
    if gt is None:
        if _is_array(low) or isinstance(low, (str, os.PathLike)) or not isinstance(low, Iterable):
            raise DataError(
                "gt is missing: call prepare(low, gt, ...) with ground-truth images, or "
                "prepare(pairs, ...) with a list of Pair (see pairs_from_folders)"
            )
        pairs = []
        for i, item in enumerate(low):
            if isinstance(item, Pair):
                pairs.append(item)
            elif isinstance(item, tuple) and len(item) == 3:
                pairs.append(Pair(*item))
            else:
                raise DataError(
                    f"pairs[{i}] is a {type(item).__name__}; each pair must be a Pair or a "
                    "(low, gt, group) tuple"
                )
        if not pairs:
            raise DataError("no pairs given; the list of pairs is empty")
        return pairs
    low_units, gt_units = _units(low, "low"), _units(gt, "gt")
    if len(low_units) != len(gt_units):
        raise DataError(
            f"low ({_describe(low)}) has {len(low_units)} images but gt ({_describe(gt)}) has "
            f"{len(gt_units)}; they are paired in order, so give the same number (for several "
            "frames per ground truth use Pair / pairs_from_folders)"
        )
    if not low_units:
        raise DataError("low and gt are empty; give at least one image pair")
    return [Pair(lo, hi, str(i)) for i, (lo, hi) in enumerate(zip(low_units, gt_units))]


# --------------------------------------------------------------------------------------------
# Splitting groups
# --------------------------------------------------------------------------------------------


def _fractions(split: Sequence[float]) -> tuple[float, float, float]:
    try:
        values = tuple(float(f) for f in split)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(math.isfinite(f) and f >= 0 for f in values):
        raise DataError(
            f"split={split!r} must be three non-negative fractions (train, val, test) such as "
            '(0.8, 0.1, 0.1), or {"train": [groups], "val": [...], "test": [...]}'
        )
    total = sum(values)
    if abs(total - 1.0) > 1e-6:
        raise DataError(f"split fractions {values} add up to {total:g}; they must add up to 1")
    return values[0] / total, values[1] / total, values[2] / total


def _allocate(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Number of groups per set: largest remainders, then at least one per non-zero fraction."""
    raw = [f * n for f in fractions]
    counts = [math.floor(r) for r in raw]
    # Fractional parts sum to an integer below 3; ties go to the earlier set (train first).
    order = sorted(range(3), key=lambda i: (counts[i] - raw[i], i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    for i in range(3):
        if fractions[i] > 0 and counts[i] == 0:
            donors = [j for j in range(3) if counts[j] > 1]
            if not donors:
                break  # fewer groups than non-zero fractions: later sets stay empty
            donor = max(donors, key=lambda j: (counts[j], -j))
            counts[donor] -= 1
            counts[i] += 1
    return counts


def _as_group_list(value: Any, key: str) -> list[str]:
    if isinstance(value, (str, int, np.integer)):
        return [_group_id(value)]  # a lone id, not a string to iterate over character-wise
    if not isinstance(value, Iterable):
        raise DataError(f'split["{key}"] must be a list of group ids, got {value!r}')
    return [_group_id(v) for v in value]


def _explicit_split(groups: Sequence[str], split: Mapping[str, Any]) -> dict[str, list[str]]:
    unknown = [k for k in split if k not in SETS]
    if unknown:
        raise DataError(f"split has unknown set names {unknown}; use {list(SETS)}")
    where: dict[str, str] = {}
    for name in SETS:
        for group in _as_group_list(split.get(name, ()), name):
            if where.get(group, name) != name:
                raise DataError(
                    f"group {group!r} is listed in both {where[group]!r} and {name!r}; a group "
                    "(field of view) must be in one set only, or its pixels leak between sets"
                )
            where[group] = name
    known = set(groups)
    extra = [g for g in where if g not in known]
    if extra:
        raise DataError(
            f"split names groups {extra} that are not in the data; the groups are "
            f"{_short_list(groups)}"
        )
    missing = [g for g in groups if g not in where]
    if missing:
        raise DataError(
            f"groups {_short_list(missing)} are in no set of the split; assign every group to "
            "train, val or test (or leave their pairs out)"
        )
    return {name: [g for g in groups if where[g] == name] for name in SETS}


def _short_list(items: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)})"


def split_groups(
    groups: Iterable[str | int], split: SplitSpec = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, tuple[str, ...]]:
    """Assign whole groups (fields of view) to the train, val and test sets.

    Parameters
    ----------
    groups
        Group ids (strings or ints, duplicates ignored).
    split
        Either three fractions ``(train, val, test)`` adding up to 1: the groups are shuffled
        with ``seed`` and each set gets ``round(fraction * n_groups)`` of them (largest
        remainders), moved so that every set with a non-zero fraction gets at least one group
        when there are enough groups (train first, then val, then test). Fractions count
        groups, not patches: groups with more images give their set more patches. Or an explicit
        mapping such as ``{"train": range(1, 19), "val": [20], "test": [19]}``: every group
        must be listed exactly once; missing keys are empty sets.
    seed
        Seed of the shuffle (fractions only); the same seed gives the same split.

    Returns
    -------
    dict
        ``{"train": (...), "val": (...), "test": (...)}``; groups keep their input order
        within a set.

    Raises
    ------
    DataError
        Invalid fractions, unknown set names, a group listed in two sets, a listed group that
        is not in ``groups`` or a group in no set.
    """
    ids = list(dict.fromkeys(_group_id(g) for g in groups))
    if isinstance(split, Mapping):
        assigned = _explicit_split(ids, split)
    else:
        fractions = _fractions(split)
        counts = _allocate(len(ids), fractions)
        order = np.random.default_rng(seed).permutation(len(ids))
        bounds = np.cumsum([0, *counts])
        assigned = {}
        for k, name in enumerate(SETS):
            chosen = set(order[bounds[k] : bounds[k + 1]].tolist())
            assigned[name] = [g for i, g in enumerate(ids) if i in chosen]
            if fractions[k] > 0 and not chosen:
                log.warning(
                    "split: the %s set is empty: %d group(s) are too few for fractions %s",
                    name,
                    len(ids),
                    tuple(split),
                )
    return {name: tuple(assigned[name]) for name in SETS}


# --------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrepareResult:
    """What :func:`prepare` produced.

    Attributes
    ----------
    paths
        The files written, by set (only non-empty sets; empty when nothing was written).
    patches
        Number of patch pairs per set (all of ``SETS``).
    images
        Number of low images per set.
    groups
        Group ids per set.
    dropped
        Patch pairs removed by the background filter (all sets).
    arrays
        With ``return_arrays=True``: per non-empty set the dict that was saved (``low``,
        ``gt``, ``groups``, ``info``); otherwise None.
    """

    paths: dict[str, Path]
    patches: dict[str, int]
    images: dict[str, int]
    groups: dict[str, tuple[str, ...]]
    dropped: int = 0
    arrays: dict[str, dict[str, np.ndarray]] | None = field(default=None, repr=False)


# --------------------------------------------------------------------------------------------
# prepare, step 1: plan (arguments, pairs, split and outputs; no image is read)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Everything :func:`prepare` decided before reading any image.

    ``groups`` holds the group ids per set; ``targets`` the file per set, empty when nothing is
    written; ``patch_shape`` the validated ``(ph, pw)`` of ``patch_size``.
    """

    pairs: tuple[Pair, ...]
    groups: dict[str, tuple[str, ...]]
    targets: dict[str, Path]
    name: str | None
    patch_size: Any
    patch_shape: tuple[int, int]
    overlap: Any
    split: SplitSpec
    seed: int
    pmin: float
    pmax: float
    background_filter: float | None
    overwrite: bool

    @property
    def set_of(self) -> dict[str, str]:
        """The set of every group."""
        return {g: s for s in SETS for g in self.groups[s]}


def _check_options(pmin: float, pmax: float, background_filter: float | None) -> None:
    check_percentiles(pmin, pmax)
    if background_filter is not None and (
        isinstance(background_filter, bool) or not math.isfinite(float(background_filter))
    ):
        raise DataError(
            f"background_filter must be None or a finite number, got {background_filter!r}"
        )


def _output_targets(
    name: str | None, out_dir: str | os.PathLike | None, overwrite: bool
) -> dict[str, Path]:
    """The file of every set (none without ``out_dir``); FileExistsError if one exists."""
    if out_dir is None:
        return {}
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise DataError(
            f"name={name!r} must be a plain file-name stem such as 'fmd' (the files are "
            "<out_dir>/<name>_train.npz, ...)"
        )
    targets = {s: Path(out_dir) / f"{name}_{s}.npz" for s in SETS}
    existing = [str(t) for t in targets.values() if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"outputs {existing} already exist; pass overwrite=True to replace the dataset "
            f"{name!r}, or choose another name or folder"
        )
    return targets


def _multiples_around(side: int) -> tuple[int, ...]:
    """The multiples of SIZE_MULTIPLE just below and above ``side`` (below only if > 0)."""
    below = side - side % SIZE_MULTIPLE
    return (below, below + SIZE_MULTIPLE) if below else (below + SIZE_MULTIPLE,)


def _plan(
    low: Any,
    gt: Any,
    name: str | None,
    out_dir: str | os.PathLike | None,
    *,
    patch_size: Any,
    overlap: Any,
    split: SplitSpec,
    seed: int,
    pmin: float,
    pmax: float,
    background_filter: float | None,
    overwrite: bool,
) -> _Plan:
    """Check every argument and the outputs, pair the images and split the groups."""
    _check_options(pmin, pmax, background_filter)
    # Validates patch_size and overlap before any work.
    patch_shape = patch_grid((1, 1), patch_size, overlap).patch_size
    if any(side % SIZE_MULTIPLE for side in patch_shape):
        bad = [side for side in patch_shape if side % SIZE_MULTIPLE]
        near = sorted({m for side in bad for m in _multiples_around(side)})
        raise DataError(
            f"patch_size {patch_shape[0]}×{patch_shape[1]} cannot be trained on: m-rBCR needs "
            f"sides that are multiples of {SIZE_MULTIPLE} (it halves its input twice); use "
            f"{' or '.join(map(str, near))}"
        )
    targets = _output_targets(name, out_dir, overwrite)
    pairs = tuple(_as_pairs(low, gt))
    return _Plan(
        pairs=pairs,
        groups=split_groups([p.group for p in pairs], split, seed),
        targets=targets,
        name=name,
        patch_size=patch_size,
        patch_shape=patch_shape,
        overlap=overlap,
        split=split,
        seed=seed,
        pmin=pmin,
        pmax=pmax,
        background_filter=background_filter,
        overwrite=overwrite,
    )


# --------------------------------------------------------------------------------------------
# prepare, step 2: extract (read, normalise, cut, drop background)
# --------------------------------------------------------------------------------------------


@dataclass
class _Tally:
    """Counts over all pairs, reported once at the end rather than per image."""

    dropped: int = 0
    small: int = 0
    inputs: set[Path] = field(default_factory=set)


@dataclass
class _SetBuffer:
    """Patches of one set, collected image by image."""

    low: list[np.ndarray] = field(default_factory=list)
    gt: list[np.ndarray] = field(default_factory=list)
    groups: list[tuple[str, int]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    images: int = 0

    @property
    def n_patches(self) -> int:
        return sum(n for _, n in self.groups)

    def add(self, low: np.ndarray, gt: np.ndarray, group: str) -> None:
        self.images += 1
        if len(low):
            self.low.append(low)
            self.gt.append(gt)
            self.groups.append((group, len(low)))


def _normalised_patches(ref: _ImageRef, plan: _Plan) -> tuple[np.ndarray, tuple[int, int]]:
    """Patches of one image normalised with its own percentiles (no clipping), and its shape."""
    image = ref.read()
    try:
        scaled = normalize(image, plan.pmin, plan.pmax, clip=False, dtype=np.float32)
    except DataError as exc:
        raise DataError(f"{ref.label}: {exc}") from exc
    shape = (int(image.shape[0]), int(image.shape[1]))
    del image  # the full-size image is not needed once normalised
    return crop(scaled, plan.patch_size, plan.overlap), shape


def _foreground(gt_patches: np.ndarray, threshold: float | None) -> np.ndarray:
    """Mask of the patches to keep: all, or those whose gt is not background."""
    if threshold is None:
        return np.ones(len(gt_patches), dtype=bool)
    level = np.percentile(gt_patches, BACKGROUND_PERCENTILE, axis=(1, 2))
    return level >= float(threshold)


def _pair_refs(pair: Pair) -> tuple[list[_ImageRef], list[_ImageRef]]:
    """The low and gt images of one pair: as many gt as low images, or a single shared one."""
    where = f"group {pair.group!r}"
    low_refs = _image_refs(pair.low, f"{where} low")
    gt_refs = _image_refs(pair.gt, f"{where} gt")
    if len(gt_refs) not in (1, len(low_refs)):
        raise DataError(
            f"{where}: low ({_describe(pair.low)}) has {len(low_refs)} images but gt "
            f"({_describe(pair.gt)}) has {len(gt_refs)}; give one ground truth per low image "
            "or a single one shared by all"
        )
    return low_refs, gt_refs


def _add_pair(pair: Pair, buffer: _SetBuffer, plan: _Plan, tally: _Tally) -> None:
    """Add the patches of one pair to ``buffer`` and count what happened in ``tally``."""
    low_refs, gt_refs = _pair_refs(pair)
    cached: tuple[int, np.ndarray, tuple[int, int], np.ndarray] | None = None
    for i, low_ref in enumerate(low_refs):
        k = 0 if len(gt_refs) == 1 else i
        if cached is None or cached[0] != k:
            # A shared ground truth is read, normalised and cut only once for all its frames.
            gt_patches, gt_shape = _normalised_patches(gt_refs[k], plan)
            cached = (k, gt_patches, gt_shape, _foreground(gt_patches, plan.background_filter))
        _, gt_patches, gt_shape, keep = cached
        low_patches, low_shape = _normalised_patches(low_ref, plan)
        if low_shape != gt_shape:
            raise DataError(
                f"group {pair.group!r}: low image {low_ref.label} has shape {low_shape} but its "
                f"ground truth {gt_refs[k].label} has shape {gt_shape}; paired images must "
                "have the same height and width"
            )
        if low_shape[0] < plan.patch_shape[0] or low_shape[1] < plan.patch_shape[1]:
            tally.small += 1
        all_kept = bool(keep.all())
        buffer.add(
            low_patches if all_kept else low_patches[keep],
            gt_patches if all_kept else gt_patches[keep],
            pair.group,
        )
        tally.dropped += int(keep.size - keep.sum())
    buffer.sources.append(
        {
            "group": pair.group,
            "low": [r.label for r in low_refs],
            "gt": [r.label for r in gt_refs],
        }
    )
    tally.inputs.update(r.path for r in (*low_refs, *gt_refs) if r.path is not None)


def _report(plan: _Plan, buffers: dict[str, _SetBuffer], tally: _Tally) -> None:
    """Log what the sets hold; DataError if the background filter left no patch at all."""
    if not any(buffers[s].n_patches for s in SETS):
        raise DataError(
            f"background_filter={plan.background_filter} removed all {tally.dropped} patch "
            "pairs; lower it or use None"
        )
    for s in SETS:
        patches = buffers[s].n_patches
        log.info(
            "%s: %d group(s), %d image(s), %d patch pair(s)",
            s,
            len(plan.groups[s]),
            buffers[s].images,
            patches,
        )
        if plan.groups[s] and not patches:
            log.warning("%s: every patch of its groups was background; the set is empty", s)
    if tally.dropped:
        log.info("background filter dropped %d patch pair(s)", tally.dropped)
    if tally.small:
        log.warning(
            "%d image(s) are smaller than a patch %s; their patches are completed by mirroring",
            tally.small,
            plan.patch_shape,
        )


def _extract(plan: _Plan) -> tuple[dict[str, _SetBuffer], _Tally]:
    """The patches of every set, read one image at a time, and the counts of the run."""
    buffers = {s: _SetBuffer() for s in SETS}
    tally = _Tally()
    set_of = plan.set_of
    for pair in plan.pairs:
        _add_pair(pair, buffers[set_of[pair.group]], plan, tally)
    _report(plan, buffers, tally)
    return buffers, tally


# --------------------------------------------------------------------------------------------
# prepare, step 3: write (the arrays and their info record, all sets or none)
# --------------------------------------------------------------------------------------------


def _overlap_list(overlap: Any) -> list[float]:
    """``(oy, ox)`` as plain floats for the JSON record (already validated by patch_grid)."""
    return [float(o) for o in np.broadcast_to(np.asarray(overlap, dtype=float), (2,))]


def _split_description(split: SplitSpec) -> Any:
    """JSON form of a split specification (fractions or the explicit group lists)."""
    if isinstance(split, Mapping):
        return {k: _as_group_list(v, k) for k, v in split.items()}
    return [float(f) for f in split]


def _info(plan: _Plan, patches: dict[str, int]) -> dict[str, Any]:
    """The ``info`` record shared by all sets (each adds its name and sources)."""
    return {
        "format": "debcr-patches",
        "version": INFO_VERSION,
        "name": plan.name,
        "patch_size": list(plan.patch_shape),
        "overlap": _overlap_list(plan.overlap),
        "normalization": {
            "method": "percentile",
            "pmin": float(plan.pmin),
            "pmax": float(plan.pmax),
            "clip": False,
            "scope": "each image separately",
        },
        "background_filter": (
            None if plan.background_filter is None else float(plan.background_filter)
        ),
        "background_percentile": BACKGROUND_PERCENTILE,
        "split": _split_description(plan.split),
        "seed": int(plan.seed),
        "groups": {s: list(plan.groups[s]) for s in SETS},
        "patches": patches,
    }


def _payload(buffer: _SetBuffer, info: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays saved for one set; the per-image lists are released as they are joined."""
    low = np.concatenate(buffer.low)
    buffer.low.clear()
    gt = np.concatenate(buffer.gt)
    buffer.gt.clear()
    groups = np.repeat(
        np.array([g for g, _ in buffer.groups], dtype=str), [n for _, n in buffer.groups]
    )
    return {"low": low, "gt": gt, "groups": groups, "info": np.asarray(json.dumps(info))}


def _payloads(plan: _Plan, buffers: dict[str, _SetBuffer]) -> dict[str, dict[str, np.ndarray]]:
    """The arrays of every non-empty set, each with its info record."""
    common = _info(plan, {s: buffers[s].n_patches for s in SETS})
    return {
        s: _payload(buffers[s], {**common, "set": s, "sources": buffers[s].sources})
        for s in SETS
        if buffers[s].n_patches
    }


def _write_sets(
    plan: _Plan, payloads: dict[str, dict[str, np.ndarray]], inputs: Sequence[Path]
) -> dict[str, Path]:
    """Write the non-empty sets of ``plan`` all or nothing (see :func:`write_sets`)."""
    return write_sets(plan.targets, payloads, plan.overwrite, inputs)


def write_sets(
    targets: Mapping[str, Path],
    payloads: Mapping[str, Mapping[str, np.ndarray]],
    overwrite: bool,
    inputs: Sequence[Path],
) -> dict[str, Path]:
    """Write the non-empty sets all or nothing; remove a stale file of a now-empty set."""
    if not targets:
        return {}
    with contextlib.ExitStack() as stack:
        # Each atomic_output renames its temporary file into place only when the whole block
        # succeeds, so a failure while writing the last set leaves no new file at all.
        temps = {
            s: stack.enter_context(atomic_output(targets[s], overwrite=overwrite, inputs=inputs))
            for s in payloads
        }
        for s, tmp in temps.items():
            write(tmp, payloads[s], overwrite=True)
    for s in SETS:
        if s not in payloads and targets[s].exists():
            log.warning("removing %s: the %s set of this run is empty", targets[s], s)
            targets[s].unlink()
    return {s: targets[s] for s in payloads}


# --------------------------------------------------------------------------------------------
# prepare: the pipeline
# --------------------------------------------------------------------------------------------


def prepare(
    low: ImageSource | Sequence[Pair | tuple[Any, Any, Any]],
    gt: ImageSource | None = None,
    name: str | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    patch_size: int | tuple[int, int] = 128,
    overlap: float | tuple[float, float] = 0.0,
    split: SplitSpec = (0.8, 0.1, 0.1),
    seed: int = 0,
    pmin: float = PMIN,
    pmax: float = PMAX,
    background_filter: float | None = None,
    overwrite: bool = False,
    return_arrays: bool = False,
) -> PrepareResult:
    """Build train/val/test patch sets from paired images, split by field of view.

    Two calling forms:

    - ``prepare(low, gt, name, out_dir)``: ``low`` and ``gt`` are paired in order; each is a
      folder (its image files in natural order, '2' before '10'), a list of files/arrays, or a
      single file/array whose slices are the images. Every pair is its own group, named by
      its index (``"0"``, ``"1"``, ...). A list entry that is itself a stack pairs slice by
      slice with its gt entry (or with a single gt image), and stays one group.
    - ``prepare(pairs, name=..., out_dir=...)``: a list of :class:`Pair` (or ``(low, gt,
      group)`` tuples), e.g. from :func:`pairs_from_folders`; several frames may share one
      ground truth, and pairs with the same group always go to the same set.

    Each image is processed on its own, one at a time: ``(x - p_lo) / (p_hi - p_lo)`` with the
    ``pmin``/``pmax`` percentiles of that whole image (low and gt separately), without
    clipping and as float32, which is how :func:`debcr.model.predict` normalises its input, so
    the model is trained on the value range it will see. Both images are then cut with
    :func:`debcr.data.tiling.crop` (the bottom/right border is completed by mirroring).

    Parameters
    ----------
    low
        Degraded images, or the list of pairs (then leave ``gt`` out).
    gt
        Ground-truth images for the first form; None for the second.
    name
        Dataset name: the files are ``<out_dir>/<name>_train.npz``, ``_val.npz``, ``_test.npz``.
    out_dir
        Output folder (created if needed). None writes nothing and returns the arrays.
    patch_size
        Patch edge (or ``(height, width)``); 128 as in the DeBCR recipe.
    overlap
        Overlap fraction of neighbouring patches within an image, in ``[0, 0.9)``, or
        ``(oy, ox)``. Overlap never crosses sets, because sets are made of whole groups.
    split
        Fractions ``(train, val, test)`` of the groups, or an explicit assignment such as
        ``{"train": range(1, 19), "val": [20], "test": [19]}``; see :func:`split_groups`.
    seed
        Seed of the shuffle for a fractional split.
    pmin, pmax
        Percentiles mapped to 0 and 1 (per image).
    background_filter
        None keeps all patches. A number drops every patch pair whose normalised ground-truth
        patch has its :data:`BACKGROUND_PERCENTILE` (99.9th) percentile below it: after
        normalisation the image's ``pmax`` level is 1, so e.g. 0.1 drops patches with nothing
        brighter than a tenth of the image's bright structures (CSBDeep's
        ``no_background_patches`` uses 0.4 of the 99.9th percentile, on the patch's max).
    overwrite
        Replace an existing dataset of this name. Without it any existing
        ``<name>_{train,val,test}.npz`` raises FileExistsError before work starts. With it, an
        old file of a set that is now empty is deleted, so sets of two runs never mix.
    return_arrays
        Also return the saved arrays in :attr:`PrepareResult.arrays`.

    Returns
    -------
    PrepareResult
        Paths, patch/image/group counts per set and the number of background patches dropped.

    Notes
    -----
    Each NPZ file holds ``low`` and ``gt`` (``(N, ph, pw)`` float32, patch pairs in the order
    group, image, row-major patch), ``groups`` (the group id of every patch, strings) and
    ``info`` (a 0-d string array with JSON: patch size, overlap, percentiles, background
    filter, seed, the groups and patch counts of all sets, and the source images of this set;
    read it with ``json.loads(str(npz["info"]))``). The files are written atomically and
    together: either all sets of the dataset appear, or none does. Input files are never
    overwritten. Memory: one full-size image (plus a shared ground truth) at a time, besides
    the patches; the patches of a set are held twice briefly when they are joined.

    Raises
    ------
    DataError
        Unreadable images, mismatched image counts or shapes (naming both images), a group in
        two sets, bad options, or a background filter that removes every patch.
    FileExistsError
        If an output exists and ``overwrite`` is False.
    """
    plan = _plan(
        low,
        gt,
        name,
        out_dir,
        patch_size=patch_size,
        overlap=overlap,
        split=split,
        seed=seed,
        pmin=pmin,
        pmax=pmax,
        background_filter=background_filter,
        overwrite=overwrite,
    )
    buffers, tally = _extract(plan)
    payloads = _payloads(plan, buffers)
    paths = _write_sets(plan, payloads, sorted(tally.inputs))
    return PrepareResult(
        paths=paths,
        patches={s: buffers[s].n_patches for s in SETS},
        images={s: buffers[s].images for s in SETS},
        groups=plan.groups,
        dropped=tally.dropped,
        arrays=payloads if return_arrays or not plan.targets else None,
    )
