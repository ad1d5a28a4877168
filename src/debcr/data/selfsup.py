"""Training sets without ground truth: repeated frames (Noise2Noise), noisy images (Noise2Void).

:func:`prepare_noise2noise` reads *fields*: noisy acquisitions of the same field of view
repeated in time (the FMD layout ``raw/<field>/*.png``, or one ``TYX`` stack per field). All
frames of a field are normalised **together**, with percentiles of the whole field, so two
frames of it differ only by their noise; every frame is cut into the same patches, giving
``repeats`` ``(N locations, F frames, P, P)``.

:func:`prepare_noise2void` reads single noisy images or stacks (any format
:func:`debcr.data.load` reads); each 2-D image is normalised on its own, as
:func:`debcr.model.predict` normalises the slices it restores, and cut into ``low`` patches
``(N, P, P)``.

Both split by group (field, image or file), never by patch, like :func:`debcr.data.prepare`.
A single group (one stack, one image) is split by patch position instead: the first patches
(in slice, row, column order) train, the next validate, the last test, so the sets are
contiguous blocks — slabs of a volume, bands of an image — and a warning says that their
borders touch. The NPZ files record their mode in ``info``; ``debcr train`` refuses a file
prepared for another mode.

Only numpy and the debcr data modules are used (no torch).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from debcr.data.normalize import check_percentiles, normalize
from debcr.data.prepare import (
    INFO_VERSION,
    SETS,
    PrepareResult,
    SplitSpec,
    _allocate,
    _fractions,
    _group_id,
    _image_refs,
    _ImageRef,
    _is_folder,
    _list_images,
    _natural_key_of,
    _output_targets,
    _split_description,
    split_groups,
    write_sets,
)
from debcr.data.tiling import crop, patch_grid
from debcr.defaults import PMAX, PMIN, SIZE_MULTIPLE
from debcr.errors import DataError

__all__ = [
    "fields_of",
    "images_of",
    "prepare_noise2noise",
    "prepare_noise2void",
    "repeat_patches",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Unit:
    """One group of images: a field of repeated frames, or one noisy image or stack."""

    group: str
    refs: tuple[_ImageRef, ...]


# --------------------------------------------------------------------------------------------
# what the sources are
# --------------------------------------------------------------------------------------------


def fields_of(source: Any) -> list[tuple[str, Any]]:
    """The fields of view of a Noise2Noise source, as ``(group, frames)`` in natural order.

    Parameters
    ----------
    source
        A folder with one subfolder per field (each holding the frames as image files, or
        one stack file); a folder of stack files (one field each); a single stack file or
        3-D array (one field); a list of these; or a mapping ``{group: frames}``.

    Returns
    -------
    list of (str, frames)
        ``frames`` is anything :func:`debcr.data.prepare` accepts as images.
    """
    if isinstance(source, Mapping):
        return [(_group_id(k), v) for k, v in source.items()]
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise DataError(f"{path} does not exist; give a folder of fields or a stack file")
        if _is_folder(path):
            subfolders = sorted(
                (p for p in path.iterdir() if _is_folder(p) and not p.name.startswith(".")),
                key=_natural_key_of,
            )
            if subfolders:
                return [(p.name, p) for p in subfolders]
            return [(p.stem, p) for p in _list_images(path)]
        return [(path.stem, path)]
    if hasattr(source, "shape"):
        return [("0", source)]
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        if not source:
            raise DataError("no fields given; the list is empty")
        return [(str(i), item) for i, item in enumerate(source)]
    raise DataError(
        f"cannot use {type(source).__name__} as fields; give a folder, a stack file, an array "
        "or a list of these"
    )


def _units(items: list[tuple[str, Any]]) -> list[_Unit]:
    groups = [g for g, _ in items]
    if len(set(groups)) != len(groups):
        raise DataError(f"group names repeat in {groups}; give every field a distinct name")
    return [_Unit(g, tuple(_image_refs(item, f"{g}"))) for g, item in items]


def images_of(images: Any) -> list[tuple[str, Any]]:
    """The groups of Noise2Void images, as ``(group, images)``: one per file, array or entry.

    A folder gives one group per image file (named by its stem), a file or array one group,
    a list one group per entry (named by the file stem, or the index), a mapping its keys.
    """
    if isinstance(images, Mapping):
        return [(_group_id(k), v) for k, v in images.items()]
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        if not path.exists():
            raise DataError(f"{path} does not exist; give an image file or a folder of images")
        if _is_folder(path):
            return [(p.stem, p) for p in _list_images(path)]
        return [(path.stem, path)]
    if hasattr(images, "shape"):
        return [("0", images)]
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        if not images:
            raise DataError("no images given; the list is empty")
        named = [
            (Path(x).stem if isinstance(x, (str, os.PathLike)) else str(i), x)
            for i, x in enumerate(images)
        ]
        if len({g for g, _ in named}) != len(named):
            named = [(str(i), x) for i, (_, x) in enumerate(named)]
        return named
    raise DataError(
        f"cannot use {type(images).__name__} as images; give a file or folder path, an array, "
        "or a list of these"
    )


# --------------------------------------------------------------------------------------------
# patches
# --------------------------------------------------------------------------------------------


def _check_patch_shape(patch_size: Any, overlap: Any) -> tuple[int, int]:
    shape = patch_grid((1, 1), patch_size, overlap).patch_size
    if any(side % SIZE_MULTIPLE for side in shape):
        raise DataError(
            f"patch_size {shape[0]}×{shape[1]} cannot be trained on: m-rBCR needs sides that "
            f"are multiples of {SIZE_MULTIPLE}"
        )
    return shape


def repeat_patches(
    frames: np.ndarray,
    patch_size: int | tuple[int, int] = 128,
    overlap: float | tuple[float, float] = 0.0,
    pmin: float = PMIN,
    pmax: float = PMAX,
) -> np.ndarray:
    """Patches of repeated frames of one field, normalised together: ``(N, F, P, P)`` float32.

    Parameters
    ----------
    frames
        ``(F, H, W)``: ``F >= 2`` noisy acquisitions of the same field.
    patch_size, overlap
        As :func:`debcr.data.crop`.
    pmin, pmax
        Percentiles of *all* frames together mapped to 0 and 1 (no clipping).
    """
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[0] < 2:
        raise DataError(
            f"repeated frames must be a stack (F, H, W) with at least 2 frames, got shape "
            f"{frames.shape}"
        )
    scaled = normalize(frames, pmin, pmax, clip=False, dtype=np.float32)
    patches = crop(scaled, patch_size, overlap)
    n_frames = frames.shape[0]
    return np.ascontiguousarray(
        patches.reshape(n_frames, -1, *patches.shape[1:]).transpose(1, 0, 2, 3)
    )


def _field_patches(unit: _Unit, shape: tuple[int, int], overlap: Any, pmin, pmax) -> np.ndarray:
    images = [ref.read() for ref in unit.refs]
    sizes = {im.shape for im in images}
    if len(sizes) != 1:
        raise DataError(
            f"field {unit.group!r}: its frames have different shapes {sorted(sizes)}; the "
            "frames of a field must be the same image size"
        )
    if len(images) < 2:
        raise DataError(
            f"field {unit.group!r} has 1 frame; Noise2Noise needs at least 2 noisy frames of "
            "each field (for single noisy images use --mode noise2void)"
        )
    try:
        return repeat_patches(np.stack(images), shape, overlap, pmin, pmax)
    except DataError as exc:
        raise DataError(f"field {unit.group!r}: {exc}") from exc


def _image_patches(unit: _Unit, shape: tuple[int, int], overlap: Any, pmin, pmax) -> np.ndarray:
    out = []
    for ref in unit.refs:
        try:
            image = normalize(ref.read(), pmin, pmax, clip=False, dtype=np.float32)
        except DataError as exc:
            raise DataError(f"{ref.label}: {exc}") from exc
        out.append(crop(image, shape, overlap))
    return np.concatenate(out)


# --------------------------------------------------------------------------------------------
# splitting and writing
# --------------------------------------------------------------------------------------------


def _assign(
    groups: list[str], counts: list[int], split: SplitSpec, seed: int
) -> tuple[dict[str, tuple[str, ...]], dict[str, list[tuple[str, slice]]]]:
    """Groups per set, and the patch ranges of each set (whole groups, or one group's blocks)."""
    if len(groups) > 1 or isinstance(split, Mapping):
        sets = split_groups(groups, split, seed)
        size = dict(zip(groups, counts, strict=True))
        ranges = {s: [(g, slice(0, size[g])) for g in sets[s]] for s in SETS}
        return sets, ranges
    fractions = _fractions(split)
    sizes = _allocate(counts[0], fractions)
    bounds = np.cumsum([0, *sizes])
    group = groups[0]
    ranges = {
        s: [(group, slice(bounds[k], bounds[k + 1]))] if sizes[k] else []
        for k, s in enumerate(SETS)
    }
    non_empty = [s for s in SETS if sizes[SETS.index(s)]]
    if len(non_empty) > 1:
        log.warning(
            "one group (%r): its %d patches are split in order into %s blocks; patches at the "
            "borders of the blocks neighbour each other",
            group,
            counts[0],
            "/".join(non_empty),
        )
    return {s: (group,) if sizes[k] else () for k, s in enumerate(SETS)}, ranges


def _prepare(
    units: list[_Unit],
    cut: Callable[..., np.ndarray],
    key: str,
    mode: str,
    scope: str,
    name: str | None,
    out_dir: Any,
    *,
    patch_size: Any,
    overlap: Any,
    split: SplitSpec,
    seed: int,
    pmin: float,
    pmax: float,
    overwrite: bool,
    return_arrays: bool,
    extra_info: Callable[[list[np.ndarray]], tuple[list[np.ndarray], dict[str, Any]]] | None = None,
) -> PrepareResult:
    check_percentiles(pmin, pmax)
    shape = _check_patch_shape(patch_size, overlap)
    targets = _output_targets(name, out_dir, overwrite)
    patches = [cut(unit, shape, overlap, pmin, pmax) for unit in units]
    info_extra: dict[str, Any] = {}
    if extra_info is not None:
        patches, info_extra = extra_info(patches)
    groups = [u.group for u in units]
    sets, ranges = _assign(groups, [len(p) for p in patches], split, seed)
    by_group = dict(zip(groups, patches, strict=True))
    arrays: dict[str, dict[str, np.ndarray]] = {}
    counts = {s: int(sum(r.stop - r.start for _, r in ranges[s])) for s in SETS}
    common = {
        "format": "debcr-patches",
        "version": INFO_VERSION,
        "mode": mode,
        "name": name,
        "patch_size": list(shape),
        "overlap": [float(o) for o in np.broadcast_to(np.asarray(overlap, float), (2,))],
        "normalization": {
            "method": "percentile",
            "pmin": float(pmin),
            "pmax": float(pmax),
            "clip": False,
            "scope": scope,
        },
        "split": _split_description(split),
        "seed": int(seed),
        "groups": {s: list(sets[s]) for s in SETS},
        "patches": counts,
        **info_extra,
    }
    sources = {u.group: [r.label for r in u.refs] for u in units}
    for s in SETS:
        if not counts[s]:
            continue
        data = np.concatenate([by_group[g][r] for g, r in ranges[s]])
        labels = np.concatenate(
            [np.full(r.stop - r.start, g, dtype=object) for g, r in ranges[s]]
        ).astype(str)
        info = {
            **common,
            "set": s,
            "sources": [
                {"group": g, "images": sources[g]} for g in dict.fromkeys(g for g, _ in ranges[s])
            ],
        }
        arrays[s] = {key: data, "groups": labels, "info": np.asarray(json.dumps(info))}
        log.info("%s: %d group(s), %d patch(es) %s", s, len(sets[s]), counts[s], data.shape[1:])
    if not counts["train"]:
        raise DataError("the training set is empty; give more groups or a larger train fraction")
    inputs = sorted({r.path for u in units for r in u.refs if r.path is not None})
    paths = write_sets(targets, arrays, overwrite, inputs)
    return PrepareResult(
        paths=paths,
        patches=counts,
        images={s: sum(len(u.refs) for u in units if u.group in sets[s]) for s in SETS},
        groups=sets,
        arrays=arrays if return_arrays or not targets else None,
    )


# --------------------------------------------------------------------------------------------
# the two entry points
# --------------------------------------------------------------------------------------------


def prepare_noise2noise(
    source: Any,
    name: str | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    patch_size: int | tuple[int, int] = 128,
    overlap: float | tuple[float, float] = 0.0,
    split: SplitSpec = (0.8, 0.1, 0.1),
    seed: int = 0,
    pmin: float = PMIN,
    pmax: float = PMAX,
    max_frames: int | None = None,
    overwrite: bool = False,
    return_arrays: bool = False,
) -> PrepareResult:
    """Build Noise2Noise train/val/test sets from repeated noisy frames, split by field.

    Parameters
    ----------
    source
        The fields (see :func:`fields_of`): e.g. FMD's ``raw`` folder (``raw/<field>/*.png``),
        a folder of ``TYX`` stacks, one stack, or ``{field: frames}``.
    name, out_dir
        Files ``<out_dir>/<name>_train.npz`` ... ; ``out_dir=None`` writes nothing.
    patch_size, overlap
        Patch side (a multiple of 4) and overlap fraction within a frame.
    split
        Fractions ``(train, val, test)`` of the fields or ``{"train": [...], ...}`` (see
        :func:`debcr.data.prepare.split_groups`); a single field is split by patch position.
    seed
        Seed of a fractional split.
    pmin, pmax
        Percentiles of each field's frames *together* mapped to 0 and 1.
    max_frames
        Use at most this many frames of every field (the first ones); None: all. Fields
        with more frames than the field with the fewest are cut to that number, so all
        locations have the same number of frames (logged).
    overwrite, return_arrays
        As :func:`debcr.data.prepare`.

    Returns
    -------
    PrepareResult
        ``arrays[set]`` (or the files) hold ``repeats`` ``(N, F, P, P)`` float32, ``groups``
        (the field of every location) and ``info`` (JSON with ``"mode": "noise2noise"``).
    """
    if max_frames is not None and (isinstance(max_frames, bool) or int(max_frames) < 2):
        raise DataError(f"max_frames must be at least 2 (or None for all), got {max_frames!r}")
    units = _units(fields_of(source))

    def same_frames(patches: list[np.ndarray]) -> tuple[list[np.ndarray], dict[str, Any]]:
        frames = min(p.shape[1] for p in patches)
        if max_frames is not None:
            frames = min(frames, int(max_frames))
        cut = [u.group for u, p in zip(units, patches, strict=True) if p.shape[1] > frames]
        if cut:
            log.info("using the first %d frames of fields %s", frames, cut)
        return [p[:, :frames] for p in patches], {"frames": frames}

    return _prepare(
        units,
        _field_patches,
        "repeats",
        "noise2noise",
        "all frames of each field together",
        name,
        out_dir,
        patch_size=patch_size,
        overlap=overlap,
        split=split,
        seed=seed,
        pmin=pmin,
        pmax=pmax,
        overwrite=overwrite,
        return_arrays=return_arrays,
        extra_info=same_frames,
    )


def prepare_noise2void(
    images: Any,
    name: str | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    patch_size: int | tuple[int, int] = 128,
    overlap: float | tuple[float, float] = 0.0,
    split: SplitSpec = (0.8, 0.1, 0.1),
    seed: int = 0,
    pmin: float = PMIN,
    pmax: float = PMAX,
    overwrite: bool = False,
    return_arrays: bool = False,
) -> PrepareResult:
    """Build Noise2Void train/val/test sets from single noisy images or stacks.

    Parameters
    ----------
    images
        A folder of images, an image or stack file (TIFF, OME-Zarr, PNG ... anything
        :func:`debcr.data.load` reads), an array, a list of these, or ``{group: images}``.
        Every file, array or list entry is one group; a single one is split by patch
        position (see the module notes).
    name, out_dir, patch_size, overlap, split, seed, overwrite, return_arrays
        As :func:`prepare_noise2noise`.
    pmin, pmax
        Percentiles of each 2-D image (slice) mapped to 0 and 1, as prediction does.

    Returns
    -------
    PrepareResult
        ``arrays[set]`` (or the files) hold ``low`` ``(N, P, P)`` float32, ``groups`` and
        ``info`` (JSON with ``"mode": "noise2void"``).
    """
    return _prepare(
        _units(images_of(images)),
        _image_patches,
        "low",
        "noise2void",
        "each image separately",
        name,
        out_dir,
        patch_size=patch_size,
        overlap=overlap,
        split=split,
        seed=seed,
        pmin=pmin,
        pmax=pmax,
        overwrite=overwrite,
        return_arrays=return_arrays,
    )
