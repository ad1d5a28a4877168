"""Build the bundled demo sample from real data in ../shared/data.

The clean image is the 2018 Data Science Bowl nuclei image shipped by stardist
(``stardist/img2d.tif``, CC0 data, BSD-3 package). The noisy copy gets the
Poisson–Gaussian noise of the FMD confocal data (gain ≈4.1 DN per photon, offset
≈3.7 DN; bright nuclei ≈16 photons per pixel), so the demo has the noise level a
microscopist sees at low light. Run from the repository root:

    python tools/make_sample.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "stardist" / "img2d.tif"
OUT = ROOT / "src" / "debcr" / "samples"

GAIN = 4.1  # DN per photon (FMD Confocal_BPAE_B calibration)
OFFSET = 3.7  # DN
READ_NOISE = 0.5  # DN, negligible in FMD
BRIGHT_PHOTONS = 16.0  # photons per pixel at the 99th percentile of the clean image


def main() -> None:
    clean = tifffile.imread(SOURCE).astype(np.float64)
    photons = clean / np.percentile(clean, 99) * BRIGHT_PHOTONS
    rng = np.random.default_rng(20261121)
    noisy = GAIN * rng.poisson(photons) + OFFSET + rng.normal(0, READ_NOISE, clean.shape)
    expected = GAIN * photons + OFFSET
    OUT.mkdir(exist_ok=True)
    tifffile.imwrite(
        OUT / "nuclei_noisy.tif",
        np.clip(np.rint(noisy), 0, 65535).astype(np.uint16),
        compression="zlib",
    )
    tifffile.imwrite(OUT / "nuclei_clean.tif", expected.astype(np.float32), compression="zlib")


if __name__ == "__main__":
    main()
