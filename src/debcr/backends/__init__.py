"""Inference backends: what runs the network on batches of tiles.

Every backend runs the inference-only form of m-rBCR (`debcr.nn.fast.inference_network`)
and offers one method, ``run(tiles) -> restored`` on float32 arrays shaped ``(N, H, W)`` in
the network's normalised units. `make_runner` picks one:

* ``"torch"``: PyTorch, on any device (CPU, CUDA, Apple MPS);
* ``"openvino"``: OpenVINO on the CPU (in the base install where OpenVINO publishes packages:
  Linux x86_64 and aarch64, Windows x86_64, macOS), usually the fastest there;
* ``"auto"``: OpenVINO for CPU runs when it is installed, otherwise torch (said once per
  process in the log).

`describe_path` says which path a run takes, without building it.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from debcr import runtime
from debcr.defaults import BACKENDS
from debcr.errors import DataError, DebcrError
from debcr.modelfile import StoredModel, checksum_of, network_of
from debcr.runtime import device_type

if TYPE_CHECKING:
    import torch

__all__ = [
    "BACKENDS",
    "Runner",
    "check_backend",
    "describe_path",
    "make_runner",
    "openvino_wheels",
    "system_info",
]

logger = logging.getLogger(__name__)


#: Runners built recently, by weights, backend, device and precision: a GUI or a dask graph
#: restores many images with one model, and building a runner (an OpenVINO compile, the
#: network's inference form) should happen once, not per image or block.
_RUNNERS: OrderedDict[tuple, Runner] = OrderedDict()
_RUNNERS_KEPT = 4
_LOCK = threading.Lock()

#: How the backends' names read in `describe_path`.
_LABELS = {"torch": "PyTorch", "openvino": "OpenVINO"}
#: What to type where OpenVINO is missing (the base install carries it where it has packages).
_INSTALL_OPENVINO = "pip install openvino"
#: The first Python version that OpenVINO publishes no packages for (checked for 2026.4.1).
_OPENVINO_PYTHON_BELOW = (3, 15)
# Whether the fallback to PyTorch was logged (once per process: a GUI restores many images).
_FALLBACK_SAID = False
_LOCK_SAID = threading.Lock()


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


def make_runner(model: Any, backend: str, device: str | torch.device, precision: str) -> Runner:
    """The runner for ``model`` on ``device`` with ``backend`` at ``precision``.

    ``model`` is a network or a model file not yet loaded (`debcr.modelfile.StoredModel`: the
    OpenVINO backend runs it without loading its weights where its conversion is kept).
    Runners are reused for the same weights (a model changed in place gets a new one).

    Raises
    ------
    DataError
        If ``backend`` is unknown (`check_backend`).
    DebcrError
        If ``backend`` needs an extra that is not installed, or cannot run on ``device``.
    """
    check_backend(backend)
    key = (
        "MRBCR" if isinstance(model, StoredModel) else type(model).__name__,
        checksum_of(model),
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


def _build(model: Any, backend: str, device: str | torch.device, precision: str) -> Runner:
    if isinstance(model, StoredModel):
        inference_form = True  # model files hold m-rBCR networks only
    else:
        from debcr.nn.fast import has_inference_form

        inference_form = has_inference_form(model)
    chosen = _choose(backend, device, inference_form)
    if chosen == "openvino":
        from debcr.backends.openvino_runner import OpenVINORunner

        return OpenVINORunner(model, precision)
    if backend == "auto" and device_type(device) == "cpu" and inference_form:
        _log_fallback_once()
    from debcr.backends.torch_runner import TorchRunner

    return TorchRunner(network_of(model, device), device, precision)


def _choose(backend: str, device: str | torch.device, inference_form: bool = True) -> str:
    """The backend that runs: ``"auto"`` resolved, a backend that cannot run refused.

    ``"auto"`` is OpenVINO for a network with an inference-only form on the CPU where
    OpenVINO can be imported, PyTorch otherwise.
    """
    from debcr.backends import openvino_runner

    check_backend(backend)
    on_cpu = device_type(device) == "cpu"
    if backend == "torch" or (backend == "auto" and (not on_cpu or not inference_form)):
        return "torch"
    if not inference_form:
        raise DebcrError(
            "backend 'openvino' runs m-rBCR models only; use backend='torch' for this network"
        )
    if openvino_runner.available():
        if not on_cpu:
            raise DebcrError(
                f"the OpenVINO backend runs on the CPU, but device {str(device)!r} was "
                "asked for; use backend='torch' on GPUs"
            )
        return "openvino"
    if backend == "openvino":
        raise DebcrError(
            "backend 'openvino' needs OpenVINO, which is not installed; install it with "
            f"{_INSTALL_OPENVINO}, or use backend='torch'"
        )
    return "torch"


def _log_fallback_once() -> None:
    """Say once per process that ``"auto"`` restores with PyTorch for want of OpenVINO."""
    global _FALLBACK_SAID
    with _LOCK_SAID:
        if _FALLBACK_SAID:
            return
        _FALLBACK_SAID = True
    if openvino_wheels():
        logger.info(
            "OpenVINO is not installed; restoring with PyTorch (%s for faster CPU restoration)",
            _INSTALL_OPENVINO,
        )
    else:
        logger.info("OpenVINO has no package for this platform; restoring with PyTorch")


def openvino_wheels() -> bool:
    """Whether OpenVINO publishes packages for this platform and Python (then the base install
    carries it: the environment markers of ``pyproject.toml`` name the same platforms)."""
    machine = platform.machine().lower()
    if sys.version_info >= _OPENVINO_PYTHON_BELOW:
        return False
    if sys.platform == "linux":
        return machine in ("x86_64", "aarch64")
    if sys.platform == "win32":
        return machine == "amd64"
    if sys.platform == "darwin":
        return machine in ("arm64", "x86_64")  # Intel Macs: OpenVINO 2025.4 is the last
    return False


def describe_path(
    device: str | None = None, precision: str | None = None, backend: str = "auto"
) -> tuple[str, str | None]:
    """What a restoration with these options runs on, in one line, and how to make it faster.

    ``device``, ``precision`` and ``backend`` are resolved as `debcr.model.predict` resolves
    them (``None`` and ``"auto"`` alike), for an m-rBCR model such as the built-ins. Nothing is
    built or compiled, so it suits a GUI label: the first call imports OpenVINO (about a
    second) to learn whether it works, later calls take under a millisecond.

    Returns
    -------
    tuple[str, str | None]
        The path, e.g. ``"OpenVINO · float32 · CPU (Intel Xeon @ 2.80 GHz)"`` or
        ``"PyTorch · bfloat16 · CUDA (NVIDIA H100 80GB HBM3)"``; and a one-sentence hint where
        a faster path exists on this machine but is not installed (a CUDA build of PyTorch on
        a machine with an NVIDIA GPU, OpenVINO for CPU runs), else None.

    Raises
    ------
    DataError
        If ``backend`` is unknown.
    DebcrError
        If ``device`` does not exist here, ``precision`` is unknown, or ``backend`` cannot run
        on ``device`` (as `make_runner` would say).
    """
    import torch

    from debcr.backends import openvino_runner
    from debcr.runtime import cpu_name, resolve_device, resolve_precision

    dev = resolve_device(device)
    chosen = _choose(backend, dev)
    if dev.type == "cuda":
        where = f"CUDA ({torch.cuda.get_device_name(dev)})"
    elif dev.type == "mps":
        where = "MPS (Apple GPU)"
    else:
        where = f"{dev.type.upper()} ({cpu_name()})"
    line = f"{_LABELS[chosen]} · {resolve_precision(precision, dev)} · {where}"
    hint = None
    if dev.type == "cpu" and torch.version.cuda is None and _nvidia_gpu_present():
        hint = (
            "This machine has an NVIDIA GPU but this PyTorch is built for the CPU only: install "
            "a CUDA build of PyTorch (pytorch.org/get-started) to restore on the GPU."
        )
    elif (
        chosen == "torch"
        and backend == "auto"
        and dev.type == "cpu"
        and openvino_wheels()
        and not openvino_runner.available()
    ):
        hint = f"OpenVINO is not installed: {_INSTALL_OPENVINO} makes CPU restoration faster."
    return line, hint


def _nvidia_gpu_present() -> bool:
    """Whether an NVIDIA driver is installed (its kernel module, or ``nvidia-smi``)."""
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def system_info() -> dict[str, str]:
    """Versions, devices and the inference path, as pasted into a bug report by ``debcr info``.

    `debcr.runtime.system_info` with, after its precision and allocator lines,
    ``inference path``: what `debcr.model.predict` runs with its defaults (`describe_path`),
    and ``hint``, present only then, saying how to make it faster where a faster path exists
    here but is not installed.
    """
    path, hint = describe_path()
    info: dict[str, str] = {}
    for key, value in runtime.system_info().items():
        info[key] = value
        if key == "malloc tuning":
            info["inference path"] = path
            if hint:
                info["hint"] = hint
    return info
