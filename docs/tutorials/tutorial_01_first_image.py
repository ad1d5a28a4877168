# ruff: noqa: E402  (a tutorial imports what each step needs, where it is needed)
"""
# Restore your first image

Denoise a noisy fluorescence image with a built-in pretrained model, compare it with the
clean image, measure the improvement and save the result.

The image is the sample that ships with debcr: cell nuclei from the 2018 Data Science Bowl
(BBBC038, CC0). `nuclei_clean` is the expected photon signal; `nuclei_noisy` adds the
Poisson–Gaussian noise measured on a real confocal microscope (the FMD dataset: gain
4.1 DN/photon, offset 3.7 DN, about 16 photons per pixel in bright nuclei). Because the clean
image is known, we can measure how close the restoration gets to it.
"""

# %%
# ## Load the sample
#
# `debcr.samples.nuclei()` returns the noisy image (as the camera would record it, 16-bit
# integers) and the clean image (the expected signal, float32). For your own data use
# `debcr.data.load("my_image.tif")`, which reads TIFF, PNG, NPY/NPZ and Zarr.

import debcr
import debcr.samples

noisy, clean = debcr.samples.nuclei()
print(f"noisy: {noisy.shape} {noisy.dtype}, values {noisy.min()}–{noisy.max()}")
print(f"clean: {clean.shape} {clean.dtype}, values {clean.min():.1f}–{clean.max():.1f}")

# %%
# ## Load a pretrained model
#
# debcr ships the four models published with DeBCR. `"2D_denoising"` was trained on 2-D
# widefield and confocal images. The model's `metadata` records where it comes from and its
# licence (the weights are CC BY 4.0; cite the paper when you use them).

model = debcr.model.init("2D_denoising")
print(model.metadata["description"])
print("licence:", model.metadata["license"])

# %%
# ## Restore
#
# `debcr.model.predict` restores an image of any size (larger images are cut into tiles with
# enough margin that no seams appear). It returns float32 with the shape of the input.
# `progress=False` only hides the progress bar, which is not useful in a web page.

restored = debcr.model.predict(model, noisy, progress=False)
print(
    f"restored: {restored.shape} {restored.dtype}, values {restored.min():.1f}–{restored.max():.1f}"
)

# %%
# ## Look at the result
#
# `debcr.data.show` draws images side by side, each with its own display range (its 0.1 and
# 99.9 percentiles). It returns a matplotlib figure without opening a window:
# `fig.savefig("comparison.png")` saves it, and `plt.figure(fig)` followed by `plt.show()`
# displays it (in a Jupyter notebook, a figure on the last line of a cell is displayed by
# itself). The second figure zooms into the centre, where noise and details are easier to see.

import matplotlib.pyplot as plt

images = {"noisy": noisy, "restored": restored, "clean": clean}
fig = debcr.data.show(images, slices=0, show_ids=False, figsize=(4, 4))
plt.figure(fig)
zoomed = debcr.data.show(
    images, slices=0, show_ids=False, figsize=(4, 4), zoom=(192, 320, 192, 320)
)
plt.figure(zoomed)
plt.show()

# %%
# ## Measure the improvement
#
# The peak signal-to-noise ratio (PSNR, in dB; higher is better) compares an image with the
# clean one pixel by pixel. `debcr.metrics.psnr` uses the intensities as they are
# (`normalization="raw"`), which is meaningful here because the restored image is in the same
# units as the noisy input (see `units=` below). Tutorial 3 explains the other conventions
# used in the literature.

from debcr.metrics import psnr, ssim

print(f"PSNR noisy    vs clean: {psnr(noisy, clean):5.2f} dB   SSIM {ssim(noisy, clean):.3f}")
print(f"PSNR restored vs clean: {psnr(restored, clean):5.2f} dB   SSIM {ssim(restored, clean):.3f}")

# %%
# ## Intensity units of the result: `units=`
#
# The network works on normalised values (the 0.1 and 99.9 percentiles of the input mapped to
# 0 and 1), and its raw output is in those units. With the default `units="calibrated"`,
# debcr returns it in the input's units: it maps the network output through a monotone curve,
# the mean of the input over all pixels the network restored to the same value (noise has
# zero mean, so that is the clean intensity there), keeps the input's mean, holds the dark
# level (the median of the darkest 5 % of 8×8 block means, where the noise is averaged out)
# at the input's, and returns nothing below the input's minimum. Intensities stay comparable
# between images and with the raw data, for denoising and resolution enhancement alike.
# `units="percentile"` only undoes the percentile normalisation; `units="normalized"`
# returns the network output as it is (about 0 to 1). The dark level, median, mean and
# minimum of the three images:

import numpy as np

for name, image in images.items():
    dark = np.percentile(image, 2.5)  # the median of the darkest 5 %
    print(
        f"{name:9} dark level {dark:6.2f}   median {np.median(image):6.2f}   "
        f"mean {image.mean():6.2f}   minimum {image.min():6.2f}"
    )

# %%
# ## Save the result
#
# `debcr.data.write` chooses the format from the file extension (`.tif`, `.png`, `.npy`,
# `.zarr`, `.ome.zarr`…) and writes atomically: a file appears only once it is complete, and
# an existing file is never replaced unless you pass `overwrite=True`. Here the file goes to a
# temporary folder.

import tempfile
from pathlib import Path

with tempfile.TemporaryDirectory() as tmp:
    written = debcr.data.write(Path(tmp) / "nuclei_restored.tif", restored)
    back = debcr.data.load(written[0])
    print(
        f"wrote {written[0].name}: {back.shape} {back.dtype}, "
        f"identical on reading back: {bool((back == restored).all())}"
    )

# %%
# The same in one command, from a terminal:
#
# ```bash
# debcr predict nuclei_noisy.tif --model 2D_denoising -o nuclei_restored.tif
# ```
