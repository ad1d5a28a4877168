"""How far the network looks: the halo a tile needs so tiled output equals whole-image output."""

from __future__ import annotations

import torch

from debcr.defaults import HALO_TOLERANCE, HALO_TOLERANCES, halo_key
from debcr.nn.mrbcr import MRBCR, SIZE_MULTIPLE

__all__ = ["HALO_TOLERANCE", "HALO_TOLERANCES", "effective_halo", "halo_for", "store_halos"]


def halo_for(model: torch.nn.Module, precision: str) -> int:
    """Default halo of ``model`` at ``precision`` (see `HALO_TOLERANCES`).

    Read from ``model.metadata`` (model files store them, see `store_halos`), else
    measured once and kept there. Networks other than m-rBCR (the CARE baseline) use the
    ``halo`` in their metadata.
    """
    metadata = getattr(model, "metadata", None)
    if not isinstance(model, MRBCR):
        halo = (metadata or {}).get("halo")
        if halo is None:
            raise ValueError(
                f"no default halo for a {type(model).__name__}; give halo= (pixels of context)"
            )
        return int(halo)
    key = halo_key(precision)
    if metadata is None or not metadata.get(key):
        store_halos(model)
    return int(model.metadata[key])


def store_halos(model: MRBCR) -> dict[str, int]:
    """Measure the halo of every precision (one gradient) and keep them in ``model.metadata``."""
    tolerances = sorted(set(HALO_TOLERANCES.values()))
    measured = dict(zip(tolerances, _halos(model, tolerances)))
    halos = {halo_key(p): measured[t] for p, t in HALO_TOLERANCES.items()}
    if not hasattr(model, "metadata"):
        model.metadata = {}
    model.metadata.update(halos)
    return halos


def effective_halo(model: MRBCR, tolerance: float = HALO_TOLERANCE, size: int = 192) -> int:
    """Halo (pixels, multiple of 4) that holds all but ``tolerance`` of the input influence.

    The gradient of one output pixel with respect to the input (on uniform noise in
    [0, 1], in float64) measures how far the network actually looks. Its theoretical
    receptive field is much wider (about ±185 px along the width), but the influence
    decays quickly; the halo is the smallest square radius outside which less than
    ``tolerance`` of the total absolute gradient lies. For the default tolerance the result
    is kept in ``model.metadata["halo"]`` (as model files store it).
    """
    if tolerance == HALO_TOLERANCE:
        cached = getattr(model, "metadata", {}).get("halo")
        if cached:
            return int(cached)
        return store_halos(model)["halo"]
    return _halos(model, [tolerance], size)[0]


def _halos(model: MRBCR, tolerances: list[float], size: int = 192) -> list[int]:
    net = MRBCR().double()
    net.load_state_dict(model.state_dict())
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, size, size, dtype=torch.float64, generator=generator)
    x.requires_grad_(True)
    net.restore(x)[0, 0, size // 2, size // 2].backward()
    grad = x.grad[0, 0].abs()
    total = float(grad.sum()) or 1.0
    c = size // 2
    outside = [
        (
            radius,
            1.0
            - float(grad[c - radius : c + radius + 1, c - radius : c + radius + 1].sum()) / total,
        )
        for radius in range(SIZE_MULTIPLE, size // 2, SIZE_MULTIPLE)
    ]
    return [next((r for r, out in outside if out < tol), size // 2) for tol in tolerances]
