"""Runtime facts: glibc allocator tuning, native bfloat16, default and explicit precisions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from debcr import backends, runtime
from debcr.config import TrainConfig
from debcr.errors import DebcrError
from debcr.training.run import trainer_precision

GLIBC = sys.platform == "linux" and runtime._glibc_mallopt() is not None
MB64 = 16 * 1024 * 1024  # float32 elements in 64 MB: 16384 pages of 4 KB

# Allocates and frees a 64 MB tensor `times` times; prints the minor page faults of each time.
_FAULTS = """
import resource, torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
out = []
for _ in range({times}):
    before = faults()
    torch.ones({n})
    out.append(faults() - before)
print(out)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_tune_allocator_applies_once() -> None:
    assert runtime.tune_allocator() is True
    assert runtime.tune_allocator() is True  # idempotent


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_tuned_allocator_reuses_freed_memory() -> None:
    # A fresh process (the test runner's own heap depends on what ran before): torch is imported
    # and has allocated by the time the tuning is applied, and it still takes effect.
    tune = "from debcr import runtime; print(runtime.tune_allocator())\n"
    code = "import torch; torch.ones(1024)\n" + tune
    result = subprocess.run(
        [sys.executable, "-c", code + _FAULTS.format(n=MB64, times=10)],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != runtime.NO_MALLOC_TUNING},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answer, faults = result.stdout.strip().splitlines()[-2:]
    assert answer == "True"
    # The heap grows to hold the block (in a fresh process torch's aligned allocations may need it
    # to grow several times before freed blocks coalesce into one that fits); then it is reused.
    assert min(json.loads(faults)[1:]) < 2000, faults  # untuned: ~16384 each (every page is new)


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_opt_out_leaves_the_allocator_alone() -> None:
    tune = "from debcr import runtime; print(runtime.tune_allocator())"
    code = tune + _FAULTS.format(n=MB64, times=5)
    env = {**os.environ, runtime.NO_MALLOC_TUNING: "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answer, faults = result.stdout.strip().splitlines()[-2:]
    assert answer == "False"
    # The control of the test above: untuned, every allocation maps all its pages anew.
    assert min(json.loads(faults)[2:]) > 10000, faults


def test_no_tuning_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_TUNED", None)
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda *a, **k: ("", ""))
    assert runtime.tune_allocator() is False
    monkeypatch.setattr(runtime, "_TUNED", None)
    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    assert runtime.tune_allocator() is False


#: The /proc/cpuinfo flags of a CPU that computes bfloat16 natively.
BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


def _cpuinfo_flags() -> set[str]:
    flags: set[str] = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.lower().startswith(("flags", "features")):
            flags.update(line.split(":", 1)[1].split())
    return flags


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/cpuinfo")
def test_native_bf16_agrees_with_cpuinfo() -> None:
    flags = _cpuinfo_flags()
    assert runtime.native_bf16() == bool(flags & BF16_FLAGS)


def test_auto_precision_follows_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    if sys.platform == "linux":  # this machine, against its own /proc/cpuinfo
        expected = "bfloat16" if _cpuinfo_flags() & BF16_FLAGS else "float32"
        assert runtime.resolve_precision("auto", cpu) == expected
        assert runtime.resolve_precision(None, cpu) == expected
    for flag, expected in (("amx_bf16", "bfloat16"), (None, "float32")):
        monkeypatch.setattr(runtime, "_bf16_flag", lambda flag=flag: flag)
        assert runtime.resolve_precision("auto", cpu) == expected
        assert runtime.resolve_precision(None, cpu) == expected
    assert runtime.default_precision(torch.device("mps")) == "float32"


def test_default_precision_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_bf16_flag", lambda: "avx512_bf16")
    assert runtime.default_precision(torch.device("cpu")) == "bfloat16"
    monkeypatch.setattr(runtime, "_bf16_flag", lambda: None)
    assert runtime.default_precision(torch.device("cpu")) == "float32"


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_explicit_precision_is_kept(precision: str) -> None:
    assert runtime.resolve_precision(precision, torch.device("cpu")) == precision


def test_unknown_precision_is_one_sentence_naming_it() -> None:
    with pytest.raises(DebcrError) as excinfo:
        runtime.resolve_precision("fp8", torch.device("cpu"))
    text = str(excinfo.value)
    assert "'fp8'" in text and "\n" not in text and text.count(". ") == 0
    for allowed in ("'auto'", "'float32'", "'bfloat16'", "'float16'"):
        assert allowed in text


def test_system_info_reports_precision_and_allocator() -> None:
    info = runtime.system_info()
    assert info["bf16 native"] == "no" or info["bf16 native"].startswith("yes (")
    assert info["default precision"] in ("float32", "bfloat16")
    assert info["malloc tuning"] in ("applied", "not glibc", f"off ({runtime.NO_MALLOC_TUNING})")
    if GLIBC:
        assert info["malloc tuning"] == "applied"
    assert info["openvino"]


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/cpuinfo")
def test_info_names_the_cpu_its_bf16_and_amx_and_the_inference_path(capsys) -> None:
    """``debcr info`` says which CPU every number came from and what a restoration runs."""
    from debcr.backends import describe_path
    from debcr.cli import main

    model = next(
        (
            line.partition(":")[2].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        runtime.platform.processor() or runtime.platform.machine(),  # Arm lists no model name
    )
    flags = _cpuinfo_flags()
    assert main(["info"]) == 0
    printed = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(": ") for line in capsys.readouterr().out.splitlines())
    )
    assert printed["cpu"] == f"{runtime._tidy_cpu_name(model)} ({os.cpu_count()} cores)"
    amx = sorted(f for f in flags if f.startswith("amx"))
    assert printed["amx"] == (f"yes ({' '.join(amx)})" if amx else "no")
    bf16 = [f for f in ("amx_bf16", "avx512_bf16", "bf16") if f in flags]
    assert printed["bf16 native"] == (f"yes ({bf16[0]})" if bf16 else "no")
    assert printed["inference path"] == describe_path()[0]
    assert printed["inference path"].endswith(f"· CPU ({runtime._tidy_cpu_name(model)})")
    assert "hint" not in printed  # OpenVINO is installed here and there is no GPU


def test_info_hints_at_the_faster_path_when_it_is_missing(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # what an absent package looks like
    info = backends.system_info()
    assert info["inference path"].startswith("PyTorch · ")
    assert info["hint"] == (
        "OpenVINO is not installed: pip install openvino makes CPU restoration faster."
    )


@pytest.mark.parametrize(
    ("raw", "tidy"),
    [
        ("Intel(R) Xeon(R) Processor @ 2.80GHz", "Intel Xeon @ 2.80 GHz"),
        ("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", "Intel Core i7-8700 @ 3.20 GHz"),
        ("AMD EPYC 9R14 96-Core Processor", "AMD EPYC 9R14 96-Core"),
        ("Apple M2 Pro", "Apple M2 Pro"),
    ],
)
def test_cpu_names_read_without_trademark_signs(raw: str, tidy: str) -> None:
    assert runtime._tidy_cpu_name(raw) == tidy


# ---- the training configuration's precision ----------------------------------------------


def test_trainer_precision_auto_on_cpu() -> None:
    config = TrainConfig(accelerator="cpu")
    assert config.precision == "auto"
    expected = "bf16-mixed" if runtime.native_bf16() else "32-true"
    assert trainer_precision(config) == expected


def test_trainer_precision_auto_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_bf16_flag", lambda: None)
    assert trainer_precision(TrainConfig(accelerator="cpu")) == "32-true"
    monkeypatch.setattr(runtime, "_bf16_flag", lambda: "amx_bf16")
    assert trainer_precision(TrainConfig(accelerator="cpu")) == "bf16-mixed"
    assert trainer_precision(TrainConfig(accelerator="mps")) == "32-true"


@pytest.mark.parametrize(
    ("given", "used"), [("32", "32-true"), ("bf16", "bf16-mixed"), ("16-mixed", "16-mixed")]
)
def test_trainer_precision_explicit_is_used_as_given(given: str, used: str) -> None:
    assert trainer_precision(TrainConfig(accelerator="cpu", precision=given)) == used


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_release_memory_returns_the_kept_heap() -> None:
    """Resident memory, in a fresh process: kept after a freed 256 MB block, back after release."""
    code = (
        "import os, torch; from debcr import runtime\n"
        "page = os.sysconf('SC_PAGE_SIZE')\n"
        "def rss(): return int(open('/proc/self/statm').read().split()[1]) * page\n"
        "assert runtime.tune_allocator()\n"
        "torch.ones(64 << 20)\n"  # 256 MB of float32, written, then freed at once
        "kept = rss(); runtime.release_memory(); print(kept - rss())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert int(result.stdout.split()[-1]) > 200 * 2**20, result.stdout


def test_cpu_only_agrees_with_resolve_device(monkeypatch) -> None:
    """Deciding "the CPU" without torch must never hide a GPU that `resolve_device` would use."""
    assert runtime.cpu_only("cpu") and runtime.cpu_only(torch.device("cpu"))
    assert not runtime.cpu_only("cuda") and not runtime.cpu_only("mps")
    if runtime.cpu_only(None):
        assert runtime.resolve_device(None).type == "cpu"
    # A GPU's device file present: ask torch.
    monkeypatch.setattr(runtime, "_GPU_DEVICE_FILES", (__file__,))
    assert not runtime.cpu_only(None) and not runtime.cpu_only("auto")
    assert runtime.cpu_only("cpu")
