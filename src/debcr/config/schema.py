"""The training configuration's schema: `TrainConfig`, its checks and its defaults.

The model is flat (one level of keys), validated on creation and on every assignment, and
behaves like the original DeBCR's dict; bad values become one-line messages (``messages``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, get_args

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

from debcr.config.messages import Messages, report, show
from debcr.config.recipes import DEFAULT_RECIPE, RECIPES
from debcr.defaults import SIZE_MULTIPLE
from debcr.modes import DEFAULT_MODE, MODES

__all__ = [
    "MAX_SEED",
    "MESSAGES",
    "ORIGINAL_KEYS",
    "PRECISION_ALIASES",
    "STRATEGIES",
    "Precision",
    "Strategy",
    "TrainConfig",
    "as_config",
    "merge",
    "validate",
]

#: The original DeBCR's keys, in the order (and spelling) `save` writes
#: them first (`TrainConfig.to_dict` with ``original_names=True``).
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
#: The distributed strategies accepted for `TrainConfig.strategy`.
STRATEGIES: tuple[str, ...] = get_args(Strategy)

#: The training modes of the catalogue (`debcr.modes.MODES`).
ModeName = Literal[tuple(MODES)]

Precision = Literal["auto", "32-true", "bf16-mixed", "16-mixed"]
#: Spellings accepted for `TrainConfig.precision`, and the name each is stored under.
PRECISION_ALIASES: dict[str, str] = {
    "auto": "auto",
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

# The seed range numpy and Lightning's seed_everything accept.
MAX_SEED = 2**32 - 1

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


class TrainConfig(BaseModel):
    """Settings of a training run (flat, validated; the defaults are the ``debcr`` recipe).

    Every field is described in its ``description`` (``TrainConfig.model_fields``); the
    allowed values are checked on creation and on every assignment, and a bad value raises
    `debcr.errors.ConfigError` naming the key, the value and what is allowed.

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
    recipe : str
        Named set of the keys below that shape training (``debcr`` or ``paper``).
    learning_rate, adam_eps : float
        Adam settings.
    lr_schedule, warmup_fraction, ema_decay : str, float, float
        Learning-rate schedule and moving average of the weights.
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
    recipe: Literal[tuple(RECIPES)] = Field(
        DEFAULT_RECIPE,
        description="A named set of training settings (see debcr.config.RECIPES): "
        "'debcr' (the default: cosine learning-rate schedule with warm-up and a moving "
        "average of the weights, chosen on validation data) or 'paper' (the published DeBCR "
        "recipe: constant learning rate, no average). Neither augments. The recipe fills "
        "the keys it names that are not given; keys given explicitly win. Changing the "
        "recipe of a configuration sets all of its keys.",
    )
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
    lr_schedule: Literal["constant", "cosine"] = Field(
        RECIPES[DEFAULT_RECIPE]["lr_schedule"],
        description="How the learning rate changes over the run: 'constant' (the paper's "
        "recipe) or 'cosine' (a linear warm-up over warmup_fraction of num_steps, then a "
        "half-cosine decay to 1 % of learning_rate at num_steps).",
    )
    warmup_fraction: Float = Field(
        RECIPES[DEFAULT_RECIPE]["warmup_fraction"],
        ge=0,
        le=0.5,
        allow_inf_nan=False,
        description="Share of num_steps over which the learning rate rises linearly to "
        "learning_rate, for lr_schedule 'cosine'; 0 = no warm-up.",
    )
    ema_decay: Float = Field(
        RECIPES[DEFAULT_RECIPE]["ema_decay"],
        ge=0,
        lt=1,
        allow_inf_nan=False,
        description="Decay of an exponential moving average of the weights, which is "
        "validated and saved (best and last model) instead of the raw weights; the decay "
        "is warmed up as min(ema_decay, (1 + n) / (10 + n)) after n updates, so short runs "
        "are not dominated by the starting weights. 0 = no average (the paper's recipe).",
    )
    patch_size: Int = Field(
        128,
        ge=16,
        le=1024,
        multiple_of=SIZE_MULTIPLE,
        description="Side of the square training patches in pixels; a multiple of 4 because "
        "m-rBCR downsamples twice by 2.",
    )
    mode: ModeName = Field(
        DEFAULT_MODE,
        description="What the network learns from. 'supervised': pairs of low-quality inputs "
        "and ground truth ('low'/'gt' patches, the paper's recipe). 'noise2noise': two "
        "independent noisy acquisitions of the same field ('repeats' patches, `debcr prepare "
        "--mode noise2noise`); the loss compares the output with the other frame. "
        "'noise2void': single noisy images ('low' patches, `debcr prepare --mode "
        "noise2void`); a few pixels per patch are replaced by the median of their "
        "neighbourhood (N2V2) and the loss sees only those pixels. Only denoising can be "
        "learned without ground truth.",
    )
    loss: Literal["reference", "fft2d", "mse"] = Field(
        "reference",
        description="'reference': the original DeBCR training loss (MSE plus fft_weight × "
        "the mean modulus of the 1-D Fourier transform of the error along the image width, "
        "at each of the three output scales); 'fft2d': the same with the 2-D Fourier "
        "transform; 'mse': the MSE of the three scales alone. Noise2Void always uses the "
        "MSE on the masked pixels of the full-resolution output.",
    )
    fft_weight: Float = Field(
        0.5,
        ge=0,
        allow_inf_nan=False,
        description="Weight of the Fourier-domain term of loss='reference' or 'fft2d' (0.5 "
        "in the original); unused by 'mse'.",
    )
    n2v_masked_percentage: Float = Field(
        0.2,
        gt=0,
        le=10,
        allow_inf_nan=False,
        description="Noise2Void: percentage of the pixels of a patch that are masked (one per "
        "cell of a regular grid, at a random place in the cell); 0.2 as in CAREamics.",
    )
    n2v_roi_size: Int = Field(
        11,
        ge=3,
        le=21,
        description="Noise2Void: side of the square neighbourhood whose median (the centre "
        "pixel excluded, N2V2) replaces a masked pixel; odd, 11 as in CAREamics.",
    )
    augmentation: Literal["none", "flip", "flip_rot90"] = Field(
        RECIPES[DEFAULT_RECIPE]["augmentation"],
        description="Random symmetries applied alike to input and target patches: 'none' "
        "(both recipes), 'flip' (horizontal/vertical flips) or 'flip_rot90' (flips and "
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
        "auto",
        description="Arithmetic: 'auto' (the default) trains with 'bf16-mixed' where the "
        "device computes bfloat16 natively (a CPU with AVX512-BF16, AMX or Arm BF16, a CUDA "
        "GPU of compute capability 8.0 or later) and with '32-true' elsewhere, choosing again "
        "when a run is resumed; '32-true' (float32, as the original), 'bf16-mixed' or "
        "'16-mixed' (autocast) are used as given. The aliases 32, '32', 'fp32', 'float32', "
        "'bf16', 'bfloat16', 16, '16', 'fp16' and 'float16' are accepted and stored under "
        "Lightning's names.",
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
        description="Training patches for `debcr train`: an NPZ file as `debcr prepare` "
        "writes it for the mode ('low' and 'gt' for supervised, 'repeats' for noise2noise, "
        "'low' for noise2void). debcr.model.train takes its data as arguments instead.",
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
            raise MESSAGES.invalid(exc, data, "training configuration") from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> TrainConfig:
        """Validate a mapping into a `TrainConfig` (raises `ConfigError`)."""
        obj = _str_keys(obj)
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            data = obj if isinstance(obj, Mapping) else None
            raise MESSAGES.invalid(exc, data, "training configuration") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
            return
        field = MESSAGES.field_name(name)
        if field == "recipe":
            self.update(recipe=value)
            return
        # pydantic stores the new value before the cross-field checks run, and leaves it
        # there when they fail; keep the old state so a rejected assignment changes nothing.
        state = self.__dict__.copy()
        fields_set = set(self.__pydantic_fields_set__)
        try:
            super().__setattr__(field, value)
        except ValidationError as exc:
            object.__setattr__(self, "__dict__", state)
            object.__setattr__(self, "__pydantic_fields_set__", fields_set)
            raise MESSAGES.invalid(exc, {name: value}, "training configuration") from None

    # ---- field checks --------------------------------------------------------------------

    @model_validator(mode="before")
    @classmethod
    def _recipe_keys(cls, data: Any) -> Any:
        # The recipe's keys that are not given take the recipe's values.
        if not isinstance(data, Mapping):
            return data
        name = data.get("recipe", DEFAULT_RECIPE)
        if name not in RECIPES:
            return data  # the field check reports the name
        return {**RECIPES[name], **data}

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        # Both spellings at once would otherwise let one silently win.
        if isinstance(data, Mapping) and "num_steps" in data and "NUM_STEPS" in data:
            raise PydanticCustomError(
                "duplicate_key",
                "given twice, as num_steps ({a}) and NUM_STEPS ({b}); keep one",
                {"key": "num_steps", "a": show(data["num_steps"]), "b": show(data["NUM_STEPS"])},
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

    @field_validator("n2v_roi_size")
    @classmethod
    def _odd_roi(cls, value: int) -> int:
        if value % 2 == 0:
            raise PydanticCustomError("odd", "the neighbourhood needs a centre: use an odd size")
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
        return getattr(self, MESSAGES.field_name(key))

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in MESSAGES.field_by_key

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
            If true, the order and spelling `save` writes: the original's seven keys
            first (with ``NUM_STEPS``), then the others.

        Returns
        -------
        dict
            Key to value.
        """
        values = self.model_dump()
        if not original_names:
            return values
        out = {key: values[MESSAGES.field_by_key[key]] for key in ORIGINAL_KEYS}
        written = {MESSAGES.field_by_key[key] for key in ORIGINAL_KEYS}
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
        """A copy with some keys changed, validated together; see `merge`.

        Examples
        --------
        >>> TrainConfig().with_overrides(num_steps=50, val_freq=10).val_freq
        10
        """
        return merge(self, {**(overrides or {}), **kwargs})


# What is allowed, for the keys whose rule is not spelled out by their type and bounds.
_ALLOWED = {
    "weights_path": "a non-empty folder path",
    "val_batch_size": "an integer >= 1, or null to use batch_size",
    "seed": f"an integer from 0 to {MAX_SEED}, or null for no seeding",
    "devices": "'auto', a device count >= 1 (-1 = all), or a non-empty list of distinct "
    "device indices >= 0",
    "precision": "one of 'auto', '32-true', 'bf16-mixed', '16-mixed' (or an alias: "
    + ", ".join(repr(a) for a in PRECISION_ALIASES if a not in get_args(Precision))
    + ", 32, 16)",
    "init_model": "a built-in model name (e.g. '2D_denoising'), a model file path, or null "
    "for a new model",
    "train_data": "the path of an NPZ file of patches (`debcr prepare`), or null",
    "val_data": "the path of an NPZ file of patches (`debcr prepare`), or null",
    "n2v_roi_size": "an odd integer from 3 to 21",
}

#: The key spellings of `TrainConfig` and the messages about their values.
MESSAGES = Messages(TrainConfig, _ALLOWED)


def _str_keys(data: Any) -> Any:
    # Pydantic passes a mapping to TrainConfig.__init__ as keywords, which must be strings;
    # a YAML key like ``1:`` then gets a proper "unknown key" message, not a TypeError.
    if isinstance(data, Mapping) and not all(isinstance(key, str) for key in data):
        return {str(key): value for key, value in data.items()}
    return data


def validate(data: Any, source: str) -> TrainConfig:
    """``data`` as a `TrainConfig`; `ConfigError` naming ``source`` if invalid."""
    data = _str_keys(data)
    try:
        return TrainConfig.__pydantic_validator__.validate_python(data)
    except ValidationError as exc:
        raise MESSAGES.invalid(exc, data if isinstance(data, Mapping) else None, source) from None


def as_config(config: Any) -> TrainConfig:
    """``config`` itself if a `TrainConfig`, else the mapping validated into one."""
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, Mapping):
        return validate(dict(config), "training configuration")
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
    values = as_config(config).to_dict()
    changes: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in overrides.items():
        field = MESSAGES.field_by_key.get(key, key)
        if field in spelled:
            line = f"{key}: given twice, as {spelled[field]} and {key}; keep one"
            raise report([f"{line} (got {show(value)})"], "overrides")
        spelled[field] = key
        changes[field] = value
    recipe = changes.get("recipe")
    if isinstance(recipe, str) and recipe in RECIPES and recipe != values["recipe"]:
        # A new recipe brings all of its keys, except those changed at the same time.
        values.update(RECIPES[recipe])
    return validate({**values, **changes}, "training configuration")
