"""Test-time augmentation at batch speed: the 8 transforms of a tile go through the network
as one batch (two, one per shape, for a non-square tile), on every backend, and give what 8
separate passes give."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import fmd_frame
from debcr.backends import make_runner
from debcr.data.normalize import normalize
from debcr.inference.tta import TRANSFORMS, dihedral, restore_tta, undo_dihedral
from debcr.model import predict

BACKENDS = ["torch", "openvino"]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A real noisy FMD frame, percentile-normalised (512² float32)."""
    return normalize(fmd_frame().astype(np.float32))


class Spy:
    """Calls a real runner's ``run`` and records the shape of every batch it was given."""

    def __init__(self, run) -> None:
        self.inner, self.shapes = run, []

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        self.shapes.append(tiles.shape)
        return self.inner(tiles)


def _separate(run, tiles: np.ndarray) -> np.ndarray:
    """The outputs of the 8 transforms, each through its own pass and transformed back."""
    return np.stack(
        [undo_dihedral(run(np.ascontiguousarray(dihedral(tiles, k))), k) for k in TRANSFORMS]
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_batch_equals_eight_separate_passes(denoiser, frame, backend: str) -> None:
    runner = make_runner(denoiser, backend, CPU, "float32")
    assert runner.backend == backend
    square = np.stack([frame[100:196, 200:296], frame[300:396, 40:136]])  # 2 × 96²
    wide = frame[None, 220:284, 128:256]  # 64×128: two shapes once transformed
    for tiles in (square, wide):
        spy = Spy(runner.run)
        mean, spread = restore_tta(spy, tiles)
        n, h, w = tiles.shape
        expected = [(8 * n, h, w)] if h == w else [(4 * n, h, w), (4 * n, w, h)]
        assert spy.shapes == expected
        separate = _separate(runner.run, tiles)
        # float32 throughout: a batched convolution may round differently, nothing more.
        np.testing.assert_allclose(mean, separate.mean(axis=0), rtol=0, atol=2e-5)
        np.testing.assert_allclose(spread, separate.std(axis=0), rtol=0, atol=2e-5)
        assert mean.dtype == spread.dtype == np.float32 and mean.shape == tiles.shape
        # TTA changes the result (the network is not equivariant), and the spread says where.
        assert np.abs(mean - separate[0]).max() > 1e-3 and spread.max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_sends_each_tile_s_transforms_as_one_batch(
    denoiser, frame, backend: str, monkeypatch
) -> None:
    """Through the engine with its defaults (one tile per batch on the CPU): one forward of 8
    tiles per square tile, not 8 forwards of one."""
    runner = make_runner(denoiser, backend, CPU, "float32")  # the one predict will use
    spy = Spy(runner.run)
    monkeypatch.setattr(runner, "run", spy)
    image = frame[:128, :128]
    got = predict(
        denoiser,
        image,
        backend=backend,
        precision="float32",
        device="cpu",
        units="normalized",
        progress=False,
        tta=True,
    )
    assert len(spy.shapes) == 1 and spy.shapes[0][0] == 8
    assert got.shape == image.shape and np.isfinite(got).all()
