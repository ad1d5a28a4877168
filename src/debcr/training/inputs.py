"""What an interactive run trains on: NPZ sets or in-memory data, with a held-out validation.

The napari plugin trains on NPZ files of ``debcr prepare`` or on the data of its layers; this
module turns either into the training and validation arrays of the configured mode (with
the mode's layer builder, `debcr.modes.ModeSpec.layer_sets`), holding out a tenth of
the training data when no validation data is chosen.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from debcr.config import TrainConfig
from debcr.data.io import load
from debcr.errors import DataError
from debcr.modes import mode_spec
from debcr.training.modes import check_data_mode, mode_for

__all__ = ["HOLD_OUT", "hold_out", "load_set", "preview_input", "training_sets"]

#: Fraction of the training patches held out for validation when no validation data is chosen.
HOLD_OUT = 0.1


def load_set(path: str | os.PathLike, config: TrainConfig, what: str) -> dict[str, np.ndarray]:
    """The arrays of an NPZ set for the configured mode (refused if prepared for another)."""
    mode = mode_for(config)
    split = load(Path(path))
    check_data_mode(mode, split, f"{what} data")
    return mode.load(split, f"{what} data")


def hold_out(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The last ``HOLD_OUT`` of the patches (at least one) as validation, the rest to train.

    Raises
    ------
    DataError
        If there is a single patch.
    """
    n = len(next(iter(arrays.values())))
    if n < 2:
        raise DataError(
            "there is only 1 training patch and no validation data; choose validation layers "
            "or use larger images"
        )
    k = max(1, round(n * HOLD_OUT))
    return {a: v[: n - k] for a, v in arrays.items()}, {a: v[n - k :] for a, v in arrays.items()}


def training_sets(
    train: Any, val: Any, config: TrainConfig
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], str]:
    """The training and validation arrays of ``config.mode`` and a line saying what they are.

    Parameters
    ----------
    train, val
        NPZ paths or in-memory data: ``(input, target)`` patches for a paired mode
        (supervised), else one layer's data (a noisy image or stack for Noise2Void, a stack
        of repeats for Noise2Noise), normalised and cut here. ``val`` None holds out the last
        tenth of the training layer (or of its patches).
    config
        The configuration; its ``mode`` and ``patch_size`` are used.

    Returns
    -------
    train_set, val_set, note
        The arrays of the two sets, and how validation was chosen ("" when it was given).
    """
    spec = mode_spec(config.mode)
    if isinstance(train, str | Path):
        train_set = load_set(train, config, "training")
    else:
        split = (1.0, 0.0, 0.0) if val is not None else (1 - HOLD_OUT, HOLD_OUT, 0.0)
        sets = spec.layer_sets(train, "training", patch_size=config.patch_size, split=split)
        train_set = sets["train"]
        if val is None and "val" in sets:
            return train_set, sets["val"], "validation: the last tenth of the training layer"
    note = ""
    if val is None:
        train_set, val_set = hold_out(train_set)
        note = "validation: the last tenth of the training patches"
    elif isinstance(val, str | Path):
        val_set = load_set(val, config, "validation")
    else:
        sets = spec.layer_sets(
            val, "validation", patch_size=config.patch_size, split=(1.0, 0.0, 0.0)
        )
        val_set = sets["train"]
    return train_set, val_set, note


def preview_input(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """One 2-D input patch of a set (its first array's first patch), for a live preview."""
    patch = next(iter(arrays.values()))[0]
    while patch.ndim > 2:  # e.g. the first frame of a Noise2Noise location
        patch = patch[0]
    return patch
