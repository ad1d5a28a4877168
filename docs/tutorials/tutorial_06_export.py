# ruff: noqa: E402  (a tutorial imports what each step needs, where it is needed)
"""
# Export a model for other software

A debcr model can leave debcr in three forms: a BioImage Model Zoo package (`.zip`) for
Fiji/deepImageJ, ilastik and QuPath, a standalone ONNX file (`.onnx`) for ONNX Runtime,
OpenVINO and other ONNX runtimes, and a TorchScript file (`.pt`) for libtorch. This tutorial
exports the built-in `2D_denoising` model to ONNX, runs the file with ONNX Runtime alone (no
debcr, no PyTorch) on the bundled sample, and shows that the result equals debcr's own. The
page [Share and export models](../../export.md) describes every format and which tool runs
which.

Exporting needs the `export` extra: `pip install "debcr-torch[export]"`.
"""

# %%
# ## Export to ONNX
#
# `debcr.model.export` picks the format from the file's suffix. Before it writes the file it
# runs the exported graph with ONNX Runtime on the bundled noisy nuclei image and compares the
# result with the PyTorch model; if they differ by more than 1e-4 (in normalised units)
# nothing is written. The returned `ExportCheck` tells the largest difference. From a
# terminal: `debcr export 2D_denoising denoise2d.onnx`.

import tempfile
from pathlib import Path

import debcr

workdir = tempfile.TemporaryDirectory()
onnx_file = Path(workdir.name) / "denoise2d.onnx"

model = debcr.model.init("2D_denoising")
check = debcr.model.export(model, onnx_file)
print(check)
print(f"file size: {onnx_file.stat().st_size / 1e6:.1f} MB")

# %%
# ## What the ONNX file expects
#
# The graph takes a batch of single-channel images, `(batch, 1, height, width)`, with height
# and width multiples of 4, and returns the restoration with the same shape. Input and output
# are **normalised** intensities: the file holds the network only. The percentiles the model
# was trained with, and its halo (how far each output pixel looks into the input), are in
# the model's metadata; note them down with the file.

import onnxruntime

session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
for tensor in session.get_inputs() + session.get_outputs():
    print(f"{tensor.name:7} {tensor.shape}  {tensor.type}")

pmin, pmax = model.metadata["normalization"]["pmin"], model.metadata["normalization"]["pmax"]
halo = model.metadata["halo"]
print(f"percentiles {pmin} / {pmax}, halo {halo} px")

# %%
# ## Run it without debcr
#
# Apart from loading the image, everything below uses only numpy and ONNX Runtime, as a
# program without debcr would:
#
# 1. normalise the image with its own percentiles, without clipping;
# 2. mirror the image by the halo on every side (reflect padding), so that pixels near the
#    border see the same surroundings as in debcr, which pads the same way;
# 3. run the network and crop the halo away;
# 4. undo the normalisation: `restored = output · (p_hi − p_lo) + p_lo`.

import numpy as np

import debcr.samples

noisy, clean = debcr.samples.nuclei()
p_lo, p_hi = np.percentile(noisy, [pmin, pmax])
normalized = ((noisy - p_lo) / (p_hi - p_lo)).astype(np.float32)

padded = np.pad(normalized, halo, mode="reflect")  # 512 + 2·88 = 688, a multiple of 4
output = session.run(None, {"input": padded[None, None]})[0][0, 0, halo:-halo, halo:-halo]
restored_onnx = output * (p_hi - p_lo) + p_lo
print(f"percentiles of the noisy image: p_lo {p_lo:g}, p_hi {p_hi:g}")
print(
    f"restored by ONNX Runtime: {restored_onnx.shape}, values {restored_onnx.min():.1f}–"
    f"{restored_onnx.max():.1f}"
)

# %%
# ## Compare with debcr
#
# `units="percentile"` makes `debcr.model.predict` undo only the percentile normalisation,
# exactly the mapping used above. (Its default units map the output through a monotone curve
# fitted to the input, which an exported file cannot do on its own; see
# [Concepts › Units](../../concepts.md#units-of-the-result-units) and
# `debcr.data.calibration.calibrate_output`.)

restored_debcr = debcr.model.predict(model, noisy, units="percentile", progress=False)
difference = np.abs(restored_onnx - restored_debcr)
print(
    f"largest difference ONNX Runtime vs debcr: {difference.max():.2g} "
    f"(the image spans {p_hi - p_lo:g} grey levels between its percentiles)"
)

import matplotlib.pyplot as plt

fig = debcr.data.show(
    {"noisy": noisy, "ONNX Runtime": restored_onnx, "debcr": restored_debcr},
    slices=0,
    show_ids=False,
    figsize=(3, 3),
)
plt.figure(fig)  # display it (see tutorial 1)
plt.show()

# %%
# ## Why the halo padding matters
#
# Run on the image as it is, without the mirrored margin, the network sees zeros beyond the
# border. The interior is unchanged, but pixels near the border differ from debcr's result;
# the difference fades within the halo. Tools that tile images themselves (deepImageJ,
# ilastik, `bioimageio.core`) overlap their tiles by the halo that the BioImage Model Zoo
# package declares; how they fill the margin at the image border is up to each tool.

unpadded = session.run(None, {"input": normalized[None, None]})[0][0, 0]
border_difference = np.abs(unpadded * (p_hi - p_lo) + p_lo - restored_debcr)
for margin in (0, halo // 4, halo // 2, halo):
    inner = border_difference[margin : 512 - margin, margin : 512 - margin]
    print(f"pixels at least {margin:2} px from the border: largest difference {inner.max():.2g}")

# %%
# ## TorchScript, and a BioImage Model Zoo package
#
# A `.pt` suffix writes TorchScript, checked the same way; `torch.jit.load` (or libtorch from
# C++) runs it without debcr.

import torch

script_file = Path(workdir.name) / "denoise2d.pt"
print(debcr.model.export(model, script_file))
scripted = torch.jit.load(str(script_file))
with torch.inference_mode():
    out = scripted(torch.from_numpy(padded[None, None]))[0, 0, halo:-halo, halo:-halo].numpy()
print(f"TorchScript vs ONNX Runtime: largest difference {np.abs(out - output).max():.2g}")

workdir.cleanup()

# %%
# A BioImage Model Zoo package is one call, not run here because its validation takes about
# 45 s on a 2-core CPU:
#
# ```python
# result = debcr.model.export_bmz("2D_denoising", "denoise2d.zip")
# print(result)  # size, and bioimageio.core's model test: every check passed
# ```
#
# or `debcr export 2D_denoising denoise2d.zip` from a terminal. For your own model give a name
# and the authors: `debcr.model.export_bmz(model, "mine.zip", name="Nuclei denoiser",
# authors=["Your Name"])`. The package does its own percentile normalisation, so Fiji or
# ilastik get the image in the microscope's units; its output is normalised and maps back
# with the same formula as above. The package loads back into debcr as a model:
# `debcr.model.init("denoise2d.zip")`.
