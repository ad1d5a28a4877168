"""Baselines for the quality benchmarks: CARE U-Net training, non-local means, Richardson–Lucy.

The CARE U-Net (:class:`debcr.nn.CAREUNet`, 332,641 parameters) is trained here with a plain
PyTorch loop on exactly the batches m-rBCR sees (same prepared patches, same epoch-shuffled
sampler with the same seed, ``drop_last``) and for the same number of steps; the optimiser and
loss are CARE's own defaults (Adam lr 4e-4, mean absolute error). The best state by
validation loss (evaluated every ``val_freq`` steps) is kept, as for m-rBCR.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

#: CSBDeep's Config defaults for CARE (``train_learning_rate``, ``train_loss``).
CARE_LR = 4e-4
CARE_LOSS = "mae"
#: Halo for tiled prediction with the CARE U-Net (depth 2, 3×3): receptive field radius 22 px
#: at full resolution plus margin, rounded up to a multiple of 4.
CARE_HALO = 44


def train_care(
    train: Path | dict,
    val: Path | dict,
    *,
    steps: int,
    batch: int,
    val_freq: int,
    seed: int = 0,
    lr: float = CARE_LR,
    log=print,
) -> tuple[torch.nn.Module, dict]:
    """Train :class:`debcr.nn.CAREUNet` for ``steps`` steps; return (best model, info)."""
    from debcr.nn import CAREUNet, init_glorot_
    from debcr.training.data import PairDataset, load_pairs

    torch.manual_seed(seed)
    model = init_glorot_(CAREUNet()).to(memory_format=torch.channels_last)
    model.metadata = {"halo": CARE_HALO}
    low, gt = load_pairs(train, "training data")
    vlow, vgt = load_pairs(val, "validation data")
    loader = DataLoader(
        PairDataset(low, gt),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
    opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-7)
    vx = torch.from_numpy(vlow[:, None]).contiguous(memory_format=torch.channels_last)
    vy = torch.from_numpy(vgt[:, None])

    def val_loss() -> float:
        model.eval()
        with torch.no_grad():
            loss = sum(
                float(torch.mean(torch.abs(model(vx[i : i + 32]) - vy[i : i + 32])))
                * len(vx[i : i + 32])
                for i in range(0, len(vx), 32)
            )
        model.train()
        return loss / len(vx)

    train_losses, val_losses = [], []
    best = (float("inf"), None, None)
    step = 0
    t0 = time.perf_counter()
    model.train()
    while step < steps:
        for x, y in loader:
            x = x.contiguous(memory_format=torch.channels_last)
            loss = torch.mean(torch.abs(model(x) - y))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            train_losses.append(float(loss.detach()))
            if step % val_freq == 0 or step == steps:
                v = val_loss()
                val_losses.append((step, v))
                if v < best[0]:
                    best = (v, step, {k: t.clone() for k, t in model.state_dict().items()})
                log(f"  CARE step {step}/{steps}: train MAE {loss:.4f}, val MAE {v:.4f}")
            if step >= steps:
                break
    wall = time.perf_counter() - t0
    model.load_state_dict(best[2])
    model.eval()
    info = {
        "init": "none (Glorot)",
        "wall_s": wall,
        "steps": step,
        "best_step": best[1],
        "best_val_loss": best[0],
        "val_losses": val_losses,
        "first_train_loss": float(np.mean(train_losses[:10])),
        "last_train_loss": float(np.mean(train_losses[-10:])),
        "loss": f"MAE, Adam lr {lr:g}",
    }
    return model, info


def predict_care(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """Restore with the tiled engine of :func:`debcr.model.predict` (same normalisation, units)."""
    from debcr.inference.engine import predict_array
    from debcr.inference.options import PredictOptions

    return predict_array(model, image, PredictOptions(halo=CARE_HALO, progress=False))


def nlm(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-local means (scikit-image, fast mode) with σ estimated from the image; (result, σ).

    ``h = 0.8 σ``, 5×5 patches, search distance 6, as scikit-image's example recommends.
    """
    from skimage.restoration import denoise_nl_means, estimate_sigma

    x = np.asarray(image, np.float32)
    sigma = float(estimate_sigma(x))
    out = denoise_nl_means(
        x, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True
    )
    return out.astype(np.float32), sigma


def richardson_lucy(image: np.ndarray, psf: np.ndarray, iterations: int) -> np.ndarray:
    """Richardson–Lucy deconvolution (scikit-image) in input units (offset removed first)."""
    from skimage.restoration import richardson_lucy as rl

    x = np.asarray(image, np.float64)
    low = float(x.min())
    out = rl(x - low + 1e-6, psf, num_iter=iterations, clip=False)
    return (out + low).astype(np.float32)
