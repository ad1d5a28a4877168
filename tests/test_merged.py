"""The merged training forward: the same outputs, gradients and Adam step as the faithful one."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import fmd_frame, fmd_gt
from debcr.data import normalize
from debcr.model import init
from debcr.nn import MRBCR
from debcr.nn.losses import mrbcr_loss
from debcr.nn.merged import merged_forward
from debcr.training.module import MRBCRModule


def _batch(size: tuple[int, int], n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Real FMD patches (noisy input, ground truth) of ``size``, normalised like prepare."""
    h, w = size
    top = (512 - n * h) // 2  # n patches stacked down the middle of the 512² field
    low = normalize(fmd_frame(19, 0), clip=False)[top : top + n * h, 200 : 200 + w]
    gt = normalize(fmd_gt(19), clip=False)[top : top + n * h, 200 : 200 + w]
    as_batch = lambda a: torch.from_numpy(np.ascontiguousarray(a.reshape(n, 1, h, w)))  # noqa: E731
    return as_batch(low), as_batch(gt)


@pytest.mark.parametrize("size", [(64, 64), (36, 44)])  # 36×44: the ¼ scale is 9×11
def test_outputs_and_gradients_equal_the_faithful_network(size) -> None:
    model = init("2D_denoising").train()
    x, y = _batch(size)
    faithful = model(x)
    merged = merged_forward(model, x)
    for a, b in zip(faithful, merged, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    grads = []
    for outputs in (faithful, merged):
        model.zero_grad()
        mrbcr_loss(outputs, y).backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    # Every parameter gets a gradient, the ½ and ¼ heads' included.
    assert len(grads[1]) == len(list(model.parameters())) == 296
    assert grads[1]["inverse_net.head4.weight"].abs().max() > 0
    for name, g in grads[0].items():
        diff = (grads[1][name] - g).norm() / g.norm().clamp_min(1e-12)
        assert diff < 1e-4, (name, float(diff))


@pytest.mark.filterwarnings("ignore:You are trying to")
def test_one_training_step_gives_the_same_parameters() -> None:
    # One Lightning-module step, merged (the default) vs the faithful network, same state.
    class Faithful(MRBCR):
        def forward(self, x):  # overriding forward keeps the module on the faithful graph
            return super().forward(x)

    base = init("2D_denoising")
    faithful_net = Faithful()
    faithful_net.load_state_dict(base.state_dict())
    x, y = _batch((64, 64), n=8)
    params = []
    for net in (copy.deepcopy(base), faithful_net):
        module = MRBCRModule(net.train(), learning_rate=1e-4)
        optimiser = module.configure_optimizers()["optimizer"]
        loss = module.training_step((x, y), 0)
        loss.backward()
        optimiser.step()
        params.append({k: v.detach().clone() for k, v in net.state_dict().items()})
    for name, p in params[1].items():
        diff = (params[0][name] - p).norm() / p.norm().clamp_min(1e-12)
        assert diff < 1e-5, (name, float(diff))
    # The step moved the weights (a comparison of two unchanged models would pass too).
    moved = params[0]["inverse_net.head0.weight"] - base.state_dict()["inverse_net.head0.weight"]
    assert moved.abs().max() > 1e-5
