"""The "DeBCR" dock widget: Transform data / Train model / Use model tabs and a log.

Every action runs in a napari thread worker (`debcr.napari.jobs` holds the work itself);
the GUI thread only starts workers, shows their progress and adds the resulting layers.
User mistakes and failures end up in the log as sentences, never as a frozen window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QTabWidget, QVBoxLayout, QWidget

from debcr.napari import jobs
from debcr.napari.parts import LogPanel
from debcr.napari.tabs.predict import PredictTab
from debcr.napari.tabs.train import TrainTab
from debcr.napari.tabs.transform import TransformTab

if TYPE_CHECKING:
    import napari


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
        # Restoring an image is what most people open the widget for first.
        self.tabs.setCurrentWidget(self.predict_tab)
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
