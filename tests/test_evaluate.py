"""Tests of debcr.evaluate on the real FMD confocal field 19 (GT, a noisy frame, a filtered one)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.signal.windows import tukey

from debcr.data import write
from debcr.errors import DataError
from debcr.evaluate import CSV_COLUMNS, METRICS, REPORT_FILES, SPARSE_ENTROPY, evaluate
from debcr.metrics import NORMALIZATIONS, entropy, frc, psnr

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIELD = DATA / "fmd_confocal_bpae_b"


@pytest.fixture(scope="module")
def field() -> dict[str, np.ndarray]:
    """GT, a noisy frame as 'input' and the frame Gaussian-filtered as a stand-in prediction."""
    gt = np.asarray(Image.open(FIELD / "gt" / "19" / "avg50.png"))
    noisy = np.asarray(Image.open(FIELD / "raw" / "19" / "HV110_P0500510000.png"))
    assert gt.shape == noisy.shape == (512, 512)
    pred = gaussian_filter(noisy.astype(np.float32), sigma=1)
    return {"gt": gt, "input": noisy, "pred": pred}


@pytest.fixture(scope="module")
def report(field, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("report")
    return evaluate(field["pred"], field["gt"], field["input"], out)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_report_files_exist(report):
    files = report["files"]
    assert set(files) == set(REPORT_FILES)
    for key, path in files.items():
        assert path.name == REPORT_FILES[key]
        assert path.is_file() and path.stat().st_size > 0
    for key in ("frc_png", "comparison_png"):
        with Image.open(files[key]) as image:
            image.load()
            assert image.format == "PNG" and min(image.size) > 200
    # Written atomically: no temporary files are left next to the report.
    assert sorted(p.name for p in files["metrics_csv"].parent.iterdir()) == sorted(
        REPORT_FILES.values()
    )


def test_csv_rows_and_columns(report, field):
    rows = _rows(report["files"]["metrics_csv"])
    assert len(rows) == 1 * len(NORMALIZATIONS) * 2  # image × convention × source
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {(r["source"], r["normalization"]) for r in rows} == {
        (s, n) for s in ("prediction", "input") for n in NORMALIZATIONS
    }
    for row in rows:
        assert row["image"] == "image"
        assert float(row["gt_entropy"]) == pytest.approx(entropy(field["gt"]), rel=1e-9)
        assert row["density"] == "sparse"
        for metric in ("psnr", "ssim", "nrmse"):
            assert math.isfinite(float(row[metric]))
    # The CSV holds exactly the values of debcr.metrics under each convention.
    for row in rows:
        source = field["pred"] if row["source"] == "prediction" else field["input"]
        expected = psnr(source, field["gt"], normalization=row["normalization"])
        assert float(row["psnr"]) == pytest.approx(expected, rel=1e-9)


def test_filtered_prediction_beats_input_in_every_convention(report):
    assert report["normalizations"] == NORMALIZATIONS
    for norm in NORMALIZATIONS:
        pred = report["summary"][norm]["prediction"]
        inp = report["summary"][norm]["input"]
        assert pred["psnr"]["mean"] > inp["psnr"]["mean"] + 3
        assert pred["ssim"]["mean"] > inp["ssim"]["mean"]
        assert pred["nrmse"]["mean"] < inp["nrmse"]["mean"]
    rows = _rows(report["files"]["metrics_csv"])
    for norm in NORMALIZATIONS:
        by_source = {r["source"]: float(r["psnr"]) for r in rows if r["normalization"] == norm}
        assert by_source["prediction"] > by_source["input"]


def test_summary_markdown(report):
    text = report["files"]["summary_md"].read_text(encoding="utf-8")
    for norm in NORMALIZATIONS:
        assert f"## Normalisation: {norm}" in text
    assert "Sparse" in text and "dense" in text
    psnr_text = f"{report['summary']['raw']['prediction']['psnr']['mean']:.2f}"
    assert psnr_text in text
    assert report["by_density"]["sparse"]["n_images"] == 1
    assert report["by_density"]["dense"]["n_images"] == 0
    assert report["gt_entropy"]["mean"] < SPARSE_ENTROPY
    assert report["data_range"] == 228.0  # GT max - min


def test_frc_resolution_column(report, field):
    # The FMD GT is the mean of 50 frames that include this one, so even the noise is
    # correlated (1/sqrt(50) ≈ 1/7) and the 1/7 curve never crosses: no resolution value.
    stats = report["summary"]["minmax"]["input"]["frc_resolution"]
    assert stats["n"] == 0 and math.isnan(stats["mean"])
    assert "no crossing" in report["files"]["summary_md"].read_text(encoding="utf-8")
    # The half-bit curve tends to 0.172, above that noise correlation, so it does cross.
    half_bit = evaluate(field["input"], field["gt"], normalization="raw", frc_threshold="half-bit")
    value = half_bit["summary"]["raw"]["prediction"]["frc_resolution"]
    assert value["n"] == 1 and 2 < value["mean"] < 4


def test_files_stacks_and_density_split(tmp_path, field):
    # A stack of a sparse FMD crop and a dense cells3d nuclei slice, passed as files.
    nuclei = tifffile.imread(DATA / "cells3d_nuclei" / "nuclei.tif")[30].astype(np.float32)
    gt = np.stack([field["gt"][128:384, 128:384].astype(np.float32) * 100, nuclei])
    rng = np.random.default_rng(1)
    noisy = gt + rng.normal(0, 0.3 * gt.std(), gt.shape).astype(np.float32)
    pred = gaussian_filter(noisy, (0, 1, 1))
    paths = {}
    for name, arr in (("gt", gt), ("noisy", noisy), ("pred", pred)):
        paths[name] = write(tmp_path / f"{name}.tif", arr)[0]
    out = tmp_path / "report"
    result = evaluate(paths["pred"], paths["gt"], paths["noisy"], out, pixel_size=0.29)
    assert result["names"] == ["gt_0000", "gt_0001"]
    assert result["n_images"] == 2
    assert result["by_density"]["sparse"]["n_images"] == 1
    assert result["by_density"]["dense"]["n_images"] == 1
    rows = _rows(out / "metrics.csv")
    assert len(rows) == 2 * 3 * 2
    assert {r["density"] for r in rows if r["image"] == "gt_0001"} == {"dense"}
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert str(paths["gt"]) in summary and "| raw | prediction | dense | 1 |" in summary
    for norm in NORMALIZATIONS:
        stats = result["summary"][norm]
        assert stats["prediction"]["psnr"]["mean"] > stats["input"]["psnr"]["mean"]
        assert stats["prediction"]["psnr"]["n"] == 2 and stats["prediction"]["psnr"]["std"] > 0
    # FRC resolutions are in µm here. The smooth FMD crop loses its structure in the added
    # noise at a finite frequency; the nuclei slice carries its own white camera noise, so
    # GT and input stay correlated up to Nyquist and have no crossing (NaN in the CSV).
    res = {r["image"]: float(r["frc_resolution"]) for r in rows if r["source"] == "input"}
    curve = frc(noisy[0], gt[0])
    in_pixels = curve.resolution
    # Independent of debcr: for a signal plus white noise of variance σ², the expected FRC of
    # each ring is sqrt(S / (S + N)), S the ring's power of the (Tukey-windowed) GT and
    # N = samples · σ² · Σw²; the measured curve may deviate by sampling noise ~1/sqrt(samples).
    expected, samples = _white_noise_frc(gt[0], 0.3 * float(gt.std()))
    n = len(expected)
    z = (curve.correlation[1:n] - expected[1:]) * np.sqrt(samples[1:])
    assert np.abs(z).max() < 4 and abs(z.mean()) < 0.3
    # ... and the resolution is 1/f where that curve first falls below 1/7, interpolated.
    k = 1 + int(np.flatnonzero(curve.correlation[1:] < 1 / 7)[0])
    assert 1 / curve.frequencies[k] <= in_pixels <= 1 / curve.frequencies[k - 1]
    assert res["gt_0000"] == pytest.approx(0.29 * in_pixels, rel=1e-9)
    assert math.isnan(res["gt_0001"])
    assert result["summary"]["raw"]["input"]["frc_resolution"]["n"] == 1


def _white_noise_frc(gt: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Expected FRC of ``gt + noise`` against ``gt`` per ring, and the samples per ring."""
    side = gt.shape[0]
    window = np.outer(tukey(side, 0.25), tukey(side, 0.25))
    power = np.abs(np.fft.fft2((gt - gt.mean()) * window)) ** 2
    freq = np.fft.fftfreq(side)
    rings = np.rint(np.hypot(freq[:, None], freq[None, :]) * side).astype(int).ravel()
    signal = np.bincount(rings, power.ravel())[: side // 2 + 1]
    samples = np.bincount(rings)[: side // 2 + 1]
    noise = samples * sigma**2 * float((window**2).sum())
    return np.sqrt(signal / (signal + noise)), samples


def test_report_never_replaces_an_input(field, tmp_path):
    # An input that happens to carry a report file's name is refused before any work.
    noisy = write(tmp_path / "frc.png", field["input"][:64, :64])[0]
    with pytest.raises(DataError, match="refusing to overwrite the input"):
        evaluate(field["pred"][:64, :64], field["gt"][:64, :64], noisy, tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frc.png"]


def test_without_input_or_out_dir(field):
    result = evaluate(field["pred"][:128, :128], field["gt"][:128, :128], normalization="affine")
    assert result["files"] == {}
    assert result["sources"] == ("prediction",)
    assert set(result["summary"]) == {"affine"}
    assert set(result["summary"]["affine"]["prediction"]) == set(METRICS)
    assert len(result["rows"]) == 1


def test_shape_mismatch_names_both_shapes(field, tmp_path):
    with pytest.raises(DataError, match=r"prediction has shape \(511, 512\).*\(512, 512\)"):
        evaluate(field["pred"][:-1], field["gt"], field["input"], tmp_path / "r")
    with pytest.raises(DataError, match=r"input has shape \(2, 512, 512\).*\(512, 512\)"):
        evaluate(field["pred"], field["gt"], np.stack([field["input"]] * 2), tmp_path / "r")
    assert not (tmp_path / "r").exists()  # nothing written


def test_overwrite_refused_then_allowed(field, tmp_path):
    pred, gt = field["pred"][:96, :96], field["gt"][:96, :96]
    out = tmp_path / "report"
    evaluate(pred, gt, None, out, normalization="raw")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(FileExistsError, match="overwrite=True"):
        evaluate(pred * 2, gt, None, out, normalization="raw")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    evaluate(pred * 2, gt, None, out, normalization="raw", overwrite=True)
    assert (out / "metrics.csv").read_bytes() != before["metrics.csv"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"normalization": "zscore"}, "unknown normalization 'zscore'"),
        ({"normalization": ()}, "normalization is empty"),
        ({"names": ["a", "b"]}, "names has 2 entries but there are 1"),
        ({"frc_threshold": "3-sigma"}, "unknown FRC threshold"),
        ({"data_range": 0}, "positive finite"),
        ({"pixel_size": -1.0}, "pixel_size"),
    ],
)
def test_argument_errors(field, kwargs, message):
    with pytest.raises(DataError, match=message):
        evaluate(field["pred"][:64, :64], field["gt"][:64, :64], **kwargs)


def test_nonfinite_and_constant_inputs(field):
    pred = field["pred"][:64, :64].copy()
    pred[3, 4] = np.nan
    with pytest.raises(DataError, match="prediction contains 1 NaN"):
        evaluate(pred, field["gt"][:64, :64])
    with pytest.raises(DataError, match="ground truth is constant"):
        evaluate(field["pred"][:64, :64], np.full((64, 64), 5.0))
    # Without the raw convention a constant GT is scored; FRC and NRMSE are undefined (NaN).
    result = evaluate(field["pred"][:64, :64], np.full((64, 64), 5.0), normalization="minmax")
    assert math.isnan(result["rows"][0]["frc_resolution"])
    assert math.isnan(result["rows"][0]["nrmse"])


def test_frc_legend_describes_the_mean_curve_it_labels(field) -> None:
    # Before: the legend quoted the per-image mean resolution of the images whose curves cross,
    # beside a drawn mean curve that never crosses (tutorial 3).
    from debcr.evaluate import _frc_figure

    gt = field["gt"][:256, :256].astype(np.float64)
    rng = np.random.default_rng(0)
    near = gt + rng.normal(0, 0.5, gt.shape)  # the GT itself, barely disturbed: never crosses
    blurred = gaussian_filter(gt, 4)  # loses the fine rings: crosses
    curves = {
        "prediction": [frc(blurred, gt)],
        "input": [frc(near, gt)],
    }
    assert curves["prediction"][0].resolution is not None
    assert curves["input"][0].resolution is None
    report = {"pixel_size": None, "frc_threshold": "1/7"}
    labels = _frc_figure(curves, report).axes[0].get_legend_handles_labels()[1]
    expected = f"below the threshold at {curves['prediction'][0].resolution:.3g} pixels"
    assert labels[:2] == [
        f"prediction vs GT, mean curve: {expected}",
        "input vs GT, mean curve: never below the threshold",
    ], labels
