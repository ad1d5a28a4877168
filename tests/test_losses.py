"""The reference loss against its definition computed with numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from debcr.metrics import psnr
from debcr.nn.losses import mrbcr_loss, scale_loss


def _numpy_scale_loss(pred: np.ndarray, target: np.ndarray, kind: str) -> float:
    mse = np.mean((pred - target) ** 2)
    axes = (-1,) if kind == "reference" else (-2, -1)
    spectrum_y = np.fft.fftn(target, axes=axes)
    spectrum_p = np.fft.fftn(pred, axes=axes)
    return mse + 0.5 * np.mean(np.abs(spectrum_y - spectrum_p))


@pytest.mark.parametrize("kind", ["reference", "fft2d"])
def test_scale_loss_matches_numpy_definition(kind: str) -> None:
    rng = np.random.default_rng(0)
    pred, target = rng.random((3, 1, 16, 24)), rng.random((3, 1, 16, 24))
    ours = scale_loss(torch.from_numpy(pred), torch.from_numpy(target), kind)
    assert float(ours) == pytest.approx(_numpy_scale_loss(pred, target, kind), rel=1e-5)


def test_reference_fft_runs_along_the_width_only() -> None:
    """A difference constant along each row only has energy at frequency 0 of that row."""
    target = torch.zeros(1, 1, 4, 8)
    pred = torch.zeros(1, 1, 4, 8)
    pred[..., 1, :] = 1.0  # one row differs by 1 everywhere
    # row DFT of [1]*8 = 8 at k=0, 0 elsewhere → mean |.| over 4×8 = 8/32
    expected = 8 / 32
    mse = 8 / 32
    assert float(scale_loss(pred, target, "reference")) == pytest.approx(mse + 0.5 * expected)
    # the 2-D FFT of one constant row: |F(u, 0)| = 8 for all 4 vertical frequencies u
    assert float(scale_loss(pred, target, "fft2d")) == pytest.approx(mse + 0.5 * 4 * 8 / 32)
    pred_col = torch.zeros(1, 1, 4, 8)
    pred_col[..., :, 1] = 1.0  # one column: every row's DFT is a unit impulse → |·| = 1
    assert float(scale_loss(pred_col, target, "reference")) == pytest.approx(4 / 32 + 0.5 * 1.0)


def test_multiscale_sum_uses_strided_targets() -> None:
    rng = np.random.default_rng(1)
    target = rng.random((2, 1, 32, 32)).astype(np.float32)
    outputs = [rng.random((2, 1, s, s)).astype(np.float32) for s in (32, 16, 8)]
    expected = sum(
        _numpy_scale_loss(o, t, "reference")
        for o, t in zip(
            outputs, (target, target[..., ::2, ::2], target[..., ::4, ::4]), strict=True
        )
    )
    got = mrbcr_loss([torch.from_numpy(o) for o in outputs], torch.from_numpy(target))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="loss must be one of"):
        mrbcr_loss([torch.from_numpy(o) for o in outputs], torch.from_numpy(target), kind="l1")


def test_psnr_of_known_noise() -> None:
    target = np.zeros((10, 10))
    pred = np.full((10, 10), 0.1)
    assert psnr(pred, target, data_range=1.0) == pytest.approx(20.0, rel=1e-5)
