"""The paper's model API: `init`, `predict` (and `save`, `export`).

Examples
--------
>>> import debcr
>>> model = debcr.model.init("2D_denoising")          # a built-in pretrained model
>>> restored = debcr.model.predict(model, image)       # any size, in the input's units
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from debcr import inference
from debcr.data.normalize import NormStats
from debcr.inference.options import PredictOptions
from debcr.runtime import resolve_device
from debcr.sources import load as load_source
from debcr.sources import restorable

if TYPE_CHECKING:
    import torch

    from debcr.interop.bmz import BMZExport
    from debcr.interop.portable import ExportCheck
    from debcr.nn import MRBCR

__all__ = ["MRBCR", "export", "export_bmz", "init", "predict", "save", "train"]


def init(
    source: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = "cpu",
    seed: int | None = None,
) -> MRBCR:
    """Create an m-rBCR model: a built-in pretrained one, one from a file, or a new one.

    Parameters
    ----------
    source
        ``None`` for a new, untrained model (Glorot-uniform weights, as the original);
        the name of a built-in model (``"2D_denoising"``, ``"3D_denoising"``,
        ``"bright_SR"``, ``"confocal_SR"``); or the path of a debcr model file
        (``.safetensors``), of a training run folder (its best model) or of an original
        DeBCR TensorFlow checkpoint (prefix ``…/ckpt-best``, converted on the fly); see
        `debcr.sources.resolve`.
    device
        Where to put the model (``"cpu"``, ``"cuda"``, ``"mps"`` or ``"auto"``).
    seed
        Seed for the initial weights of a new model.

    Returns
    -------
    MRBCR
        In eval mode; ``model.metadata`` tells its task, source and normalisation.
    """
    return load_source(source, resolve_device(device), seed=seed)


def save(
    model: MRBCR,
    path: str | os.PathLike,
    *,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save ``model`` as a debcr model file (safetensors + metadata, written atomically)."""
    from debcr.modelfile import save_model

    return save_model(model, path, metadata=metadata, overwrite=overwrite)


def export_bmz(
    model: MRBCR | str | os.PathLike, path: str | os.PathLike, **package: Any
) -> BMZExport:
    """Write a BioImage Model Zoo package (``.zip``, spec 0.5), validated by ``bioimageio.core``.

    The package holds PyTorch state-dict, TorchScript and ONNX weights, so Fiji/deepImageJ,
    ilastik, QuPath and the Zoo can run it; it is written only if the Zoo's model test passes
    on all three. Needs the export extra (``pip install 'debcr-torch[export]'``). See
    `debcr.interop.bmz.export_bmz` for the parameters (``name``, ``description``,
    ``authors``, ``cite``, ``license``, ``tags``, ``overwrite``); built-in models have default
    ``name``, ``description``, ``authors`` (the original's) and licence (CC-BY-4.0), your own
    models need ``name`` and ``authors``. The same as `export` with ``format="bmz"``.

    Examples
    --------
    >>> debcr.model.export_bmz("2D_denoising", "denoise2d.zip")  # doctest: +SKIP
    >>> debcr.model.export_bmz(model, "mine.zip", name="Nuclei denoiser",
    ...                        authors=["Ada Lovelace"], license="MIT")  # doctest: +SKIP
    """
    return export(model, path, format="bmz", **package)


def export(
    model: MRBCR | str | os.PathLike,
    path: str | os.PathLike,
    *,
    format: str | None = None,
    overwrite: bool = False,
    **package: Any,
) -> BMZExport | ExportCheck:
    """Export ``model`` as a BMZ package, a standalone ONNX file or a TorchScript file.

    Parameters
    ----------
    model
        A model from `init`, or anything `init` accepts.
    path
        Output file; its suffix picks the format unless ``format`` is given:
        ``.zip`` → BioImage Model Zoo package, ``.onnx`` → ONNX, ``.pt``/``.pth``/``.ts`` →
        TorchScript.
    format
        ``"bmz"``, ``"onnx"`` or ``"torchscript"``.
    overwrite
        Replace an existing file.
    **package
        For ``"bmz"``: ``name``, ``description``, ``authors``… (see `export_bmz`).

    Returns
    -------
    BMZExport | ExportCheck
        What was written; ONNX and TorchScript exports report their largest difference to the
        PyTorch model on a real image (at most 1e-4, else nothing is written).
    """
    from debcr.files import check_targets
    from debcr.interop import export as write
    from debcr.interop import export_format

    # Checked before the model is loaded: a wrong suffix fails at once. As predict does, an
    # input is never replaced, even with overwrite=True; only a model file counts as one (a
    # package written into a training run's folder is fine).
    fmt = export_format(path, format, package)
    if isinstance(model, str | os.PathLike) and Path(model).is_file():
        check_targets([Path(path)], [Path(model)], overwrite)
    return write(_as_model(model), path, format=fmt, overwrite=overwrite, **package)


def _as_model(model: MRBCR | str | os.PathLike | None) -> MRBCR:
    return init(model) if model is None or isinstance(model, str | os.PathLike) else model


def __getattr__(name: str) -> Any:
    # MRBCR is torch's: imported when asked for, so that restoring with OpenVINO (`predict`
    # given a model's name or file) starts without torch.
    if name == "MRBCR":
        from debcr.nn import MRBCR

        return MRBCR
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def predict(
    model: MRBCR | str | os.PathLike,
    image: Any,
    batch_size: int | None = None,
    *,
    tile_size: int | None = None,
    halo: int | None = None,
    normalize: bool | NormStats = True,
    pmin: float | None = None,
    pmax: float | None = None,
    units: str = "auto",
    device: str | torch.device | None = None,
    precision: str = "auto",
    backend: str = "auto",
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool | Callable[[int, int], object] = True,
    axes: str | None = None,
    channels: Sequence[int | str] | None = None,
    tta: bool = False,
    uncertainty: bool = False,
) -> Any:
    """Restore an image, a stack, a time series or a multi-channel image with ``model``.

    Each 2-D slice is restored on its own (as in the paper); slices larger than
    ``tile_size`` are tiled with a halo taken from the network's receptive field,
    so any size works and no seams appear.

    Reproducing the original DeBCR: its ``predict`` takes patches that are already
    normalised, feeds them as they are and returns the network output of each patch
    alone. The defaults here differ from that on purpose (percentile normalisation,
    calibrated units, a halo of context), by up to ~0.6 on the original's normalised
    128² patches. ``predict(model, patches, normalize=False, units="normalized", halo=0,
    precision="float32")``
    gives the original's result (within ~1e-6); on the command line:
    ``debcr predict patches.npy -o out.npy --no-normalize --units normalized --halo 0
    --precision float32``.

    Parameters
    ----------
    model
        A model from `init`, or anything `init` accepts.
    image
        ``(H, W)`` image, ``(N/Z/T, H, W)`` stack or stack of patches (length-1
        axes are squeezed): a numpy array or memmap, a zarr array, a torch
        tensor, a path to a TIFF/PNG/NPY/NPZ/Zarr file, or a ``dask.array``
        (the result is then a lazy dask array).
    batch_size
        Tiles per forward pass (default: 1 on CPU, 4 on a GPU; patch stacks are
        batched up to this many).
    tile_size
        Core size of the tiles in pixels (default: 1024 on a GPU and with OpenVINO in
        bfloat16, 768 with OpenVINO in float32, whose activations take twice the memory, 512
        with PyTorch on a CPU, where eager convolutions slow down on bigger tiles). Smaller
        tiles need less memory.
    halo
        Context added around each tile (multiple of 4); default: the network's effective
        receptive field at the precision used: in float32 the radius holding all but 1e-4
        of the input's influence (72–88 px for the published models), so tiles join exactly;
        in bfloat16 a smaller one whose seams stay below bfloat16's own rounding error (see
        `debcr.nn.receptive.HALO_TOLERANCES`).
    normalize
        ``True``: percentile-normalise with statistics of the *whole* input
        (``pmin``, ``pmax``; never per tile). ``False``: feed the values as they
        are (data normalised beforehand, as in the original). A
        `NormStats` uses those statistics.
    pmin, pmax
        Percentiles for ``normalize=True``; default: those the model was trained with
        (``model.metadata["normalization"]``, e.g. from a training run or a BMZ package),
        else 0.1 and 99.9 (the published models').
    units
        Intensities of the result. ``"auto"`` (default): ``"calibrated"`` for denoising models,
        ``"affine"`` for resolution-enhancement models (``bright_SR``, ``confocal_SR`` and
        models fine-tuned from them; ``model.metadata["task"]`` says which), as measured in
        ``benchmarks/results/calibration.md``. ``"calibrated"``: in the input's units through a
        monotone curve, the mean of the input over the pixels restored alike (unbiased for
        zero-mean noise), which keeps the input's mean, holds its dark level (median of the
        darkest 5 % of 8×8 block means) and returns nothing below its minimum (see
        `debcr.data.calibration`). ``"affine"``: one least-squares line fitted to the
        input, its offset moved to hold the dark level, the same floor (the default before
        this release). ``"percentile"``: only the percentile normalisation is inverted.
        ``"normalized"``: the network output as is.
    device
        ``"cpu"``, ``"cuda"``, ``"mps"``; default: the best available.
    precision
        ``"auto"`` (default): ``"bfloat16"`` where the device computes it natively (CPUs
        with AVX512-BF16 or AMX, e.g. AMD Zen 4 or Intel Sapphire Rapids; CUDA GPUs with
        bf16), else ``"float32"``; ``debcr info`` says which. ``"float32"`` is the exact
        mode (tiles join exactly, output within ~1e-5 of the published network's);
        ``"bfloat16"`` and ``"float16"`` are faster, within ~0.01 dB PSNR of it.
    backend
        What runs the network: ``"auto"`` (default; OpenVINO on a CPU when it is installed,
        as the base install does wherever OpenVINO has packages, else PyTorch), ``"torch"``
        or ``"openvino"``. `debcr.backends.describe_path` says which.
        Both run the inference-only form of the network (`debcr.nn.fast`).
    output
        If given, the result is written there (``.tif``, ``.npy``, ``.zarr``…) as
        tiles finish, so images larger than memory work; the path is returned.
    overwrite
        Allow replacing an existing ``output`` (inputs are never replaced).
    progress
        Show a progress bar (``True``), nothing (``False``), or call
        ``progress(tiles_done, tiles_total)`` as tiles finish. An exception raised by the
        callback stops the run and propagates (this is how a GUI cancels); an ``output``
        file is then not created.

    axes
        Axis letters of an array input with more than three axes or a channel axis, e.g.
        ``"TCZYX"`` (T time, Z depth, C channel, Y, X). Files name their axes themselves
        (ImageJ/OME-TIFF, OME-Zarr). Every Y-X plane is restored; each channel is normalised
        and calibrated on its own; the result keeps the input's axes order.
    channels
        Restore only these channels (indices, or names from the file's metadata); the result
        then holds only them. Default: all.
    tta
        Test-time augmentation: every tile goes through the network in its 8 rotations and
        flips, the outputs are turned back and averaged (in the network's units, before the
        calibration). Costs 8 passes; +0.25 dB on FMD (``benchmarks/results/calibration.md``).
    uncertainty
        Also give the per-pixel standard deviation over the 8 transforms, in the result's
        units (implies ``tta``): where it is high the model is unsure and may invent
        structure. The result is then the pair ``(restored, uncertainty)``; with ``output``
        the map is written beside it as ``NAME.uncertainty.SUFFIX`` (same axes and metadata)
        and the pair of paths is returned.

    Returns
    -------
    numpy.ndarray | pathlib.Path | dask.array.Array
        float32 with the input's shape (fewer channels with ``channels``). Written outputs keep
        the input's pixel sizes, units, axes, frame interval and channel names where the
        format can hold them (TIFF, OME-TIFF, Zarr).
    """
    options = PredictOptions(
        batch_size=batch_size,
        tile_size=tile_size,
        halo=halo,
        normalize=normalize,
        pmin=pmin,
        pmax=pmax,
        units=units,
        device=device,
        precision=precision,
        backend=backend,
        output=output,
        overwrite=overwrite,
        progress=progress,
        axes=axes,
        channels=channels,
        tta=tta,
        uncertainty=uncertainty,
    )
    if model is None:
        model = init(None, device=device or "auto")
    elif isinstance(model, str | os.PathLike):
        model = restorable(model, device or "auto")
    return inference.predict(model, image, options)


def train(
    train_data: Any,
    val_data: Any,
    config: Any = None,
    init_model: MRBCR | str | os.PathLike | None = None,
    *,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
) -> MRBCR:
    """Train m-rBCR and return the best model (lowest validation loss).

    What the network learns from is ``config["mode"]``:

    - ``"supervised"`` (default): arrays ``low`` (input) and ``gt`` (ground truth), each
      ``(N, P, P)``, as written by `debcr.data.prepare` / ``debcr prepare LOW GT``.
    - ``"noise2noise"``: ``repeats`` ``(N, F, P, P)``, ``F >= 2`` independent noisy frames of
      every patch location (`debcr.data.prepare_noise2noise`); pairs of different
      frames are drawn anew every epoch.
    - ``"noise2void"``: ``low`` ``(N, P, P)`` noisy patches only
      (`debcr.data.prepare_noise2void`); masked pixels (N2V2 median replacement) are
      the only ones scored.

    See `debcr.training.modes` for the details and the papers.

    Parameters
    ----------
    train_data, val_data
        Dicts or NPZ files (paths or loaded) with the arrays of the mode. A file prepared
        for another mode is refused. The whole validation set is evaluated every
        ``val_freq`` steps. Arrays of raw intensities (an integer type, or values far
        outside the normalised range) are normalised with their 0.1/99.9 percentiles over
        all patches, with a warning, and the model file records it
        (``metadata["training_data"][split]["normalised_here"]``); `debcr.data.prepare`
        normalises each image on its own, which suits images of different brightness better.
    config
        A `debcr.config.TrainConfig`, a dict of its fields (the original's
        keys work), or ``None`` for the defaults (the ``debcr`` recipe).
    init_model
        Start from this model: a built-in name (fine-tuning, e.g. ``"2D_denoising"``),
        a model file, or an `MRBCR`; ``None`` uses ``config.init_model``
        (a new model if that is unset too).
    resume
        Continue the run in ``config.weights_path`` from its last checkpoint
        (optimiser state, step, early-stopping state and RNG states).
    callbacks
        Extra Lightning callbacks (progress reporting, a stop button: setting
        ``trainer.should_stop`` ends the run cleanly with best and last models saved).

    Returns
    -------
    MRBCR
        The best model; ``best.safetensors``, ``last.safetensors``, ``metrics.csv``
        and ``curves.png`` are in ``config.weights_path``. The model files record the
        mode and where the data came from (``metadata["mode"]``,
        ``metadata["training_data"]``).
    """
    from debcr.config import TrainConfig
    from debcr.training import fit

    return fit(
        train_data,
        val_data,
        config or TrainConfig(),
        init_model,
        resume=resume,
        callbacks=callbacks,
    )
