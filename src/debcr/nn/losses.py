"""Training losses of m-rBCR.

The reference loss is the one the original DeBCR trains with: for each of the
three output scales, ``MSE + 0.5 · mean |DFT_W(y) − DFT_W(ŷ)|``, summed. Its
"FFT" term is — because TensorFlow's ``rfft2d`` acted on the (W, C=1) axes of
NHWC tensors — an unnormalised 1-D DFT along the image *width* of every row, and
``|·|`` is the modulus of the complex difference. ``fft2d`` is the true 2-D FFT
variant (what MIMO-UNet intended); it is a behaviour change, so it is opt-in.
``mse`` drops the frequency term (the squared error of the three scales alone).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

LOSSES = ("reference", "fft2d", "mse")


def frequency_term(prediction: Tensor, target: Tensor, kind: str = "reference") -> Tensor:
    """Mean modulus of the DFT of the difference (the DFT is linear)."""
    diff = prediction.float() - target.float()
    spectrum = torch.fft.fft(diff, dim=-1) if kind == "reference" else torch.fft.fft2(diff)
    return spectrum.abs().mean()


def scale_loss(
    prediction: Tensor, target: Tensor, kind: str = "reference", fft_weight: float = 0.5
) -> Tensor:
    """Loss at one scale: ``MSE + fft_weight · frequency_term`` (``mse``: the MSE alone)."""
    mse = torch.mean((prediction.float() - target.float()) ** 2)
    if kind == "mse":
        return mse
    return mse + fft_weight * frequency_term(prediction, target, kind)


def multiscale_targets(target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Targets at full, ½ and ¼ resolution by strided subsampling, as the original."""
    return target, target[..., ::2, ::2], target[..., ::4, ::4]


def mrbcr_loss(
    outputs: Sequence[Tensor], target: Tensor, kind: str = "reference", fft_weight: float = 0.5
) -> Tensor:
    """Sum over the three scales of `scale_loss` (weights 1, 1, 1).

    Parameters
    ----------
    outputs
        The network's ``(z0, z2, z4)``.
    target
        Full-resolution ground truth ``(N, 1, H, W)``.
    kind
        ``"reference"`` (1-D DFT along the width, the original), ``"fft2d"`` or ``"mse"``.
    fft_weight
        Weight of the frequency term (0.5 in the original).
    """
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
    return sum(
        scale_loss(z, y, kind, fft_weight)
        for z, y in zip(outputs, multiscale_targets(target), strict=True)
    )
