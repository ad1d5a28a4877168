"""``debcr predict`` on several inputs: output names checked up front, failures named,
--keep-going, the prediction options, and the original DeBCR's patch predict reproduced."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import fmd_frame
from debcr.cli import build_parser, main
from debcr.defaults import BACKENDS, PRECISIONS, UNITS
from debcr.inference.options import PredictOptions


def _image(index: int = 0, size: int = 64) -> np.ndarray:
    return fmd_frame(19, index)[:size, :size]


def _nan_image() -> np.ndarray:
    image = _image().astype(np.float32)
    image[3, 3] = np.nan
    return image


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error:" in line]


# --- output names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "names",
    [("a/x.tif", "b/x.tif"), ("x.tif", "x.ome.tif"), ("x.tif", "x.npy")],
    ids=["same-name-two-folders", "ome-suffix", "two-formats"],
)
def test_inputs_with_one_output_are_refused_before_any_work(names, tmp_path: Path, capsys) -> None:
    inputs = [tmp_path / name for name in names]
    for i, path in enumerate(inputs):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".npy":
            np.save(path, _image(i))
        else:
            tifffile.imwrite(path, _image(i))
    out = tmp_path / "out"
    # An unknown model shows the check comes first: no model is loaded, nothing is written.
    args = ["predict", *map(str, inputs), "-o", str(out), "--overwrite", "--model", "nope"]
    assert main([*args, "-q"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"{inputs[0]}, {inputs[1]} would all be written to {out / 'x_restored.tif'}" in err
    assert "Nothing was restored" in err and "separate runs with their own -o folder" in err
    assert "no model named" not in err
    assert not out.exists()


def test_an_output_that_is_an_input_is_refused(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    tifffile.imwrite(folder / "x.tif", _image(0))
    tifffile.imwrite(folder / "x_restored.tif", _image(1))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert main(["predict", str(folder), "-o", str(folder), "--overwrite", "-q"]) == 2
    err = capsys.readouterr().err
    assert (
        f"the output of {folder / 'x.tif'} would replace the input {folder / 'x_restored.tif'}"
        in err
    )
    assert "choose an -o that holds no inputs" in err
    single = ["predict", str(folder / "x.tif"), "-o", str(folder / "x.tif"), "--overwrite"]
    assert main([*single, "-q"]) == 2
    assert "would replace the input" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_names_with_dots_keep_them_and_repeated_inputs_run_once(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    for i in (1, 2):
        tifffile.imwrite(folder / f"img.{i}.tif", _image(i, 32))
    out = tmp_path / "out"
    # The folder and one of its files: that file is restored once, not refused as a clash.
    args = ["predict", str(folder), str(folder / "img.1.tif"), "-o", str(out), "-q"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["img.1_restored.tif", "img.2_restored.tif"]
    assert capsys.readouterr().out.count(" -> ") == 2


# --- failures -------------------------------------------------------------------------------


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """A folder with a good image, an image with a NaN (not readable as data), a good one."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", _image(0))
    np.save(folder / "b.npy", _nan_image())
    tifffile.imwrite(folder / "c.tif", _image(2))
    return folder


def test_first_failure_stops_the_run_and_names_the_file(mixed: Path, capsys) -> None:
    out = mixed.parent / "out"
    assert main(["predict", str(mixed), "-o", str(out), "-q"]) == 2
    captured = capsys.readouterr()
    (line,) = _error_lines(captured.err)
    assert line.startswith(
        f"debcr predict: error: {mixed / 'b.npy'}: the data contain 1 non-finite"
    )
    assert "stopped after 1 of 3 inputs" in line and "--keep-going" in line
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["a_restored.tif"]  # written outputs stay


def test_keep_going_restores_the_rest_and_still_fails(mixed: Path, capsys) -> None:
    out = mixed.parent / "out"
    assert main(["predict", str(mixed), "-o", str(out), "--keep-going", "-q"]) == 2
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["a_restored.tif", "c_restored.tif"]
    assert f"error: {mixed / 'b.npy'}: the data contain 1 non-finite" in captured.err
    assert f"debcr predict: 2 restored, 1 failed: {mixed / 'b.npy'}" in captured.err
    assert f"{mixed / 'c.tif'} -> {out / 'c_restored.tif'}" in captured.out
    assert "Traceback" not in captured.err
    restored = tifffile.imread(out / "c_restored.tif")
    assert restored.shape == (64, 64) and np.isfinite(restored).all()


def test_keep_going_without_failures_exits_0_with_a_summary(tmp_path: Path, capsys) -> None:
    tifffile.imwrite(tmp_path / "a.tif", _image(0, 32))
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "a.tif"), "-o", str(out), "--keep-going", "-q"]) == 0
    assert "1 restored, 0 failed" in capsys.readouterr().out
    assert (out / "a_restored.tif").is_file()


# --- options --------------------------------------------------------------------------------


def test_units_and_percentiles_reach_predict(tmp_path: Path) -> None:
    image = _image(0)
    source = tmp_path / "a.tif"
    tifffile.imwrite(source, image)
    outputs = {}
    for units in ("normalized", "percentile"):
        outputs[units] = tmp_path / f"{units}.npy"
        args = ["predict", str(source), "-o", str(outputs[units]), "--units", units]
        assert main([*args, "--pmin", "2", "--pmax", "98", "-q"]) == 0
    norm, perc = (np.load(outputs[u]) for u in ("normalized", "percentile"))
    lo, hi = np.percentile(image, [2, 98])
    np.testing.assert_allclose(perc, norm * (hi - lo) + lo, rtol=1e-5, atol=1e-3)
    # A denoiser keeps the mean: in units of the 2–98 normalisation, the output's mean is the
    # input's (measured: 0.989; 0.64 had the default 0.1–99.9 percentiles been used).
    assert norm.mean() / ((image.mean() - lo) / (hi - lo)) == pytest.approx(1.0, abs=0.05)


def test_predict_flags_offer_the_values_of_predict_options() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = {a.dest: a for a in commands.choices["predict"]._actions}
    for name, values in (("units", UNITS), ("backend", BACKENDS), ("precision", PRECISIONS)):
        assert tuple(flags[name].choices) == values, name
        assert flags[name].default in (None, getattr(PredictOptions(), name)), name


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--halo", "6"], "argument --halo: must be a multiple of 4 that is 0 or more, got 6"),
        (["--halo", "-4"], "argument --halo: must be a multiple of 4 that is 0 or more, got -4"),
        (["--halo", "wide"], "argument --halo: expected a whole number of pixels, got 'wide'"),
        (["--units", "raw"], "argument --units: invalid choice: 'raw'"),
        (["--pmin", "low"], "argument --pmin: invalid float value: 'low'"),
    ],
)
def test_invalid_option_values_are_usage_errors(options, message, tmp_path: Path, capsys) -> None:
    tifffile.imwrite(tmp_path / "a.tif", _image(0, 16))
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(tmp_path / "a.tif"), "-o", str(tmp_path / "b.tif"), *options])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "b.tif").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--pmin", "50", "--pmax", "10"], "pmin must be below pmax"),
        (["--pmin", "-1"], "pmin is below 0"),
        (["--pmax", "101"], "pmax is above 100"),
        (["--pmin", "nan"], "pmin is not a finite number"),
        (["--no-normalize", "--pmin", "1"], "--pmin sets the percentile normalisation that"),
        (["--no-normalize", "--pmin", "1", "--pmax", "99"], "--pmin and --pmax set the"),
    ],
)
def test_invalid_percentiles_are_one_line_errors(options, message, tmp_path: Path, capsys) -> None:
    tifffile.imwrite(tmp_path / "a.tif", _image(0, 16))
    args = ["predict", str(tmp_path / "a.tif"), "-o", str(tmp_path / "b.tif"), *options]
    assert main([*args, "--model", "nope"]) == 2  # checked before the model is loaded
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("debcr predict: error: ") and message in err
    assert not (tmp_path / "b.tif").exists()


# --- the original DeBCR's patch predict -----------------------------------------------------


def test_python_recipe_reproduces_the_original_and_defaults_do_not(denoiser, fixture_npz) -> None:
    from debcr.model import predict

    patches, reference = fixture_npz["x0"][..., 0], fixture_npz["api_predict"]
    recipe = predict(
        denoiser,
        patches,
        normalize=False,
        units="normalized",
        halo=0,
        precision="float32",
        progress=False,
    )
    assert np.abs(recipe - reference).max() <= 1e-5
    defaults = predict(denoiser, patches, progress=False)
    assert np.abs(defaults - reference).max() > 0.1  # why the recipe is documented


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_cli_recipe_reproduces_the_original(suffix, fixture_npz, tmp_path: Path) -> None:
    patches = fixture_npz["x0"][..., 0]
    source, out = tmp_path / f"in{suffix}", tmp_path / "out.npy"
    if suffix == ".npy":
        np.save(source, patches)
    else:
        tifffile.imwrite(source, patches, photometric="minisblack")
    args = ["predict", str(source), "-o", str(out), "--model", "2D_denoising"]
    recipe = ["--no-normalize", "--units", "normalized", "--halo", "0", "--precision", "float32"]
    assert main([*args, *recipe, "-q"]) == 0
    restored = np.load(out)
    assert restored.shape == patches.shape
    assert np.abs(restored - fixture_npz["api_predict"]).max() <= 1e-5
