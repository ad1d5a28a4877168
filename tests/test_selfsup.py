"""Training without ground truth on real data: Noise2Noise pairs, N2V2 masks, sets, runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import default_collate

from conftest import DATA, FMD, fmd_frame
from debcr.config import TrainConfig
from debcr.data import crop, normalize, prepare_noise2noise, prepare_noise2void
from debcr.data.selfsup import repeat_patches
from debcr.errors import ConfigError, DataError
from debcr.model import train
from debcr.modelfile import read_header
from debcr.training.data import RepeatsDataset
from debcr.training.modes import Noise2Noise, Noise2Void, mode_for, n2v_mask

CELLS3D = DATA / "cells3d_nuclei" / "nuclei.tif"


def _fmd_fields(*fields: int) -> dict[str, Path]:
    return {str(f): FMD / "raw" / str(f) for f in fields}


def _frames(field: int, n: int = 8) -> np.ndarray:
    return np.stack([fmd_frame(field, i) for i in range(n)])


def _real_batch(n: int = 2, side: int = 64) -> torch.Tensor:
    patches = crop(normalize(fmd_frame(19, 0), clip=False), side, 0.0)[:n]
    return torch.from_numpy(np.ascontiguousarray(patches))[:, None]


# -- Noise2Void masks ------------------------------------------------------------------------


def test_n2v2_mask_replaces_each_pixel_by_its_neighbourhood_median_without_itself() -> None:
    images = _real_batch()
    masked, mask = n2v_mask(images, 0.2, 11, torch.Generator().manual_seed(3))
    where = mask.bool()
    per_patch = mask.sum(dim=(1, 2, 3))
    # one pixel per 22 × 22 cell of a 64² patch (0.2 %): 4 to 9 per patch, at random places
    assert ((per_patch >= 4) & (per_patch <= 9)).all()
    assert torch.equal(masked[~where], images[~where])
    padded = np.pad(images.numpy()[:, 0], ((0, 0), (5, 5), (5, 5)), mode="reflect")
    for b, _, y, x in where.nonzero().tolist():
        window = padded[b, y : y + 11, x : x + 11].ravel()
        others = np.delete(window, 60)  # the centre of the 11 × 11 window
        expected = np.sort(others)[(others.size - 1) // 2]  # lower median of 120 values
        assert masked[b, 0, y, x].item() == pytest.approx(float(expected), abs=1e-7)
    assert not torch.equal(masked[where], images[where])
    again, mask2 = n2v_mask(images, 0.2, 11, torch.Generator().manual_seed(3))
    assert torch.equal(again, masked) and torch.equal(mask2, mask)


def test_n2v_masks_move_between_batches_and_follow_the_percentage() -> None:
    images = _real_batch(4)
    _, first = n2v_mask(images, 1.0, 5)
    _, second = n2v_mask(images, 1.0, 5)
    assert not torch.equal(first, second)
    # 1 % of 64² = 41 pixels; the grid step round(sqrt(100)) = 10 gives 7 × 7 cells, 36-49 inside
    assert 36 <= first.sum(dim=(1, 2, 3)).min() <= first.sum(dim=(1, 2, 3)).max() <= 49


def test_noise2void_loss_sees_only_the_masked_pixels() -> None:
    mode = Noise2Void()
    images = _real_batch()
    batch = mode.batch((images,), training=False, batch_index=0)
    assert torch.equal(batch.target, images)
    output = batch.target.clone().requires_grad_(True)
    far_off = output + 10 * (1 - batch.mask)  # wrong everywhere except at the masked pixels
    zeros = [torch.zeros(1)] * 2
    assert mode.loss([far_off, *zeros], batch).item() == 0.0
    loss = mode.loss([output + 0.1 * batch.mask, *zeros], batch)
    assert loss.item() == pytest.approx(0.01, rel=1e-4)
    loss.backward()
    assert torch.equal(output.grad != 0, batch.mask.bool())


def test_validation_masks_are_the_same_at_every_validation() -> None:
    mode = Noise2Void()
    images = _real_batch()
    first = mode.batch((images,), training=False, batch_index=5)
    second = mode.batch((images,), training=False, batch_index=5)
    assert torch.equal(first.mask, second.mask) and torch.equal(first.inputs, second.inputs)


# -- Noise2Noise sets and pairs --------------------------------------------------------------


def test_noise2noise_set_normalises_each_field_over_all_its_frames(tmp_path: Path) -> None:
    result = prepare_noise2noise(
        _fmd_fields(1, 2, 20),
        "fmd",
        tmp_path,
        patch_size=64,
        split={"train": [1, 2], "val": [20]},
    )
    with np.load(result.paths["train"]) as npz:
        repeats, groups = npz["repeats"], npz["groups"]
        info = json.loads(str(npz["info"]))
    assert repeats.shape == (2 * 64, 8, 64, 64) and repeats.dtype == np.float32
    assert list(np.unique(groups)) == ["1", "2"]
    assert info["mode"] == "noise2noise" and info["frames"] == 8
    assert info["normalization"]["scope"] == "all frames of each field together"
    frames = _frames(2).astype(np.float64)
    lo, hi = np.percentile(frames, [0.1, 99.9])
    k = 64 + 9  # field 2, location row 1, column 1
    for f in (0, 5):
        expected = (frames[f, 64:128, 64:128] - lo) / (hi - lo)
        np.testing.assert_allclose(repeats[k, f], expected, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fmd_train.npz", "fmd_val.npz"]
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_frames_that_fade_keep_their_difference_after_normalisation() -> None:
    # Bleaching: the same field dims by 5 % per frame; per-frame percentiles would undo that,
    # and the two frames of a pair would then differ by more than their noise.
    frames = _frames(19, 4).astype(np.float32) * np.array([1.0, 0.95, 0.9, 0.85])[:, None, None]
    stack = prepare_noise2noise({"19": frames}, patch_size=512, split=(1, 0, 0)).arrays
    repeats = stack["train"]["repeats"][0]
    lo, hi = np.percentile(frames, [0.1, 99.9])
    np.testing.assert_allclose(repeats, (frames - lo) / (hi - lo), atol=1e-5)
    means = repeats.reshape(4, -1).mean(axis=1)
    assert means[3] < 0.85 * means[0]
    each = normalize(frames, clip=False, per_slice=True).reshape(4, -1).mean(axis=1)
    assert abs(each[3] - each[0]) < 0.03 * each[0]  # what per-frame scaling would have done


def test_noise2noise_pairs_are_two_different_frames_of_one_location() -> None:
    repeats = prepare_noise2noise(_fmd_fields(1), patch_size=128, split=(1, 0, 0)).arrays
    stack = repeats["train"]["repeats"]
    data = RepeatsDataset(stack, random_pairs=True)
    assert len(data) == 16
    torch.manual_seed(0)
    seen = set()
    mode = Noise2Noise()
    for _ in range(50):
        index = torch.randint(len(data), (4,)).tolist()
        batch = mode.batch(default_collate([data[i] for i in index]), training=True)
        for row, i in enumerate(index):
            a, b = batch.inputs[row, 0].numpy(), batch.target[row, 0].numpy()
            # which frames of this location they are (every frame has its own noise)
            first = [f for f in range(8) if np.array_equal(a, stack[i, f])]
            second = [f for f in range(8) if np.array_equal(b, stack[i, f])]
            assert len(first) == len(second) == 1 and first != second
            seen.add((first[0], second[0]))
    assert len(seen) > 40  # pairs are redrawn: most of the 56 ordered pairs appear
    fixed = RepeatsDataset(stack, random_pairs=False)
    assert len(fixed) == 16 * 8
    assert [fixed.frame_pair(i) for i in (0, 7, 8)] == [(0, 0, 1), (0, 7, 0), (1, 0, 1)]


@settings(max_examples=25, deadline=None)
@given(
    frames=st.integers(2, 4),
    height=st.integers(8, 40),
    width=st.integers(8, 40),
    side=st.sampled_from([8, 16]),
)
def test_repeat_patches_keep_every_frame_at_the_same_place(frames, height, width, side) -> None:
    rng = np.random.default_rng(height * 41 + width)
    stack = rng.gamma(2.0, 10.0, (frames, height, width)).astype(np.float32)
    out = repeat_patches(stack, side, 0.0)
    scaled = normalize(stack, clip=False)
    expected = crop(scaled, side, 0.0)
    n = expected.shape[0] // frames
    assert out.shape == (n, frames, side, side)
    for f in range(frames):
        np.testing.assert_array_equal(out[:, f], expected[f * n : (f + 1) * n])


def test_a_field_with_one_frame_is_refused() -> None:
    with pytest.raises(DataError, match=r"field '1' has 1 frame; Noise2Noise needs at least 2"):
        prepare_noise2noise({"1": fmd_frame(1, 0)[None]}, patch_size=64, split=(1, 0, 0))


# -- Noise2Void sets -------------------------------------------------------------------------


def test_a_single_volume_is_split_into_contiguous_blocks(caplog) -> None:
    import tifffile

    result = prepare_noise2void(CELLS3D, patch_size=64, split=(0.8, 0.1, 0.1))
    sets = result.arrays
    assert [sets[s]["low"].shape[0] for s in ("train", "val", "test")] == [768, 96, 96]
    assert json.loads(str(sets["val"]["info"]))["mode"] == "noise2void"
    volume = tifffile.imread(CELLS3D)
    # 16 patches per 256² slice: validation starts at patch 768 = slice 48, row 0, column 0
    plane = normalize(volume[48], clip=False)
    np.testing.assert_allclose(sets["val"]["low"][0], plane[:64, :64], atol=1e-6)
    assert "split in order into train/val/test blocks" in caplog.text


def test_noise2void_images_from_a_folder_are_one_group_each(tmp_path: Path) -> None:
    result = prepare_noise2void(FMD / "raw" / "1", patch_size=128, split=(0.75, 0.25, 0.0))
    groups = {s: result.groups[s] for s in ("train", "val")}
    assert len(groups["train"]) == 6 and len(groups["val"]) == 2
    assert not set(groups["train"]) & set(groups["val"])
    assert result.arrays["train"]["low"].shape == (6 * 16, 128, 128)


# -- configuration and refusals --------------------------------------------------------------


def test_config_modes_and_their_settings() -> None:
    assert TrainConfig().mode == "supervised"
    mode = mode_for(TrainConfig(mode="noise2void", n2v_masked_percentage=0.5, n2v_roi_size=5))
    assert isinstance(mode, Noise2Void) and (mode.masked_percentage, mode.roi_size) == (0.5, 5)
    assert isinstance(mode_for(TrainConfig(mode="noise2noise")), Noise2Noise)
    with pytest.raises(ConfigError, match=r"mode: must be one of 'supervised', 'noise2noise'"):
        TrainConfig(mode="n2v")
    with pytest.raises(ConfigError, match="n2v_roi_size: must be an odd integer from 3 to 21"):
        TrainConfig(n2v_roi_size=6)
    with pytest.raises(ConfigError, match=r"'minmax' .* two frames of a Noise2Noise pair"):
        mode_for(TrainConfig(mode="noise2noise", patch_normalization="minmax"))


def test_training_refuses_data_prepared_for_another_mode(tmp_path: Path) -> None:
    result = prepare_noise2void(FMD / "raw" / "1", "n2v", tmp_path, patch_size=64)
    config = TrainConfig(weights_path=str(tmp_path / "run"), progress=False)
    with pytest.raises(DataError) as err:
        train(result.paths["train"], result.paths["val"], config)
    assert not (tmp_path / "run").exists()  # refused before the run folder is made
    assert str(err.value) == (
        "the training data was prepared for noise2void training but the configuration's mode "
        "is supervised; set mode: noise2void, or give low/gt pairs (`debcr prepare LOW GT`)"
    )
    with np.load(result.paths["train"]) as npz:
        noisy = {"low": npz["low"]}
    with pytest.raises(DataError, match=r"no array 'gt'.*set mode: noise2void"):
        train(noisy, noisy, TrainConfig(weights_path=str(tmp_path / "r2"), progress=False))
    config = TrainConfig(weights_path=str(tmp_path / "r3"), mode="noise2noise", progress=False)
    with pytest.raises(DataError, match="has no array 'repeats'"):
        train(noisy, noisy, config)


# -- short training runs on real data --------------------------------------------------------


def _val_losses(run: Path) -> list[float]:
    with (run / "metrics.csv").open() as fh:
        return [float(row["val_loss"]) for row in csv.DictReader(fh) if row.get("val_loss")]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["noise2noise", "noise2void"])
def test_a_few_steps_lower_the_validation_loss(mode: str, tmp_path: Path) -> None:
    if mode == "noise2noise":
        sets = prepare_noise2noise(
            _fmd_fields(1, 20), patch_size=64, split={"train": [1], "val": [20]}
        ).arrays
    else:
        sets = prepare_noise2void(
            _fmd_fields(1, 20), patch_size=64, split={"train": [1], "val": [20]}
        ).arrays
    keep = "repeats" if mode == "noise2noise" else "low"
    train_set = {keep: sets["train"][keep]}
    val_set = {keep: sets["val"][keep][:16]}
    run = tmp_path / "run"
    config = TrainConfig(
        mode=mode,
        weights_path=str(run),
        batch_size=4,
        num_steps=12,
        val_freq=1,
        save_freq=4,
        patch_size=64,
        n2v_masked_percentage=2.0,
        accelerator="cpu",
        progress=False,
        seed=1,
    )
    model = train(train_set, val_set, config)
    losses = _val_losses(run)
    # validated after every step: the first is the network after one step of learning
    assert len(losses) == 12 and min(losses[3:]) < losses[0]
    meta = json.loads(read_header(run / "best.safetensors")["metadata"])
    assert meta["val_loss"] == pytest.approx(min(losses))
    assert meta["mode"] == mode == model.metadata["mode"]
    assert meta["training_data"]["train"]["arrays"] == {keep: list(train_set[keep].shape)}


@pytest.mark.slow
def test_cli_noise2noise_from_raw_frames_fine_tunes_a_builtin_model(tmp_path: Path) -> None:
    from debcr import config as cfg
    from debcr.cli import main

    raw = FMD / "raw"
    code = main(
        ["prepare", "--mode", "noise2noise", str(raw), "--train-groups", "1", "--val-groups",
         "20", "--name", "n2n", "-o", str(tmp_path), "--patch", "64"]
    )  # fmt: skip
    assert code == 0
    with np.load(tmp_path / "n2n_train.npz") as npz:
        assert npz["repeats"].shape == (64, 8, 64, 64)
    config = tmp_path / "c.yaml"
    cfg.save(TrainConfig(weights_path=str(tmp_path / "run"), progress=False), config)
    wrong = main(["train", str(config), "--train", str(tmp_path / "n2n_train.npz"),
                  "--val", str(tmp_path / "n2n_val.npz")])  # fmt: skip
    assert wrong == 2
    code = main(
        ["train", str(config), "mode=noise2noise", "num_steps=3", "val_freq=3", "batch_size=4",
         "--train", str(tmp_path / "n2n_train.npz"), "--val", str(tmp_path / "n2n_val.npz"),
         "--init", "2D_denoising"]
    )  # fmt: skip
    assert code == 0
    meta = json.loads(read_header(tmp_path / "run" / "best.safetensors")["metadata"])
    assert meta["mode"] == "noise2noise" and meta["init_model"] == "2D_denoising"
    record = meta["training_data"]["train"]
    assert record["file"] == str((tmp_path / "n2n_train.npz").resolve())
    assert record["mode"] == "noise2noise" and record["groups"]["train"] == ["1"]
