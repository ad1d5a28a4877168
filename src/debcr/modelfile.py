"""debcr model files: safetensors weights plus JSON metadata, never pickles.

A model file holds the m-rBCR parameters and, in the safetensors header,
``format``/``format_version``, the architecture and its version, the
normalisation the model expects, provenance (task, source, licence) and a sha256
checksum of the tensors. Loading checks all of it, so a wrong or damaged file
fails with a clear message instead of producing a silently wrong model.

Importing this module does not import torch. A `StoredModel` is a model file whose header was
read and checked but whose weights were not loaded: the OpenVINO backend restores with the
conversion it keeps for those weights (`debcr.backends.openvino_runner`) from the checksum
alone, so a command-line restoration with a built-in model never imports torch (about a
second of every start); the weights are loaded (`StoredModel.load`) where they are needed —
the PyTorch backend, a first conversion, or a halo the file does not store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from debcr._version import __version__
from debcr.defaults import ARCHITECTURE, ARCHITECTURE_VERSION, NORMALIZATION
from debcr.errors import ModelFileError
from debcr.files import atomic_output

if TYPE_CHECKING:
    import torch

    from debcr.nn import MRBCR

logger = logging.getLogger(__name__)

FORMAT = "debcr-model"
FORMAT_VERSION = 1
#: Header key of the tensors' checksum (see `tensor_checksum`).
CHECKSUM_KEY = "tensors_sha256"


@dataclass(frozen=True, eq=False)
class StoredModel:
    """An m-rBCR model file whose header was read and checked, its weights not yet loaded.

    Attributes
    ----------
    path
        The ``.safetensors`` file.
    checksum
        The checksum of its weights stored in the header (`tensor_checksum`).
    metadata
        Its settings and provenance (``task``, ``normalization``, ``halo``…), as
        ``MRBCR.metadata`` of the loaded model.
    """

    path: Path
    checksum: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | os.PathLike) -> StoredModel | None:
        """The model file ``path`` with its header checked and its weights' bytes checked
        against the stored checksum (`file_checksum`); None if the header stores no checksum
        (a file of an older debcr) or `file_checksum` cannot check it: such a file is loaded
        whole instead (`load_model`).

        Raises
        ------
        FileNotFoundError, ModelFileError
            As `load_model` for a missing file, a wrong header or damaged weights.
        """
        path = Path(path)
        header = read_header(path)
        metadata = check_header(path, header)
        checksum = header.get(CHECKSUM_KEY)
        found = file_checksum(path) if checksum else None
        if found is None:
            return None
        if found != checksum:
            raise _damaged(path)
        return cls(path, checksum, metadata)

    def load(self, device: str | torch.device = "cpu") -> MRBCR:
        """The network, its weights checked against the checksum read with the header.

        Raises
        ------
        ModelFileError
            As `load_model`; or the file now holds other weights than when it was read (a
            training run replaced it, say): they would otherwise be cached under the
            checksum of the weights read first.
        """
        network = load_model(self.path, map_location=device)
        if tensor_checksum(network.state_dict()) != self.checksum:
            raise ModelFileError(
                f"{self.path} changed while it was in use: it now holds other weights than "
                "when it was read; start again to use the new ones"
            )
        return network


def checksum_of(model: Any) -> str:
    """The checksum of a network's weights, or the one a `StoredModel` stores."""
    if isinstance(model, StoredModel):
        return model.checksum
    return tensor_checksum(model.state_dict())


def network_of(model: Any, device: str | torch.device = "cpu") -> Any:
    """The network itself: a `StoredModel` loaded onto ``device``, anything else as it is."""
    return model.load(device) if isinstance(model, StoredModel) else model


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


def check_header(path: str | os.PathLike, header: Mapping[str, str]) -> dict[str, Any]:
    """Check that ``header`` (of the file ``path``) is a debcr model file's that this debcr reads;
    returns its metadata (settings and provenance).

    Raises
    ------
    ModelFileError
        Another format, a newer format version, another architecture (version), or damaged
        metadata; the message says which and what to do.
    """
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
    return _metadata(path, header)


def tensor_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 of the tensors' names, dtypes, shapes and bytes, in sorted name order."""
    import torch

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
    import torch
    from safetensors.torch import save_file

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


def _verify_checksum(path: Path, header: Mapping[str, str], tensors: Mapping) -> None:
    stored = header.get(CHECKSUM_KEY)
    if stored is None:
        logger.warning(
            "%s has no checksum (written by an older debcr), so damage cannot be detected; "
            "re-save it with debcr.model.save to add one",
            path,
        )
    elif tensor_checksum(tensors) != stored:
        raise _damaged(path)


def _damaged(path: Path) -> ModelFileError:
    return ModelFileError(
        f"{path} is damaged: its weights do not match the checksum stored in the file; "
        "copy it again from where it came from"
    )


def file_checksum(path: str | os.PathLike) -> str | None:
    """`tensor_checksum` of the tensors in the model file ``path``, read with safetensors'
    numpy reader (no torch; a few ms for m-rBCR's 0.9 MB); None where a tensor is not float32
    (model files hold float32 only, `save_model`).

    Raises
    ------
    ModelFileError
        If safetensors cannot read the file (a truncated or damaged file).
    """
    import numpy as np
    from safetensors import SafetensorError, safe_open

    digest = hashlib.sha256()
    try:
        with safe_open(os.fspath(path), framework="numpy") as tensors:
            for name in sorted(tensors.keys()):
                tensor = tensors.get_tensor(name)
                if tensor.dtype != np.float32:
                    return None
                digest.update(f"{name}|torch.float32|{tuple(tensor.shape)}|".encode())
                digest.update(np.ascontiguousarray(tensor).tobytes())
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is truncated or corrupt ({exc}); copy it again") from exc
    return digest.hexdigest()


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
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from debcr.nn import MRBCR

    header = read_header(path)
    metadata = check_header(path, header)
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
