"""The README's main job: restore the bundled sample with the built-in model.

Writes ``restored.tif`` (float32, the input's units) and ``comparison.png``
(noisy | restored | clean) into the output folder and
returns the PSNR of the noisy and restored images against the clean one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from skimage.metrics import peak_signal_noise_ratio

from debcr.data import show, write
from debcr.defaults import PERCENTILES
from debcr.files import atomic_output
from debcr.samples import nuclei, sample_path


def run_demo(
    output: str | os.PathLike = "demo_output", *, overwrite: bool = False, progress: bool = True
) -> dict[str, str]:
    """Restore the bundled noisy nuclei image with the built-in ``2D_denoising`` model.

    Returns
    -------
    dict
        Paths of the written files and the PSNR values (dB) against the clean image.
    """
    from debcr import model as api

    out = Path(output)
    noisy, clean = nuclei()
    net = api.init("2D_denoising", device="auto")
    restored = api.predict(net, noisy, progress=progress)
    tif = out / "restored.tif"
    write(tif, restored, overwrite=overwrite, inputs=[sample_path("nuclei_noisy")])
    data_range = float(clean.max() - clean.min())
    psnr_noisy = peak_signal_noise_ratio(clean, noisy.astype(np.float32), data_range=data_range)
    psnr_restored = peak_signal_noise_ratio(clean, restored, data_range=data_range)
    titles = (
        f"noisy input ({psnr_noisy:.1f} dB)",
        f"debcr 2D_denoising ({psnr_restored:.1f} dB)",
        "clean",
    )
    stack = [noisy, restored, clean]
    rng = tuple(float(v) for v in np.percentile(clean, PERCENTILES))
    fig = show(
        stack,
        slices=(0,),
        titles=titles,
        figsize=(4, 4),
        cmap="magma",
        show_ids=False,
        vmin=rng[0],
        vmax=rng[1],
    )
    png = out / "comparison.png"
    with atomic_output(png, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return {
        "restored": str(tif),
        "figure": str(png),
        "psnr_noisy_db": f"{psnr_noisy:.2f}",
        "psnr_restored_db": f"{psnr_restored:.2f}",
    }
