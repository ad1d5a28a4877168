"""The CARE U-Net baseline: CSBDeep's layout and parameter count, shapes, residual output."""

from __future__ import annotations

import pytest
import torch

from debcr.nn import CAREUNet, count_parameters


def test_care_defaults_have_the_csbdeep_parameter_count() -> None:
    # CSBDeep CARE, 2-D, depth 2, 32 filters, 3×3 kernels, 1 channel: 332,641 (Keras summary).
    assert count_parameters(CAREUNet()) == 332_641


def test_parameter_count_follows_the_csbdeep_layout_for_other_widths() -> None:
    # Hand count of CSBDeep's unet_block for depth 1, 8 filters, 3×3, one channel:
    # down 1→8, 8→8; bottom 8→16, 16→8; up (8+8)→8, 8→8; head 8→1.
    expected = (9 * 1 * 8 + 8) + (9 * 8 * 8 + 8) + (9 * 8 * 16 + 16) + (9 * 16 * 8 + 8)
    expected += (9 * 16 * 8 + 8) + (9 * 8 * 8 + 8) + (8 + 1)
    assert count_parameters(CAREUNet(depth=1, filters=8)) == expected


@pytest.mark.parametrize(("n", "h", "w"), [(1, 64, 64), (2, 36, 100), (1, 4, 8)])
def test_output_has_the_input_shape(n: int, h: int, w: int) -> None:
    model = CAREUNet().eval()
    x = torch.rand(n, 1, h, w)
    with torch.no_grad():
        y = model(x)
        assert torch.equal(model.restore(x), y)
    assert y.shape == (n, 1, h, w)


def test_residual_output_is_the_input_when_the_head_is_zero() -> None:
    model = CAREUNet().eval()
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    x = torch.rand(2, 1, 32, 48)
    with torch.no_grad():
        assert torch.equal(model(x), x)
        model.residual = False
        assert torch.count_nonzero(model(x)) == 0
