"""The training-set contract: the NPZ files every set builder writes and training reads.

A prepared dataset is one file per non-empty set, ``<name>_train.npz``, ``<name>_val.npz``
and ``<name>_test.npz``. Each holds the arrays of its training mode (``low`` and ``gt`` for
supervised training, ``repeats`` for Noise2Noise, ``low`` for Noise2Void; see
`debcr.modes.MODES`), ``groups`` (the group of every patch, strings) and ``info``: a
0-d string array holding the JSON of a `SetInfo` (mode, patch size, overlap,
normalisation, split, seed, the groups and patch counts of all sets, and the sources of this
set). `write_sets` is the one writer (atomic, all sets or none), `read_info` and
`SetInfo.from_split` the readers. Sets written before the record named its mode hold
supervised pairs.

Only numpy and the debcr data modules are used (no torch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from debcr.data.io import write
from debcr.data.split import SETS, SplitSpec, split_description
from debcr.data.tiling import patch_grid
from debcr.defaults import SIZE_MULTIPLE
from debcr.errors import DataError
from debcr.files import atomic_output

__all__ = [
    "INFO_FORMAT",
    "INFO_VERSION",
    "PrepareResult",
    "SetInfo",
    "check_patch_shape",
    "fitting_patch_side",
    "read_info",
    "set_payload",
    "set_targets",
    "training_patch_shape",
    "write_sets",
]

log = logging.getLogger(__name__)

#: ``format`` of the ``info`` record.
INFO_FORMAT = "debcr-patches"
#: Version of the ``info`` record stored in the NPZ files.
INFO_VERSION = 1
#: The mode of a set whose record names none (written before training modes existed).
UNNAMED_MODE = "supervised"

#: The record's keys, in the order they are written; a builder's own keys (``extra``) come
#: after ``normalization``.
_HEAD = ("format", "version", "mode", "name", "patch_size", "overlap", "normalization")
_TAIL = ("split", "seed", "groups", "patches", "set", "sources")


@dataclass(frozen=True)
class SetInfo:
    """The ``info`` record of a prepared training set (one per NPZ file).

    Attributes
    ----------
    mode
        The training mode the set was prepared for.
    name
        The dataset name (None when nothing was written).
    patch_size
        ``(height, width)`` of the patches.
    overlap
        ``(oy, ox)`` overlap fractions of neighbouring patches.
    normalization
        How the images were normalised: ``method``, ``pmin``, ``pmax``, ``clip``, ``scope``.
    split
        The split as asked for: fractions, or the explicit group lists.
    seed
        Seed of a fractional split.
    groups
        The groups of every set.
    patches
        The number of patches (locations for Noise2Noise) of every set.
    set
        The set this file holds (``train``, ``val`` or ``test``).
    sources
        The source images of this set, by group.
    extra
        What the mode's builder adds (e.g. ``background_filter``, ``frames``).
    version
        Version of the record (`INFO_VERSION` for new sets).
    """

    mode: str = UNNAMED_MODE
    name: str | None = None
    patch_size: tuple[int, ...] = ()
    overlap: tuple[float, ...] = ()
    normalization: Mapping[str, Any] = field(default_factory=dict)
    split: Any = None
    seed: int | None = None
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    patches: Mapping[str, int] = field(default_factory=dict)
    set: str | None = None
    sources: tuple[Mapping[str, Any], ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    version: int = INFO_VERSION

    @classmethod
    def create(
        cls,
        *,
        mode: str,
        name: str | None,
        patch_size: tuple[int, int],
        overlap: Any,
        pmin: float,
        pmax: float,
        scope: str,
        split: SplitSpec,
        seed: int,
        groups: Mapping[str, Sequence[str]],
        patches: Mapping[str, int],
        extra: Mapping[str, Any] | None = None,
    ) -> SetInfo:
        """The record shared by the sets of one dataset (`for_set` completes it).

        ``overlap`` is a fraction or ``(oy, ox)``; ``pmin``/``pmax`` are the percentiles
        mapped to 0 and 1 (without clipping) over ``scope`` (e.g. "each image separately").
        """
        return cls(
            mode=mode,
            name=name,
            patch_size=tuple(int(s) for s in patch_size),
            overlap=tuple(float(o) for o in np.broadcast_to(np.asarray(overlap, float), (2,))),
            normalization={
                "method": "percentile",
                "pmin": float(pmin),
                "pmax": float(pmax),
                "clip": False,
                "scope": scope,
            },
            split=split_description(split),
            seed=int(seed),
            groups={s: tuple(groups[s]) for s in SETS},
            patches=dict(patches),
            extra=dict(extra or {}),
        )

    def for_set(self, name: str, sources: Sequence[Mapping[str, Any]]) -> SetInfo:
        """The record of the file of set ``name``, whose images are ``sources``."""
        return dataclasses.replace(self, set=name, sources=tuple(sources))

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON values, keys in their written order."""
        record: dict[str, Any] = {
            "format": INFO_FORMAT,
            "version": self.version,
            "mode": self.mode,
            "name": self.name,
            "patch_size": list(self.patch_size),
            "overlap": list(self.overlap),
            "normalization": dict(self.normalization),
            **self.extra,
            "split": self.split,
            "seed": self.seed,
            "groups": {s: list(g) for s, g in self.groups.items()},
            "patches": dict(self.patches),
        }
        if self.set is not None:
            record["set"] = self.set
            record["sources"] = [dict(s) for s in self.sources]
        return record

    def to_json(self) -> str:
        """The record as the JSON text stored in the ``info`` array."""
        return json.dumps(self.to_dict())

    def provenance(self) -> dict[str, Any]:
        """What a trained model file records about the set it was trained on."""
        record = self.to_dict()
        return {
            key: record[key]
            for key in ("name", "mode", "set", "groups", "sources", "normalization")
            if key in record
        }

    @classmethod
    def from_json(cls, record: str | Mapping[str, Any]) -> SetInfo:
        """A record from its JSON text or its dict; a record without a mode is supervised.

        Raises
        ------
        DataError
            If the record is not a JSON object, or was written by a newer debcr.
        """
        values = json.loads(record) if isinstance(record, str) else dict(record)
        if not isinstance(values, dict):
            raise DataError(f"the info record of a training set must be a JSON object: {record}")
        version = int(values.get("version", INFO_VERSION))
        if version > INFO_VERSION:
            raise DataError(
                f"the training set's info record has version {version}, newer than this debcr "
                f"reads ({INFO_VERSION}); update debcr"
            )
        known = {k for k in (*_HEAD, *_TAIL) if k in values}
        return cls(
            mode=str(values.get("mode", UNNAMED_MODE)),
            name=values.get("name"),
            patch_size=tuple(values.get("patch_size") or ()),
            overlap=tuple(values.get("overlap") or ()),
            normalization=dict(values.get("normalization") or {}),
            split=values.get("split"),
            seed=values.get("seed"),
            groups={s: tuple(g) for s, g in (values.get("groups") or {}).items()},
            patches=dict(values.get("patches") or {}),
            set=values.get("set"),
            sources=tuple(values.get("sources") or ()),
            extra={k: v for k, v in values.items() if k not in known},
            version=version,
        )

    @classmethod
    def from_split(cls, split: Any) -> SetInfo | None:
        """The record of a loaded set (an NPZ file or a dict with ``info``); None without one."""
        get = getattr(split, "get", None)
        info = get("info") if callable(get) and not isinstance(split, np.ndarray) else None
        if info is None:
            return None
        if isinstance(info, Mapping):
            return cls.from_json(info)
        return cls.from_json(str(np.asarray(info)))


def read_info(path: str | os.PathLike) -> SetInfo | None:
    """The record of a prepared NPZ file (None for a file without one); only it is read."""
    with np.load(Path(path), allow_pickle=False) as npz:
        return SetInfo.from_split(npz)


@dataclass(frozen=True)
class PrepareResult:
    """What a set builder (`debcr.data.prepare` ...) produced.

    Attributes
    ----------
    paths
        The files written, by set (only non-empty sets; empty when nothing was written).
    patches
        Number of patch pairs (or patches, or locations) per set (all of ``SETS``).
    images
        Number of input images per set.
    groups
        Group ids per set.
    dropped
        Patch pairs removed by the background filter (all sets).
    arrays
        With ``return_arrays=True`` (or nothing written): per non-empty set the dict that
        was saved (the mode's arrays, ``groups``, ``info``); otherwise None.
    """

    paths: dict[str, Path]
    patches: dict[str, int]
    images: dict[str, int]
    groups: dict[str, tuple[str, ...]]
    dropped: int = 0
    arrays: dict[str, dict[str, np.ndarray]] | None = field(default=None, repr=False)


def _multiples_around(side: int) -> tuple[int, ...]:
    """The multiples of SIZE_MULTIPLE just below and above ``side`` (below only if > 0)."""
    below = side - side % SIZE_MULTIPLE
    return (below, below + SIZE_MULTIPLE) if below else (below + SIZE_MULTIPLE,)


def check_patch_shape(shape: Sequence[int], what: str = "patch_size") -> tuple[int, int]:
    """``(height, width)`` of patches, refused unless m-rBCR can be trained on them.

    Parameters
    ----------
    shape
        The patch shape (its last two entries are used).
    what
        How the message names the patches.

    Raises
    ------
    DataError
        If a side is not a multiple of `SIZE_MULTIPLE`; the message
        proposes the nearest sides that are.
    """
    h, w = (int(s) for s in shape[-2:])
    bad = [side for side in (h, w) if side % SIZE_MULTIPLE]
    if bad:
        near = sorted({m for side in bad for m in _multiples_around(side)})
        raise DataError(
            f"{what} {h}×{w} cannot be trained on: m-rBCR needs sides that are multiples of "
            f"{SIZE_MULTIPLE} (it halves its input twice); use {' or '.join(map(str, near))}"
        )
    return h, w


def training_patch_shape(patch_size: Any, overlap: Any) -> tuple[int, int]:
    """``(height, width)`` of ``patch_size``, checked with ``overlap`` before any work.

    Raises
    ------
    DataError
        For a bad patch size or overlap (see `debcr.data.crop`), or sides m-rBCR cannot
        be trained on (`check_patch_shape`).
    """
    return check_patch_shape(patch_grid((1, 1), patch_size, overlap).patch_size)


def fitting_patch_side(shape: Sequence[int], patch_size: int) -> int:
    """``patch_size``, or the largest multiple of 4 that fits an image of ``shape``."""
    fits = min(shape[-2:]) // SIZE_MULTIPLE * SIZE_MULTIPLE
    return max(SIZE_MULTIPLE, min(int(patch_size), fits))


def set_targets(
    name: str | None, out_dir: str | os.PathLike | None, overwrite: bool
) -> dict[str, Path]:
    """The file of every set (none without ``out_dir``).

    Raises
    ------
    DataError
        If ``name`` is not a plain file-name stem.
    FileExistsError
        If one of the files exists and ``overwrite`` is False.
    """
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


def set_payload(
    arrays: Mapping[str, np.ndarray], groups: np.ndarray, info: SetInfo
) -> dict[str, np.ndarray]:
    """The arrays saved for one set: the mode's ``arrays``, ``groups`` and ``info``."""
    return {**arrays, "groups": groups, "info": np.asarray(info.to_json())}


def write_sets(
    targets: Mapping[str, Path],
    payloads: Mapping[str, Mapping[str, np.ndarray]],
    overwrite: bool,
    inputs: Sequence[Path],
) -> dict[str, Path]:
    """Write the non-empty sets all or nothing; remove a stale file of a now-empty set.

    Parameters
    ----------
    targets
        The file of every set (`set_targets`); empty writes nothing.
    payloads
        The arrays of every non-empty set (`set_payload`).
    overwrite
        Replace existing files.
    inputs
        The files read, which are never overwritten.

    Returns
    -------
    dict
        The files written, by set.
    """
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
