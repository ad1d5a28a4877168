"""The one place that writes outputs safely (standard library only).

Every output of debcr goes through :func:`atomic_output` (or :func:`write_bytes`, built on
it): data are written to a hidden temporary sibling (``.tmp-<id>.<name>``) that is renamed
onto the target only when complete, so a crash never leaves a half-written output and never
destroys the previous file; an input is never replaced (compared after resolving links, and
even with ``overwrite=True``); an existing output is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from debcr.errors import DataError

__all__ = [
    "PathLike",
    "as_path_list",
    "atomic_output",
    "check_targets",
    "move_into_place",
    "remove",
    "staged",
    "temp_sibling",
    "write_bytes",
]

PathLike = str | os.PathLike
"""A file system path."""


def as_path_list(inputs: PathLike | Iterable[PathLike] | None) -> list[Path]:
    """``None``, one path or several paths as a list of :class:`~pathlib.Path`."""
    if inputs is None:
        return []
    if isinstance(inputs, (str, os.PathLike)):
        return [Path(inputs)]
    return [Path(p) for p in inputs]


def check_targets(targets: Sequence[Path], inputs: Iterable[Path], overwrite: bool) -> None:
    """Refuse to replace any input (even with overwrite) and existing outputs without it.

    Raises
    ------
    DataError
        A target is one of ``inputs`` (or inside one, or holds one, or a hard link to one).
    FileExistsError
        A target exists and ``overwrite`` is False.
    """
    resolved = [p.resolve() for p in inputs]
    for target in targets:
        out = target.resolve()
        for inp in resolved:
            same = out == inp or inp in out.parents or out in inp.parents
            if not same and out.exists() and inp.exists():
                same = os.path.samefile(out, inp)  # hard links
            if same:
                raise DataError(
                    f"refusing to overwrite the input file {inp} with the output {target}; "
                    "choose a different output path"
                )
        if not overwrite and (target.exists() or target.is_symlink()):
            raise FileExistsError(
                f"output {target} already exists; pass overwrite=True (CLI: --overwrite) to "
                "replace it, or choose another output path"
            )


def temp_sibling(target: Path, tag: str = "tmp") -> Path:
    """A fresh hidden path next to ``target`` (``.<tag>-<id>.<name>``)."""
    # Same directory (so os.replace is an atomic rename); ends with the target's name so that
    # suffix-sensitive writers (np.save, tifffile's .ome.tif detection) behave as for target.
    return target.parent / f".{tag}-{uuid.uuid4().hex[:12]}.{target.name}"


def remove(path: Path) -> None:
    """Delete a file or a folder tree; a missing path is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def move_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` onto ``target``; atomic for files, near-atomic for folders."""
    if not (tmp.is_dir() or target.is_dir()):
        os.replace(tmp, target)  # atomic for files, also over an existing file
        return
    # A directory cannot atomically replace another: park the old one, move, then delete it.
    backup = None
    if target.exists() or target.is_symlink():
        backup = temp_sibling(target, "old")
        os.replace(target, backup)
    try:
        os.replace(tmp, target)
    except BaseException:
        if backup is not None:
            os.replace(backup, target)
        raise
    if backup is not None:
        remove(backup)


@contextlib.contextmanager
def staged(targets: Sequence[Path]) -> Iterator[list[Path]]:
    """Yield temporary paths; move them onto ``targets`` on success, delete them on error."""
    tmps = [temp_sibling(t) for t in targets]
    try:
        yield tmps
        for tmp, target in zip(tmps, targets, strict=True):
            move_into_place(tmp, target)
    finally:
        for tmp in tmps:  # only leftovers after an error remain here
            if tmp.exists() or tmp.is_symlink():
                remove(tmp)


@contextlib.contextmanager
def atomic_output(
    path: PathLike, *, overwrite: bool = False, inputs: PathLike | Iterable[PathLike] | None = None
) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` through; it is renamed into place on success.

    An input is never replaced, an existing output only with ``overwrite=True``, and nothing
    is left behind if the block raises. Missing parent folders are created.

    Examples
    --------
    >>> with atomic_output("report.csv", inputs=["raw.tif"]) as tmp:  # doctest: +SKIP
    ...     tmp.write_text("a,b\\n1,2\\n")
    """
    target = Path(path)
    check_targets([target], as_path_list(inputs), overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    with staged([target]) as (tmp,):
        yield tmp


def write_bytes(
    path: PathLike,
    data: bytes,
    *,
    overwrite: bool = False,
    inputs: PathLike | Iterable[PathLike] | None = None,
) -> Path:
    """Write ``data`` to ``path`` atomically and durably (fsync before the rename).

    A replaced file keeps its permissions, as writing it in place would; a new file gets the
    umask's, as any new file.
    """
    target = Path(path)
    with atomic_output(target, overwrite=overwrite, inputs=inputs) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
    return target
