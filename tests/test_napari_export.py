"""The "Use model" tab's Export… button: BioImage Model Zoo packages from the napari widget.

A real export runs bioimageio.core's model test on three weight formats (1–3 min on CPU): the
job's round trip reads the session's shared package (the ``bmz_package`` fixture, written by the
napari job), and only the button's test exports again, for real, from the GUI's worker thread.
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from conftest import fmd_frame

pytest.importorskip("napari", reason="the napari extra is part of the test install")
pytest.importorskip("bioimageio.core", reason="the export extra is part of the test install")

import debcr
from conftest import napari_wait as _wait
from debcr.napari.parts import MODEL_FILE
from debcr.napari.tabs.export_dialog import ExportDialog


def _open_dialog(tab) -> ExportDialog:
    tab.export_button.click()
    dialogs = [d for d in tab.findChildren(ExportDialog) if d.isVisible()]
    assert len(dialogs) == 1
    return dialogs[0]


def _ok(dialog: ExportDialog) -> None:
    dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()


@pytest.mark.slow
def test_export_package_round_trips_the_built_in_model(bmz_package, denoiser) -> None:
    # Written by jobs.export_package("2D_denoising", path, description="", authors="").
    path, result = bmz_package
    assert result.path == path and result.status == "passed"
    with zipfile.ZipFile(path) as package:
        assert "rdf.yaml" in package.namelist()
    loaded = debcr.model.init(str(path))
    x = torch.from_numpy(fmd_frame()[:64, :64].astype(np.float32) / 255)[None, None]
    with torch.inference_mode():
        assert torch.allclose(loaded.restore(x), denoiser.restore(x), atol=1e-6)


@pytest.mark.slow
def test_export_button_writes_a_package_the_tab_then_predicts_with(widget, qtbot, tmp_path):
    pt = widget.predict_tab
    assert pt.model.currentText() == "2D_denoising"
    dialog = _open_dialog(pt)
    assert dialog.name.text() == "DeBCR 2D_denoising (m-rBCR)"
    assert dialog.authors.text().startswith("Rui Li, Artsemi Yushkevich")
    assert dialog.licence.text() == "CC-BY-4.0"
    path = tmp_path / "denoise.zip"
    dialog.path.setText(str(path))
    _ok(dialog)
    assert not pt.export_button.isEnabled() and pt.export_button.text() == "Exporting…"
    assert not pt.run_button.isEnabled() and not pt.cancel_button.isEnabled()
    _wait(qtbot, pt)
    assert path.is_file()
    assert widget.log.lines()[-1].startswith(f"BioImage Model Zoo package written to {path} (")
    assert "model test passed" in widget.log.lines()[-1]
    assert pt.export_button.isEnabled() and pt.run_button.isEnabled()

    # The package is a model the tab can use, and it restores as the built-in model does.
    image = fmd_frame()[:64, :64]
    widget.viewer.add_image(image, name="noisy")
    pt.input.setCurrentText("noisy")
    pt.use_model(str(path))
    pt.run_button.click()
    _wait(qtbot, pt)
    expected = debcr.model.predict("2D_denoising", image, progress=False)
    np.testing.assert_allclose(widget.viewer.layers["noisy.pred"].data, expected, atol=1e-5)


def test_exporting_your_own_model_without_authors_is_refused(widget, qtbot, tmp_path):
    model_file = tmp_path / "mine.safetensors"
    debcr.model.save(debcr.model.init(None, seed=0), model_file)
    pt = widget.predict_tab
    pt.use_model(str(model_file))
    assert pt.model.currentText() == MODEL_FILE
    dialog = _open_dialog(pt)
    assert (dialog.name.text(), dialog.authors.text()) == ("", "")
    dialog.path.setText("")
    _ok(dialog)
    assert dialog.isVisible() and pt.worker is None
    assert dialog.message.text() == "Choose where to write the package (.zip)."

    path = tmp_path / "mine.zip"
    dialog.path.setText(str(path))
    dialog.name.setText("Mine")
    _ok(dialog)
    _wait(qtbot, pt)
    last = widget.log.lines()[-1]
    assert "needs authors" in last and "\n" not in last and "Traceback" not in last
    assert not path.exists()
    assert pt.export_button.isEnabled()


def test_export_dialog_is_wide_enough_for_its_fields(widget, qtbot) -> None:
    dialog = _open_dialog(widget.predict_tab)  # 2D_denoising: long names and authors
    qtbot.waitExposed(dialog)
    assert dialog.width() >= dialog.sizeHint().width()
    from qtpy.QtWidgets import QLineEdit

    fields = dialog.findChildren(QLineEdit)
    assert len(fields) == 5  # package, name, description, authors, licence
    for field in fields:
        text = field.text() or field.placeholderText()
        assert field.width() >= field.fontMetrics().horizontalAdvance(text) + 12, text
    dialog.reject()
