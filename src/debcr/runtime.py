"""Devices, precision and the facts a bug report needs."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from importlib import metadata

import torch

from debcr._version import DISTRIBUTION, __version__
from debcr.errors import DebcrError

#: The original TensorFlow package's distribution, which also provides ``import debcr``.
ORIGINAL = "debcr"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Pick ``device``, or the best available one (CUDA, then Apple MPS, then CPU).

    Raises
    ------
    DebcrError
        If the requested device does not exist on this machine.
    """
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DebcrError(
            f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:1', 'mps' or 'auto'"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DebcrError(
            f"device {device!r} was requested but this PyTorch has no CUDA GPU available "
            f"(torch {torch.__version__}); use device='cpu' or install a CUDA build of torch"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DebcrError(
            f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DebcrError(f"device {device!r} was requested but Apple MPS is not available")
    return dev


def autocast_context(device: torch.device, precision: str):
    """Autocast to ``precision`` (``float32`` means none)."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def device_name(device: torch.device) -> str:
    """Human-readable name: ``CUDA: NVIDIA H100 …``, ``MPS: Apple GPU`` or ``CPU: …``."""
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "MPS: Apple GPU"
    return f"CPU: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def system_info() -> dict[str, str]:
    """Versions and devices, as pasted into a bug report by ``debcr info``."""
    info = {
        "debcr": f"{__version__} (distribution {_distributions()})",
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda build": str(torch.version.cuda or "none"),
        "device": device_name(resolve_device()),
        "threads": str(torch.get_num_threads()),
    }
    for name in ("numpy", "tifffile", "zarr", "dask", "lightning"):
        info[name] = _version_of(name)
    if torch.cuda.is_available():
        info["cuda devices"] = ", ".join(
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        )
    return info


def _version_of(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def _distributions() -> str:
    """Which of ours (``debcr-torch``) and the original TensorFlow ``debcr`` are installed.

    Both provide the import name ``debcr`` and overwrite each other's files, so ``debcr info``
    says when both are there.
    """
    found = [name for name in (DISTRIBUTION, ORIGINAL) if _version_of(name) != "not installed"]
    if found == [DISTRIBUTION]:
        return DISTRIBUTION
    if not found:
        return "not installed, running from a source tree"
    return (
        f"{' and '.join(found)} installed: uninstall the original ({ORIGINAL}), which provides "
        f"the same import name, then reinstall {DISTRIBUTION}"
    )
