"""Training modes: how a mode reads its data and builds the batches the network learns from.

A mode is a small strategy object, so a new one (Noise2Noise, Noise2Void) is a new class here,
not string switches through the Lightning module. Today there is one: ``supervised``, which
learns from pairs of low-quality inputs and high-quality targets (``low``/``gt`` patches).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from debcr.defaults import NORMALIZATION
from debcr.errors import ConfigError
from debcr.training.data import PairDataset, load_pairs

__all__ = ["DEFAULT_MODE", "MODES", "Supervised", "TrainingMode", "get_mode", "normalization_of"]


class TrainingMode:
    """What every mode provides to the training run."""

    name: str = ""

    def load(self, source: Any, what: str) -> dict[str, np.ndarray]:
        """Validated float32 arrays of one split (``source``: a dict-like or an NPZ path)."""
        raise NotImplementedError

    def dataset(self, arrays: Mapping[str, np.ndarray]) -> Dataset:
        """The map-style dataset whose items are ``(input, target)`` tensors ``(1, P, P)``."""
        raise NotImplementedError


@dataclass(frozen=True)
class Supervised(TrainingMode):
    """Pairs of inputs and ground truth (``low``/``gt``); the loss sees every pixel."""

    name: str = "supervised"

    def load(self, source: Any, what: str) -> dict[str, np.ndarray]:
        low, gt = load_pairs(source, what)
        return {"low": low, "gt": gt}

    def dataset(self, arrays: Mapping[str, np.ndarray]) -> Dataset:
        return PairDataset(arrays["low"], arrays["gt"])


MODES: dict[str, TrainingMode] = {mode.name: mode for mode in (Supervised(),)}
DEFAULT_MODE = "supervised"


def get_mode(name: str) -> TrainingMode:
    """The training mode called ``name``; the message lists the known ones."""
    try:
        return MODES[name]
    except KeyError:
        raise ConfigError(
            f"unknown training mode {name!r}; choose one of {', '.join(map(repr, MODES))}"
        ) from None


def normalization_of(split: Any) -> dict[str, Any]:
    """The input normalisation a loaded training set records (``debcr prepare``'s ``info``).

    Sets without a record (plain arrays) are taken to use the published models' default.
    """
    info = split.get("info") if isinstance(split, Mapping) else None
    if info is None:
        return dict(NORMALIZATION)
    record = info if isinstance(info, Mapping) else json.loads(str(np.asarray(info)))
    norm = record.get("normalization") or {}
    if norm.get("method") != "percentile":
        return dict(NORMALIZATION)
    return {"method": "percentile", "pmin": float(norm["pmin"]), "pmax": float(norm["pmax"])}
