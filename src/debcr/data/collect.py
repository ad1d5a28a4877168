"""Finding and pairing the images of a training set, and naming their groups.

Images are given as files, folders, arrays or lists of these; they are expanded here into
`ImageRef` records (one 2-D image each, read only when needed), paired
(`Pair`, `pairs_from_folders`, `as_pairs`) or grouped by field of view
(`fields_of`, `images_of`). Folders list their image files in natural order
('2' before '10'). Only numpy and the debcr data modules are used (no torch).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from debcr.data.io import as_image_stack, format_for_path, load
from debcr.errors import DataError

__all__ = [
    "ImageRef",
    "ImageSource",
    "Pair",
    "as_pairs",
    "describe",
    "fields_of",
    "group_id",
    "image_array",
    "image_refs",
    "images_of",
    "is_folder",
    "list_images",
    "natural_key",
    "pairs_from_folders",
]

ImageSource = str | os.PathLike | np.ndarray | Sequence[Any]
"""Images: a file (a 3-D file is a stack of images), a folder of image files, an array
(2-D image or 3-D stack of images), or a list of these."""


def group_id(value: Any) -> str:
    """The id of a group (field of view) as a string.

    Group ids are strings; ints are accepted so that ``range(1, 19)`` names FMD fields.

    Raises
    ------
    DataError
        For anything but a non-empty string or an integer.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (str, int, np.integer)):
        raise DataError(
            f"group id {value!r} must be a string or an integer (e.g. the field folder name)"
        )
    text = str(value)
    if not text:
        raise DataError("group id must not be empty")
    return text


@dataclass(frozen=True)
class Pair:
    """Degraded images and their ground truth, belonging to one group (field of view).

    Attributes
    ----------
    low
        The degraded images: a file (a 3-D file holds one image per slice), a folder of image
        files, an array (2-D, or 3-D with one image per slice), or a list of these.
    gt
        The ground truth, in the same forms: either one image per ``low`` image (paired in
        order) or a single image shared by all of them (e.g. the average of many frames).
    group
        The field of view the images show. Whole groups go to one set (train, val or test),
        so give images that overlap or are neighbouring planes of one volume the same group.
        Integers are converted to strings.
    """

    low: Any
    gt: Any
    group: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "group", group_id(self.group))


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------


def natural_key(path: str | os.PathLike) -> tuple[Any, ...]:
    """Sort key of a file name that orders '2' before '10' (digit runs compare as numbers)."""
    # re.split with a capturing group alternates text and digit runs, so the tuples of two
    # names compare str with str and int with int at every position.
    parts = re.split(r"(\d+)", Path(path).name.lower())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts))


def _is_image_path(path: Path) -> bool:
    """True for readable single-image files (and Zarr directories); hidden files never."""
    if path.name.startswith("."):
        return False
    try:
        fmt = format_for_path(path)
    except DataError:
        return False
    # .npz holds named arrays, not one image; a plain folder named like a file is not a store.
    return fmt.reader is not None and not fmt.holds_dict and (fmt.directory or path.is_file())


def is_folder(path: Path) -> bool:
    """Whether ``path`` is a folder of images, not a directory-based image such as ``x.zarr``."""
    return path.is_dir() and not _is_image_path(path)


def list_images(folder: Path) -> list[Path]:
    """The image files of ``folder`` (not recursive) in natural order.

    Raises
    ------
    DataError
        If the folder holds no image file.
    """
    files = sorted((p for p in folder.iterdir() if _is_image_path(p)), key=natural_key)
    if not files:
        raise DataError(
            f"folder {folder} contains no image files (supported: .tif, .png, .jpg, .npy, .zarr "
            "...); check the path"
        )
    return files


def _subfolders(root: Path) -> list[Path]:
    """The folders of images in ``root`` (hidden ones left out), in natural order."""
    found = sorted((p for p in root.iterdir() if is_folder(p)), key=natural_key)
    return [p for p in found if not p.name.startswith(".")]


def pairs_from_folders(low_root: str | os.PathLike, gt_root: str | os.PathLike) -> list[Pair]:
    """Pair the images of two folders, grouped by field of view.

    Two layouts are understood:

    - **one subfolder per field** (FMD): ``low_root/<field>/*`` holds the noisy frames and
      ``gt_root/<field>/*`` either one ground truth (shared by all frames) or as many images as
      there are frames (paired in natural order). The group is the subfolder name.
    - **flat**: ``low_root/<file>`` and ``gt_root/<file>`` with the same file name form a pair
      (CSBDeep's convention); the group is the file name without its extension.

    Parameters
    ----------
    low_root, gt_root
        Folders of degraded and ground-truth images.

    Returns
    -------
    list of Pair
        One pair per field (subfolder layout) or per file (flat layout), in natural order
        ('2' before '10'). ``Pair.low``/``Pair.gt`` are tuples of file paths (a single path for
        a shared ground truth), so they can be filtered or shortened before
        `debcr.data.prepare`.

    Raises
    ------
    DataError
        If a folder is missing or empty, a field or file has no ground truth, or a field has a
        number of ground-truth images other than 1 or its number of frames.
    """
    low_root, gt_root = Path(low_root), Path(gt_root)
    for role, root in (("low", low_root), ("gt", gt_root)):
        if not root.is_dir():
            raise DataError(f"{role} folder {root} does not exist or is not a folder")
    fields = _subfolders(low_root)
    if fields:
        return [_field_pair(folder, gt_root / folder.name) for folder in fields]
    low_files = list_images(low_root)
    pairs = []
    for path in low_files:
        target = gt_root / path.name
        if not target.exists():
            raise DataError(
                f"no ground truth for {path}: expected {target} (files are paired by name)"
            )
        pairs.append(Pair(low=(path,), gt=target, group=path.stem))
    return pairs


def _field_pair(low_folder: Path, gt_folder: Path) -> Pair:
    if not gt_folder.is_dir():
        raise DataError(f"field {low_folder.name!r} has no ground-truth folder {gt_folder}")
    frames, targets = list_images(low_folder), list_images(gt_folder)
    if len(targets) == 1:
        return Pair(low=tuple(frames), gt=targets[0], group=low_folder.name)
    if len(targets) != len(frames):
        raise DataError(
            f"field {low_folder.name!r}: {low_folder} has {len(frames)} images but {gt_folder} "
            f"has {len(targets)}; give one ground truth per field or one per image"
        )
    return Pair(low=tuple(frames), gt=tuple(targets), group=low_folder.name)


def fields_of(source: Any) -> list[tuple[str, Any]]:
    """The fields of view of a Noise2Noise source, as ``(group, frames)`` in natural order.

    Parameters
    ----------
    source
        A folder with one subfolder per field (each holding the frames as image files, or
        one stack file); a folder of stack files (one field each); a single stack file or
        3-D array (one field); a list of these; or a mapping ``{group: frames}``.

    Returns
    -------
    list of (str, frames)
        ``frames`` is anything `debcr.data.prepare` accepts as images.
    """
    if isinstance(source, Mapping):
        return [(group_id(k), v) for k, v in source.items()]
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise DataError(f"{path} does not exist; give a folder of fields or a stack file")
        if is_folder(path):
            subfolders = _subfolders(path)
            if subfolders:
                return [(p.name, p) for p in subfolders]
            return [(p.stem, p) for p in list_images(path)]
        return [(path.stem, path)]
    if hasattr(source, "shape"):
        return [("0", source)]
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        if not source:
            raise DataError("no fields given; the list is empty")
        return [(str(i), item) for i, item in enumerate(source)]
    raise DataError(
        f"cannot use {type(source).__name__} as fields; give a folder, a stack file, an array "
        "or a list of these"
    )


def images_of(images: Any) -> list[tuple[str, Any]]:
    """The groups of Noise2Void images, as ``(group, images)``: one per file, array or entry.

    A folder gives one group per image file (named by its stem), a file or array one group,
    a list one group per entry (named by the file stem, or the index), a mapping its keys.
    """
    if isinstance(images, Mapping):
        return [(group_id(k), v) for k, v in images.items()]
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        if not path.exists():
            raise DataError(f"{path} does not exist; give an image file or a folder of images")
        if is_folder(path):
            return [(p.stem, p) for p in list_images(path)]
        return [(path.stem, path)]
    if hasattr(images, "shape"):
        return [("0", images)]
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        if not images:
            raise DataError("no images given; the list is empty")
        named = [
            (Path(x).stem if isinstance(x, (str, os.PathLike)) else str(i), x)
            for i, x in enumerate(images)
        ]
        if len({g for g, _ in named}) != len(named):
            named = [(str(i), x) for i, (_, x) in enumerate(named)]
        return named
    raise DataError(
        f"cannot use {type(images).__name__} as images; give a file or folder path, an array, "
        "or a list of these"
    )


# --------------------------------------------------------------------------------------------
# Images: references that are read one at a time
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ImageRef:
    """One 2-D image: a whole 2-D file/array or one slice of a 3-D one, read on demand.

    Attributes
    ----------
    label
        How messages name the image (its path, with ``[z]`` for a slice).
    path
        The file it is read from, or None for an array.
    array
        The array it is taken from, or None for a file.
    index
        The slice of a 3-D file or array, or None for a 2-D one.
    """

    label: str
    path: Path | None = None
    array: Any = None
    index: int | None = None

    def read(self) -> np.ndarray:
        """The image as an array (only its slice is read where the format allows)."""
        stack = _open_stack(self.path) if self.path is not None else self.array
        return np.asarray(stack if self.index is None else stack[self.index])


def _open_stack(path: Path) -> Any:
    """The image or stack in ``path``, lazily where the format allows (one slice is read)."""
    data, meta = load(path, lazy=True, with_metadata=True)
    if isinstance(data, Mapping):
        raise DataError(
            f"{path} holds several named arrays; pass one of them, e.g. np.load(path)['low']"
        )
    return as_image_stack(data, axes=meta.axes, name=str(path))


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, str)


def _stack_refs(stack: Any, label: str, path: Path | None) -> list[ImageRef]:
    """References to the images of an opened 2-D image or 3-D stack."""
    array = None if path is not None else stack
    if len(stack.shape) == 2:
        return [ImageRef(label, path, array)]
    return [ImageRef(f"{label}[{z}]", path, array, z) for z in range(stack.shape[0])]


def image_refs(source: Any, label: str) -> list[ImageRef]:
    """Expand a source into 2-D image references (reading only shapes).

    Parameters
    ----------
    source
        An `ImageRef`, a file or folder path, an array or a list of these.
    label
        How messages name the source.

    Raises
    ------
    DataError
        For an empty list or anything that is not images.
    """
    if isinstance(source, ImageRef):
        return [source]
    if _is_array(source):
        return _stack_refs(as_image_stack(source, name=label), label, None)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if is_folder(path):
            return [ref for p in list_images(path) for ref in image_refs(p, str(p))]
        return _stack_refs(_open_stack(path), str(path), path)
    if isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        refs = [ref for i, s in enumerate(source) for ref in image_refs(s, f"{label}[{i}]")]
        if not refs:
            raise DataError(f"{label} is an empty list; give at least one image")
        return refs
    raise DataError(
        f"{label}: cannot use {type(source).__name__} as images; give a file or folder path, "
        "an array, or a list of these"
    )


def image_array(data: Any, what: str) -> np.ndarray:
    """An in-memory image (a napari layer's data) as an array, checked to be grey levels.

    Raises
    ------
    DataError
        Unless ``data`` is a 2-D image or a stack (3-D or 4-D) of a real number type.
    """
    arr = np.asarray(data)
    if arr.ndim < 2 or arr.ndim > 4:
        raise DataError(
            f"{what} has {arr.ndim} dimension(s) {arr.shape}; expected a 2-D image or a stack "
            "(Z/T, Y, X)"
        )
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(f"{what} has data type {arr.dtype}; expected a grey-level image")
    return arr


# --------------------------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------------------------


def _units(source: Any, role: str) -> list[Any]:
    """Split a ``low``/``gt`` argument of the 1:1 form into its paired entries (groups).

    A folder or list gives one entry per file/element; a single 3-D file or array gives one
    entry per slice; a single 2-D image is one entry.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if is_folder(path):
            return list(list_images(path))
        stack = _open_stack(path)
        return [source] if len(stack.shape) == 2 else _stack_refs(stack, str(path), path)
    if _is_array(source):
        stack = as_image_stack(source, name=f"{role} array")
        return [stack] if len(stack.shape) == 2 else _stack_refs(stack, f"{role} array", None)
    if isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        return list(source)
    raise DataError(
        f"{role}: cannot use {type(source).__name__} as images; give a file or folder path, an "
        "array, or a list of these"
    )


def describe(source: Any) -> str:
    """Short name of a source for error messages (paths, shapes, first and last entries)."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, ImageRef):
        return source.label
    if _is_array(source):
        return f"array of shape {tuple(source.shape)}"
    items = list(source)
    shown = (
        [describe(x) for x in items]
        if len(items) <= 3
        else [
            describe(items[0]),
            "...",
            describe(items[-1]),
        ]
    )
    return f"[{', '.join(shown)}]"


def as_pairs(low: Any, gt: Any) -> list[Pair]:
    """The pairs of either calling form of `debcr.data.prepare`.

    Parameters
    ----------
    low, gt
        Images paired in order (each pair its own group, named by its index), or a list of
        `Pair` (or ``(low, gt, group)`` tuples) with ``gt`` None.

    Raises
    ------
    DataError
        If ``gt`` is missing for images, an entry is not a pair, or the counts differ.
    """
    if gt is None:
        if _is_array(low) or isinstance(low, (str, os.PathLike)) or not isinstance(low, Iterable):
            raise DataError(
                "gt is missing: call prepare(low, gt, ...) with ground-truth images, or "
                "prepare(pairs, ...) with a list of Pair (see pairs_from_folders)"
            )
        pairs = []
        for i, item in enumerate(low):
            if isinstance(item, Pair):
                pairs.append(item)
            elif isinstance(item, tuple) and len(item) == 3:
                pairs.append(Pair(*item))
            else:
                raise DataError(
                    f"pairs[{i}] is a {type(item).__name__}; each pair must be a Pair or a "
                    "(low, gt, group) tuple"
                )
        if not pairs:
            raise DataError("no pairs given; the list of pairs is empty")
        return pairs
    low_units, gt_units = _units(low, "low"), _units(gt, "gt")
    if len(low_units) != len(gt_units):
        raise DataError(
            f"low ({describe(low)}) has {len(low_units)} images but gt ({describe(gt)}) has "
            f"{len(gt_units)}; they are paired in order, so give the same number (for several "
            "frames per ground truth use Pair / pairs_from_folders)"
        )
    if not low_units:
        raise DataError("low and gt are empty; give at least one image pair")
    return [Pair(lo, hi, str(i)) for i, (lo, hi) in enumerate(zip(low_units, gt_units))]
