"""Whole-image restoration: any size, stacks, units, files, memory, dask, errors."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import peak_signal_noise_ratio

from conftest import fmd_frame, fmd_gt
from debcr import inference
from debcr.data import load, write
from debcr.errors import DataError, DebcrError
from debcr.inference import engine as engine_module
from debcr.inference.options import PredictOptions
from debcr.inference.tiles import plan_tiles
from debcr.model import predict
from debcr.nn import MRBCR


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return fmd_frame(19, 0)


@pytest.fixture(scope="module")
def restored(denoiser, frame) -> np.ndarray:
    return predict(denoiser, frame, progress=False)


def test_patch_stack_matches_the_original_predict(denoiser, fixture_npz) -> None:
    """With the original's settings (no normalisation, no halo) the result is its output."""
    patches = fixture_npz["x0"][..., 0]
    out = predict(
        denoiser,
        patches,
        normalize=False,
        units="normalized",
        halo=0,
        precision="float32",
        progress=False,
    )
    assert out.shape == patches.shape and out.dtype == np.float32
    assert np.abs(out - fixture_npz["api_predict"]).max() <= 1e-5


@pytest.mark.slow
def test_restoration_improves_real_noisy_data(restored, frame) -> None:
    gt = fmd_gt(19).astype(np.float32)
    noisy_psnr = peak_signal_noise_ratio(gt, frame.astype(np.float32), data_range=255)
    ours = peak_signal_noise_ratio(gt, restored, data_range=255)
    assert ours > noisy_psnr + 2.5, (noisy_psnr, ours)


@pytest.mark.slow
def test_output_is_in_the_input_units(restored, frame) -> None:
    assert restored.shape == frame.shape and restored.dtype == np.float32
    # calibrated against the input: its background (dark level of 8×8 block means) is held,
    # so the mean may drop a little where the fit alone lifted the background
    from debcr.data.intensity import block_means, dark_level

    span = float(np.subtract(*np.percentile(frame, [99.9, 0.1])))
    held = dark_level(block_means(restored)) - dark_level(block_means(frame.astype(np.float64)))
    assert abs(held) <= 0.004 * span + 1e-3
    assert abs(restored.mean() - frame.mean()) < 0.1 * frame.mean()
    assert abs(np.median(restored) - np.median(frame)) < 2.0


@pytest.mark.slow
def test_units_options(denoiser, frame) -> None:
    norm = predict(denoiser, frame, units="normalized", progress=False)
    perc = predict(denoiser, frame, units="percentile", progress=False)
    lo, hi = np.percentile(frame, [0.1, 99.9])
    np.testing.assert_allclose(perc, norm * (hi - lo) + lo, rtol=1e-5, atol=1e-3)
    assert -0.2 < norm.min() and norm.max() < 1.5
    with pytest.raises(DataError, match="units must be one of"):
        predict(denoiser, frame, units="photons", progress=False)


@pytest.mark.slow
def test_tiled_equals_whole_image(denoiser, frame) -> None:
    exact = {"units": "normalized", "precision": "float32", "progress": False}
    whole = predict(denoiser, frame, tile_size=1024, **exact)
    tiled = predict(denoiser, frame, tile_size=256, batch_size=2, **exact)
    assert np.abs(whole - tiled).max() < 1e-4


@pytest.mark.parametrize(
    "shape", [(7, 5), (1, 1), (3, 130), pytest.param((513, 1027), marks=pytest.mark.slow)]
)
def test_any_size_keeps_its_shape(denoiser, frame, shape) -> None:
    image = np.tile(frame, (2, 3))[: shape[0], : shape[1]]
    out = predict(denoiser, image, progress=False)
    assert out.shape == shape and np.isfinite(out).all()
    if min(shape) > 64:  # real content: restored, not garbage (correlates with the input)
        assert np.corrcoef(out.ravel(), image.ravel())[0, 1] > 0.8


def test_tile_plan_covers_every_pixel_once() -> None:
    for shape, tile in [((513, 1027), 128), ((7, 5), 512), ((1000, 260), 256)]:
        plan = plan_tiles(shape, tile, 16)
        cover = np.zeros(shape, int)
        for y, x, ye, xe in plan.tiles():
            assert y % 4 == 0 and x % 4 == 0
            assert ye - y <= plan.core[0] and xe - x <= plan.core[1]
            cover[y:ye, x:xe] += 1
        assert (cover == 1).all()


@settings(max_examples=300, deadline=None)
@given(height=st.integers(1, 5000), width=st.integers(1, 5000), tile=st.integers(4, 2048))
def test_tile_plans_have_equal_cores_and_no_extra_tiles(height, width, tile) -> None:
    plan = plan_tiles((height, width), tile, 0)
    limit = -(-tile // 4) * 4
    for axis, length in enumerate((height, width)):
        starts = plan.starts(axis)
        # As many tiles as cores of the tile size need; all cores equal, none above it.
        assert len(starts) == -(-length // limit)
        assert plan.core[axis] <= limit and plan.core[axis] % 4 == 0
        # Computed beyond the image or twice: under one size multiple (4) per tile.
        assert plan.core[axis] * len(starts) - length < 4 * len(starts)
        assert all(s % 4 == 0 for s in starts) and starts[0] == 0
        assert starts[-1] + plan.core[axis] >= length  # the last core reaches the end
        ends = [*starts[1:], length]
        assert all(end - start <= plan.core[axis] for start, end in zip(starts, ends))
        assert all(end > start for start, end in zip(starts, ends))


@pytest.mark.slow
def test_stack_is_restored_slice_by_slice(denoiser, frame) -> None:
    stack = np.stack([frame[:128, :128], frame[200:328, 100:228], frame[-128:, -128:]])
    stack = stack.astype(np.float32) / 255
    together = predict(denoiser, stack, normalize=False, units="normalized", progress=False)
    for z in range(3):
        alone = predict(denoiser, stack[z], normalize=False, units="normalized", progress=False)
        assert np.abs(together[z] - alone).max() < 1e-5
    # time series with singleton axes (T, 1, Y, X) keep their shape
    series = predict(denoiser, stack[:, None], progress=False)
    assert series.shape == (3, 1, 128, 128)


@pytest.mark.slow
def test_reduced_precision_is_close(denoiser, frame, restored) -> None:
    gt = fmd_gt(19).astype(np.float32)
    bf16 = predict(denoiser, frame, precision="bfloat16", progress=False)
    drop = peak_signal_noise_ratio(gt, restored, data_range=255) - peak_signal_noise_ratio(
        gt, bf16, data_range=255
    )
    assert abs(drop) < 0.2


@pytest.mark.slow
def test_file_in_file_out(denoiser, frame, restored, tmp_path: Path) -> None:
    src = tmp_path / "raw.tif"
    tifffile.imwrite(src, frame)
    before = src.read_bytes()
    for name in ("out.tif", "out.npy", "out.zarr"):
        path = predict(denoiser, src, output=tmp_path / name, progress=False)
        assert path == tmp_path / name
        np.testing.assert_allclose(np.asarray(load(path)), restored, atol=1e-3)
    assert src.read_bytes() == before
    with pytest.raises(FileExistsError, match="overwrite"):
        predict(denoiser, src, output=tmp_path / "out.tif", progress=False)
    with pytest.raises(DataError, match="refusing to overwrite the input"):
        predict(denoiser, src, output=src, overwrite=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.npy",
        "out.tif",
        "out.zarr",
        "raw.tif",
    ]


def test_compressed_2d_tiff_path_equals_memory(denoiser, frame, tmp_path: Path) -> None:
    # A compressed TIFF is opened lazily as a zarr array, which has no [None] (a bug once).
    src = tmp_path / "raw.tif"
    crop = frame[:96, :128]
    tifffile.imwrite(src, crop, compression="zlib")
    from_file = predict(denoiser, src, progress=False)
    in_memory = predict(denoiser, crop, progress=False)
    assert from_file.shape == crop.shape
    np.testing.assert_array_equal(from_file, in_memory)


@pytest.mark.slow
def test_memmap_npz_and_tensor_inputs(denoiser, frame, restored, tmp_path: Path) -> None:
    np.save(tmp_path / "raw.npy", frame)
    mm = np.load(tmp_path / "raw.npy", mmap_mode="r")
    np.testing.assert_allclose(predict(denoiser, mm, progress=False), restored, atol=1e-3)
    write(tmp_path / "pairs.npz", {"low": frame, "gt": fmd_gt(19)})
    np.testing.assert_allclose(
        predict(denoiser, tmp_path / "pairs.npz", progress=False), restored, atol=1e-3
    )
    tensor = torch.from_numpy(frame.astype(np.float32))
    np.testing.assert_allclose(predict(denoiser, tensor, progress=False), restored, atol=1e-3)


@pytest.mark.slow
def test_model_can_be_named(frame, restored) -> None:
    np.testing.assert_allclose(predict("2D_denoising", frame, progress=False), restored, atol=1e-3)


def test_progress_bar(denoiser, frame, capsys) -> None:
    predict(denoiser, frame[:64, :64], progress=True)
    assert "restoring" in capsys.readouterr().err


class _SmallGPU(MRBCR):
    """An m-rBCR that runs out of memory above a number of input pixels (like a small GPU)."""

    limit = 100_000
    calls: list[tuple[int, ...]]

    def restore(self, x):
        self.calls.append(tuple(x.shape))
        if x.numel() > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().restore(x)


@pytest.mark.slow
def test_out_of_memory_retries_smaller(denoiser, frame, caplog) -> None:
    small = _SmallGPU()
    small.load_state_dict(denoiser.state_dict())
    small.metadata = dict(denoiser.metadata)
    small.calls = []
    out = predict(small, frame, batch_size=4, tile_size=256, progress=False)
    assert out.shape == frame.shape and np.isfinite(out).all()
    assert "Out of memory" in caplog.text and "batch_size=2" in caplog.text
    assert max(np.prod(c) for c in small.calls[-3:]) <= small.limit


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.full((32, 32), np.nan), "non-finite"),
        (np.zeros((2, 3, 16, 16)), "2-D images .* and 3-D stacks"),
        (np.zeros((16, 16), complex), "dtype complex"),
        (np.zeros((0, 16)), "empty"),
    ],
)
def test_bad_images_get_clear_errors(denoiser, image, message) -> None:
    with pytest.raises(DataError, match=message):
        predict(denoiser, image, progress=False)


def test_bad_settings_get_clear_errors(denoiser, frame, tmp_path: Path) -> None:
    with pytest.raises(DebcrError, match="unknown precision 'int8'; use one of 'auto'"):
        predict(denoiser, frame, precision="int8", progress=False)
    with pytest.raises(DataError, match="tile_size must be at least"):
        predict(denoiser, frame, tile_size=2, progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(DebcrError, match="no CUDA GPU"):
            predict(denoiser, frame, device="cuda", progress=False)
    with pytest.raises(DebcrError, match="unknown device 'tpu'"):
        predict(denoiser, frame, device="tpu", progress=False)
    with pytest.raises(FileNotFoundError, match=r"missing\.tif"):
        predict(denoiser, tmp_path / "missing.tif", progress=False)


def test_constant_image_stays_constant(denoiser) -> None:
    out = predict(denoiser, np.full((40, 40), 7, np.uint16), progress=False)
    assert out.shape == (40, 40) and np.isfinite(out).all()
    assert np.allclose(out, 7, atol=0.5)


def test_predict_defaults_to_the_percentiles_the_model_was_trained_with(denoiser) -> None:
    """A model trained (or packaged) with other percentiles is normalised with those."""
    import copy

    image = fmd_frame(19, 2)[:128, :128]
    model = copy.deepcopy(denoiser)
    model.metadata["normalization"] = {"method": "percentile", "pmin": 2.0, "pmax": 98.0}
    default = predict(model, image, units="normalized", progress=False)
    explicit = predict(model, image, units="normalized", pmin=2.0, pmax=98.0, progress=False)
    published = predict(model, image, units="normalized", pmin=0.1, pmax=99.9, progress=False)
    np.testing.assert_array_equal(default, explicit)
    assert np.abs(default - published).max() > 0.01
    # The engine, called as an API, follows the same rule as the facade.
    engine = inference.predict(model, image, PredictOptions(units="normalized", progress=False))
    np.testing.assert_array_equal(engine, default)
    with pytest.raises(DataError, match=r"\(pmin, pmax\)=\(99\.0, 98\.0\) is invalid"):
        predict(model, image, pmin=99.0, progress=False)


def test_the_facade_takes_the_predict_options_with_their_defaults() -> None:
    """One option table: the facade's keywords are PredictOptions' fields, same defaults."""
    params = inspect.signature(predict).parameters
    keywords = {n: p.default for n, p in params.items() if n not in ("model", "image")}
    assert keywords == {f.name: f.default for f in dataclasses.fields(PredictOptions)}


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            {"units": "photons"},
            "units must be one of 'auto', 'calibrated', 'affine', 'percentile', 'normalized'",
        ),
        ({"backend": "tpu"}, r"backend must be one of 'auto', 'torch', 'openvino', got 'tpu'"),
        ({"precision": "int8"}, "unknown precision 'int8'; use one of 'auto'"),
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"tile_size": 2}, "tile_size must be at least 4 pixels, got 2"),
        ({"halo": 6}, "halo must be a non-negative multiple of 4, got 6"),
        ({"halo": -4}, "halo must be a non-negative multiple of 4, got -4"),
        ({"pmin": 50, "pmax": 10}, "pmin must be below pmax"),
    ],
)
def test_options_are_checked_before_any_runner_is_built(
    denoiser, monkeypatch, option, message
) -> None:
    def no_runner(*args: object) -> None:
        raise AssertionError("a runner was built for invalid options")

    monkeypatch.setattr(engine_module, "make_runner", no_runner)
    with pytest.raises(DebcrError, match=message):
        PredictOptions(**option)
    with pytest.raises(DebcrError, match=message):
        predict(denoiser, np.zeros((16, 16), np.float32), progress=False, **option)


@pytest.mark.slow
def test_a_model_file_without_halos_is_measured_once(tmp_path: Path) -> None:
    """A model file restored from its header (`StoredModel`) that stores no halo: the halo is
    measured on the loaded network, equals the network's own, and is kept for the next run."""
    from debcr.model import init, save
    from debcr.modelfile import StoredModel, load_model
    from debcr.nn.receptive import effective_halo

    path = save(init(seed=1), tmp_path / "untrained.safetensors")
    stored = StoredModel.read(path)
    assert stored is not None and "halo" not in stored.metadata
    image = np.random.default_rng(0).random((96, 96), dtype=np.float32)
    first = predict(stored, image, backend="torch", precision="float32", progress=False)
    assert stored.metadata["halo"] == effective_halo(load_model(path))
    second = predict(path, image, backend="torch", precision="float32", progress=False)
    np.testing.assert_allclose(first, second, atol=1e-6)


@pytest.mark.slow
def test_no_model_restores_with_a_new_untrained_one() -> None:
    """``predict(None, …)``, as ``init(None)``: a new model (the facade accepts what init does)."""
    image = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    out = predict(None, image, backend="torch", progress=False)
    assert out.shape == image.shape and np.isfinite(out).all()
