"""The inference-only network, backends, precision and halo choice, on real images."""

from __future__ import annotations

import logging
import re
import sys
from collections import OrderedDict

import numpy as np
import pytest
import tifffile
import torch
from skimage.metrics import peak_signal_noise_ratio

from conftest import DATA, TASKS, fmd_frame, fmd_gt
from debcr import backends
from debcr.backends import make_runner
from debcr.data.normalize import compute_stats, normalize
from debcr.errors import DebcrError
from debcr.inference import engine
from debcr.model import init, predict
from debcr.nn.fast import inference_network
from debcr.nn.receptive import HALO_TOLERANCE, HALO_TOLERANCES, effective_halo, halo_for
from debcr.runtime import resolve_device
from test_network import _fixture_model
from test_runtime import BF16_FLAGS, _cpuinfo_flags


def _normalised_fmd(size: int = 256) -> torch.Tensor:
    image = normalize(fmd_frame(19).astype(np.float32))[:size, :size]
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]


def test_fast_network_matches_the_original_fixture(fixture_npz) -> None:
    model = _fixture_model(fixture_npz)
    x0 = torch.from_numpy(fixture_npz["x0"]).permute(0, 3, 1, 2)
    with torch.no_grad():
        fast = inference_network(model)(x0)
        eager = model.restore(x0)
    diff = np.abs(fast.permute(0, 2, 3, 1).numpy() - fixture_npz["out_z0"]).max()
    assert diff <= 1e-5, f"inference-only network differs from the original by {diff}"
    assert (fast - eager).abs().max() <= 1e-5


@pytest.mark.parametrize("task", TASKS)
def test_fast_network_equals_the_training_network_on_real_images(task: str) -> None:
    model = init(task)
    fast = inference_network(model)
    x = _normalised_fmd(256)
    with torch.no_grad():
        for crop in (x, x[..., :132, :200], x[..., :4, :8]):
            got, want = fast(crop), model.restore(crop)
            assert got.shape == want.shape
            assert (got - want).abs().max() <= 1e-5, task
    # The inference form is a copy: later changes to the model do not reach it.
    with torch.no_grad():
        model.inverse_net.head0.bias.add_(1.0)
        assert (fast(x) - model.restore(x)).abs().max() > 0.5


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/cpuinfo")
def test_default_precision_follows_the_cpu(denoiser, monkeypatch) -> None:
    """predict's runner on the CPU computes in bfloat16 exactly where the CPU lists bf16."""
    built: list[str] = []

    def spy(model, backend, device, precision):
        built.append(precision)
        return make_runner(model, backend, device, precision)

    monkeypatch.setattr(engine, "make_runner", spy)
    predict(denoiser, np.zeros((16, 16), np.float32), device="cpu", progress=False)
    assert built == ["bfloat16" if _cpuinfo_flags() & BF16_FLAGS else "float32"]
    assert halo_for(denoiser, "float32") == effective_halo(denoiser) == 88
    assert halo_for(denoiser, "bfloat16") < halo_for(denoiser, "float32")


@pytest.mark.slow
def test_default_path_keeps_quality_on_fmd_field_19(denoiser) -> None:
    """Default (auto precision, auto backend, precision-sized halo) vs float32 eager torch."""
    image, gt = fmd_frame(19), fmd_gt(19).astype(np.float64)
    exact = predict(denoiser, image, precision="float32", backend="torch", progress=False)
    fast = predict(denoiser, image, progress=False)
    psnr_exact = peak_signal_noise_ratio(gt, exact.astype(np.float64), data_range=255)
    psnr_fast = peak_signal_noise_ratio(gt, fast.astype(np.float64), data_range=255)
    stats = compute_stats(image)
    max_norm = float(np.abs(fast - exact).max()) / float(stats.hi - stats.lo)
    assert abs(psnr_fast - psnr_exact) <= 0.05, (psnr_fast, psnr_exact, max_norm)
    assert max_norm < 0.1, f"default path differs by {max_norm} (normalised units)"


@pytest.mark.slow
def test_precision_sized_halo_keeps_seams_below_bf16_rounding(denoiser) -> None:
    """Tiled float32 with the bf16 halo is as close to the whole image as untiled bf16 is."""
    image = fmd_frame(19)
    opts = {"units": "normalized", "progress": False, "backend": "torch"}
    whole = predict(denoiser, image, precision="float32", tile_size=512, **opts)
    bf16 = predict(denoiser, image, precision="bfloat16", tile_size=512, **opts)
    halo = halo_for(denoiser, "bfloat16")
    tiled = predict(denoiser, image, precision="float32", tile_size=128, halo=halo, **opts)
    seam, rounding = np.abs(tiled - whole).max(), np.abs(bf16 - whole).max()
    assert seam < rounding, (halo, seam, rounding)
    exact = predict(
        denoiser,
        image,
        precision="float32",
        tile_size=128,
        halo=halo_for(denoiser, "float32"),
        **opts,
    )
    assert np.abs(exact - whole).max() < 1e-3
    assert HALO_TOLERANCE == 1e-4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "plane"),
    [
        ("3D_denoising", ("cells3d_nuclei/nuclei.tif", 30)),
        ("confocal_SR", ("flowdec/neuron-25pct_data.tif", 25)),
        ("bright_SR", ("flowdec/neuron-25pct_data.tif", 25)),
    ],
)
def test_measured_builtin_halos_keep_seams_below_bf16_rounding(task, plane) -> None:
    """The built-ins' stored bf16 halos (measured on other planes, no larger than the
    receptive-field rule's) hold on a plane their choice did not see."""
    from debcr.weights import MEASURED_HALOS

    model = init(task)
    halo = halo_for(model, "bfloat16")
    assert halo == MEASURED_HALOS[task]["halo_bfloat16"]
    assert halo <= effective_halo(model, HALO_TOLERANCES["bfloat16"])
    path, z = plane
    image = tifffile.imread(DATA / path)[z]
    opts = {"units": "normalized", "progress": False, "backend": "torch"}
    side = max(image.shape)
    whole = predict(model, image, precision="float32", tile_size=side, **opts)
    bf16 = predict(model, image, precision="bfloat16", tile_size=side, halo=halo, **opts)
    tiled = predict(model, image, precision="float32", tile_size=128, halo=halo, **opts)
    seam, rounding = np.abs(tiled - whole).max(), np.abs(bf16 - whole).max()
    assert seam < rounding, (task, halo, seam, rounding)
    # The measurement sees seams at all: with 16 px less context they grow.
    short = predict(model, image, precision="float32", tile_size=128, halo=halo - 16, **opts)
    assert np.abs(short - whole).max() > seam


def test_auto_uses_openvino_on_the_cpu_when_installed(denoiser) -> None:
    """The default install carries OpenVINO on this platform, and ``auto`` picks it."""
    from debcr.backends import system_info

    assert backends.openvino_wheels()  # Linux x86_64: the base requirements name openvino
    runner = make_runner(denoiser, "auto", resolve_device("cpu"), "bfloat16")
    assert runner.backend == "openvino"
    assert system_info()["inference path"].startswith("OpenVINO · ")
    tiles = _normalised_fmd(256)[:, 0].numpy()
    exact = make_runner(denoiser, "torch", resolve_device("cpu"), "float32").run(tiles)
    assert np.abs(runner.run(tiles) - exact).max() < 0.02


def test_auto_falls_back_to_torch_without_openvino(denoiser, monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # what an absent package looks like
    # Forget the runners of earlier tests: "auto" may have been built with OpenVINO there.
    monkeypatch.setattr(backends, "_RUNNERS", OrderedDict())
    monkeypatch.setattr(backends, "_FALLBACK_SAID", False)
    cpu = resolve_device("cpu")
    with caplog.at_level(logging.INFO, logger="debcr.backends"):
        runner = make_runner(denoiser, "auto", cpu, "float32")
        make_runner(init("confocal_SR"), "auto", cpu, "float32")  # said once, not per model
    assert runner.backend == "torch"
    said = [r.getMessage() for r in caplog.records if "OpenVINO" in r.getMessage()]
    assert said == [
        "OpenVINO is not installed; restoring with PyTorch "
        "(pip install openvino for faster CPU restoration)"
    ]
    with pytest.raises(DebcrError, match=r"not installed; install it with pip install openvino"):
        make_runner(denoiser, "openvino", cpu, "float32")
    with pytest.raises(DebcrError, match="backend must be one of"):
        make_runner(denoiser, "tensorrt", cpu, "float32")


def _cpu_model_name() -> str:
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return ""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/cpuinfo")
def test_describe_path_names_what_predict_builds(denoiser, monkeypatch) -> None:
    """The line names the backend and precision of the runner predict builds, and the CPU."""
    built: list[tuple[str, str]] = []

    def spy(model, backend, device, precision):
        runner = make_runner(model, backend, device, precision)
        built.append((runner.backend, runner.precision))
        return runner

    monkeypatch.setattr(engine, "make_runner", spy)
    image = fmd_frame(19)[:32, :32]
    labels = {"torch": "PyTorch", "openvino": "OpenVINO"}
    # Xeon's "Intel(R) Xeon(R) Processor @ 2.80GHz" reads "Intel Xeon @ 2.80 GHz".
    words = [w for w in re.split(r"\(R\)|\(TM\)|\s+|GHz", _cpu_model_name()) if w]
    for options in ({}, {"precision": "bfloat16", "backend": "torch"}, {"precision": "float32"}):
        predict(denoiser, image, device="cpu", progress=False, **options)
        line, hint = backends.describe_path("cpu", **options)
        backend, precision = built[-1]
        assert line.startswith(f"{labels[backend]} · {precision} · CPU ("), (options, line)
        assert all(w in line for w in words if w != "Processor"), line
        assert hint is None  # OpenVINO is installed and there is no GPU driver here
    assert backends.describe_path() == backends.describe_path("auto", "auto", "auto")
    assert backends.describe_path()[0].startswith("OpenVINO · ")


def test_describe_path_hints_at_openvino_when_it_is_missing(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    line, hint = backends.describe_path("cpu", "float32")
    assert line.startswith("PyTorch · float32 · CPU (")
    assert hint == "OpenVINO is not installed: pip install openvino makes CPU restoration faster."
    assert backends.describe_path("cpu", "float32", "torch")[1] is None  # the user chose torch
    with pytest.raises(DebcrError, match="not installed; install it with pip install openvino"):
        backends.describe_path("cpu", backend="openvino")
    with pytest.raises(DebcrError, match="backend must be one of"):
        backends.describe_path(backend="tpu")
    with pytest.raises(DebcrError, match="unknown precision 'fp8'"):
        backends.describe_path(precision="fp8")


def test_runners_are_reused_until_the_weights_change() -> None:
    model = init("2D_denoising")
    cpu = resolve_device("cpu")
    first = make_runner(model, "torch", cpu, "float32")
    assert make_runner(model, "torch", cpu, "float32") is first
    with torch.no_grad():
        model.inverse_net.head0.bias.add_(0.5)
    changed = make_runner(model, "torch", cpu, "float32")
    assert changed is not first
    tiles = _normalised_fmd(128)[:, 0].numpy()
    assert np.abs(changed.run(tiles) - first.run(tiles)).max() == pytest.approx(0.5, abs=1e-4)


def test_predict_rejects_an_unknown_backend_and_precision(denoiser) -> None:
    image = fmd_frame(19)[:64, :64]
    with pytest.raises(DebcrError, match=r"backend must be one of .*'openvino'.*got 'tpu'"):
        predict(denoiser, image, backend="tpu", progress=False)
    with pytest.raises(DebcrError, match="float64"):
        predict(denoiser, image, precision="float64", progress=False)


def test_cli_backend_and_precision_options(tmp_path, denoiser, capsys) -> None:
    import tifffile

    from debcr.cli import main

    image = fmd_frame(19)[:200, :248]
    tifffile.imwrite(tmp_path / "raw.tif", image)
    out = tmp_path / "restored.tif"
    args = ["predict", str(tmp_path / "raw.tif"), "-o", str(out), "-q"]
    assert main([*args, "--backend", "torch", "--precision", "float32"]) == 0
    expected = predict(denoiser, image, backend="torch", precision="float32", progress=False)
    np.testing.assert_allclose(tifffile.imread(out), expected, rtol=0, atol=1e-3)
    with pytest.raises(SystemExit) as stop:
        main([*args, "--overwrite", "--backend", "tpu"])
    assert stop.value.code == 2
    assert "invalid choice: 'tpu'" in capsys.readouterr().err
