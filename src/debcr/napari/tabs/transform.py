"""The "Transform data" tab: normalise, crop into patches, stitch patches back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QPushButton, QVBoxLayout

from debcr.defaults import PMAX, PMIN
from debcr.napari import jobs
from debcr.napari.parts import JobTab, LayerPicker, dspin, row, spin

if TYPE_CHECKING:
    from debcr.napari.widget import DeBCRWidget


class TransformTab(JobTab):
    """Normalise, crop into patches (grid shown and remembered), stitch back."""

    def __init__(self, owner: DeBCRWidget) -> None:
        super().__init__(owner)
        self._make_controls()
        self._lay_out()
        for signal in (
            self.input.currentTextChanged,
            self.patch.valueChanged,
            self.overlap_y.valueChanged,
            self.overlap_x.valueChanged,
        ):
            signal.connect(self.update_grid)
        self.update_grid()

    def _make_controls(self) -> None:
        self.input = LayerPicker(self.viewer)
        self.pmin = dspin(0, 100, PMIN, 0.1)
        self.pmax = dspin(0, 100, PMAX, 0.1)
        self.patch = spin(16, 4096, 128, 16)
        self.overlap_y = dspin(0, 0.85, 0.5, 0.05)
        self.overlap_x = dspin(0, 0.85, 0.5, 0.05)
        self.grid_label = QLabel()
        self.window = QComboBox()
        self.window.addItems(["hann", "linear", "uniform"])
        self.normalize_button = QPushButton("Normalize")
        self.crop_button = QPushButton("Crop")
        self.stitch_button = QPushButton("Stitch")
        self.normalize_button.clicked.connect(self.normalize)
        self.crop_button.clicked.connect(self.crop)
        self.stitch_button.clicked.connect(self.stitch)

    def _lay_out(self) -> None:
        form = QFormLayout()
        form.addRow("input layer:", self.input)
        form.addRow("normalize by percentile (pmin, pmax):", row(self.pmin, self.pmax))
        form.addRow("patch size (Y, X):", self.patch)
        form.addRow("patch overlap (Y, X):", row(self.overlap_y, self.overlap_x))
        form.addRow("patch grid:", self.grid_label)
        form.addRow("stitch blending:", self.window)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(row(self.normalize_button, self.crop_button, self.stitch_button))
        layout.addStretch()

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
