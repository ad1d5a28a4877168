"""Read checkpoints of the original TensorFlow DeBCR into debcr (no TensorFlow needed).

`read_tf_checkpoint` reads an m-rBCR checkpoint written by debcr 0.1.0
(without TensorFlow) and returns a PyTorch state dict; `convert_tf_checkpoint`
writes it as a debcr model file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from debcr.errors import ModelFileError
from debcr.interop.keras_layout import CHECKPOINT_LAYERS, keras_to_state_dict
from debcr.interop.tf_bundle import read_bundle

__all__ = ["convert_tf_checkpoint", "model_from_tf_checkpoint", "read_tf_checkpoint"]

_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"

logger = logging.getLogger(__name__)


def _split_key(key: str) -> tuple[str, str] | None:
    """``model/.../kernel/.ATTRIBUTES/VARIABLE_VALUE`` → (layer path, ``kernel``)."""
    if not key.endswith(_VALUE_SUFFIX):
        return None
    layer, _, kind = key[: -len(_VALUE_SUFFIX)].rpartition("/")
    return layer, kind


def read_tf_checkpoint(prefix: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an original DeBCR (TensorFlow) m-rBCR checkpoint as a PyTorch state dict.

    Parameters
    ----------
    prefix
        Checkpoint prefix such as ``weights/2D_denoising/ckpt-best`` (the ``.index``
        file, a ``.data-…`` file or a folder holding one checkpoint also work).

    Returns
    -------
    dict
        Parameter name of `debcr.nn.MRBCR` → float32 array, every
        parameter present exactly once.

    Raises
    ------
    ModelFileError
        If the files are missing, corrupt, or do not hold an m-rBCR model
        (missing or mis-shaped variables are listed). Variables that are not the network's
        weights (optimiser slots, step and save counters, wherever they sit) are skipped and
        listed at debug level.
    """
    tensors = read_bundle(prefix)
    layers: dict[str, dict[str, np.ndarray]] = {}
    unexpected: list[str] = []
    for key, value in tensors.items():
        parts = _split_key(key)
        name = CHECKPOINT_LAYERS.get(parts[0]) if parts else None
        if parts is None or name is None or parts[1] not in ("kernel", "bias"):
            # Optimiser slots and step/save counters sit wherever the training loop tracked
            # them (beside the model or under it); only the network's own weights are needed.
            unexpected.append(key)
            continue
        layers.setdefault(name, {})[parts[1]] = value
    missing = sorted(
        f"{name}.{kind}"
        for name in set(CHECKPOINT_LAYERS.values())
        for kind in ("kernel", "bias")
        if kind not in layers.get(name, {})
    )
    if missing:
        raise ModelFileError(_mismatch_message(prefix, unexpected, missing))
    if unexpected:
        logger.debug(
            "%s: skipped %d variables that are not m-rBCR weights: %s",
            prefix,
            len(unexpected),
            ", ".join(sorted(unexpected)),
        )
    state = keras_to_state_dict(layers)
    _check_shapes(prefix, state)
    return {k: v.astype(np.float32, copy=False) for k, v in state.items()}


def _mismatch_message(prefix: Any, unexpected: list[str], missing: list[str]) -> str:
    lines = [f"{prefix} is not a checkpoint of the original DeBCR m-rBCR model."]
    if missing:
        lines.append(f"{len(missing)} model variables are missing, e.g. {', '.join(missing[:3])}.")
    if unexpected:
        lines.append(
            f"{len(unexpected)} variables do not belong to m-rBCR, "
            f"e.g. {', '.join(unexpected[:3])}."
        )
    lines.append(
        "Only checkpoints written by debcr 0.1.0 (tf.train.Checkpoint of the m-rBCR model) "
        "can be converted."
    )
    return " ".join(lines)


def _check_shapes(prefix: Any, state: dict[str, np.ndarray]) -> None:
    from debcr.nn import MRBCR

    expected = {k: tuple(v.shape) for k, v in MRBCR().state_dict().items()}
    wrong = [
        f"{k}: {state[k].shape} instead of {shape}"
        for k, shape in expected.items()
        if tuple(state[k].shape) != shape
    ]
    if wrong or set(state) != set(expected):
        raise ModelFileError(
            f"{prefix} holds m-rBCR variables of the wrong shape ({'; '.join(wrong[:3])}); "
            "it was built with other hyper-parameters than the published m-rBCR."
        )


def model_from_tf_checkpoint(prefix: str | os.PathLike) -> Any:
    """An `MRBCR` (on the CPU, eval mode) with a checkpoint's weights.

    ``model.metadata`` records the checkpoint as its source.
    """
    import torch

    from debcr.nn import MRBCR

    state = read_tf_checkpoint(prefix)
    model = MRBCR()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    model.metadata = {"source": os.fspath(prefix), "converted_from": "TensorFlow checkpoint"}
    return model.eval()


def convert_tf_checkpoint(
    prefix: str | os.PathLike,
    output: str | os.PathLike,
    *,
    task: str | None = None,
    overwrite: bool = False,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Convert an original DeBCR checkpoint into a debcr model file (safetensors).

    Parameters
    ----------
    prefix
        TensorFlow checkpoint prefix (see `read_tf_checkpoint`).
    output
        Path of the model file to write (``.safetensors``).
    task
        Optional task label stored in the file (e.g. ``"2D_denoising"``).
    overwrite
        Replace an existing output file.
    metadata
        Extra provenance fields (e.g. source, licence) stored in the file; halos given here
        (e.g. ``halo_bfloat16`` measured on images) replace those of the receptive-field rule.

    Returns
    -------
    Path
        The written model file.
    """
    from debcr.files import check_targets
    from debcr.modelfile import model_file_path, save_model
    from debcr.nn.receptive import store_halos

    # Refused before the checkpoint is read and the halo measured (tens of seconds).
    check_targets([model_file_path(output)], [], overwrite)
    model = model_from_tf_checkpoint(prefix)
    # Measured once here so that every later prediction can skip the probe.
    halos = store_halos(model)
    info = {
        "task": task or "",
        "converted_from": "TensorFlow checkpoint of debcr 0.1.0",
        "source": os.fspath(prefix),
        **halos,
        **(metadata or {}),
    }
    return save_model(model, output, metadata=info, overwrite=overwrite)
