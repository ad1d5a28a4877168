"""Screenshots of the DeBCR plugin docked in napari, one per tab, for the docs.

Run in a real window under a virtual display (from the repository root)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python tools/screenshot_napari.py

It opens napari, loads the plugin's sample data (noisy nuclei and their clean version),
docks the DeBCR widget and drives its tabs the way a user would, saving the whole window
after each step into ``docs/images/``:

1. "Use model": Run with the built-in 2D_denoising model on the noisy nuclei; noisy and
   restored side by side (grid mode) -> ``napari_plugin.png`` (the README's picture) and
   ``napari_predict.png`` (the same image).
2. "Transform data" (after clearing the layers and the log of step 1): Normalize the noisy
   and the clean image, Crop both into 64 px patches; a noisy/clean patch pair side by
   side -> ``napari_transform.png``.
3. "Train model": a new model trained for a few steps on those patches, on the CPU, in a
   temporary folder; the live loss/PSNR plot, and the input patch with the model's
   validation preview beside it (where the widget places it) -> ``napari_train.png``.

It takes a few minutes on two CPU cores (mostly the training and the prediction). Every
file is written to a temporary name beside it and then renamed, so an interrupted run never
leaves a broken picture. A step that fails or takes too long ends the run with exit status
1 and a message saying which step, with the widget's log.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
WINDOW_SIZE = (1500, 950)  # napari grows the height to what the docked widget needs
MAX_BYTES = 600_000

NOISY, CLEAN = "nuclei (noisy)", "nuclei (clean)"
# Small enough to train a few steps on two CPU cores: the 512 px sample cut without overlap
# into 8 x 8 = 64 patches of 64 px, which serve both as training and as validation data.
PATCH, OVERLAP = 64, 0.0
TRAIN_STEPS, TRAIN_BATCH, VAL_FREQ = 20, 4, 5


class StepFailed(RuntimeError):
    """A step of the tour did not end as it should (message says which, and the log)."""


def pump(seconds: float = 0.0) -> None:
    """Let Qt process events (repaints, worker signals) for about ``seconds``."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while True:
        QApplication.processEvents()
        if time.monotonic() >= end:
            return
        time.sleep(0.05)


def wait_until(condition: Callable[[], bool], what: str, timeout: float, widget: Any) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise StepFailed(f"{what}: not done after {timeout:.0f} s" + _log(widget))
        pump(0.05)


def _log(widget: Any) -> str:
    lines = widget.log.lines()
    return "; widget log:\n  " + "\n  ".join(lines) if lines else "; the widget log is empty"


def run_job(widget: Any, tab: Any, button: Any, layer: str, what: str, timeout: float) -> None:
    """Press ``button`` of ``tab``, wait for its worker, check it made layer ``layer``."""
    button.click()
    wait_until(lambda: tab.worker is None, what, timeout, widget)
    if layer not in widget.viewer.layers:
        raise StepFailed(f"{what}: no layer '{layer}' was made" + _log(widget))


def grid(viewer: Any) -> Any:
    """The viewer's grid settings (``viewer.canvas.grid`` since napari 0.9)."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if hasattr(canvas, "grid") else viewer.grid


def show(viewer: Any, names: list[str], side_by_side: bool = True) -> None:
    """Show only layers ``names`` zoomed to fit them: left to right in grid mode, or (not
    ``side_by_side``) where they are placed (the training preview sits beside its layer)."""
    for layer in viewer.layers:
        layer.visible = layer.name in names
    for name in names:  # the grid fills its boxes from the bottom-most visible layer up
        viewer.layers.move(viewer.layers.index(name), len(viewer.layers))
    grid(viewer).enabled = side_by_side and len(names) > 1
    grid(viewer).shape = (1, len(names))
    try:  # fit these layers only, not the (hidden) full-size images
        viewer.reset_view(layers=[viewer.layers[name] for name in names])
    except TypeError:  # napari < 0.9
        viewer.reset_view()


def save(viewer: Any, *names: str) -> None:
    """Save the whole napari window as ``docs/images/<name>`` for each name, atomically."""
    from PIL import Image

    pump(1.0)  # let the canvas, the dock and the plot repaint
    image = Image.fromarray(viewer.screenshot(canvas_only=False)[..., :3])
    data = b""
    for factor in (1.0, 0.9, 0.8, 0.7):  # downscale only if the PNG would be too large
        size = (round(image.width * factor), round(image.height * factor))
        scaled = image if factor == 1.0 else image.resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        scaled.save(buffer, format="PNG", optimize=True)
        data = buffer.getvalue()
        if len(data) <= MAX_BYTES:
            break
    else:
        raise StepFailed(f"the screenshot stays over {MAX_BYTES} bytes even downscaled")
    IMAGES.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    for name in names:
        target = IMAGES / name
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=IMAGES)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a picture is not
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        print(f"wrote {target} ({scaled.width}x{scaled.height}, {len(data) // 1024} KiB)")


def use_model(widget: Any) -> None:
    """Use model: restore the noisy sample with 2D_denoising (the README's picture)."""
    viewer, tab = widget.viewer, widget.predict_tab
    widget.tabs.setCurrentWidget(tab)
    # Not chosen by hand: the picker must have taken the layer selected after Open Sample.
    if tab.input.currentText() != NOISY:
        raise StepFailed(f"Use model preselected '{tab.input.currentText()}', not '{NOISY}'")
    tab.model.setCurrentText("2D_denoising")
    wait_until(lambda: "detecting" not in tab.path_label.text(), "path", 120, widget)
    run_job(widget, tab, tab.run_button, f"{NOISY}.pred", "Run", 300)
    viewer.layers[CLEAN].visible = False
    grid(viewer).enabled = True
    grid(viewer).shape = (1, 2)
    viewer.reset_view()
    save(viewer, "napari_plugin.png", "napari_predict.png")


def transform(widget: Any) -> None:
    """Transform data: normalise the noisy and the clean image, crop both into patches."""
    from debcr.napari import jobs

    viewer, tab = widget.viewer, widget.transform_tab
    widget.tabs.setCurrentWidget(tab)
    tab.patch.setValue(PATCH)
    tab.overlap_y.setValue(OVERLAP)
    tab.overlap_x.setValue(OVERLAP)
    for name in (NOISY, CLEAN):
        tab.input.setCurrentText(name)
        run_job(widget, tab, tab.normalize_button, f"{name}.prep", "Normalize", 120)
    for name in (f"{NOISY}.prep", f"{CLEAN}.prep"):
        tab.input.setCurrentText(name)
        run_job(widget, tab, tab.crop_button, f"{name}.crops", "Crop", 120)
    tab.input.setCurrentText(f"{NOISY}.prep")  # the grid label shows the grid Crop made
    crops = viewer.layers[f"{NOISY}.prep.crops"]
    show(viewer, [crops.name, f"{CLEAN}.prep.crops"])
    ny, nx = crops.metadata[jobs.GRID_KEY]["patch_num"]
    viewer.dims.set_current_step(0, (ny // 2) * nx + nx // 2)  # a patch from the middle
    save(viewer, "napari_transform.png")


def train(widget: Any, run_dir: Path) -> None:
    """Train model: a new model, a few steps on the patches, plot and preview live."""
    viewer, tab = widget.viewer, widget.train_tab
    widget.tabs.setCurrentWidget(tab)
    low, gt = f"{NOISY}.prep.crops", f"{CLEAN}.prep.crops"
    for picker, name in (
        (tab.train_low, low),
        (tab.train_gt, gt),
        (tab.val_low, low),
        (tab.val_gt, gt),
    ):
        picker.setCurrentText(name)
    tab.init.setCurrentText("new model")
    tab.batch.setValue(TRAIN_BATCH)
    tab.steps.setValue(TRAIN_STEPS)
    tab.val_freq.setValue(VAL_FREQ)
    tab.save_path.setText(str(run_dir))
    run_job(widget, tab, tab.run_button, f"{low}.preview", "Run training", 1200)
    if not any(line.startswith("Training is finished") for line in widget.log.lines()):
        raise StepFailed("the run did not finish" + _log(widget))
    if len(tab.plot.val) < TRAIN_STEPS // VAL_FREQ:
        raise StepFailed(f"only {len(tab.plot.val)} validations plotted")
    # The input patch and, beside it where the widget puts it, the model's preview.
    show(viewer, [low, f"{low}.preview"], side_by_side=False)
    # The preview layer keeps the contrast of the first (untrained) preview; as a user
    # would, press "auto-contrast: once" for the last one.
    viewer.layers[f"{low}.preview"].reset_contrast_limits()
    viewer.dims.set_current_step(0, 0)  # the preview is of the first validation patch
    tab.plot.draw(force=True)
    save(viewer, "napari_train.png")


def plugin_name() -> str:
    """The plugin's npe2 name, read from its manifest (it follows the distribution's name)."""
    from npe2 import PluginManifest

    import debcr.napari

    return PluginManifest.from_file(Path(debcr.napari.__file__).with_name("napari.yaml")).name


def main() -> int:
    import napari

    from debcr.napari.widget import DeBCRWidget

    started = time.monotonic()
    viewer = napari.Viewer(title="napari — DeBCR", show=True)
    viewer.window._qt_window.resize(*WINDOW_SIZE)
    try:
        viewer.open_sample(plugin_name(), "nuclei")
        widget = DeBCRWidget(viewer)
        viewer.window.add_dock_widget(widget, name="DeBCR", area="right")
    except Exception as exc:
        traceback.print_exc()
        print(f"screenshot_napari: opening the sample or the widget failed: {exc}", file=sys.stderr)
        viewer.close()
        return 1
    try:
        with tempfile.TemporaryDirectory(prefix="debcr-") as tmp:
            failure = tour(widget, Path(tmp) / "debcr_runs" / "nuclei")
    finally:
        viewer.close()
    if failure:
        print(f"screenshot_napari: {failure}", file=sys.stderr)
        return 1
    print(f"done in {time.monotonic() - started:.0f} s")
    return 0


def tour(widget: Any, run_dir: Path) -> str:
    """Every step, screenshots included; "" or what failed (jobs stopped by then)."""
    viewer, step = widget.viewer, "start"
    try:
        step = "device detection"
        wait_until(lambda: "detecting" not in widget.device_label.text(), step, 120, widget)
        step = "Use model"
        use_model(widget)
        # A fresh start for the click-by-click tour: the sample only, an empty log.
        viewer.layers.remove(f"{NOISY}.pred")
        grid(viewer).enabled = False
        widget.log.clear()
        step = "Transform data"
        transform(widget)
        step = "Train model"
        train(widget, run_dir)
    except Exception as exc:
        if not isinstance(exc, StepFailed):
            traceback.print_exc()
        # Stop running jobs before their (temporary) run folder goes away.
        widget.stop_all()
        deadline = time.monotonic() + 60
        while widget.workers and time.monotonic() < deadline:
            pump(0.1)
        return f"{step} failed: {exc}"
    return ""


if __name__ == "__main__":
    raise SystemExit(main())
