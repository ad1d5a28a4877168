"""The "Use model" tab: restore an image layer with a built-in model, a file, a run or a BMZ
package, and export the chosen model as a BioImage Model Zoo package."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from debcr.defaults import BACKENDS, PRECISIONS, UNITS
from debcr.napari import jobs
from debcr.napari.parts import (
    MODEL_FILE,
    MODEL_PATTERN,
    JobTab,
    LayerPicker,
    Relay,
    open_file,
    open_folder,
    row,
    spin,
)
from debcr.napari.tabs.export_dialog import ExportDialog

if TYPE_CHECKING:
    from debcr.napari.widget import DeBCRWidget


class PredictTab(JobTab):
    """Restore a layer with a built-in model, a model file, a training run or a BMZ package;
    export the chosen model as a BioImage Model Zoo package."""

    def __init__(self, owner: DeBCRWidget) -> None:
        super().__init__(owner)
        self._make_controls()
        self.cancel_event = threading.Event()
        self.relay = Relay()
        self.relay.event.connect(self._on_progress)
        self._models: dict[tuple[str, str], Any] = {}
        self._exporting = False
        self._unit = "tiles"
        self._path_request = 0  # answers to older choices are dropped (`_show_path`)
        self._lay_out()
        self._connect()
        self.output.setText(f"{self.input.currentText()}.pred" if self.input.currentText() else "")
        self.model_path.setEnabled(False)
        self.set_running(False)
        self._find_devices()

    def _make_controls(self) -> None:
        self.input = LayerPicker(self.viewer)
        self.model = QComboBox()
        self.model.addItems([*jobs.BUILTIN_MODELS, MODEL_FILE])
        self.model_path = QLineEdit(placeholderText="model file, run folder or BMZ package")
        self.tile = spin(0, 16384, 0, 64)
        self.tile.setSpecialValueText("auto")
        self.batch = spin(0, 1024, 0, 1)
        self.batch.setSpecialValueText("auto")
        self.device = QComboBox()
        # The GPUs present are added once found (`_find_devices`: asking imports torch).
        self.device.addItems(["auto", "cpu"])
        self.precision = QComboBox()
        self.precision.addItems(list(PRECISIONS))
        self.precision.setToolTip(
            "Arithmetic of the network: auto is bfloat16 where the device computes it natively, "
            "else float32 (exact); bfloat16 and float16 are faster, within ~0.01 dB"
        )
        self.backend = QComboBox()
        self.backend.addItems(list(BACKENDS))
        self.backend.setToolTip(
            "What runs the network: auto is OpenVINO on a CPU where it is installed, else PyTorch"
        )
        self.path_label = QLabel("Runs on: detecting…")
        self.path_label.setWordWrap(True)
        self.path_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.units = QComboBox()
        self.units.addItems(list(UNITS))
        self.units.setToolTip(
            "Intensities of the result: auto (default) is calibrated for denoising models and "
            "affine for resolution enhancement; calibrated keeps the input's mean and dark "
            "level; affine fits a straight line; percentile only undoes the normalisation; "
            "normalized is the network's own output"
        )
        self.tta = QCheckBox("average the 8 rotations and flips (8× slower)")
        self.uncertainty = QCheckBox("add an uncertainty layer (spread of the 8)")
        self.output = QLineEdit()
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Write the chosen model as a BioImage Model Zoo package")
        self.progress = QProgressBar()

    def _lay_out(self) -> None:
        browse_file, browse_dir = QPushButton("File…"), QPushButton("Folder…")
        browse_file.clicked.connect(self._choose_file)
        browse_dir.clicked.connect(self._choose_folder)
        form = QFormLayout()
        form.addRow("input layer:", self.input)
        form.addRow("model:", self.model)
        form.addRow("", row(self.model_path, browse_file, browse_dir))
        form.addRow("tile size (px):", self.tile)
        form.addRow("tiles per batch:", self.batch)
        form.addRow("device:", self.device)
        form.addRow("precision:", self.precision)
        form.addRow("backend:", self.backend)
        form.addRow("", self.path_label)
        form.addRow("units:", self.units)
        form.addRow("test-time augmentation:", self.tta)
        form.addRow("", self.uncertainty)
        form.addRow("output layer:", self.output)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(row(self.run_button, self.cancel_button, self.export_button))
        layout.addWidget(self.progress)
        layout.addStretch()

    def _connect(self) -> None:
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button.clicked.connect(self.show_export_dialog)
        self.input.currentTextChanged.connect(
            lambda name: self.output.setText(f"{name}.pred" if name else "")
        )
        self.model.currentTextChanged.connect(
            lambda text: self.model_path.setEnabled(text == MODEL_FILE)
        )
        for picker in (self.device, self.precision, self.backend):
            picker.currentTextChanged.connect(self.update_path)

    def _find_devices(self) -> None:
        """Offer the devices present (in a worker: finding them imports torch)."""
        from napari.qt.threading import create_worker

        worker = create_worker(jobs.available_devices, _ignore_errors=True, _start_thread=False)
        worker.returned.connect(self._show_devices)
        worker.errored.connect(lambda exc: self.update_path())
        self.devices_worker = worker
        worker.start()

    def _show_devices(self, devices: list[str]) -> None:
        current = self.device.currentText()
        self.device.blockSignals(True)
        self.device.clear()
        self.device.addItems(devices)
        self.device.setCurrentText(current if current in devices else "auto")
        self.device.blockSignals(False)
        self.update_path()

    def update_path(self, *_: Any) -> None:
        """Say what the chosen device, precision and backend run on (found in a worker)."""
        from napari.qt.threading import create_worker

        self._path_request += 1
        request = self._path_request
        choices = (self.device.currentText(), self.precision.currentText())
        worker = create_worker(
            jobs.inference_path,
            *choices,
            self.backend.currentText(),
            _ignore_errors=True,
            _start_thread=False,
        )
        worker.returned.connect(lambda path: self._show_path(request, *path))
        worker.errored.connect(lambda exc: self._show_path(request, None, jobs.describe_error(exc)))
        self.path_worker = worker
        worker.start()

    def _show_path(self, request: int, line: str | None, hint: str | None) -> None:
        """Show the path (``line``) and the hint, or (``line`` None) why the choices cannot
        run here."""
        if request != self._path_request:
            return  # an answer for choices changed since
        text = (
            f"Cannot run with these choices: {hint}"
            if line is None
            else f"Runs on: {line}" + (f"\n{hint}" if hint else "")
        )
        try:
            self.path_label.setText(text)
            self.path_label.setToolTip("" if line is None else hint or "")
        except RuntimeError:
            # The widget was closed while the worker answered (Qt deleted the label): nothing
            # is left to show it in.
            return

    def _choose_file(self) -> None:
        path = open_file(self, "Model file or BMZ package", MODEL_PATTERN)
        if path:
            self.use_model(path)

    def _choose_folder(self) -> None:
        path = open_folder(self, "Training run folder")
        if path:
            self.use_model(path)

    def use_model(self, spec: str, model: Any = None) -> None:
        """Select a model file/run folder (e.g. the run that just finished training)."""
        self.model.setCurrentText(MODEL_FILE)
        self.model_path.setText(spec)
        if model is not None:
            self._models[(spec, self.device.currentText())] = model

    def spec(self) -> str:
        choice = self.model.currentText()
        return self.model_path.text().strip() if choice == MODEL_FILE else choice

    def set_running(self, running: bool) -> None:
        exporting = running and self._exporting
        self.run_button.setEnabled(not running)
        self.run_button.setText("Running…" if running and not exporting else "Run")
        self.export_button.setEnabled(not running)
        self.export_button.setText("Exporting…" if exporting else "Export…")
        # An export cannot stop halfway (the Zoo's model test runs to its end).
        self.cancel_button.setEnabled(running and not exporting)

    def run(self) -> None:
        if self.busy():
            return
        layer = self.input.layer()
        if layer is None:
            self.log("Choose an input image layer first.")
            return
        if getattr(layer, "rgb", False):
            self.log(f"'{layer.name}' is an RGB image; DeBCR works on grey-level images.")
            return
        if jobs.is_lazy(layer.data) and self.uncertainty.isChecked():
            self.log(
                f"'{layer.name}' is read lazily (dask/Zarr), block by block, which gives no "
                "uncertainty layer: untick 'add an uncertainty layer'."
            )
            return
        spec = self.spec()
        if not spec:
            self.log(
                "Choose a model: a built-in one, a model file, a training run folder or a BMZ "
                "package."
            )
            return
        name = self.output.text().strip() or f"{layer.name}.pred"
        # napari selects the result layer when it is added; the input must not follow it, or
        # the next Run would restore the restoration.
        self.input.keep()
        self.cancel_event.clear()
        self.progress.setRange(0, 0)
        self.progress.setFormat("loading model…")
        self.log(f"Running prediction on '{layer.name}' with {spec}")
        device = self.device.currentText()
        self._unit = "blocks" if jobs.is_lazy(layer.data) else "tiles"
        self.start(
            self._predict_job,
            lambda out: self._predicted(layer, name, out),
            spec,
            device,
            layer.data,
            self.tile.value() or None,
            self.batch.value() or None,
            {
                "units": self.units.currentText(),
                "precision": self.precision.currentText(),
                "backend": self.backend.currentText(),
                "tta": self.tta.isChecked(),
                "uncertainty": self.uncertainty.isChecked(),
            },
        )

    def _predict_job(
        self,
        spec: str,
        device: str,
        data: Any,
        tile: int | None,
        batch: int | None,
        choices: dict[str, Any],
    ) -> Any:
        # Runs in the worker thread; touches no widget (only the model cache and signals).
        key = (spec, device)
        model = self._models.get(key)
        if model is None:
            model = jobs.open_model(spec)
            self._models[key] = model
        return jobs.predict_data(
            model,
            data,
            tile_size=tile,
            batch_size=batch,
            device=None if device == "auto" else device,
            report=lambda done, total: self.relay.event.emit((done, total)),
            cancel=self.cancel_event,
            **choices,
        )

    def _on_progress(self, value: tuple[int, int]) -> None:
        done, total = value
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setFormat(f"%v / %m {self._unit}")

    def _predicted(self, layer: Any, name: str, result: Any) -> None:
        meta = {k: v for k, v in layer.metadata.items() if k == jobs.GRID_KEY}
        place = {
            "scale": layer.scale,
            "translate": layer.translate,
            "units": layer.units,
            "axis_labels": layer.axis_labels,
        }
        if isinstance(result, tuple):
            # Beneath the restoration, so the restoration stays in view.
            result, spread = result
            self.viewer.add_image(
                spread, name=f"{name}.uncertainty", colormap="magma", metadata=meta, **place
            )
            self.log(
                f"'{name}.uncertainty': the spread of the 8 rotations/flips, in the result's "
                "units; where it is high the model is unsure."
            )
        self.viewer.add_image(result, name=name, metadata=meta, **place)
        self.progress.setFormat("done")
        self.log(f"Prediction is finished: '{name}', shape {tuple(result.shape)}.")

    def show_export_dialog(self) -> ExportDialog | None:
        """Ask how to package the chosen model; OK starts `export`.

        The dialog is window-modal but does not block (``open``, not ``exec``), so the
        viewer keeps drawing and tests can fill it in.
        """
        if self.busy():
            return None
        spec = self.spec()
        if not spec:
            self.log(
                "Choose the model to export: a built-in one, a model file, a training run "
                "folder or a BMZ package."
            )
            return None
        dialog = ExportDialog(spec, self)
        dialog.accepted.connect(lambda: self.export(spec, dialog.output(), **dialog.fields()))
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        return dialog

    def export(self, spec: str, path: str, **fields: Any) -> None:
        """Write ``spec`` as a BioImage Model Zoo package at ``path``, in a worker thread.

        Parameters
        ----------
        spec : str
            The model, as `spec` names it.
        path : str
            The ``.zip`` to write.
        **fields
            ``name``, ``description``, ``authors``, ``license``, ``overwrite`` (see
            `debcr.napari.jobs.export_package`).
        """
        if self.busy():
            return
        self._exporting = True
        self.progress.setRange(0, 0)
        self.progress.setFormat("exporting…")
        self.log(f"Exporting {spec} to {path} (with the Zoo's model test: about a minute)…")
        self.start(jobs.export_package, lambda result: self.log(str(result)), spec, path, **fields)

    def _finished(self) -> None:
        self._exporting = False
        super()._finished()
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
            self.progress.setFormat("")

    def cancel(self) -> None:
        if self.busy():
            self.cancel_event.set()
            self.log("Cancelling the prediction…")
