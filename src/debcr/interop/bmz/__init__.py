"""BioImage Model Zoo packages of m-rBCR models: export (validated by the Zoo's tools) and import.

A package (spec 0.5, a ``.zip``) holds the weights in three formats that Fiji/deepImageJ,
ilastik, QuPath and ``bioimageio.core`` run: ``pytorch_state_dict`` (the network as one
torch-only source file, `architecture_source`), ``torchscript`` and ``onnx``. The input is
a batch of single-channel 2-D images, normalised by the package's own ``scale_range``
pre-processing with the model's percentiles; the output is the restoration in those normalised
units, with a ``halo`` equal to the model's measured receptive field (see
`debcr.nn.effective_halo`).

`export_bmz` checks the package's description against the Zoo's specification before it
writes a file, runs ``bioimageio.core``'s model test on every weight format before it writes
the package and refuses to write one that fails. `load_bmz` reads a package back (a
``.zip``, a folder or its ``rdf.yaml``) without needing ``bioimageio`` installed, checking every
file against its sha256.

The rooms: `architecture` (the architecture file and its hashes),
`card` (authors, citations, tags, README, cover),
`export` (description, files, validation) and
`load` (reading a package).
"""

from debcr.interop.bmz.architecture import (
    ARCHITECTURE_CALLABLE,
    KNOWN_ARCHITECTURE_SHA256,
    architecture_source,
)
from debcr.interop.bmz.export import BMZExport, export_bmz
from debcr.interop.bmz.load import load_bmz

__all__ = [
    "ARCHITECTURE_CALLABLE",
    "KNOWN_ARCHITECTURE_SHA256",
    "BMZExport",
    "architecture_source",
    "export_bmz",
    "load_bmz",
]
