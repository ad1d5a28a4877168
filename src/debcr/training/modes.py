"""Training modes: how a mode reads its data, builds its batches and scores the network.

A mode is a small strategy object, so the Lightning module only asks it for a batch and a
loss. The modes, their names and everything else about them are registered in the catalogue
`debcr.modes.MODES`, whose ``strategy`` names the class here; three modes exist:

``supervised``
    Pairs of low-quality inputs and ground truth (``low``/``gt`` patches); the reference loss
    of the paper at the three output scales.
``noise2noise``
    Independent noisy acquisitions of the same field (``repeats`` patches ``(N, F, P, P)``):
    each training item is two *different* frames of one patch location, drawn anew every
    epoch; the network maps one to the other. With zero-mean noise independent between the
    frames, the expected squared error to a noisy frame is the error to the clean image plus
    the noise variance, so the minimiser is the clean image (Lehtinen et al., "Noise2Noise:
    Learning Image Restoration without Clean Data", ICML 2018).
``noise2void``
    Single noisy images (``low`` patches). In every patch a few pixels (``n2v_masked_percentage``,
    one per cell of a regular grid) are replaced by the median of their
    ``n2v_roi_size``² neighbourhood *without the pixel itself*, and the loss is the squared
    error on those pixels only, against their original noisy values (Krull et al.,
    "Noise2Void – Learning Denoising from Single Noisy Images", CVPR 2019). The median
    replacement is N2V2's sampling strategy (Höck et al., "N2V2 – Fixing Noise2Void
    Checkerboard Artifacts with Modified Sampling Strategies and a Tweaked Network
    Architecture", ECCV Workshops 2022), which removes the checkerboard artefacts of N2V's
    random-neighbour replacement. N2V2's other two changes — max-blur-pooling instead of
    max-pooling and no top-level skip connection — concern U-Nets; m-rBCR has neither
    max-pooling nor a U-Net skip (it downsamples by bilinear resizing and strided
    convolutions), so only the sampling strategy applies.

Noise2Noise and Noise2Void learn denoising only: neither can learn deconvolution or
resolution enhancement, which need a sharper target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from debcr.config import TrainConfig
from debcr.data.sets import SetInfo
from debcr.defaults import NORMALIZATION
from debcr.errors import ConfigError, DataError
from debcr.modes import DEFAULT_MODE, ModeSpec, load_reference, mode_spec
from debcr.modes import MODES as CATALOGUE
from debcr.nn.losses import mrbcr_loss
from debcr.training.data import (
    PairDataset,
    PatchDataset,
    RepeatsDataset,
    augment,
    draw_pairs,
    load_pairs,
    load_patches,
    load_repeats,
    minmax_per_patch,
)

__all__ = [
    "DEFAULT_MODE",
    "MODES",
    "Batch",
    "Noise2Noise",
    "Noise2Void",
    "Supervised",
    "TrainingMode",
    "check_data_mode",
    "data_mode",
    "get_mode",
    "mode_for",
    "n2v_mask",
    "normalization_of",
    "strategy_class",
]


@dataclass(frozen=True)
class Batch:
    """A batch ready for the network: ``inputs``, ``target`` and the pixels the loss sees.

    ``mask`` is None when the loss sees every pixel, else a float tensor shaped like
    ``target`` with 1 at the pixels that count.
    """

    inputs: Tensor
    target: Tensor
    mask: Tensor | None = None


def _squared_error(prediction: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
    """Mean squared error over all pixels, or over the masked ones."""
    error = (prediction.float() - target.float()) ** 2
    if mask is None:
        return error.mean()
    return (error * mask).sum() / mask.sum().clamp_min(1)


@dataclass(frozen=True)
class TrainingMode:
    """What every mode provides to the training run.

    Attributes
    ----------
    loss_kind, fft_weight
        The loss of the paired modes (`debcr.nn.losses.mrbcr_loss`).
    augmentation
        Random symmetries of a batch (``none``, ``flip``, ``flip_rot90``).
    patch_normalization
        ``none`` or ``minmax`` (the original's per-patch rescale).
    """

    loss_kind: str = "reference"
    fft_weight: float = 0.5
    augmentation: str = "none"
    patch_normalization: str = "none"

    @classmethod
    def settings(cls, config: TrainConfig) -> dict[str, Any]:
        """The mode's settings (its fields) that ``config`` gives."""
        return {
            "loss_kind": config.loss,
            "fft_weight": config.fft_weight,
            "augmentation": config.augmentation,
            "patch_normalization": config.patch_normalization,
        }

    @classmethod
    def from_config(cls, config: TrainConfig) -> TrainingMode:
        """The mode with the settings of ``config``."""
        return cls(**cls.settings(config))

    @property
    def spec(self) -> ModeSpec:
        """The catalogue entry of this mode (`debcr.modes.MODES`)."""
        for cls in type(self).__mro__:
            reference = f"{cls.__module__}:{cls.__qualname__}"
            for spec in CATALOGUE.values():
                if spec.strategy == reference:
                    return spec
        raise ConfigError(f"{type(self).__name__} is not the strategy of a mode in debcr.modes")

    @property
    def name(self) -> str:
        """The mode's name."""
        return self.spec.name

    def load(self, source: Any, what: str) -> dict[str, np.ndarray]:
        """Validated float32 arrays of one split (``source``: a dict-like or an NPZ path)."""
        raise NotImplementedError

    def dataset(self, arrays: Mapping[str, np.ndarray], *, training: bool) -> Dataset:
        """The map-style dataset of one split (its items are tuples of ``(1, P, P)`` tensors)."""
        raise NotImplementedError

    def batch(self, items: Sequence[Tensor], *, training: bool, batch_index: int = 0) -> Batch:
        """Turn a loader batch into the network's input, its target and the loss mask."""
        raise NotImplementedError

    def loss(self, outputs: Sequence[Tensor], batch: Batch) -> Tensor:
        """The training loss of the network's ``(z0, z2, z4)`` on ``batch``."""
        return mrbcr_loss(outputs, batch.target, self.loss_kind, self.fft_weight)

    def squared_error(self, output: Tensor, batch: Batch) -> Tensor:
        """Mean squared error of the full-resolution output (for the PSNR shown in logs)."""
        return _squared_error(output, batch.target, batch.mask)

    def _scaled_pair(self, low: Tensor, target: Tensor, training: bool) -> tuple[Tensor, Tensor]:
        if self.patch_normalization == "minmax":
            low, target = minmax_per_patch(low), minmax_per_patch(target)
        if training:
            low, target = augment(low, target, self.augmentation)
        return low, target


@dataclass(frozen=True)
class Supervised(TrainingMode):
    """Pairs of inputs and ground truth (``low``/``gt``); the loss sees every pixel."""

    def load(self, source: Any, what: str) -> dict[str, np.ndarray]:
        low, gt = load_pairs(source, what)
        return {"low": low, "gt": gt}

    def dataset(self, arrays: Mapping[str, np.ndarray], *, training: bool) -> Dataset:
        return PairDataset(arrays["low"], arrays["gt"])

    def batch(self, items: Sequence[Tensor], *, training: bool, batch_index: int = 0) -> Batch:
        low, gt = self._scaled_pair(items[0], items[1], training)
        return Batch(low, gt)


@dataclass(frozen=True)
class Noise2Noise(TrainingMode):
    """Two different noisy frames of one field: one is the input, the other the target.

    Training draws a new pair of frames for every patch location in every epoch; validation
    uses the fixed pairs ``(f, f + 1 mod F)`` of every location, so its loss is comparable
    between validations. Both frames were normalised with the same statistics (``debcr
    prepare --mode noise2noise`` uses percentiles of all frames of a field together), so
    they differ only by noise. The loss is ``loss`` of the configuration, as in supervised
    training; docs/concepts.md ("Training without ground truth") and
    ``benchmarks/results/selfsup.md`` compare it with ``loss: mse``.
    """

    @classmethod
    def from_config(cls, config: TrainConfig) -> TrainingMode:
        if config.patch_normalization == "minmax":
            raise ConfigError(
                "patch_normalization 'minmax' rescales each patch on its own, which would give "
                "the two frames of a Noise2Noise pair different scales; use 'none' with "
                "noise2noise"
            )
        return super().from_config(config)

    def load(self, source: Any, what: str) -> dict[str, np.ndarray]:
        return {"repeats": load_repeats(source, what)}

    def dataset(self, arrays: Mapping[str, np.ndarray], *, training: bool) -> Dataset:
        return RepeatsDataset(arrays["repeats"], random_pairs=training)

    def batch(self, items: Sequence[Tensor], *, training: bool, batch_index: int = 0) -> Batch:
        # Training items are whole stacks: the pair is drawn here, in the step, from the
        # run's generator, so a resumed run draws the pairs the uninterrupted one would have.
        first, second = draw_pairs(items[0]) if training else (items[0], items[1])
        first, second = self._scaled_pair(first, second, training)
        return Batch(first, second)


@dataclass(frozen=True)
class Noise2Void(TrainingMode):
    """Single noisy images; masked pixels are replaced and only they are scored (N2V2).

    Attributes
    ----------
    masked_percentage
        Percentage of the pixels of a patch that are masked.
    roi_size
        Side of the neighbourhood whose median (without its centre) replaces a masked pixel.
    """

    masked_percentage: float = 0.2
    roi_size: int = 11

    @classmethod
    def settings(cls, config: TrainConfig) -> dict[str, Any]:
        return {
            **super().settings(config),
            "masked_percentage": config.n2v_masked_percentage,
            "roi_size": config.n2v_roi_size,
        }

    def load(self, source: Any, what: str) -> dict[str, np.ndarray]:
        return {"low": load_patches(source, what)}

    def dataset(self, arrays: Mapping[str, np.ndarray], *, training: bool) -> Dataset:
        return PatchDataset(arrays["low"])

    def batch(self, items: Sequence[Tensor], *, training: bool, batch_index: int = 0) -> Batch:
        noisy = items[0]
        if self.patch_normalization == "minmax":
            noisy = minmax_per_patch(noisy)
        if training:
            noisy, _ = augment(noisy, noisy, self.augmentation)
            generator = None
        else:
            # The same masks at every validation, so validation losses can be compared.
            generator = torch.Generator().manual_seed(batch_index)
        masked, mask = n2v_mask(noisy, self.masked_percentage, self.roi_size, generator)
        return Batch(masked, noisy, mask)

    def loss(self, outputs: Sequence[Tensor], batch: Batch) -> Tensor:
        return _squared_error(outputs[0], batch.target, batch.mask)


def n2v_mask(
    images: Tensor,
    percentage: float = 0.2,
    roi_size: int = 11,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Mask pixels of a batch for Noise2Void with N2V2's median replacement.

    One pixel is chosen at random in every cell of a grid of side ``sqrt(100 / percentage)``
    (stratified, so masked pixels are spread evenly over the patch), and replaced
    by the median of the ``roi_size × roi_size`` neighbourhood around it without the pixel
    itself (the lower median of the ``roi_size² − 1`` values; borders are mirrored).

    Parameters
    ----------
    images
        Batch ``(N, 1, H, W)``.
    percentage
        Percentage of masked pixels (0.2 → about one pixel in 500).
    roi_size
        Odd side of the neighbourhood.
    generator
        Random generator (CPU) for reproducible masks; None uses torch's global one.

    Returns
    -------
    masked, mask
        The batch with the chosen pixels replaced, and a float mask (1 at the chosen pixels).
    """
    n, c, h, w = images.shape
    step = max(1, round(float(np.sqrt(100.0 / percentage))))
    cells_y, cells_x = -(-h // step), -(-w // step)
    offsets = torch.randint(0, step, (n, c, cells_y, cells_x, 2), generator=generator)
    ys = torch.arange(cells_y).view(1, 1, -1, 1) * step + offsets[..., 0]
    xs = torch.arange(cells_x).view(1, 1, 1, -1) * step + offsets[..., 1]
    keep = (ys < h) & (xs < w)
    b, ch, _, _ = torch.meshgrid(
        *(torch.arange(k) for k in (n, c, cells_y, cells_x)), indexing="ij"
    )
    b, ch, ys, xs = (t[keep].to(images.device) for t in (b, ch, ys, xs))
    r = roi_size // 2
    padded = F.pad(images.float(), (r, r, r, r), mode="reflect")
    dy, dx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    around = (dy != 0) | (dx != 0)
    dy, dx = dy[around].to(images.device), dx[around].to(images.device)
    values = padded[b[:, None], ch[:, None], ys[:, None] + r + dy, xs[:, None] + r + dx]
    masked = images.clone()
    masked[b, ch, ys, xs] = values.median(dim=1).values.to(images.dtype)
    mask = torch.zeros_like(images, dtype=torch.float32)
    mask[b, ch, ys, xs] = 1.0
    return masked, mask


def strategy_class(name: str) -> type[TrainingMode]:
    """The strategy class of the mode called ``name`` (its catalogue entry's ``strategy``).

    Raises
    ------
    ConfigError
        For an unknown mode; the message lists the known ones.
    """
    cls = load_reference(mode_spec(name).strategy)
    if not (isinstance(cls, type) and issubclass(cls, TrainingMode)):
        raise ConfigError(f"the strategy of mode {name!r} is not a TrainingMode: {cls!r}")
    return cls


#: The strategy class of every mode of the catalogue, by name.
MODES: dict[str, type[TrainingMode]] = {name: strategy_class(name) for name in CATALOGUE}


def get_mode(name: str, **settings: Any) -> TrainingMode:
    """The training mode called ``name`` with ``settings``; the message lists the known ones."""
    return strategy_class(name)(**settings)


def mode_for(config: TrainConfig) -> TrainingMode:
    """The training mode a `TrainConfig` describes, with its settings."""
    return strategy_class(config.mode).from_config(config)


def data_mode(split: Any) -> str | None:
    """The mode a loaded training set was prepared for, as its ``info`` records (or None).

    Sets of ``debcr prepare`` before training modes existed record none and are supervised.
    """
    info = SetInfo.from_split(split)
    return None if info is None else info.mode


def check_data_mode(mode: TrainingMode, split: Any, what: str) -> None:
    """Refuse a set prepared for another mode, in one sentence saying what to do."""
    prepared = data_mode(split)
    if prepared is not None and prepared != mode.name:
        raise DataError(
            f"the {what} was prepared for {prepared} training but the configuration's mode is "
            f"{mode.name}; set mode: {prepared}, or give {mode.spec.data_description}"
        )


def normalization_of(split: Any) -> dict[str, Any]:
    """The input normalisation a loaded training set records (``debcr prepare``'s ``info``).

    Sets without a record (plain arrays) are taken to use the published models' default.
    """
    info = SetInfo.from_split(split)
    if info is None:
        return dict(NORMALIZATION)
    norm = info.normalization
    if norm.get("method") != "percentile":
        return dict(NORMALIZATION)
    return {"method": "percentile", "pmin": float(norm["pmin"]), "pmax": float(norm["pmax"])}
