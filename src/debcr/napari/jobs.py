"""What the DeBCR widget runs, free of Qt and napari: testable on its own.

Every function here runs in a worker thread. Long jobs report through plain callables and
stop through a `threading.Event`, so the widget only wires them to signals and
buttons. torch and Lightning are imported inside the functions, never at module import
(napari imports the widget module when it lists plugins).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from debcr.errors import DataError, DebcrError
from debcr.weights import PRETRAINED

if TYPE_CHECKING:
    from debcr.config import TrainConfig

logger = logging.getLogger(__name__)

#: Layer metadata keys: the crop grid (so stitching needs no numbers typed by hand) and the
#: normalisation statistics (so results can return to the input's units).
GRID_KEY = "debcr_grid"
STATS_KEY = "debcr_normalization"

#: The four published models, in the order the model picker shows them.
BUILTIN_MODELS = tuple(PRETRAINED)

#: Side (px) of the blocks a dask-backed layer is restored in when the tile size is "auto"
#: (see `predict_data`).
LAZY_BLOCK = 1024

Report = Callable[[dict[str, Any]], object]


class Cancelled(Exception):
    """The user pressed Stop/Cancel (or closed the viewer) while a job was running."""


def describe_error(exc: BaseException) -> str:
    """A plain sentence for the log: what went wrong and, where we know it, what to do."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, Cancelled):
        return "Cancelled."
    if "out of memory" in text.lower():
        return (
            "Out of memory: choose a smaller tile size or batch size, or the CPU as device. "
            f"({text.splitlines()[0]})"
        )
    if isinstance(exc, DebcrError | ValueError | FileNotFoundError | FileExistsError):
        return text[:1].upper() + text[1:]
    return f"Unexpected error ({type(exc).__name__}): {text}. The terminal shows the details."


# -- Transform data ---------------------------------------------------------------------------


def normalize_data(data: Any, pmin: float, pmax: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Percentile-normalise the whole image/stack; the statistics go into the layer metadata.

    Intensities are not clipped, as in training and prediction (a clipped image could not
    be mapped back to the input's units).
    """
    from debcr.data import normalize
    from debcr.data.collect import image_array

    arr = image_array(data, "the input layer")
    out, stats = normalize(arr, pmin, pmax, clip=False, return_stats=True)
    return out, {STATS_KEY: stats.to_dict()}


def crop_data(
    data: Any, patch_size: int, overlap: tuple[float, float]
) -> tuple[np.ndarray, dict[str, Any]]:
    """Cut a 2-D image or a stack into overlapping patches covering all of it.

    Returns the patches ``(N, P, P)`` and the metadata that lets `stitch_data` put them
    back (the grid, the overlap and the image shape).
    """
    from debcr.data import crop
    from debcr.data.collect import image_array

    arr = image_array(data, "the input layer")
    if arr.ndim == 4:
        raise DataError(f"the input layer has shape {arr.shape}; crop a 2-D image or a 3-D stack")
    _, counts = crop(arr, patch_size, overlap, dry_run=True)
    patches = crop(arr, patch_size, overlap)
    grid = {
        "image_shape": [int(s) for s in arr.shape[-2:]],
        "slices": int(arr.shape[0]) if arr.ndim == 3 else 0,
        "patch_num": [int(c) for c in counts],
        "patch_size": int(patch_size),
        "overlap": [float(o) for o in overlap],
    }
    return patches, {GRID_KEY: grid}


def stitch_data(patches: Any, grid: Mapping[str, Any] | None, window: str) -> np.ndarray:
    """Blend patches from `crop_data` back into the image, with the remembered grid."""
    from debcr.data import stitch
    from debcr.data.collect import image_array

    if not grid:
        raise DataError(
            "this layer has no crop grid: stitch a layer made by Crop (or predicted from one)"
        )
    arr = image_array(patches, "the patch layer")
    per_slice = grid["patch_num"][0] * grid["patch_num"][1]
    if arr.ndim != 3 or arr.shape[0] % per_slice or arr.shape[1:] != (grid["patch_size"],) * 2:
        raise DataError(
            f"the patch layer has shape {arr.shape} but its grid expects a multiple of "
            f"{per_slice} patches of {grid['patch_size']}×{grid['patch_size']}"
        )
    return stitch(
        arr,
        patch_num=grid["patch_num"],
        overlap=grid["overlap"],
        image_shape=grid["image_shape"],
        window=window,
    )


# -- Use model --------------------------------------------------------------------------------


def open_model(spec: str) -> Any:
    """The model a picker entry names (see `debcr.sources.resolve`: a built-in name, a
    model file or a training run folder, whose best model is used)."""
    from debcr.model import init

    return init(spec)


def export_package(spec: str, path: str | os.PathLike, **fields: Any) -> Any:
    """Write the model a picker entry names as a BioImage Model Zoo package (``.zip``).

    Parameters
    ----------
    spec
        A picker entry (see `open_model`).
    path
        The ``.zip`` to write.
    **fields
        Keyword arguments of `debcr.model.export_bmz` (``name``, ``description``,
        ``authors``, ``license``, ``overwrite``). Empty ones are left out, so built-in
        models get their defaults; ``authors`` may be one string of comma-separated names.

    Returns
    -------
    debcr.interop.bmz.BMZExport
        What was written and how the Zoo's model test went.

    Raises
    ------
    debcr.errors.ExportError
        Missing name or authors for a model that is not built in, or a failed model test
        (nothing is written then).
    """
    from debcr.model import export_bmz

    authors = fields.get("authors")
    if isinstance(authors, str):
        fields["authors"] = [name.strip() for name in authors.split(",") if name.strip()]
    chosen = {key: value for key, value in fields.items() if value}
    return export_bmz(open_model(spec), path, **chosen)


def is_lazy(data: Any) -> bool:
    """Whether layer data is a dask array (e.g. a zarr-backed layer), read block by block."""
    return type(data).__module__.startswith("dask.")


def predict_data(
    model: Any,
    data: Any,
    *,
    tile_size: int | None,
    batch_size: int | None,
    device: str | None,
    report: Callable[[int, int], object],
    cancel: threading.Event,
    units: str = "auto",
    tta: bool = False,
    uncertainty: bool = False,
    precision: str = "auto",
    backend: str = "auto",
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Restore a layer's data (2-D, stack, time series, T×Z) in ``units``; cancellable. With
    ``uncertainty`` the pair (restored, spread over the 8 transforms).

    A dask array (`is_lazy`) goes through `debcr.model.predict`'s lazy path and is computed
    here block by block into the result, so the input is never read whole; ``report`` then
    counts blocks instead of tiles.
    """
    from debcr.model import predict

    arr = _layer_array(data)
    if is_lazy(arr):
        # Zarr chunks are often small; every block is restored with a halo around it, so
        # blocks of a tile (default `LAZY_BLOCK` px) a side waste less work on halos.
        side = tile_size or LAZY_BLOCK
        arr = arr.rechunk({arr.ndim - 2: side, arr.ndim - 1: side})

    def progress(done: int, total: int) -> None:
        if cancel.is_set():
            raise Cancelled
        report(done, total)

    # napari layers are often (T, Z, Y, X); every 2-D slice is restored on its own anyway, so
    # a 4-D layer is one long stack with one set of statistics.
    out = predict(
        model,
        arr.reshape(-1, *arr.shape[-2:]) if arr.ndim == 4 else arr,
        batch_size=batch_size,
        tile_size=tile_size,
        device=device,
        precision=precision,
        backend=backend,
        progress=False if is_lazy(arr) else progress,
        units=units,
        tta=tta,
        uncertainty=uncertainty,
    )
    if is_lazy(out):
        out = _compute_blocks(out, progress)
    if uncertainty:
        return out[0].reshape(arr.shape), out[1].reshape(arr.shape)
    return out.reshape(arr.shape)


def _layer_array(data: Any) -> Any:
    """Layer data checked to be a grey-level image or stack; dask arrays stay lazy."""
    from debcr.data.collect import image_array

    if not is_lazy(data):
        return image_array(data, "the input layer")
    # The checks of `image_array`, on the array's shape and type alone (nothing is read).
    if data.ndim < 2 or data.ndim > 4:
        raise DataError(
            f"the input layer has {data.ndim} dimension(s) {data.shape}; expected a 2-D image "
            "or a stack (Z/T, Y, X)"
        )
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise DataError(f"the input layer has data type {data.dtype}; expected a grey-level image")
    return data


def _compute_blocks(lazy: Any, progress: Callable[[int, int], None]) -> np.ndarray:
    """Compute a lazy restoration into memory one output block at a time.

    Each block reads only its part of the input and the halo around it; only the float32
    result is held whole. ``progress(done, total)`` counts blocks; an exception it raises
    (Cancel) stops before the next block.
    """
    out = np.empty(lazy.shape, dtype=np.float32)
    starts = [np.cumsum((0, *chunks)) for chunks in lazy.chunks]
    blocks = list(np.ndindex(*lazy.numblocks))
    progress(0, len(blocks))
    for done, index in enumerate(blocks, 1):
        where = tuple(slice(s[i], s[i + 1]) for s, i in zip(starts, index, strict=True))
        # Synchronous: the network already uses every core for one block.
        out[where] = lazy.blocks[index].compute(scheduler="synchronous")
        progress(done, len(blocks))
    return out


# -- Train model ------------------------------------------------------------------------------


def monitor_callback(
    report: Report, stop: threading.Event, preview: np.ndarray | None = None
) -> Any:
    """A Lightning callback that reports steps and validations and honours Stop."""
    import torch
    from lightning.pytorch.callbacks import Callback

    class _Monitor(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
            report(
                {
                    "kind": "step",
                    "step": int(trainer.global_step),
                    "total": int(trainer.max_steps),
                    "loss": float(loss),
                }
            )
            if stop.is_set():
                trainer.should_stop = True

        def on_validation_end(self, trainer, module) -> None:
            if trainer.sanity_checking:
                return
            metrics = trainer.callback_metrics
            event = {
                "kind": "validation",
                "step": int(trainer.global_step),
                "val_loss": float(metrics["val_loss"]),
                "val_psnr": float(metrics["val_psnr"]),
            }
            if preview is not None:
                with torch.no_grad():
                    x = torch.from_numpy(preview[None, None]).to(module.device)
                    net = module.model_to_save()  # the validated weights (their average)
                    event["preview"] = net.restore(x)[0, 0].float().cpu().numpy()
            report(event)

    return _Monitor()


def train_model(
    train: Any,
    val: Any,
    config: TrainConfig,
    init_model: str | None,
    *,
    report: Report,
    stop: threading.Event,
    resume: bool = False,
) -> tuple[Any, Path]:
    """Train and return (best model, run folder); Stop ends it cleanly at the next step.

    ``train``/``val`` are NPZ paths or layer data (see
    `debcr.training.inputs.training_sets`); they are read, normalised and checked here,
    in the worker, so large data never blocks the GUI.
    ``init_model``: None (a new model), a built-in name, a model file or a run folder;
    ``resume`` continues the run in ``config.weights_path``.
    """
    from debcr.model import train as train_fn
    from debcr.training.inputs import preview_input, training_sets

    train_set, val_set, note = training_sets(train, val, config)
    size = next(iter(train_set.values())).shape[-2:]
    val_size = next(iter(val_set.values())).shape[-2:]
    if size != val_size:
        raise DataError(
            f"training patches are {tuple(size)} px but validation patches {tuple(val_size)} "
            "px; crop both with the same patch size"
        )
    n_train, n_val = (len(next(iter(a.values()))) for a in (train_set, val_set))
    frames = f" in {train_set['repeats'].shape[1]} frames" if "repeats" in train_set else ""
    report(
        {
            "kind": "log",
            "text": f"Data: {n_train} training and {n_val} validation patches of "
            f"{size[0]}×{size[1]} px{frames} ({config.mode})" + (f"; {note}." if note else "."),
        }
    )
    model = train_fn(
        train_set,
        val_set,
        config,
        init_model=init_model or None,
        resume=resume,
        callbacks=[monitor_callback(report, stop, preview_input(val_set))],
    )
    return model, Path(config.weights_path)


def available_devices() -> list[str]:
    """The devices the device picker offers: ``auto``, ``cpu`` and the GPUs present."""
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        devices += ["cuda", *(f"cuda:{i}" for i in range(count))] if count > 1 else ["cuda"]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def inference_path(device: str, precision: str, backend: str) -> tuple[str, str | None]:
    """What a restoration with these picker choices runs on, and a hint where a faster path
    is missing (see `debcr.backends.describe_path`); ``"auto"`` lets debcr choose."""
    from debcr.backends import describe_path

    return describe_path(
        device=None if device == "auto" else device,
        precision=None if precision == "auto" else precision,
        backend=backend,
    )


def device_description() -> str:
    """The device predictions and training will use, e.g. ``CUDA: NVIDIA H100``."""
    from debcr.runtime import device_name, resolve_device

    return device_name(resolve_device())
