"""The one model resolver: what a user may name as a model, and how it is loaded.

A model *source* is a built-in model's name (``"2D_denoising"``…), a debcr model file
(``.safetensors``), a training run folder (its ``best.safetensors``, else
``last.safetensors``), a BioImage Model Zoo package of an m-rBCR model (``.zip``, or a folder
holding its ``rdf.yaml``), or a checkpoint of the original TensorFlow DeBCR (a prefix such as
``…/ckpt-best``, its ``.index``/``.data-…`` file, or a folder holding one). The Python API,
the CLI, training (``init_model``) and the napari plugin all go through `resolve`, so
they accept the same things and say the same thing when a source is wrong.

`resolve` only looks at names and files (no torch); `load` builds the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from debcr.defaults import BEST_MODEL, BMZ_DESCRIPTIONS, LAST_MODEL
from debcr.errors import ModelFileError, ModelNotFoundError
from debcr.weights import PRETRAINED

if TYPE_CHECKING:
    import torch

    from debcr.modelfile import StoredModel
    from debcr.nn import MRBCR

__all__ = ["ModelSource", "SourceKind", "load", "resolve", "restorable"]

SourceKind = Literal["builtin", "file", "bmz", "tf_checkpoint"]


@dataclass(frozen=True)
class ModelSource:
    """A resolved model source.

    Attributes
    ----------
    kind
        ``"builtin"``, ``"file"`` (a debcr model file, also the model chosen in a run folder),
        ``"bmz"`` (a BioImage Model Zoo package) or ``"tf_checkpoint"`` (the original DeBCR's
        TensorFlow checkpoint).
    location
        The built-in model's name, or the path to load.
    """

    kind: SourceKind
    location: str | Path

    def load(self, device: torch.device | str = "cpu") -> MRBCR:
        """The model, in eval mode on ``device``; ``model.metadata`` tells where it came from."""
        from debcr.modelfile import load_model

        if self.kind == "builtin":
            return load_model(PRETRAINED[str(self.location)].path, map_location=device)
        if self.kind == "file":
            return load_model(self.location, map_location=device)
        if self.kind == "bmz":
            from debcr.interop.bmz import load_bmz

            return load_bmz(self.location).to(device)
        from debcr.interop import model_from_tf_checkpoint

        return model_from_tf_checkpoint(self.location).to(device)

    def stored(self) -> StoredModel | None:
        """The model file, its header read and checked but its weights not loaded (no torch),
        for a built-in model or a debcr model file with a weights checksum; None for the
        other kinds (they are loaded, `load`).

        Raises
        ------
        FileNotFoundError, ModelFileError
            As `load` for a missing file or a wrong header.
        """
        from debcr.modelfile import StoredModel

        if self.kind == "builtin":
            return StoredModel.read(PRETRAINED[str(self.location)].path)
        if self.kind == "file":
            return StoredModel.read(self.location)
        return None


def _run_folder_model(folder: Path) -> Path | None:
    for name in (BEST_MODEL, LAST_MODEL):
        if (folder / name).is_file():
            return folder / name
    return None


def _is_tf_checkpoint(path: Path) -> bool:
    if path.is_dir():
        return any(path.glob("*.index"))
    return (
        path.suffix == ".index"
        or Path(os.fspath(path) + ".index").is_file()
        or (".data-" in path.name and path.is_file())
    )


def _is_bmz_package(path: Path) -> bool:
    if path.is_dir():
        return any((path / rdf).is_file() for rdf in BMZ_DESCRIPTIONS)
    return path.is_file() and (path.suffix.lower() == ".zip" or path.name in BMZ_DESCRIPTIONS)


def resolve(source: str | os.PathLike) -> ModelSource:
    """Decide what ``source`` names, without loading anything.

    Parameters
    ----------
    source
        A built-in model's name, a model file, a training run folder, or an original DeBCR
        TensorFlow checkpoint (see the module's description).

    Returns
    -------
    ModelSource

    Raises
    ------
    ModelFileError
        Nothing usable is named: an empty name, a missing path, or a folder with neither a
        trained model nor a TensorFlow checkpoint. The message lists what is accepted.
    """
    name = os.fspath(source)
    if name in PRETRAINED:
        return ModelSource("builtin", name)
    builtins = ", ".join(PRETRAINED)
    if not name.strip():
        raise ModelFileError(
            f"no model chosen: give a built-in model ({builtins}), a model file "
            "(.safetensors), a training run folder or a BioImage Model Zoo package (.zip)"
        )
    path = Path(name).expanduser()
    if _is_bmz_package(path):
        return ModelSource("bmz", path)
    if path.is_dir():
        best = _run_folder_model(path)
        if best is not None:
            return ModelSource("file", best)
        if _is_tf_checkpoint(path):
            return ModelSource("tf_checkpoint", path)
        raise ModelFileError(
            f"the folder {path} holds no trained model ({BEST_MODEL} or {LAST_MODEL}), no "
            "BioImage Model Zoo package (rdf.yaml) and no TensorFlow checkpoint; choose a "
            "training run folder or a model file"
        )
    if _is_tf_checkpoint(path):
        return ModelSource("tf_checkpoint", path)
    if path.is_file():
        return ModelSource("file", path)
    if path.suffix or len(path.parts) > 1:  # meant as a path
        raise ModelNotFoundError(f"no model file at {path}")
    raise ModelFileError(
        f"no model named {name!r}: not a built-in model ({builtins}), and no model file, "
        "training run folder, BioImage Model Zoo package or TensorFlow checkpoint exists at "
        "that path"
    )


def load(source: Any, device: torch.device | str = "cpu", *, seed: int | None = None) -> MRBCR:
    """The model ``source`` names, in eval mode on ``device``.

    Parameters
    ----------
    source
        Anything `resolve` accepts; an `MRBCR` passes through as it is;
        ``None`` makes a new, untrained model (Glorot-uniform weights, as the original).
    device
        Where to put a loaded or new model.
    seed
        Seed for the initial weights of a new model.
    """
    import torch

    from debcr.nn import MRBCR, init_glorot_

    if isinstance(source, MRBCR):
        return source
    if source is None:
        if seed is not None:
            torch.manual_seed(seed)
        model = init_glorot_(MRBCR())
        model.metadata = {"task": "", "source": "untrained"}
        return model.to(device).eval()
    return resolve(source).load(device)


def restorable(source: str | os.PathLike, device: torch.device | str = "auto") -> Any:
    """The model ``source`` names, ready to restore with: the model file with its header read
    (`ModelSource.stored`, no torch) where that is all the OpenVINO backend needs, else the
    network loaded onto ``device`` (``"auto"``: `debcr.runtime.resolve_device`'s choice)."""
    spec = resolve(source)
    stored = spec.stored()
    if stored is not None:
        return stored
    from debcr.runtime import resolve_device

    return spec.load(resolve_device(device))
