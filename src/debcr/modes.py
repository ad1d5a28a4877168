"""The catalogue of training modes: every fact about a mode, registered in one place.

A mode is one `ModeSpec`: its name (used by the configuration, the CLI, napari and the
model files), what its training sets hold, how the GUI and ``debcr prepare`` show it, its set
builders, the papers a model trained with it must cite and the tags of its BioImage Model Zoo
card. The torch side of a mode (how a batch is built and scored) is named by ``strategy`` and
lives in `debcr.training.modes`; this module stays free of torch (and imports its
builders only when they are called) so the configuration and the model card can read it.

A new mode is one entry here, a set builder pair in `debcr.data` and a strategy class
in `debcr.training.modes`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from debcr.errors import ConfigError

__all__ = ["DEFAULT_MODE", "MODES", "ModeSpec", "load_reference", "mode_spec"]


def load_reference(reference: str) -> Any:
    """The object a ``"package.module:name"`` reference names (its module is imported now).

    Raises
    ------
    ConfigError
        If the reference is not of that form.
    """
    module, sep, name = reference.partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"{reference!r} must name an object as 'package.module:name'")
    return getattr(importlib.import_module(module), name)


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
    layers_needed
        What napari asks the user to choose when no training data is chosen.
    data_description
        What the mode's training sets hold, for messages.
    arrays
        The arrays of a training set prepared for the mode.
    items
        What ``debcr prepare`` says a set holds ("patch pairs" ...).
    builder
        ``module:function`` of its set builder from the paths ``debcr prepare`` is given,
        called as ``builder(paths, name, out_dir, split=..., patch_size=..., overlap=...,
        seed=..., overwrite=..., **options)``; see `prepare`.
    layer_builder
        ``module:function`` of its set builder from napari layer data, called as
        ``layer_builder(data, what, patch_size=..., split=...)``; see `layer_sets`.
    strategy
        ``module:Class`` of its training strategy (torch), loaded by the training run.
    options
        The builder's own keyword arguments (``background_filter``, ``max_frames``).
    paired
        Whether it learns from (input, target) pairs: napari then asks for two layers.
    citations
        Papers of the method beyond m-rBCR's (dicts with ``text`` and ``doi`` or ``url``).
    tags
        Tags of its model card.
    """

    name: str
    label: str
    input_labels: tuple[str, str]
    layers_needed: str
    data_description: str
    arrays: tuple[str, ...]
    items: str
    builder: str
    layer_builder: str
    strategy: str
    options: tuple[str, ...] = ()
    paired: bool = False
    citations: tuple[dict[str, str], ...] = ()
    tags: tuple[str, ...] = ()

    def prepare(
        self,
        paths: Sequence[str | os.PathLike],
        name: str,
        out_dir: str | os.PathLike,
        **options: Any,
    ) -> Any:
        """Prepare the mode's training sets from input paths (``debcr prepare``).

        Parameters
        ----------
        paths
            The inputs, as the mode takes them (e.g. LOW and GT for supervised training).
        name, out_dir
            The dataset name and output folder (``<out_dir>/<name>_train.npz`` ...).
        **options
            ``split``, ``patch_size``, ``overlap``, ``seed``, ``overwrite`` and the mode's own
            `options`.

        Returns
        -------
        debcr.data.sets.PrepareResult
            What was written.
        """
        return load_reference(self.builder)(paths, name, out_dir, **options)

    def layer_sets(self, data: Any, what: str, *, patch_size: int, split: Any) -> Any:
        """The mode's sets of in-memory data (napari layers), by set (``{"train": ...}``).

        Parameters
        ----------
        data
            One layer's data, or ``(input, target)`` for a `paired` mode.
        what
            Which set it is for ("training", "validation"), for messages.
        patch_size
            The side to cut images into (a smaller image is cut to the largest that fits).
        split
            Fractions ``(train, val, test)`` of the patches.

        Returns
        -------
        dict
            The mode's `arrays` of every non-empty set.
        """
        return load_reference(self.layer_builder)(data, what, patch_size=patch_size, split=split)


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
            layers_needed="input and target layers",
            data_description="low/gt pairs (`debcr prepare LOW GT`)",
            arrays=("low", "gt"),
            items="patch pairs",
            builder="debcr.data.prepare:supervised_sets",
            layer_builder="debcr.data.prepare:supervised_layer_sets",
            strategy="debcr.training.modes:Supervised",
            options=("background_filter",),
            paired=True,
        ),
        ModeSpec(
            name="noise2noise",
            label="Noise2Noise: a stack of repeated noisy frames",
            input_labels=("training repeats (T, Y, X):", "validation repeats:"),
            layers_needed="layer of repeated frames",
            data_description="repeated noisy frames (`debcr prepare --mode noise2noise`)",
            arrays=("repeats",),
            items="patch locations, each in every frame",
            builder="debcr.data.selfsup:noise2noise_sets",
            layer_builder="debcr.data.selfsup:noise2noise_layer_sets",
            strategy="debcr.training.modes:Noise2Noise",
            options=("max_frames",),
            citations=(_N2N,),
            tags=("noise2noise", "self-supervised"),
        ),
        ModeSpec(
            name="noise2void",
            label="Noise2Void: noisy images only",
            input_labels=("training images:", "validation images:"),
            layers_needed="layer of noisy images",
            data_description="noisy images (`debcr prepare --mode noise2void`)",
            arrays=("low",),
            items="noisy patches",
            builder="debcr.data.selfsup:noise2void_sets",
            layer_builder="debcr.data.selfsup:noise2void_layer_sets",
            strategy="debcr.training.modes:Noise2Void",
            citations=(_N2V, _N2V2),
            tags=("noise2void", "n2v2", "self-supervised"),
        ),
    )
}

DEFAULT_MODE: str = next(iter(MODES))


def mode_spec(name: str) -> ModeSpec:
    """The mode called ``name``.

    Raises
    ------
    ConfigError
        For an unknown name; the message lists the known ones.
    """
    try:
        return MODES[name]
    except KeyError:
        raise ConfigError(
            f"unknown training mode {name!r}; choose one of {', '.join(map(repr, MODES))}"
        ) from None
