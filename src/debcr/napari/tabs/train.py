"""The "Train model" tab: data, model and settings, then a live-plotted training run."""

from __future__ import annotations

import datetime
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from debcr.defaults import BEST_MODEL, RUN_CONFIG
from debcr.modes import MODES, mode_spec
from debcr.napari import jobs
from debcr.napari.parts import (
    MODEL_FILE,
    JobTab,
    LayerPicker,
    LossPlot,
    Relay,
    browse_button,
    dspin,
    open_file,
    row,
    save_file,
    spin,
)

if TYPE_CHECKING:
    from debcr.config import TrainConfig
    from debcr.napari.widget import DeBCRWidget

NEW_MODEL = "new model"


class TrainTab(JobTab):
    """Train a new model, fine-tune a built-in one, or continue from a model file."""

    def __init__(self, owner: DeBCRWidget) -> None:
        super().__init__(owner)
        from debcr.config import TrainConfig

        self.defaults = TrainConfig()
        self._make_data_controls()
        self._make_model_controls()
        self._make_settings_controls()
        self._make_run_controls()
        self._lay_out()
        self._connect()
        self.reset_config()
        self.set_running(False)

    # -- building ----------------------------------------------------------------------------

    def _make_data_controls(self) -> None:
        self.mode = QComboBox()
        for spec in MODES.values():
            self.mode.addItem(spec.label, spec.name)
        self.train_low = LayerPicker(self.viewer, optional=True)
        self.train_gt = LayerPicker(self.viewer, optional=True)
        self.val_low = LayerPicker(self.viewer, optional=True)
        self.val_gt = LayerPicker(self.viewer, optional=True)
        self.train_npz = QLineEdit(placeholderText="or an NPZ file (debcr prepare)")
        self.val_npz = QLineEdit(placeholderText="or an NPZ file (debcr prepare)")
        self.labels = {
            name: QLabel(text)
            for name, text in (
                ("train_low", "training input:"),
                ("train_gt", "training target:"),
                ("val_low", "validation input:"),
                ("val_gt", "validation target:"),
            )
        }

    def _make_model_controls(self) -> None:
        self.init = QComboBox()
        self.init.addItems([NEW_MODEL, *jobs.BUILTIN_MODELS, MODEL_FILE])
        self.init_path = QLineEdit(placeholderText="model file or training run folder")

    def _make_settings_controls(self) -> None:
        from debcr.config import RECIPES, TrainConfig

        self.recipe = QComboBox()
        self.recipe.addItems(list(RECIPES))
        self.recipe.setToolTip(TrainConfig.model_fields["recipe"].description)
        self.batch = spin(1, 4096, 32, 8)
        self.steps = spin(1, 10_000_000, 2000, 10)
        self.val_freq = spin(1, 1_000_000, 100, 10)
        self.patience = spin(1, 100_000, 10, 1)
        self.lr = dspin(0.000001, 1.0, 0.001, 0.0001, decimals=6)
        self.save_path = QLineEdit()
        self.resume = QCheckBox("continue the run in this folder (resume)")

    def _make_run_controls(self) -> None:
        self.run_button = QPushButton("Run training")
        self.stop_button = QPushButton("Stop")
        self.progress = QProgressBar()
        self.plot = LossPlot()
        self.stop_event = threading.Event()
        self.relay = Relay()
        self.relay.event.connect(self._on_event)
        self._started = 0.0
        self._preview_name = ""
        self._preview_place: dict[str, Any] = {}

    def _data_box(self) -> QGroupBox:
        box = QGroupBox("Data (layers or NPZ files; no validation: a tenth is held out)")
        form = QFormLayout(box)
        form.addRow("learn from:", self.mode)
        form.addRow(self.labels["train_low"], self.train_low)
        form.addRow(self.labels["train_gt"], self.train_gt)
        form.addRow("", row(self.train_npz, browse_button(self, self.train_npz, "*.npz")))
        form.addRow(self.labels["val_low"], self.val_low)
        form.addRow(self.labels["val_gt"], self.val_gt)
        form.addRow("", row(self.val_npz, browse_button(self, self.val_npz, "*.npz")))
        return box

    def current_mode(self) -> str:
        """The training mode chosen (``supervised``, ``noise2noise`` or ``noise2void``)."""
        return str(self.mode.currentData())

    def _show_mode(self) -> None:
        """Targets only for paired (supervised) training; inputs named for what the mode needs."""
        spec = mode_spec(self.current_mode())
        for name in ("train_gt", "val_gt"):
            self.labels[name].setVisible(spec.paired)
            getattr(self, name).setVisible(spec.paired)
        train_text, val_text = spec.input_labels
        self.labels["train_low"].setText(train_text)
        self.labels["val_low"].setText(val_text)

    def _model_box(self) -> QGroupBox:
        box = QGroupBox("Model to train")
        form = QFormLayout(box)
        form.addRow("start from:", self.init)
        form.addRow("", row(self.init_path, browse_button(self, self.init_path, "*.safetensors")))
        return box

    def _settings_box(self) -> QGroupBox:
        box = QGroupBox("Settings")
        form = QFormLayout(box)
        form.addRow("recipe:", self.recipe)
        form.addRow("images in batch:", self.batch)
        form.addRow("training steps:", self.steps)
        form.addRow("validate every (steps):", self.val_freq)
        form.addRow("patience (validations):", self.patience)
        form.addRow("learning rate:", self.lr)
        form.addRow("save model path:", row(self.save_path, browse_button(self, self.save_path)))
        form.addRow("", self.resume)
        reset, load, save = (
            QPushButton("Reset defaults"),
            QPushButton("Load…"),
            QPushButton("Save…"),
        )
        reset.clicked.connect(self.reset_config)
        load.clicked.connect(self._load_config_dialog)
        save.clicked.connect(self._save_config_dialog)
        form.addRow(row(reset, load, save))
        return box

    def _lay_out(self) -> None:
        layout = QVBoxLayout(self)
        for box in (self._data_box(), self._model_box(), self._settings_box()):
            layout.addWidget(box)
        layout.addWidget(row(self.run_button, self.stop_button))
        layout.addWidget(self.progress)
        layout.addWidget(self.plot)

    def _connect(self) -> None:
        self.run_button.clicked.connect(self.run)
        self.stop_button.clicked.connect(self.stop)
        # Connected only now, after the items were added: the path field starts enabled.
        self.init.currentTextChanged.connect(
            lambda text: self.init_path.setEnabled(text == MODEL_FILE)
        )
        self.mode.currentIndexChanged.connect(self._show_mode)

    # -- configuration -----------------------------------------------------------------------

    def config(self) -> TrainConfig:
        """The `TrainConfig` the controls describe (validated)."""
        from debcr.config import merge

        return merge(
            self.defaults,
            {
                "mode": self.current_mode(),
                "recipe": self.recipe.currentText(),
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

    def show_config(self, config: TrainConfig) -> None:
        self.defaults = config
        self.mode.setCurrentIndex(list(MODES).index(config.mode))
        self._show_mode()
        self.recipe.setCurrentText(config.recipe)
        self.batch.setValue(config.batch_size)
        self.steps.setValue(config.num_steps)
        self.val_freq.setValue(config.val_freq)
        self.patience.setValue(config.patience)
        self.lr.setValue(config.learning_rate)
        self.save_path.setText(str(config.weights_path))

    def reset_config(self) -> None:
        from debcr.config import TrainConfig

        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        # The home folder, not the working directory: napari started from a desktop launcher
        # runs in "/", where nothing can be written.
        self.show_config(TrainConfig(weights_path=str(default_runs() / stamp)))

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
        path = open_file(self, "Load settings", "*.yaml *.yml")
        if path:
            self.load_config(path)

    def _save_config_dialog(self) -> None:
        path = save_file(self, "Save settings", RUN_CONFIG, "*.yaml")
        if path:
            self.save_config(path)

    # -- running -----------------------------------------------------------------------------

    def set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.run_button.setText("Training…" if running else "Run training")
        self.stop_button.setEnabled(running)

    def _source(self, low: LayerPicker, gt: LayerPicker, npz: QLineEdit) -> Any:
        """What to train on, chosen in the GUI thread: an NPZ path or layer data.

        Supervised training takes two layers' data ``(input, target)``; the self-supervised
        modes take one layer's data. None when nothing is chosen.
        """
        if npz.text().strip():
            return npz.text().strip()
        if not mode_spec(self.current_mode()).paired:
            return None if low.layer() is None else low.layer().data
        if low.layer() is None or gt.layer() is None:
            return None
        return (low.layer().data, gt.layer().data)

    def _init_model(self) -> tuple[str, str | None]:
        """The "start from" choice and the model it names (None: a new one, "": no path)."""
        init = self.init.currentText()
        if init == MODEL_FILE:
            return init, self.init_path.text().strip()
        return init, None if init == NEW_MODEL else init

    def run(self) -> None:
        if self.busy():
            return
        try:
            config = self.config()
        except Exception as exc:
            self.log(f"Invalid settings: {jobs.describe_error(exc)}")
            return
        sources = {
            "training": self._source(self.train_low, self.train_gt, self.train_npz),
            "validation": self._source(self.val_low, self.val_gt, self.val_npz),
        }
        spec = mode_spec(config.mode)
        if sources["training"] is None:
            self.log(f"Choose the training {spec.layers_needed} (or an NPZ file).")
            return
        half_chosen = (self.val_low.layer() is None) != (self.val_gt.layer() is None)
        if spec.paired and half_chosen and not self.val_npz.text().strip():
            self.log(
                "Choose both the validation input and target layers, or neither (a tenth of "
                "the training patches is then held out)."
            )
            return
        init, init_model = self._init_model()
        if init == MODEL_FILE and not init_model:
            self.log("Choose the model file or run folder to start from.")
            return
        self._start_training(config, sources, init, init_model)

    def _start_training(
        self, config: TrainConfig, sources: dict[str, Any], init: str, init_model: str | None
    ) -> None:
        val_layer = self.val_low.layer() or self.train_low.layer()
        self._preview_name = f"{val_layer.name if val_layer else 'validation'}.preview"
        self._preview_place = preview_place(val_layer)
        self.stop_event.clear()
        self.plot.reset()
        self.progress.setRange(0, config.num_steps)
        self.progress.setValue(0)
        self.progress.setFormat("starting…")
        self._started = time.monotonic()
        self.log(
            f"Starting {config.mode} training: {config.num_steps} steps, batch "
            f"{config.batch_size}, learning rate {config.learning_rate:g}, from {init}; saving "
            f"to {config.weights_path}"
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
            layer = self.viewer.layers[self._preview_name]
            layer.data = image
            # The first preview comes from an untrained network; keeping its contrast limits
            # would show every later preview as a white square.
            layer.reset_contrast_limits()
        else:
            self.viewer.add_image(image, name=self._preview_name, **self._preview_place)

    def _trained(self, result: Any) -> None:
        model, run_dir = result
        stopped = self.stop_event.is_set()
        self.log(
            ("Training stopped" if stopped else "Training is finished")
            + f"; the best model is in {run_dir / BEST_MODEL}."
        )
        self.progress.setFormat("done" if not stopped else "stopped at step %v")
        self.owner.predict_tab.use_model(str(run_dir), model)

    def stop(self) -> None:
        if self.busy():
            self.stop_event.set()
            self.log("Stopping after the current step (the best model so far is kept)…")


def preview_place(layer: Any) -> dict[str, Any]:
    """Where the live preview goes: to the right of the validation layer, top-aligned.

    The preview is one validation patch restored; on top of the image (napari's default, the
    origin) it would hide the data it is compared with. Empty without a layer (NPZ data).
    """
    if layer is None:
        return {}
    scale = np.asarray(layer.scale[-2:], dtype=float)
    translate = np.asarray(layer.translate[-2:], dtype=float)
    width = layer.data.shape[-1] * scale[1]
    gap = 0.05 * width  # a little space so the two read as separate images
    return {"scale": scale, "translate": translate + np.array([0.0, width + gap])}


def default_runs() -> Path:
    """The folder new training runs go to unless the user says otherwise: ``~/debcr_runs``."""
    return Path.home() / "debcr_runs"


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
