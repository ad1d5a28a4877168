"""Convert the four published DeBCR TensorFlow checkpoints into the shipped model files.

Run from the repository root (with ../shared beside it):

    python tools/convert_published_weights.py

The outputs land in src/debcr/weights/<task>.safetensors; tests check that the
shipped files equal a fresh conversion.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from debcr.interop import convert_tf_checkpoint
from debcr.weights import ATTRIBUTION, MEASURED_HALOS, PRETRAINED

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "debcr_reference" / "weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "debcr" / "weights")
    args = parser.parse_args()
    for name, entry in PRETRAINED.items():
        convert_tf_checkpoint(
            args.source / name / "ckpt-best",
            args.out / f"{name}.safetensors",
            task=name,
            overwrite=True,
            metadata={
                "name": name,
                "description": entry.description,
                "source": f"github.com/leeroyhannover/DeBCR tag v0.1, weights/{name}/ckpt-best",
                "license": "CC-BY-4.0",
                "attribution": ATTRIBUTION,
                "converted_from": "TensorFlow 2 checkpoint (debcr 0.1.0), values unchanged",
                **MEASURED_HALOS.get(name, {}),
            },
        )


if __name__ == "__main__":
    main()
