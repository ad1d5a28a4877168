"""Test-time augmentation: the 8 rotations and flips of a batch of tiles through the network,
averaged, with their spread as the uncertainty (numpy only apart from the runner it calls).

The network is not exactly equivariant to rotations and flips; averaging its outputs on the
8 transformed copies of a tile (and transforming each back) removes part of its error, and
the spread of the 8 shows where it is unsure — where it may invent structure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["TRANSFORMS", "dihedral", "restore_tta", "uncertainty_path", "undo_dihedral"]

#: The 8 transforms: ``k % 4`` quarter turns, then a transpose for ``k >= 4``.
TRANSFORMS = tuple(range(8))

#: The transforms that keep a tile's shape, and those that transpose it.
_SAME_SHAPE, _TRANSPOSED = (0, 2, 5, 7), (1, 3, 4, 6)

#: Compound suffixes that stay together when a name is derived from an output path.
_COMPOUND = (".ome.tif", ".ome.tiff", ".ome.zarr")


def dihedral(tiles: np.ndarray, k: int) -> np.ndarray:
    """Transform ``k`` of a batch ``(B, H, W)`` (over the last two axes)."""
    turned = np.rot90(tiles, k % 4, axes=(-2, -1))
    return turned.swapaxes(-1, -2) if k >= 4 else turned


def undo_dihedral(tiles: np.ndarray, k: int) -> np.ndarray:
    """The inverse of `dihedral`."""
    if k >= 4:
        tiles = tiles.swapaxes(-1, -2)
    return np.rot90(tiles, -(k % 4), axes=(-2, -1))


def restore_tta(
    run: Callable[[np.ndarray], np.ndarray], tiles: np.ndarray, max_tiles: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over the 8 transforms of the network output of ``tiles``.

    The transformed copies of a batch ``(B, H, W)`` go through ``run`` as one batch of
    ``8 × B`` tiles when the tiles are square, and as two batches of ``4 × B`` (one per
    shape, ``H × W`` and ``W × H``) otherwise, so the network sees each geometry once per
    batch (an OpenVINO runner compiles it once) rather than once per transform. With
    ``max_tiles``, a batch holds at most that many tiles (where memory grows with the batch).
    """
    n, height, width = tiles.shape
    groups = (TRANSFORMS,) if height == width else (_SAME_SHAPE, _TRANSPOSED)
    outputs = np.empty((len(TRANSFORMS), *tiles.shape), dtype=np.float32)
    for group in groups:
        stacked = np.concatenate([dihedral(tiles, k) for k in group])
        step = len(stacked) if max_tiles is None else max(1, int(max_tiles))
        restored = np.concatenate(
            [run(stacked[i : i + step]) for i in range(0, len(stacked), step)]
        )
        for j, k in enumerate(group):
            outputs[k] = undo_dihedral(restored[j * n : (j + 1) * n], k)
    return outputs.mean(axis=0), outputs.std(axis=0)


def uncertainty_path(output: str | Path) -> Path:
    """Where the uncertainty map of ``output`` is written: ``name.uncertainty.tif`` beside
    ``name.tif`` (compound suffixes such as ``.ome.tif`` kept whole)."""
    path = Path(output)
    name = path.name
    suffix = next((s for s in _COMPOUND if name.lower().endswith(s)), path.suffix)
    stem = name[: len(name) - len(suffix)] if suffix else name
    return path.with_name(f"{stem}.uncertainty{suffix}")
