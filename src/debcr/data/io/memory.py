"""How much memory is free, refusing an allocation that cannot fit before it is made, and
handing back the pages of memory-mapped files.

Files declare their sizes, and a damaged or hostile file can declare 10⁶ × 10⁶ pixels in a few
hundred bytes: every allocation sized by a file is checked here first, so such a file ends in
one sentence instead of a numpy ``MemoryError`` (or the kernel's OOM killer).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any

from debcr.errors import DataError

__all__ = ["available_memory", "check_memory", "format_bytes", "release_mapped"]

_CGROUP = Path("/sys/fs/cgroup")


def format_bytes(nbytes: float) -> str:
    """``nbytes`` for people: ``'1.8 TiB'``, ``'512 KiB'``."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")
    size, step = float(nbytes), 0
    while size >= 1024 and step < len(units) - 1:
        size, step = size / 1024, step + 1
    return f"{size:.0f} bytes" if step == 0 else f"{size:.1f} {units[step]}"


def _system_available() -> int | None:
    """Memory the system can give without swapping (psutil, /proc/meminfo or sysconf)."""
    try:
        import psutil
    except ImportError:
        pass
    else:
        return int(psutil.virtual_memory().available)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_available() -> int | None:
    """What a container's memory limit (cgroup v2) leaves to this process, or None."""
    try:
        limit = (_CGROUP / "memory.max").read_text().strip()
        used = int((_CGROUP / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def available_memory() -> int | None:
    """Bytes that can still be allocated: the smaller of the system's free memory and what a
    container limit leaves; None where neither can be found out."""
    known = [n for n in (_system_available(), _cgroup_available()) if n is not None]
    return min(known) if known else None


def check_memory(nbytes: int, what: str, advice: str) -> None:
    """Refuse to allocate ``nbytes`` for ``what`` if they exceed the available memory.

    Parameters
    ----------
    nbytes
        The size of the planned allocation.
    what
        What would be allocated, starting the message (e.g. ``"the 1000000×1000000 uint16
        pixels that a.tif declares"``).
    advice
        What to do instead, ending the message.

    Raises
    ------
    DataError
        ``"<what> would take <size>, more than the <free> of memory available; <advice>"``.
        Nothing is raised where the free memory cannot be found out.
    """
    free = available_memory()
    if free is not None and nbytes > free:
        raise DataError(
            f"{what} would take {format_bytes(nbytes)}, more than the {format_bytes(free)} of "
            f"memory available; {advice}"
        )


def release_mapped(*arrays: Any) -> None:
    """Unmap the resident pages of memory-mapped file arrays from this process.

    A memory-mapped input or output keeps every page it touched in the process's memory until
    the mapping closes, so restoring a large image disk to disk would grow with the image. The
    pages of a shared file mapping stay in the kernel's page cache (written-to pages are still
    written to the file) and are mapped again on the next access; only this process's resident
    memory shrinks. Arrays that are not shared file mappings (numpy arrays, Zarr arrays,
    copy-on-write memmaps, whose pages would be lost) and platforms without ``madvise`` are
    left alone.
    """
    if not hasattr(mmap, "MADV_DONTNEED"):
        return
    for array in arrays:
        mapping = getattr(array, "_mmap", None)
        if mapping is None or getattr(array, "mode", "c") not in ("r", "r+", "w+"):
            continue
        try:
            mapping.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # a closed mapping, or one the kernel refuses to advise
            continue
