"""Guarantees about model files and what is derived from them.

* The OpenVINO cache entry carries the checksums of its files and is converted again when it
  does not match them (damaged bytes, a ``.bin`` of another model), also in a read-only folder.
* A BioImage Model Zoo package is checked from its zip directory before any entry is read
  (entry sizes and compression ratios), and damaged or malformed packages and model files end
  in one :class:`~debcr.errors.ModelFileError` sentence naming the file, never a traceback
  and never running a pickle's code.
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import pickle
import shutil
import subprocess
import sys
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from conftest import small_disk
from debcr.backends.openvino_runner import OpenVINORunner, cache_dir, cache_key
from debcr.data.normalize import normalize
from debcr.errors import ModelFileError
from debcr.model import init, save
from debcr.samples import nuclei

LOGGER = "debcr.backends.openvino_runner"


# --- the OpenVINO cache ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiles() -> np.ndarray:
    """A real-image tile: the bundled noisy nuclei sample, normalised, 132×200."""
    return normalize(nuclei()[0].astype(np.float32))[None, 300:432, 40:240]


@pytest.fixture(scope="module")
def converted(tmp_path_factory, denoiser) -> Path:
    """A cache folder holding the built-in denoiser's conversion (converted once here)."""
    root = tmp_path_factory.mktemp("ov-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEBCR_CACHE_DIR", str(root))
        OpenVINORunner(denoiser, "float32", threads=1)
    return root


@pytest.fixture
def ov_cache(converted, tmp_path, monkeypatch) -> Path:
    """A private copy of the converted cache (``$DEBCR_CACHE_DIR``) that a test may damage."""
    root = tmp_path / "cache"
    shutil.copytree(converted, root)
    monkeypatch.setenv("DEBCR_CACHE_DIR", str(root))
    return root


def _entry(model: torch.nn.Module) -> tuple[Path, Path, Path]:
    stem = cache_dir() / cache_key(model)
    return tuple(Path(f"{stem}{suffix}") for suffix in (".xml", ".bin", ".sha256"))


def _torch(model: torch.nn.Module, tiles: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.restore(torch.from_numpy(tiles[:, None])).numpy()[:, 0]


def _flip_50_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(50):
        data[len(data) // 3 + 997 * i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.slow  # the module's conversion takes ~9 s
def test_the_cache_holds_only_checksummed_files(ov_cache, denoiser, tiles) -> None:
    OpenVINORunner(denoiser, "float32", threads=1).run(tiles)  # converted, compiled, run
    xml, weights, sums = _entry(denoiser)
    expected = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in (xml, weights)}
    # sha256sum format, so `sha256sum -c` checks an entry by hand.
    lines = sums.read_text().splitlines()
    assert dict(reversed(line.split("  ")) for line in lines) == expected
    # No compiled blobs either: OpenVINO's own cache has no checksums (its damage went unseen).
    files = sorted(p.relative_to(ov_cache).as_posix() for p in ov_cache.rglob("*") if p.is_file())
    assert files == sorted(f"openvino/{path.name}" for path in (xml, weights, sums))


def _runner_warnings(model, caplog) -> tuple[OpenVINORunner, list[str]]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        runner = OpenVINORunner(model, "float32", threads=1)
    return runner, [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.slow
def test_flipped_bytes_in_the_cached_weights_are_caught_and_rebuilt(
    ov_cache, denoiser, tiles, caplog
) -> None:
    _, weights, _ = _entry(denoiser)
    _flip_50_bytes(weights)
    runner, warnings = _runner_warnings(denoiser, caplog)
    assert len(warnings) == 1 and "do not match the checksums" in warnings[0], warnings
    got = runner.run(tiles)
    assert np.isfinite(got).all() and np.abs(got - _torch(denoiser, tiles)).max() <= 1e-4
    # Rebuilt whole: the next runner loads it without a word.
    assert _runner_warnings(denoiser, caplog)[1] == []


@pytest.mark.slow
def test_weights_swapped_in_from_another_model_are_caught_and_rebuilt(
    ov_cache, denoiser, tiles, caplog
) -> None:
    other = copy.deepcopy(denoiser)
    with torch.no_grad():
        other.inverse_net.head0.bias.add_(0.25)
    OpenVINORunner(other, "float32", threads=1)
    # The other model's .bin has the same layout and size: only its checksum tells them apart.
    shutil.copyfile(_entry(other)[1], _entry(denoiser)[1])
    runner, warnings = _runner_warnings(denoiser, caplog)
    assert len(warnings) == 1 and "do not match the checksums" in warnings[0], warnings
    assert np.abs(runner.run(tiles) - _torch(denoiser, tiles)).max() <= 1e-4


@pytest.fixture
def read_only_cache(ov_cache, monkeypatch) -> Iterator[Path]:
    """``ov_cache`` on its own tmpfs, remounted read-only by the test (unmounted after)."""
    with small_disk(ov_cache.parent / "mount", "16m") as mount:
        shutil.copytree(ov_cache, mount, dirs_exist_ok=True)
        monkeypatch.setenv("DEBCR_CACHE_DIR", str(mount))
        yield mount


@pytest.mark.slow
def test_a_damaged_entry_in_a_read_only_cache_is_not_used(
    read_only_cache, denoiser, tiles, caplog
) -> None:
    _flip_50_bytes(_entry(denoiser)[1])
    subprocess.run(["mount", "-o", "remount,ro", read_only_cache], check=True)
    runner, warnings = _runner_warnings(denoiser, caplog)
    assert len(warnings) == 2, warnings
    assert "do not match the checksums" in warnings[0] and "cannot cache" in warnings[1]
    assert np.abs(runner.run(tiles) - _torch(denoiser, tiles)).max() <= 1e-4


# --- BioImage Model Zoo packages -------------------------------------------------------------


def _files(package: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(package) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


class _Zeros(int):
    """A file of this many zero bytes, written to a zip in chunks (never held in memory)."""


def _pack(files: dict[str, bytes | _Zeros], target: Path) -> Path:
    # Level 1: the bombs below are compressed in a second or less.
    chunk = bytes(16 << 20)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, data in files.items():
            if not isinstance(data, _Zeros):
                zf.writestr(name, data)
                continue
            with zf.open(name, "w") as fh:
                for start in range(0, data, len(chunk)):
                    fh.write(chunk[: data - start])
    return target


def _edit_rdf(files: dict[str, bytes], change: Callable[[dict], None]) -> None:
    rdf = yaml.safe_load(files["rdf.yaml"])
    change(rdf)
    files["rdf.yaml"] = yaml.safe_dump(rdf).encode()


def _replace(files: dict[str, bytes], name: str, data: bytes) -> None:
    """Replace file ``name`` and its sha256 in the description (so its content is what fails)."""
    old, new = hashlib.sha256(files[name]).hexdigest(), hashlib.sha256(data).hexdigest()
    files[name] = data
    files["rdf.yaml"] = files["rdf.yaml"].replace(old.encode(), new.encode())


def _one_sentence(exc: pytest.ExceptionInfo, package: Path, *words: str) -> None:
    message = str(exc.value)
    assert "\n" not in message and str(package) in message, message
    for word in words:
        assert word in message, message


@pytest.fixture(scope="module")
def package_files(bmz_package) -> dict[str, bytes]:
    """The files of the session's exported package (damaged copies are made of these)."""
    return _files(bmz_package[0])


def _bomb(entry: str, size: int) -> Callable[[dict], None]:
    return lambda files: files.__setitem__(entry, _Zeros(size))


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        # The reported 3.3 MB package with 1 GiB of weights (2-5 s to write): refused from
        # its zip directory.
        (_bomb("weights.pt", 1 << 30), ["weights.pt alone 1024.0 MiB", "512.0 MiB"]),
        (_bomb("weights.pt", 96 << 20), ["weights.pt holds 96.0 MiB", "64.0 MiB"]),
        (_bomb("weights.pt", 48 << 20), ["weights.pt unpacks", "times its packed size"]),
        (_bomb("rdf.yaml", 2 << 20), ["rdf.yaml holds 2.0 MiB", "1.0 MiB"]),
        (_bomb("mrbcr.py", 2 << 20), ["mrbcr.py holds 2.0 MiB", "1.0 MiB"]),
        (_bomb("debcr_model.json", 2 << 20), ["debcr_model.json holds 2.0 MiB"]),
    ],
    ids=["1GiB-weights", "96MiB-weights", "compression-ratio", "rdf", "architecture", "json"],
)
@pytest.mark.slow  # the session's exported package (1-2 min, shared with test_export.py)
def test_oversized_package_entries_are_refused_before_they_are_read(
    package_files, tmp_path, damage, words
) -> None:
    files = dict(package_files)
    damage(files)
    package = _pack(files, tmp_path / "bomb.zip")
    assert package.stat().st_size < 8 << 20  # a small download
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError) as exc:
            init(package)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _one_sentence(exc, package, *words)
    assert "cannot be read" not in str(exc.value)  # refused for its size, not by zlib
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB allocated to refuse {package}"


@pytest.mark.slow  # the session's exported package (1-2 min, shared with test_export.py)
def test_a_damaged_compressed_entry_is_refused_in_one_sentence(package_files, tmp_path) -> None:
    package = _pack(package_files, tmp_path / "damaged.zip")
    data = bytearray(package.read_bytes())
    with zipfile.ZipFile(package) as zf:
        info = zf.getinfo("weights.pt")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(20):  # inside the deflate stream of the weights
        data[start + 1000 + 37 * i] ^= 0xFF
    package.write_bytes(bytes(data))
    with pytest.raises(ModelFileError) as exc:
        init(package)
    _one_sentence(exc, package, "weights.pt cannot be read, the package is damaged")


class _CreatesAFile:
    """A pickle that creates ``marker`` when it is unpickled (if its code ever ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _torch_saved(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"head0.weight": _CreatesAFile(marker)}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("payload", ["random bytes", "pickle", "torch.save pickle"])
@pytest.mark.slow  # the session's exported package (1-2 min, shared with test_export.py)
def test_weights_that_are_not_tensors_are_refused_and_never_run(
    package_files, tmp_path, payload
) -> None:
    marker = tmp_path / "the pickle ran"
    data = {
        "random bytes": lambda: np.random.default_rng(0).bytes(len(package_files["weights.pt"])),
        "pickle": lambda: pickle.dumps(_CreatesAFile(marker)),
        "torch.save pickle": lambda: _torch_saved(marker),
    }[payload]()
    assert not marker.exists()
    files = dict(package_files)
    _replace(files, "weights.pt", data)
    package = _pack(files, tmp_path / "weights.zip")
    with pytest.raises(ModelFileError) as exc:
        init(package)
    _one_sentence(exc, package, "weights.pt is not a PyTorch state dict")
    assert not marker.exists()


def _set(*keys_and_value) -> Callable[[dict], None]:
    *keys, value = keys_and_value

    def change(rdf: dict) -> None:
        for key in keys[:-1]:
            rdf = rdf[key]
        rdf[keys[-1]] = value

    return change


MALFORMED = {
    "weights-list": (_set("weights", ["x"]), "weights in the package's description must be a"),
    "inputs-str": (_set("inputs", "x"), "inputs in the package's description must be a list"),
    "input-str": (_set("inputs", ["x"]), "inputs[0] in the package's description must be a"),
    "attachments-str": (_set("attachments", "x"), "attachments in the package's description"),
    "architecture-list": (
        _set("weights", "pytorch_state_dict", "architecture", ["x"]),
        "architecture in the package's description must be a mapping",
    ),
    "source-number": (
        _set("weights", "pytorch_state_dict", "source", 3),
        "weights file has no source file name",
    ),
    "source-outside": (
        _set("weights", "pytorch_state_dict", "source", "../weights.pt"),
        "'../weights.pt' lies outside the package",
    ),
    "source-absolute": (
        _set("weights", "pytorch_state_dict", "source", "/etc/passwd"),
        "'/etc/passwd' lies outside the package",
    ),
    "halo-text": (_set("config", "debcr", "halo", "wide"), "halo in the package's description"),
    "percentile-text": (
        lambda rdf: rdf["inputs"][0]["preprocessing"][1]["kwargs"].update(min_percentile="low"),
        "scale_range percentiles in the package's description are not numbers",
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
@pytest.mark.slow  # the session's exported package (1-2 min, shared with test_export.py)
def test_descriptions_of_the_wrong_shape_are_refused_in_one_sentence(
    package_files, tmp_path, case
) -> None:
    change, words = MALFORMED[case]
    files = dict(package_files)
    _edit_rdf(files, change)
    package = _pack(files, tmp_path / "malformed.zip")
    with pytest.raises(ModelFileError) as exc:
        init(package)
    _one_sentence(exc, package, words)


@pytest.mark.parametrize(
    ("rdf", "words"),
    [
        (b"- weights\n- inputs\n", "rdf.yaml holds a list ['weights', 'inputs'], not a model"),
        # A !!python tag is refused by the safe loader, never constructed (no file appears).
        (
            b"type: model\nname: !!python/object/apply:builtins.open ['{marker}', 'w']\n",
            "rdf.yaml is not valid YAML (could not determine a constructor",
        ),
    ],
    ids=["list", "python-tag"],
)
@pytest.mark.slow  # the session's exported package (1-2 min, shared with test_export.py)
def test_a_malformed_rdf_yaml_is_refused_in_one_sentence(
    package_files, tmp_path, rdf, words
) -> None:
    marker = tmp_path / "the tag ran"
    files = {**package_files, "rdf.yaml": rdf.replace(b"{marker}", str(marker).encode())}
    package = _pack(files, tmp_path / "rdf.zip")
    with pytest.raises(ModelFileError) as exc:
        init(package)
    _one_sentence(exc, package, words)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("json_text", "words"),
    [
        (b'["name", "2D_denoising"]', "debcr_model.json holds a list ['name', '2D_denoising']"),
        (b'{"name": "2D_den', "debcr_model.json is not valid JSON"),
        (b'{"halo_bfloat16": -8}', "debcr_model.json: the halo_bfloat16 in its metadata is -8"),
    ],
    ids=["list", "truncated", "halo"],
)
@pytest.mark.slow  # the session's exported package (1-2 min, shared with test_export.py)
def test_a_malformed_model_description_is_refused_in_one_sentence(
    package_files, tmp_path, json_text, words
) -> None:
    files = dict(package_files)
    _replace(files, "debcr_model.json", json_text)
    package = _pack(files, tmp_path / "json.zip")
    with pytest.raises(ModelFileError) as exc:
        init(package)
    _one_sentence(exc, package, words)


@pytest.mark.slow  # the session's exported package (1-2 min, shared with test_export.py)
def test_entries_named_outside_the_package_are_never_written(
    package_files, tmp_path, monkeypatch
) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    escaped = {"../../escaped.txt": b"x", str(tmp_path / "absolute.txt"): b"x"}
    package = _pack({**package_files, **escaped}, work / "escape.zip")
    assert init(package).metadata["name"]  # the model itself is fine and loads
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert written == ["a", "a/b", "a/b/escape.zip"]


@pytest.mark.slow  # the session's exported package, and a fresh interpreter (~7 s)
def test_the_cli_refuses_a_package_with_pickled_weights_in_one_line(
    package_files, tmp_path
) -> None:
    marker = tmp_path / "the pickle ran"
    files = dict(package_files)
    _replace(files, "weights.pt", pickle.dumps(_CreatesAFile(marker)))
    package = _pack(files, tmp_path / "pickled.zip")
    image, out = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(image, nuclei()[0])
    result = subprocess.run(
        [sys.executable, "-m", "debcr.cli", "predict", image, "-o", out, "--model", package],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(package) in lines[0] and "weights.pt" in lines[0], lines
    assert not out.exists() and not marker.exists()


# --- debcr model files -----------------------------------------------------------------------


def _rewrite_model_file(source: Path, target: Path, change: Callable[[dict], None]) -> Path:
    """``source`` with its header metadata changed by ``change`` (the tensors as they are)."""
    from safetensors.torch import load_file, save_file

    from debcr.modelfile import read_header

    header = read_header(source)
    change(header)
    save_file(load_file(source), target, metadata=header)
    return target


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, denoiser) -> Path:
    return save(denoiser, tmp_path_factory.mktemp("model") / "denoiser.safetensors")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda h: h.update(metadata='["2D_denoising"]'), "its metadata is a JSON list"),
        (lambda h: h.update(metadata='{"task": '), "its metadata is not valid JSON"),
        (lambda h: h.update(format_version="one"), "has the format_version 'one', not a number"),
        (lambda h: h.update(metadata='{"halo": "wide"}'), "the halo in its metadata is 'wide'"),
        (
            lambda h: h.update(metadata='{"normalization": "percentile"}'),
            "the normalization in its metadata is 'percentile', not an object",
        ),
    ],
    ids=["metadata-list", "metadata-truncated", "format-version-text", "halo", "normalization"],
)
def test_a_model_file_with_malformed_metadata_is_refused_in_one_sentence(
    model_file, tmp_path, change, words
) -> None:
    path = _rewrite_model_file(model_file, tmp_path / "bad.safetensors", change)
    with pytest.raises(ModelFileError) as exc:
        init(path)
    _one_sentence(exc, path, words)


@pytest.mark.parametrize("header", [b"[1, 2]", b'{"__metadata__": ["format"]}'])
def test_a_model_file_whose_header_is_not_an_object_is_refused(tmp_path, header) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(64))
    with pytest.raises(ModelFileError) as exc:
        init(path)
    _one_sentence(exc, path, "is not a safetensors model file", "not an object")
