"""Models in other tools' formats.

Reading checkpoints of the original TensorFlow DeBCR (`debcr.interop.tf_checkpoint`,
built on `tf_bundle` and `keras_layout`), without
TensorFlow; writing BioImage Model Zoo packages (`debcr.interop.bmz`, which also reads
them) and standalone ONNX and TorchScript files (`debcr.interop.portable`), one of which
`export` picks from the file's suffix (`debcr.interop.formats`).
"""

from debcr.interop.formats import EXPORT_SUFFIXES, export, export_format
from debcr.interop.tf_bundle import list_bundle, read_bundle
from debcr.interop.tf_checkpoint import (
    convert_tf_checkpoint,
    model_from_tf_checkpoint,
    read_tf_checkpoint,
)

__all__ = [
    "EXPORT_SUFFIXES",
    "convert_tf_checkpoint",
    "export",
    "export_format",
    "list_bundle",
    "model_from_tf_checkpoint",
    "read_bundle",
    "read_tf_checkpoint",
]
