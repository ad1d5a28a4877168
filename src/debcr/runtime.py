"""Devices, precision, the memory allocator and the facts a bug report needs."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import logging
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from typing import TYPE_CHECKING

from debcr._version import DISTRIBUTION, __version__
from debcr.errors import DebcrError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: The original TensorFlow package's distribution, which also provides ``import debcr``.
ORIGINAL = "debcr"

#: The precisions `resolve_precision` accepts besides ``"auto"``.
PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "float16")
#: Device files of GPUs that PyTorch could use on Linux (patterns): NVIDIA's (Jetson boards:
#: ``nvhost``/``nvgpu``), AMD's (ROCm) and WSL2's.
_GPU_DEVICE_FILES = ("/dev/nvidia*", "/dev/nvhost*", "/dev/nvgpu*", "/dev/kfd", "/dev/dxg")

#: Set to ``1`` to leave glibc's allocator as it is (see `tune_allocator`).
NO_MALLOC_TUNING = "DEBCR_NO_MALLOC_TUNING"
# glibc's mallopt parameters (malloc.h) and the values tune_allocator sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 1 << 30  # blocks above 1 GiB still come straight from (and go back to) mmap
_TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of free heap top for reuse

# None: not tried yet; else the answer of the first call.
_TUNED: bool | None = None


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Pick ``device``, or the best available one (CUDA, then Apple MPS, then CPU).

    Raises
    ------
    DebcrError
        If the requested device does not exist on this machine.
    """
    import torch

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


def cpu_only(device: str | torch.device | None = None) -> bool:
    """Whether ``device`` means the CPU, decided without importing torch.

    True for ``"cpu"``, and for ``None`` or ``"auto"`` on a Linux machine without the device
    files of a GPU that PyTorch could use (`_GPU_DEVICE_FILES`), where `resolve_device` can only
    choose the CPU. Elsewhere (macOS with MPS, Windows, a GPU present) False: ask
    `resolve_device`.
    """
    if device is not None and str(device) not in ("auto", "cpu"):
        return False
    if str(device) == "cpu":
        return True
    return sys.platform == "linux" and not any(glob.glob(f) for f in _GPU_DEVICE_FILES)


def inference_device(device: str | torch.device | None = None) -> str | torch.device:
    """``device`` resolved: ``"cpu"`` where that is clear without importing torch
    (`cpu_only`), else `resolve_device`'s choice (which raises for a device not present)."""
    return "cpu" if cpu_only(device) else resolve_device(device)


def device_type(device: str | torch.device) -> str:
    """The kind of ``device``: ``"cpu"``, ``"cuda"``, ``"mps"``… (``"cuda:1"`` → ``"cuda"``)."""
    return str(device).split(":")[0]


def cpu_threads() -> int | None:
    """Threads for CPU inference: PyTorch's setting where torch is imported, else
    ``OMP_NUM_THREADS`` where set, else None (the runtime's own default: the physical cores)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def torch_dtype(precision: str) -> torch.dtype:
    """PyTorch's dtype of ``precision`` (one of `PRECISIONS`)."""
    import torch

    return getattr(torch, precision)


def autocast_context(device: torch.device, precision: str):
    """Autocast to ``precision`` (``float32`` means none)."""
    if precision == "float32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device.type, dtype=torch_dtype(precision))


def device_name(device: torch.device) -> str:
    """Human-readable name: ``CUDA: NVIDIA H100 …``, ``MPS: Apple GPU`` or ``CPU: …``."""
    if device_type(device) == "cuda":
        import torch

        return f"CUDA: {torch.cuda.get_device_name(device)}"
    if device_type(device) == "mps":
        return "MPS: Apple GPU"
    return f"CPU: {cpu_name()} ({os.cpu_count()} cores)"


@functools.cache
def cpu_name() -> str:
    """The CPU's model, e.g. ``Intel Xeon @ 2.80 GHz`` (cached).

    Linux: ``model name`` in ``/proc/cpuinfo``; macOS: ``sysctl machdep.cpu.brand_string``;
    elsewhere, or where those say nothing: `platform.processor`, else the machine type
    (``x86_64``, ``arm64``). Trademark signs and the word "Processor" are dropped.
    """
    name = ""
    if sys.platform == "linux":
        name = _cpuinfo_fields().get("model name", "")
    elif sys.platform == "darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            name = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
    return _tidy_cpu_name(name or platform.processor() or platform.machine() or "unknown CPU")


def _tidy_cpu_name(name: str) -> str:
    """``Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz`` as ``Intel Core i7-8700 @ 3.20 GHz``."""
    name = re.sub(r"\((R|TM|tm)\)|\bProcessor\b|\bCPU\b(?= @)", "", name)
    name = re.sub(r"(\d)\s*GHz", r"\1 GHz", name)
    return " ".join(name.split())


@functools.cache
def _cpuinfo_fields() -> dict[str, str]:
    """The first value of every field of Linux's ``/proc/cpuinfo`` (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (``flags`` on x86, ``features`` on Arm)."""
    fields = _cpuinfo_fields()
    return set(fields.get("flags", "").split()) | set(fields.get("features", "").split())


def tune_allocator() -> bool:
    """Keep freed memory in the process for reuse instead of returning it to the OS (glibc).

    glibc's ``malloc`` serves every block above its mmap threshold (dynamic, at most 32 MB)
    with a fresh ``mmap`` and unmaps it on ``free``, so each layer of a network forward
    writes to newly mapped pages, and the kernel zero-fills every 4 KB page on first touch:
    about 941,000 page faults per 688×688 tile of m-rBCR. This raises the mmap threshold and
    the trim threshold to 1 GiB, so freed buffers stay in the heap and the next layer reuses
    them: the eager CPU forward gets about twice as fast, with identical results.

    The price is memory: the process keeps what it freed (up to the working set of the largest
    forward, plus at most 1 GiB of free heap top) instead of giving it back between layers and
    calls, so its resident size (RSS) stays near its peak. Set the environment variable
    ``DEBCR_NO_MALLOC_TUNING=1`` to trade the speed back for a smaller RSS, e.g. when many
    processes share a machine's memory or an external allocator (jemalloc, tcmalloc) is
    preloaded. Blocks of 1 GiB and more still come from and go back to ``mmap``.

    The tuning is applied once per process; later calls only return the first answer. It works
    at any time, also after torch has allocated: blocks already mapped are unaffected.

    Returns
    -------
    bool
        Whether the allocator is tuned: False on macOS, Windows and non-glibc Linux (musl),
        or when ``DEBCR_NO_MALLOC_TUNING`` is set to a true value.
    """
    global _TUNED
    if _TUNED is None:
        _TUNED = _apply_malloc_tuning()
    return _TUNED


def release_memory() -> bool:
    """Give the memory freed in the heap back to the OS (glibc ``malloc_trim``).

    With `tune_allocator` applied, the process keeps what a forward freed, up to the
    heap extent of the largest forward (measured: 1.3 GB after a 1024×1024 tile, 5.7 GB after
    a 2048×2048 one, against 0.3 GB untuned). Call this when a batch of work is done (the end
    of a prediction) to return it; the next forward then page-faults its buffers once more.

    Returns
    -------
    bool
        Whether memory was returned (False where the C library is not glibc).
    """
    if _glibc_mallopt() is None:
        return False
    trim = ctypes.CDLL("libc.so.6").malloc_trim
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))


def _malloc_tuning_off() -> bool:
    """Whether ``DEBCR_NO_MALLOC_TUNING`` asks to leave the allocator alone."""
    return os.environ.get(NO_MALLOC_TUNING, "").strip().lower() not in ("", "0", "false", "no")


def _apply_malloc_tuning() -> bool:
    if _malloc_tuning_off():
        logger.debug("malloc tuning off: %s is set", NO_MALLOC_TUNING)
        return False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        logger.debug("malloc tuning not applied: not glibc")
        return False
    if not (
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    ):
        logger.debug("malloc tuning not applied: glibc's mallopt refused the thresholds")
        return False
    logger.debug(
        "malloc tuned: mmap and trim thresholds %d MiB (%s=1 turns this off)",
        _MMAP_THRESHOLD >> 20,
        NO_MALLOC_TUNING,
    )
    return True


def _glibc_mallopt():
    """glibc's ``mallopt`` function, or None where the C library is not glibc."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


def _malloc_tuning_state() -> str:
    """Whether `tune_allocator` applies (it is called: ``debcr info`` says what runs get)."""
    if tune_allocator():
        return "applied"
    if _malloc_tuning_off():
        return f"off ({NO_MALLOC_TUNING})"
    if _glibc_mallopt() is None:
        return "not glibc"
    return "refused by mallopt"


@functools.cache
def _bf16_flag() -> str | None:
    """The CPU feature that computes bfloat16 natively, or None."""
    if sys.platform == "linux":
        flags = _cpu_flags()
        return next((f for f in ("amx_bf16", "avx512_bf16", "bf16") if f in flags), None)
    if sys.platform == "darwin" and platform.machine() == "arm64":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        return "FEAT_BF16" if out.strip() == "1" else None
    return None


def native_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (cached).

    Linux: ``avx512_bf16`` or ``amx_bf16`` (x86) or ``bf16`` (aarch64) in ``/proc/cpuinfo``;
    macOS on Apple silicon: ``sysctl hw.optional.arm.FEAT_BF16``; anywhere else: False.
    """
    return _bf16_flag() is not None


def default_precision(device: str | torch.device) -> str:
    """The fastest precision that computes well on ``device``: ``bfloat16`` or ``float32``.

    ``bfloat16`` on a CPU that computes it natively (`native_bf16`) and on a CUDA GPU
    that does (compute capability 8.0, Ampere, or later; ROCm GPUs); ``float32`` elsewhere:
    Apple MPS, and older GPUs, which only emulate bfloat16 (the T4 and V100, for instance).
    """
    if device_type(device) == "cpu":
        return "bfloat16" if native_bf16() else "float32"
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        if torch.version.hip:
            return "bfloat16"
        index = device.index if device.index is not None else torch.cuda.current_device()
        return "bfloat16" if torch.cuda.get_device_capability(index)[0] >= 8 else "float32"
    return "float32"


def resolve_precision(precision: str | None, device: str | torch.device) -> str:
    """``precision`` checked; for ``None`` or ``"auto"``, `default_precision` of ``device``.

    Raises
    ------
    DebcrError
        If ``precision`` is none of ``auto``, ``float32``, ``bfloat16`` and ``float16``.
    """
    if precision is None or precision == "auto":
        return default_precision(device)
    if not isinstance(precision, str) or precision not in PRECISIONS:
        allowed = ", ".join(repr(p) for p in ("auto", *PRECISIONS))
        raise DebcrError(f"unknown precision {precision!r}; use one of {allowed}")
    return precision


def system_info() -> dict[str, str]:
    """Versions and devices; `debcr.backends.system_info` adds the inference path to them for
    ``debcr info`` (kept there because the backends are built on this module)."""
    import torch

    device = resolve_device()
    info = {
        "debcr": f"{__version__} (distribution {_distributions()})",
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda build": str(torch.version.cuda or "none"),
        "cpu": f"{cpu_name()} ({os.cpu_count()} cores)",
        "device": device_name(device),
        "threads": str(torch.get_num_threads()),
        "bf16 native": f"yes ({flag})" if (flag := _bf16_flag()) else "no",
        "amx": _amx_state(),
        "default precision": default_precision(device),
        "malloc tuning": _malloc_tuning_state(),
    }
    for name in ("numpy", "tifffile", "zarr", "dask", "lightning", "openvino"):
        info[name] = _version_of(name)
    if torch.cuda.is_available():
        info["cuda devices"] = ", ".join(
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        )
    return info


def _amx_state() -> str:
    """Intel AMX, the matrix units that make bfloat16 fastest: its flags, or why not."""
    if sys.platform != "linux":
        return "unknown (read from /proc/cpuinfo on Linux)"
    amx = sorted(f for f in _cpu_flags() if f.startswith("amx"))
    return f"yes ({' '.join(amx)})" if amx else "no"


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
