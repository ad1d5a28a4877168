"""What a package says about its model: name, authors, citations, tags, README and cover.

The method's papers and its original code are cited by every package, the published weights by
the packages of the built-in models (and of models fine-tuned from them), and the papers of the
training mode (`debcr.modes.MODES`) by a model trained with it; the mode's tags join the
card's. A built-in model's package keeps the published authors: whoever exports it is listed as
having packaged it (and as a maintainer with a GitHub user name), never in place of the authors.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from debcr._version import __version__
from debcr.data.normalize import normalize
from debcr.defaults import SIZE_MULTIPLE
from debcr.errors import ExportError
from debcr.interop.bmz.architecture import ARCHITECTURE_CALLABLE, ARCHITECTURE_FILE
from debcr.interop.portable import ONNX_IR_VERSION, ONNX_OPSET, TOLERANCE
from debcr.modes import MODES
from debcr.nn import MRBCR
from debcr.weights import PRETRAINED

__all__ = [
    "METHOD_CITE",
    "ORIGINAL_AUTHORS",
    "WEIGHTS_CITE",
    "ModelCard",
    "cover_png",
    "model_card",
    "readme",
]

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
#: The method's papers and its original code (the architecture of every package is a port of
#: it), cited by every package.
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
    {
        "text": "DeBCR: the original TensorFlow implementation (MIT licence), from which the "
        "m-rBCR architecture of this package was ported to PyTorch by debcr.",
        "url": "https://github.com/leeroyhannover/DeBCR",
    },
)
#: The published weights (cited by the packages of the built-in models).
WEIGHTS_CITE: dict[str, str] = {
    "text": "DeBCR sample data and pretrained weights (Zenodo).",
    "doi": "10.5281/zenodo.12626121",
}

_ORIGINAL_SOURCE = "github.com/leeroyhannover/DeBCR"
_COVER_SIZE = 256


@dataclass(frozen=True)
class ModelCard:
    """What a package says about its model (the parts a user may choose, completed).

    Attributes
    ----------
    name, description
        Shown in the Zoo and in deepImageJ/ilastik.
    authors
        Dicts with ``name`` (and optionally ``affiliation``, ``email``…): for a built-in model
        the published authors.
    packaged_by
        Who exported a built-in model (the ``authors`` asked for, less the published ones).
    maintainers
        Those of ``packaged_by`` with a ``github_user`` (the Zoo's maintainers need one).
    cite
        Dicts with ``text`` and ``doi`` or ``url``: the method's papers first.
    license
        SPDX identifier of the weights' licence.
    tags
        The architecture, task, modality and training mode tags, then the user's.
    builtin
        The model is one of the published ones.
    """

    name: str
    description: str
    authors: list[dict[str, str]]
    packaged_by: list[dict[str, str]]
    maintainers: list[dict[str, str]]
    cite: list[dict[str, str]]
    license: str
    tags: list[str]
    builtin: bool


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


def model_card(
    model: MRBCR,
    *,
    name: str | None = None,
    description: str | None = None,
    authors: Any = None,
    cite: Any = None,
    license: str | None = None,
    tags: Sequence[str] | None = None,
) -> ModelCard:
    """Complete the card of ``model`` from what the user chose and what its metadata tells.

    Parameters
    ----------
    model
        The network; ``model.metadata`` tells whether it is built in (or fine-tuned from a
        built-in one), its task and its training mode.
    name, description, authors, cite, license, tags
        As `export_bmz` takes them.

    Returns
    -------
    ModelCard
        Built-in models get their name, description and licence by default and always keep
        their published authors; ``authors`` given for one are listed as ``packaged_by``.

    Raises
    ------
    ExportError
        No name or no authors (for a model that is not built in), an author without a name, or
        a citation without ``doi`` or ``url``.
    """
    meta = getattr(model, "metadata", {})
    builtin = meta.get("name") in PRETRAINED and str(meta.get("source", "")).startswith(
        _ORIGINAL_SOURCE
    )
    packaged_by: list[dict[str, str]] = []
    if builtin:
        name = name or f"DeBCR {meta['name']} (m-rBCR)"
        description = description or (
            f"m-rBCR (DeBCR) model for {meta.get('description', '')}: the published weights, "
            "converted to PyTorch by debcr without changing any value."
        )
        # The weights are the published authors' (CC BY): who exports them packages them.
        published = {author["name"] for author in ORIGINAL_AUTHORS}
        packaged_by = [
            entry for entry in _author_list(authors, "author") if entry["name"] not in published
        ]
        authors = list(ORIGINAL_AUTHORS)
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
    derived = str(meta.get("init_source", "")).startswith(_ORIGINAL_SOURCE)
    method = list(METHOD_CITE) + ([WEIGHTS_CITE] if builtin or derived else [])
    # A mode this version does not know (a model file of a newer debcr) adds nothing.
    mode = MODES.get(str(meta.get("mode", "")))
    mode_cite = [dict(c) for c in mode.citations] if mode else []
    mode_tags = list(mode.tags) if mode else []
    task = str(meta.get("task") or "")
    kind = "super-resolution" if task.endswith("_SR") else "denoising"
    base_tags = ["m-rBCR", "DeBCR", "debcr", kind, "fluorescence-light-microscopy", "2d", "pytorch"]
    return ModelCard(
        name=str(name),
        description=str(description or f"m-rBCR image restoration model {name}."),
        authors=_author_list(authors, "author"),
        packaged_by=packaged_by,
        maintainers=[entry for entry in packaged_by if entry.get("github_user")],
        cite=method + mode_cite + citations,
        license=license or meta.get("init_license") or "CC-BY-4.0",
        tags=list(dict.fromkeys(base_tags + mode_tags + list(tags or ()))),
        builtin=builtin,
    )


def cover_png(raw: np.ndarray, out: np.ndarray, pmin: float, pmax: float) -> bytes:
    """Input | restored, side by side (2:1), both shown over the input's percentile range.

    Parameters
    ----------
    raw
        The test input ``(1, 1, H, W)`` in the microscope's units.
    out
        The model's output for it ``(1, 1, H, W)``, normalised.
    pmin, pmax
        The percentiles the input is normalised with.

    Returns
    -------
    bytes
        A PNG of ``2 × 256`` by ``256`` pixels.
    """
    from PIL import Image

    shown = normalize(raw[0, 0], pmin=pmin, pmax=pmax, dtype=np.float32)
    panels = np.concatenate([shown, np.clip(out[0, 0], 0, 1)], axis=1)
    image = Image.fromarray((panels * 255 + 0.5).astype(np.uint8))
    image = image.resize((2 * _COVER_SIZE, _COVER_SIZE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def readme(
    card: ModelCard, pmin: float, pmax: float, halo: int, min_size: int, diffs: dict[str, float]
) -> str:
    """The package's README: input, output, tiling, weights, licence, citations and checks.

    Parameters
    ----------
    card
        The model's card.
    pmin, pmax
        The percentiles of the package's ``scale_range`` pre-processing.
    halo
        The output's halo (pixels).
    min_size
        The smallest input height and width.
    diffs
        Largest |Δ| of the ``torchscript`` and ``onnx`` weights to PyTorch.

    Returns
    -------
    str
        Markdown.
    """
    cites = "\n".join(f"- {c['text']} {c.get('doi') or c.get('url')}" for c in card.cite)
    names = ", ".join(person["name"] for person in card.packaged_by)
    packaged = f"; packaged by {names}" if names else ""
    return f"""# {card.name}

{card.description}

An m-rBCR network (DeBCR, 236,630 parameters) that restores single-channel 2-D fluorescence
images. Exported by debcr {__version__} (the PyTorch implementation of DeBCR, distributed as
`debcr-torch`){packaged}.

## Input
A batch of single-channel 2-D images, axes `(batch, channel, y, x)`, height and width
multiples of {SIZE_MULTIPLE} and at least {min_size}. Slices of a 3-D stack go along the batch
axis. Pre-processing (in this package): `scale_range` per image with percentiles
{pmin:g} and {pmax:g}, i.e. `(x - p{pmin:g}) / (p{pmax:g} - p{pmin:g})`.

## Output
The restored image in the same normalised units (about 0 to 1). To bring it back to the input's
units, undo the normalisation: `restored = output * (p{pmax:g} - p{pmin:g}) + p{pmin:g}`, with the
percentiles of the input image. That inverse is not debcr's result: debcr maps the output
through a monotone curve fitted to the input, which keeps the input's mean and scores higher
(on FMD confocal images 36.6 dB against 30.6 dB for the inverse). BioImage Model Zoo
post-processing cannot express that curve, so this package leaves the output normalised; to get
debcr's units, run the package with debcr (`debcr predict image.tif -o out.tif --model
package.zip`) or call `debcr.data.calibration.calibrate_output(image, output)`.

## Tiling and the image border
Each output pixel depends on the input within {halo} pixels (the halo declared on the output):
when predicting in tiles, overlap them by at least that and crop {halo} pixels from each tile
border. At the image border, mirror the image (reflect padding, declared on the input), as
debcr does: `bioimageio.core`'s tiled prediction then equals debcr's, borders included.

## Weights
`pytorch_state_dict` (architecture `{ARCHITECTURE_FILE}`, class `{ARCHITECTURE_CALLABLE}`, needs
only torch), `torchscript` and `onnx` (opset {ONNX_OPSET}, IR version {ONNX_IR_VERSION}: ONNX
Runtime 1.14 and later load it), converted from the first.

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
