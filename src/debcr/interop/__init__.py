"""Models in other tools' formats.

Today: reading checkpoints of the original TensorFlow DeBCR (:mod:`debcr.interop.tf_checkpoint`,
built on :mod:`~debcr.interop.tf_bundle` and :mod:`~debcr.interop.keras_layout`), without
TensorFlow. Exports to other formats belong here too.
"""

from debcr.interop.tf_bundle import list_bundle, read_bundle
from debcr.interop.tf_checkpoint import (
    convert_tf_checkpoint,
    model_from_tf_checkpoint,
    read_tf_checkpoint,
)

__all__ = [
    "convert_tf_checkpoint",
    "list_bundle",
    "model_from_tf_checkpoint",
    "read_bundle",
    "read_tf_checkpoint",
]
