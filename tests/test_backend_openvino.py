"""The OpenVINO backend: agreement with PyTorch on a real image, and its conversion cache."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import openvino  # a test dependency: these tests must not be skipped
import pytest
import torch

from conftest import FMD
from debcr.backends import openvino_runner
from debcr.backends.openvino_runner import OpenVINORunner, cache_dir, cache_key
from debcr.data.normalize import normalize
from debcr.errors import DebcrError, ModelFileError
from debcr.model import predict
from debcr.modelfile import load_model, tensor_checksum
from debcr.samples import nuclei
from debcr.weights import PRETRAINED

LOGGER = "debcr.backends.openvino_runner"


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """The bundled noisy nuclei sample, percentile-normalised (512×512 float32)."""
    return normalize(nuclei()[0].astype(np.float32))


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory, denoiser) -> Path:
    """A cache folder holding the built-in denoiser's conversion (converted once here)."""
    root = tmp_path_factory.mktemp("debcr-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEBCR_CACHE_DIR", str(root))
        OpenVINORunner(denoiser, "float32", threads=1)
    return root


@pytest.fixture
def cache(shared_cache, monkeypatch) -> Path:
    """``$DEBCR_CACHE_DIR`` for one test: the shared cache, converted model included."""
    monkeypatch.setenv("DEBCR_CACHE_DIR", str(shared_cache))
    return shared_cache


@pytest.fixture
def private_cache(shared_cache, tmp_path, monkeypatch) -> Path:
    """A copy of the shared cache that a test may damage."""
    root = tmp_path / "cache"
    shutil.copytree(shared_cache, root)
    monkeypatch.setenv("DEBCR_CACHE_DIR", str(root))
    return root


def _ir(model: torch.nn.Module) -> tuple[Path, Path]:
    stem = cache_dir() / cache_key(model)
    return stem.with_suffix(".xml"), stem.with_suffix(".bin")


def _restore(model: torch.nn.Module, tiles: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.restore(torch.from_numpy(tiles[:, None])).numpy()[:, 0]


def _crops(image: np.ndarray) -> list[np.ndarray]:
    """Real-image tiles of several geometries (batches), all from one conversion."""
    return [
        np.stack([image[128:384, 128:384], image[:256, 256:]]),  # 2 × 256×256
        image[None, 300:432, 40:240],  # 132×200
        image[None, 200:204, 200:208],  # 4×8, the smallest
    ]


def test_importing_debcr_does_not_import_openvino() -> None:
    code = (
        "import sys, debcr, debcr.model, debcr.backends, debcr.backends.openvino_runner\n"
        "assert 'openvino' not in sys.modules, 'openvino imported eagerly'\n"
        "assert debcr.backends.openvino_runner.available()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.slow
def test_float32_matches_torch_on_a_real_image(cache, denoiser, image) -> None:
    runner = OpenVINORunner(denoiser, "float32", threads=1)
    assert (runner.backend, runner.precision) == ("openvino", "float32")
    for tiles in _crops(image):
        got = runner.run(tiles)
        want = _restore(denoiser, tiles)
        assert got.dtype == np.float32 and got.shape == tiles.shape
        assert np.abs(got - want).max() <= 1e-4, tiles.shape
    # Two streams (two threads) run tiles concurrently; results come back in input order.
    parallel = OpenVINORunner(denoiser, "float32", threads=2, streams=2)
    assert parallel.streams == 2 and runner.streams == 1
    tiles = np.concatenate([_crops(image)[0], image[None, 256:, 256:]])
    got = parallel.run(tiles)
    assert np.abs(got - _restore(denoiser, tiles)).max() <= 1e-4
    np.testing.assert_allclose(parallel.run(tiles[::-1]), got[::-1], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_bfloat16_is_close_to_torch_float32(cache, denoiser, image) -> None:
    runner = OpenVINORunner(denoiser, "bfloat16", threads=1)
    assert runner.precision == "bfloat16"
    for tiles in _crops(image)[:2]:
        diff = np.abs(runner.run(tiles) - _restore(denoiser, tiles))
        # Measured on an avx512_bf16 CPU: max 0.004–0.0054, mean 0.00022–0.0003.
        assert diff.max() <= 0.02, tiles.shape
        assert diff.mean() <= 0.001, tiles.shape


def test_shapes_not_divisible_by_4_are_refused(cache, denoiser) -> None:
    runner = OpenVINORunner(denoiser, "float32", threads=1)
    with pytest.raises(DebcrError, match=r"\(1, 130, 200\)"):
        runner.run(np.zeros((1, 130, 200), np.float32))
    with pytest.raises(DebcrError, match=r"\(2, 64, 66\)"):
        runner.run(np.zeros((2, 64, 66), np.float32))
    with pytest.raises(DebcrError, match=r"\(64, 64\)"):
        runner.run(np.zeros((64, 64), np.float32))
    assert runner.run(np.zeros((0, 64, 64), np.float32)).shape == (0, 64, 64)


def test_the_conversion_is_cached(cache, denoiser, caplog) -> None:
    xml, weights = _ir(denoiser)
    assert xml.parent == cache / "openvino"
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (xml, weights)]
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        OpenVINORunner(denoiser, "bfloat16", threads=1)
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in (xml, weights)] == before
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert not any("converting" in m for m in messages), messages
    assert any("from the cache" in m for m in messages), messages
    # No leftovers of the atomic write.
    assert sorted(p.name for p in xml.parent.iterdir() if p.is_file()) == sorted(
        [xml.name, weights.name, xml.with_suffix(".sha256").name]
    )


def test_the_cache_key_names_weights_form_and_openvino(denoiser, monkeypatch) -> None:
    key = cache_key(denoiser)
    assert f"form{openvino_runner.FORM_VERSION}" in key
    assert openvino.__version__.split("-")[0].replace(".", "_") in key
    monkeypatch.setattr(openvino_runner, "FORM_VERSION", openvino_runner.FORM_VERSION + 1)
    assert cache_key(denoiser) != key


def test_the_cache_dir_defaults_to_the_user_cache(monkeypatch) -> None:
    monkeypatch.setenv("DEBCR_CACHE_DIR", "/somewhere/else")
    assert cache_dir() == Path("/somewhere/else/openvino")
    monkeypatch.delenv("DEBCR_CACHE_DIR")
    import platformdirs

    assert cache_dir() == Path(platformdirs.user_cache_dir("debcr")) / "openvino"


@pytest.mark.slow
def test_a_changed_model_is_converted_again(private_cache, denoiser, image, caplog) -> None:
    changed = copy.deepcopy(denoiser)
    with torch.no_grad():
        changed.inverse_net.head0.bias.add_(0.25)
    old, new = _ir(denoiser), _ir(changed)
    assert old[0] != new[0] and not new[0].exists()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        runner = OpenVINORunner(changed, "float32", threads=1)
    assert any("converting" in r.getMessage() for r in caplog.records)
    assert new[0].is_file() and new[1].is_file() and old[0].is_file()
    tiles = _crops(image)[1]
    got = runner.run(tiles)
    assert np.abs(got - _restore(changed, tiles)).max() <= 1e-4
    assert np.abs(got - _restore(denoiser, tiles)).max() > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["xml", "bin"])
def test_a_corrupt_cache_entry_is_rebuilt(
    private_cache, denoiser, image, caplog, damaged: str
) -> None:
    xml, weights = _ir(denoiser)
    path = xml if damaged == "xml" else weights
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        runner = OpenVINORunner(denoiser, "float32", threads=1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot be used" in warnings[0].getMessage()
    # Rebuilt from the conversion shipped with debcr: a built-in model needs no converting.
    assert any("loaded the shipped" in r.getMessage() for r in caplog.records)
    assert not any("converting" in r.getMessage() for r in caplog.records)
    tiles = _crops(image)[1]
    assert np.abs(runner.run(tiles) - _restore(denoiser, tiles)).max() <= 1e-4
    # The rebuilt entry is whole again: the next runner loads it without converting.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        OpenVINORunner(denoiser, "float32", threads=1)
    assert not caplog.records


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


@pytest.fixture
def shipped(tmp_path, monkeypatch) -> Path:
    """A copy of the shipped conversions (`openvino_runner.SHIPPED`) that a test may damage,
    and an empty cache."""
    folder = tmp_path / "shipped"
    shutil.copytree(openvino_runner.SHIPPED, folder)
    monkeypatch.setattr(openvino_runner, "SHIPPED", folder)
    monkeypatch.setenv("DEBCR_CACHE_DIR", str(tmp_path / "empty-cache"))
    return folder


def test_the_shipped_conversions_are_those_of_the_built_in_weights() -> None:
    """Every built-in model ships its conversion, of the current network form, intact."""
    manifest = json.loads((openvino_runner.SHIPPED / "manifest.json").read_text())
    assert manifest["form_version"] == openvino_runner.FORM_VERSION, (
        "FORM_VERSION changed: run openvino_runner.write_shipped() to convert the built-ins again"
    )
    by_name = {entry["name"]: (checksum, entry) for checksum, entry in manifest["models"].items()}
    assert sorted(by_name) == sorted(PRETRAINED)
    for name, (checksum, entry) in by_name.items():
        assert tensor_checksum(load_model(PRETRAINED[name].path).state_dict()) == checksum
        for suffix in ("xml", "bin"):
            data = (openvino_runner.SHIPPED / f"{name}.{suffix}").read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry[suffix], (name, suffix)


@pytest.mark.slow
def test_a_built_in_model_starts_from_its_shipped_conversion(
    tmp_path, monkeypatch, denoiser, image, caplog
) -> None:
    """An empty cache, as in a fresh environment: nothing is converted, the cache is filled."""
    monkeypatch.setenv("DEBCR_CACHE_DIR", str(tmp_path / "fresh"))
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        runner = OpenVINORunner(denoiser, "float32", threads=1)
    messages = _messages(caplog)
    assert not any("converting" in m for m in messages), messages
    assert any("loaded the shipped OpenVINO model of 2D_denoising" in m for m in messages)
    assert all(path.is_file() for path in _ir(denoiser))
    tiles = _crops(image)[0]
    assert np.abs(runner.run(tiles) - _restore(denoiser, tiles)).max() <= 1e-4
    # The next runner reads the cache entry written from it.
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        OpenVINORunner(denoiser, "float32", threads=1)
    assert any("from the cache" in m for m in _messages(caplog))


@pytest.mark.slow
def test_a_damaged_shipped_conversion_is_caught_and_converted(
    shipped, denoiser, image, caplog
) -> None:
    path = shipped / "2D_denoising.bin"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        runner = OpenVINORunner(denoiser, "float32", threads=1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "shipped OpenVINO model" in warnings[0], warnings
    assert "does not match its checksum" in warnings[0]
    assert any("converting" in m for m in _messages(caplog))
    tiles = _crops(image)[1]
    assert np.abs(runner.run(tiles) - _restore(denoiser, tiles)).max() <= 1e-4


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"form_version": openvino_runner.FORM_VERSION - 1}, "of network form"),
        ({"openvino": "2999.1.0"}, "later than the installed"),
    ],
)
def test_a_stale_shipped_conversion_is_not_used(
    shipped, denoiser, caplog, change: dict, said: str
) -> None:
    """Of an older network form, or written by a later OpenVINO: converted instead (the
    conversion itself is shown in the damaged test above)."""
    path = shipped / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        found = openvino_runner._shipped(openvino.Core(), tensor_checksum(denoiser.state_dict()))
    assert found is None
    assert any(said in m and "converting" in m for m in _messages(caplog)), _messages(caplog)


def test_default_tiles_follow_backend_and_precision(cache, denoiser, caplog) -> None:
    # OpenVINO in float32 holds twice bfloat16's activations: smaller tiles keep a disk-to-disk
    # restoration under 1.5 GB (benchmarks/bench_predict.py --part b --disk-tile).
    image = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    tiles = {}
    for backend, precision in [
        ("openvino", "float32"),
        ("openvino", "bfloat16"),
        ("torch", "float32"),
    ]:
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="debcr.inference"):
            predict(denoiser, image, backend=backend, precision=precision, progress=False)
        (line,) = [r.getMessage() for r in caplog.records if "restoring with" in r.getMessage()]
        tiles[backend, precision] = int(re.search(r"tile (\d+)", line).group(1))
    assert tiles == {
        ("openvino", "float32"): 768,
        ("openvino", "bfloat16"): 1024,
        ("torch", "float32"): 512,
    }


@pytest.mark.slow
def test_a_built_in_model_restores_without_importing_torch(tmp_path, denoiser) -> None:
    """`debcr predict` with a built-in model on the CPU needs only its file's header and the
    shipped conversion: torch (about a second of every start) is never imported, and the
    result is the one of the loaded network run by OpenVINO."""
    source = FMD / "raw" / "20" / "HV110_P0500510003.png"  # a field not used elsewhere here
    out = tmp_path / "restored.tif"
    code = (
        "import sys\n"
        "from debcr.cli import main\n"
        f"rc = main(['predict', {str(source)!r}, '-o', {str(out)!r}, '-q',"
        " '--precision', 'float32'])\n"
        "assert rc == 0, rc\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'openvino' in sys.modules, 'not restored by OpenVINO'\n"
    )
    env = {**os.environ, "DEBCR_CACHE_DIR": str(tmp_path / "fresh-cache")}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env=env)
    loaded = predict(denoiser, source, precision="float32", backend="openvino", progress=False)
    import tifffile

    restored = tifffile.imread(out)
    assert restored.shape == loaded.shape == (512, 512)
    assert np.abs(restored - loaded).max() <= 1e-4 * float(np.ptp(loaded))


def test_a_damaged_model_file_is_refused_though_its_conversion_is_kept(tmp_path, cache) -> None:
    """Restoring from a file's header alone must not let damaged weights pass: a copy of a
    built-in model (whose conversion ships) with flipped weight bytes is refused."""
    path = tmp_path / "copy.safetensors"
    data = bytearray(PRETRAINED["2D_denoising"].path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start + 1000] ^= 0x5A
    path.write_bytes(bytes(data))
    image = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    with pytest.raises(ModelFileError, match=r"copy\.safetensors is damaged"):
        predict(path, image, backend="openvino", progress=False)
