"""Training sets without ground truth: repeated frames (Noise2Noise), noisy images (Noise2Void).

`prepare_noise2noise` reads *fields*: noisy acquisitions of the same field of view
repeated in time (the FMD layout ``raw/<field>/*.png``, or one ``TYX`` stack per field). All
frames of a field are normalised **together**, with percentiles of the whole field, so two
frames of it differ only by their noise; every frame is cut into the same patches, giving
``repeats`` ``(N locations, F frames, P, P)``.

`prepare_noise2void` reads single noisy images or stacks (any format
`debcr.data.load` reads); each 2-D image is normalised on its own, as
`debcr.model.predict` normalises the slices it restores, and cut into ``low`` patches
``(N, P, P)``.

Both split by group (field, image or file), never by patch, like `debcr.data.prepare`.
A single group (one stack, one image) is split by patch position instead: the first patches
(in slice, row, column order) train, the next validate, the last test, so the sets are
contiguous blocks — slabs of a volume, bands of an image — and a warning says that their
borders touch (`debcr.data.split.split_patches`). The NPZ files record their mode in
``info`` (`debcr.data.sets.SetInfo`); ``debcr train`` refuses a file prepared for
another mode.

`noise2noise_sets`, `noise2void_sets`, `noise2noise_layer_sets` and
`noise2void_layer_sets` are the two modes' set builders for the command line and for
napari (see `debcr.modes`).

Only numpy and the debcr data modules are used (no torch).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from debcr.data.collect import ImageRef, fields_of, image_array, image_refs, images_of
from debcr.data.normalize import check_percentiles, normalize
from debcr.data.sets import (
    PrepareResult,
    SetInfo,
    fitting_patch_side,
    set_payload,
    set_targets,
    training_patch_shape,
    write_sets,
)
from debcr.data.split import SETS, SplitSpec, listed_groups, split_patches
from debcr.data.tiling import crop
from debcr.defaults import PMAX, PMIN
from debcr.errors import DataError

__all__ = [
    "noise2noise_layer_sets",
    "noise2noise_sets",
    "noise2void_layer_sets",
    "noise2void_sets",
    "prepare_noise2noise",
    "prepare_noise2void",
    "repeat_patches",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Unit:
    """One group of images: a field of repeated frames, or one noisy image or stack."""

    group: str
    refs: tuple[ImageRef, ...]


def _units(items: list[tuple[str, Any]]) -> list[_Unit]:
    groups = [g for g, _ in items]
    if len(set(groups)) != len(groups):
        raise DataError(f"group names repeat in {groups}; give every field a distinct name")
    return [_Unit(g, tuple(image_refs(item, f"{g}"))) for g, item in items]


# --------------------------------------------------------------------------------------------
# patches
# --------------------------------------------------------------------------------------------


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
        As `debcr.data.crop`.
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
    shape = training_patch_shape(patch_size, overlap)
    targets = set_targets(name, out_dir, overwrite)
    patches = [cut(unit, shape, overlap, pmin, pmax) for unit in units]
    info_extra: dict[str, Any] = {}
    if extra_info is not None:
        patches, info_extra = extra_info(patches)
    groups = [u.group for u in units]
    sets, ranges = split_patches(groups, [len(p) for p in patches], split, seed)
    by_group = dict(zip(groups, patches, strict=True))
    arrays: dict[str, dict[str, np.ndarray]] = {}
    counts = {s: int(sum(r.stop - r.start for _, r in ranges[s])) for s in SETS}
    common = SetInfo.create(
        mode=mode,
        name=name,
        patch_size=shape,
        overlap=overlap,
        pmin=pmin,
        pmax=pmax,
        scope=scope,
        split=split,
        seed=seed,
        groups=sets,
        patches=counts,
        extra=info_extra,
    )
    sources = {u.group: [r.label for r in u.refs] for u in units}
    for s in SETS:
        if not counts[s]:
            continue
        data = np.concatenate([by_group[g][r] for g, r in ranges[s]])
        labels = np.concatenate(
            [np.full(r.stop - r.start, g, dtype=object) for g, r in ranges[s]]
        ).astype(str)
        info = common.for_set(
            s,
            [{"group": g, "images": sources[g]} for g in dict.fromkeys(g for g, _ in ranges[s])],
        )
        arrays[s] = set_payload({key: data}, labels, info)
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
        The fields (see `debcr.data.collect.fields_of`): e.g. FMD's ``raw`` folder
        (``raw/<field>/*.png``), a folder of ``TYX`` stacks, one stack, or ``{field: frames}``.
    name, out_dir
        Files ``<out_dir>/<name>_train.npz`` ... ; ``out_dir=None`` writes nothing.
    patch_size, overlap
        Patch side (a multiple of 4) and overlap fraction within a frame.
    split
        Fractions ``(train, val, test)`` of the fields or ``{"train": [...], ...}`` (see
        `debcr.data.split.split_groups`); a single field is split by patch position.
    seed
        Seed of a fractional split.
    pmin, pmax
        Percentiles of each field's frames *together* mapped to 0 and 1.
    max_frames
        Use at most this many frames of every field (the first ones); None: all. Fields
        with more frames than the field with the fewest are cut to that number, so all
        locations have the same number of frames (logged).
    overwrite, return_arrays
        As `debcr.data.prepare`.

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
        `debcr.data.load` reads), an array, a list of these, or ``{group: images}``.
        Every file, array or list entry is one group; a single one is split by patch
        position (see the module notes).
    name, out_dir, patch_size, overlap, split, seed, overwrite, return_arrays
        As `prepare_noise2noise`.
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


# --------------------------------------------------------------------------------------------
# the two modes' set builders (debcr.modes)
# --------------------------------------------------------------------------------------------


def _groups_of_paths(
    paths: Sequence[str | os.PathLike],
    groups_of: Callable[[Any], list[tuple[str, Any]]],
    split: SplitSpec,
) -> dict[str, Any]:
    """The groups of every path; with an explicit split only the groups it names."""
    groups = [item for path in paths for item in groups_of(path)]
    listed = listed_groups(split)
    if listed is not None:
        # Groups not named in the split are left out, not an error.
        groups = [(g, source) for g, source in groups if g in listed]
    names = [g for g, _ in groups]
    if len(set(names)) != len(names):
        raise DataError(
            f"the inputs give groups with the same name {sorted(names)}; rename the files "
            "or folders so that every field or image has its own name"
        )
    return dict(groups)


def noise2noise_sets(
    paths: Sequence[str | os.PathLike],
    name: str,
    out_dir: str | os.PathLike,
    *,
    split: SplitSpec,
    max_frames: int | None = None,
    **options: Any,
) -> PrepareResult:
    """Prepare Noise2Noise sets from the paths ``debcr prepare --mode noise2noise`` was given.

    Parameters
    ----------
    paths
        Folders of fields, or stack files (see `debcr.data.collect.fields_of`); every
        field is a group, and its name must be unique over all paths.
    name, out_dir, split, max_frames
        As `prepare_noise2noise`; with an explicit ``split`` the fields it does not
        name are left out.
    **options
        ``patch_size``, ``overlap``, ``seed``, ``overwrite`` of `prepare_noise2noise`.
    """
    groups = _groups_of_paths(paths, fields_of, split)
    return prepare_noise2noise(groups, name, out_dir, split=split, max_frames=max_frames, **options)


def noise2void_sets(
    paths: Sequence[str | os.PathLike],
    name: str,
    out_dir: str | os.PathLike,
    *,
    split: SplitSpec,
    **options: Any,
) -> PrepareResult:
    """Prepare Noise2Void sets from the paths ``debcr prepare --mode noise2void`` was given.

    Parameters
    ----------
    paths
        Image files or folders (see `debcr.data.collect.images_of`); every image is a
        group, and its name must be unique over all paths.
    name, out_dir, split
        As `prepare_noise2void`; with an explicit ``split`` the images it does not
        name are left out.
    **options
        ``patch_size``, ``overlap``, ``seed``, ``overwrite`` of `prepare_noise2void`.
    """
    groups = _groups_of_paths(paths, images_of, split)
    return prepare_noise2void(groups, name, out_dir, split=split, **options)


def noise2noise_layer_sets(
    data: Any, what: str, *, patch_size: int, split: SplitSpec
) -> dict[str, dict[str, np.ndarray]]:
    """The Noise2Noise sets of one layer's data: a stack of repeated frames ``(T, Y, X)``.

    The frames are normalised together and cut like `prepare_noise2noise` does, with
    ``patch_size`` or, for a smaller image, the largest multiple of 4 that fits; ``split``
    divides the patch locations in order. Returns ``{set: {"repeats": ...}}`` of the
    non-empty sets.
    """
    image = image_array(data, f"the {what} layer")
    side = fitting_patch_side(image.shape, patch_size)
    if image.ndim != 3 or image.shape[0] < 2:
        raise DataError(
            f"the {what} layer has shape {image.shape}; Noise2Noise needs a stack of "
            "repeated noisy frames of one field (T, Y, X) with at least 2 frames"
        )
    result = prepare_noise2noise({what: image}, patch_size=side, split=split)
    return {s: {"repeats": arrays["repeats"]} for s, arrays in (result.arrays or {}).items()}


def noise2void_layer_sets(
    data: Any, what: str, *, patch_size: int, split: SplitSpec
) -> dict[str, dict[str, np.ndarray]]:
    """The Noise2Void sets of one layer's data: a noisy image or stack.

    Every 2-D image is normalised on its own and cut like `prepare_noise2void` does,
    with ``patch_size`` or, for a smaller image, the largest multiple of 4 that fits;
    ``split`` divides the patches in order. Returns ``{set: {"low": ...}}`` of the
    non-empty sets.
    """
    image = image_array(data, f"the {what} layer")
    side = fitting_patch_side(image.shape, patch_size)
    result = prepare_noise2void({what: image}, patch_size=side, split=split)
    return {s: {"low": arrays["low"]} for s, arrays in (result.arrays or {}).items()}
