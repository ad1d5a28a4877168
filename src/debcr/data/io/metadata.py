"""Image metadata (`ImageMetadata`), length units, and the axes stored when writing."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from debcr.data.io.stack import _SUPPORTED_NDIM_TEXT, _squeeze_plan
from debcr.errors import DataError

log = logging.getLogger(__name__)

# Canonical unit names follow OME-NGFF (UDUNITS-2); ImageJ and OME-TIFF use short forms.
_UNIT_ALIASES = {
    "um": "micrometer",
    "µm": "micrometer",  # micro sign U+00B5
    "μm": "micrometer",  # greek mu U+03BC
    "\\u00b5m": "micrometer",  # as ImageJ escapes it in descriptions
    "micron": "micrometer",
    "microns": "micrometer",
    "micrometre": "micrometer",
    "nm": "nanometer",
    "nanometre": "nanometer",
    "mm": "millimeter",
    "millimetre": "millimeter",
    "cm": "centimeter",
    "centimetre": "centimeter",
    "m": "meter",
    "metre": "meter",
}


# Time units: OME-NGFF (UDUNITS-2) names; ImageJ and OME-TIFF use short forms.
_TIME_ALIASES = {
    "s": "second",
    "sec": "second",
    "secs": "second",
    "seconds": "second",
    "ms": "millisecond",
    "msec": "millisecond",
    "milliseconds": "millisecond",
    "us": "microsecond",
    "µs": "microsecond",
    "μs": "microsecond",
    "microseconds": "microsecond",
    "ns": "nanosecond",
    "nanoseconds": "nanosecond",
    "min": "minute",
    "mins": "minute",
    "minutes": "minute",
    "h": "hour",
    "hr": "hour",
    "hours": "hour",
}


def _canonical_time_unit(unit: Any) -> str | None:
    """Return the OME-NGFF name of a time unit (``'s'`` -> ``'second'``), None if empty."""
    if not isinstance(unit, str) or not unit.strip():
        return None
    text = unit.strip()
    return _TIME_ALIASES.get(text.lower(), _TIME_ALIASES.get(text, text))


def _canonical_unit(unit: Any) -> str | None:
    """Return the OME-NGFF name of a length unit, or None for 'pixel'/empty/unknown types."""
    if not isinstance(unit, str) or not unit.strip() or unit.strip().lower() in {"pixel", "pixels"}:
        return None
    text = unit.strip()
    return _UNIT_ALIASES.get(text.lower(), _UNIT_ALIASES.get(text, text))


@dataclass(frozen=True)
class ImageMetadata:
    """Minimal image metadata carried from input to output files.

    Attributes
    ----------
    axes
        One letter per array axis, e.g. ``'ZYX'``, ``'TYX'``, ``'YX'`` (tifffile/ImageJ letters:
        T time, Z depth, C channel, Y, X, S colour sample; ``'Q'``/``'I'`` mean unknown), or None.
    scale
        Physical size of one pixel along each axis, in the order of ``axes`` (1.0 where unknown),
        or None when the file carries no calibration.
    unit
        Length unit of the spatial entries of ``scale`` (OME-NGFF names, e.g. ``'micrometer'``).
        The ``T`` entry of ``scale`` is the time between frames (`time_interval`).
    time_unit
        Unit of the ``T`` entry of ``scale`` (OME-NGFF names, e.g. ``'second'``), or None.
    channel_names
        One name per entry of the ``C`` axis (e.g. ``('DAPI', 'GFP')``), or None.
    extra
        Small JSON-serialisable values (e.g. normalisation statistics) stored alongside the data
        where the format allows (ImageJ properties, shaped-TIFF JSON, Zarr attributes).
    uncalibrated
        Letters of the axes whose ``scale`` entry is a placeholder (1.0) rather than a size
        the file gave, e.g. ``'Z'`` for a stack calibrated only in Y and X; writers store no
        size for them (no OME ``PhysicalSizeZ``, no ImageJ ``spacing``). Empty: every entry of
        ``scale`` is known.
    """

    axes: str | None = None
    scale: tuple[float, ...] | None = None
    unit: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    time_unit: str | None = None
    channel_names: tuple[str, ...] | None = None
    uncalibrated: str = ""

    def __post_init__(self) -> None:
        # Normalise here so that every constructor path (readers, from_dict) yields equal objects.
        if self.axes is not None:
            if not isinstance(self.axes, str) or not self.axes.isalpha():
                raise DataError(
                    f"metadata axes {self.axes!r} must be a string of axis letters such as 'ZYX'"
                )
            object.__setattr__(self, "axes", self.axes.upper())
        if self.scale is not None:
            scale = tuple(float(s) for s in self.scale)
            if self.axes is not None and len(scale) != len(self.axes):
                raise DataError(
                    f"metadata scale {scale} has {len(scale)} entries but axes {self.axes!r} has "
                    f"{len(self.axes)}; give one pixel size per axis"
                )
            object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "unit", _canonical_unit(self.unit))
        object.__setattr__(self, "time_unit", _canonical_time_unit(self.time_unit))
        if self.channel_names is not None:
            names = self.channel_names
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise DataError(
                    f"metadata channel_names {names!r} must be a sequence of strings, one per "
                    "channel"
                )
            object.__setattr__(self, "channel_names", tuple(names) or None)
        object.__setattr__(self, "extra", dict(self.extra))
        object.__setattr__(self, "uncalibrated", self._placeholders(self.uncalibrated))

    def _placeholders(self, letters: Any) -> str:
        """``letters`` as upper-case axes of this metadata's scale, each once, in axes order."""
        if letters in ("", None):
            return ""
        if not isinstance(letters, str) or not letters.isalpha():
            raise DataError(
                f"metadata uncalibrated {letters!r} must be a string of axis letters such as 'Z'"
            )
        if self.scale is None:
            return ""
        wanted = set(letters.upper())
        return "".join(a for a in self.axes or "" if a in wanted)

    @property
    def time_interval(self) -> float | None:
        """Time between frames (the ``T`` entry of ``scale``, in `time_unit`), or None."""
        if self.axes is None or self.scale is None or "T" not in self.axes:
            return None
        return self.scale[self.axes.index("T")]

    def squeezed(self, shape: Sequence[int]) -> ImageMetadata:
        """Metadata for ``as_image_stack(array)`` of an array with this ``shape``.

        Drops the entries of the length-1 axes that `as_image_stack` removes; axes or
        scale that do not match ``shape`` are dropped (set to None).
        """
        shape = tuple(int(n) for n in shape)
        keep = _squeeze_plan(shape, self.axes, "metadata")
        axes = self.axes if self.axes is not None and len(self.axes) == len(shape) else None
        scale = self.scale if self.scale is not None and len(self.scale) == len(shape) else None
        kept = None if axes is None else "".join(axes[i] for i in keep)
        return replace(
            self,
            axes=kept,
            scale=None if scale is None else tuple(scale[i] for i in keep),
            channel_names=self.channel_names if kept is None or "C" in kept else None,
            time_unit=self.time_unit if kept is None or "T" in kept else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dictionary (inverse of `from_dict`)."""
        return {
            "axes": self.axes,
            "scale": None if self.scale is None else list(self.scale),
            "unit": self.unit,
            "time_unit": self.time_unit,
            "channel_names": None if self.channel_names is None else list(self.channel_names),
            "extra": dict(self.extra),
            "uncalibrated": self.uncalibrated,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ImageMetadata:
        """Build from `to_dict` output; missing keys default to None/empty."""
        return cls(
            axes=values.get("axes"),
            scale=values.get("scale"),
            unit=values.get("unit"),
            extra=values.get("extra") or {},
            time_unit=values.get("time_unit"),
            channel_names=values.get("channel_names"),
            uncalibrated=values.get("uncalibrated") or "",
        )


def _default_axes(ndim: int) -> str:
    """Axes assumed for an array without metadata (single-channel convention of debcr)."""
    defaults = {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TCZYX"}
    if ndim not in defaults:
        raise DataError(f"cannot name the axes of a {ndim}-D array; {_SUPPORTED_NDIM_TEXT}")
    return defaults[ndim]


def _axes_for_write(
    ndim: int, metadata: ImageMetadata | None, allowed: str | None = None
) -> str | None:
    """Axes to store for an ``ndim``-D array.

    The metadata's axes if they fit the array (and, if given, the ``allowed`` letter order of
    the format); else 'YX'/'ZYX' for 2-D/3-D data; else, only for formats that must name every
    axis (``allowed`` given, e.g. OME), a TCZYX-style default; otherwise None, so that no axis
    meaning is invented (a made-up 'C' would later be refused as a channel axis).
    """
    axes = metadata.axes if metadata is not None else None
    if axes is not None and len(axes) == ndim and len(set(axes)) == ndim:
        if allowed is None or _in_order(axes, allowed):
            return axes
        if set(axes) <= set(allowed) and axes.endswith("YX"):
            # Every axis has a name the format knows, only the order is unusual (ZCYX in
            # OME-Zarr): the true names beat defaults that would mislabel the data.
            log.info("axes %r are not in the conventional order %r of this format", axes, allowed)
            return axes
        log.info("axes %r cannot be stored in this format; using defaults", axes)
    if ndim in (2, 3) or allowed is not None:
        return _default_axes(ndim)
    return None


def _in_order(axes: str | None, order: str) -> bool:
    """True if every letter of ``axes`` occurs in ``order`` and in the same relative order."""
    if axes is None:
        return False
    positions = [order.find(a) for a in axes]
    return all(p >= 0 for p in positions) and positions == sorted(positions)


def _fit_metadata(
    metadata: ImageMetadata | None, ndim: int, allowed: str | None = None
) -> ImageMetadata:
    """Metadata with axes storable for an ``ndim``-D array; a scale that does not fit is dropped.

    When axes are replaced by defaults the scale is kept by position (same number of axes).
    """
    meta = metadata or ImageMetadata()
    scale = meta.scale if meta.scale is not None and len(meta.scale) == ndim else None
    axes = _axes_for_write(ndim, meta, allowed)
    placeholders = meta.uncalibrated
    if axes is not None and meta.axes is not None and len(meta.axes) == len(axes):
        placeholders = "".join(new for old, new in zip(meta.axes, axes) if old in placeholders)
    return replace(
        meta,
        axes=axes,
        scale=scale,
        uncalibrated=placeholders,
        channel_names=meta.channel_names if axes is not None and "C" in axes else None,
        time_unit=meta.time_unit if axes is not None and "T" in axes else None,
    )


def _sizes(meta: ImageMetadata) -> dict[str, float]:
    """Known (positive, not placeholder) pixel sizes by axis letter."""
    if meta.axes is None or meta.scale is None:
        return {}
    pairs = zip(meta.axes, meta.scale, strict=True)
    return {a: s for a, s in pairs if s > 0 and a not in meta.uncalibrated}
