"""Inference backends: what runs the network on batches of tiles.

Every backend runs the inference-only form of m-rBCR (`debcr.nn.fast.inference_network`)
and offers one method, ``run(tiles) -> restored`` on float32 arrays shaped ``(N, H, W)`` in
the network's normalised units. `make_runner` picks one:

* ``"torch"``: PyTorch, on any device (CPU, CUDA, Apple MPS);
* ``"openvino"``: OpenVINO on the CPU (extra ``debcr-torch[fast]``), usually the fastest there;
* ``"auto"``: OpenVINO for CPU runs when it is installed, otherwise torch.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Protocol

import numpy as np
import torch

from debcr.defaults import BACKENDS
from debcr.errors import DataError, DebcrError

__all__ = ["BACKENDS", "Runner", "check_backend", "make_runner"]

logger = logging.getLogger(__name__)


#: Runners built recently, by weights, backend, device and precision: a GUI or a dask graph
#: restores many images with one model, and building a runner (an OpenVINO compile, the
#: network's inference form) should happen once, not per image or block.
_RUNNERS: OrderedDict[tuple, Runner] = OrderedDict()
_RUNNERS_KEPT = 4
_LOCK = threading.Lock()


class Runner(Protocol):
    """Runs a network on tiles: ``(N, H, W)`` float32 in, ``(N, H, W)`` float32 out."""

    backend: str
    precision: str

    def run(self, tiles: np.ndarray) -> np.ndarray: ...


def check_backend(backend: str) -> None:
    """Check that ``backend`` names a backend (one of `BACKENDS`).

    Raises
    ------
    DataError
        If it does not; the message lists the backends.
    """
    if backend not in BACKENDS:
        raise DataError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")


def make_runner(
    model: torch.nn.Module, backend: str, device: torch.device, precision: str
) -> Runner:
    """The runner for ``model`` on ``device`` with ``backend`` at ``precision``.

    Runners are reused for the same weights (a model changed in place gets a new one).

    Raises
    ------
    DataError
        If ``backend`` is unknown (`check_backend`).
    DebcrError
        If ``backend`` needs an extra that is not installed, or cannot run on ``device``.
    """
    from debcr.modelfile import tensor_checksum

    check_backend(backend)
    key = (
        type(model).__name__,
        tensor_checksum(model.state_dict()),
        backend,
        str(device),
        precision,
    )
    with _LOCK:
        if key in _RUNNERS:
            _RUNNERS.move_to_end(key)
            return _RUNNERS[key]
        runner = _build(model, backend, device, precision)
        _RUNNERS[key] = runner
        while len(_RUNNERS) > _RUNNERS_KEPT:
            _RUNNERS.popitem(last=False)
        return runner


def _build(model: torch.nn.Module, backend: str, device: torch.device, precision: str) -> Runner:
    from debcr.backends.torch_runner import TorchRunner
    from debcr.nn.fast import has_inference_form

    wants_openvino = backend == "openvino" or (backend == "auto" and device.type == "cpu")
    if wants_openvino and has_inference_form(model):
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
