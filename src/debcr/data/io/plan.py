"""Which files a batch restoration reads and writes, planned before anything is restored.

``debcr predict`` and any other front end that restores many files at once (napari, a
script) use the same plan, so the same inputs always get the same output names and the same
refusals.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from debcr.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "image_files", "output_stem", "plan_outputs"]

#: Extensions picked up from a folder of inputs.
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".tif",
    ".tiff",
    ".png",
    ".jpg",
    ".jpeg",
    ".npy",
    ".npz",
    ".zarr",
)


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """The image files named by ``paths``: files as given, folders by their images.

    A folder contributes its files with an `IMAGE_SUFFIXES` extension, sorted; a
    ``.zarr`` folder is one image. A file named twice (``raw`` and ``raw/a.tif``) is listed
    once.

    Raises
    ------
    DataError
        A folder holds no images.
    FileNotFoundError
        A path does not exist.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and path.suffix != ".zarr":
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"input {path} does not exist")
    unique: dict[str, Path] = {}
    for file in files:
        unique.setdefault(path_key(file), file)
    return list(unique.values())


def path_key(path: Path) -> str:
    """``path`` compared as the file system does: absolute, links resolved, case-folded
    where the usual file systems ignore case (macOS, Windows)."""
    text = str(path.resolve())
    return text.casefold() if sys.platform in ("darwin", "win32") else text


def output_stem(source: Path) -> str:
    """The name of ``source`` without its image suffix.

    ``x.tif``, ``x.ome.tif`` and ``x.ome.zarr`` give ``x``; other dots stay (``img.1.tif``
    gives ``img.1``).
    """
    name = source.name
    lower = name.lower()
    suffix = next((s for s in IMAGE_SUFFIXES if lower.endswith(s)), source.suffix)
    name = name[: len(name) - len(suffix)]
    if name.lower().endswith(".ome"):
        name = name[: -len(".ome")]
    return name or source.name


def plan_outputs(
    sources: Sequence[Path], out: Path, suffix: str = ".tif"
) -> list[tuple[Path, Path]]:
    """``(input, output)`` of every input, checked before anything is restored.

    One input and an ``out`` with a suffix write to ``out``; otherwise ``out`` is a folder
    and each input ``x.tif`` is written to ``out/x_restored<suffix>``.

    Raises
    ------
    DataError
        Several inputs would share an output (the same name in different folders, ``x.tif``
        next to ``x.ome.tif``), or an output would be one of the inputs; the message names the
        files, and nothing has been written.
    """
    many = len(sources) > 1 or not out.suffix
    plan = [
        (source, out / f"{output_stem(source)}_restored{suffix}" if many else out)
        for source in sources
    ]
    by_output: dict[str, tuple[Path, list[Path]]] = {}
    for source, target in plan:
        by_output.setdefault(path_key(target), (target, []))[1].append(source)
    problems = [
        f"{', '.join(map(str, group))} would all be written to {target}"
        for target, group in by_output.values()
        if len(group) > 1
    ]
    inputs = {path_key(source) for source in sources}
    problems += [
        f"the output of {source} would replace the input {target}"
        for source, target in plan
        if path_key(target) in inputs
    ]
    if problems:
        raise DataError(
            f"{'; '.join(problems)}. Nothing was restored: restore inputs of the same name "
            "in separate runs with their own -o folder (or rename them), and choose an -o "
            "that holds no inputs"
        )
    return plan
