"""The napari plugin's work without the GUI: jobs, reader/writer, sample data, manifest."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import fmd_frame, fmd_gt
from debcr._version import DISTRIBUTION
from debcr.napari import io as plugin_io
from debcr.napari import jobs


def test_importing_the_plugin_and_reading_its_manifest_does_not_import_torch() -> None:
    code = (
        "import sys, npe2\n"
        "pm = npe2.PluginManager.instance(); pm.discover()\n"
        f"m = pm.get_manifest({DISTRIBUTION!r})\n"
        "import debcr.napari.widget, debcr.napari.io, debcr.napari.jobs\n"
        "print(repr(m.display_name), [w.display_name for w in m.contributions.widgets],"
        " 'torch' in sys.modules, m.package_metadata.name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # "PyTorch" tells it apart from the original's plugin (napari-debcr) in napari's menus.
    assert out.stdout.split() == ["'DeBCR", "PyTorch'", "['DeBCR']", "False", DISTRIBUTION]


def test_normalize_keeps_the_statistics_and_does_not_clip() -> None:
    frame = fmd_frame()
    out, meta = jobs.normalize_data(frame, 0.1, 99.9)
    stats = meta[jobs.STATS_KEY]
    lo, hi = np.percentile(frame, [0.1, 99.9])
    np.testing.assert_allclose(out, (frame - lo) / (hi - lo), atol=1e-5)
    assert out.max() > 1.0  # the brightest 0.1 % stay above 1, nothing is clipped
    assert stats["pmin"] == 0.1 and stats["pmax"] == 99.9


def test_crop_then_stitch_with_the_remembered_grid_gives_back_the_image() -> None:
    image = fmd_gt()[:200, :136].astype(np.float32)
    patches, meta = jobs.crop_data(image, 64, (0.5, 0.25))
    grid = meta[jobs.GRID_KEY]
    assert grid["patch_num"] == [6, 3] and grid["image_shape"] == [200, 136]
    assert patches.shape == (18, 64, 64)
    np.testing.assert_allclose(jobs.stitch_data(patches, grid, "hann"), image, atol=1e-4)


def test_crop_and_stitch_a_stack() -> None:
    stack = np.stack([fmd_gt(1), fmd_gt(2)])[:, :96, :128].astype(np.float32)
    patches, meta = jobs.crop_data(stack, 32, (0.5, 0.5))
    assert patches.shape[0] == 2 * 5 * 7
    np.testing.assert_allclose(
        jobs.stitch_data(patches, meta[jobs.GRID_KEY], "linear"), stack, atol=1e-4
    )


def test_stitch_errors_are_plain_sentences() -> None:
    with pytest.raises(jobs.DataError, match="no crop grid"):
        jobs.stitch_data(np.zeros((4, 8, 8)), None, "hann")
    grid = {"patch_num": [2, 2], "patch_size": 8, "overlap": [0.5, 0.5], "image_shape": [12, 12]}
    with pytest.raises(jobs.DataError, match="multiple of 4 patches of 8×8"):
        jobs.stitch_data(np.zeros((3, 8, 8)), grid, "hann")


def test_training_pair_checks_shapes() -> None:
    from debcr.data.prepare import pair_arrays

    with pytest.raises(jobs.DataError, match=r"differ in shape"):
        pair_arrays(np.zeros((4, 64, 64)), np.zeros((4, 32, 32)), "training")
    with pytest.raises(jobs.DataError, match=r"training patches 30×30 .* multiples of 4"):
        pair_arrays(np.zeros((4, 30, 30)), np.zeros((4, 30, 30)), "training")
    pair = pair_arrays(np.ones((64, 64), np.uint8), np.ones((64, 64)), "training")
    assert pair["low"].shape == (1, 64, 64) and pair["low"].dtype == np.float32


def test_open_model_errors() -> None:
    with pytest.raises(jobs.DebcrError, match="no model file at"):
        jobs.open_model("/nonexistent/model.safetensors")
    with pytest.raises(jobs.DebcrError, match="no model chosen"):
        jobs.open_model("  ")


def test_open_model_from_a_run_folder(tmp_path) -> None:
    from debcr.model import init, save

    save(init(None, seed=1), tmp_path / "best.safetensors")
    model = jobs.open_model(str(tmp_path))
    assert sum(p.numel() for p in model.parameters()) == 236_630
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(jobs.DebcrError, match="holds no trained model"):
        jobs.open_model(str(empty))


@pytest.mark.slow
def test_predict_reports_progress_and_cancels(denoiser) -> None:
    frame = fmd_frame()[:256, :256]
    seen: list[tuple[int, int]] = []
    out = jobs.predict_data(
        denoiser,
        frame,
        tile_size=128,
        batch_size=1,
        device="cpu",
        report=lambda done, total: seen.append((done, total)),
        cancel=threading.Event(),
    )
    assert out.shape == frame.shape and out.dtype == np.float32
    assert seen[0] == (0, 4) and seen[-1] == (4, 4)
    gt = fmd_gt()[:256, :256].astype(np.float32)
    assert np.mean((out - gt) ** 2) < np.mean((frame - gt) ** 2)

    cancel = threading.Event()
    calls = []

    def report(done: int, total: int) -> None:
        calls.append(done)
        cancel.set()  # the user presses Cancel after the first tile

    with pytest.raises(jobs.Cancelled):
        jobs.predict_data(
            denoiser, frame, tile_size=128, batch_size=1, device="cpu", report=report, cancel=cancel
        )
    assert calls == [0]
    assert jobs.describe_error(jobs.Cancelled()) == "Cancelled."


def test_describe_error_sentences() -> None:
    assert jobs.describe_error(FileNotFoundError("no such file: a.tif")) == "No such file: a.tif"
    assert jobs.describe_error(RuntimeError("CUDA out of memory. Tried")).startswith(
        "Out of memory: choose a smaller tile size"
    )
    assert "terminal" in jobs.describe_error(KeyError("x"))


@pytest.mark.slow
def test_training_stops_cleanly_and_keeps_the_best_model(tmp_path) -> None:
    from debcr.config import TrainConfig

    low = np.stack([fmd_frame(1, i)[:64, :64] for i in range(6)]).astype(np.float32) / 255
    gt = np.repeat(fmd_gt(1)[None, :64, :64], 6, axis=0).astype(np.float32) / 255
    config = TrainConfig(
        weights_path=str(tmp_path / "run"),
        batch_size=2,
        num_steps=500,
        val_freq=2,
        save_freq=2,
        accelerator="cpu",
        progress=False,
    )
    stop = threading.Event()
    events: list[dict] = []

    def report(event: dict) -> None:
        events.append(event)
        if event["kind"] == "validation" and event["step"] >= 4:
            stop.set()

    model, run_dir = jobs.train_model(
        (low, gt), (low[:2], gt[:2]), config, None, report=report, stop=stop
    )
    steps = [e["step"] for e in events if e["kind"] == "step"]
    vals = [e for e in events if e["kind"] == "validation"]
    assert events[0]["kind"] == "log" and "6 training and 2 validation patches" in events[0]["text"]
    assert 4 <= steps[-1] <= 6  # stopped within a step of the request, not after 500
    assert [v["step"] for v in vals][:2] == [2, 4]
    assert vals[0]["preview"].shape == (64, 64)
    assert (run_dir / "best.safetensors").is_file() and (run_dir / "last.safetensors").is_file()
    assert sum(p.numel() for p in model.parameters()) == 236_630


def test_npz_reader_and_writer_round_trip(tmp_path) -> None:
    low = fmd_frame()[:64, :96]
    gt = fmd_gt()[:64, :96]
    path = tmp_path / "pairs.npz"
    written = plugin_io.write_npz(
        str(path), [(low, {"name": "cells.low"}, "image"), (gt, {"name": "cells.gt"}, "image")]
    )
    assert written == [str(path)]
    with np.load(path) as npz:
        assert sorted(npz.files) == ["gt", "low"]
        np.testing.assert_array_equal(npz["low"], low)
    reader = plugin_io.get_reader(str(path))
    layers = reader(str(path))
    assert [(meta["name"], kind) for _, meta, kind in layers] == [
        ("pairs.low", "image"),
        ("pairs.gt", "image"),
    ]
    np.testing.assert_array_equal(layers[1][0], gt)
    assert plugin_io.get_reader(str(tmp_path / "image.tif")) is None
    with pytest.raises(ValueError, match="differ in shape"):
        plugin_io.write_npz(
            str(tmp_path / "bad.npz"),
            [(low, {"name": "a.low"}, "image"), (gt[:32], {"name": "a.gt"}, "image")],
        )
    assert not (tmp_path / "bad.npz").exists()


def test_reader_skips_non_image_entries_of_prepared_sets(tmp_path) -> None:
    path = tmp_path / "fmd_train.npz"
    np.savez(path, low=np.zeros((2, 8, 8)), gt=np.ones((2, 8, 8)), groups=np.array(["1", "2"]))
    names = [meta["name"] for _, meta, _ in plugin_io.read_npz(str(path))]
    assert names == ["fmd_train.low", "fmd_train.gt"]


def test_sample_data_is_the_bundled_nuclei_image() -> None:
    from debcr.samples import nuclei

    layers = plugin_io.sample_nuclei()
    noisy, clean = nuclei()
    assert [meta["name"] for _, meta, _ in layers] == ["nuclei (clean)", "nuclei (noisy)"]
    np.testing.assert_array_equal(layers[1][0], noisy)
    np.testing.assert_array_equal(layers[0][0], clean)


@pytest.mark.slow
def test_predict_a_time_series_of_stacks_keeps_its_shape(denoiser) -> None:
    series = np.stack(
        [np.stack([fmd_frame(19, 2 * t + z)[:64, :96] for z in range(2)]) for t in range(2)]
    )
    out = jobs.predict_data(
        denoiser,
        series,
        tile_size=None,
        batch_size=None,
        device="cpu",
        report=lambda done, total: None,
        cancel=threading.Event(),
    )
    assert out.shape == (2, 2, 64, 96)
    flat = jobs.predict_data(
        denoiser,
        series.reshape(4, 64, 96),
        tile_size=None,
        batch_size=None,
        device="cpu",
        report=lambda done, total: None,
        cancel=threading.Event(),
    )
    # A (T, Z, Y, X) layer is restored as one stack of its 2-D slices, in order.
    np.testing.assert_array_equal(out.reshape(4, 64, 96), flat)
    assert np.corrcoef(out[1, 0].ravel(), series[1, 0].ravel())[0, 1] > 0.5
