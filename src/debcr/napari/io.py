"""npe2 reader, writer and sample data of the DeBCR plugin (numpy only)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

LayerTuple = tuple[Any, dict[str, Any], str]


def get_reader(path: str | list[str]) -> Callable[[str], list[LayerTuple]] | None:
    """Return `read_npz` for a single ``.npz`` path, else None (not ours)."""
    if isinstance(path, list) or not str(path).lower().endswith(".npz"):
        return None
    return read_npz


def read_npz(path: str) -> list[LayerTuple]:
    """Every image array of an NPZ becomes a layer ``<stem>.<key>`` (``train.low``, ``train.gt``).

    Non-image entries that ``debcr prepare`` stores beside the patches (group labels,
    settings) are skipped.
    """
    from debcr.data import load

    arrays = load(path)
    stem = Path(path).stem
    layers = []
    for key, value in arrays.items():
        arr = np.asarray(value)
        if arr.ndim >= 2 and np.issubdtype(arr.dtype, np.number):
            layers.append((arr, {"name": f"{stem}.{key}"}, "image"))
    return layers


def _key_for(name: str, used: set[str]) -> str:
    """``train.low`` → ``low``; other names made into valid, unique NPZ keys."""
    suffix = name.rsplit(".", 1)[-1]
    key = suffix if suffix in ("low", "gt") else re.sub(r"\W+", "_", name).strip("_") or "data"
    base, i = key, 1
    while key in used:
        i += 1
        key = f"{base}_{i}"
    used.add(key)
    return key


def write_npz(path: str, layer_data: list[LayerTuple]) -> list[str]:
    """Save image layers as one NPZ, atomically; ``*.low``/``*.gt`` layers get keys low/gt.

    That is the training-set layout ``debcr train`` and the Train tab read, so a pair of
    layers named e.g. ``cells.low`` and ``cells.gt`` round-trips. Other layers keep their
    names as keys.
    """
    from debcr.data import write

    used: set[str] = set()
    arrays = {_key_for(meta["name"], used): np.asarray(data) for data, meta, _ in layer_data}
    if "low" in arrays and "gt" in arrays and arrays["low"].shape != arrays["gt"].shape:
        raise ValueError(
            f"the low layer {arrays['low'].shape} and the gt layer {arrays['gt'].shape} differ "
            "in shape; a training set needs pairs of the same shape"
        )
    target = path if str(path).lower().endswith(".npz") else f"{path}.npz"
    write(target, arrays, overwrite=True)
    return [target]


def sample_nuclei() -> list[LayerTuple]:
    """The bundled noisy nuclei image (and its clean expectation, hidden)."""
    from debcr.samples import nuclei

    noisy, clean = nuclei()
    return [
        (clean, {"name": "nuclei (clean)", "visible": False}, "image"),
        (noisy, {"name": "nuclei (noisy)"}, "image"),
    ]
