"""Shared paths and fixtures. Real data lives in ../shared beside the repository root."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

# One thread per process: the suite starts subprocesses (CLI runs, DDP ranks, dask workers) on a
# 2-core machine, and OpenMP threads spinning against each other slow small convolutions ~50×.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = SHARED / "data"
REFERENCE = SHARED / "debcr_reference"
FIXTURE = REFERENCE / "mrbcr_2D_denoising_reference.npz"
FMD = DATA / "fmd_confocal_bpae_b"
TASKS = ("2D_denoising", "3D_denoising", "bright_SR", "confocal_SR")

if not FIXTURE.is_file():
    raise RuntimeError(
        f"the real test data are missing: expected {SHARED} beside the repository "
        "(../shared with debcr_reference/ and data/)"
    )


def fmd_frame(field: int = 19, index: int = 0) -> np.ndarray:
    """One noisy FMD Confocal_BPAE_B frame (512×512 uint8)."""
    from PIL import Image

    return np.asarray(Image.open(FMD / "raw" / str(field) / f"HV110_P05005100{index:02d}.png"))


def fmd_gt(field: int = 19) -> np.ndarray:
    """The FMD ground truth (mean of 50 frames) of a field."""
    from PIL import Image

    return np.asarray(Image.open(FMD / "gt" / str(field) / "avg50.png"))


@pytest.fixture(scope="session")
def fixture_npz() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as npz:
        return {k: npz[k] for k in npz.files}


#: How long a napari test waits for a background job (training and exports take a while).
NAPARI_TIMEOUT_MS = 180_000


@pytest.fixture
def widget(make_napari_viewer, qtbot):
    """The DeBCR dock widget in a real napari viewer; running jobs are stopped afterwards."""
    from debcr.napari.widget import DeBCRWidget

    viewer = make_napari_viewer()
    w = DeBCRWidget(viewer)
    viewer.window.add_dock_widget(w, name="DeBCR")
    yield w
    w.stop_all()
    for tab in (w.transform_tab, w.train_tab, w.predict_tab):
        if tab.worker is not None:
            qtbot.waitUntil(lambda tab=tab: tab.worker is None, timeout=NAPARI_TIMEOUT_MS)


def napari_wait(qtbot, tab) -> None:
    """Wait until ``tab``'s background job has finished."""
    qtbot.waitUntil(lambda: tab.worker is None, timeout=NAPARI_TIMEOUT_MS)


@pytest.fixture(scope="session")
def denoiser():
    """The built-in 2D_denoising model (loaded once per session)."""
    from debcr.model import init

    return init("2D_denoising")


@pytest.fixture(scope="session")
def bmz_package(tmp_path_factory):
    """The built-in 2D_denoising model exported once as a BMZ package: ``(path, BMZExport)``.

    An export runs bioimageio.core's model test on three weight formats (2–3 min on CPU), so
    every test that needs a valid package shares this one. It is written the longest way in, by
    the napari job (``jobs.export_package``, as the Export… button does, with empty fields left
    out), which calls ``debcr.model.export_bmz``, which calls ``debcr.interop.export``.
    """
    import pickle

    from filelock import FileLock

    from debcr.napari import jobs

    # Under pytest-xdist the workers share one package (in the run's folder, above the workers'
    # own): the first writes it, the others wait for it.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.getbasetemp().parent / "bmz"
        folder.mkdir(exist_ok=True)
    else:
        folder = tmp_path_factory.mktemp("bmz")
    path, record = folder / "denoise2d.zip", folder / "denoise2d.pickle"
    with FileLock(str(folder / "lock")):
        if record.is_file():
            return path, pickle.loads(record.read_bytes())
        result = jobs.export_package("2D_denoising", path, description="", authors="")
        record.write_bytes(pickle.dumps(result))
    return path, result


@contextlib.contextmanager
def small_disk(mount: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` (e.g. ``"2m"``) mounted at ``mount`` (created), unmounted after.

    Skips the test where it cannot be mounted (not Linux, not root).
    """
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs Linux and root (CI runs as root)")
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)
