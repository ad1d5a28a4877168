"""The options of predict, as one checked object: `PredictOptions`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from debcr.backends import check_backend
from debcr.data.normalize import NormStats, check_percentiles, percentiles_of
from debcr.defaults import PMAX, PMIN, SIZE_MULTIPLE, UNITS
from debcr.errors import DataError
from debcr.files import PathLike
from debcr.runtime import resolve_precision

if TYPE_CHECKING:
    import torch

#: ``progress`` of `debcr.model.predict`: a tqdm bar (True), none (False), or a
#: callback ``(tiles_done, tiles_total)``; an exception raised by the callback cancels the run.
Progress = bool | Callable[[int, int], object]


@dataclass(frozen=True)
class PredictOptions:
    """How to restore: the options of `debcr.model.predict`, carried as one object.

    The facade builds it from its keyword arguments; `predict`,
    `predict_array` and `predict_dask` take it
    as it is. See `debcr.model.predict` for what each field means. The values are
    checked when the object is made, before any image is read or any runner is built.

    Raises
    ------
    DataError
        For an unknown ``backend`` or ``units``, a ``batch_size`` below 1, a ``tile_size``
        below 4, a ``halo`` that is not a multiple of 4 (0 or more), or invalid percentiles.
    DebcrError
        For an unknown ``precision``.
    """

    batch_size: int | None = None
    tile_size: int | None = None
    halo: int | None = None
    normalize: bool | NormStats = True
    #: Percentiles of ``normalize=True``; None: those the model was trained with
    #: (`for_model`), else `PMIN` / `PMAX`.
    pmin: float | None = None
    pmax: float | None = None
    #: One of `UNITS`; ``"auto"`` is resolved for the model by
    #: `for_model` (`units_for_task`).
    units: str = "auto"
    device: str | torch.device | None = None
    #: ``"auto"``: bfloat16 where the device computes it natively, else float32.
    precision: str = "auto"
    #: ``"auto"``, ``"torch"`` or ``"openvino"`` (see `debcr.backends`).
    backend: str = "auto"
    output: PathLike | None = None
    overwrite: bool = False
    progress: Progress = True
    #: Axis letters of an array input (e.g. ``'TCZYX'``); files name their axes themselves.
    #: Without them, arrays must be 2-D images or 3-D stacks (after dropping length-1 axes).
    axes: str | None = None
    #: Channels to restore, by index or by name (default: all); the output keeps only these.
    #: Every channel is normalised with its own statistics, over all of its planes.
    channels: Sequence[int | str] | None = None
    #: Average the network output over the 8 rotations and flips of every tile.
    tta: bool = False
    #: Also return (or write beside ``output``) the per-pixel standard deviation over the 8
    #: transforms, in the result's units; implies ``tta``.
    uncertainty: bool = False

    def __post_init__(self) -> None:
        check_backend(self.backend)
        if self.precision not in (None, "auto"):
            # The one check of precision names (the device only matters for "auto").
            resolve_precision(self.precision, "cpu")
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise DataError(f"batch_size must be at least 1, got {int(self.batch_size)}")
        if self.tile_size is not None and int(self.tile_size) < SIZE_MULTIPLE:
            raise DataError(
                f"tile_size must be at least {SIZE_MULTIPLE} pixels, got {int(self.tile_size)}"
            )
        if self.halo is not None and (int(self.halo) < 0 or int(self.halo) % SIZE_MULTIPLE):
            raise DataError(
                f"halo must be a non-negative multiple of {SIZE_MULTIPLE}, got {int(self.halo)}"
            )
        if self.units not in UNITS:
            raise DataError(
                f"units must be one of {', '.join(map(repr, UNITS))}, got {self.units!r}"
            )
        if self.normalize is True and self.pmin is not None and self.pmax is not None:
            check_percentiles(self.pmin, self.pmax)

    def for_model(self, model: Any) -> PredictOptions:
        """These options completed for ``model``: ``units="auto"`` resolved by the model's task
        (`units_for_task`), and an unset ``pmin``/``pmax`` filled in.

        The percentiles are those the model was trained with (``model.metadata
        ["normalization"]``, e.g. from a training run or a BMZ package), else
        `PMIN` and `PMAX` (the published models').

        Raises
        ------
        DataError
            If the percentiles so completed are invalid (``normalize=True`` only).
        """
        metadata = getattr(model, "metadata", None) or {}
        units = self.units
        if units == "auto":
            units = units_for_task(str(metadata.get("task") or ""))
        trained = percentiles_of(metadata.get("normalization"))
        pmin, pmax = trained or (PMIN, PMAX)
        return replace(
            self,
            units=units,
            pmin=pmin if self.pmin is None else self.pmin,
            pmax=pmax if self.pmax is None else self.pmax,
        )


def units_for_task(task: str) -> str:
    """The units ``"auto"`` means for a model of ``task`` (its ``metadata["task"]``).

    Measured in ``benchmarks/results/calibration.md``: for denoising the monotone curve
    (``"calibrated"``) keeps the mean and scores highest; for resolution enhancement
    (``bright_SR``, ``confocal_SR`` and models fine-tuned from them) the curve fitted to a
    *blurred* input flattens the restored peaks and costs resolution (FRC 3.96 against 3.28 px
    for a trained model), so the straight-line fit (``"affine"``) is used there.
    """
    return "affine" if task.upper().endswith("_SR") else "calibrated"
