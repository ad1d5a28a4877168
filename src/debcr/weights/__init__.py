"""The four published DeBCR models, converted from TensorFlow and shipped with debcr.

Weights: Li, Yushkevich et al., DeBCR (github.com/leeroyhannover/DeBCR, tag v0.1),
licensed CC BY 4.0 (``LICENSE-weights.txt`` beside this file). They were converted
from the original TensorFlow checkpoints to safetensors by debcr without
changing any value.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class Pretrained:
    """One built-in model."""

    name: str
    description: str

    @property
    def path(self) -> Path:
        """The shipped ``.safetensors`` file."""
        return Path(str(resources.files(__name__) / f"{self.name}.safetensors"))


ATTRIBUTION = (
    "Pretrained m-rBCR weights by Li, Yushkevich, Chu, Kudryashev and Yakimovich "
    "(DeBCR, Communications Engineering 2026; github.com/leeroyhannover/DeBCR v0.1), "
    "licensed CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/); "
    "converted from TensorFlow to safetensors by debcr, values unchanged."
)

PRETRAINED: dict[str, Pretrained] = {
    p.name: p
    for p in (
        Pretrained("2D_denoising", "denoising of 2D fluorescence images (widefield/confocal)"),
        Pretrained("3D_denoising", "denoising of 3D fluorescence stacks, slice by slice"),
        Pretrained("bright_SR", "resolution enhancement of brightfield/widefield images"),
        Pretrained("confocal_SR", "resolution enhancement of confocal images (confocal → STED)"),
    )
}

#: Halos measured on images for each built-in model (stored in its file as ``halo_bfloat16``,
#: replacing the receptive-field rule's): the smallest halo whose seam error stays below the
#: model's own bfloat16 rounding on every validation image, plus one step (4 px) of margin,
#: never more than the rule's. ``benchmarks/bench_halo.py --images validation``
#: (results/halo_validation.md: FMD fields 3, 8, 14, stardist, cells3d z 10 and 50, flowdec
#: neuron z 10 and 40) measured 2D_denoising 44, 3D_denoising 64, confocal_SR 40 and
#: bright_SR 32; the rule gives 80, 64, 68 and 60.
MEASURED_HALOS: dict[str, dict[str, int]] = {
    "2D_denoising": {"halo_bfloat16": 48},
    "3D_denoising": {"halo_bfloat16": 64},
    "bright_SR": {"halo_bfloat16": 36},
    "confocal_SR": {"halo_bfloat16": 44},
}


def available() -> list[str]:
    """Names of the built-in models."""
    return list(PRETRAINED)
