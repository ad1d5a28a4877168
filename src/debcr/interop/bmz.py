"""BioImage Model Zoo packages of m-rBCR models: export (validated by the Zoo's tools) and import.

A package (spec 0.5, a ``.zip``) holds the weights in three formats that Fiji/deepImageJ,
ilastik, QuPath and ``bioimageio.core`` run: ``pytorch_state_dict`` (the network as one
torch-only source file, :func:`architecture_source`), ``torchscript`` and ``onnx``. The input is
a batch of single-channel 2-D images, normalised by the package's own ``scale_range``
pre-processing with the model's percentiles; the output is the restoration in those normalised
units, with a ``halo`` equal to the model's measured receptive field (see
:func:`debcr.nn.effective_halo`).

:func:`export_bmz` runs ``bioimageio.core``'s model test on every weight format before it writes
the package and refuses to write one that fails. :func:`load_bmz` reads a package back (a
``.zip``, a folder or its ``rdf.yaml``) without needing ``bioimageio`` installed, checking every
file against its sha256.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from debcr._version import __version__
from debcr.data.normalize import normalize, percentiles_of
from debcr.defaults import BMZ_DESCRIPTIONS, PMAX, PMIN, SIZE_MULTIPLE
from debcr.errors import ModelFileError
from debcr.files import atomic_output
from debcr.interop.portable import (
    ONNX_OPSET,
    TOLERANCE,
    ExportError,
    check_image,
    missing_extra,
    restorer,
    run_onnx,
    run_torchscript,
    write_onnx,
    write_torchscript,
)
from debcr.nn import MRBCR, effective_halo
from debcr.nn import mrbcr as mrbcr_module
from debcr.weights import PRETRAINED

__all__ = [
    "ARCHITECTURE_CALLABLE",
    "KNOWN_ARCHITECTURE_SHA256",
    "BMZExport",
    "architecture_source",
    "export_bmz",
    "load_bmz",
]

logger = logging.getLogger(__name__)

#: Name of the network class in the package's architecture file.
ARCHITECTURE_CALLABLE = "MRBCRRestorer"
ARCHITECTURE_FILE = "mrbcr.py"
#: sha256 of every architecture file debcr has exported. A package whose architecture hashes to
#: one of these is m-rBCR with the parameter names of :class:`~debcr.nn.MRBCR`. When
#: ``debcr/nn/mrbcr.py`` changes, add the new hash here (a test says so) and keep the old ones.
KNOWN_ARCHITECTURE_SHA256: frozenset[str] = frozenset(
    {
        # debcr 0.1.0
        "f8584fe2adac62c6b13a76289e7aaa26f63cc2bd6b020b4b49f9edc604405d23",
    }
)

#: Authors of the method and of the four published models.
ORIGINAL_AUTHORS: tuple[dict[str, str], ...] = tuple(
    {"name": name}
    for name in (
        "Rui Li",
        "Artsemi Yushkevich",
        "Xiaofeng Chu",
        "Mikhail Kudryashev",
        "Artur Yakimovich",
    )
)
#: The method's papers, cited by every package.
METHOD_CITE: tuple[dict[str, str], ...] = (
    {
        "text": "Li R, Yushkevich A, Chu X, Kudryashev M, Yakimovich A. DeBCR: a "
        "sparsity-efficient framework for image enhancement through a deep-learning-based "
        "solution to inverse problems. Communications Engineering (2026).",
        "url": "https://pmc.ncbi.nlm.nih.gov/articles/PMC12890920/",
    },
    {
        "text": "Li R, Kudryashev M, Yakimovich A. Solving the inverse problem of microscopy "
        "deconvolution with a residual Beylkin-Coifman-Rokhlin neural network. "
        "arXiv:2407.03239 (2024).",
        "doi": "10.48550/arXiv.2407.03239",
    },
)
#: The published weights (cited by the packages of the built-in models).
WEIGHTS_CITE: dict[str, str] = {
    "text": "DeBCR sample data and pretrained weights (Zenodo).",
    "doi": "10.5281/zenodo.12626121",
}

_ARCHITECTURE_IMPORTS = frozenset({"__future__", "itertools", "torch"})
_TEST_SIZE = 256
_COVER_SIZE = 256


def architecture_source() -> str:
    """The network as one source file that needs only torch (the package's architecture).

    It is ``debcr/nn/mrbcr.py`` with its one import from debcr replaced by the constant it
    imports, so that loading a package never imports a module named ``debcr`` (a different
    package of that name exists on the package index).
    """
    text = Path(mrbcr_module.__file__).read_text(encoding="utf-8")
    line = "from debcr.defaults import SIZE_MULTIPLE\n"
    source = text.replace(line, f"SIZE_MULTIPLE = {SIZE_MULTIPLE}\n")
    imported = {
        alias.name if isinstance(node, ast.Import) else node.module or ""
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    foreign = sorted(m for m in imported if m.split(".")[0] not in _ARCHITECTURE_IMPORTS)
    if foreign:
        raise ExportError(
            f"{mrbcr_module.__file__} imports {foreign}; the exported architecture file may "
            f"import only {sorted(_ARCHITECTURE_IMPORTS)} (update architecture_source)"
        )
    return source


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class BMZExport:
    """A written BioImage Model Zoo package and how it was checked.

    Attributes
    ----------
    path
        The ``.zip`` written.
    size_bytes
        Its size.
    status
        ``bioimageio.core``'s overall test result (always ``"passed"`` for a written package).
    checks
        ``(check, status)`` for every check of the Zoo's model test.
    max_abs_diff
        Largest |Δ| of the TorchScript and ONNX weights to PyTorch on the bundled sample.
    bioimageio_core
        Version of ``bioimageio.core`` that validated the package.
    """

    path: Path
    size_bytes: int
    status: str
    checks: tuple[tuple[str, str], ...]
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    bioimageio_core: str = ""

    def __str__(self) -> str:
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in self.max_abs_diff.items())
        passed = sum(status == "passed" for _, status in self.checks)
        return (
            f"BioImage Model Zoo package written to {self.path} ({self.size_bytes / 1e6:.1f} MB); "
            f"bioimageio.core {self.bioimageio_core} model test {self.status} "
            f"({passed}/{len(self.checks)} checks passed); max |Δ| to PyTorch: {diffs}"
        )


def _require_bioimageio() -> tuple[Any, Any]:
    try:
        import bioimageio.core as core
        import bioimageio.spec as spec
    except ImportError as exc:
        raise ExportError(missing_extra("BioImage Model Zoo export", exc.name)) from exc
    return core, spec


def _author_list(authors: Any, what: str) -> list[dict[str, str]]:
    if isinstance(authors, (str, Mapping)):
        authors = [authors]
    result = []
    for author in authors or ():
        entry = {"name": author} if isinstance(author, str) else dict(author)
        if not str(entry.get("name", "")).strip():
            raise ExportError(f"every {what} needs a name; got {author!r}")
        result.append({k: str(v) for k, v in entry.items() if v})
    return result


@dataclass(frozen=True)
class _Card:
    """What a package says about its model (the parts a user may choose)."""

    name: str
    description: str
    authors: list[dict[str, str]]
    cite: list[dict[str, str]]
    license: str
    tags: list[str]
    builtin: bool


def _card(
    model: MRBCR,
    name: str | None,
    description: str | None,
    authors: Any,
    cite: Any,
    license: str | None,
    tags: Sequence[str] | None,
) -> _Card:
    meta = getattr(model, "metadata", {})
    builtin = meta.get("name") in PRETRAINED and str(meta.get("source", "")).startswith(
        "github.com/leeroyhannover/DeBCR"
    )
    if builtin:
        name = name or f"DeBCR {meta['name']} (m-rBCR)"
        description = description or f"m-rBCR (DeBCR) model for {meta.get('description', '')}."
        authors = authors or list(ORIGINAL_AUTHORS)
        license = license or "CC-BY-4.0"
    missing = [k for k, v in (("name", name), ("authors", authors)) if not v]
    if missing:
        raise ExportError(
            f"a BioImage Model Zoo package needs {' and '.join(missing)}: pass "
            "name='…', authors=['Your Name', …] (and a description)"
        )
    extra_cite = [cite] if isinstance(cite, (str, Mapping)) else list(cite or ())
    citations = [
        {"text": c} if isinstance(c, str) else {k: str(v) for k, v in dict(c).items()}
        for c in extra_cite
    ]
    for entry in citations:
        if not (entry.get("doi") or entry.get("url")):
            raise ExportError(f"each citation needs a 'doi' or a 'url'; got {entry!r}")
    # Fine-tuned from a published model: its weights are derived from the published ones.
    derived = str(meta.get("init_source", "")).startswith("github.com/leeroyhannover/DeBCR")
    method = list(METHOD_CITE) + ([WEIGHTS_CITE] if builtin or derived else [])
    task = str(meta.get("task") or "")
    kind = "super-resolution" if task.endswith("_SR") else "denoising"
    base_tags = ["m-rBCR", "DeBCR", "debcr", kind, "fluorescence-light-microscopy", "2d", "pytorch"]
    return _Card(
        name=str(name),
        description=str(description or f"m-rBCR image restoration model {name}."),
        authors=_author_list(authors, "author"),
        cite=method + citations,
        license=license or meta.get("init_license") or "CC-BY-4.0",
        tags=list(dict.fromkeys(base_tags + list(tags or ()))),
        builtin=builtin,
    )


def _percentiles(model: MRBCR) -> tuple[float, float]:
    settings = getattr(model, "metadata", {}).get("normalization")
    percentiles = percentiles_of(settings)
    if percentiles is None:
        raise ExportError(
            f"the model expects {dict(settings)['method']!r} normalisation, which a BioImage "
            "Model Zoo package cannot express per image; only percentile (or min/max) "
            "normalisation can be exported"
        )
    return percentiles


def _test_tensors(model: MRBCR, pmin: float, pmax: float) -> tuple[np.ndarray, np.ndarray]:
    """A centre crop of the bundled sample (raw units) and the model's output for it."""
    import tifffile

    from debcr.samples import sample_path

    image = tifffile.imread(sample_path("nuclei_noisy")).astype(np.float32)
    y0, x0 = (image.shape[0] - _TEST_SIZE) // 2, (image.shape[1] - _TEST_SIZE) // 2
    raw = image[y0 : y0 + _TEST_SIZE, x0 : x0 + _TEST_SIZE][None, None]
    norm = normalize(raw[0, 0], pmin=pmin, pmax=pmax, clip=False, dtype=np.float32)
    with torch.inference_mode():
        out = model(torch.from_numpy(norm[None, None].copy())).numpy()
    return np.ascontiguousarray(raw), np.ascontiguousarray(out)


def _cover(raw: np.ndarray, out: np.ndarray, pmin: float, pmax: float) -> bytes:
    """Input | restored, side by side (2:1), both shown over the input's percentile range."""
    from PIL import Image

    shown = normalize(raw[0, 0], pmin=pmin, pmax=pmax, dtype=np.float32)
    panels = np.concatenate([shown, np.clip(out[0, 0], 0, 1)], axis=1)
    image = Image.fromarray((panels * 255 + 0.5).astype(np.uint8))
    image = image.resize((2 * _COVER_SIZE, _COVER_SIZE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _documentation(
    card: _Card, pmin: float, pmax: float, halo: int, min_size: int, diffs: dict[str, float]
) -> str:
    cites = "\n".join(f"- {c['text']} {c.get('doi') or c.get('url')}" for c in card.cite)
    return f"""# {card.name}

{card.description}

An m-rBCR network (DeBCR, 236,630 parameters) that restores single-channel 2-D fluorescence
images. Exported by debcr {__version__} (the PyTorch implementation of DeBCR, distributed as
`debcr-torch`).

## Input
A batch of single-channel 2-D images, axes `(batch, channel, y, x)`, height and width
multiples of {SIZE_MULTIPLE} and at least {min_size}. Slices of a 3-D stack go along the batch
axis. Pre-processing (in this package): `scale_range` per image with percentiles
{pmin:g} and {pmax:g}, i.e. `(x - p{pmin:g}) / (p{pmax:g} - p{pmin:g})`.

## Output
The restored image in the same normalised units (about 0 to 1). To bring it back to the input's
units, undo the normalisation: `restored = output * (p{pmax:g} - p{pmin:g}) + p{pmin:g}`, with the
percentiles of the input image. (debcr itself can also calibrate the output to the input's
intensities; BioImage Model Zoo post-processing cannot express that, so this package leaves the
output normalised.)

## Tiling
Each output pixel depends on the input within {halo} pixels (the halo declared on the output):
when predicting in tiles, overlap them by at least that and crop {halo} pixels from each tile
border.

## Weights
`pytorch_state_dict` (architecture `{ARCHITECTURE_FILE}`, class `{ARCHITECTURE_CALLABLE}`, needs
only torch), `torchscript` and `onnx` (opset {ONNX_OPSET}), converted from the first.

## Licence and citation
Weights licensed {card.license}. Please cite:
{cites}

# Validation
Before this package was written, debcr checked that the TorchScript and ONNX weights reproduce
the PyTorch model on the bundled sample image (max |Δ|: TorchScript
{diffs["torchscript"]:.1e}, ONNX {diffs["onnx"]:.1e}, allowed {TOLERANCE:g}) and ran
`bioimageio.core`'s model test on all three weight formats on CPU; a package is only written if
every test passes. Reproduce with `bioimageio test <package>.zip`.
"""


def _file_entry(folder: Path, name: str) -> dict[str, str]:
    return {"source": name, "sha256": _sha256((folder / name).read_bytes())}


def _rdf(
    folder: Path, card: _Card, model: MRBCR, pmin: float, pmax: float, halo: int, min_size: int
) -> dict[str, Any]:
    meta = getattr(model, "metadata", {})
    space = {"min": min_size, "step": SIZE_MULTIPLE}
    attachments = [_file_entry(folder, "debcr_model.json")]
    if (folder / "training_config.yaml").exists():
        attachments.append(_file_entry(folder, "training_config.yaml"))
    return {
        "type": "model",
        "format_version": "0.5.4",
        "name": card.name,
        "description": card.description,
        "authors": card.authors,
        "cite": card.cite,
        "license": card.license,
        "tags": card.tags,
        "documentation": "README.md",
        "covers": ["cover.png"],
        "attachments": attachments,
        "git_repo": "https://github.com/leeroyhannover/DeBCR",
        "inputs": [
            {
                "id": "input",
                "description": "single-channel 2-D image(s) in the microscope's units",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["intensity"]},
                    {"type": "space", "id": "y", "size": space},
                    {"type": "space", "id": "x", "size": space},
                ],
                "test_tensor": _file_entry(folder, "test_input.npy"),
                "data": {"type": "float32"},
                "preprocessing": [
                    {
                        "id": "scale_range",
                        "kwargs": {
                            "axes": ["channel", "y", "x"],
                            "min_percentile": pmin,
                            "max_percentile": pmax,
                            "eps": 1e-16,
                        },
                    }
                ],
            }
        ],
        "outputs": [
            {
                "id": "output",
                "description": "the restored image, in the input's normalised units",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["restored"]},
                    {
                        "type": "space",
                        "id": "y",
                        "halo": halo,
                        "size": {"tensor_id": "input", "axis_id": "y"},
                    },
                    {
                        "type": "space",
                        "id": "x",
                        "halo": halo,
                        "size": {"tensor_id": "input", "axis_id": "x"},
                    },
                ],
                "test_tensor": _file_entry(folder, "test_output.npy"),
                "data": {"type": "float32"},
            }
        ],
        "weights": {
            "pytorch_state_dict": {
                **_file_entry(folder, "weights.pt"),
                "architecture": {
                    **_file_entry(folder, ARCHITECTURE_FILE),
                    "callable": ARCHITECTURE_CALLABLE,
                    "kwargs": {},
                },
                "pytorch_version": torch.__version__.split("+")[0],
            },
            "torchscript": {
                **_file_entry(folder, "weights_torchscript.pt"),
                "pytorch_version": torch.__version__.split("+")[0],
                "parent": "pytorch_state_dict",
            },
            "onnx": {
                **_file_entry(folder, "weights.onnx"),
                "opset_version": ONNX_OPSET,
                "parent": "pytorch_state_dict",
            },
        },
        "config": {
            "debcr": {
                "version": __version__,
                "task": meta.get("task", ""),
                "normalization": {"method": "percentile", "pmin": pmin, "pmax": pmax},
                "halo": halo,
            }
        },
    }


def _write_files(folder: Path, model: MRBCR, card: _Card) -> tuple[dict, dict[str, float]]:
    net = restorer(model)
    pmin, pmax = _percentiles(net)
    halo = effective_halo(model)
    min_size = 2 * halo + SIZE_MULTIPLE
    check = check_image(net)
    with torch.inference_mode():
        expected = net(torch.from_numpy(check)).numpy()
    (folder / ARCHITECTURE_FILE).write_text(architecture_source(), encoding="utf-8")
    torch.save(net.state_dict(), folder / "weights.pt")
    write_torchscript(net, folder / "weights_torchscript.pt")
    write_onnx(net, folder / "weights.onnx")
    outputs = {
        "torchscript": run_torchscript(folder / "weights_torchscript.pt", check),
        "onnx": run_onnx(folder / "weights.onnx", check),
    }
    diffs = {k: float(np.max(np.abs(v - expected))) for k, v in outputs.items()}
    bad = {k: v for k, v in diffs.items() if not v <= TOLERANCE}
    if bad:
        raise ExportError(f"exported weights differ from PyTorch by {bad} (allowed {TOLERANCE:g})")
    raw, out = _test_tensors(net, pmin, pmax)
    np.save(folder / "test_input.npy", raw)
    np.save(folder / "test_output.npy", out)
    (folder / "cover.png").write_bytes(_cover(raw, out, pmin, pmax))
    (folder / "README.md").write_text(
        _documentation(card, pmin, pmax, halo, min_size, diffs), encoding="utf-8"
    )
    meta = dict(getattr(model, "metadata", {}))
    config = meta.pop("config", None)
    (folder / "debcr_model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    if config:
        (folder / "training_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rdf = _rdf(folder, card, model, pmin, pmax, halo, min_size)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False), encoding="utf-8")
    return rdf, diffs


def _validate(core: Any, spec: Any, rdf_path: Path) -> tuple[Any, Any]:
    """Static validation and ``bioimageio.core``'s model test; raise unless both pass."""
    descr = spec.load_model_description(rdf_path, perform_io_checks=True)
    summary = getattr(descr, "validation_summary", None)
    if not isinstance(descr, spec.ModelDescr):
        raise ExportError(f"the package description is invalid:\n{_failures(summary)}")
    summary = core.test_model(descr, devices=["cpu"])
    if summary.status != "passed":
        raise ExportError(
            f"bioimageio.core's model test {summary.status}; the package was not written:\n"
            f"{_failures(summary)}"
        )
    return descr, summary


def _failures(summary: Any) -> str:
    lines = []
    for detail in getattr(summary, "details", None) or ():
        if detail.status == "passed":
            continue
        errors = "; ".join(str(e.msg) for e in detail.errors[:3]) or detail.status
        lines.append(f"- {detail.name}: {errors}")
    return "\n".join(lines[:10]) or str(summary)


def export_bmz(
    model: MRBCR,
    path: str | os.PathLike,
    *,
    name: str | None = None,
    description: str | None = None,
    authors: Any = None,
    cite: Any = None,
    license: str | None = None,
    tags: Sequence[str] | None = None,
    overwrite: bool = False,
) -> BMZExport:
    """Write ``model`` as a BioImage Model Zoo package (spec 0.5), validated before it is written.

    Parameters
    ----------
    model
        The m-rBCR network (trained, loaded or built-in).
    path
        The ``.zip`` to write (atomically).
    name, description
        Shown in the Zoo and in deepImageJ/ilastik. Built-in models have defaults.
    authors
        Names (``"Ada Lovelace"``) or dicts with ``name`` and optionally ``affiliation``,
        ``email``, ``orcid``, ``github_user``. Built-in models: the original authors.
    cite
        Extra citations (dicts with ``text`` and ``doi`` or ``url``); the method's papers (and
        for built-in models the published weights) are always cited.
    license
        SPDX identifier of the weights' licence; default ``CC-BY-4.0`` (the built-in models'
        licence).
    tags
        Extra tags (the architecture, task and modality are always tagged).
    overwrite
        Replace an existing file.

    Returns
    -------
    BMZExport
        The path, size and the Zoo test's results.

    Raises
    ------
    ExportError
        ``bioimageio.core`` is missing (install ``debcr-torch[export]``), required fields are
        missing, or the package fails the Zoo's model test (nothing is written then).
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.suffix.lower() != ".zip":
        raise ExportError(f"a BioImage Model Zoo package is a .zip file; got {path.name!r}")
    core, spec = _require_bioimageio()
    card = _card(model, name, description, authors, cite, license, tags)
    with (
        tempfile.TemporaryDirectory(prefix="debcr-bmz-") as tmp,
        atomic_output(path, overwrite=overwrite) as target,
    ):
        folder = Path(tmp)
        _, diffs = _write_files(folder, model, card)
        descr, summary = _validate(core, spec, folder / "rdf.yaml")
        spec.save_bioimageio_package(descr, output_path=target)
        size = target.stat().st_size
    checks = tuple((d.name, d.status) for d in summary.details)
    result = BMZExport(path, size, summary.status, checks, diffs, core.__version__)
    logger.debug("%s", result)
    return result


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
        if expected and _sha256(data) != expected:
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


def _known_architectures() -> frozenset[str]:
    return KNOWN_ARCHITECTURE_SHA256 | {_sha256(architecture_source().encode("utf-8"))}


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
    if _sha256(source) not in _known_architectures():
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
