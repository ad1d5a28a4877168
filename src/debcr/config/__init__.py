"""Training configuration: one flat, validated set of keys, read from and written to YAML.

The original DeBCR (0.1.0) kept its training settings in a flat YAML file of seven keys
(``weights_path``, ``batch_size``, ``NUM_STEPS``, ``patience``, ``learning_rate``,
``save_freq``, ``val_freq``) and handed them around as a plain dict. `TrainConfig`
keeps that shape and that file format, adds the settings the PyTorch trainer needs, and
checks every value, so a typo or an impossible value is reported when the file is read, not
hours into a run. Notebooks written for the original keep working:

```python
config = debcr.config.load()          # the defaults (the debcr recipe)
config["batch_size"] = 16             # validated on assignment
debcr.config.save(config, "my.yaml")  # the original can read this file too
```

Files of the original load unchanged, and files written here put the original's seven keys
first, with the original's spelling (``NUM_STEPS``), so the original can read them (it
ignores keys it does not know).

The package holds the schema (``schema``: `TrainConfig` and its checks), the
error messages (``messages``) and the files (``yaml_io``: YAML and command-line overrides).
It imports only pydantic, PyYAML and the standard library, never torch, because
command-line tools and GUIs import it at start-up.
"""

from debcr.config.messages import UnknownKeyError
from debcr.config.recipes import DEFAULT_RECIPE, RECIPES
from debcr.config.schema import MAX_SEED as MAX_SEED
from debcr.config.schema import ORIGINAL_KEYS, PRECISION_ALIASES, STRATEGIES, TrainConfig, merge
from debcr.config.schema import Precision as Precision
from debcr.config.schema import Strategy as Strategy
from debcr.config.yaml_io import load, load_dict, parse_overrides, save

__all__ = [
    "DEFAULT_RECIPE",
    "ORIGINAL_KEYS",
    "PRECISION_ALIASES",
    "RECIPES",
    "STRATEGIES",
    "TrainConfig",
    "UnknownKeyError",
    "load",
    "load_dict",
    "merge",
    "parse_overrides",
    "save",
]
