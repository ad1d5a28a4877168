"""Training configuration: one flat, validated set of keys, read from and written to YAML.

The original DeBCR (0.1.0) kept its training settings in a flat YAML file of seven keys
(``weights_path``, ``batch_size``, ``NUM_STEPS``, ``patience``, ``learning_rate``,
``save_freq``, ``val_freq``) and handed them around as a plain dict. :class:`TrainConfig`
keeps that shape and that file format, adds the settings the PyTorch trainer needs, and
checks every value, so a typo or an impossible value is reported when the file is read, not
hours into a run. Notebooks written for the original keep working::

    config = debcr.config.load()          # the defaults (the paper's recipe)
    config["batch_size"] = 16             # validated on assignment
    debcr.config.save(config, "my.yaml")  # the original can read this file too

Files of the original load unchanged, and files written here put the original's seven keys
first, with the original's spelling (``NUM_STEPS``), so the original can read them (it
ignores keys it does not know).

This module imports only pydantic, PyYAML and the standard library, never torch, because
command-line tools and GUIs import it at start-up.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from debcr.errors import ConfigError
from debcr.files import write_bytes

__all__ = [
    "ORIGINAL_KEYS",
    "PRECISION_ALIASES",
    "STRATEGIES",
    "TrainConfig",
    "UnknownKeyError",
    "load",
    "load_dict",
    "merge",
    "parse_overrides",
    "save",
]

#: The original DeBCR's keys, in the order (and spelling) :func:`save` writes them first.
ORIGINAL_KEYS = (
    "weights_path",
    "batch_size",
    "NUM_STEPS",
    "patience",
    "learning_rate",
    "save_freq",
    "val_freq",
)

Strategy = Literal["auto", "ddp", "ddp_spawn", "ddp_notebook", "ddp_find_unused_parameters_true"]
#: The distributed strategies accepted for :attr:`TrainConfig.strategy`.
STRATEGIES: tuple[str, ...] = get_args(Strategy)

Precision = Literal["32-true", "bf16-mixed", "16-mixed"]
#: Spellings accepted for :attr:`TrainConfig.precision`, and the name each is stored under.
PRECISION_ALIASES: dict[str, str] = {
    "32-true": "32-true",
    "32": "32-true",
    "fp32": "32-true",
    "float32": "32-true",
    "bf16-mixed": "bf16-mixed",
    "bf16": "bf16-mixed",
    "bfloat16": "bf16-mixed",
    "16-mixed": "16-mixed",
    "16": "16-mixed",
    "fp16": "16-mixed",
    "float16": "16-mixed",
}

# m-rBCR downsamples its input twice by 2, so patch sides must be multiples of 4
# (debcr.nn.SIZE_MULTIPLE; repeated here because importing debcr.nn would import torch).
PATCH_MULTIPLE = 4
# The seed range numpy and Lightning's seed_everything accept.
MAX_SEED = 2**32 - 1
# Written at the top of saved files; a comment, so the original's loader reads past it.
_HEADER = (
    "# debcr training configuration; keys and allowed values: help(debcr.config.TrainConfig)\n"
)
# The YAML forms (besides a missing value) that mean "not set" for the optional keys.
_NULL_WORDS = frozenset({"", "none", "null", "~"})


def _reject_bool(value: Any) -> Any:
    # pydantic reads True as 1 for int fields; in a config that is always a mistake
    # (``batch_size: yes``), so booleans are refused where a number is expected.
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "a boolean is not a number")
    return value


Int = Annotated[int, BeforeValidator(_reject_bool)]
Float = Annotated[float, BeforeValidator(_reject_bool)]


class UnknownKeyError(ConfigError, KeyError):
    """An unknown configuration key: a :class:`ConfigError` and a :class:`KeyError`.

    Being a ``KeyError`` keeps ``config["key"]`` behaving like the original's dict.
    """

    # KeyError's own __str__ would print the message in quotes.
    __str__ = BaseException.__str__


class TrainConfig(BaseModel):
    """Settings of a training run (flat, validated; the defaults are the paper's recipe).

    Every field is described in its ``description`` (``TrainConfig.model_fields``); the
    allowed values are checked on creation and on every assignment, and a bad value raises
    :class:`debcr.errors.ConfigError` naming the key, the value and what is allowed.

    The object also behaves like the original's dict: ``config["batch_size"]`` reads,
    ``config["batch_size"] = 16`` assigns (validated), ``"NUM_STEPS" in config``,
    ``dict(config)``, ``config.keys()``, ``config.get(key)`` and iteration over the keys
    work. ``NUM_STEPS`` is accepted wherever ``num_steps`` is.

    Attributes
    ----------
    weights_path : str
        Run folder for checkpoints and logs.
    batch_size, val_batch_size : int, int or None
        Patches per training / validation batch.
    num_steps, patience, val_freq, save_freq : int
        Length of the run, early stopping, validation and checkpoint intervals.
    learning_rate, adam_eps : float
        Adam settings.
    patch_size, patch_normalization, augmentation : int, str, str
        How training patches are drawn and scaled.
    loss, fft_weight : str, float
        Training loss.
    seed : int or None
        Random seed.
    accelerator, devices, strategy, num_nodes, precision : str, ..., str, int, str
        Hardware settings, with PyTorch Lightning's names.
    num_workers, progress, init_model : int, bool, str or None
        Data loading, progress bar, starting weights.
    train_data, val_data : str or None
        Patch files for the ``debcr train`` command.
    """

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        populate_by_name=True,
    )

    weights_path: str = Field(
        "./checkpoint/",
        description="Run folder: checkpoints and logs are written here (created if missing).",
    )
    batch_size: Int = Field(32, ge=1, description="Patches per training batch.")
    val_batch_size: Int | None = Field(
        None, ge=1, description="Patches per validation batch; null = batch_size."
    )
    num_steps: Int = Field(
        2000,
        ge=1,
        alias="NUM_STEPS",
        description="Training steps (optimizer updates). The YAML key may be spelled "
        "NUM_STEPS (the original's spelling, which save() writes) or num_steps.",
    )
    patience: Int = Field(
        10,
        ge=1,
        description="Early stopping: stop after this many consecutive validations without "
        "improvement of the validation loss (counted in validations, i.e. "
        "patience × val_freq steps).",
    )
    val_freq: Int = Field(
        100,
        ge=1,
        description="Steps between validations (and so between updates of the best "
        "checkpoint); at most num_steps.",
    )
    save_freq: Int = Field(50, ge=1, description="Steps between periodic checkpoints.")
    learning_rate: Float = Field(
        1e-3, gt=0, le=1, allow_inf_nan=False, description="Adam learning rate."
    )
    adam_eps: Float = Field(
        1e-7,
        gt=0,
        allow_inf_nan=False,
        description="Adam epsilon. 1e-7 is the Keras default the original trained with "
        "(PyTorch's default is 1e-8).",
    )
    patch_size: Int = Field(
        128,
        ge=16,
        le=1024,
        multiple_of=PATCH_MULTIPLE,
        description="Side of the square training patches in pixels; a multiple of 4 because "
        "m-rBCR downsamples twice by 2.",
    )
    loss: Literal["reference", "fft2d"] = Field(
        "reference",
        description="'reference': the original DeBCR training loss; 'fft2d': the reference "
        "loss plus a 2-D Fourier-domain term weighted by fft_weight.",
    )
    fft_weight: Float = Field(
        0.5,
        ge=0,
        allow_inf_nan=False,
        description="Weight of the Fourier-domain term of loss='fft2d'; unused otherwise.",
    )
    augmentation: Literal["none", "flip", "flip_rot90"] = Field(
        "none",
        description="Random symmetries applied alike to input and target patches: 'none' "
        "(as the original), 'flip' (horizontal/vertical flips) or 'flip_rot90' (flips and "
        "90° rotations, the 8 symmetries of the square).",
    )
    patch_normalization: Literal["none", "minmax"] = Field(
        "none",
        description="How patches are scaled before they reach the network. 'none' (the "
        "default): patches are used as prepared, i.e. normalised with percentiles of the "
        "whole image (debcr.data.normalize), which is what debcr.model.predict does, so the "
        "network sees the same intensity scale in training and in prediction. 'minmax': "
        "rescale every patch to [0, 1] by its own minimum and maximum, as the original "
        "DeBCR loader did; this reproduces the original's training, but a patch's scale then "
        "depends on its content (in a background patch the noise is stretched to the full "
        "range), which prediction on whole images never does.",
    )
    seed: Int | None = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="Seed of weight initialisation, patch sampling and augmentation, for "
        "reproducible runs; null = not seeded.",
    )
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = Field(
        "auto", description="Hardware to train on (Lightning's names); 'auto' picks the best."
    )
    devices: Int | Literal["auto"] | list[Int] = Field(
        "auto",
        description="'auto', a number of devices (-1 = all) or a list of device indices.",
    )
    strategy: Strategy = Field(
        "auto",
        description="Lightning's distributed strategy, limited to single-process and DDP "
        "strategies (auto, ddp, ddp_spawn, ddp_notebook, ddp_find_unused_parameters_true): "
        "m-rBCR has 236,630 parameters, so sharding strategies (fsdp, deepspeed) would only "
        "add overhead and are not accepted.",
    )
    num_nodes: Int = Field(1, ge=1, description="Machines taking part in the run.")
    precision: Precision = Field(
        "32-true",
        description="Arithmetic: '32-true' (float32, as the original), 'bf16-mixed' or "
        "'16-mixed' (autocast). The aliases 32, '32', 'fp32', 'float32', 'bf16', 'bfloat16', "
        "16, '16', 'fp16' and 'float16' are accepted and stored under Lightning's names.",
    )
    num_workers: Int = Field(
        0,
        ge=0,
        description="Data-loader worker processes; 0 loads in the main process, which works "
        "everywhere (notebooks, Windows, macOS).",
    )
    progress: bool = Field(True, description="Show a progress bar.")
    init_model: str | None = Field(
        None,
        description="Weights to start from: a built-in model name (e.g. '2D_denoising') or "
        "the path of a model file or checkpoint; null = a new, randomly initialised model.",
    )
    train_data: str | None = Field(
        None,
        description="Training patches for `debcr train`: an NPZ file with arrays 'low' and "
        "'gt' (as `debcr prepare` writes). debcr.model.train takes its data as arguments "
        "instead.",
    )
    val_data: str | None = Field(
        None,
        description="Validation patches for `debcr train`, in the same form as train_data.",
    )

    # ---- creation, assignment and errors -------------------------------------------------

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _invalid(exc, data, "training configuration") from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> TrainConfig:
        """Validate a mapping into a :class:`TrainConfig` (raises :class:`ConfigError`)."""
        obj = _str_keys(obj)
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            data = obj if isinstance(obj, Mapping) else None
            raise _invalid(exc, data, "training configuration") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
            return
        field = _field_name(name)
        # pydantic stores the new value before the cross-field checks run, and leaves it
        # there when they fail; keep the old state so a rejected assignment changes nothing.
        state = self.__dict__.copy()
        fields_set = set(self.__pydantic_fields_set__)
        try:
            super().__setattr__(field, value)
        except ValidationError as exc:
            object.__setattr__(self, "__dict__", state)
            object.__setattr__(self, "__pydantic_fields_set__", fields_set)
            raise _invalid(exc, {name: value}, "training configuration") from None

    # ---- field checks --------------------------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        # Both spellings at once would otherwise let one silently win.
        if isinstance(data, Mapping) and "num_steps" in data and "NUM_STEPS" in data:
            raise PydanticCustomError(
                "duplicate_key",
                "given twice, as num_steps ({a}) and NUM_STEPS ({b}); keep one",
                {"key": "num_steps", "a": _show(data["num_steps"]), "b": _show(data["NUM_STEPS"])},
            )
        return data

    @field_validator(
        "val_batch_size", "seed", "init_model", "train_data", "val_data", mode="before"
    )
    @classmethod
    def _null_words(cls, value: Any) -> Any:
        # "none" in YAML or on a command line is a string; for an optional key it can only
        # mean "not set".
        if isinstance(value, str) and value.strip().lower() in _NULL_WORDS:
            return None
        return value

    @field_validator("weights_path", "init_model", "train_data", "val_data", mode="before")
    @classmethod
    def _path_text(cls, value: Any) -> Any:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str):
            if not value.strip():
                raise PydanticCustomError("empty_path", "empty path")
            # A control character (newline, NUL) in a path is a pasting accident, and some
            # of them cannot be written to YAML faithfully.
            if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in value):
                raise PydanticCustomError("control_character", "control character in path")
        return value

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_alias(cls, value: Any) -> Any:
        if isinstance(value, str | int) and not isinstance(value, bool):
            return PRECISION_ALIASES.get(str(value).strip().lower(), value)
        return value

    @field_validator("devices", mode="before")
    @classmethod
    def _devices_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool) or (
            isinstance(value, list) and any(isinstance(v, bool) for v in value)
        ):
            raise PydanticCustomError("bool_not_number", "a boolean is not a device")
        return value

    @field_validator("devices")
    @classmethod
    def _devices_range(cls, value: int | str | list[int]) -> int | str | list[int]:
        if isinstance(value, int) and value != -1 and value < 1:
            raise PydanticCustomError("devices", "device count must be >= 1 or -1")
        if isinstance(value, list) and (
            not value or min(value) < 0 or len(set(value)) != len(value)
        ):
            raise PydanticCustomError("devices", "device indices must be distinct and >= 0")
        return value

    # ---- the original's dict interface ---------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return getattr(self, _field_name(key))

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in _FIELD_BY_KEY

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        # Iterate over keys like the original's dict (pydantic would yield pairs).
        return iter(type(self).model_fields)

    def __len__(self) -> int:
        return len(type(self).model_fields)

    def keys(self) -> tuple[str, ...]:
        """The keys (field names), in definition order."""
        return tuple(type(self).model_fields)

    def get(self, key: str, default: Any = None) -> Any:
        """``config[key]``, or ``default`` for an unknown key (as ``dict.get``)."""
        return self[key] if key in self else default

    def to_dict(self, *, original_names: bool = False) -> dict[str, Any]:
        """The settings as a plain dict (a copy).

        Parameters
        ----------
        original_names : bool
            If true, the order and spelling :func:`save` writes: the original's seven keys
            first (with ``NUM_STEPS``), then the others.

        Returns
        -------
        dict
            Key to value.
        """
        values = self.model_dump()
        if not original_names:
            return values
        out = {key: values[_FIELD_BY_KEY[key]] for key in ORIGINAL_KEYS}
        written = {_FIELD_BY_KEY[key] for key in ORIGINAL_KEYS}
        out.update((key, value) for key, value in values.items() if key not in written)
        return out

    def update(self, other: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Change several keys at once, in place, validated together (as ``dict.update``).

        Changing keys together matters when they depend on each other (``val_freq`` must
        not exceed ``num_steps``). Nothing changes if any value is invalid.
        """
        new = self.with_overrides(other, **kwargs)
        object.__setattr__(self, "__dict__", new.__dict__.copy())
        self.__pydantic_fields_set__.update(new.__pydantic_fields_set__)

    def with_overrides(
        self, overrides: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> TrainConfig:
        """A copy with some keys changed, validated together; see :func:`merge`.

        Examples
        --------
        >>> TrainConfig().with_overrides(num_steps=50, val_freq=10).val_freq
        10
        """
        return merge(self, {**(overrides or {}), **kwargs})

    @property
    def effective_val_batch_size(self) -> int:
        """The validation batch size: ``val_batch_size``, or ``batch_size`` when unset."""
        return self.batch_size if self.val_batch_size is None else self.val_batch_size


# Every accepted key spelling (field names and aliases) -> field name.
_FIELD_BY_KEY: dict[str, str] = {name: name for name in TrainConfig.model_fields}
_FIELD_BY_KEY.update(
    {info.alias: name for name, info in TrainConfig.model_fields.items() if info.alias}
)

# What is allowed, for the keys whose rule is not spelled out by their type and bounds.
_ALLOWED = {
    "weights_path": "a non-empty folder path",
    "val_batch_size": "an integer >= 1, or null to use batch_size",
    "seed": f"an integer from 0 to {MAX_SEED}, or null for no seeding",
    "devices": "'auto', a device count >= 1 (-1 = all), or a non-empty list of distinct "
    "device indices >= 0",
    "precision": "one of '32-true', 'bf16-mixed', '16-mixed' (or an alias: "
    + ", ".join(repr(a) for a in PRECISION_ALIASES if a not in get_args(Precision))
    + ", 32, 16)",
    "init_model": "a built-in model name (e.g. '2D_denoising'), a model file path, or null "
    "for a new model",
    "train_data": "the path of an NPZ file with arrays 'low' and 'gt', or null",
    "val_data": "the path of an NPZ file with arrays 'low' and 'gt', or null",
}


def _allowed(field: str) -> str:
    """What ``field`` accepts, in words (from its type and bounds unless spelled out)."""
    if field in _ALLOWED:
        return _ALLOWED[field]
    info = TrainConfig.model_fields[field]
    annotation = info.annotation
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(annotation))
    if annotation is bool:
        return "true or false"
    kind = {int: "an integer", float: "a finite number"}.get(annotation, "text")
    bounds = []
    for meta in info.metadata:
        for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{symbol} {getattr(meta, attr)}")
        if getattr(meta, "multiple_of", None) is not None:
            bounds.append(f"a multiple of {meta.multiple_of}")
    return " ".join([kind, " and ".join(bounds)]).strip()


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _suggest(key: str) -> str:
    """``did you mean 'x'? `` for a near miss of a valid key ('' if none), case-blind."""
    lowered = {k.lower(): k for k in _FIELD_BY_KEY}
    close = difflib.get_close_matches(str(key).lower(), list(lowered), n=1, cutoff=0.6)
    return f"did you mean {_FIELD_BY_KEY[lowered[close[0]]]!r}? " if close else ""


def _unknown_key_problem(key: Any, value: Any = None, *, show_value: bool = True) -> str:
    if isinstance(value, Mapping):
        inner = ", ".join(str(k) for k in value) or "its keys"
        return (
            f"{key}: nested sections are not supported, the config is flat; move "
            f"{inner} to the top level (got a section)"
        )
    got = f" (got {_show(value)})" if show_value else ""
    return (
        f"{key}: unknown key; {_suggest(key)}valid keys: {', '.join(TrainConfig.model_fields)}{got}"
    )


def _field_name(key: str) -> str:
    """The field a key spelling refers to; :class:`UnknownKeyError` if none."""
    if isinstance(key, str) and key in _FIELD_BY_KEY:
        return _FIELD_BY_KEY[key]
    raise UnknownKeyError(_unknown_key_problem(key, show_value=False))


def _problems(exc: ValidationError, data: Mapping[str, Any] | None) -> list[str]:
    """One ``key: problem (got VALUE)`` line per key that failed."""
    lines: dict[str, str] = {}
    for error in exc.errors():
        loc, ctx = error["loc"], error.get("ctx") or {}
        inner = ctx.get("error")
        if isinstance(inner, ConfigError) and hasattr(inner, "problems"):
            # Validating through pydantic calls TrainConfig.__init__, whose ConfigError
            # pydantic wraps; its lines are already complete.
            for line in inner.problems:
                lines.setdefault(line.split(":", 1)[0], line)
            continue
        if error["type"] == "extra_forbidden":
            key = str(loc[0])
            line = _unknown_key_problem(key, error["input"])
        elif not loc and "key" in ctx:
            # Raised by a model validator (cross-field check): the message is complete.
            key = ctx["key"]
            line = f"{key}: {error['msg']}"
        elif not loc:
            key = "config"
            line = f"config: must be a mapping of key: value pairs (got {_show(error['input'])})"
        else:
            key = str(loc[0])
            # The top-level value, not the inner item a union or list member complained about.
            value = data[key] if data is not None and key in data else error["input"]
            line = f"{key}: must be {_allowed(_FIELD_BY_KEY.get(key, key))} (got {_show(value)})"
        lines.setdefault(key, line)
    return list(lines.values())


def _report(problems: list[str], source: str) -> ConfigError:
    count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
    error = ConfigError(f"invalid {source} ({count}):\n" + "\n".join(f"  {p}" for p in problems))
    # The lines, for callers (GUIs) that show each problem beside its key.
    error.problems = problems  # type: ignore[attr-defined]
    return error


def _invalid(exc: ValidationError, data: Mapping[str, Any] | None, source: str) -> ConfigError:
    return _report(_problems(exc, data), source)


def _str_keys(data: Any) -> Any:
    # Pydantic passes a mapping to TrainConfig.__init__ as keywords, which must be strings;
    # a YAML key like ``1:`` then gets a proper "unknown key" message, not a TypeError.
    if isinstance(data, Mapping) and not all(isinstance(key, str) for key in data):
        return {str(key): value for key, value in data.items()}
    return data


def _validate(data: Any, source: str) -> TrainConfig:
    data = _str_keys(data)
    try:
        return TrainConfig.__pydantic_validator__.validate_python(data)
    except ValidationError as exc:
        raise _invalid(exc, data if isinstance(data, Mapping) else None, source) from None


# ---- YAML ------------------------------------------------------------------------------

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
    """Safe YAML dumper that quotes strings :class:`_Loader` would read as floats."""


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
            f"(e.g. 'batch_size: 32'), got a {type(data).__name__} ({_show(data)})"
        )
    return _validate(data, f"config file {path}")


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
    cfg = _as_config(config)
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
    """Validate a plain dict (such as the original's) into a :class:`TrainConfig`.

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
    return _validate(dict(config), "training configuration")


def _as_config(config: Any) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, Mapping):
        return load_dict(config)
    raise TypeError(f"expected a TrainConfig or a dict, got {type(config).__name__}")


def merge(config: TrainConfig | Mapping[str, Any], overrides: Mapping[str, Any]) -> TrainConfig:
    """A new configuration: ``config`` with the keys in ``overrides`` replaced.

    All values are validated together, so keys that constrain each other (``num_steps``
    and ``val_freq``) can change at once; ``config`` itself is not modified.

    Parameters
    ----------
    config : TrainConfig or mapping
        The starting configuration.
    overrides : mapping
        Key to new value; keys may use either spelling (``NUM_STEPS`` or ``num_steps``).
        Values may be strings where YAML would allow them (``"5e-4"``).

    Returns
    -------
    TrainConfig
        The validated result.

    Raises
    ------
    ConfigError
        An unknown key (with the closest valid one), a key given twice, or an invalid value.
    """
    values = _as_config(config).to_dict()
    changes: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in overrides.items():
        field = _FIELD_BY_KEY.get(key, key)
        if field in spelled:
            line = f"{key}: given twice, as {spelled[field]} and {key}; keep one"
            raise _report([f"{line} (got {_show(value)})"], "overrides")
        spelled[field] = key
        changes[field] = value
    return _validate({**values, **changes}, "training configuration")


def parse_overrides(items: Iterable[str] | str) -> dict[str, Any]:
    """Parse command-line overrides like ``["batch_size=16", "learning_rate=5e-4"]``.

    Each item is ``key=value``; the value is read as a YAML scalar or flow list, so
    ``16`` is an int, ``5e-4`` a float, ``false`` a bool, ``null`` None, ``[0, 1]`` a list
    and anything else a string. Values are checked when applied (:func:`merge`).

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
            problems.append(f"{_show(item)}: expected a 'key=value' string")
            continue
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"{item!r}: expected key=value, e.g. batch_size=16")
            continue
        if key not in _FIELD_BY_KEY:
            problems.append(_unknown_key_problem(key, item))
            continue
        field = _FIELD_BY_KEY[key]
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
        raise _report(problems, "overrides")
    return parsed
