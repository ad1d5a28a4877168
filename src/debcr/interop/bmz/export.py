"""Writing a package: its description (rdf), its files, and the Zoo's checks before it is kept.

The description is built and checked against the Zoo's specification (``bioimageio.spec``, no
file read) before any file is written, so a wrong card fails in a second, not after the
conversions. The files are then written to a scratch folder, the description gets their sha256
and ``bioimageio.core``'s model test runs on every weight format; only a package that passes is
written to its ``.zip``, and the warnings of that test are kept (`BMZExport.warnings`).

The input declares reflect padding, as debcr pads at the image border, so that
``bioimageio.core``'s tiled prediction equals debcr's over the whole image, borders included.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from debcr._version import __version__
from debcr.data.normalize import normalize, percentiles_of
from debcr.defaults import SIZE_MULTIPLE
from debcr.errors import ExportError
from debcr.files import atomic_output, check_space, output_errors
from debcr.interop.bmz.architecture import (
    ARCHITECTURE_CALLABLE,
    ARCHITECTURE_FILE,
    architecture_source,
    file_sha256,
)
from debcr.interop.bmz.card import ModelCard, cover_png, model_card, readme
from debcr.interop.portable import (
    ONNX_OPSET,
    TOLERANCE,
    check_image,
    missing_extra,
    restorer,
    run_onnx,
    run_torchscript,
    write_onnx,
    write_torchscript,
)
from debcr.nn import MRBCR, effective_halo
from debcr.samples import sample_path

__all__ = [
    "BMZExport",
    "TensorSettings",
    "check_description",
    "export_bmz",
    "package_description",
    "tensor_settings",
]

logger = logging.getLogger(__name__)

_TEST_SIZE = 256
#: The sample input and output (TIFF: the Zoo's sample tensors must be readable by imageio).
SAMPLE_INPUT, SAMPLE_OUTPUT = "sample_input.tif", "sample_output.tif"
#: Severity of bioimageio's notes (such as how closely a test output was matched): not warnings.
_INFO = 20


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
    warnings
        The warnings of the Zoo's validation and model test (``"where: what"``): a package
        that passes may still miss what the Zoo recommends.
    """

    path: Path
    size_bytes: int
    status: str
    checks: tuple[tuple[str, str], ...]
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    bioimageio_core: str = ""
    warnings: tuple[str, ...] = ()

    def __str__(self) -> str:
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in self.max_abs_diff.items())
        passed = sum(status == "passed" for _, status in self.checks)
        warned = f", {len(self.warnings)} warnings" if self.warnings else ", no warnings"
        text = (
            f"BioImage Model Zoo package written to {self.path} ({self.size_bytes / 1e6:.1f} MB); "
            f"bioimageio.core {self.bioimageio_core} model test {self.status} "
            f"({passed}/{len(self.checks)} checks passed{warned}); max |Δ| to PyTorch: {diffs}"
        )
        return "\n".join([text, *(f"warning: {warning}" for warning in self.warnings)])


@dataclass(frozen=True)
class TensorSettings:
    """How a package normalises its input and how far its output looks.

    Attributes
    ----------
    pmin, pmax
        Percentiles of the input's ``scale_range`` pre-processing.
    halo
        Pixels each output pixel depends on around it (the model's measured receptive field).
    """

    pmin: float
    pmax: float
    halo: int

    @property
    def min_size(self) -> int:
        """The smallest input height and width: the halo on both sides and one step."""
        return 2 * self.halo + SIZE_MULTIPLE


def tensor_settings(model: MRBCR) -> TensorSettings:
    """The percentiles and halo of ``model``'s package.

    Raises
    ------
    ExportError
        The model's normalisation is not by percentiles (nor min/max), which a package
        cannot express.
    """
    settings = getattr(model, "metadata", {}).get("normalization")
    percentiles = percentiles_of(settings)
    if percentiles is None:
        raise ExportError(
            f"the model expects {dict(settings)['method']!r} normalisation, which a BioImage "
            "Model Zoo package cannot express per image; only percentile (or min/max) "
            "normalisation can be exported"
        )
    return TensorSettings(*percentiles, halo=effective_halo(model))


def _require_bioimageio() -> tuple[Any, Any]:
    try:
        import bioimageio.core as core
        import bioimageio.spec as spec
    except ImportError as exc:
        raise ExportError(missing_extra("BioImage Model Zoo export", exc.name)) from exc
    return core, spec


def project_repository() -> str | None:
    """The URL of debcr's own repository, from its installed metadata (``[project.urls]``).

    The package's architecture file is debcr's code, so its ``git_repo`` is debcr's; without a
    repository in the metadata the package names none (the original TensorFlow code is cited).
    """
    try:
        urls = importlib.metadata.metadata("debcr-torch").get_all("Project-URL") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip().lower() in {"repository", "source", "source code"}:
            return url.strip()
    return None


def package_description(
    card: ModelCard,
    tensors: TensorSettings,
    metadata: Mapping[str, Any],
    hashes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The package's ``rdf.yaml`` (spec 0.5) as a dict.

    Parameters
    ----------
    card
        What the package says about the model.
    tensors
        Its input normalisation and output halo.
    metadata
        The model's metadata (its task; its training configuration, attached when present).
    hashes
        sha256 of every file by name, once the files are written; without them the files are
        named without hashes (a description to check before writing).

    Returns
    -------
    dict
        In the order the ``rdf.yaml`` is written.
    """

    def file(name: str) -> dict[str, str]:
        return {"source": name, **({"sha256": hashes[name]} if hashes is not None else {})}

    space = {"min": tensors.min_size, "step": SIZE_MULTIPLE}
    attachments = [file("debcr_model.json")]
    if metadata.get("config"):
        attachments.append(file("training_config.yaml"))
    people = {"packaged_by": card.packaged_by, "maintainers": card.maintainers}
    repository = project_repository()
    return {
        "type": "model",
        "format_version": "0.5.4",
        "name": card.name,
        "description": card.description,
        "authors": card.authors,
        **{key: value for key, value in people.items() if value},
        "cite": card.cite,
        "license": card.license,
        "tags": card.tags,
        "documentation": "README.md",
        "covers": ["cover.png"],
        "attachments": attachments,
        **({"git_repo": repository} if repository else {}),
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
                "test_tensor": file("test_input.npy"),
                "sample_tensor": file(SAMPLE_INPUT),
                "data": {"type": "float32"},
                # debcr mirrors the image at its border; the Zoo's default would repeat the
                # border pixel too (symmetric) and change the outermost pixels' restoration.
                "pad": {"mode": "reflect"},
                "preprocessing": [
                    {
                        "id": "scale_range",
                        "kwargs": {
                            "axes": ["channel", "y", "x"],
                            "min_percentile": tensors.pmin,
                            "max_percentile": tensors.pmax,
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
                        "halo": tensors.halo,
                        "size": {"tensor_id": "input", "axis_id": "y"},
                    },
                    {
                        "type": "space",
                        "id": "x",
                        "halo": tensors.halo,
                        "size": {"tensor_id": "input", "axis_id": "x"},
                    },
                ],
                "test_tensor": file("test_output.npy"),
                "sample_tensor": file(SAMPLE_OUTPUT),
                "data": {"type": "float32"},
            }
        ],
        "weights": {
            "pytorch_state_dict": {
                **file("weights.pt"),
                "architecture": {
                    **file(ARCHITECTURE_FILE),
                    "callable": ARCHITECTURE_CALLABLE,
                    "kwargs": {},
                },
                "pytorch_version": torch.__version__.split("+")[0],
            },
            "torchscript": {
                **file("weights_torchscript.pt"),
                "pytorch_version": torch.__version__.split("+")[0],
                "parent": "pytorch_state_dict",
            },
            "onnx": {
                **file("weights.onnx"),
                "opset_version": ONNX_OPSET,
                "parent": "pytorch_state_dict",
            },
        },
        "config": {
            "debcr": {
                "version": __version__,
                "task": metadata.get("task", ""),
                "normalization": {
                    "method": "percentile",
                    "pmin": tensors.pmin,
                    "pmax": tensors.pmax,
                },
                "halo": tensors.halo,
            }
        },
    }


def check_description(rdf: Mapping[str, Any]) -> None:
    """Check a package description against the Zoo's specification, reading no file.

    Raises
    ------
    ExportError
        ``bioimageio.spec`` is missing, or the description is invalid (the message lists why).
    """
    _, spec = _require_bioimageio()
    descr = spec.build_description(
        dict(rdf), context=spec.ValidationContext(perform_io_checks=False)
    )
    if not isinstance(descr, spec.ModelDescr):
        raise ExportError(
            f"the package description is invalid:\n{_failures(descr.validation_summary)}"
        )


def _test_tensors(model: MRBCR, pmin: float, pmax: float) -> tuple[np.ndarray, np.ndarray]:
    """A centre crop of the bundled sample (raw units) and the model's output for it."""
    import tifffile

    image = tifffile.imread(sample_path("nuclei_noisy")).astype(np.float32)
    y0, x0 = (image.shape[0] - _TEST_SIZE) // 2, (image.shape[1] - _TEST_SIZE) // 2
    raw = image[y0 : y0 + _TEST_SIZE, x0 : x0 + _TEST_SIZE][None, None]
    norm = normalize(raw[0, 0], pmin=pmin, pmax=pmax, clip=False, dtype=np.float32)
    with torch.inference_mode():
        out = model(torch.from_numpy(norm[None, None].copy())).numpy()
    return np.ascontiguousarray(raw), np.ascontiguousarray(out)


def _write_files(
    folder: Path, model: MRBCR, card: ModelCard, tensors: TensorSettings
) -> dict[str, float]:
    """Write every file of the package and its ``rdf.yaml``; the weights' |Δ| to PyTorch."""
    import tifffile

    net = restorer(model)
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
    raw, out = _test_tensors(net, tensors.pmin, tensors.pmax)
    np.save(folder / "test_input.npy", raw)
    np.save(folder / "test_output.npy", out)
    tifffile.imwrite(folder / SAMPLE_INPUT, raw[0, 0])
    tifffile.imwrite(folder / SAMPLE_OUTPUT, out[0, 0])
    (folder / "cover.png").write_bytes(cover_png(raw, out, tensors.pmin, tensors.pmax))
    (folder / "README.md").write_text(
        readme(card, tensors.pmin, tensors.pmax, tensors.halo, tensors.min_size, diffs),
        encoding="utf-8",
    )
    meta = dict(getattr(model, "metadata", {}))
    config = meta.pop("config", None)
    (folder / "debcr_model.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    if config:
        (folder / "training_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    hashes = {file.name: file_sha256(file.read_bytes()) for file in folder.iterdir()}
    rdf = package_description(card, tensors, getattr(model, "metadata", {}), hashes)
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False), encoding="utf-8")
    return diffs


def _space_needed(model: MRBCR) -> int:
    """Bytes the package's files take in the temporary folder, with room to spare.

    Three copies of the weights (state dict, TorchScript, ONNX), a fourth for what the Zoo's
    model test writes, and 4 MiB for the test tensors, cover, README and description.
    """
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return 4 * weights + 4 * 2**20


@contextlib.contextmanager
def _temporary_folder(space: int) -> Iterator[Path]:
    """A temporary folder (under TMPDIR) with ``space`` bytes free, deleted afterwards.

    A full or read-only temporary folder is one `OutputError` naming it,
    before any file of the package is written.
    """
    root = Path(tempfile.gettempdir())
    with output_errors(root, advice=_TEMP_ADVICE):
        holder = tempfile.TemporaryDirectory(prefix="debcr-bmz-")
    with holder as tmp:
        with output_errors(root, advice=_TEMP_ADVICE):
            check_space(Path(tmp), space)
        yield Path(tmp)


#: What to do when the temporary folder has no room for the package's files.
_TEMP_ADVICE = (
    "it is the temporary folder the package is put together in: set TMPDIR to a writable "
    "folder with room (or free some space there)"
)


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


def _warnings(summary: Any) -> tuple[str, ...]:
    """The warnings (not the notes) of a validation summary, each once: ``"where: what"``."""
    found = []
    for detail in getattr(summary, "details", None) or ():
        for warning in detail.warnings:
            if warning.severity > _INFO:
                where = ".".join(map(str, warning.loc)) or detail.name
                found.append(f"{where}: {' '.join(str(warning.msg).split())}")
    return tuple(dict.fromkeys(found))


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
        ``email``, ``orcid``, ``github_user``. A built-in model keeps its published authors:
        those given are listed as having packaged it (``packaged_by``; with a ``github_user``
        also as ``maintainers``).
    cite
        Extra citations (dicts with ``text`` and ``doi`` or ``url``); the method's papers (and
        for built-in models the published weights, for self-supervised models the papers of
        their training mode) are always cited.
    license
        SPDX identifier of the weights' licence; default ``CC-BY-4.0`` (the built-in models'
        licence).
    tags
        Extra tags (the architecture, task, modality and training mode are always tagged).
    overwrite
        Replace an existing file.

    Returns
    -------
    BMZExport
        The path, size, the Zoo test's results and its warnings.

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
    card = model_card(
        model,
        name=name,
        description=description,
        authors=authors,
        cite=cite,
        license=license,
        tags=tags,
    )
    tensors = tensor_settings(model)
    check_description(package_description(card, tensors, getattr(model, "metadata", {})))
    with (
        _temporary_folder(_space_needed(model)) as folder,
        atomic_output(path, overwrite=overwrite) as target,
    ):
        diffs = _write_files(folder, model, card, tensors)
        descr, summary = _validate(core, spec, folder / "rdf.yaml")
        spec.save_bioimageio_package(descr, output_path=target)
        size = target.stat().st_size
    checks = tuple((d.name, d.status) for d in summary.details)
    result = BMZExport(
        path, size, summary.status, checks, diffs, core.__version__, _warnings(summary)
    )
    logger.debug("%s", result)
    return result
