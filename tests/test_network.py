"""The m-rBCR module: structure, parameter count, shapes, dtypes, parity with the original."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from debcr.interop.keras_layout import keras_to_state_dict
from debcr.nn import MRBCR, count_parameters, init_glorot_, pad_to_multiple


def _fixture_model(fixture_npz: dict[str, np.ndarray]) -> MRBCR:
    layers: dict[str, dict[str, np.ndarray]] = {}
    for key, value in fixture_npz.items():
        if key.startswith("w."):
            name, kind = key[2:].rsplit(".", 1)
            layers.setdefault(name, {})[kind] = value
    model = MRBCR()
    state = {k: torch.from_numpy(v) for k, v in keras_to_state_dict(layers).items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


def test_parameter_counts_match_the_paper() -> None:
    model = MRBCR()
    assert count_parameters(model) == 236_630
    assert count_parameters(model.forward_net) == 46_531
    assert count_parameters(model.inverse_net) == 190_099


@pytest.mark.parametrize(
    ("n", "h", "w"),
    [(1, 128, 128), (3, 64, 96), pytest.param(2, 132, 200, marks=pytest.mark.slow), (1, 4, 8)],
)
def test_three_scale_outputs_for_any_size_divisible_by_4(n: int, h: int, w: int) -> None:
    model = MRBCR().eval()
    with torch.no_grad():
        z0, z2, z4 = model(torch.rand(n, 1, h, w))
    assert z0.shape == (n, 1, h, w)
    assert z2.shape == (n, 1, h // 2, w // 2)
    assert z4.shape == (n, 1, h // 4, w // 4)
    assert torch.equal(model.restore(torch.ones(n, 1, h, w)), model(torch.ones(n, 1, h, w))[0])


@pytest.mark.parametrize("shape", [(1, 1, 130, 128), (1, 1, 128, 126), (2, 128, 128), (1, 2, 8, 8)])
def test_bad_input_shapes_get_a_clear_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"m-rBCR (needs|expects)"):
        MRBCR()(torch.rand(*shape))


def test_pad_to_multiple_reflects_and_reports_original_size() -> None:
    x = torch.arange(7 * 5, dtype=torch.float32).reshape(1, 1, 7, 5)
    padded, size = pad_to_multiple(x)
    assert padded.shape == (1, 1, 8, 8) and size == (7, 5)
    assert torch.equal(padded[..., :7, :5], x)
    assert torch.equal(padded[..., 7, :5], x[..., 5, :])  # reflect: row 7 mirrors row 5


def test_parity_with_the_original_on_the_reference_fixture(fixture_npz) -> None:
    model = _fixture_model(fixture_npz)
    x0 = torch.from_numpy(fixture_npz["x0"]).permute(0, 3, 1, 2)
    with torch.no_grad():
        x2, x4 = x0[..., ::2, ::2], x0[..., ::4, ::4]
        np.testing.assert_array_equal(x2.permute(0, 2, 3, 1).numpy(), fixture_npz["x2"])
        np.testing.assert_array_equal(x4.permute(0, 2, 3, 1).numpy(), fixture_npz["x4"])
        forward = model.forward_net(x0, x2, x4)
        final = model(x0)
    for scale, got in zip("024", forward):
        diff = np.abs(got.permute(0, 2, 3, 1).numpy() - fixture_npz[f"fwd_y{scale}"]).max()
        assert diff <= 1e-5, f"forward output y{scale} differs by {diff}"
    for scale, got in zip("024", final):
        diff = np.abs(got.permute(0, 2, 3, 1).numpy() - fixture_npz[f"out_z{scale}"]).max()
        assert diff <= 1e-5, f"final output z{scale} differs by {diff}"


def test_width_convolutions_only_see_their_row() -> None:
    """The original's Conv1D acts along W only: six 1×5 convs spread an impulse ±12 px."""
    torch.manual_seed(0)
    branch = init_glorot_(MRBCR()).inverse_net.branch4
    with torch.no_grad():
        for conv in branch.row_convs:
            conv.weight.abs_()
            conv.bias.zero_()
        x = torch.zeros(1, 1, 9, 41)
        x[0, 0, 4, 20] = 1.0
        y = x
        for conv in branch.row_convs:
            y = conv(y)
    support = torch.nonzero(y[0].abs().sum(0))
    assert set(support[:, 0].tolist()) == {4}
    assert support[:, 1].min() == 20 - 12 and support[:, 1].max() == 20 + 12


@pytest.mark.parametrize(
    "dtype", [torch.bfloat16, pytest.param(torch.float16, marks=pytest.mark.slow)]
)
def test_reduced_precision_forward_runs_and_stays_close(dtype: torch.dtype, fixture_npz) -> None:
    model = _fixture_model(fixture_npz)
    x = torch.from_numpy(fixture_npz["x0"][:2]).permute(0, 3, 1, 2)
    with torch.no_grad():
        reference = model.restore(x)
        low = model.to(dtype).restore(x.to(dtype))
    assert low.dtype == dtype
    assert torch.isfinite(low).all()
    assert (low.float() - reference).abs().max() < 0.05


def test_glorot_init_like_keras() -> None:
    torch.manual_seed(0)
    model = init_glorot_(MRBCR())
    conv = model.inverse_net.head0  # 9×9, 48 → 1
    fan_in, fan_out = 48 * 81, 1 * 81
    limit = (6 / (fan_in + fan_out)) ** 0.5
    assert conv.weight.abs().max() <= limit
    assert conv.weight.abs().max() > 0.9 * limit
    biases = [m.bias for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(not b.detach().any() for b in biases)
