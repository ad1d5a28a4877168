"""Correspondence between the original Keras layers and our PyTorch parameters.

Layer names are the structural names of the parity fixture
(``fwd.scale0.dense01``, ``inv.x2.rdb1.c1_0``, ...). Keras stores kernels as
Dense ``(in, out)``, Conv1D ``(k, in, out)`` and Conv2D ``(kh, kw, in, out)``;
PyTorch wants ``(out, in, kh, kw)``.
"""

from __future__ import annotations

import numpy as np

_SCALES = ("0", "2", "4")


def _layer_table() -> dict[str, str]:
    """Structural Keras layer name → our module path (without ``.weight``/``.bias``)."""
    table: dict[str, str] = {}
    for s in _SCALES:
        for k in range(12):
            table[f"fwd.scale{s}.dense{k + 1:02d}"] = f"forward_net.mlp{s}.layers.{k}"
        table[f"fwd.out{s}"] = f"forward_net.head{s}"
        table[f"inv.out{s}"] = f"inverse_net.head{s}"
        for k in range(6):
            table[f"inv.x{s}.conv1d{k}"] = f"inverse_net.branch{s}.row_convs.{k}"
        for r in range(4):
            prefix = f"inverse_net.branch{s}.rdbs.{r}"
            for i in range(3):
                table[f"inv.x{s}.rdb{r}.c1_{i}"] = f"{prefix}.expand.{i}"
                table[f"inv.x{s}.rdb{r}.c2_{i}"] = f"{prefix}.refine.{i}"
            table[f"inv.x{s}.rdb{r}.c1x1"] = f"{prefix}.squeeze"
    for net, ours in (("fwd", "forward_net"), ("inv", "inverse_net")):
        table[f"{net}.fusion.conv1x1"] = f"{ours}.fusion.conv1x1"
        table[f"{net}.fusion.conv3x3"] = f"{ours}.fusion.conv3x3"
    return table


#: Structural Keras layer name → PyTorch module path.
KERAS_TO_TORCH: dict[str, str] = _layer_table()


def kernel_to_torch(kernel: np.ndarray) -> np.ndarray:
    """Convert a Keras Dense/Conv1D/Conv2D kernel to a PyTorch Conv2d weight."""
    if kernel.ndim == 2:  # Dense (in, out) acts as a 1×1 conv
        return np.ascontiguousarray(kernel.T[:, :, None, None])
    if kernel.ndim == 3:  # Conv1D (k, in, out) convolves along W: (out, in, 1, k)
        return np.ascontiguousarray(kernel.transpose(2, 1, 0)[:, :, None, :])
    if kernel.ndim == 4:  # Conv2D (kh, kw, in, out)
        return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
    raise ValueError(f"not a Keras kernel: shape {kernel.shape}")


def keras_to_state_dict(layers: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Map ``{structural layer name: {"kernel": ..., "bias": ...}}`` to a state dict."""
    state: dict[str, np.ndarray] = {}
    for name, tensors in layers.items():
        path = KERAS_TO_TORCH[name]
        state[f"{path}.weight"] = kernel_to_torch(tensors["kernel"])
        state[f"{path}.bias"] = np.ascontiguousarray(tensors["bias"])
    return state
