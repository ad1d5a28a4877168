"""The DeBCR dock widget in a real napari viewer (under Xvfb): every tab end to end."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import fmd_frame, fmd_gt

pytest.importorskip("napari", reason="the napari extra is part of the test install")

from conftest import NAPARI_TIMEOUT_MS as TIMEOUT_MS
from conftest import napari_wait as _wait
from debcr.defaults import UNITS
from debcr.napari import jobs
from debcr.napari.parts import MODEL_FILE
from debcr.napari.widget import DeBCRWidget


def _click_and_wait(qtbot, tab, button) -> None:
    button.click()
    _wait(qtbot, tab)


def test_widget_shows_tabs_device_and_log(widget, qtbot) -> None:
    tabs = [widget.tabs.tabText(i) for i in range(widget.tabs.count())]
    assert tabs == ["Transform data", "Train model", "Use model"]
    qtbot.waitUntil(lambda: "detecting" not in widget.device_label.text(), timeout=60_000)
    assert widget.device_label.text().startswith("Device: CPU")
    widget.log.write("hello")
    assert widget.log.lines() == ["hello"]
    buttons = widget.log.findChildren(type(widget.train_tab.run_button))
    assert [b.text() for b in buttons] == ["Clear log"]
    buttons[0].click()
    assert widget.log.lines() == []


@pytest.mark.slow
def test_normalize_crop_train_stop_predict_stitch(widget, qtbot, tmp_path) -> None:
    viewer = widget.viewer
    viewer.add_image(fmd_frame(1, 0)[:128, :128], name="noisy")
    viewer.add_image(fmd_gt(1)[:128, :128], name="clean")
    tt = widget.transform_tab

    # Transform data: normalise both, crop both with the grid shown beforehand.
    for name in ("noisy", "clean"):
        tt.input.setCurrentText(name)
        _click_and_wait(qtbot, tt, tt.normalize_button)
    prep = viewer.layers["noisy.prep"].data
    lo, hi = np.percentile(fmd_frame(1, 0)[:128, :128], [0.1, 99.9])
    np.testing.assert_allclose(prep, (fmd_frame(1, 0)[:128, :128] - lo) / (hi - lo), atol=1e-5)
    tt.patch.setValue(64)
    for name in ("noisy.prep", "clean.prep"):
        tt.input.setCurrentText(name)
        assert tt.grid_label.text() == "3 × 3 = 9 patches per image"
        _click_and_wait(qtbot, tt, tt.crop_button)
    crops = viewer.layers["noisy.prep.crops"]
    assert crops.data.shape == (9, 64, 64)
    assert crops.metadata[jobs.GRID_KEY]["patch_num"] == [3, 3]

    # Train model: a few steps, then Stop; the best model is kept and offered for prediction.
    tr = widget.train_tab
    tr.train_low.setCurrentText("noisy.prep.crops")
    tr.train_gt.setCurrentText("clean.prep.crops")
    tr.val_low.setCurrentText("noisy.prep.crops")
    tr.val_gt.setCurrentText("clean.prep.crops")
    tr.batch.setValue(4)
    tr.steps.setValue(1000)
    tr.val_freq.setValue(2)
    tr.save_path.setText(str(tmp_path / "run"))
    tr.run_button.click()
    assert not tr.run_button.isEnabled() and tr.stop_button.isEnabled()
    qtbot.waitUntil(lambda: len(tr.plot.val) >= 2, timeout=TIMEOUT_MS)
    tr.stop_button.click()
    _wait(qtbot, tr)
    log = widget.log.lines()
    assert any(line.startswith("Data: 9 training and 9 validation patches") for line in log)
    assert any(line.startswith("Step 2: validation loss") for line in log)
    assert any(line.startswith("Training stopped; the best model is in") for line in log)
    assert (tmp_path / "run" / "best.safetensors").is_file()
    assert tr.progress.value() < 1000
    assert viewer.layers["noisy.prep.crops.preview"].data.shape == (64, 64)
    assert len(tr.plot.train) >= 4
    assert tr.run_button.isEnabled() and not tr.stop_button.isEnabled()

    # Use model: the run just trained is selected; predict the patches, then stitch them.
    pt = widget.predict_tab
    assert pt.model.currentText() == MODEL_FILE
    assert pt.model_path.text() == str(tmp_path / "run")
    pt.input.setCurrentText("noisy.prep.crops")
    assert pt.output.text() == "noisy.prep.crops.pred"
    _click_and_wait(qtbot, pt, pt.run_button)
    pred = viewer.layers["noisy.prep.crops.pred"]
    assert pred.data.shape == (9, 64, 64) and pred.data.dtype == np.float32
    assert pred.metadata[jobs.GRID_KEY] == crops.metadata[jobs.GRID_KEY]
    assert (
        "Prediction is finished: 'noisy.prep.crops.pred', shape (9, 64, 64)." in widget.log.lines()
    )
    tt.input.setCurrentText("noisy.prep.crops.pred")
    assert tt.grid_label.text() == "patches of a 128×128 image: 3 × 3 (stitch ready)"
    _click_and_wait(qtbot, tt, tt.stitch_button)
    stitched = viewer.layers["noisy.prep.crops.pred.stitched"].data
    assert stitched.shape == (128, 128)
    assert np.isfinite(stitched).all() and stitched.std() > 0


@pytest.mark.slow
def test_built_in_model_restores_the_sample_in_the_inputs_units(widget, qtbot) -> None:
    from debcr.napari.io import sample_nuclei

    viewer = widget.viewer
    for data, meta, _ in sample_nuclei():
        viewer.add_image(
            data[:256, :256],
            **meta,
            scale=(0.5, 0.5),
            translate=(10, 20),
            units=("micrometer", "micrometer"),
            axis_labels=("y", "x"),
        )
    pt = widget.predict_tab
    pt.input.setCurrentText("nuclei (noisy)")
    assert pt.model.currentText() == "2D_denoising"
    assert [pt.units.itemText(i) for i in range(pt.units.count())] == list(UNITS)
    assert pt.units.currentText() == "auto" and not pt.tta.isChecked()
    pt.tile.setValue(128)
    pt.uncertainty.setChecked(True)
    _click_and_wait(qtbot, pt, pt.run_button)
    out = viewer.layers["nuclei (noisy).pred"]
    spread = viewer.layers["nuclei (noisy).pred.uncertainty"]
    assert spread.data.shape == out.data.shape and spread.data.min() >= 0
    np.testing.assert_array_equal(spread.scale, [0.5, 0.5])
    assert 0 < float(np.median(spread.data)) < 0.2 * float(out.data.std())
    assert list(viewer.layers).index(spread) < list(viewer.layers).index(out)
    noisy = viewer.layers["nuclei (noisy)"].data.astype(np.float32)
    clean = viewer.layers["nuclei (clean)"].data
    assert out.data.shape == (256, 256)
    np.testing.assert_array_equal(out.scale, [0.5, 0.5])
    np.testing.assert_array_equal(out.translate, [10, 20])
    assert [str(u) for u in out.units] == ["micrometer", "micrometer"]
    assert tuple(out.axis_labels) == ("y", "x")
    assert np.mean((out.data - clean) ** 2) < 0.5 * np.mean((noisy - clean) ** 2)
    # the input's units: the default map keeps the mean (the affine one lost 9.5 %)
    assert out.data.mean() == pytest.approx(noisy.mean(), rel=0.01)
    assert pt.progress.value() == pt.progress.maximum() == 4


def test_predict_cancel_adds_no_layer(widget, qtbot) -> None:
    viewer = widget.viewer
    viewer.add_image(np.stack([fmd_frame(19, i) for i in range(4)]), name="stack")
    pt = widget.predict_tab
    pt.input.setCurrentText("stack")
    pt.tile.setValue(64)
    pt.run_button.click()
    qtbot.waitUntil(lambda: pt.progress.value() >= 1, timeout=TIMEOUT_MS)
    pt.cancel_button.click()
    _wait(qtbot, pt)
    assert "Cancelled." in widget.log.lines()
    assert "stack.pred" not in viewer.layers
    assert pt.run_button.isEnabled()


def test_user_mistakes_end_up_in_the_log(widget, qtbot, tmp_path) -> None:
    viewer = widget.viewer
    pt, tr, tt = widget.predict_tab, widget.train_tab, widget.transform_tab
    pt.run_button.click()
    assert widget.log.lines()[-1] == "Choose an input image layer first."

    viewer.add_image(fmd_frame()[:64, :64], name="a")
    viewer.add_image(fmd_frame()[:32, :32], name="b")
    pt.input.setCurrentText("a")
    pt.model.setCurrentText(MODEL_FILE)
    pt.model_path.setText(str(tmp_path / "missing.safetensors"))
    _click_and_wait(qtbot, pt, pt.run_button)
    assert widget.log.lines()[-1] == f"No model file at {tmp_path / 'missing.safetensors'}"

    tr.run_button.click()
    assert widget.log.lines()[-1] == (
        "Choose the training input and target layers (or an NPZ file)."
    )
    for picker, name in ((tr.train_low, "a"), (tr.train_gt, "b"), (tr.val_low, "a")):
        picker.setCurrentText(name)
    tr.val_gt.setCurrentText("a")
    tr.save_path.setText(str(tmp_path / "run"))
    _click_and_wait(qtbot, tr, tr.run_button)
    assert widget.log.lines()[-1].startswith(
        "The training input (64, 64) and target (32, 32) differ in shape"
    )

    tt.input.setCurrentText("a")
    _click_and_wait(qtbot, tt, tt.stitch_button)
    assert widget.log.lines()[-1].startswith("This layer has no crop grid")
    assert not (tmp_path / "run" / "best.safetensors").exists()


def test_layer_pickers_follow_added_renamed_and_removed_layers(widget) -> None:
    viewer = widget.viewer
    pt = widget.predict_tab
    viewer.add_image(fmd_frame()[:64, :64], name="first")
    viewer.add_image(fmd_gt()[:64, :64], name="second")
    pt.input.setCurrentText("second")
    viewer.layers["second"].name = "renamed"
    names = [pt.input.itemText(i) for i in range(pt.input.count())]
    assert names == ["first", "renamed"]
    assert pt.input.currentText() in names
    del viewer.layers["first"]
    assert [pt.input.itemText(i) for i in range(pt.input.count())] == ["renamed"]
    assert pt.output.text() == "renamed.pred"
    tr_names = [widget.train_tab.val_gt.itemText(i) for i in range(widget.train_tab.val_gt.count())]
    assert tr_names == ["—", "renamed"]


def test_settings_save_load_and_reset(widget, tmp_path) -> None:
    tr = widget.train_tab
    tr.batch.setValue(8)
    tr.steps.setValue(300)
    tr.lr.setValue(0.0005)
    path = tmp_path / "config.yaml"
    tr.save_config(path)
    assert "batch_size: 8" in path.read_text()
    tr.reset_config()
    assert tr.batch.value() == 32 and tr.steps.value() == 2000
    tr.load_config(path)
    assert (tr.batch.value(), tr.steps.value(), tr.lr.value()) == (8, 300, 0.0005)
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_sise: 4\n")
    tr.load_config(bad)
    assert widget.log.lines()[-1].startswith(f"Could not load settings from {bad}")
    assert "batch_size" in widget.log.lines()[-1]


@pytest.mark.slow
def test_closing_the_viewer_stops_training(make_napari_viewer, qtbot, tmp_path) -> None:
    viewer = make_napari_viewer()
    widget = DeBCRWidget(viewer)
    viewer.window.add_dock_widget(widget, name="DeBCR")
    low = np.stack([fmd_frame(1, i)[:64, :64] for i in range(4)]).astype(np.float32)
    viewer.add_image(low, name="low")
    tr = widget.train_tab
    for picker in (tr.train_low, tr.train_gt, tr.val_low, tr.val_gt):
        picker.setCurrentText("low")
    tr.batch.setValue(2)
    tr.steps.setValue(100_000)
    tr.save_path.setText(str(tmp_path / "run"))
    tr.run_button.click()
    worker = tr.worker
    stop = tr.stop_event
    qtbot.waitUntil(lambda: tr.progress.value() >= 1, timeout=TIMEOUT_MS)
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        viewer.close()
    assert stop.is_set()
    assert (tmp_path / "run" / "last.safetensors").is_file()


def test_mode_selector_shows_what_each_mode_needs(widget) -> None:
    tr = widget.train_tab
    assert tr.current_mode() == "supervised" and not tr.train_gt.isHidden()
    tr.mode.setCurrentIndex(2)
    assert tr.current_mode() == "noise2void" == tr.config().mode
    assert tr.train_gt.isHidden() and tr.val_gt.isHidden()
    assert tr.labels["train_low"].text() == "training images:"
    tr.mode.setCurrentIndex(1)
    assert tr.labels["train_low"].text() == "training repeats (T, Y, X):"
    assert tr.train_gt.isHidden()
    tr.run_button.click()
    assert (
        widget.log.lines()[-1] == "Choose the training layer of repeated frames (or an NPZ file)."
    )
    tr.mode.setCurrentIndex(0)
    assert not tr.train_gt.isHidden() and not tr.labels["val_gt"].isHidden()


@pytest.mark.slow
def test_noise2void_from_one_noisy_image_layer(widget, qtbot, tmp_path) -> None:
    import json

    from debcr.modelfile import read_header

    viewer = widget.viewer
    viewer.add_image(fmd_frame(19, 0), name="noisy")
    tr = widget.train_tab
    tr.mode.setCurrentIndex(2)
    tr.train_low.setCurrentText("noisy")
    tr.batch.setValue(4)
    tr.steps.setValue(6)
    tr.val_freq.setValue(3)
    tr.save_path.setText(str(tmp_path / "run"))
    _click_and_wait(qtbot, tr, tr.run_button)
    log = widget.log.lines()
    assert (
        "Data: 14 training and 2 validation patches of 128×128 px (noise2void); validation: "
        "the last tenth of the training layer." in log
    )
    assert any(line.startswith("Step 6: validation loss") for line in log)
    assert log[-1].startswith("Training is finished; the best model is in")
    meta = json.loads(read_header(tmp_path / "run" / "best.safetensors")["metadata"])
    assert meta["mode"] == "noise2void"
    preview = viewer.layers["noisy.preview"]
    assert preview.data.shape == (128, 128)
    # beside the 512² layer (with a gap), not over its top-left corner
    np.testing.assert_allclose(preview.translate, [0, 512 * 1.05])
    assert len(tr.plot.val) == 2


@pytest.mark.slow
def test_noise2noise_from_a_stack_layer_of_repeats(widget, qtbot, tmp_path) -> None:
    viewer = widget.viewer
    repeats = np.stack([fmd_frame(19, i)[:256, :256] for i in range(4)])
    viewer.add_image(repeats, name="repeats")
    tr = widget.train_tab
    tr.mode.setCurrentIndex(1)
    tr.train_low.setCurrentText("repeats")
    tr.batch.setValue(2)
    tr.steps.setValue(3)
    tr.val_freq.setValue(3)
    tr.save_path.setText(str(tmp_path / "run"))
    _click_and_wait(qtbot, tr, tr.run_button)
    log = widget.log.lines()
    assert (
        "Data: 3 training and 1 validation patches of 128×128 px in 4 frames (noise2noise); "
        "validation: the last tenth of the training layer." in log
    )
    assert log[-1].startswith("Training is finished")
    assert (tmp_path / "run" / "best.safetensors").is_file()
    assert viewer.layers["repeats.preview"].data.shape == (128, 128)


def test_input_pickers_follow_the_selected_layer_until_one_is_chosen(widget) -> None:
    viewer = widget.viewer
    pt, tt = widget.predict_tab, widget.transform_tab
    viewer.add_image(fmd_frame()[:32, :32], name="bottom")
    viewer.add_image(fmd_frame()[:32, :32], name="top")
    assert pt.input.currentText() == tt.input.currentText() == "top"  # just added: active
    viewer.layers.selection.active = viewer.layers["bottom"]
    assert pt.input.currentText() == tt.input.currentText() == "bottom"
    assert pt.output.text() == "bottom.pred"
    viewer.layers.selection.clear()
    viewer.layers["top"].visible = False
    assert pt.input.currentText() == "bottom"  # no active layer: the top-most visible one
    viewer.layers["top"].visible = True
    assert pt.input.currentText() == "top"
    # A layer chosen in the picker stays chosen whatever is selected in the layer list…
    pt.input.setCurrentText("bottom")
    viewer.layers.selection.active = viewer.layers["top"]
    assert pt.input.currentText() == "bottom" and pt.input.chosen
    assert tt.input.currentText() == "top"
    viewer.layers["bottom"].name = "renamed"
    assert pt.input.currentText() == "renamed"
    # …until it is removed; the optional training pickers never follow.
    del viewer.layers["renamed"]
    assert pt.input.currentText() == "top" and not pt.input.chosen
    assert widget.train_tab.train_low.currentText() == "—"


@pytest.mark.slow
def test_open_sample_restores_the_selected_noisy_layer(widget, qtbot, denoiser) -> None:
    from debcr.model import predict

    viewer = widget.viewer
    viewer.open_sample("debcr-torch", "nuclei")  # what File › Open Sample › Noisy nuclei does
    assert [layer.name for layer in viewer.layers] == ["nuclei (clean)", "nuclei (noisy)"]
    assert viewer.layers.selection.active.name == "nuclei (noisy)"
    pt, tt = widget.predict_tab, widget.transform_tab
    assert pt.input.currentText() == tt.input.currentText() == "nuclei (noisy)"
    assert pt.output.text() == "nuclei (noisy).pred"
    # A quarter of the sample keeps the test short; the layers stay the sample's.
    for layer in viewer.layers:
        layer.data = layer.data[:256, :256]
    _click_and_wait(qtbot, pt, pt.run_button)
    out = viewer.layers["nuclei (noisy).pred"].data
    noisy = viewer.layers["nuclei (noisy)"].data
    # The result is selected now; the input stays the layer that was restored.
    assert viewer.layers.selection.active.name == "nuclei (noisy).pred"
    assert pt.input.currentText() == "nuclei (noisy)"
    np.testing.assert_allclose(out, predict(denoiser, noisy, progress=False), rtol=1e-5, atol=1e-3)


def test_use_model_offers_the_devices_present_and_shows_the_path(widget, qtbot) -> None:
    import torch

    from debcr.defaults import BACKENDS, PRECISIONS

    pt = widget.predict_tab
    assert widget.tabs.currentWidget() is pt  # the widget opens on Use model
    qtbot.waitUntil(lambda: "detecting" not in pt.path_label.text(), timeout=60_000)
    devices = [pt.device.itemText(i) for i in range(pt.device.count())]
    assert devices[:2] == ["auto", "cpu"]
    assert ("cuda" in devices) == torch.cuda.is_available()
    assert ("mps" in devices) == torch.backends.mps.is_available()
    assert [pt.precision.itemText(i) for i in range(pt.precision.count())] == list(PRECISIONS)
    assert [pt.backend.itemText(i) for i in range(pt.backend.count())] == list(BACKENDS)
    pt.backend.setCurrentText("torch")
    pt.precision.setCurrentText("float32")
    pt.device.setCurrentText("cpu")
    qtbot.waitUntil(lambda: pt.path_label.text().startswith("Runs on: PyTorch · float32 · CPU"))
    pt.backend.setCurrentText("openvino")
    qtbot.waitUntil(lambda: pt.path_label.text().startswith("Runs on: OpenVINO · float32 · CPU"))
    # The hint (a faster path not installed here) goes on a second line.
    pt._show_path(pt._path_request, "PyTorch · float32 · CPU (x)", "OpenVINO is not installed.")
    assert pt.path_label.text().splitlines() == [
        "Runs on: PyTorch · float32 · CPU (x)",
        "OpenVINO is not installed.",
    ]


@pytest.mark.slow
def test_use_model_applies_precision_backend_and_units(widget, qtbot, denoiser) -> None:
    from debcr.model import predict

    viewer = widget.viewer
    image = fmd_frame(19, 0)[:96, :96]
    viewer.add_image(image, name="small")
    pt = widget.predict_tab
    pt.backend.setCurrentText("torch")
    pt.precision.setCurrentText("float32")
    pt.units.setCurrentText("percentile")
    _click_and_wait(qtbot, pt, pt.run_button)
    out = viewer.layers["small.pred"].data
    chosen = predict(
        denoiser, image, backend="torch", precision="float32", units="percentile", progress=False
    )
    np.testing.assert_allclose(out, chosen, rtol=1e-5, atol=1e-3)
    default_units = predict(
        denoiser, image, backend="torch", precision="float32", units="auto", progress=False
    )
    assert np.abs(out - default_units).max() > 1.0


def test_fine_tuning_a_built_in_model_keeps_the_recipe_learning_rate(widget, tmp_path) -> None:
    # The recipe's rate won on validation data for fine-tuning too (benchmarks/results/recipe.md:
    # 1e-3 against 5e-4 and 1e-4), so napari trains as `debcr train` does.
    tr = widget.train_tab
    assert tr.lr.value() == pytest.approx(1e-3)
    tr.init.setCurrentText("2D_denoising")
    assert tr.lr.value() == pytest.approx(1e-3)
    assert tr.config().learning_rate == pytest.approx(1e-3)
    tr.lr.setValue(0.0005)  # typed by the user: kept whatever the model
    tr.init.setCurrentText("bright_SR")
    assert tr.config().learning_rate == pytest.approx(0.0005)
    tr.save_config(tmp_path / "s.yaml")
    tr.reset_config()
    assert tr.lr.value() == pytest.approx(1e-3)
    tr.load_config(tmp_path / "s.yaml")  # a settings file's rate is shown as written
    assert tr.lr.value() == pytest.approx(0.0005)


def test_the_recipe_is_chosen_in_the_settings_and_kept_in_settings_files(widget, tmp_path) -> None:
    tr = widget.train_tab
    assert tr.recipe.currentText() == "debcr"
    config = tr.config()
    assert (config.recipe, config.lr_schedule, config.ema_decay) == ("debcr", "cosine", 0.999)
    tr.recipe.setCurrentText("paper")
    config = tr.config()
    assert (config.recipe, config.lr_schedule, config.ema_decay) == ("paper", "constant", 0.0)
    tr.lr.setValue(0.0002)  # a typed rate wins over the recipe's
    assert tr.config().learning_rate == pytest.approx(2e-4)
    tr.save_config(tmp_path / "s.yaml")
    tr.reset_config()
    assert tr.recipe.currentText() == "debcr"
    tr.load_config(tmp_path / "s.yaml")
    assert tr.recipe.currentText() == "paper" and tr.config().lr_schedule == "constant"


def test_new_runs_go_to_the_home_folder_not_the_working_directory(
    widget, tmp_path, monkeypatch
) -> None:
    from pathlib import Path

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir("/")  # as when napari is started from a desktop launcher
    tr = widget.train_tab
    tr.reset_config()
    run = Path(tr.save_path.text())
    assert run.parent == tmp_path / "debcr_runs"
    assert tr.config().weights_path == str(run)


@pytest.mark.slow
def test_a_zarr_backed_layer_is_restored_block_by_block(widget, qtbot, tmp_path, denoiser) -> None:
    import dask.array as da
    import zarr
    from dask.callbacks import Callback

    from debcr.model import predict

    image = fmd_frame(19, 0)[:128, :384]
    store = zarr.open_array(
        tmp_path / "image.zarr", mode="w", shape=image.shape, chunks=(64, 64), dtype=image.dtype
    )
    store[:] = image
    viewer = widget.viewer
    viewer.add_image(da.from_zarr(store), name="lazy")
    restored: list[int] = []  # sizes of the float32 arrays dask computed

    class Restored(Callback):
        def _posttask(self, key, result, dsk, state, worker_id) -> None:
            if getattr(result, "dtype", None) == np.float32:
                restored.append(int(result.size))

    pt = widget.predict_tab
    pt.uncertainty.setChecked(True)
    pt.run_button.click()
    assert widget.log.lines()[-1].startswith("'lazy' is read lazily (dask/Zarr)")
    assert pt.worker is None
    pt.uncertainty.setChecked(False)
    pt.tile.setValue(128)
    pt.units.setCurrentText("percentile")
    # The exact mode on every CPU: in bfloat16 the dask blocks and the in-memory tiles are
    # windows of different shapes, which round differently (up to ~1e-2 of the range).
    pt.precision.setCurrentText("float32")
    with Restored():
        _click_and_wait(qtbot, pt, pt.run_button)
    assert isinstance(viewer.layers["lazy"].data, da.Array)
    # Restored by dask a block (with its halo) at a time, never as one whole-image array (a
    # layer read with np.asarray is restored without dask: no float32 task at all). The
    # normalisation statistics still read up to 16 Mpx (`debcr.inference.lazy`).
    assert restored and max(restored) < image.size
    assert pt.progress.value() == pt.progress.maximum() == 3  # 3 blocks of 128²
    out = viewer.layers["lazy.pred"].data
    expected = predict(
        denoiser, image, tile_size=128, units="percentile", precision="float32", progress=False
    )
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=0.05)
