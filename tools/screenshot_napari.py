"""Screenshot of the DeBCR plugin docked in napari after a prediction, for the docs.

Run in a real window under a virtual display (from the repository root)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python tools/screenshot_napari.py

It opens napari, loads the plugin's sample data (noisy nuclei), docks the DeBCR widget,
presses Run on the "Use model" tab with the built-in 2D_denoising model, waits for the
result, shows noisy and restored side by side (grid mode) and saves
``docs/images/napari_plugin.png``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "napari_plugin.png"


def main() -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    from debcr.napari.widget import DeBCRWidget

    viewer = napari.Viewer(title="napari — DeBCR", show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("debcr", "nuclei")
    widget = DeBCRWidget(viewer)
    viewer.window.add_dock_widget(widget, name="DeBCR", area="right")
    widget.tabs.setCurrentWidget(widget.predict_tab)
    tab = widget.predict_tab
    tab.input.setCurrentText("nuclei (noisy)")
    tab.run_button.click()
    deadline = time.monotonic() + 600
    while (tab.worker is not None or "detecting" in widget.device_label.text()) and (
        time.monotonic() < deadline
    ):
        QApplication.processEvents()
        time.sleep(0.05)
    if "nuclei (noisy).pred" not in viewer.layers:
        print("prediction did not finish:", widget.log.lines(), file=sys.stderr)
        return 1
    viewer.layers["nuclei (clean)"].visible = False
    viewer.grid.enabled = True
    viewer.grid.shape = (1, 2)
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(OUT), canvas_only=False)
    print(f"wrote {OUT}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
