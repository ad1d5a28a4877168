"""How far the network looks: the halo a tile needs so tiled output equals whole-image output."""

from __future__ import annotations

import weakref

import torch

from debcr.nn.mrbcr import MRBCR, SIZE_MULTIPLE

__all__ = ["HALO_TOLERANCE", "HALO_TOLERANCES", "effective_halo", "halo_for"]

#: Fraction of the total input influence allowed outside the halo (the exact mode's).
HALO_TOLERANCE = 1e-4
#: Per precision, the influence that may be left outside the halo: chosen so that the
#: tiled-vs-whole difference stays below the precision's own rounding error on real
#: images (benchmarks/bench_halo.py, results/halo.md). float32 keeps the exact halo.
HALO_TOLERANCES: dict[str, float] = {
    "float32": HALO_TOLERANCE,
    "bfloat16": 1e-2,
    "float16": HALO_TOLERANCE,
}

_halos: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def halo_for(model: torch.nn.Module, precision: str) -> int:
    """Default halo of ``model`` at ``precision`` (see :data:`HALO_TOLERANCES`).

    Networks other than m-rBCR (the CARE baseline) use the halo in their metadata.
    """
    if not isinstance(model, MRBCR):
        halo = getattr(model, "metadata", {}).get("halo")
        if halo is None:
            raise ValueError(
                f"no default halo for a {type(model).__name__}; give halo= (pixels of context)"
            )
        return int(halo)
    tolerance = HALO_TOLERANCES.get(precision, HALO_TOLERANCE)
    if tolerance == HALO_TOLERANCE:
        return effective_halo(model)
    cache = _halos.setdefault(model, {})
    if tolerance not in cache:
        cache[tolerance] = effective_halo(model, tolerance, cache=False)
    return cache[tolerance]


def effective_halo(
    model: MRBCR, tolerance: float = HALO_TOLERANCE, size: int = 192, cache: bool = True
) -> int:
    """Halo (pixels, multiple of 4) that holds all but ``tolerance`` of the input influence.

    The gradient of one output pixel with respect to the input (on uniform noise in
    [0, 1], in float64) measures how far the network actually looks. Its theoretical
    receptive field is much wider (about ±185 px along the width), but the influence
    decays quickly; the halo is the smallest square radius outside which less than
    ``tolerance`` of the total absolute gradient lies. With ``cache``, the result is kept in
    ``model.metadata["halo"]`` (for the default tolerance, as saved with models).
    """
    cache = cache and tolerance == HALO_TOLERANCE
    cached = getattr(model, "metadata", {}).get("halo") if cache else None
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
    if cache and hasattr(model, "metadata"):
        model.metadata["halo"] = halo
    return halo
