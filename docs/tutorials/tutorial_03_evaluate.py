# ruff: noqa: E402  (a tutorial imports what each step needs, where it is needed)
"""
# Evaluate a restoration with the paper's metrics

When ground truth exists (a test set, or simulated data), `debcr.evaluate.evaluate` scores a
restoration the way the DeBCR paper does: PSNR, SSIM and NRMSE under three intensity
conventions, the entropy of the ground truth (to separate sparse from dense images) and the
Fourier ring correlation (FRC). It scores the raw input too, as the baseline to beat, and
writes a report folder: a table per image (`metrics.csv`), a summary (`summary.md`) and two
figures (`frc.png`, `comparison.png`). The same from a terminal:
`debcr evaluate restored.tif clean.tif --input noisy.tif -o report/`.
"""

# %%
# ## A prediction to evaluate
#
# The bundled sample (noisy and clean nuclei, see tutorial 1), restored with the built-in
# `2D_denoising` model. The paper scored test sets of 128 × 128 patches; to get several
# images from the one sample we cut it into 16 such patches. `evaluate` takes a single image
# or a stack of images (and files as well as arrays) and scores each image separately.

import debcr
import debcr.samples

noisy, clean = debcr.samples.nuclei()
restored = debcr.model.predict(debcr.model.init("2D_denoising"), noisy, progress=False)


def patches(image, size=128):
    """Cut an image into a stack of non-overlapping size × size patches."""
    rows, cols = image.shape[0] // size, image.shape[1] // size
    return (
        image[: rows * size, : cols * size]
        .reshape(rows, size, cols, size)
        .swapaxes(1, 2)
        .reshape(-1, size, size)
    )


pred, gt, low = patches(restored), patches(clean), patches(noisy)
print("stacks of patches:", pred.shape)

# %%
# ## Run the evaluation
#
# The arguments are the prediction, the ground truth, the input (optional) and the report
# folder (optional; without it only the numbers are returned). Here the report goes to a
# temporary folder.

import tempfile
from pathlib import Path

workdir = tempfile.TemporaryDirectory()
report = debcr.evaluate.evaluate(pred, gt, low, Path(workdir.name) / "report")
print(
    "images:",
    report["n_images"],
    " conventions:",
    report["normalizations"],
    " sources:",
    report["sources"],
)
print("files written:", ", ".join(path.name for path in report["files"].values()))

# %%
# ## Three ways to compare intensities
#
# A restored image and its ground truth rarely share the same intensity scale: the ground
# truth may be an average of many frames or a longer exposure, and the network's output may
# be offset or scaled. Pixel-wise scores such as PSNR depend strongly on how the two are
# brought to a common scale, and papers differ in this. `evaluate` reports all three common
# conventions (`normalization=` chooses fewer):
#
# - **`minmax`** (the original DeBCR tester): prediction and ground truth are each rescaled
#   so that their own minimum is 0 and their own maximum is 1. Simple, but each scale rests
#   on two single pixels, so one hot pixel or a background that the restoration smoothed
#   changes the score a lot.
# - **`affine`** (CARE's convention, Weigert et al. 2018): the ground truth is normalised with
#   its 0.1 and 99.9 percentiles; then the prediction is mapped by the straight line
#   `a · prediction + b` that fits it best (least squares). This ignores any offset and gain
#   of the prediction and scores only its shape, which makes it the usual choice for comparing
#   methods that return different scales.
# - **`raw`**: the intensities as they are, with the ground truth's range as the data range.
#   Meaningful when prediction and ground truth are in the same units, as debcr's default
#   units give when the ground truth is in the units of the input.
#
# Always say which convention a number was computed with; the same restoration gets quite
# different PSNRs, and the conventions need not even agree on which image is better. The
# returned dict holds every mean and standard deviation
# (`report["summary"][convention][source][metric]`):

summary = report["summary"]
print(
    f"{'convention':10}  {'PSNR input':>11}  {'PSNR restored':>13}  "
    f"{'SSIM input':>10}  {'SSIM restored':>13}"
)
for convention in report["normalizations"]:
    given, result = summary[convention]["input"], summary[convention]["prediction"]
    print(
        f"{convention:10}  {given['psnr']['mean']:8.2f} dB  {result['psnr']['mean']:10.2f} dB"
        f"  {given['ssim']['mean']:10.3f}  {result['ssim']['mean']:13.3f}"
    )
for convention in report["normalizations"]:
    gain = (
        summary[convention]["prediction"]["psnr"]["mean"]
        - summary[convention]["input"]["psnr"]["mean"]
    )
    print(f"under {convention!r}, restoring changes the mean PSNR by {gain:+.2f} dB")

# %%
# ## Sparse and dense images
#
# Scores depend on how much of an image is structure: in an image that is mostly empty
# background (sparse: beads, thin filaments, a few small nuclei), most pixels are easy to
# restore, which raises the average. The paper therefore reports sparse and dense images
# separately (its Fig. 3d), splitting them by the Shannon entropy of the ground truth's 8-bit
# histogram: below 5 bits an image counts as sparse, otherwise as dense. `evaluate` does the
# same (`report["by_density"]`). Our patches of a crowded nuclei image are all dense:

entropy = report["gt_entropy"]
print(f"ground-truth entropy: {entropy['mean']:.2f} ± {entropy['std']:.2f} bits")
for density, part in report["by_density"].items():
    print(f"{density}: {part['n_images']} of {report['n_images']} images")

# %%
# ## The summary file
#
# `summary.md` holds the same numbers as Markdown tables (mean ± standard deviation over the
# images, per convention, and split into sparse and dense), ready to paste into a lab notebook
# or a paper draft; `metrics.csv` has one row per image, convention and source, for your own
# statistics.

print(report["files"]["summary_md"].read_text())

# %%
# ## Fourier ring correlation
#
# The FRC compares two images frequency by frequency: from coarse structures (left) to the
# finest detail the pixel grid can hold (right, 0.5 cycles per pixel). A value near 1 means
# the prediction agrees with the ground truth at that scale. The *FRC resolution* is the
# period (1 / frequency, in pixels; smaller is finer) at which the curve falls below the
# threshold 1/7 (`frc_threshold="half-bit"` is the other common choice; with `pixel_size=`
# it is given in physical units, e.g. µm). The right panel shows at which scales the
# prediction agrees better (green) or worse (red) with the ground truth than the input does.
# Denoising gains at the scale of the nuclei; at the finest scales it removes the noise
# together with any real fine grain of the ground truth (the bundled clean image is itself a
# real microscope image, with its own grain). `debcr.metrics.frc(image)` with a single image
# estimates its resolution without any ground truth.

import matplotlib.pyplot as plt


def show_png(path, width=11):
    """Display a PNG written by debcr on this page."""
    image = plt.imread(path)
    fig = plt.figure(figsize=(width, width * image.shape[0] / image.shape[1]))
    fig.figimage(image, resize=True)


show_png(report["files"]["frc_png"])

# %%
# The figure draws, for each source, the mean of the 16 curves, and its legend says where that
# drawn curve falls below the threshold. The report's `frc_resolution` is another number: the
# mean of the per-image resolutions, taken over the images whose own curve crosses the
# threshold. Where a curve never falls below it, the resolution is finer than the pixel grid
# can show and that image is left out of the mean, so always read that mean with its count:

frc = summary["affine"]
for source in ("input", "prediction"):
    stats = frc[source]["frc_resolution"]
    if stats["n"]:
        print(
            f"{source:10}: mean per-image FRC resolution {stats['mean']:.2f} px, over the "
            f"{stats['n']} of {report['n_images']} images whose curve crosses"
        )
    else:
        print(f"{source:10}: no image's curve crosses the threshold")

# %%
# ## The comparison figure
#
# `comparison.png` shows input, prediction and ground truth of one image, whole and zoomed into
# its centre: always look at the images, not only at the numbers.

show_png(report["files"]["comparison_png"], width=9)
workdir.cleanup()
