"""The engine: a runner fed with batches of tiles, slice by slice, with the intensity
calibration gathered on the way and an out-of-memory retry with smaller batches and tiles."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from debcr.backends import Runner, make_runner
from debcr.data.calibration import CurveMap, CurveSums
from debcr.data.intensity import CalibrationSums, IntensityMap
from debcr.data.io import open_output
from debcr.data.io.memory import available_memory, release_mapped
from debcr.data.normalize import NormStats
from debcr.defaults import BATCH_SIZE, PATCH_BATCH, PATCH_EDGE, TILE_SIZE, halo_key
from debcr.errors import DebcrError
from debcr.inference.options import PredictOptions, Progress
from debcr.inference.planes import as_stack, check_dtype, resolve_input
from debcr.inference.scale import SliceScale, plane_stats, slice_scale
from debcr.inference.tiles import check_halo, plan_tiles, read_window, round_up
from debcr.inference.tta import restore_tta, uncertainty_path
from debcr.modelfile import network_of
from debcr.runtime import (
    device_type,
    inference_device,
    release_memory,
    resolve_precision,
    tune_allocator,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("debcr.inference")

#: Smallest tile core the out-of-memory retry goes down to.
MIN_TILE = 64

#: Peak working memory of the PyTorch backend on the CPU per pixel of a tile in a batch, by
#: precision (bytes): one 672² tile took 0.91 GB in float32 and 0.44 GB in bfloat16, two
#: twice that (2-core Xeon, torch 2.13).
TORCH_CPU_BYTES_PER_PIXEL = {"float32": 2000, "bfloat16": 1000, "float16": 1000}

#: Output written between hand-backs of memory-mapped pages (`release_mapped`): a few
#: madvise calls per 8192² plane, and a bound on what mapped files add to resident memory.
RELEASE_BYTES = 64 << 20

#: What gathers a channel's calibration statistics, tile by tile.
Calibrator = CurveSums | CalibrationSums


def _calibrator(units: str) -> Calibrator:
    """The statistics ``units`` needs (the affine ones are cheap enough to gather always)."""
    return CurveSums() if units == "calibrated" else CalibrationSums()


def _mapping(units: str, calib: Calibrator) -> CurveMap | IntensityMap:
    return calib.result() if units in ("calibrated", "affine") else IntensityMap()


def _batched(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass
class _Engine:
    runner: Runner
    device: str | torch.device
    batch: int
    tile: int
    halo: int
    tta: bool = False

    def forward(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The network output of a batch (and the spread over the 8 transforms with TTA)."""
        if self.tta:
            mean, spread = restore_tta(self.runner.run, tiles, self.tta_tiles(tiles))
        else:
            mean, spread = self.runner.run(tiles), None
        if not np.isfinite(mean).all():
            # Never written as a result: a NaN image would pass for a restoration.
            advice = (
                ""
                if self.runner.backend == "torch"
                else "; or try backend='torch', precision='float32' (--backend torch "
                "--precision float32)"
            )
            raise DebcrError(
                "the network's output holds non-finite values (NaN or infinity) with the "
                f"{self.runner.backend} backend; nothing was written. Check the input and the "
                f"model's weights for non-finite or extreme values{advice}"
            )
        return mean, spread

    def tta_tiles(self, tiles: np.ndarray) -> int | None:
        """Most tiles per forward with TTA: all 8 transforms of the batch at once (None),
        except with PyTorch on the CPU, whose working memory grows with the batch: there as
        many as fit in half the available memory (at least the plain batch)."""
        if self.runner.backend != "torch" or device_type(self.device) != "cpu":
            return None
        free = available_memory()
        per_tile = (
            tiles.shape[1] * tiles.shape[2] * TORCH_CPU_BYTES_PER_PIXEL[self.runner.precision]
        )
        fits = free // 2 // per_tile if free is not None else 0
        return int(max(len(tiles), min(8 * len(tiles), fits)))

    def run_slice(
        self,
        image: Any,
        out: Any,
        z: int,
        scale: SliceScale,
        calib: Calibrator,
        bar: Any,
        spread_out: Any = None,
    ) -> None:
        """Write the network output (normalised units) of slice ``z`` into ``out[z]`` (and the
        spread over the 8 transforms into ``spread_out[z]`` when given).

        Reading (and normalising) the next batch of tiles and writing the previous one run in
        two helper threads while the network computes, so disk-to-disk restoration runs at
        the network's speed; at most three batches are held at once. The pages of
        memory-mapped files read or written are handed back every `RELEASE_BYTES` written,
        so memory does not grow with the image.
        """
        plan = plan_tiles(image.shape, self.tile, self.halo)
        h = self.halo
        groups = list(_batched(plan.tiles(), self.batch))
        release_every = max(1, RELEASE_BYTES // (4 * self.batch * self.tile * self.tile))

        def read(group: list) -> np.ndarray:
            return np.stack(
                [
                    scale.forward(read_window(image, y - h, x - h, plan.input_size))
                    for y, x, _, _ in group
                ]
            )

        def write(group: list, windows: np.ndarray, restored: tuple, release: bool) -> None:
            means, spreads = restored
            for i, ((y, x, ye, xe), window) in enumerate(zip(group, windows)):
                core = means[i, h : h + ye - y, h : h + xe - x]
                calib.add(window[h : h + ye - y, h : h + xe - x], core)
                out[z, y:ye, x:xe] = core
                if spread_out is not None and spreads is not None:
                    spread_out[z, y:ye, x:xe] = spreads[i, h : h + ye - y, h : h + xe - x]
            if release:
                release_mapped(out, spread_out, image)
            bar.update(len(group))

        with (
            ThreadPoolExecutor(1, "debcr-read") as reader,
            ThreadPoolExecutor(1, "debcr-write") as writer,
        ):
            reading = reader.submit(read, groups[0])
            writing = None
            for i, group in enumerate(groups):
                windows = reading.result()
                if i + 1 < len(groups):
                    reading = reader.submit(read, groups[i + 1])
                try:
                    restored = self.forward(windows)
                finally:
                    if writing is not None:
                        writing.result()
                writing = writer.submit(
                    write, group, windows, restored, (i + 1) % release_every == 0
                )
            writing.result()

    def total_tiles(self, shape: tuple[int, ...]) -> int:
        return shape[0] * len(plan_tiles(shape[1:], self.tile, self.halo).tiles())


def _is_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")  # no torch imported: no torch error to catch
    oom = torch is not None and isinstance(exc, torch.OutOfMemoryError)
    return oom or "out of memory" in str(exc).lower()


def default_halo(model: Any, precision: str) -> int:
    """The halo of ``model`` at ``precision``: the one its metadata stores (model files store
    them), else measured on the network (`debcr.nn.receptive.halo_for`)."""
    stored = (getattr(model, "metadata", None) or {}).get(halo_key(precision))
    if stored:  # checked on reading (`debcr.modelfile.check_metadata`), as halo_for reads it
        return int(stored)
    from debcr.nn.receptive import halo_for

    network = network_of(model)
    halo = halo_for(network, precision)
    if network is not model:  # a StoredModel: keep the measured halos for its next restoration
        model.metadata.update(network.metadata)
    return halo


def batch_size_for(image: Any, batch_size: int | None, device: str | torch.device) -> int:
    """Tiles per forward pass: as asked, else stacks of small patches (the paper's workflow)
    `PATCH_BATCH` at a time, else the device's default."""
    if batch_size is not None:
        return int(batch_size)
    shape = getattr(image, "shape", None)
    if shape is not None and len(shape) == 3 and max(shape[1:]) <= PATCH_EDGE:
        return PATCH_BATCH
    return BATCH_SIZE["cpu" if device_type(device) == "cpu" else "accelerator"]


def predict_array(
    model: Any, image: Any, options: PredictOptions | None = None
) -> np.ndarray | Path:
    """Restore an image or stack held in memory, in a memmap/zarr array, or in a file.

    ``model`` is an `MRBCR`, a model file not yet loaded (`debcr.modelfile.StoredModel`), or any
    network with a ``restore`` method (the CARE baseline). See `debcr.model.predict` for the
    options.
    """
    opts = (options or PredictOptions()).for_model(model)
    torch = sys.modules.get("torch")  # a tensor can only come from an imported torch
    if torch is not None and isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    source, inputs, metadata = resolve_input(image, opts.axes)
    check_dtype(source)
    layout = as_stack(source, metadata, opts.channels)
    # Statistics first: a damaged input is named as such before any option is judged on it.
    stats = plane_stats(layout, opts.normalize, opts.pmin, opts.pmax)
    if opts.halo is not None:
        check_halo(int(opts.halo), layout.stack.shape)
    engine = _engine_for(model, image, opts)
    output = opts.output
    spread_output = uncertainty_path(output) if output is not None and opts.uncertainty else None

    def target(path: Path | None) -> Any:
        if path is None:
            return contextlib.nullcontext(np.empty(layout.out_shape, np.float32))
        return open_output(
            path,
            layout.out_shape,
            np.float32,
            overwrite=opts.overwrite,
            inputs=inputs,
            metadata=layout.metadata,
        )

    try:
        with contextlib.ExitStack() as files:
            out = files.enter_context(target(output))
            spread = files.enter_context(target(spread_output)) if opts.uncertainty else None
            _run(
                engine,
                layout.stack,
                layout.out_view(out),
                stats,
                opts,
                layout.channel_of_planes(),
                layout.out_view(spread) if spread is not None else None,
            )
    finally:
        # The tuned allocator keeps what the forwards freed; hand it back between calls.
        release_memory()
    result = Path(output) if output is not None else out
    if not opts.uncertainty:
        return result
    return result, (spread_output if spread_output is not None else spread)


def _engine_for(model: Any, image: Any, opts: PredictOptions) -> _Engine:
    """The runner and tiling for ``opts``: device, precision, halo and tile size resolved."""
    dev = inference_device(opts.device)
    precision = resolve_precision(opts.precision, dev)
    tune_allocator()
    runner = make_runner(model, opts.backend, dev, precision)
    kind = runner.backend if device_type(dev) == "cpu" else "accelerator"
    if kind == "openvino" and precision == "float32":
        kind = "openvino-float32"
    engine = _Engine(
        runner=runner,
        device=dev,
        batch=batch_size_for(image, opts.batch_size, dev),
        tile=int(opts.tile_size if opts.tile_size is not None else TILE_SIZE[kind]),
        halo=int(opts.halo if opts.halo is not None else default_halo(model, precision)),
        tta=opts.tta or opts.uncertainty,
    )
    logger.debug(
        "restoring with %s (%s) on %s: tile %d, halo %d, batch %d, tta %s",
        runner.backend,
        precision,
        dev,
        engine.tile,
        engine.halo,
        engine.batch,
        engine.tta,
    )
    return engine


class _CallbackBar:
    """The part of tqdm's interface the engine uses, reporting to ``callback(done, total)``."""

    def __init__(self, callback: Callable[[int, int], object], total: int) -> None:
        self.callback, self.total, self.done = callback, total, 0

    def __enter__(self) -> _CallbackBar:
        self.callback(0, self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        self.done += n
        self.callback(self.done, self.total)


def _progress_bar(progress: Progress, total: int) -> Any:
    if callable(progress):
        return _CallbackBar(progress, total)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="restoring", unit="tile", disable=not progress)


def _run(
    engine: _Engine,
    stack: Any,
    out: Any,
    stats: NormStats | None,
    opts: PredictOptions,
    channel_of_plane: np.ndarray,
    spread: Any = None,
) -> None:
    # Channels differ in brightness: each gets its own intensity calibration.
    calibs = {int(c): _calibrator(opts.units) for c in np.unique(channel_of_plane)}
    total = engine.total_tiles(tuple(stack.shape))
    with _progress_bar(opts.progress, total) as bar:
        for z in range(stack.shape[0]):
            calib = calibs[int(channel_of_plane[z])]
            while True:
                try:
                    engine.run_slice(stack[z], out, z, slice_scale(stats, z), calib, bar, spread)
                    break
                except RuntimeError as exc:
                    if not _is_oom(exc):
                        raise
                    if not _shrink(engine):
                        raise DebcrError(
                            f"out of memory on {engine.device} even with batch_size=1 and "
                            f"tile_size={engine.tile}; free memory on the device or use "
                            "device='cpu'"
                        ) from exc
                    if device_type(engine.device) == "cuda":
                        import torch

                        torch.cuda.empty_cache()
    mappings = {c: _mapping(opts.units, calib) for c, calib in calibs.items()}
    planes = [mappings[int(c)] for c in channel_of_plane]
    _finish(out, stats, planes, to_input_units=opts.units != "normalized", spread=spread)


def _finish(
    out: Any,
    stats: NormStats | None,
    mappings: list[CurveMap | IntensityMap],
    to_input_units: bool,
    spread: Any = None,
) -> None:
    """Second pass, in row blocks: calibrate (each plane with its channel's map) and map back
    to the input's units; the spread is scaled by the map's gain into the same units."""
    rows = max(1, (1 << 22) // max(1, out.shape[-1]))
    for z in range(out.shape[0]):
        scale = slice_scale(stats, z)
        width = max(scale.width, 0.0) if to_input_units else 1.0
        for r in range(0, out.shape[1], rows):
            block = mappings[z].apply(np.asarray(out[z, r : r + rows], dtype=np.float32))
            out[z, r : r + rows] = scale.inverse(block) if to_input_units else block
            if spread is not None:
                factor = np.float32(abs(mappings[z].gain) * width)
                spread[z, r : r + rows] = np.asarray(spread[z, r : r + rows]) * factor
            release_mapped(out, spread)


def _shrink(engine: _Engine) -> bool:
    """Halve the batch, then the tile, after an out-of-memory error; False if at the minimum."""
    if engine.batch > 1:
        engine.batch //= 2
    elif engine.tile > MIN_TILE:
        engine.tile = round_up(engine.tile // 2)
    else:
        return False
    logger.warning(
        "Out of memory on %s: retrying with batch_size=%d, tile_size=%d",
        engine.device,
        engine.batch,
        engine.tile,
    )
    return True
