"""Bundled sample images.

``nuclei_noisy.tif`` / ``nuclei_clean.tif``: cell nuclei from the 2018 Data Science
Bowl (BBBC038, CC0), as shipped by stardist (``test_image_nuclei_2d``, BSD-3). The
clean image is the expected photon signal; the noisy one adds the Poisson–Gaussian
noise measured on the FMD confocal dataset (gain 4.1 DN/photon, offset 3.7 DN,
about 16 photons per pixel in bright nuclei). Made by ``tools/make_sample.py``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import tifffile


def sample_path(name: str = "nuclei_noisy") -> Path:
    """Path of a bundled sample (``"nuclei_noisy"`` or ``"nuclei_clean"``)."""
    return Path(str(resources.files(__name__) / f"{name}.tif"))


def nuclei() -> tuple[np.ndarray, np.ndarray]:
    """The noisy sample (uint16) and its clean expectation (float32), both 512×512."""
    return tifffile.imread(sample_path("nuclei_noisy")), tifffile.imread(
        sample_path("nuclei_clean")
    )
