"""Reading a package back: the m-rBCR model of a ``.zip``, a folder or its ``rdf.yaml``.

Needs no ``bioimageio``: the description is read as YAML, every file is checked against its
sha256, and only packages whose architecture is m-rBCR as debcr exports it are accepted.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from debcr.defaults import BMZ_DESCRIPTIONS, PMAX, PMIN
from debcr.errors import ModelFileError
from debcr.interop.bmz.architecture import file_sha256, known_architectures
from debcr.nn import MRBCR

__all__ = ["load_bmz"]


class _Package:
    """Read files of a package: a zip, or a folder holding the rdf."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_file() and path.suffix.lower() == ".zip":
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise ModelFileError(
                    f"{path} is not a readable zip file ({exc}); copy it again"
                ) from exc
            self.folder = None
        else:
            self.folder = path if path.is_dir() else path.parent

    def rdf(self) -> tuple[str, dict[str, Any]]:
        names = [self.path.name] if self.path.name in BMZ_DESCRIPTIONS else list(BMZ_DESCRIPTIONS)
        for name in names:
            if self.exists(name):
                try:
                    content = yaml.safe_load(self.read(name))
                except yaml.YAMLError as exc:
                    raise ModelFileError(f"{self.path}: {name} is not valid YAML ({exc})") from exc
                if isinstance(content, dict):
                    return name, content
        raise ModelFileError(
            f"{self.path} is not a BioImage Model Zoo package: it has no rdf.yaml or "
            "bioimageio.yaml"
        )

    def exists(self, name: str) -> bool:
        if self._zip is not None:
            return name in self._zip.namelist()
        return (self.folder / name).is_file()

    def read(self, name: str) -> bytes:
        if not self.exists(name):
            raise ModelFileError(f"{self.path} lists the file {name!r}, but the package lacks it")
        try:
            if self._zip is not None:
                return self._zip.read(name)
            return (self.folder / name).read_bytes()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ModelFileError(f"{self.path}: cannot read {name} ({exc}); copy it again") from exc

    def read_checked(self, entry: Mapping[str, Any], what: str) -> bytes:
        source = str(entry.get("source", ""))
        if "://" in source:
            raise ModelFileError(
                f"{self.path}: the {what} is a remote file ({source}); download the package "
                "with its files (the .zip from bioimage.io) and load that"
            )
        data = self.read(source)
        expected = entry.get("sha256")
        if expected and file_sha256(data) != expected:
            raise ModelFileError(
                f"{self.path}: the {what} {source} does not match its sha256 (the package is "
                "damaged or was edited); download it again"
            )
        return data

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


@contextmanager
def _open_package(path: Path) -> Iterator[_Package]:
    package = _Package(path)
    try:
        yield package
    finally:
        package.close()


def _check_architecture(package: _Package, weights: Mapping[str, Any]) -> None:
    arch = weights.get("architecture") or {}
    callable_name = arch.get("callable", "?")
    if "source" not in arch:
        library = arch.get("import_from", "?")
        raise ModelFileError(
            f"{package.path} holds architecture {callable_name} from the library {library}, "
            "not m-rBCR; debcr runs only m-rBCR models"
        )
    source = package.read_checked(arch, "architecture file")
    if file_sha256(source) not in known_architectures():
        raise ModelFileError(
            f"{package.path} holds architecture {callable_name} ({arch['source']}), which is not "
            "m-rBCR as debcr exports it; debcr runs only m-rBCR models"
        )


def _normalization(rdf: Mapping[str, Any]) -> dict[str, Any]:
    inputs = rdf.get("inputs") or [{}]
    for step in inputs[0].get("preprocessing") or ():
        if step.get("id") == "scale_range":
            kwargs = step.get("kwargs") or {}
            return {
                "method": "percentile",
                "pmin": float(kwargs.get("min_percentile", 0.0)),
                "pmax": float(kwargs.get("max_percentile", 100.0)),
            }
    return {"method": "percentile", "pmin": PMIN, "pmax": PMAX}


def load_bmz(path: str | os.PathLike) -> MRBCR:
    """Load the m-rBCR model of a BioImage Model Zoo package (``bioimageio`` not needed).

    Parameters
    ----------
    path
        A package ``.zip``, a folder holding its ``rdf.yaml``, or that file.

    Returns
    -------
    MRBCR
        In eval mode on the CPU; ``metadata`` holds the package's normalisation settings
        (its ``scale_range`` percentiles), halo and provenance.

    Raises
    ------
    ModelFileError
        Not a package, a file missing or not matching its sha256, no ``pytorch_state_dict``
        weights, or an architecture other than m-rBCR (named in the message).
    """
    path = Path(path)
    with _open_package(path) as package:
        _, rdf = package.rdf()
        if rdf.get("type") != "model":
            raise ModelFileError(f"{path} describes a {rdf.get('type')!r}, not a model")
        weights = (rdf.get("weights") or {}).get("pytorch_state_dict")
        if not weights:
            formats = ", ".join(rdf.get("weights") or {}) or "none"
            raise ModelFileError(
                f"{path} has no pytorch_state_dict weights (it has: {formats}); debcr loads "
                "m-rBCR packages with PyTorch state-dict weights"
            )
        _check_architecture(package, weights)
        data = package.read_checked(weights, "weights file")
        attached = {}
        for entry in rdf.get("attachments") or ():
            if str(entry.get("source", "")).endswith("debcr_model.json"):
                attached = json.loads(package.read_checked(entry, "model description"))
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        model = MRBCR()
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, EOFError, TypeError, AttributeError) as exc:
        raise ModelFileError(f"{path}: the weights do not fit m-rBCR ({exc})") from exc
    halo = (rdf.get("config") or {}).get("debcr", {}).get("halo")
    model.metadata = {
        **attached,
        "name": rdf.get("name", attached.get("name", "")),
        "normalization": _normalization(rdf),
        "source": f"BioImage Model Zoo package {path}",
        **({"halo": int(halo)} if halo else {}),
    }
    return model.eval()
