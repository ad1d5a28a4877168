"""Tests for debcr.data.prepare: pairing, normalisation, patches, split by field, NPZ output."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from debcr.data.collect import Pair, pairs_from_folders
from debcr.data.normalize import normalize
from debcr.data.prepare import BACKGROUND_PERCENTILE, prepare
from debcr.data.split import SETS, split_groups
from debcr.data.tiling import crop
from debcr.errors import DataError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FMD = DATA / "fmd_confocal_bpae_b"

# The benchmark protocol (train 1-18, validate 20, test 19) on a small subset.
BENCH_SPLIT = {"train": [1, 2], "val": [20], "test": [19]}
FRAMES = 2
PATCH = 128
PER_IMAGE = (512 // PATCH) ** 2


def _fmd_image(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path))


def _expected(path: Path) -> np.ndarray:
    """Patches of one FMD image as prepare must make them: own percentiles, no clip, crop."""
    scaled = normalize(_fmd_image(path), 0.1, 99.9, clip=False, dtype=np.float32)
    return crop(scaled, PATCH, 0.0)


@pytest.fixture(scope="module")
def fmd_pairs() -> list[Pair]:
    pairs = pairs_from_folders(FMD / "raw", FMD / "gt")
    wanted = {"1", "2", "19", "20"}
    return [dataclasses.replace(p, low=p.low[:FRAMES]) for p in pairs if p.group in wanted]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory, fmd_pairs: list[Pair]):
    out = tmp_path_factory.mktemp("bench")
    result = prepare(fmd_pairs, name="fmd", out_dir=out, split=BENCH_SPLIT)
    files = {s: dict(np.load(out / f"fmd_{s}.npz")) for s in SETS}
    return out, result, files


# --- describing the data ------------------------------------------------------------


def test_pairs_from_folders_groups_fields_in_natural_order() -> None:
    pairs = pairs_from_folders(FMD / "raw", FMD / "gt")
    assert [p.group for p in pairs] == [str(i) for i in range(1, 21)]
    by_group = {p.group: p for p in pairs}
    assert len(by_group["19"].low) == 50 and len(by_group["1"].low) == 8
    assert by_group["19"].gt == FMD / "gt" / "19" / "avg50.png"  # one gt shared by all frames
    assert [f.name for f in by_group["1"].low[:3]] == [
        f"HV110_P05005100{i:02d}.png" for i in range(3)
    ]


def test_pairs_from_folders_flat_layout_pairs_by_name(tmp_path: Path) -> None:
    for folder in ("low", "gt"):
        (tmp_path / folder).mkdir()
        for stem in ("img10", "img2"):
            np.save(tmp_path / folder / f"{stem}.npy", np.zeros((8, 8)))
    pairs = pairs_from_folders(tmp_path / "low", tmp_path / "gt")
    assert [p.group for p in pairs] == ["img2", "img10"]
    assert pairs[0].gt == tmp_path / "gt" / "img2.npy"
    (tmp_path / "gt" / "img10.npy").unlink()
    with pytest.raises(DataError, match="img10"):
        pairs_from_folders(tmp_path / "low", tmp_path / "gt")


# --- the benchmark split on real data -----------------------------------------------


def test_benchmark_split_files_keys_shapes(bench) -> None:
    out, result, files = bench
    assert sorted(p.name for p in out.iterdir()) == [
        f"fmd_{s}.npz" for s in ("test", "train", "val")
    ]
    assert result.paths == {s: out / f"fmd_{s}.npz" for s in SETS}
    assert result.groups == {"train": ("1", "2"), "val": ("20",), "test": ("19",)}
    expected = {"train": 2 * FRAMES * PER_IMAGE, "val": FRAMES * PER_IMAGE}
    expected["test"] = FRAMES * PER_IMAGE
    assert result.patches == expected
    assert result.images == {"train": 2 * FRAMES, "val": FRAMES, "test": FRAMES}
    for s in SETS:
        data = files[s]
        assert set(data) == {"low", "gt", "groups", "info"}
        for key in ("low", "gt"):
            assert data[key].shape == (expected[s], PATCH, PATCH)
            assert data[key].dtype == np.float32
        assert data["groups"].shape == (expected[s],)
        info = json.loads(str(data["info"]))
        assert info["set"] == s and info["patch_size"] == [PATCH, PATCH]
        assert info["overlap"] == [0.0, 0.0] and info["normalization"]["clip"] is False
        assert info["groups"] == {k: list(v) for k, v in result.groups.items()}
        assert all(src["group"] in result.groups[s] for src in info["sources"])


def test_no_group_in_two_sets(bench) -> None:
    _, result, files = bench
    seen = [set(files[s]["groups"].tolist()) for s in SETS]
    assert seen == [set(result.groups[s]) for s in SETS]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])


def test_values_are_percentile_normalised_without_clipping(bench) -> None:
    _, _, files = bench
    for s in SETS:
        for key in ("low", "gt"):
            values = files[s][key]
            inside = np.mean((values >= 0) & (values <= 1))
            assert inside > 0.99, (s, key, inside)
            assert values.max() > 1.0  # not clipped: the top 0.1 % lies above 1


def test_test_patches_are_exact_crops_of_field_19(bench, fmd_pairs: list[Pair]) -> None:
    _, _, files = bench
    (pair,) = [p for p in fmd_pairs if p.group == "19"]
    test = files["test"]
    gt_patches = _expected(pair.gt)
    for k, frame in enumerate(pair.low):
        rows = slice(k * PER_IMAGE, (k + 1) * PER_IMAGE)
        np.testing.assert_array_equal(test["low"][rows], _expected(frame))
        np.testing.assert_array_equal(test["gt"][rows], gt_patches)


def test_background_filter_drops_patches_and_keeps_pairs_aligned(
    tmp_path: Path, fmd_pairs: list[Pair], bench
) -> None:
    threshold = 0.1
    result = prepare(
        fmd_pairs,
        name="fmd",
        out_dir=tmp_path,
        split=BENCH_SPLIT,
        background_filter=threshold,
        return_arrays=True,
    )
    _, unfiltered, _ = bench
    assert result.dropped > 0
    assert sum(result.patches.values()) + result.dropped == sum(unfiltered.patches.values())
    test = result.arrays["test"]
    (pair,) = [p for p in fmd_pairs if p.group == "19"]
    gt_patches = _expected(pair.gt)
    keep = np.percentile(gt_patches, BACKGROUND_PERCENTILE, axis=(1, 2)) >= threshold
    assert 0 < keep.sum() < keep.size
    n = int(keep.sum())
    for k, frame in enumerate(pair.low):
        rows = slice(k * n, (k + 1) * n)
        np.testing.assert_array_equal(test["low"][rows], _expected(frame)[keep])
        np.testing.assert_array_equal(test["gt"][rows], gt_patches[keep])
    with np.load(tmp_path / "fmd_test.npz") as saved:
        np.testing.assert_array_equal(saved["low"], test["low"])


# --- the simple 1:1 form ------------------------------------------------------------


def _random_images(n: int, shape: tuple[int, int] = (40, 40), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, (n, *shape)).astype(np.uint16)


def test_one_to_one_folders_pair_in_natural_order(tmp_path: Path) -> None:
    low, gt = _random_images(3, seed=1), _random_images(3, seed=2)
    for folder, images in (("low", low), ("gt", gt)):
        (tmp_path / folder).mkdir()
        for index, image in zip((10, 2, 1), images):
            np.save(tmp_path / folder / f"img{index}.npy", image)
    np.savez(tmp_path / "low" / "ignored.npz", x=low)  # not an image: skipped
    result = prepare(
        tmp_path / "low", tmp_path / "gt", "small", None, patch_size=32, split=(1, 0, 0)
    )
    arrays = result.arrays["train"]
    assert result.paths == {} and result.groups["train"] == ("0", "1", "2")
    # Natural order: img1, img2, img10 -> images[2], images[1], images[0]; 4 patches each.
    for group, k in enumerate((2, 1, 0)):
        rows = slice(group * 4, group * 4 + 4)
        expected = crop(normalize(low[k], clip=False), 32, 0.0)
        np.testing.assert_array_equal(arrays["low"][rows], expected)
        assert set(arrays["groups"][rows].tolist()) == {str(group)}


def test_one_to_one_stack_slices_are_groups(tmp_path: Path) -> None:
    low, gt = _random_images(5, seed=3), _random_images(5, seed=4)
    result = prepare(low, gt, "stack", tmp_path, patch_size=32, overlap=(0.5, 0.25), seed=7)
    assert sorted(g for s in SETS for g in result.groups[s]) == sorted(str(i) for i in range(5))
    assert all(result.groups[s] for s in SETS)
    with np.load(tmp_path / "stack_val.npz") as val:
        (group,) = set(val["groups"].tolist())
        expected = crop(normalize(gt[int(group)], clip=False), 32, (0.5, 0.25))
        np.testing.assert_array_equal(val["gt"], expected)


def test_split_is_reproducible_with_seed() -> None:
    low, gt = _random_images(6), _random_images(6, seed=1)
    first = prepare(low, gt, patch_size=32, seed=3)
    again = prepare(list(low), list(gt), patch_size=32, seed=3)
    assert first.groups == again.groups
    np.testing.assert_array_equal(first.arrays["train"]["low"], again.arrays["train"]["low"])


# --- errors ---------------------------------------------------------------------------


def test_mismatched_shapes_name_both_images() -> None:
    pairs = [Pair(np.zeros((64, 64)), np.zeros((64, 48)), "a")]
    with pytest.raises(DataError, match=r"\(64, 64\).*\(64, 48\)"):
        prepare(pairs, split=(1, 0, 0))


def test_mismatched_counts(tmp_path: Path, fmd_pairs: list[Pair]) -> None:
    low, gt = fmd_pairs[0].low, fmd_pairs[0].low[:1]
    with pytest.raises(DataError, match=r"HV110_P0500510001\.png.*2 images.*HV110_P0500510000.*1"):
        prepare(list(low), list(gt), "x", tmp_path)
    frames = _random_images(3)
    with pytest.raises(DataError, match=r"group 'f'.*3 images.*2"):
        prepare([Pair(frames, frames[:2], "f")], split=(1, 0, 0))
    assert list(tmp_path.iterdir()) == []


def test_group_in_two_sets_is_refused(tmp_path: Path, fmd_pairs: list[Pair]) -> None:
    split = {"train": [1, 2, 19], "val": [20], "test": ["19"]}
    with pytest.raises(DataError, match=r"'19'.*both"):
        prepare(fmd_pairs, name="fmd", out_dir=tmp_path, split=split)
    with pytest.raises(DataError, match="no set"):
        prepare(fmd_pairs, name="fmd", out_dir=tmp_path, split={"train": [1, 2], "test": [19]})
    with pytest.raises(DataError, match="not in the data"):
        prepare(fmd_pairs, name="fmd", out_dir=tmp_path, split={**BENCH_SPLIT, "val": [20, 21]})
    with pytest.raises(DataError, match="add up"):
        prepare(fmd_pairs, name="fmd", out_dir=tmp_path, split=(0.8, 0.1, 0.2))
    assert list(tmp_path.iterdir()) == []


def test_bad_options_and_forms() -> None:
    images = _random_images(2)
    with pytest.raises(DataError, match="gt is missing"):
        prepare(images)
    with pytest.raises(DataError, match="pairs\\[0\\]"):
        prepare(["a.tif", "b.tif", "c.tif"])
    with pytest.raises(DataError, match="overlap"):
        prepare(images, images, overlap=0.95)
    with pytest.raises(DataError, match="pmin"):
        prepare(images, images, pmin=50, pmax=10)
    with pytest.raises(DataError, match="name"):
        prepare(images, images, "a/b", "out")
    with pytest.raises(DataError, match="removed all"):
        prepare(images, images, patch_size=32, background_filter=100.0)


# --- files: overwrite, atomicity ------------------------------------------------------


def test_overwrite_refused_then_allowed_and_stale_set_removed(tmp_path: Path) -> None:
    low, gt = _random_images(4), _random_images(4, seed=1)
    prepare(low, gt, "d", tmp_path, patch_size=32, split=(0.5, 0.25, 0.25))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"d_train.npz", "d_val.npz", "d_test.npz"}
    with pytest.raises(FileExistsError, match="overwrite"):
        prepare(low, gt, "d", tmp_path, patch_size=32)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    result = prepare(low, gt, "d", tmp_path, patch_size=32, split=(0.75, 0.25, 0), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d_train.npz", "d_val.npz"]
    assert result.patches["test"] == 0 and set(result.paths) == {"train", "val"}


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    # The one writer of training sets writes through its module's `write`.
    module = importlib.import_module("debcr.data.sets")

    real_write = module.write
    calls = []

    def failing_write(path, data, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the second set fails after the first was written
            raise OSError("disk full")
        return real_write(path, data, **kwargs)

    monkeypatch.setattr(module, "write", failing_write)
    low, gt = _random_images(3), _random_images(3, seed=1)
    with pytest.raises(OSError, match="disk full"):
        prepare(low, gt, "d", tmp_path, patch_size=32)
    assert list(tmp_path.iterdir()) == []  # neither the first set nor temporary files


def test_module_does_not_import_torch() -> None:
    code = "import sys, debcr.data.prepare; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- split property -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    n_groups=st.integers(1, 40),
    weights=st.tuples(st.integers(0, 10), st.integers(0, 10), st.integers(0, 10)).filter(any),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_covers_all_groups_once(n_groups: int, weights: tuple, seed: int) -> None:
    groups = [f"g{i}" for i in range(n_groups)]
    fractions = tuple(w / sum(weights) for w in weights)
    sets = split_groups(groups, fractions, seed)
    assigned = [g for s in SETS for g in sets[s]]
    assert sorted(assigned) == sorted(groups)  # every group, and each exactly once
    for s, fraction in zip(SETS, fractions):
        if fraction == 0:
            assert sets[s] == ()
    nonzero = [s for s, f in zip(SETS, fractions) if f > 0]
    if n_groups >= len(nonzero):
        assert all(sets[s] for s in nonzero)
    assert split_groups(groups, fractions, seed) == sets


@pytest.mark.parametrize(("patch", "hint"), [(66, "64 or 68"), (2, "4"), ((64, 70), "68 or 72")])
def test_patch_sizes_training_cannot_use_are_refused(patch, hint, tmp_path) -> None:
    # Training needs sides divisible by 4; prepare used to write such sets anyway.
    low = np.zeros((160, 160), np.float32)
    with pytest.raises(DataError, match=rf"multiples of 4 .*; use {hint}$"):
        prepare([low], [low], name="x", out_dir=tmp_path, patch_size=patch, split=(1, 0, 0))
    assert list(tmp_path.iterdir()) == []


# --- the training-set contract (debcr.data.sets) ----------------------------------------


def test_every_set_records_its_mode_and_reads_back_as_set_info(tmp_path: Path) -> None:
    from debcr.data.sets import INFO_VERSION, SetInfo, read_info

    low, gt = _random_images(4), _random_images(4, seed=1)
    result = prepare(low, gt, "d", tmp_path, patch_size=32, split=(0.5, 0.5, 0))
    info = read_info(result.paths["train"])
    assert info is not None and info.mode == "supervised" and info.version == INFO_VERSION
    assert info.set == "train" and info.patch_size == (32, 32) and info.seed == 0
    assert info.extra == {"background_filter": None, "background_percentile": 99.9}
    with np.load(result.paths["val"]) as npz:
        record = json.loads(str(npz["info"]))
        assert SetInfo.from_split(npz) == SetInfo.from_json(record)
    assert list(record)[:3] == ["format", "version", "mode"] and record["set"] == "val"
    assert SetInfo.from_json(record).to_dict() == record  # nothing is lost on the way


def test_set_info_of_old_sets_plain_arrays_and_newer_versions() -> None:
    from debcr.data.sets import SetInfo

    old = {"format": "debcr-patches", "version": 1, "name": "fmd", "patch_size": [64, 64]}
    assert SetInfo.from_split({"low": np.zeros(1), "info": np.asarray(json.dumps(old))}).mode == (
        "supervised"
    )
    assert SetInfo.from_split({"info": {"mode": "noise2void"}}).mode == "noise2void"
    assert SetInfo.from_split({"low": np.zeros((2, 8, 8)), "gt": np.zeros((2, 8, 8))}) is None
    assert SetInfo.from_split(np.zeros((2, 8, 8))) is None
    with pytest.raises(DataError, match="version 99, newer than this debcr reads"):
        SetInfo.from_json({"version": 99, "mode": "supervised"})


def test_cli_refuses_options_of_another_mode(tmp_path: Path, capsys) -> None:
    from debcr.cli import main

    for argv, message in (
        (["--mode", "noise2void", "--background", "0.1"], "--background needs ground truth; it "
         "is for supervised preparation"),
        (["--max-frames", "4"], "--max-frames is for --mode noise2noise"),
        (["--mode", "noise2void", "--max-frames", "4"], "--max-frames is for --mode noise2noise"),
    ):  # fmt: skip
        assert main(["prepare", str(tmp_path), *argv, "--name", "x", "-o", str(tmp_path)]) == 2
        assert capsys.readouterr().err.strip().endswith(f"error: {message}")
    assert main(["prepare", str(tmp_path), "--name", "x", "-o", str(tmp_path)]) == 2
    assert "supervised preparation takes two paths, LOW and GT (got 1)" in capsys.readouterr().err
