"""The "DeBCR" dock widget: Transform data / Train model / Use model tabs and a log.

Every action runs in a napari thread worker (:mod:`debcr.napari.jobs` holds the work itself);
the GUI thread only starts workers, shows their progress and adds the resulting layers.
User mistakes and failures end up in the log as sentences, never as a frozen window.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from debcr.napari import jobs

if TYPE_CHECKING:
    import napari

logger = logging.getLogger(__name__)

NONE_LAYER = "—"
NEW_MODEL = "new model"
MODEL_FILE = "model file or run folder…"


class _Relay(QObject):
    """Carries events from worker threads to the GUI thread (queued signal)."""

    event = Signal(object)


class LogPanel(QWidget):
    """Read-only log shared by the tabs, with a "Clear log" button."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []
        self.text = QTextEdit(readOnly=True)
        self.text.setMinimumHeight(90)
        clear = QPushButton("Clear log")
        clear.clicked.connect(self.clear)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Log"))
        layout.addWidget(self.text)
        layout.addWidget(clear)

    def write(self, message: str) -> None:
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        self.messages.append(message)
        self.text.append(f"{stamp}  {message}")
        logger.info(message)

    def clear(self) -> None:
        self.messages.clear()
        self.text.clear()

    def lines(self) -> list[str]:
        """The logged messages, oldest first, without time stamps."""
        return list(self.messages)


class LayerPicker(QComboBox):
    """Image layers of the viewer; keeps its choice when layers come and go."""

    def __init__(self, viewer: napari.Viewer, optional: bool = False) -> None:
        super().__init__()
        self.viewer = viewer
        self.optional = optional
        for event in ("inserted", "removed", "moved", "changed"):
            getattr(viewer.layers.events, event).connect(self.refresh)
        viewer.layers.events.inserted.connect(self._watch_name)
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.refresh()

    def _watch_name(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh)

    def refresh(self, *_: Any) -> None:
        from napari.layers import Image

        current = self.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        if self.optional:
            names.insert(0, NONE_LAYER)
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        self.blockSignals(False)
        if current not in names:
            self.currentTextChanged.emit(self.currentText())

    def layer(self) -> Any:
        """The chosen layer, or None."""
        name = self.currentText()
        if not name or name == NONE_LAYER or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]


def _spin(low: int, high: int, value: int, step: int = 1) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    return box


def _dspin(low: float, high: float, value: float, step: float, decimals: int = 2) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    return box


def _row(*widgets: QWidget) -> QWidget:
    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        layout.addWidget(w)
    return box


class _Tab(QWidget):
    """Shared plumbing: run a job in a worker, log its outcome, keep buttons consistent."""

    def __init__(self, owner: DeBCRWidget) -> None:
        super().__init__()
        self.owner = owner
        self.viewer = owner.viewer
        self.worker: Any = None

    def log(self, message: str) -> None:
        self.owner.log.write(message)

    def busy(self) -> bool:
        return self.worker is not None

    def start(
        self,
        func: Callable[..., Any],
        on_result: Callable[[Any], None],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Run ``func(*args, **kwargs)`` in a thread worker; results come back to the GUI."""
        from napari.qt.threading import create_worker

        worker = create_worker(func, *args, _ignore_errors=True, _start_thread=False, **kwargs)
        worker.returned.connect(on_result)
        worker.errored.connect(self._failed)
        worker.finished.connect(self._finished)
        self.worker = worker
        self.owner.workers.add(worker)
        self.set_running(True)
        worker.start()
        return worker

    def _failed(self, exc: BaseException) -> None:
        if not isinstance(exc, jobs.Cancelled):
            logger.error("DeBCR job failed", exc_info=exc)
        self.log(jobs.describe_error(exc))

    def _finished(self) -> None:
        self.owner.workers.discard(self.worker)
        self.worker = None
        self.set_running(False)

    def set_running(self, running: bool) -> None:  # pragma: no cover - overridden
        """Enable/disable the tab's controls while a job runs."""


class TransformTab(_Tab):
    """Normalise, crop into patches (grid shown and remembered), stitch back."""

    def __init__(self, owner: DeBCRWidget) -> None:
        super().__init__(owner)
        self.input = LayerPicker(self.viewer)
        self.pmin = _dspin(0, 100, 0.1, 0.1)
        self.pmax = _dspin(0, 100, 99.9, 0.1)
        self.patch = _spin(16, 4096, 128, 16)
        self.overlap_y = _dspin(0, 0.85, 0.5, 0.05)
        self.overlap_x = _dspin(0, 0.85, 0.5, 0.05)
        self.grid_label = QLabel()
        self.window = QComboBox()
        self.window.addItems(["hann", "linear", "uniform"])
        self.normalize_button = QPushButton("Normalize")
        self.crop_button = QPushButton("Crop")
        self.stitch_button = QPushButton("Stitch")
        self.normalize_button.clicked.connect(self.normalize)
        self.crop_button.clicked.connect(self.crop)
        self.stitch_button.clicked.connect(self.stitch)

        form = QFormLayout()
        form.addRow("input layer:", self.input)
        form.addRow("normalize by percentile (pmin, pmax):", _row(self.pmin, self.pmax))
        form.addRow("patch size (Y, X):", self.patch)
        form.addRow("patch overlap (Y, X):", _row(self.overlap_y, self.overlap_x))
        form.addRow("patch grid:", self.grid_label)
        form.addRow("stitch blending:", self.window)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(_row(self.normalize_button, self.crop_button, self.stitch_button))
        layout.addStretch()
        for signal in (
            self.input.currentTextChanged,
            self.patch.valueChanged,
            self.overlap_y.valueChanged,
            self.overlap_x.valueChanged,
        ):
            signal.connect(self.update_grid)
        self.update_grid()

    def overlap(self) -> tuple[float, float]:
        return (self.overlap_y.value(), self.overlap_x.value())

    def update_grid(self, *_: Any) -> None:
        """Show the grid Crop will make, or what Stitch will use for a patch layer."""
        from debcr.data.tiling import patch_grid

        layer = self.input.layer()
        if layer is None:
            self.grid_label.setText("no image layer")
            return
        grid = layer.metadata.get(jobs.GRID_KEY)
        if grid:
            ny, nx = grid["patch_num"]
            h, w = grid["image_shape"]
            self.grid_label.setText(f"patches of a {h}×{w} image: {ny} × {nx} (stitch ready)")
            return
        shape = layer.data.shape
        try:
            ny, nx = patch_grid(shape[-2:], self.patch.value(), self.overlap()).counts
        except ValueError as exc:
            self.grid_label.setText(str(exc))
            return
        slices = f" × {shape[0]} slices" if len(shape) == 3 else ""
        self.grid_label.setText(f"{ny} × {nx} = {ny * nx} patches per image{slices}")

    def set_running(self, running: bool) -> None:
        for button in (self.normalize_button, self.crop_button, self.stitch_button):
            button.setEnabled(not running)

    def _source(self) -> Any:
        layer = self.input.layer()
        if layer is None:
            self.log("Choose an input image layer first.")
        elif getattr(layer, "rgb", False):
            self.log(f"'{layer.name}' is an RGB image; DeBCR works on grey-level images.")
            return None
        return layer

    def _add(self, layer: Any, suffix: str, data: Any, metadata: dict[str, Any]) -> None:
        name = f"{layer.name}.{suffix}"
        meta = {k: v for k, v in layer.metadata.items() if k not in metadata}
        meta.update(metadata)
        self.viewer.add_image(data, name=name, metadata=meta)
        self.log(f"New layer '{name}': shape {tuple(data.shape)}, {data.dtype}.")

    def normalize(self) -> None:
        layer = self._source()
        if layer is None:
            return
        self.log(
            f"Normalizing '{layer.name}' (percentiles {self.pmin.value()}–{self.pmax.value()})"
        )
        self.start(
            jobs.normalize_data,
            lambda out: self._add(layer, "prep", out[0], out[1]),
            layer.data,
            self.pmin.value(),
            self.pmax.value(),
        )

    def crop(self) -> None:
        layer = self._source()
        if layer is None:
            return
        self.log(f"Cropping '{layer.name}' into {self.patch.value()}² patches")
        self.start(
            jobs.crop_data,
            lambda out: self._add(layer, "crops", out[0], out[1]),
            layer.data,
            self.patch.value(),
            self.overlap(),
        )

    def stitch(self) -> None:
        layer = self._source()
        if layer is None:
            return
        grid = layer.metadata.get(jobs.GRID_KEY)
        self.log(f"Stitching '{layer.name}' ({self.window.currentText()} blending)")
        meta = {jobs.GRID_KEY: None}
        self.start(
            jobs.stitch_data,
            lambda out: self._add(layer, "stitched", out, meta),
            layer.data,
            grid,
            self.window.currentText(),
        )


class LossPlot(QWidget):
    """Live training/validation loss and validation PSNR (matplotlib in Qt)."""

    def __init__(self) -> None:
        super().__init__()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 2.2), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(170)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self.loss_ax = self.figure.add_subplot(1, 1, 1)
        self.psnr_ax = self.loss_ax.twinx()
        self.reset()

    def reset(self) -> None:
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        self.psnr: list[tuple[int, float]] = []
        self._last_draw = 0.0
        self.draw(force=True)

    def add(self, event: dict[str, Any]) -> None:
        if event["kind"] == "step":
            self.train.append((event["step"], event["loss"]))
        else:
            self.val.append((event["step"], event["val_loss"]))
            self.psnr.append((event["step"], event["val_psnr"]))
        self.draw(force=event["kind"] != "step")

    def draw(self, force: bool = False) -> None:
        # Redrawing on every step would cost more than a CPU training step; twice a second
        # is enough to look live.
        now = time.monotonic()
        if not force and now - self._last_draw < 0.5:
            return
        self._last_draw = now
        ax, ax2 = self.loss_ax, self.psnr_ax
        ax.clear()
        ax2.clear()
        if self.train:
            ax.plot(*zip(*self.train), color="tab:blue", lw=0.8, label="train loss")
        if self.val:
            ax.plot(*zip(*self.val), "o-", color="tab:orange", ms=3, label="val loss")
            ax2.plot(*zip(*self.psnr), "s--", color="tab:green", ms=3, label="val PSNR")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax2.set_ylabel("PSNR (dB)")
        handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        if handles:
            ax.legend(handles=handles, fontsize=7, loc="upper right")
        self.canvas.draw_idle()


class TrainTab(_Tab):
    """Train a new model, fine-tune a built-in one, or continue from a model file."""

    def __init__(self, owner: DeBCRWidget) -> None:
        super().__init__(owner)
        from debcr.config import TrainConfig

        self.defaults = TrainConfig()
        self.train_low = LayerPicker(self.viewer, optional=True)
        self.train_gt = LayerPicker(self.viewer, optional=True)
        self.val_low = LayerPicker(self.viewer, optional=True)
        self.val_gt = LayerPicker(self.viewer, optional=True)
        self.train_npz = QLineEdit(placeholderText="or an NPZ file (low/gt)")
        self.val_npz = QLineEdit(placeholderText="or an NPZ file (low/gt)")
        self.init = QComboBox()
        self.init.addItems([NEW_MODEL, *jobs.BUILTIN_MODELS, MODEL_FILE])
        self.init_path = QLineEdit(placeholderText="model file or training run folder")
        self.batch = _spin(1, 4096, 32, 8)
        self.steps = _spin(1, 10_000_000, 2000, 10)
        self.val_freq = _spin(1, 1_000_000, 100, 10)
        self.patience = _spin(1, 100_000, 10, 1)
        self.lr = _dspin(0.000001, 1.0, 0.001, 0.0001, decimals=6)
        self.save_path = QLineEdit()
        self.resume = QCheckBox("continue the run in this folder (resume)")
        self.run_button = QPushButton("Run training")
        self.stop_button = QPushButton("Stop")
        self.progress = QProgressBar()
        self.plot = LossPlot()
        self.stop_event = threading.Event()
        self.relay = _Relay()
        self.relay.event.connect(self._on_event)
        self._started = 0.0
        self._preview_name = ""

        data = QGroupBox("Data (patch stacks: layers or NPZ files)")
        form = QFormLayout(data)
        form.addRow("training input:", self.train_low)
        form.addRow("training target:", self.train_gt)
        form.addRow("", _row(self.train_npz, self._browse_button(self.train_npz, "*.npz")))
        form.addRow("validation input:", self.val_low)
        form.addRow("validation target:", self.val_gt)
        form.addRow("", _row(self.val_npz, self._browse_button(self.val_npz, "*.npz")))
        model = QGroupBox("Model to train")
        mform = QFormLayout(model)
        mform.addRow("start from:", self.init)
        mform.addRow("", _row(self.init_path, self._browse_button(self.init_path, "*.safetensors")))
        settings = QGroupBox("Settings")
        sform = QFormLayout(settings)
        sform.addRow("images in batch:", self.batch)
        sform.addRow("training steps:", self.steps)
        sform.addRow("validate every (steps):", self.val_freq)
        sform.addRow("patience (validations):", self.patience)
        sform.addRow("learning rate:", self.lr)
        sform.addRow("save model path:", _row(self.save_path, self._browse_button(self.save_path)))
        sform.addRow("", self.resume)
        reset, load, save = (
            QPushButton("Reset defaults"),
            QPushButton("Load…"),
            QPushButton("Save…"),
        )
        reset.clicked.connect(self.reset_config)
        load.clicked.connect(self._load_config_dialog)
        save.clicked.connect(self._save_config_dialog)
        sform.addRow(_row(reset, load, save))

        self.run_button.clicked.connect(self.run)
        self.stop_button.clicked.connect(self.stop)
        self.init.currentTextChanged.connect(
            lambda text: self.init_path.setEnabled(text == MODEL_FILE)
        )
        layout = QVBoxLayout(self)
        for w in (data, model, settings):
            layout.addWidget(w)
        layout.addWidget(_row(self.run_button, self.stop_button))
        layout.addWidget(self.progress)
        layout.addWidget(self.plot)
        self.reset_config()
        self.set_running(False)

    def _browse_button(self, target: QLineEdit, pattern: str | None = None) -> QPushButton:
        button = QPushButton("Choose")

        def choose() -> None:
            if pattern is None:
                path = QFileDialog.getExistingDirectory(self, "Choose a folder")
            else:
                path, _ = QFileDialog.getOpenFileName(self, "Choose a file", "", pattern)
            if path:
                target.setText(path)

        button.clicked.connect(choose)
        return button

    # -- configuration -----------------------------------------------------------------------

    def config(self) -> Any:
        """The :class:`~debcr.config.TrainConfig` the controls describe (validated)."""
        from debcr.config import merge

        return merge(
            self.defaults,
            {
                "batch_size": self.batch.value(),
                "num_steps": self.steps.value(),
                "val_freq": self.val_freq.value(),
                "save_freq": self.val_freq.value(),
                "patience": self.patience.value(),
                "learning_rate": self.lr.value(),
                "weights_path": self.save_path.text().strip(),
                "progress": False,
            },
        )

    def show_config(self, config: Any) -> None:
        self.defaults = config
        self.batch.setValue(config.batch_size)
        self.steps.setValue(config.num_steps)
        self.val_freq.setValue(config.val_freq)
        self.patience.setValue(config.patience)
        self.lr.setValue(config.learning_rate)
        self.save_path.setText(str(config.weights_path))

    def reset_config(self) -> None:
        from debcr.config import TrainConfig

        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.show_config(TrainConfig(weights_path=str(Path.cwd() / "debcr_runs" / stamp)))

    def load_config(self, path: str | Path) -> None:
        from debcr.config import load

        try:
            self.show_config(load(path))
        except Exception as exc:  # a bad file must end in the log, not in a crash
            self.log(f"Could not load settings from {path}: {jobs.describe_error(exc)}")
            return
        self.log(f"Settings loaded from {path}.")

    def save_config(self, path: str | Path) -> None:
        from debcr.config import save

        try:
            save(self.config(), path)
        except Exception as exc:
            self.log(f"Could not save settings to {path}: {jobs.describe_error(exc)}")
            return
        self.log(f"Settings saved to {path}.")

    def _load_config_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load settings", "", "*.yaml *.yml")
        if path:
            self.load_config(path)

    def _save_config_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save settings", "config.yaml", "*.yaml")
        if path:
            self.save_config(path)

    # -- running -----------------------------------------------------------------------------

    def set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.run_button.setText("Training…" if running else "Run training")
        self.stop_button.setEnabled(running)

    def _source(self, low: LayerPicker, gt: LayerPicker, npz: QLineEdit, what: str) -> Any:
        """What to train on, chosen in the GUI thread: an NPZ path or two layers' data."""
        if npz.text().strip():
            return npz.text().strip()
        if low.layer() is None or gt.layer() is None:
            return None
        return (low.layer().data, gt.layer().data)

    def run(self) -> None:
        if self.busy():
            return
        try:
            config = self.config()
        except Exception as exc:
            self.log(f"Invalid settings: {jobs.describe_error(exc)}")
            return
        sources = {
            "training": self._source(self.train_low, self.train_gt, self.train_npz, "training"),
            "validation": self._source(self.val_low, self.val_gt, self.val_npz, "validation"),
        }
        for what, source in sources.items():
            if source is None:
                self.log(f"Choose the {what} input and target layers (or an NPZ file).")
                return
        init = self.init.currentText()
        init_model = None if init == NEW_MODEL else init
        if init == MODEL_FILE:
            init_model = self.init_path.text().strip()
            if not init_model:
                self.log("Choose the model file or run folder to start from.")
                return
        val_layer = self.val_low.layer()
        self._preview_name = f"{val_layer.name if val_layer else 'validation'}.preview"
        self.stop_event.clear()
        self.plot.reset()
        self.progress.setRange(0, config.num_steps)
        self.progress.setValue(0)
        self.progress.setFormat("starting…")
        self._started = time.monotonic()
        self.log(
            f"Starting training: {config.num_steps} steps, batch {config.batch_size}, learning "
            f"rate {config.learning_rate:g}, from {init}; saving to {config.weights_path}"
        )
        self.start(
            jobs.train_model,
            self._trained,
            sources["training"],
            sources["validation"],
            config,
            init_model,
            report=self.relay.event.emit,
            stop=self.stop_event,
            resume=self.resume.isChecked(),
        )

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "log":
            self.log(event["text"])
            return
        if kind == "step":
            step, total = event["step"], event["total"]
            self.progress.setValue(step)
            elapsed = time.monotonic() - self._started
            eta = elapsed / max(step, 1) * (total - step)
            self.progress.setFormat(
                f"step %v / %m — loss {event['loss']:.4f} — ETA {_duration(eta)}"
            )
        else:
            self.log(
                f"Step {event['step']}: validation loss {event['val_loss']:.4f}, "
                f"PSNR {event['val_psnr']:.2f} dB"
            )
            if "preview" in event:
                self._show_preview(event["preview"])
        self.plot.add(event)

    def _show_preview(self, image: Any) -> None:
        if self._preview_name in self.viewer.layers:
            self.viewer.layers[self._preview_name].data = image
        else:
            self.viewer.add_image(image, name=self._preview_name)

    def _trained(self, result: Any) -> None:
        model, run_dir = result
        stopped = self.stop_event.is_set()
        self.log(
            ("Training stopped" if stopped else "Training is finished")
            + f"; the best model is in {run_dir / 'best.safetensors'}."
        )
        self.progress.setFormat("done" if not stopped else "stopped at step %v")
        self.owner.predict_tab.use_model(str(run_dir), model)

    def stop(self) -> None:
        if self.busy():
            self.stop_event.set()
            self.log("Stopping after the current step (the best model so far is kept)…")


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class PredictTab(_Tab):
    """Restore a layer with a built-in model, a model file or a training run."""

    def __init__(self, owner: DeBCRWidget) -> None:
        super().__init__(owner)
        self.input = LayerPicker(self.viewer)
        self.model = QComboBox()
        self.model.addItems([*jobs.BUILTIN_MODELS, MODEL_FILE])
        self.model_path = QLineEdit(placeholderText="model file or training run folder")
        self.tile = _spin(0, 16384, 0, 64)
        self.tile.setSpecialValueText("auto")
        self.batch = _spin(0, 1024, 0, 1)
        self.batch.setSpecialValueText("auto")
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.output = QLineEdit()
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.progress = QProgressBar()
        self.cancel_event = threading.Event()
        self.relay = _Relay()
        self.relay.event.connect(self._on_progress)
        self._models: dict[tuple[str, str], Any] = {}

        browse_file, browse_dir = QPushButton("File…"), QPushButton("Folder…")
        browse_file.clicked.connect(self._choose_file)
        browse_dir.clicked.connect(self._choose_folder)
        form = QFormLayout()
        form.addRow("input layer:", self.input)
        form.addRow("model:", self.model)
        form.addRow("", _row(self.model_path, browse_file, browse_dir))
        form.addRow("tile size (px):", self.tile)
        form.addRow("tiles per batch:", self.batch)
        form.addRow("device:", self.device)
        form.addRow("output layer:", self.output)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(_row(self.run_button, self.cancel_button))
        layout.addWidget(self.progress)
        layout.addStretch()
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.input.currentTextChanged.connect(
            lambda name: self.output.setText(f"{name}.pred" if name else "")
        )
        self.model.currentTextChanged.connect(
            lambda text: self.model_path.setEnabled(text == MODEL_FILE)
        )
        self.output.setText(f"{self.input.currentText()}.pred" if self.input.currentText() else "")
        self.model_path.setEnabled(False)
        self.set_running(False)

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model file", "", "*.safetensors *.index")
        if path:
            self.use_model(path)

    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Training run folder")
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
        self.run_button.setEnabled(not running)
        self.run_button.setText("Running…" if running else "Run")
        self.cancel_button.setEnabled(running)

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
        spec = self.spec()
        if not spec:
            self.log("Choose a model: a built-in one, a model file or a training run folder.")
            return
        name = self.output.text().strip() or f"{layer.name}.pred"
        self.cancel_event.clear()
        self.progress.setRange(0, 0)
        self.progress.setFormat("loading model…")
        self.log(f"Running prediction on '{layer.name}' with {spec}")
        device = self.device.currentText()
        self.start(
            self._predict_job,
            lambda out: self._predicted(layer, name, out),
            spec,
            device,
            layer.data,
            self.tile.value() or None,
            self.batch.value() or None,
        )

    def _predict_job(
        self, spec: str, device: str, data: Any, tile: int | None, batch: int | None
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
        )

    def _on_progress(self, value: tuple[int, int]) -> None:
        done, total = value
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setFormat("%v / %m tiles")

    def _predicted(self, layer: Any, name: str, result: Any) -> None:
        meta = {k: v for k, v in layer.metadata.items() if k == jobs.GRID_KEY}
        self.viewer.add_image(
            result,
            name=name,
            scale=layer.scale,
            translate=layer.translate,
            metadata=meta,
        )
        self.progress.setFormat("done")
        self.log(f"Prediction is finished: '{name}', shape {tuple(result.shape)}.")

    def _finished(self) -> None:
        super()._finished()
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
            self.progress.setFormat("")

    def cancel(self) -> None:
        if self.busy():
            self.cancel_event.set()
            self.log("Cancelling the prediction…")


class DeBCRWidget(QWidget):
    """The DeBCR dock widget (npe2 command ``debcr.make_widget``).

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose image layers the tabs work on.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.workers: set[Any] = set()
        self.log = LogPanel()
        self.device_label = QLabel("Device: detecting…")
        self.device_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.tabs = QTabWidget()
        self.transform_tab = TransformTab(self)
        self.train_tab = TrainTab(self)
        self.predict_tab = PredictTab(self)
        self.tabs.addTab(self.transform_tab, "Transform data")
        self.tabs.addTab(self.train_tab, "Train model")
        self.tabs.addTab(self.predict_tab, "Use model")
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<b>DeBCR</b>: restore microscopy images"))
        layout.addWidget(self.device_label)
        layout.addWidget(self.tabs)
        layout.addWidget(self.log)
        self._detect_device()
        # Closing the viewer (or the dock) must stop running jobs rather than leave them
        # computing for a window that is gone.
        stops = (self.train_tab.stop_event, self.predict_tab.cancel_event)
        self.destroyed.connect(lambda *_: [event.set() for event in stops])

    def _detect_device(self) -> None:
        from napari.qt.threading import create_worker

        worker = create_worker(jobs.device_description, _ignore_errors=True, _start_thread=False)
        worker.returned.connect(lambda text: self.device_label.setText(f"Device: {text}"))
        worker.errored.connect(
            lambda exc: self.device_label.setText(f"Device: unknown ({jobs.describe_error(exc)})")
        )
        self.device_worker = worker
        worker.start()

    def stop_all(self) -> None:
        """Ask every running job to stop (training keeps its best model)."""
        self.train_tab.stop_event.set()
        self.predict_tab.cancel_event.set()

    def closeEvent(self, event: Any) -> None:
        self.stop_all()
        super().closeEvent(event)
