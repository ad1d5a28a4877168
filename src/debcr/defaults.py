"""Defaults shared by several layers, defined once (standard library only).

The percentiles are the published models' normalisation; the tile and batch sizes are the
prediction engine's; the file names are those of a training run folder.
"""

from __future__ import annotations

#: The network model files hold, and its version (checked when a file is read).
ARCHITECTURE: str = "m-rBCR"
ARCHITECTURE_VERSION: int = 1

#: m-rBCR halves its input twice, so image and patch sides must be multiples of this.
SIZE_MULTIPLE: int = 4

#: Lower and upper percentile of the input normalisation (the original DeBCR's).
PMIN: float = 0.1
PMAX: float = 99.9
PERCENTILES: tuple[float, float] = (PMIN, PMAX)

#: What the published models expect: percentile normalisation of the input.
NORMALIZATION: dict[str, object] = {"method": "percentile", "pmin": PMIN, "pmax": PMAX}

#: Fraction of the total input influence allowed outside the halo (the exact mode's).
HALO_TOLERANCE: float = 1e-4
#: Per precision, the influence that may be left outside the halo. bfloat16's is the largest
#: for which, on every real image measured (benchmarks/bench_halo.py, results/halo.md: FMD,
#: stardist, cells3d, flowdec neuron with the four published models), tiled float32 differs
#: from the whole image by less than bfloat16 itself does. float32 and float16 keep the exact
#: halo (float16 is not measured: CPUs only emulate it).
HALO_TOLERANCES: dict[str, float] = {
    "float32": HALO_TOLERANCE,
    "bfloat16": 5e-4,
    "float16": HALO_TOLERANCE,
}


def halo_key(precision: str) -> str:
    """The metadata key of the halo for ``precision`` (``halo`` for the exact one)."""
    exact = HALO_TOLERANCES.get(precision, HALO_TOLERANCE) == HALO_TOLERANCE
    return "halo" if exact else f"halo_{precision}"


#: Default tile core (pixels per side) per CPU backend and on accelerators (GPUs): measured
#: in benchmarks/bench_predict.py (eager torch loses speed on big tiles, OpenVINO keeps it).
#: OpenVINO in float32 holds twice bfloat16's activations: with 1024² tiles a 4096² image took
#: 1.68 GB disk to disk, with 768² tiles 1.30 GB (2-core Xeon), under the 1.5 GB target.
TILE_SIZE: dict[str, int] = {
    "torch": 512,
    "openvino": 1024,
    "openvino-float32": 768,
    "accelerator": 1024,
}
#: What can run the network (``backend=`` of predict, ``--backend``): see debcr.backends.
BACKENDS: tuple[str, ...] = ("auto", "torch", "openvino")
#: Precisions of restoration; ``"auto"`` is bfloat16 where the device computes it natively.
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
#: How restored intensities are reported (``units=`` of predict, ``--units``; the first is the
#: default): see debcr.model.predict.
UNITS: tuple[str, ...] = ("auto", "calibrated", "affine", "percentile", "normalized")
#: Default number of tiles per forward pass on CPU and on accelerators.
BATCH_SIZE: dict[str, int] = {"cpu": 1, "accelerator": 4}
#: Stacks of patches no larger than this (the paper's workflow) are batched PATCH_BATCH at a time.
PATCH_EDGE: int = 256
PATCH_BATCH: int = 32

#: Files of a training run folder.
BEST_MODEL = "best.safetensors"
LAST_MODEL = "last.safetensors"
RESUME_CHECKPOINT = "resume.ckpt"
RUN_CONFIG = "config.yaml"
METRICS_CSV = "metrics.csv"
CURVES_PLOT = "curves.png"

#: File names of a BioImage Model Zoo package's description.
BMZ_DESCRIPTIONS: tuple[str, ...] = ("rdf.yaml", "bioimageio.yaml")
