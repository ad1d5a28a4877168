"""Inference backends: what runs the network on batches of tiles.

Every backend runs the inference-only form of m-rBCR (:func:`debcr.nn.fast.inference_network`)
and offers one method, ``run(tiles) -> restored`` on float32 arrays shaped ``(N, H, W)`` in
the network's normalised units. :func:`make_runner` picks one:

* ``"torch"``: PyTorch, on any device (CPU, CUDA, Apple MPS);
* ``"openvino"``: OpenVINO on the CPU (extra ``debcr-torch[fast]``), usually the fastest there;
* ``"auto"``: OpenVINO for CPU runs when it is installed, otherwise torch.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
import torch

from debcr.errors import DebcrError

__all__ = ["BACKENDS", "Runner", "make_runner"]

logger = logging.getLogger(__name__)

#: Accepted values of ``backend=`` / ``--backend``.
BACKENDS = ("auto", "torch", "openvino")


class Runner(Protocol):
    """Runs a network on tiles: ``(N, H, W)`` float32 in, ``(N, H, W)`` float32 out."""

    backend: str
    precision: str

    def run(self, tiles: np.ndarray) -> np.ndarray: ...


def make_runner(
    model: torch.nn.Module, backend: str, device: torch.device, precision: str
) -> Runner:
    """The runner for ``model`` on ``device`` with ``backend`` at ``precision``.

    Raises
    ------
    DebcrError
        If ``backend`` is unknown, needs an extra that is not installed, or cannot run on
        ``device``.
    """
    from debcr.backends.torch_runner import TorchRunner

    if backend not in BACKENDS:
        raise DebcrError(
            f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}"
        )
    wants_openvino = backend == "openvino" or (backend == "auto" and device.type == "cpu")
    if wants_openvino and hasattr(model, "forward_net"):
        from debcr.backends import openvino_runner

        if openvino_runner.available():
            if device.type != "cpu":
                raise DebcrError(
                    f"the OpenVINO backend runs on the CPU, but device {str(device)!r} was "
                    "asked for; use backend='torch' on GPUs"
                )
            return openvino_runner.OpenVINORunner(model, precision)
        if backend == "openvino":
            raise DebcrError(
                "backend 'openvino' needs OpenVINO, which is not installed; install it with "
                "pip install 'debcr-torch[fast]', or use backend='torch'"
            )
        logger.info(
            "OpenVINO is not installed; restoring with PyTorch (pip install "
            "'debcr-torch[fast]' for faster CPU restoration)"
        )
    elif backend == "openvino":
        raise DebcrError(
            "backend 'openvino' runs m-rBCR models only; use backend='torch' for this network"
        )
    return TorchRunner(model, device, precision)
