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


def _checkpoint_layer_table() -> dict[str, str]:
    """Checkpoint layer path (``model/layer_with_weights-i/...``) → structural layer name.

    Keras numbers the layers that own weights in the order they were created: in
    the forward sub-model the 12 Dense layers interleaved over the scales (½, ¼,
    full), then the fusion and the three heads; in the inverse sub-model each
    branch's six Conv1D and four residual-dense blocks (the ¼ branch, the shared
    fusion, the ½ and full branches), then the three heads.
    """
    fwd = "model/layer_with_weights-0/layer_with_weights-{}"
    inv = "model/layer_with_weights-1/layer_with_weights-{}"
    table: dict[str, str] = {}
    order = ("2", "4", "0")
    for k in range(12):
        for j, s in enumerate(order):
            table[fwd.format(3 * k + j)] = f"fwd.scale{s}.dense{k + 1:02d}"
    table[fwd.format(36) + "/conv/layer_with_weights-0"] = "fwd.fusion.conv1x1"
    table[fwd.format(36) + "/conv/layer_with_weights-1"] = "fwd.fusion.conv3x3"
    for j, s in enumerate(("0", "2", "4")):
        table[fwd.format(37 + j)] = f"fwd.out{s}"

    def branch(s: str, start: int) -> None:
        names = [f"inv.x{s}.conv1d{k}" for k in range(6)]
        for r in range(4):
            for i in range(3):
                names += [f"inv.x{s}.rdb{r}.c1_{i}", f"inv.x{s}.rdb{r}.c2_{i}"]
            names.append(f"inv.x{s}.rdb{r}.c1x1")
        for offset, name in enumerate(names):
            table[inv.format(start + offset)] = name

    branch("4", 0)
    table[inv.format(34) + "/conv/layer_with_weights-0"] = "inv.fusion.conv1x1"
    table[inv.format(34) + "/conv/layer_with_weights-1"] = "inv.fusion.conv3x3"
    branch("2", 35)
    branch("0", 69)
    for j, s in enumerate(("0", "2", "4")):
        table[inv.format(103 + j)] = f"inv.out{s}"
    return table


#: Checkpoint layer path → structural Keras layer name.
CHECKPOINT_LAYERS: dict[str, str] = _checkpoint_layer_table()
