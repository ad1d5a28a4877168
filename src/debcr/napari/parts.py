"""Pieces the DeBCR dock and its tabs are built from: log, pickers, spin boxes, plot, job tab."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from debcr.napari import jobs

if TYPE_CHECKING:
    import napari

    from debcr.napari.widget import DeBCRWidget

# The name the log records had before the widget was split into modules, so that logging
# configured for the widget still applies.
logger = logging.getLogger("debcr.napari.widget")

NONE_LAYER = "—"
MODEL_FILE = "model file or run folder…"
#: What the model "File…" choosers offer: debcr model files, TensorFlow checkpoints and
#: BioImage Model Zoo packages (a .zip, or the rdf.yaml of an unpacked one).
MODEL_PATTERN = "Models (*.safetensors *.index *.zip rdf.yaml bioimageio.yaml)"


class Relay(QObject):
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
    """Image layers of the viewer; keeps its choice when layers come and go.

    A required picker (not ``optional``) follows the viewer: it shows the active image layer,
    else the top-most visible one, until a layer is chosen in it (by the user, or by code
    calling ``setCurrentText``); from then on it keeps that choice while the layer exists.
    An optional picker starts at "—" (nothing chosen).

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer whose image layers are offered.
    optional : bool
        Offer "—" (no layer) first and do not follow the viewer's selection.
    """

    def __init__(self, viewer: napari.Viewer, optional: bool = False) -> None:
        super().__init__()
        self.viewer = viewer
        self.optional = optional
        # The layer chosen here (not followed from the viewer's selection), kept as an object
        # so that renaming it keeps the choice.
        self._chosen: Any = None
        self._updating = False
        for event in ("inserted", "removed", "moved", "changed"):
            getattr(viewer.layers.events, event).connect(self.refresh)
        viewer.layers.events.inserted.connect(self._watch_layer)
        viewer.layers.selection.events.active.connect(self.refresh)
        for layer in viewer.layers:
            self._watch(layer)
        self.currentTextChanged.connect(self._picked)
        self.refresh()

    def _watch_layer(self, event: Any) -> None:
        self._watch(event.value)

    def _watch(self, layer: Any) -> None:
        layer.events.name.connect(self.refresh)
        # Showing or hiding a layer changes which one is the top-most visible one.
        layer.events.visible.connect(self.refresh)

    @property
    def chosen(self) -> bool:
        """Whether a layer was chosen here rather than followed from the viewer's selection."""
        return self._chosen is not None

    def keep(self) -> None:
        """Keep the layer shown as the choice (as if chosen here), e.g. once it was used."""
        self._picked(self.currentText())

    def _picked(self, name: str) -> None:
        if not self._updating:
            self._chosen = self.viewer.layers[name] if name in self.viewer.layers else None

    def _suggested(self, names: list[str]) -> str | None:
        """The active image layer, else the top-most visible one, else the top-most one."""
        from napari.layers import Image

        active = self.viewer.layers.selection.active
        if isinstance(active, Image) and active.name in names:
            return active.name
        images = [layer for layer in reversed(self.viewer.layers) if isinstance(layer, Image)]
        for layer in images:
            if layer.visible:
                return layer.name
        return images[0].name if images else None

    def refresh(self, *_: Any) -> None:
        from napari.layers import Image

        current = self.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        if self._chosen is not None and self._chosen not in self.viewer.layers:
            self._chosen = None  # removed: follow the viewer's selection again
        if self._chosen is not None:
            target = self._chosen.name
        else:
            target = NONE_LAYER if self.optional else self._suggested(names)
        if self.optional:
            names.insert(0, NONE_LAYER)
        self._updating = True
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if target in names:
            self.setCurrentText(target)
        self.blockSignals(False)
        if self.currentText() != current:
            self.currentTextChanged.emit(self.currentText())
        self._updating = False

    def layer(self) -> Any:
        """The chosen layer, or None."""
        name = self.currentText()
        if not name or name == NONE_LAYER or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]


def spin(low: int, high: int, value: int, step: int = 1) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    return box


def dspin(low: float, high: float, value: float, step: float, decimals: int = 2) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    return box


def row(*widgets: QWidget) -> QWidget:
    """The widgets side by side, without margins (one form row)."""
    box = QWidget()
    layout = QHBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        layout.addWidget(w)
    return box


def open_file(parent: QWidget, title: str, pattern: str) -> str:
    """A file chosen in a dialog, or "" when cancelled."""
    path, _ = QFileDialog.getOpenFileName(parent, title, "", pattern)
    return path


def save_file(parent: QWidget, title: str, name: str, pattern: str) -> str:
    """A file name to save to, chosen in a dialog, or "" when cancelled."""
    path, _ = QFileDialog.getSaveFileName(parent, title, name, pattern)
    return path


def open_folder(parent: QWidget, title: str) -> str:
    """A folder chosen in a dialog, or "" when cancelled."""
    return QFileDialog.getExistingDirectory(parent, title)


def browse_button(parent: QWidget, target: QLineEdit, pattern: str | None = None) -> QPushButton:
    """A "Choose" button that puts a file (matching ``pattern``) or a folder into ``target``."""
    button = QPushButton("Choose")

    def choose() -> None:
        if pattern is None:
            path = open_folder(parent, "Choose a folder")
        else:
            path = open_file(parent, "Choose a file", pattern)
        if path:
            target.setText(path)

    button.clicked.connect(choose)
    return button


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
        ax2.yaxis.set_label_position("right")  # clear() puts it back on the left, over the loss
        handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        if handles:
            ax.legend(handles=handles, fontsize=7, loc="upper right")
        self.canvas.draw_idle()


class JobTab(QWidget):
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
