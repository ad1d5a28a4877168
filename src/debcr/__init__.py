"""debcr: restore fluorescence microscopy images with m-rBCR in PyTorch.

``import debcr`` is light: ``debcr.data`` and ``debcr.config`` use numpy only, and
``debcr.model`` is imported on first access (torch only once a network is built: restoring
with OpenVINO from a model's name or file does without it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from debcr._version import __version__

__all__ = ["__version__", "config", "data", "model"]

if TYPE_CHECKING:
    from debcr import config, data, model


def __getattr__(name: str):
    if name in {"config", "data", "evaluate", "interop", "metrics", "model", "samples", "training"}:
        return importlib.import_module(f"debcr.{name}")
    raise AttributeError(f"module 'debcr' has no attribute {name!r}")
