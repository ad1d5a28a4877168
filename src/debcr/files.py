"""The one place that writes outputs safely (standard library only).

Every output of debcr goes through `atomic_output` (or `write_bytes`, built on
it): data are written to a hidden temporary sibling (``.tmp-<id>.<name>``) that is renamed
onto the target only when complete, so a crash never leaves a half-written output and never
destroys the previous file; an input is never replaced (compared after resolving links, and
even with ``overwrite=True``); an existing output is replaced only with ``overwrite=True``.
The final rename replaces nothing it was not allowed to: a file that appears at the target
while the output is written (another program, a second run) is kept, and the finished output
is saved beside it under a free name (``out.debcr-1.tif``) that the error names
(`OutputExistsError`).

A full disk, a read-only file system or a denied write raises one
`OutputError` naming the output (`output_errors`), with the
temporary file removed; memory-mapped outputs reserve their space when created
(`reserve`), so a full disk is an error there rather than a SIGBUS later.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import re
import shutil
import stat
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from debcr.errors import DataError, OutputError, OutputExistsError

__all__ = [
    "PathLike",
    "as_path_list",
    "atomic_output",
    "check_space",
    "check_targets",
    "move_into_place",
    "output_error",
    "output_errors",
    "remove",
    "reserve",
    "staged",
    "temp_sibling",
    "write_bytes",
]

PathLike = str | os.PathLike
"""A file system path."""


def as_path_list(inputs: PathLike | Iterable[PathLike] | None) -> list[Path]:
    """``None``, one path or several paths as a list of `Path`."""
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


def move_into_place(tmp: Path, target: Path, *, overwrite: bool = True) -> None:
    """Rename ``tmp`` onto ``target``; atomic for files, near-atomic for folders.

    With ``overwrite=False`` nothing at ``target`` is ever replaced: FileExistsError instead.
    """
    if not overwrite:
        _rename_no_replace(tmp, target)
        return
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


#: ``renameat2`` flag: fail with EEXIST instead of replacing the target (Linux ≥ 3.15).
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """The C library's ``renameat2`` (glibc ≥ 2.28, musl ≥ 1.2.3), or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    with contextlib.suppress(OSError):
        return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    return None


def _renamed_atomically(tmp: Path, target: Path) -> bool:
    """Rename with ``RENAME_NOREPLACE``; False where the system or file system lacks it."""
    rename = _renameat2()
    if rename is None:
        return False
    src, dst = os.fsencode(tmp), os.fsencode(target)
    if rename(_AT_FDCWD, src, _AT_FDCWD, dst, _RENAME_NOREPLACE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False  # e.g. an older kernel or a network file system
    raise OSError(code, os.strerror(code), os.fspath(tmp), None, os.fspath(target))


def _rename_no_replace(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target`` unless something is there (FileExistsError then)."""
    if _renamed_atomically(tmp, target):
        return
    if not tmp.is_dir():
        # A hard link is never made over an existing name: atomic where renameat2 is missing.
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise
        except OSError:
            pass  # no hard links on this file system: the check below
        else:
            tmp.unlink()
            return
    # No atomic way here: check just before the rename, which leaves only a tiny window.
    if target.exists() or target.is_symlink():
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(target))
    os.rename(tmp, target)


def _format_suffix(target: Path) -> str:
    """The suffix that tells a reader the format: ``.tif``, but ``.ome.zarr``/``.ome.tif``."""
    suffixes = target.suffixes
    if len(suffixes) > 1 and suffixes[-2].lower() == ".ome":
        return "".join(suffixes[-2:])
    return target.suffix


def _keep_aside(tmp: Path, target: Path) -> Path:
    """Move the finished ``tmp`` to the first free ``<stem>.debcr-<n><suffix>`` by ``target``."""
    suffix = _format_suffix(target)
    stem = target.name[: len(target.name) - len(suffix)]
    n = 0
    while True:
        n += 1
        kept = target.with_name(f"{stem}.debcr-{n}{suffix}")
        with contextlib.suppress(FileExistsError):
            _rename_no_replace(tmp, kept)
            return kept


#: Why writing failed, for the errno values that are about the output's place, not a bug.
_OUTPUT_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file is too large for the file system",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
}
_FREE_SPACE = "free some space or choose another output location"
_WRITABLE = "choose an output location you can write to"
_ADVICE = {errno.EROFS: _WRITABLE, errno.EACCES: _WRITABLE}


def reserve(path: Path, nbytes: int) -> None:
    """Allocate ``nbytes`` of disk space for the file ``path`` now (it keeps its contents).

    A memory-mapped output is a sparse file until its pages are written; on a full disk a
    later write to the mapping kills the process with SIGBUS. Reserving the space up front
    turns that into an OSError (ENOSPC) here. Where the platform or file system cannot
    reserve space (macOS, some network file systems) this does nothing.
    """
    if nbytes <= 0 or not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


#: numpy's ``tofile`` (used by np.save and tifffile) reports a full disk as a short write.
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")
#: Libraries written in Rust (safetensors) raise their own exceptions, which end in the OS error.
_RUST_IO_ERROR = re.compile(r"\(os error (\d+)\)")


def _errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)
    if code is None and _SHORT_WRITE.search(str(exc)):
        return errno.ENOSPC  # a regular file takes fewer bytes than given only when full
    rust = _RUST_IO_ERROR.search(str(exc))
    if code is None and rust:
        return int(rust.group(1))
    return code


def _concerns(exc: BaseException, target: Path) -> bool:
    """Whether ``exc`` is about writing ``target`` (not, say, a permission error on an input)."""
    code = _errno_of(exc)
    if code not in _OUTPUT_ERRNOS:
        return False
    filename = getattr(exc, "filename", None)
    if code != errno.EACCES or filename is None:
        return True  # ENOSPC, EROFS, EDQUOT, EFBIG only happen when writing
    with contextlib.suppress(OSError, TypeError, ValueError):
        name = Path(os.fsdecode(filename)).absolute()
        folder = target.absolute().parent
        return name == folder or folder in name.parents or name in folder.parents
    return True


def output_error(exc: BaseException, target: Path, advice: str | None = None) -> OutputError | None:
    """The one-sentence `OutputError` that ``exc`` means for ``target``.

    Parameters
    ----------
    exc
        An error raised while writing ``target``: an OSError, or a library's exception that
        reports one only in its text (a short write of numpy, a safetensors I/O error).
    target
        The output (file or folder) the message names.
    advice
        What to do, ending the message (default: free space or choose another location).

    Returns
    -------
    OutputError | None
        None when ``exc`` is not about writing (a bug, or a permission error on an input).
    """
    if not _concerns(exc, target):
        return None
    code = _errno_of(exc)
    strerror = getattr(exc, "strerror", None) or os.strerror(code)
    error = OutputError(
        f"cannot write {target}: {_OUTPUT_ERRNOS[code]} ([Errno {code}] {strerror}); "
        f"no partial output was left behind; {advice or _ADVICE.get(code, _FREE_SPACE)}"
    )
    error.errno, error.strerror, error.filename = code, strerror, getattr(exc, "filename", None)
    return error


@contextlib.contextmanager
def output_errors(target: Path, advice: str | None = None) -> Iterator[None]:
    """Turn a full disk, read-only file system or denied write into one clear OutputError.

    The message names ``target`` and the cause: ``cannot write out.tif: no space left on the
    device ([Errno 28] No space left on device); no partial output was left behind; ...``,
    ending with ``advice`` if given (see `output_error`). Used around `staged`,
    whose cleanup has run by then. Other errors pass unchanged.
    """
    try:
        yield
    except OutputError:
        raise
    except Exception as exc:
        error = output_error(exc, target, advice)
        if error is None:
            raise
        raise error from exc


def check_space(folder: Path, nbytes: int) -> None:
    """Make sure ``nbytes`` can be written in ``folder`` now (OSError ENOSPC if not).

    The space is allocated in a hidden file that is deleted again (see `reserve`; where
    space cannot be allocated up front this checks nothing).
    """
    probe = temp_sibling(folder / "space")
    try:
        probe.touch()
        reserve(probe, nbytes)
    finally:
        remove(probe)


@contextlib.contextmanager
def staged(targets: Sequence[Path], *, overwrite: bool | None = None) -> Iterator[list[Path]]:
    """Yield temporary paths; move them onto ``targets`` on success, delete them on error.

    Parameters
    ----------
    targets
        The outputs, already checked with `check_targets`.
    overwrite
        Whether a target may be replaced. ``None``: only a target that was there when staging
        began (which `check_targets` let through, so with overwrite) may be.

    Raises
    ------
    OutputExistsError
        Something appeared at a target that may not be replaced while the outputs were
        written; it is kept, and the finished output is saved beside it under the name given.
    """
    tmps = [temp_sibling(t) for t in targets]
    if overwrite is None:
        replace = [t.exists() or t.is_symlink() for t in targets]
    else:
        replace = [overwrite] * len(targets)
    try:
        yield tmps
        _move_all(tmps, targets, replace)
    finally:
        for tmp in tmps:  # only leftovers after an error remain here
            _remove_leftover(tmp)


def _move_all(tmps: Sequence[Path], targets: Sequence[Path], replace: Sequence[bool]) -> None:
    """Move each finished output into place; keep those that would replace a new file aside."""
    kept: list[tuple[Path, Path]] = []
    for tmp, target, may_replace in zip(tmps, targets, replace, strict=True):
        try:
            move_into_place(tmp, target, overwrite=may_replace)
        except FileExistsError:
            kept.append((target, _keep_aside(tmp, target)))
    if kept:
        names = ", ".join(str(t) for t, _ in kept)
        aside = ", ".join(str(k) for _, k in kept)
        error = OutputExistsError(
            f"{names} appeared while debcr was writing it (another program or debcr run?) and "
            f"was left untouched; the result was saved as {aside} instead; pass overwrite=True "
            "(CLI: --overwrite) to replace such a file"
        )
        error.errno, error.strerror, error.filename = (
            errno.EEXIST,
            os.strerror(errno.EEXIST),
            os.fspath(kept[0][0]),
        )
        raise error


def _remove_leftover(tmp: Path, attempts: int = 5) -> None:
    """Delete an unfinished output, retrying while a writer thread still adds to it.

    After Ctrl-C/SIGTERM a library's I/O thread (Zarr writes chunks from one) may finish a
    chunk while the folder is being deleted.
    """
    for attempt in range(attempts):
        if not (tmp.exists() or tmp.is_symlink()):
            return
        if attempt:
            time.sleep(0.1)
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
    with output_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        with staged([target], overwrite=overwrite) as (tmp,):
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
