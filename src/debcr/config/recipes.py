"""Named training recipes: the keys of `TrainConfig` that shape how a run learns.

A recipe fills the keys it names that a configuration does not give (given keys win), and
changing a configuration's ``recipe`` sets all of them. ``paper`` is the published DeBCR
recipe, kept so that its results stay reproducible; ``debcr`` is the default, chosen on
FMD validation data (``benchmarks/bench_recipe.py``, results in
``benchmarks/results/recipe.md``).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

__all__ = ["DEFAULT_RECIPE", "RECIPES"]

#: Recipe name to the values of the keys it sets.
RECIPES: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType(
    {
        "debcr": MappingProxyType(
            {
                "learning_rate": 1e-3,
                "lr_schedule": "cosine",
                "warmup_fraction": 0.05,
                "ema_decay": 0.999,
                "augmentation": "none",
            }
        ),
        "paper": MappingProxyType(
            {
                "learning_rate": 1e-3,
                "lr_schedule": "constant",
                "warmup_fraction": 0.0,
                "ema_decay": 0.0,
                "augmentation": "none",
            }
        ),
    }
)

#: The recipe of a configuration that names none.
DEFAULT_RECIPE = "debcr"
