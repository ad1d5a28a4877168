"""Turn paired images into DeBCR training sets: normalise, cut into patches, split, save.

`prepare` reads pairs of degraded (``low``) and ground-truth (``gt``) images one image at
a time, normalises each image on its own with whole-image percentiles, cuts both into aligned
patches with `debcr.data.tiling.crop`, optionally drops background patches, and writes
``<name>_train.npz``, ``<name>_val.npz`` and ``<name>_test.npz`` with the keys ``low`` and
``gt`` (``(N, P, P)`` float32) that the original DeBCR trains on (the files are described in
`debcr.data.sets`).

Split by group, never by patch (`debcr.data.split`): every image belongs to a *group* (a
field of view, e.g. the FMD field folder, or one image in the simple 1:1 case) and whole
groups are assigned to the sets, so no pixel of a validation or test image is ever seen in
training.

Several noisy frames may share one ground truth (the FMD layout: many frames per field, one
average per field): describe the data as `Pair` records, e.g. with
`pairs_from_folders`.

`supervised_sets` and `supervised_layer_sets` are the supervised mode's set
builders for the command line and for napari (see `debcr.modes`).

Only numpy and the debcr data modules are used (no torch), so GUIs and CLIs can import this
module quickly.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from debcr.data.collect import (
    ImageRef,
    ImageSource,
    Pair,
    as_pairs,
    describe,
    image_array,
    image_refs,
    pairs_from_folders,
)
from debcr.data.normalize import check_percentiles, normalize
from debcr.data.sets import (
    PrepareResult,
    SetInfo,
    check_patch_shape,
    set_payload,
    set_targets,
    training_patch_shape,
    write_sets,
)
from debcr.data.split import SETS, SplitSpec, listed_groups, split_groups
from debcr.data.tiling import crop
from debcr.defaults import PMAX, PMIN
from debcr.errors import DataError

__all__ = [
    "BACKGROUND_PERCENTILE",
    "pair_arrays",
    "prepare",
    "supervised_layer_sets",
    "supervised_sets",
]

log = logging.getLogger(__name__)

#: Percentile of a normalised ground-truth patch compared with ``background_filter``. A high
#: percentile rather than the maximum, so that a few hot pixels do not keep a background patch,
#: yet a patch with only a small piece of a cell (~0.1 % of its pixels) is kept.
BACKGROUND_PERCENTILE = 99.9


# --------------------------------------------------------------------------------------------
# prepare, step 1: plan (arguments, pairs, split and outputs; no image is read)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Everything `prepare` decided before reading any image.

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
    patch_shape = training_patch_shape(patch_size, overlap)
    targets = set_targets(name, out_dir, overwrite)
    pairs = tuple(as_pairs(low, gt))
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


def _normalised_patches(ref: ImageRef, plan: _Plan) -> tuple[np.ndarray, tuple[int, int]]:
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


def _pair_refs(pair: Pair) -> tuple[list[ImageRef], list[ImageRef]]:
    """The low and gt images of one pair: as many gt as low images, or a single shared one."""
    where = f"group {pair.group!r}"
    low_refs = image_refs(pair.low, f"{where} low")
    gt_refs = image_refs(pair.gt, f"{where} gt")
    if len(gt_refs) not in (1, len(low_refs)):
        raise DataError(
            f"{where}: low ({describe(pair.low)}) has {len(low_refs)} images but gt "
            f"({describe(pair.gt)}) has {len(gt_refs)}; give one ground truth per low image "
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


def _payloads(plan: _Plan, buffers: dict[str, _SetBuffer]) -> dict[str, dict[str, np.ndarray]]:
    """The arrays of every non-empty set, each with its info record."""
    common = SetInfo.create(
        mode="supervised",
        name=plan.name,
        patch_size=plan.patch_shape,
        overlap=plan.overlap,
        pmin=plan.pmin,
        pmax=plan.pmax,
        scope="each image separately",
        split=plan.split,
        seed=plan.seed,
        groups=plan.groups,
        patches={s: buffers[s].n_patches for s in SETS},
        extra={
            "background_filter": (
                None if plan.background_filter is None else float(plan.background_filter)
            ),
            "background_percentile": BACKGROUND_PERCENTILE,
        },
    )
    return {
        s: _payload(buffers[s], common.for_set(s, buffers[s].sources))
        for s in SETS
        if buffers[s].n_patches
    }


def _payload(buffer: _SetBuffer, info: SetInfo) -> dict[str, np.ndarray]:
    """The arrays saved for one set; the per-image lists are released as they are joined."""
    low = np.concatenate(buffer.low)
    buffer.low.clear()
    gt = np.concatenate(buffer.gt)
    buffer.gt.clear()
    groups = np.repeat(
        np.array([g for g, _ in buffer.groups], dtype=str), [n for _, n in buffer.groups]
    )
    return set_payload({"low": low, "gt": gt}, groups, info)


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
    - ``prepare(pairs, name=..., out_dir=...)``: a list of `Pair` (or ``(low, gt,
      group)`` tuples), e.g. from `pairs_from_folders`; several frames may share one
      ground truth, and pairs with the same group always go to the same set.

    Each image is processed on its own, one at a time: ``(x - p_lo) / (p_hi - p_lo)`` with the
    ``pmin``/``pmax`` percentiles of that whole image (low and gt separately), without
    clipping and as float32, which is how `debcr.model.predict` normalises its input, so
    the model is trained on the value range it will see. Both images are then cut with
    `debcr.data.tiling.crop` (the bottom/right border is completed by mirroring).

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
        ``{"train": range(1, 19), "val": [20], "test": [19]}``; see
        `debcr.data.split.split_groups`.
    seed
        Seed of the shuffle for a fractional split.
    pmin, pmax
        Percentiles mapped to 0 and 1 (per image).
    background_filter
        None keeps all patches. A number drops every patch pair whose normalised ground-truth
        patch has its `BACKGROUND_PERCENTILE` (99.9th) percentile below it: after
        normalisation the image's ``pmax`` level is 1, so e.g. 0.1 drops patches with nothing
        brighter than a tenth of the image's bright structures (CSBDeep's
        ``no_background_patches`` uses 0.4 of the 99.9th percentile, on the patch's max).
    overwrite
        Replace an existing dataset of this name. Without it any existing
        ``<name>_{train,val,test}.npz`` raises FileExistsError before work starts. With it, an
        old file of a set that is now empty is deleted, so sets of two runs never mix.
    return_arrays
        Also return the saved arrays in `PrepareResult.arrays`.

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
    paths = write_sets(plan.targets, payloads, plan.overwrite, sorted(tally.inputs))
    return PrepareResult(
        paths=paths,
        patches={s: buffers[s].n_patches for s in SETS},
        images={s: buffers[s].images for s in SETS},
        groups=plan.groups,
        dropped=tally.dropped,
        arrays=payloads if return_arrays or not plan.targets else None,
    )


# --------------------------------------------------------------------------------------------
# the supervised mode's set builders (debcr.modes)
# --------------------------------------------------------------------------------------------


def supervised_sets(
    paths: Sequence[str | os.PathLike],
    name: str,
    out_dir: str | os.PathLike,
    *,
    split: SplitSpec,
    background_filter: float | None = None,
    **options: Any,
) -> PrepareResult:
    """Prepare supervised sets from the paths ``debcr prepare`` was given: LOW and GT.

    Two folders with one subfolder per field (or files paired by name) are paired by
    `pairs_from_folders`; two files are paired slice by slice.
    With an explicit ``split``, fields it does not name are left out (not an error).

    Parameters
    ----------
    paths
        The degraded images and the ground truth.
    name, out_dir, split, background_filter
        As `prepare`.
    **options
        ``patch_size``, ``overlap``, ``seed``, ``overwrite`` of `prepare`.

    Raises
    ------
    DataError
        Unless there are exactly two paths, and as `prepare`.
    """
    if len(paths) != 2:
        raise DataError(
            f"supervised preparation takes two paths, LOW and GT (got {len(paths)}); for "
            "noisy images without ground truth use --mode noise2void or --mode noise2noise"
        )
    low, gt = (Path(p) for p in paths)
    source: Any = pairs_from_folders(low, gt) if low.is_dir() and gt.is_dir() else low
    listed = listed_groups(split)
    if listed is not None and isinstance(source, list):
        source = [pair for pair in source if pair.group in listed]
    return prepare(
        source,
        None if source is not low else gt,
        name,
        out_dir,
        split=split,
        background_filter=background_filter,
        **options,
    )


def pair_arrays(low: Any, gt: Any, what: str) -> dict[str, np.ndarray]:
    """Check an (input, target) pair of patch stacks and return it as ``{"low", "gt"}``.

    Parameters
    ----------
    low, gt
        Patches ``(N, Y, X)`` (or one 2-D patch) of the same shape, e.g. two napari layers.
    what
        Which set they are, for messages ("training", "validation").

    Raises
    ------
    DataError
        If the shapes differ or are not patches m-rBCR can be trained on.
    """
    low_a, gt_a = image_array(low, f"the {what} input"), image_array(gt, f"the {what} target")
    if low_a.shape != gt_a.shape:
        raise DataError(
            f"the {what} input {low_a.shape} and target {gt_a.shape} differ in shape; "
            "pair layers of the same size (e.g. both cropped with the same settings)"
        )
    if low_a.ndim == 2:
        low_a, gt_a = low_a[None], gt_a[None]
    if low_a.ndim != 3:
        raise DataError(f"the {what} input has shape {low_a.shape}; expected patches (N, Y, X)")
    check_patch_shape(low_a.shape, f"the {what} patches")
    return {"low": low_a.astype(np.float32), "gt": gt_a.astype(np.float32)}


def supervised_layer_sets(
    data: Any, what: str, *, patch_size: int, split: SplitSpec
) -> dict[str, dict[str, np.ndarray]]:
    """The supervised set of two layers' data ``(input patches, target patches)``.

    The layers are patches already (cut with the same settings), so they are checked, not
    cut or split: the result is ``{"train": {"low", "gt"}}`` whatever ``patch_size`` and
    ``split`` are.
    """
    low, gt = data
    return {"train": pair_arrays(low, gt, what)}
