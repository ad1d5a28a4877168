"""Tiles of one slice for predict: cores that partition the slice, windows read with a halo.

(The overlapping patch grids of ``prepare`` and ``stitch`` are another thing:
`debcr.data.tiling`.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from debcr.data.io.memory import check_memory
from debcr.data.io.zarr import settle_pending_io
from debcr.defaults import SIZE_MULTIPLE
from debcr.errors import DataError, DebcrError


def round_up(value: int, multiple: int = SIZE_MULTIPLE) -> int:
    """``value`` rounded up to a multiple of ``multiple`` (the network's size multiple)."""
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class TilePlan:
    """Tiles of one slice: cores partition the slice, inputs add a halo on every side."""

    shape: tuple[int, int]
    core: tuple[int, int]
    halo: int

    @property
    def input_size(self) -> tuple[int, int]:
        """Size of every tile fed to the network."""
        return (self.core[0] + 2 * self.halo, self.core[1] + 2 * self.halo)

    def starts(self, axis: int) -> list[int]:
        """Core origins along ``axis``: multiples of 4, together covering the whole axis."""
        length, core = self.shape[axis], self.core[axis]
        # Rounded up, the last core may reach past the end (into reflect padding), never short.
        last = round_up(max(0, length - core))
        starts = [*list(range(0, last, core)), last]
        return sorted(set(starts))

    def segments(self, axis: int) -> list[tuple[int, int]]:
        """Per tile along ``axis``: (core origin, end of the part it writes).

        Each tile writes from its origin up to the next tile's origin, so every pixel
        is written (and counted in the calibration) exactly once.
        """
        starts = self.starts(axis)
        return list(zip(starts, [*starts[1:], self.shape[axis]]))

    def tiles(self) -> list[tuple[int, int, int, int]]:
        """All tiles as (y, x, y_end, x_end) of the region they write, row-major."""
        return [(y, x, ye, xe) for y, ye in self.segments(0) for x, xe in self.segments(1)]


def _balanced_core(length: int, tile: int) -> int:
    """The core size along an axis of ``length``: as many cores as cores of ``tile`` need, made
    equal (rounded up to the size multiple), so no tile is computed mostly for an overlap."""
    pieces = max(1, -(-length // tile))
    return min(tile, round_up(-(-length // pieces)))


def plan_tiles(shape: tuple[int, int], tile: int, halo: int) -> TilePlan:
    """Plan tiles for a slice of ``shape`` with cores of at most ``tile`` pixels.

    Each axis gets as many cores as cores of ``tile`` pixels would need, all of one size: a
    2048-pixel axis with ``tile=768`` gets three cores of 684, not three of 768 of which two
    overlap by 256 pixels (computed twice).

    Raises
    ------
    DataError
        If one tile's window (core plus halo) does not fit in the free memory.
    """
    core = tuple(_balanced_core(int(n), round_up(tile)) for n in shape)
    plan = TilePlan(shape=(int(shape[0]), int(shape[1])), core=core, halo=halo)
    height, width = plan.input_size
    check_memory(
        height * width * np.dtype(np.float32).itemsize,
        f"a tile window of {height}×{width} float32 pixels (core {core[0]}×{core[1]} plus a "
        f"halo of {halo} on every side)",
        "give a smaller halo (the default, the network's receptive field, is enough) or tile",
    )
    return plan


def check_halo(halo: int, shape: tuple[int, ...]) -> None:
    """Refuse a requested halo wider than the slices it surrounds.

    Context beyond the image is only the image mirrored again, so such a halo adds nothing but
    memory and time (``--halo 100000`` on a 64×64 image would read 149 GiB windows).

    Parameters
    ----------
    halo
        The halo the user asked for, in pixels.
    shape
        The input's shape; its last two entries are a slice's height and width.

    Raises
    ------
    DataError
        If ``halo`` exceeds the longer side of a slice (rounded up to the network's multiple).
    """
    height, width = (int(n) for n in shape[-2:])
    limit = round_up(max(height, width))
    if halo > limit:
        raise DataError(
            f"halo {halo} is wider than the image ({height}×{width} pixels), where context is "
            f"only the image mirrored again; give a halo of at most {limit} (or none, for the "
            "network's default)"
        )


@contextlib.contextmanager
def damaged_input(where: str) -> Iterator[None]:
    """Turn a decoding failure of lazily read input pixels into one clear DataError.

    Parameters
    ----------
    where
        What was being read, for the message (e.g. ``"rows 0–512, columns 0–512"``).
    """
    try:
        yield
    except (DebcrError, MemoryError):
        raise
    except Exception as exc:  # codecs and storage libraries raise many types for damaged data
        settle_pending_io()
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise DataError(
            f"could not read {where} of the input ({reason}); the file is damaged or incomplete: "
            "re-copy or re-export it"
        ) from exc


def read_window(image: Any, y0: int, x0: int, size: tuple[int, int]) -> np.ndarray:
    """Read ``image[y0:y0+h, x0:x0+w]`` as float32, reflect-padding wherever it leaves the image.

    Parameters
    ----------
    image
        A 2-D array-like, read only where indexed.
    y0, x0
        Origin of the window; negative, or past the end, where it reaches into the padding.
    size
        ``(h, w)`` of the window.
    """
    h, w = size
    height, width = image.shape
    ys, ye = max(y0, 0), min(y0 + h, height)
    xs, xe = max(x0, 0), min(x0 + w, width)
    with damaged_input(f"rows {ys}–{ye}, columns {xs}–{xe}"):
        block = np.asarray(image[ys:ye, xs:xe], dtype=np.float32)
    pad = ((ys - y0, y0 + h - ye), (xs - x0, x0 + w - xe))
    if any(p for pair in pad for p in pair):
        # numpy's reflect keeps mirroring for pads wider than the image; a 1-pixel axis
        # cannot be mirrored, so it is repeated instead.
        mode = "reflect" if min(block.shape) > 1 else "edge"
        block = np.pad(block, pad, mode=mode)
    return block
