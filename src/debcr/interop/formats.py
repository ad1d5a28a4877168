"""The export formats, and `export`, which picks one from the file's suffix."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from debcr.errors import DebcrError
from debcr.interop.bmz import BMZExport, export_bmz
from debcr.interop.portable import ExportCheck, export_onnx, export_torchscript
from debcr.nn import MRBCR

__all__ = ["EXPORT_FORMATS", "EXPORT_SUFFIXES", "export", "export_format"]

#: The formats `export` writes.
EXPORT_FORMATS: tuple[str, ...] = ("bmz", "onnx", "torchscript")
#: File suffixes `export` understands, and the format each one means.
EXPORT_SUFFIXES: dict[str, str] = {
    ".zip": "bmz",
    ".onnx": "onnx",
    ".pt": "torchscript",
    ".pth": "torchscript",
    ".ts": "torchscript",
}


def export_format(
    path: str | os.PathLike, format: str | None = None, package: Mapping[str, Any] | None = None
) -> str:
    """The format an export to ``path`` writes, checked before any model is loaded.

    Parameters
    ----------
    path
        The output file; its suffix picks the format unless ``format`` is given.
    format
        ``"bmz"``, ``"onnx"`` or ``"torchscript"``.
    package
        The package fields given (``name``, ``authors``…), which only ``"bmz"`` takes.

    Returns
    -------
    str
        One of `EXPORT_FORMATS`.

    Raises
    ------
    DebcrError
        The format is unknown, or package fields are given for another format.
    """
    fmt = format or EXPORT_SUFFIXES.get(Path(path).suffix.lower())
    if fmt not in EXPORT_FORMATS:
        suffixes = ", ".join(f"{k} ({v})" for k, v in EXPORT_SUFFIXES.items())
        raise DebcrError(
            f"cannot tell the export format of {os.fspath(path)!r} (format={format!r}); use one "
            f"of the suffixes {suffixes} or pass format='bmz'|'onnx'|'torchscript'"
        )
    if fmt != "bmz" and package:
        raise DebcrError(f"{sorted(package)} apply only to BMZ packages, not to {fmt} files")
    return fmt


def export(
    model: MRBCR,
    path: str | os.PathLike,
    *,
    format: str | None = None,
    overwrite: bool = False,
    **package: Any,
) -> BMZExport | ExportCheck:
    """Export ``model`` as a BMZ package, a standalone ONNX file or a TorchScript file.

    Parameters
    ----------
    model
        The network.
    path
        Output file; its suffix picks the format unless ``format`` is given: ``.zip`` →
        BioImage Model Zoo package, ``.onnx`` → ONNX, ``.pt``/``.pth``/``.ts`` → TorchScript.
    format
        ``"bmz"``, ``"onnx"`` or ``"torchscript"``.
    overwrite
        Replace an existing file.
    **package
        For ``"bmz"``: ``name``, ``description``, ``authors``… (see
        `export_bmz`).

    Returns
    -------
    BMZExport | ExportCheck
        What was written; ONNX and TorchScript exports report their largest difference to the
        PyTorch model on a real image.
    """
    fmt = export_format(path, format, package)
    if fmt == "bmz":
        return export_bmz(model, path, overwrite=overwrite, **package)
    writer = export_onnx if fmt == "onnx" else export_torchscript
    return writer(model, path, overwrite=overwrite)
