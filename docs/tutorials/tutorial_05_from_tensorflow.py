# ruff: noqa: E402  (a tutorial imports what each step needs, where it is needed)
"""
# Use a model trained with the original TensorFlow DeBCR

If you trained a model with the original DeBCR package (TensorFlow), you do not need to train
it again, nor to install TensorFlow: debcr reads the original's checkpoint files directly and
converts them into its own model file, value for value. This tutorial converts one of the
checkpoints the DeBCR authors published and shows that the result restores images exactly
like the model built into debcr (which was converted the same way).

A checkpoint of the original is a *prefix* naming a pair of files written by TensorFlow, for
example `weights/ckpt-best.index` and `weights/ckpt-best.data-00000-of-00001` (prefix
`weights/ckpt-best`); a small text file `checkpoint` usually sits beside them.
"""

# %%
# ## Find a checkpoint
#
# This tutorial converts the published `2D_denoising` checkpoint of DeBCR v0.1
# (github.com/leeroyhannover/DeBCR, folder `weights/2D_denoising`, CC BY 4.0). debcr's
# repository keeps an unchanged copy of it beside this tutorial, in
# `docs/tutorials/data/DeBCR-v0.1/2D_denoising/`, so the page builds without a download.
# For your own model, set `prefix` to your checkpoint's prefix instead.

from pathlib import Path

import debcr

weights = Path("data/DeBCR-v0.1/2D_denoising")  # relative to this tutorial's folder
prefix = weights / "ckpt-best"  # your own: "…/weights/ckpt-best"
print("checkpoint files:", ", ".join(sorted(p.name for p in weights.iterdir())))

# %%
# ## Convert it into a debcr model file
#
# `debcr.interop.convert_tf_checkpoint` reads the checkpoint (TensorFlow is not needed),
# checks that it holds a complete m-rBCR network, rearranges the weights into PyTorch's
# layout and writes a single `.safetensors` file with a record of where it came from. The
# same from a terminal: `debcr convert-tf weights/ckpt-best my_model.safetensors`.

import tempfile

import debcr.interop

workdir = tempfile.TemporaryDirectory()
model_file = Path(workdir.name) / "my_2D_denoising.safetensors"

debcr.interop.convert_tf_checkpoint(prefix, model_file, task="2D_denoising")
print(f"wrote {model_file.name} ({model_file.stat().st_size / 1e6:.2f} MB)")

# %%
# ## Use it like any other model
#
# `debcr.model.init` loads the file (`debcr.model.init(prefix)` would also convert the
# checkpoint on the fly, without writing a file). The model's metadata keeps the provenance,
# and the halo, the margin needed around each tile, is measured once at conversion.

converted = debcr.model.init(model_file)
for key in ("task", "source", "converted_from", "halo"):
    print(f"{key:15} {converted.metadata[key]}")

# %%
# ## Check that nothing changed
#
# The conversion copies every value without rounding, so the converted model holds the same
# numbers as the built-in `2D_denoising` model and restores an image identically.

import numpy as np

import debcr.samples

builtin = debcr.model.init("2D_denoising")
ours, theirs = builtin.state_dict(), converted.state_dict()
identical = sum(bool((ours[name] == theirs[name]).all()) for name in ours)
n_values = sum(tensor.numel() for tensor in ours.values())
print(f"{identical} of {len(ours)} weight tensors identical ({n_values:,} values)")

noisy, _ = debcr.samples.nuclei()
crop = noisy[192:320, 192:320]  # 128 × 128 pixels, the patch size of the original
# In float32, the exact mode, both models take the same context around the image. (In
# bfloat16 the built-in model uses the smaller halo measured for it on images, the converted
# one the receptive-field rule's, so their borders differ within bfloat16's rounding.)
a = debcr.model.predict(builtin, crop, precision="float32", progress=False)
b = debcr.model.predict(converted, crop, precision="float32", progress=False)
print(f"largest difference between the two restorations: {np.abs(a - b).max()}")

import matplotlib.pyplot as plt

fig = debcr.data.show(
    {"noisy": crop, "built-in model": a, "converted checkpoint": b},
    slices=0,
    show_ids=False,
    figsize=(3, 3),
)
plt.figure(fig)  # display it (see tutorial 1)
plt.show()

workdir.cleanup()

# %%
# ## What else to know
#
# - Data: the original normalised images before training and prediction; debcr's
#   `predict` normalises by itself (0.1/99.9 percentiles of the whole image) and returns
#   intensities in the input's units. The page
#   [Coming from the original DeBCR](../../coming-from-original.md) lists these differences
#   and how each function and configuration key of the original maps to debcr.
# - Configuration files of the original load unchanged with `debcr.config.load("config.yaml")`,
#   so you can continue training a converted model with `debcr.model.train(...,
#   init_model=model_file)` (tutorial 2).
