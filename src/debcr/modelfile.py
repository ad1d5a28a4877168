"""debcr model files: safetensors weights plus JSON metadata, never pickles.

A model file holds the m-rBCR parameters and, in the safetensors header,
``format``/``format_version``, the architecture and its version, the
normalisation the model expects, provenance (task, source, licence) and a sha256
checksum of the tensors. Loading checks all of it, so a wrong or damaged file
fails with a clear message instead of producing a silently wrong model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from debcr._version import __version__
from debcr.defaults import NORMALIZATION
from debcr.errors import ModelFileError
from debcr.files import atomic_output
from debcr.nn import ARCHITECTURE, ARCHITECTURE_VERSION, MRBCR

FORMAT = "debcr-model"
FORMAT_VERSION = 1
#: Header key of the tensors' checksum (see `tensor_checksum`).
CHECKSUM_KEY = "tensors_sha256"

logger = logging.getLogger(__name__)


def tensor_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 of the tensors' names, dtypes, shapes and bytes, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_file_path(path: str | os.PathLike) -> Path:
    """Where `save_model` writes ``path``: ``.safetensors`` appended to another suffix."""
    path = Path(path)
    return path if path.suffix == ".safetensors" else path.with_name(path.name + ".safetensors")


def save_model(
    model: MRBCR,
    path: str | os.PathLike,
    *,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` to a ``.safetensors`` model file (atomically).

    Parameters
    ----------
    model
        The network; its ``metadata`` attribute (if any) is stored too, updated by
        ``metadata``.
    path
        Output file; ``.safetensors`` is appended if it has another suffix.
    metadata
        Provenance and settings (JSON-serialisable), e.g. ``task``, ``source``,
        ``license``, ``normalization``.
    overwrite
        Replace an existing file.
    """
    path = model_file_path(path)
    info = {**getattr(model, "metadata", {}), **(metadata or {})}
    info.setdefault("normalization", dict(NORMALIZATION))
    header = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "architecture": ARCHITECTURE,
        "architecture_version": str(ARCHITECTURE_VERSION),
        "debcr_version": __version__,
        "metadata": json.dumps(info, sort_keys=True),
    }
    tensors = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
    }
    header[CHECKSUM_KEY] = tensor_checksum(tensors)
    with atomic_output(path, overwrite=overwrite) as tmp:
        save_file(tensors, os.fspath(tmp), metadata=header)
        # safetensors creates files private to the user; model files are meant to be shared.
        os.chmod(tmp, 0o644)
    return path


def read_header(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors header metadata of a model file (no weights are read)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        with path.open("rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            if size <= 0 or size > min(path.stat().st_size - 8, 100_000_000):
                raise ValueError("bad header length")
            header = json.loads(fh.read(size))
        if not isinstance(header, dict):
            raise ValueError(f"its header is a JSON {type(header).__name__}, not an object")
        metadata = header.get("__metadata__") or {}
        if not isinstance(metadata, dict):
            raise ValueError(f"its __metadata__ is a JSON {type(metadata).__name__}, not an object")
        return dict(metadata)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(
            f"{path} is not a safetensors model file ({exc}); debcr model files are written by "
            "debcr.model.save or `debcr convert-tf`"
        ) from exc


def _verify_checksum(path: Path, header: Mapping[str, str], tensors: Mapping) -> None:
    stored = header.get(CHECKSUM_KEY)
    if stored is None:
        logger.warning(
            "%s has no checksum (written by an older debcr), so damage cannot be detected; "
            "re-save it with debcr.model.save to add one",
            path,
        )
    elif tensor_checksum(tensors) != stored:
        raise ModelFileError(
            f"{path} is damaged: its weights do not match the checksum stored in the file; "
            "copy it again from where it came from"
        )


def _format_version(path: Path, header: Mapping[str, str]) -> int:
    try:
        return int(header.get("format_version", -1))
    except ValueError as exc:
        raise ModelFileError(
            f"{path} has the format_version {header.get('format_version')!r}, not a number; "
            "the file is damaged or was not written by debcr"
        ) from exc


def _metadata(path: Path, header: Mapping[str, str]) -> dict[str, Any]:
    """The settings and provenance stored in the header: a JSON object."""
    try:
        metadata = json.loads(header.get("metadata", "{}"))
    except ValueError as exc:
        raise ModelFileError(
            f"{path}: its metadata is not valid JSON ({exc}); the file is damaged, copy it again"
        ) from exc
    if not isinstance(metadata, dict):
        raise ModelFileError(
            f"{path}: its metadata is a JSON {type(metadata).__name__}, not an object of "
            "settings and provenance; the file is damaged or was not written by debcr"
        )
    return check_metadata(path, metadata)


def check_metadata(path: str | os.PathLike, metadata: dict[str, Any]) -> dict[str, Any]:
    """Check the settings in a model's stored metadata that inference uses.

    Parameters
    ----------
    path
        The file it was read from (named in the message).
    metadata
        The stored settings and provenance.

    Returns
    -------
    dict
        ``metadata``, unchanged.

    Raises
    ------
    ModelFileError
        ``normalization`` is not an object of a method and numeric percentiles, or a ``halo``
        is not a whole number of pixels (a damaged file: inference would fail far from it).
    """
    settings = metadata.get("normalization") or {}  # unset: the defaults
    numeric = isinstance(settings, dict) and all(
        isinstance(settings.get(key, 0), int | float) for key in ("pmin", "pmax")
    )
    if not numeric or not isinstance(settings.get("method", ""), str):
        raise ModelFileError(
            f"{path}: the normalization in its metadata is {settings!r:.80}, not an object of "
            "a method and numeric pmin/pmax; the file is damaged or was not written by debcr"
        )
    for key, halo in metadata.items():
        if key.startswith("halo") and (
            isinstance(halo, bool) or not isinstance(halo, int) or halo < 0
        ):
            raise ModelFileError(
                f"{path}: the {key} in its metadata is {halo!r:.40}, not a whole number of "
                "pixels; the file is damaged or was not written by debcr"
            )
    return metadata


def load_model(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> MRBCR:
    """Load a model file written by `save_model`.

    Returns an `MRBCR` in eval mode whose ``metadata`` attribute
    holds the stored provenance and normalisation settings.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ModelFileError
        If it is not a debcr model file, is truncated or corrupt (its weights do not match
        their stored checksum), was written for
        another architecture (version), or does not fill every parameter.
    """
    path = Path(path)
    header = read_header(path)
    if header.get("format") != FORMAT:
        raise ModelFileError(
            f"{path} is a safetensors file but not a debcr model file "
            f"(format {header.get('format')!r}, expected {FORMAT!r})"
        )
    if _format_version(path, header) > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written by a newer debcr ({header.get('debcr_version')}); "
            f"upgrade debcr (`pip install -U debcr-torch`) to read it"
        )
    arch = (header.get("architecture"), header.get("architecture_version"))
    if arch != (ARCHITECTURE, str(ARCHITECTURE_VERSION)):
        raise ModelFileError(
            f"{path} holds architecture {arch[0]} v{arch[1]}, but this debcr builds "
            f"{ARCHITECTURE} v{ARCHITECTURE_VERSION}"
        )
    metadata = _metadata(path, header)
    try:
        tensors = load_file(os.fspath(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is truncated or corrupt ({exc}); copy it again") from exc
    _verify_checksum(path, header, tensors)
    model = MRBCR()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise ModelFileError(
            f"{path} does not match the m-rBCR network: {len(missing)} missing, "
            f"{len(unexpected)} unexpected and {len(wrong)} mis-shaped parameters "
            f"(e.g. {(missing + unexpected + wrong)[:3]})"
        )
    model.load_state_dict(tensors, strict=True)
    model.metadata = metadata
    return model.to(map_location).eval()
