"""Exports that travel: TorchScript, ONNX and BioImage Model Zoo packages, and reading them back.

The BMZ packages are checked by the Zoo's own test (``bioimageio.core``, offline, CPU) inside
:func:`debcr.model.export_bmz`; these tests add what the Zoo cannot know: that the exported
graphs reproduce our network and the original's outputs, that a package loads back into the
same model, and that damaged or foreign packages are refused clearly.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import yaml
from PIL import Image

from conftest import TASKS, fmd_frame
from debcr.cli import main
from debcr.config import TrainConfig
from debcr.data import crop, normalize
from debcr.errors import DebcrError, ExportError, ModelFileError
from debcr.interop.bmz import (
    ARCHITECTURE_CALLABLE,
    KNOWN_ARCHITECTURE_SHA256,
    architecture_source,
    export_bmz,
    load_bmz,
)
from debcr.interop.bmz.card import METHOD_CITE, model_card, readme
from debcr.interop.bmz.export import TensorSettings, check_description, package_description
from debcr.interop.portable import ONNX_IR_VERSION, export_onnx, export_torchscript
from debcr.model import export, init, predict, train

#: Tolerance of exported graphs against the PyTorch network (normalised units, float32).
GRAPH_TOLERANCE = 1e-4


def _real_batch() -> np.ndarray:
    """Two crops of a real FMD frame with an odd size (multiple of 4), normalised, (2,1,H,W)."""
    frame = normalize(fmd_frame(19, 3), clip=False)
    return np.stack([frame[:196, :260], frame[300:496, 200:460]])[:, None].astype(np.float32)


def _restore(model, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.restore(torch.from_numpy(batch)).numpy()


# --- the architecture file of the packages ----------------------------------------------------


def test_architecture_file_needs_only_torch_and_builds_our_network(tmp_path, denoiser) -> None:
    source = architecture_source()
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert imported <= {"__future__", "itertools", "torch"}, imported
    file = tmp_path / "arch.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location("standalone_mrbcr", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = getattr(module, ARCHITECTURE_CALLABLE)()
    net.load_state_dict(denoiser.state_dict(), strict=True)
    batch = _real_batch()
    with torch.inference_mode():
        got = net.eval()(torch.from_numpy(batch)).numpy()
    # (not bit-equal: predict elsewhere may have moved the shared model to channels_last)
    np.testing.assert_allclose(got, _restore(denoiser, batch), rtol=0, atol=1e-5)


def test_architecture_hash_is_registered() -> None:
    digest = hashlib.sha256(architecture_source().encode()).hexdigest()
    assert digest in KNOWN_ARCHITECTURE_SHA256, (
        f"debcr/nn/mrbcr.py changed: add {digest} to KNOWN_ARCHITECTURE_SHA256 in "
        "debcr/interop/bmz/architecture.py (keep the old hashes so older packages still load)"
    )


# --- standalone TorchScript and ONNX ------------------------------------------------------------


@pytest.mark.slow
def test_onnx_and_torchscript_reproduce_pytorch_and_the_original(
    tmp_path, denoiser, fixture_npz
) -> None:
    onnx_check = export_onnx(denoiser, tmp_path / "m.onnx")
    ts_check = export_torchscript(denoiser, tmp_path / "m.pt")
    assert onnx_check.max_abs_diff <= GRAPH_TOLERANCE
    assert ts_check.max_abs_diff <= GRAPH_TOLERANCE
    assert onnx_check.image_shape == (1, 1, 512, 512)
    assert "max |Δ|" in str(onnx_check)
    # IR 8, not the exporter's 10, which the ONNX Runtime of deepImageJ and QuPath refuses.
    assert onnx.load(tmp_path / "m.onnx").ir_version == ONNX_IR_VERSION == 8
    session = onnxruntime.InferenceSession(os.fspath(tmp_path / "m.onnx"))
    scripted = torch.jit.load(os.fspath(tmp_path / "m.pt"))
    batch = _real_batch()  # another batch size and image size than at export time
    expected = _restore(denoiser, batch)
    got_onnx = session.run(None, {"input": batch})[0]
    with torch.inference_mode():
        got_ts = scripted(torch.from_numpy(batch)).numpy()
    assert got_onnx.shape == got_ts.shape == batch.shape
    assert np.abs(got_onnx - expected).max() <= GRAPH_TOLERANCE
    assert np.abs(got_ts - expected).max() <= GRAPH_TOLERANCE
    # Against the original TensorFlow DeBCR's own output on its own patches.
    x0 = np.ascontiguousarray(fixture_npz["x0"].transpose(0, 3, 1, 2))
    original = fixture_npz["out_z0"].transpose(0, 3, 1, 2)
    assert np.abs(session.run(None, {"input": x0})[0] - original).max() <= 1e-5


def test_export_refuses_to_overwrite_and_unknown_suffixes(tmp_path, denoiser) -> None:
    target = tmp_path / "m.onnx"
    target.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        export(denoiser, target)
    assert target.read_bytes() == b"keep me"
    with pytest.raises(DebcrError, match=r"cannot tell the export format .*\.zip"):
        export(denoiser, tmp_path / "m.h5")
    with pytest.raises(DebcrError, match="apply only to BMZ packages"):
        export(denoiser, tmp_path / "m.pt", name="x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_missing_export_extra_names_the_extra(tmp_path, denoiser, monkeypatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)
    with pytest.raises(ExportError, match=r"debcr-torch\[export\]"):
        export_onnx(denoiser, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_cli_export_onnx_and_clear_errors(tmp_path, capsys) -> None:
    out = tmp_path / "denoise.onnx"
    assert main(["export", "2D_denoising", str(out)]) == 0
    assert out.is_file() and "onnx model written to" in capsys.readouterr().out
    assert main(["export", "2D_denoising", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", "2D_denoising", str(tmp_path / "m.xyz")]) == 2
    err = capsys.readouterr().err
    assert "cannot tell the export format" in err and "Traceback" not in err


# --- BioImage Model Zoo packages ------------------------------------------------------------


@pytest.mark.slow
def test_builtin_package_passes_the_zoo_test_and_round_trips(bmz_package, denoiser) -> None:
    path, result = bmz_package
    assert result.status == "passed" and result.path == path
    assert result.size_bytes == path.stat().st_size
    tested = {name for name, _ in result.checks}
    for fmt in ("pytorch_state_dict", "torchscript", "onnx"):
        assert f"Reproduce test outputs from test inputs ({fmt})" in tested
    assert all(status == "passed" for _, status in result.checks)
    assert max(result.max_abs_diff.values()) <= GRAPH_TOLERANCE

    loaded = init(path)
    assert loaded.metadata["normalization"] == {"method": "percentile", "pmin": 0.1, "pmax": 99.9}
    assert loaded.metadata["halo"] == denoiser.metadata["halo"]
    image = fmd_frame(19, 7)
    np.testing.assert_allclose(
        predict(loaded, image, progress=False),
        predict(denoiser, image, progress=False),
        atol=1e-5 * float(image.max()),
    )


def _source(entry: str | dict) -> str:
    """A file named in an rdf: packaging turns plain names into {source, sha256}."""
    return entry["source"] if isinstance(entry, dict) else entry


@pytest.mark.slow
def test_builtin_package_contents(bmz_package, denoiser) -> None:
    path, _ = bmz_package
    with zipfile.ZipFile(path) as zf:
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        files = set(zf.namelist())
        cover_bytes = zf.read(_source(rdf["covers"][0]))
        readme = zf.read(_source(rdf["documentation"])).decode()
        test_in = np.load(io.BytesIO(zf.read(rdf["inputs"][0]["test_tensor"]["source"])))
        meta = json.loads(zf.read("debcr_model.json"))
    weights = rdf["weights"]
    assert set(weights) == {"pytorch_state_dict", "torchscript", "onnx"}
    assert weights["torchscript"]["parent"] == weights["onnx"]["parent"] == "pytorch_state_dict"
    arch = weights["pytorch_state_dict"]["architecture"]
    assert arch["callable"] == ARCHITECTURE_CALLABLE and arch["source"] in files
    assert "import_from" not in arch  # never an import of a module called debcr
    assert rdf["license"] == "CC-BY-4.0"
    assert [a["name"] for a in rdf["authors"]][:2] == ["Rui Li", "Artsemi Yushkevich"]
    assert any(c.get("doi") == "10.5281/zenodo.12626121" for c in rdf["cite"])
    steps = rdf["inputs"][0]["preprocessing"]  # packaging adds ensure_dtype steps around ours
    (pre,) = [step for step in steps if step["id"] == "scale_range"]
    assert (pre["kwargs"]["min_percentile"], pre["kwargs"]["max_percentile"]) == (0.1, 99.9)
    x_axis = rdf["inputs"][0]["axes"][3]
    assert x_axis["size"]["step"] == 4 and x_axis["size"]["min"] % 4 == 0
    assert rdf["outputs"][0]["axes"][3]["halo"] == denoiser.metadata["halo"]
    cover = Image.open(io.BytesIO(cover_bytes))
    assert cover.size[0] == 2 * cover.size[1] and len(cover_bytes) <= 500_000
    assert "# Validation" in readme and "restored = output" in readme
    assert test_in.shape == (1, 1, 256, 256) and test_in.max() > 1  # raw units, not normalised
    assert meta["task"] == "2D_denoising"


@pytest.mark.slow
@pytest.mark.parametrize("task", [t for t in TASKS if t != "2D_denoising"])
def test_every_other_builtin_exports_and_validates(tmp_path, task) -> None:
    result = export(task, tmp_path / f"{task}.zip")
    assert result.status == "passed"
    assert all(status == "passed" for _, status in result.checks)
    assert init(tmp_path / f"{task}.zip").metadata["task"] == task


@pytest.mark.slow
def test_a_freshly_trained_model_exports_with_its_config(tmp_path) -> None:
    frame = normalize(fmd_frame(1, 0), clip=False)
    patches = crop(frame, 32, 0.0)[:16]
    data = {"low": patches, "gt": patches}
    config = TrainConfig(
        weights_path=str(tmp_path / "run"),
        batch_size=4,
        num_steps=2,
        val_freq=2,
        patch_size=32,
        accelerator="cpu",
        devices=1,
        progress=False,
    )
    model = train(data, data, config, init_model="2D_denoising")
    with pytest.raises(ExportError, match="needs name and authors"):
        export_bmz(model, tmp_path / "mine.zip")
    assert not (tmp_path / "mine.zip").exists()
    result = export_bmz(
        model,
        tmp_path / "mine.zip",
        name="FMD BPAE fine-tuned denoiser",
        description="Fine-tuned for two steps on FMD confocal BPAE field 1 (a test).",
        authors=["Test Author", {"name": "Second Author", "affiliation": "Somewhere"}],
        license="MIT",
    )
    assert result.status == "passed"
    with zipfile.ZipFile(tmp_path / "mine.zip") as zf:
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        config_attached = yaml.safe_load(zf.read("training_config.yaml"))
    assert rdf["license"] == "MIT" and rdf["authors"][1]["affiliation"] == "Somewhere"
    assert config_attached["num_steps"] == 2
    assert any(c.get("doi") == "10.5281/zenodo.12626121" for c in rdf["cite"])  # derived weights
    batch = _real_batch()
    np.testing.assert_allclose(
        _restore(init(tmp_path / "mine.zip"), batch), _restore(model, batch), atol=1e-6
    )


# --- the model card and the description, checked before any file is written ------------------

N2V_DOI = "10.1109/CVPR.2019.00223"
N2V2_DOI = "10.1007/978-3-031-25069-9_33"
N2N_URL = "https://proceedings.mlr.press/v80/lehtinen18a.html"


@pytest.mark.parametrize(
    ("mode", "cited", "tagged"),
    [
        ("noise2void", {N2V_DOI, N2V2_DOI}, {"noise2void", "n2v2", "self-supervised"}),
        ("noise2noise", {N2N_URL}, {"noise2noise", "self-supervised"}),
        ("supervised", set(), set()),
        (None, set(), set()),
    ],
)
def test_the_card_cites_and_tags_the_training_mode(mode, cited, tagged) -> None:
    model = init(None, seed=0)
    if mode is not None:
        model.metadata = {**model.metadata, "mode": mode}
    card = model_card(model, name="Nuclei denoiser", authors=["Test Author"], tags=["nuclei"])
    rdf = package_description(card, TensorSettings(0.1, 99.9, halo=20), model.metadata)
    check_description(rdf)  # as export_bmz checks it, before writing a file
    method = [c.get("doi") or c.get("url") for c in METHOD_CITE]
    references = [c.get("doi") or c.get("url") for c in rdf["cite"]]
    assert references[: len(method)] == method  # the method's papers first
    assert set(references) - set(method) == cited
    base = {"m-rBCR", "DeBCR", "debcr", "denoising", "fluorescence-light-microscopy", "2d"}
    assert set(rdf["tags"]) == base | {"pytorch", "nuclei"} | tagged
    text = readme(card, 0.1, 99.9, 20, 44, {"torchscript": 0.0, "onnx": 0.0})
    assert all(reference in text for reference in cited)


def test_an_invalid_card_is_refused_before_any_file_is_written(
    tmp_path, denoiser, monkeypatch
) -> None:
    import debcr.interop.bmz.export as bmz_export

    def written(*args) -> None:
        pytest.fail("files were written before the description was checked")

    monkeypatch.setattr(bmz_export, "_write_files", written)
    with pytest.raises(ExportError, match="the package description is invalid"):
        export_bmz(denoiser, tmp_path / "m.zip", license="not-a-licence")
    assert not list(tmp_path.iterdir())


# --- damaged and foreign packages ---------------------------------------------------------------


def _rewrite(source: Path, target: Path, edit) -> Path:
    """Copy a package, letting ``edit(files)`` change its {name: bytes} mapping."""
    with zipfile.ZipFile(source) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    edit(files)
    with zipfile.ZipFile(target, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return target


def _set_rdf(files: dict, change) -> None:
    rdf = yaml.safe_load(files["rdf.yaml"])
    change(rdf)
    files["rdf.yaml"] = yaml.safe_dump(rdf).encode()


@pytest.mark.slow
def test_damaged_and_foreign_packages_are_refused_clearly(bmz_package, tmp_path) -> None:
    path, _ = bmz_package
    weights = yaml.safe_load(zipfile.ZipFile(path).read("rdf.yaml"))["weights"]
    state_file = weights["pytorch_state_dict"]["source"]
    arch_file = weights["pytorch_state_dict"]["architecture"]["source"]

    missing = _rewrite(path, tmp_path / "missing.zip", lambda f: f.pop(state_file))
    with pytest.raises(ModelFileError, match=f"lacks it|{state_file}"):
        init(missing)

    def flip(files: dict) -> None:
        data = bytearray(files[state_file])
        data[len(data) // 2] ^= 0xFF
        files[state_file] = bytes(data)

    with pytest.raises(ModelFileError, match="does not match its sha256"):
        init(_rewrite(path, tmp_path / "flipped.zip", flip))

    def foreign(files: dict) -> None:
        files[arch_file] = b"import torch\nclass UNet(torch.nn.Module):\n    pass\n"

        def point(rdf: dict) -> None:
            arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
            arch["callable"] = "UNet"
            arch["sha256"] = hashlib.sha256(files[arch_file]).hexdigest()

        _set_rdf(files, point)

    with pytest.raises(ModelFileError, match=r"architecture UNet .* debcr runs only m-rBCR"):
        init(_rewrite(path, tmp_path / "foreign.zip", foreign))

    def library(files: dict) -> None:
        def point(rdf: dict) -> None:
            rdf["weights"]["pytorch_state_dict"]["architecture"] = {
                "callable": "UNet",
                "import_from": "careamics.models.unet",
            }

        _set_rdf(files, point)

    with pytest.raises(ModelFileError, match="UNet from the library careamics"):
        init(_rewrite(path, tmp_path / "library.zip", library))

    not_zip = tmp_path / "notes.zip"
    not_zip.write_text("not a zip")
    with pytest.raises(ModelFileError, match="not a readable zip"):
        init(not_zip)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tensors", "field", "step"),
    [
        ("inputs", "preprocessing", {"id": "zero_mean_unit_variance", "kwargs": {"axes": ["y"]}}),
        ("outputs", "postprocessing", {"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}}),
    ],
)
def test_a_package_whose_processing_debcr_cannot_apply_is_refused(
    bmz_package, tmp_path, tensors, field, step
) -> None:
    """debcr normalises by percentiles (scale_range); it never swaps in its own silently."""
    path, _ = bmz_package

    def replace_normalisation(rdf: dict) -> None:
        steps = rdf[tensors][0].setdefault(field, [])
        kept = [s for s in steps if s["id"] != "scale_range"]
        rdf[tensors][0][field] = [*kept, step]

    edited = _rewrite(
        path, tmp_path / "edited.zip", lambda files: _set_rdf(files, replace_normalisation)
    )
    with pytest.raises(ModelFileError, match=f"{field} step '{step['id']}' is not one debcr"):
        init(edited)


@pytest.mark.slow
def test_loading_a_package_folder_and_its_rdf(tmp_path, bmz_package) -> None:
    path, _ = bmz_package
    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(path) as zf:
        zf.extractall(folder)
    from_folder, from_rdf = load_bmz(folder), init(folder / "rdf.yaml")
    batch = _real_batch()
    np.testing.assert_array_equal(_restore(from_folder, batch), _restore(from_rdf, batch))
