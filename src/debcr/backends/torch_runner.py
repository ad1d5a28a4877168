"""The PyTorch backend: the inference-only network, eager, on any device."""

from __future__ import annotations

import numpy as np
import torch

from debcr.nn.fast import has_inference_form, inference_network
from debcr.runtime import autocast_context, torch_dtype


class TorchRunner:
    """Run a network with PyTorch on ``device`` at ``precision``.

    m-rBCR models run in their inference-only form (`debcr.nn.fast.inference_network`),
    cast wholly to ``precision``; other networks (the CARE baseline, subclasses with their own
    ``restore``) run their ``restore`` under autocast. On the CPU, tensors are channels-last,
    which oneDNN convolves fastest.
    """

    backend = "torch"

    def __init__(self, model: torch.nn.Module, device: str | torch.device, precision: str) -> None:
        device = torch.device(device)
        self.device, self.precision = device, precision
        self.dtype = torch_dtype(precision)
        self.fast = has_inference_form(model)
        net = inference_network(model) if self.fast else model.eval()
        net = net.to(device)
        if self.fast:
            net = net.to(self.dtype)
        if device.type == "cpu":
            net = net.to(memory_format=torch.channels_last)
        self.net = net

    def run(self, tiles: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(tiles[:, None], dtype=np.float32))
        x = x.to(self.device)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.fast:
                y = self.net(x.to(self.dtype))
            else:
                with autocast_context(self.device, self.precision):
                    y = self.net.restore(x)
        return y[:, 0].float().cpu().numpy()
