"""How far the network looks: the halo a tile needs so tiled output equals whole-image output."""

from __future__ import annotations

import torch

from debcr.nn.mrbcr import MRBCR, SIZE_MULTIPLE

__all__ = ["HALO_TOLERANCE", "effective_halo"]

#: Fraction of the total input influence allowed outside the halo.
HALO_TOLERANCE = 1e-4


def effective_halo(model: MRBCR, tolerance: float = HALO_TOLERANCE, size: int = 192) -> int:
    """Halo (pixels, multiple of 4) that holds all but ``tolerance`` of the input influence.

    The gradient of one output pixel with respect to the input (on uniform noise in
    [0, 1], in float64) measures how far the network actually looks. Its theoretical
    receptive field is much wider (about ±185 px along the width), but the influence
    decays quickly; the halo is the smallest square radius outside which less than
    ``tolerance`` of the total absolute gradient lies. The result is cached in
    ``model.metadata["halo"]``.
    """
    cached = getattr(model, "metadata", {}).get("halo")
    if cached:
        return int(cached)
    net = MRBCR().double()
    net.load_state_dict(model.state_dict())
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, size, size, dtype=torch.float64, generator=generator)
    x.requires_grad_(True)
    net.restore(x)[0, 0, size // 2, size // 2].backward()
    grad = x.grad[0, 0].abs()
    total = float(grad.sum()) or 1.0
    c = size // 2
    halo = size // 2
    for radius in range(SIZE_MULTIPLE, size // 2, SIZE_MULTIPLE):
        inside = float(grad[c - radius : c + radius + 1, c - radius : c + radius + 1].sum())
        if 1.0 - inside / total < tolerance:
            halo = radius
            break
    if hasattr(model, "metadata"):
        model.metadata["halo"] = halo
    return halo
