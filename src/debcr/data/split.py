"""Splitting a training set into train, val and test by group (field of view), never by patch.

The original DeBCR split its patches 0.8/0.1/0.1 in order after cropping, so overlapping
patches of one field of view ended up in both training and test data and test scores were
inflated. Here every image belongs to a *group* (a field of view, e.g. the FMD field folder,
or one image in the simple 1:1 case) and whole groups are assigned to the sets
(`split_groups`), so no pixel of a validation or test image is ever seen in training.
A single group (one stack, one image) can only be split by patch position
(`split_patches`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from debcr.data.collect import group_id
from debcr.errors import DataError

__all__ = [
    "SETS",
    "SplitSpec",
    "listed_groups",
    "split_description",
    "split_groups",
    "split_patches",
]

log = logging.getLogger(__name__)

#: The sets of a training set, in this order (file suffixes ``_train.npz`` ...).
SETS = ("train", "val", "test")

SplitSpec = Sequence[float] | Mapping[str, Any]
"""Fractions ``(train, val, test)`` of the groups, or explicit ``{"train": [groups], ...}``."""


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
        return [group_id(value)]  # a lone id, not a string to iterate over character-wise
    if not isinstance(value, Iterable):
        raise DataError(f'split["{key}"] must be a list of group ids, got {value!r}')
    return [group_id(v) for v in value]


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
    ids = list(dict.fromkeys(group_id(g) for g in groups))
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


def split_patches(
    groups: list[str], counts: list[int], split: SplitSpec, seed: int
) -> tuple[dict[str, tuple[str, ...]], dict[str, list[tuple[str, slice]]]]:
    """Groups per set, and the patch ranges of each set: whole groups, or one group's blocks.

    Several groups (or an explicit split) are split by `split_groups`. A single group
    is split by patch position: the first patches train, the next validate, the last test,
    so the sets are contiguous blocks (slabs of a volume, bands of an image); a warning says
    that their borders touch.

    Parameters
    ----------
    groups
        The group ids, in order.
    counts
        The number of patches of every group.
    split, seed
        As `split_groups`.

    Returns
    -------
    sets, ranges
        The groups of every set, and per set the ``(group, slice of its patches)`` it holds.
    """
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


def listed_groups(split: SplitSpec) -> set[str] | None:
    """The groups an explicit split names (None for fractions, which take every group)."""
    if not isinstance(split, Mapping):
        return None
    return {g for key, groups in split.items() for g in _as_group_list(groups, key)}


def split_description(split: SplitSpec) -> Any:
    """JSON form of a split specification (fractions or the explicit group lists)."""
    if isinstance(split, Mapping):
        return {k: _as_group_list(v, k) for k, v in split.items()}
    return [float(f) for f in split]
