"""Loading, writing, normalising and tiling microscopy images (numpy only, no torch).

The paper's data API: `load`, `write`, `normalize`, `crop`,
`stitch` and `show`, plus `denormalize` to return restored
images to the units they were measured in, and the training-set builders `prepare`
(low/gt pairs), `prepare_noise2noise` (repeated noisy frames) and
`prepare_noise2void` (single noisy images).

The training sets: images are found and paired in ``collect``, split by group in ``split``,
cut by ``prepare`` (supervised) and ``selfsup`` (Noise2Noise, Noise2Void), and written and
read as ``sets`` describes.
"""

from debcr.data.collect import Pair, pairs_from_folders
from debcr.data.io import (
    ImageMetadata,
    as_image_stack,
    atomic_output,
    load,
    open_output,
    register_format,
    supported_formats,
    unregister_format,
    write,
)
from debcr.data.normalize import NormStats, apply_stats, compute_stats, denormalize, normalize
from debcr.data.prepare import prepare
from debcr.data.selfsup import prepare_noise2noise, prepare_noise2void
from debcr.data.show import show
from debcr.data.tiling import PatchGrid, blend_window, crop, patch_grid, stitch

__all__ = [
    "ImageMetadata",
    "NormStats",
    "Pair",
    "PatchGrid",
    "apply_stats",
    "as_image_stack",
    "atomic_output",
    "blend_window",
    "compute_stats",
    "crop",
    "denormalize",
    "load",
    "normalize",
    "open_output",
    "pairs_from_folders",
    "patch_grid",
    "prepare",
    "prepare_noise2noise",
    "prepare_noise2void",
    "register_format",
    "show",
    "stitch",
    "supported_formats",
    "unregister_format",
    "write",
]
