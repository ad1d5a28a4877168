"""Configuration files: `load` / `save` of YAML, `load_dict` and overrides.

Files are the original DeBCR's flat YAML (read unchanged; written with its seven keys first,
spelled as it spells them), read with a safe loader that takes ``1e-3`` as a float and
refuses duplicate keys; `parse_overrides` reads ``key=value`` items of a command line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from debcr.config.messages import report, show
from debcr.config.schema import MESSAGES, TrainConfig, as_config, validate
from debcr.errors import ConfigError
from debcr.files import write_bytes

__all__ = ["load", "load_dict", "parse_overrides", "save"]

# Written at the top of saved files; a comment, so the original's loader reads past it.
_HEADER = (
    "# debcr training configuration; keys and allowed values: help(debcr.config.TrainConfig)\n"
)

# YAML 1.1 (PyYAML) reads 1e-3 as a *string*: its floats need a dot and a signed exponent.
# Learning rates are naturally written that way, so exponent forms are read as floats too.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")
_FLOAT_TAG = "tag:yaml.org,2002:float"


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that reads ``1e-3`` as a float and refuses duplicate keys."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        # PyYAML keeps the last of two equal keys silently; a config with a key twice is
        # ambiguous, so it is refused with both lines.
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable key: PyYAML reports it below
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key!r} appears twice (first on line {first + 1})",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """Safe YAML dumper that quotes strings `_Loader` would read as floats."""


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver(_FLOAT_TAG, _EXPONENT_FLOAT, list("-+.0123456789"))


def _yaml_error(exc: yaml.YAMLError, where: str) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return ConfigError(f"{where}: not valid YAML: {problem}")
    return ConfigError(
        f"{where}: YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    )


# ---- public functions ------------------------------------------------------------------


def load(config_path: str | os.PathLike[str] | None = None) -> TrainConfig:
    """Read a training configuration: the defaults, updated from a YAML file if given.

    Parameters
    ----------
    config_path : str or path-like, optional
        A flat YAML file of ``key: value`` lines; keys not in it keep their defaults. Files
        of the original DeBCR load unchanged. ``None`` returns the defaults.

    Returns
    -------
    TrainConfig
        The validated configuration.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ConfigError
        The file is not valid YAML (the message gives the line), is not a mapping, has an
        unknown key (the message suggests the closest valid one) or an invalid value.
    """
    if config_path is None:
        return TrainConfig()
    path = Path(config_path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; give the path of a YAML file")
    try:
        # utf-8-sig: editors on Windows may start the file with a byte-order mark.
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (bad byte at offset {exc.start})"
        ) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, f"config file {path}") from None
    if data is None:  # an empty file (or only comments): nothing overrides the defaults
        return TrainConfig()
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path}: the top level must be a mapping of 'key: value' lines "
            f"(e.g. 'batch_size: 32'), got a {type(data).__name__} ({show(data)})"
        )
    return validate(data, f"config file {path}")


def save(
    config: TrainConfig | Mapping[str, Any],
    config_path: str | os.PathLike[str] = "config.yaml",
    *,
    overwrite: bool = True,
) -> Path:
    """Write a training configuration to a YAML file, atomically.

    The original's seven keys come first, spelled as the original spells them
    (``NUM_STEPS``), then the others in definition order, so the original DeBCR can read
    the file too. The file is written to a temporary file in the same folder and moved into
    place, so a crash never leaves a half-written config.

    Parameters
    ----------
    config : TrainConfig or mapping
        The configuration; a mapping (such as the original's dict) is validated first.
    config_path : str or path-like
        The file to write; missing parent folders are created.
    overwrite : bool
        Replace an existing file (the default, as the original did).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ConfigError
        ``config`` is invalid, or ``config_path`` is a folder.
    FileExistsError
        The file exists and ``overwrite`` is false.
    """
    cfg = as_config(config)
    path = Path(config_path)
    if path.is_dir():
        raise ConfigError(
            f"cannot save the config to {path}: it is a folder; give a file name such as "
            f"{path / 'config.yaml'}"
        )
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    text = _HEADER + yaml.dump(
        cfg.to_dict(original_names=True),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=None,
        allow_unicode=True,
    )
    write_bytes(path, text.encode("utf-8"), overwrite=True)
    return path


def load_dict(config: Mapping[str, Any]) -> TrainConfig:
    """Validate a plain dict (such as the original's) into a `TrainConfig`.

    Unlike the original, unknown keys are errors, not silently dropped.

    Parameters
    ----------
    config : mapping
        Key to value; keys not given keep their defaults; ``NUM_STEPS`` or ``num_steps``.

    Returns
    -------
    TrainConfig
        The validated configuration.

    Raises
    ------
    ConfigError
        An unknown key (with the closest valid one) or an invalid value.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"expected a dict, got {type(config).__name__}")
    return validate(dict(config), "training configuration")


def parse_overrides(items: Iterable[str] | str) -> dict[str, Any]:
    """Parse command-line overrides like ``["batch_size=16", "learning_rate=5e-4"]``.

    Each item is ``key=value``; the value is read as a YAML scalar or flow list, so
    ``16`` is an int, ``5e-4`` a float, ``false`` a bool, ``null`` None, ``[0, 1]`` a list
    and anything else a string. Values are checked when applied (`merge`).

    Parameters
    ----------
    items : iterable of str, or str
        The items (a single string is one item).

    Returns
    -------
    dict
        Field name (``NUM_STEPS`` becomes ``num_steps``) to typed value.

    Raises
    ------
    ConfigError
        One line for each malformed item: no ``=``, no key, no value, an unknown key (with
        the closest valid one), a key given twice, or a value that is not valid YAML.

    Examples
    --------
    >>> parse_overrides(["batch_size=16", "learning_rate=5e-4", "augmentation=flip"])
    {'batch_size': 16, 'learning_rate': 0.0005, 'augmentation': 'flip'}
    """
    if isinstance(items, str):
        items = [items]
    parsed: dict[str, Any] = {}
    problems: list[str] = []
    for item in items:
        if not isinstance(item, str):
            problems.append(f"{show(item)}: expected a 'key=value' string")
            continue
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"{item!r}: expected key=value, e.g. batch_size=16")
            continue
        if key not in MESSAGES.field_by_key:
            problems.append(MESSAGES.unknown_key(key, item))
            continue
        field = MESSAGES.field_by_key[key]
        if field in parsed:
            problems.append(f"{key}: given more than once; keep one (got {item!r})")
            continue
        if not raw.strip():
            problems.append(
                f"{key}: no value after '='; write {key}=null to unset it (got {item!r})"
            )
            continue
        try:
            value = yaml.load(raw, Loader=_Loader)  # _Loader is a SafeLoader
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "not valid YAML"
            problems.append(f"{key}: value is not valid YAML ({problem}); quote it (got {raw!r})")
            continue
        if isinstance(value, dict):
            problems.append(
                f"{key}: value reads as a mapping ('key: value'); quote it if it "
                f"is text (got {raw!r})"
            )
            continue
        parsed[field] = value
    if problems:
        raise report(problems, "overrides")
    return parsed
