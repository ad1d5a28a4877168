"""A BioImage Model Zoo package as its consumers run it, without debcr.

The Zoo's model test (run by every export) checks that each weight format reproduces the test
output on the unpadded test input. These tests add what a consumer meets beyond it: the ONNX
weights in the older ONNX Runtime that Java consumers (deepImageJ, QuPath) ship,
``bioimageio.core``'s own tiled prediction at the image border, the sample tensors and the
warnings of the Zoo's checks, and who the package names as its authors.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import tifffile
import yaml

from conftest import fmd_frame
from debcr.data import normalize
from debcr.interop.bmz import BMZExport
from debcr.interop.bmz.card import ORIGINAL_AUTHORS, model_card
from debcr.interop.bmz.export import (
    TensorSettings,
    check_description,
    package_description,
    project_repository,
)
from debcr.interop.portable import ONNX_IR_VERSION, ONNX_OPSET
from debcr.model import predict

#: The ONNX Runtime of deepImageJ and QuPath's current releases (1.15 to 1.17 refuse IR 10).
OLD_ONNXRUNTIME = "1.17.3"
#: The original TensorFlow code, which the package cites but which is not its repository.
ORIGINAL_REPOSITORY = "https://github.com/leeroyhannover/DeBCR"


def _rdf(path: Path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return yaml.safe_load(zf.read("rdf.yaml"))


def _member(path: Path, entry: dict | str) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(entry["source"] if isinstance(entry, dict) else entry)


# --- ONNX in the ONNX Runtime of Java consumers ---------------------------------------------


@pytest.fixture(scope="module")
def old_onnxruntime(tmp_path_factory) -> Path:
    """The Python of a fresh virtual environment with ONNX Runtime 1.17.3 (and numpy < 2).

    Created once per test session (pip installs from the package index, ~1–2 min); skips the
    tests that need it where the index cannot be reached.
    """
    env = tmp_path_factory.mktemp("onnxruntime_old")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    done = subprocess.run(
        [*pip, "--only-binary=:all:", f"onnxruntime=={OLD_ONNXRUNTIME}", "numpy<2"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot install onnxruntime {OLD_ONNXRUNTIME}: {done.stderr[-500:]}")
    return python


_RUN_ONNX = """
import sys
import numpy as np
import onnxruntime
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
np.save(sys.argv[3], session.run(None, {"input": np.load(sys.argv[2])})[0])
print(onnxruntime.__version__)
"""


@pytest.mark.slow
def test_package_onnx_runs_in_the_onnx_runtime_of_java_consumers(
    bmz_package, old_onnxruntime, denoiser, tmp_path
) -> None:
    path, _ = bmz_package
    weights = _member(path, _rdf(path)["weights"]["onnx"])
    proto = onnx.load_from_string(weights)
    # The lowest IR the opset allows, and a graph valid at that IR.
    assert proto.ir_version == ONNX_IR_VERSION
    assert ONNX_IR_VERSION == onnx.helper.find_min_ir_version_for(list(proto.opset_import))
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", ONNX_OPSET)]
    onnx.checker.check_model(proto, full_check=True)

    model_file = tmp_path / "weights.onnx"
    model_file.write_bytes(weights)
    frame = normalize(fmd_frame(19, 3), clip=False, dtype=np.float32)
    crops = np.stack([frame[:196, :260], frame[300:496, 200:460]])
    np.save(tmp_path / "input.npy", crops[:, None])
    files = [model_file, tmp_path / "input.npy", tmp_path / "output.npy"]
    done = subprocess.run(
        [str(old_onnxruntime), "-c", _RUN_ONNX, *map(str, files)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONNOUSERSITE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == OLD_ONNXRUNTIME
    got = np.load(tmp_path / "output.npy")[:, 0]
    # debcr's network output: no normalisation, no halo, the network's own units.
    expected = predict(
        denoiser,
        crops,
        normalize=False,
        units="normalized",
        halo=0,
        precision="float32",
        backend="torch",
        progress=False,
    )
    assert got.shape == expected.shape == crops.shape
    assert np.abs(got - expected).max() <= 1e-4


# --- bioimageio.core's prediction at the image border ---------------------------------------


@pytest.mark.slow
def test_bioimageio_core_prediction_equals_debcr_borders_included(bmz_package, denoiser) -> None:
    import bioimageio.core

    path, _ = bmz_package
    rdf = _rdf(path)
    assert rdf["inputs"][0]["pad"] == {"mode": "reflect"}
    image = fmd_frame(19, 7)[64:448, 64:448].astype(np.float32)
    halo = rdf["outputs"][0]["axes"][3]["halo"]
    size = rdf["inputs"][0]["axes"][3]["size"]
    # Tiles (min + n·step px with their halo) as large as the image allows: 2 × 2 here, each
    # padded where it meets the image border. Tiled, bioimageio.core takes the percentiles over
    # the image, as debcr does (untiled, over the padded image: docs/export.md).
    n = (image.shape[0] - size["min"]) // size["step"]
    sample = bioimageio.core.predict(model=path, inputs=image[None, None], blocksize_parameter=n)
    got = sample.members["output"].data.values[0, 0]
    expected = predict(
        denoiser, image, units="normalized", precision="float32", backend="torch", progress=False
    )
    assert got.shape == expected.shape
    difference = np.abs(got - expected)
    border = np.ones_like(difference, dtype=bool)
    border[halo:-halo, halo:-halo] = False
    # Symmetric padding (the Zoo's default) differs by up to 0.05 within the halo of the border.
    assert difference[border].max() <= 1e-4, difference[border].max()
    assert difference.max() <= 1e-4


# --- sample tensors and the Zoo's warnings ----------------------------------------------------


@pytest.mark.slow
def test_package_has_sample_tensors_and_shows_the_zoo_warnings(bmz_package) -> None:
    import imageio.v3 as iio

    path, result = bmz_package
    rdf = _rdf(path)
    for tensor in ("inputs", "outputs"):
        entry = rdf[tensor][0]
        sample = _member(path, entry["sample_tensor"])
        test = np.load(io.BytesIO(_member(path, entry["test_tensor"])))
        # As the Zoo reads it (imageio), the test tensor's image.
        np.testing.assert_array_equal(iio.imread(sample, extension=".tif"), test[0, 0])
        np.testing.assert_array_equal(tifffile.imread(io.BytesIO(sample)), test[0, 0])
    # Left: the Zoo asks for a maintainer with a GitHub user name, which the published
    # authors do not give (an exporter with one is listed: see below).
    assert [w for w in result.warnings if "sample_tensor" in w] == []
    assert len(result.warnings) == 1 and "github_user" in result.warnings[0]
    assert str(result).splitlines()[1:] == [f"warning: {w}" for w in result.warnings]


def test_export_result_shows_the_zoo_warnings(tmp_path) -> None:
    warning = "inputs.0.sample_tensor: Needs to be filled for FAIR compliance"
    result = BMZExport(
        tmp_path / "m.zip",
        3_300_000,
        "passed",
        (("Reproduce test outputs from test inputs (onnx)", "passed"),),
        {"onnx": 1e-6},
        "0.11.0",
        (warning,),
    )
    lines = str(result).splitlines()
    assert "1/1 checks passed, 1 warnings" in lines[0]
    assert lines[1:] == [f"warning: {warning}"]


# --- authors, packager and repository ---------------------------------------------------------


def _published(names: list[str]) -> bool:
    return names == [author["name"] for author in ORIGINAL_AUTHORS]


def test_exporting_a_builtin_keeps_its_authors_and_names_the_packager(denoiser) -> None:
    card = model_card(
        denoiser,
        authors=["Ada Lovelace", {"name": "Grace Hopper", "github_user": "ghopper"}, "Rui Li"],
    )
    rdf = package_description(card, TensorSettings(0.1, 99.9, halo=88), denoiser.metadata)
    check_description(rdf)
    assert _published([a["name"] for a in rdf["authors"]])
    # The published authors are not repeated among who packaged the weights.
    assert [p["name"] for p in rdf["packaged_by"]] == ["Ada Lovelace", "Grace Hopper"]
    assert rdf["maintainers"] == [{"name": "Grace Hopper", "github_user": "ghopper"}]
    # Without an exporter (or with the published authors) the package names no packager.
    plain = package_description(
        model_card(denoiser, authors=[a["name"] for a in ORIGINAL_AUTHORS]),
        TensorSettings(0.1, 99.9, halo=88),
        denoiser.metadata,
    )
    assert "packaged_by" not in plain and "maintainers" not in plain


@pytest.mark.slow
def test_package_names_this_projects_repository_and_cites_the_original(bmz_package) -> None:
    path, _ = bmz_package
    rdf = _rdf(path)
    assert _published([a["name"] for a in rdf["authors"]])
    # The architecture file is debcr's code: the original TensorFlow repository is cited, not
    # given as the package's repository.
    assert rdf.get("git_repo") != ORIGINAL_REPOSITORY
    assert rdf.get("git_repo") == project_repository()
    assert any(c.get("url") == ORIGINAL_REPOSITORY for c in rdf["cite"])
