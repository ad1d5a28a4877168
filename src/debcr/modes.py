"""The catalogue of training modes: every fact about a mode, registered in one place.

A mode is one :class:`ModeSpec`: its name (used by the configuration, the CLI, napari and the
model files), what its training sets hold, how the GUI shows it, the papers a model trained
with it must cite and the tags of its BioImage Model Zoo card. The torch side of a mode (how
a batch is built and scored) is named by ``strategy`` and lives in
:mod:`debcr.training.modes`; this module stays free of torch so the configuration and the
model card can read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from debcr.errors import ConfigError

__all__ = ["DEFAULT_MODE", "MODES", "ModeSpec", "mode_spec"]


@dataclass(frozen=True)
class ModeSpec:
    """One training mode.

    Attributes
    ----------
    name
        The mode's name (``mode:`` of a configuration, ``--mode`` of ``debcr prepare``).
    label
        How the napari mode selector shows it.
    input_labels
        What napari's training and validation pickers ask for.
    data_description
        What the mode's training sets hold, for messages.
    arrays
        The arrays of a training set prepared for the mode.
    strategy
        ``module:Class`` of its training strategy (torch), loaded by the training run.
    citations
        Papers of the method beyond m-rBCR's (dicts with ``text`` and ``doi`` or ``url``).
    tags
        Tags of its model card.
    """

    name: str
    label: str
    input_labels: tuple[str, str]
    data_description: str
    arrays: tuple[str, ...]
    strategy: str
    citations: tuple[dict[str, str], ...] = ()
    tags: tuple[str, ...] = ()


_N2V = {
    "text": "Krull, A., Buchholz, T.-O., Jug, F. Noise2Void – Learning Denoising from Single "
    "Noisy Images. CVPR 2019.",
    "doi": "10.1109/CVPR.2019.00223",
}
_N2V2 = {
    "text": "Höck, E., Buchholz, T.-O., Brachmann, A., Jug, F., Freytag, A. N2V2 – Fixing "
    "Noise2Void Checkerboard Artifacts with Modified Sampling Strategies and a Tweaked Network "
    "Architecture. ECCV Workshops 2022.",
    "doi": "10.1007/978-3-031-25069-9_33",
}
_N2N = {
    "text": "Lehtinen, J., Munkberg, J., Hasselgren, J., Laine, S., Karras, T., Aittala, M., "
    "Aila, T. Noise2Noise: Learning Image Restoration without Clean Data. ICML 2018.",
    "url": "https://proceedings.mlr.press/v80/lehtinen18a.html",
}

#: Every training mode, by name; the first is the default.
MODES: dict[str, ModeSpec] = {
    spec.name: spec
    for spec in (
        ModeSpec(
            name="supervised",
            label="supervised: noisy input + clean target",
            input_labels=("training input:", "validation input:"),
            data_description="low/gt pairs (`debcr prepare LOW GT`)",
            arrays=("low", "gt"),
            strategy="debcr.training.modes:Supervised",
        ),
        ModeSpec(
            name="noise2noise",
            label="Noise2Noise: a stack of repeated noisy frames",
            input_labels=("training repeats (T, Y, X):", "validation repeats:"),
            data_description="repeated noisy frames (`debcr prepare --mode noise2noise`)",
            arrays=("repeats",),
            strategy="debcr.training.modes:Noise2Noise",
            citations=(_N2N,),
            tags=("noise2noise", "self-supervised"),
        ),
        ModeSpec(
            name="noise2void",
            label="Noise2Void: noisy images only",
            input_labels=("training images:", "validation images:"),
            data_description="noisy images (`debcr prepare --mode noise2void`)",
            arrays=("low",),
            strategy="debcr.training.modes:Noise2Void",
            citations=(_N2V, _N2V2),
            tags=("noise2void", "n2v2", "self-supervised"),
        ),
    )
}

DEFAULT_MODE: str = next(iter(MODES))


def mode_spec(name: str) -> ModeSpec:
    """The mode called ``name``; the message lists the known ones."""
    try:
        return MODES[name]
    except KeyError:
        raise ConfigError(
            f"unknown training mode {name!r}; choose one of {', '.join(map(repr, MODES))}"
        ) from None
