# ruff: noqa: E402  (a tutorial imports what each step needs, where it is needed)
"""
# Fine-tune a model on your own paired data

The built-in models were trained on other microscopes and samples than yours. If you have
pairs of images of the same field, a noisy one (`low`) and a clean one (`gt`, e.g. the
average of many frames or a long exposure), you can continue training a built-in model on
them: *fine-tuning*. This tutorial goes through the whole procedure: describe the pairs, cut
them into training patches, configure and run the training, look at the learning curves and
compare the fine-tuned model with the original one on an image it has not seen.

!!! warning "A demonstration, not a real fine-tune"
    So that this page builds in seconds on a laptop CPU, the training below runs for a few
    dozen steps on a handful of small images. A real fine-tune needs thousands of steps (see
    the defaults printed below), more images, and preferably a GPU. The numbers below
    show that the procedure works, not how good a fine-tuned model gets.
"""

# %%
# ## The data
#
# Your pairs come from your microscope. Here they are made from debcr's bundled sample (see
# tutorial 1), so that this page runs anywhere: its clean nuclei image is the expected signal,
# and noisy frames are drawn from it with the camera noise measured on the FMD confocal
# dataset (Poisson noise of 4.1 grey levels per photon plus an offset of 3.7), at a quarter of
# the sample's exposure. That is a dimmer, noisier acquisition than the data the built-in
# model was trained on, the situation in which fine-tuning pays. Each quarter of the image
# stands for one field of view: two for training, one for validation and one held out for the
# final comparison.
#
# A `debcr.data.Pair` holds the noisy frames of one field of view and its ground truth, as
# arrays or file paths. With your own files, `debcr.data.pairs_from_folders("raw", "gt")`
# makes one pair per field from a folder of noisy images and a folder of ground truths (one
# subfolder per field, or files of the same name).

import numpy as np

import debcr
import debcr.samples

_, clean = debcr.samples.nuclei()
rng = np.random.default_rng(0)
quarters = {
    "A": clean[:256, :256],
    "B": clean[:256, 256:],
    "C": clean[256:, :256],
    "D": clean[256:, 256:],
}


def noisy_frame(signal, exposure=0.25, gain=4.1, offset=3.7):
    """One camera frame: Poisson photon noise on the expected signal, in grey levels."""
    photons = rng.poisson(exposure * (signal - offset) / gain)
    return (gain / exposure * photons + offset).astype(np.float32)


def field(name, n_frames):
    """Field ``name``: n_frames noisy frames and their ground truth, the clean quarter."""
    gt = quarters[name]
    return debcr.data.Pair(low=[noisy_frame(gt) for _ in range(n_frames)], gt=gt, group=name)


train_fields, val_fields, test_field = ["A", "B"], ["C"], "D"

# Four noisy frames per training field (more noise to learn from), one per validation field.
pairs = [field(name, 4) for name in train_fields] + [field(name, 1) for name in val_fields]
test = field(test_field, 1)  # held out: used neither for training nor for validation
test_low, test_gt = test.low[0], test.gt

# %%
# ## Cut the pairs into training patches
#
# `debcr.data.prepare` normalises every image on its own (the 0.1 and 99.9 percentiles mapped
# to 0 and 1, exactly as `debcr.model.predict` does later) and cuts noisy and clean images into
# aligned square patches. It assigns whole fields of view to the training, validation and
# test sets, never single patches, so no pixel of a validation image is ever seen in
# training. Here the sets are given explicitly; `split=(0.8, 0.1, 0.1)` would draw them at
# random. With `out_dir=` the sets are written as `<name>_train.npz` etc. (what the command
# `debcr prepare` does); with `out_dir=None` they are returned as arrays.

prepared = debcr.data.prepare(
    pairs,
    name="demo",
    out_dir=None,
    patch_size=64,
    split={"train": train_fields, "val": val_fields, "test": []},
)
train_set, val_set = prepared.arrays["train"], prepared.arrays["val"]
print("patches per set:", prepared.patches)
print("training patches:", train_set["low"].shape, train_set["low"].dtype)

import matplotlib.pyplot as plt

fig = debcr.data.show(
    {"low (input)": train_set["low"], "gt (target)": train_set["gt"]},
    slices=[0, 20, 40],
    transpose=True,
    figsize=(2.5, 2.5),
)
plt.figure(fig)  # display it (see tutorial 1)
plt.show()

# %%
# ## Configure the training
#
# `debcr.config.load()` returns the default settings, with debcr's training recipe (a
# learning rate that warms up and then decays along a cosine, and a moving average of the
# weights that is validated and saved; `recipe="paper"` selects the published one instead, see
# [Training your own model](../../training.md)). `debcr.config.load("my.yaml")` reads a YAML
# file, including those of the original DeBCR. Settings are checked when they are
# set, so a typo or an impossible value fails here, not an hour into a run. The run folder
# (`weights_path`) receives the best and the last model, a checkpoint to resume from, the
# metrics and their plot. Here it is a temporary folder.
#
# For this demonstration: few steps, frequent validation, small batches and patches, on the
# CPU. Fine-tuning uses a smaller learning rate than training from scratch, so that the
# pretrained weights are adjusted rather than overwritten: for a real fine-tune of thousands
# of steps, a tenth of the recipe's rate (1e-4, what the napari plugin sets when you start
# from a built-in model). These 40 steps use half the recipe's rate (5e-4), so that the model
# gets somewhere within them.

import tempfile
from pathlib import Path

workdir = tempfile.TemporaryDirectory()
run_dir = Path(workdir.name) / "run"

config = debcr.config.load()
print(
    "defaults:      ",
    {key: config[key] for key in ("num_steps", "batch_size", "patch_size", "learning_rate")},
)
config.update(
    weights_path=str(run_dir),
    num_steps=40,
    val_freq=10,
    batch_size=4,
    patch_size=64,
    learning_rate=5e-4,
    accelerator="cpu",
    progress=False,
    seed=0,
)
print(
    "this demo:     ",
    {key: config[key] for key in ("num_steps", "batch_size", "patch_size", "learning_rate")},
)

# %%
# ## Train
#
# `init_model="2D_denoising"` starts from the built-in model (without it, training starts
# from random weights). `debcr.model.train` returns the model with the lowest validation loss.
# The same from a terminal, with the sets written by `debcr prepare`:
# `debcr train config.yaml --train demo_train.npz --val demo_val.npz --init 2D_denoising`;
# `debcr train --resume <run folder>` continues an interrupted run.

import logging
import warnings

import debcr.training  # loads Lightning, the training engine

# Lightning prints notes meant for developers; hide them on this page.
for name in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", module="lightning")

tuned = debcr.model.train(train_set, val_set, config, init_model="2D_denoising")
print("files in the run folder:", sorted(path.name for path in run_dir.iterdir()))

# %%
# ## Learning curves
#
# The loss (lower is better) and the PSNR (higher is better) on the training batches and on
# the validation set, read from the run's `metrics.csv` with `debcr.training.read_metrics`.
# The run also plots them into `curves.png`. The training curve jumps from step to step
# because each step sees only a few patches; the validation curve, measured on the same
# patches every time, is the one to read. In a real run, watch it: when it stops improving
# while the training curve still does, the model starts to memorise the training images;
# early stopping (`patience`) ends the run then.

metrics = debcr.training.read_metrics(run_dir)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), layout="constrained")
for ax, metric, label in zip(axes, ("loss", "psnr"), ("loss", "PSNR (dB)")):
    for split, style in (("train", "-"), ("val", "o-")):
        steps, values = zip(*metrics[f"{split}_{metric}"])
        ax.plot(np.add(steps, 1), values, style, label=split)
    ax.set_xlabel("training step")
    ax.set_ylabel(label)
    ax.legend()

for step, value in metrics["val_psnr"]:
    print(f"step {step + 1:3d}: validation PSNR {value:.2f} dB")

# %%
# ## Compare with the original model on a held-out image
#
# The held-out field was used neither for training nor for validation. Both models restore
# its noisy frame, and both results are compared with its ground truth.

from debcr.metrics import psnr

zero_shot = debcr.model.predict(debcr.model.init("2D_denoising"), test_low, progress=False)
fine_tuned = debcr.model.predict(tuned, test_low, progress=False)

for name, image in (
    ("noisy input", test_low),
    ("built-in model", zero_shot),
    ("fine-tuned model", fine_tuned),
):
    print(f"PSNR {name:17} vs ground truth: {psnr(image, test_gt):5.2f} dB")

fig = debcr.data.show(
    {"noisy": test_low, "built-in": zero_shot, "fine-tuned": fine_tuned, "ground truth": test_gt},
    slices=0,
    show_ids=False,
    figsize=(3, 3),
)
plt.figure(fig)
plt.show()

# %%
# When this page was built, the noisy frame scored 13.56 dB, the built-in model 25.96 dB and
# the fine-tuned model 26.20 dB: 40 steps on two small images were enough to adapt the model
# to the dimmer acquisition, by 0.24 dB. A real fine-tune, with more images and steps, gains
# more.
#
# ## Use the fine-tuned model later
#
# A run folder can be used wherever a model is expected: `debcr.model.init(run_dir)` loads
# its best model, and so does `debcr predict image.tif --model <run folder> -o out.tif`.
# `debcr.model.save(tuned, "my_model.safetensors")` writes a single model file to share.

reloaded = debcr.model.init(run_dir)
print(
    "best model of the run:",
    reloaded.metadata.get("step"),
    "steps,",
    f"validation PSNR {reloaded.metadata.get('val_psnr'):.2f} dB",
)
workdir.cleanup()
