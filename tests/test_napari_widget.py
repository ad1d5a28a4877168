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
    assert viewer.layers["noisy.preview"].data.shape == (128, 128)
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
