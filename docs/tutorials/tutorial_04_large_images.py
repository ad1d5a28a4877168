# ruff: noqa: E402  (a tutorial imports what each step needs, where it is needed)
"""
# Large images: OME-Zarr files and dask

Whole-slide scans, tiled acquisitions and long time-lapses do not fit into memory. debcr
restores them without ever loading them whole, in two ways:

- **file to file**: `debcr.model.predict(model, "in.ome.zarr", output="out.ome.zarr")` reads
  the input tile by tile and writes each restored tile as soon as it is finished, so memory
  use depends on the tile size, not on the image size;
- **dask**: given a `dask.array`, `predict` returns a lazy dask array that is computed block
  by block, on your computer or on a cluster (`dask.distributed`).

Both give the same numbers as restoring the whole image in memory: tiles and blocks are
restored with a margin (halo) as wide as the network looks, so no seams appear. This page
uses a small stand-in for a large data set, so that it builds in seconds; the calls are the
same for a file of many gigabytes.
"""

# %%
# ## A time-lapse in an OME-Zarr file
#
# [OME-Zarr](https://ngff.openmicroscopy.org) stores an image as many small compressed chunks
# in a folder, so a program can read any region without reading the rest; it is the
# bioimaging community's open format for large images (OME-NGFF).
# `debcr.data.write` writes one when the name ends in `.ome.zarr`. Our stand-in: two frames
# of a 512 × 1024 field (the bundled clean nuclei next to their mirror image) with new camera
# noise in each frame, stored in chunks of 512 × 512 pixels, with the axes and the pixel size
# recorded.

import tempfile
from pathlib import Path

import numpy as np

import debcr
import debcr.samples

_, clean = debcr.samples.nuclei()
field = np.concatenate([clean, clean[:, ::-1]], axis=1)  # 512 × 1024, seamless
rng = np.random.default_rng(0)
gain, offset = 4.1, 3.7  # camera noise measured on a confocal microscope (FMD dataset)
movie = np.stack([gain * rng.poisson((field - offset) / gain) + offset for _ in range(2)])
movie = movie.round().astype(np.uint16)

workdir = tempfile.TemporaryDirectory()
source = Path(workdir.name) / "movie.ome.zarr"
metadata = debcr.data.ImageMetadata(axes="TYX", scale=(1.0, 0.2, 0.2), unit="micrometer")
debcr.data.write(source, movie, metadata=metadata, chunks=(1, 512, 512))

stored, stored_metadata = debcr.data.load(source, with_metadata=True)  # lazy: reads no pixels
print(f"{source.name}: shape {stored.shape}, {stored.dtype}, chunks {stored.chunks}")
print(f"axes {stored_metadata.axes}, pixel size {stored_metadata.scale[1:]} {stored_metadata.unit}")

# %%
# ## Restore file to file
#
# With `output=`, `predict` writes the result into a file instead of returning it, and
# returns the file's path. The output format again follows the extension. `tile_size=`
# (default 512 pixels on a CPU, 1024 on a GPU) sets how much is restored at once, and so the
# memory needed. Each frame of a time-lapse (or plane of a stack) is restored on its own.
# From a terminal: `debcr predict movie.ome.zarr -o restored.ome.zarr`.

import time

model = debcr.model.init("2D_denoising")

start = time.perf_counter()
target = debcr.model.predict(
    model, source, output=Path(workdir.name) / "restored.ome.zarr", progress=False
)
print(f"restored into {target.name} in {time.perf_counter() - start:.1f} s")

restored_file = debcr.data.load(target)  # opened lazily again
print(f"{target.name}: shape {restored_file.shape}, {restored_file.dtype}")

# %%
# `debcr.data.show` also reads lazily: only the frame shown is read from each file.

import matplotlib.pyplot as plt

fig = debcr.data.show({"noisy": stored, "restored": restored_file}, slices=[0], figsize=(6, 3))
plt.figure(fig)  # display it (see tutorial 1)
plt.show()

# %%
# ## Restore a dask array on a local cluster
#
# dask describes a computation on a large array as many small tasks, one per chunk, and runs
# them in parallel, on the cores of one computer or on the machines of a cluster.
# `dask.array.from_zarr` opens the OME-Zarr lazily (its full-resolution image is the array
# `"0"`); `debcr.model.predict` then returns a lazy result at once, with the same shape and
# chunks, in which every block is restored together with a halo from its neighbours.
#
# `dask.distributed` runs the tasks on workers. Here: two workers in this process, one thread
# each (`processes=False` saves starting new Python processes; with `processes=True` or on a
# cluster, the model is sent to every worker). On a cluster you would connect to its
# scheduler instead, e.g. `Client("tcp://scheduler-address:8786")`; the code stays the same.
#
# One setting matters for speed: PyTorch spreads every computation over all cores by itself.
# When several dask workers restore blocks at the same time, the two kinds of parallelism
# compete for the same cores and everything can slow down several times. Give PyTorch one
# thread per worker thread (with `processes=True` or on a cluster:
# `client.run(torch.set_num_threads, 1)`).

import dask.array as da
import torch
from dask.distributed import Client, LocalCluster

torch.set_num_threads(1)

lazy_movie = da.from_zarr(source, component="0")
print("input: ", lazy_movie)

cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
client = Client(cluster)

lazy_restored = debcr.model.predict(model, lazy_movie, progress=False)
print("result:", lazy_restored)

# %%
# Nothing has been restored yet (apart from a small sample: with the default units the
# intensity curve is fitted once, when the lazy result is made, on about three 256² windows
# spread over the movie; tutorial 1). Asking for a region restores only the blocks under it,
# which makes quick previews of a huge image cheap. To restore everything and keep it, write
# the lazy result to a file: `lazy_restored.to_zarr("restored.zarr")`.

start = time.perf_counter()
region = (0, slice(128, 384), slice(256, 768))  # frame 0, 256 × 512 pixels in the middle
restored_region = lazy_restored[region].compute()
print(f"computed a {restored_region.shape} region in {time.perf_counter() - start:.1f} s")

# %%
# The region agrees with the file-to-file result up to float32 rounding:

from_file = np.asarray(restored_file[region])
difference = np.abs(restored_region - from_file).max()
print(
    f"max |dask - file| = {difference:.2g}  "
    f"(intensities up to {from_file.max():.0f}: relative {difference / from_file.max():.1g})"
)

fig = debcr.data.show(
    {"noisy": stored[region], "dask": restored_region, "file": from_file},
    slices=0,
    show_ids=False,
    figsize=(3.5, 3.5),
)
plt.figure(fig)
plt.show()

# %%
# Close the client and the cluster when done (or use them in a `with` block), and delete the
# temporary files.

client.close()
cluster.close()
workdir.cleanup()
