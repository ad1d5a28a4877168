"""Three exact forms of the inference network's residual-dense blocks, timed in OpenVINO.

Command (from the repository root)::

    .venv/bin/python benchmarks/bench_rdb_forms.py                          # f32, 512², 2 threads
    .venv/bin/python benchmarks/bench_rdb_forms.py --precision bf16 --size 1024

Why: in ``debcr.nn.fast`` each block merges the convolutions that read the same features into
one convolution with 16 outputs (4 groups of 4) and then splits the result by channel. OpenVINO
keeps these tensors channels-last, so every split is a strided copy run by its reference kernel
(29 % of a bf16 profile on an AMD Zen 4; ~10 % in f32 on an Intel Xeon). The forms compared,
all the same function (max |Δ| printed):

* ``merged``: today's ``_FastRDB`` (merged convolutions, split outputs);
* ``separate``: one convolution per consumer, no split (the same multiply-adds, more kernels);
* ``folded``: no split; every consumer reads the whole 16-channel tensor with zero weights
  outside its group, and later convolutions write zeros into the groups they do not feed,
  so the partial sums stay one tensor (more multiply-adds, no strided copies).

Each form is converted with ``openvino.convert_model`` and compiled for one ``--size``² tile
(one stream, ``--threads`` threads, ``--precision``); the forms are then timed interleaved
(``--repeats`` rounds) and one extra call per form with OpenVINO's per-layer counters gives the
share of the split and concatenation layers. Which form a machine should run is decided from
this table; today ``merged`` is what ``debcr`` ships.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from _common import machine_line, median, table
from debcr.model import init
from debcr.nn.fast import _conv, _FastRDB, inference_network
from debcr.runtime import cpu_name, native_bf16


class SeparateRDB(nn.Module):
    """One convolution per consumer of each merged convolution: no channel split."""

    def __init__(self, block: _FastRDB) -> None:
        super().__init__()
        g = block.g

        def parts(conv: nn.Conv2d, n: int) -> nn.ModuleList:
            w, b = conv.weight, conv.bias
            return nn.ModuleList(
                _conv(w[i * g : (i + 1) * g], None if b is None else b[i * g : (i + 1) * g], 1, 1)
                for i in range(n)
            )

        self.x, self.r1, self.r2 = (
            parts(block.from_x, 4),
            parts(block.from_r1, 3),
            parts(block.from_r2, 2),
        )
        self.refine0, self.refine1 = block.refine0, block.refine1
        self.refine2_squeeze = block.refine2_squeeze

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r1 = self.refine0(F.relu(self.x[0](x)))
        r2 = self.refine1(F.relu(self.x[1](x) + self.r1[0](r1)))
        e2 = self.x[2](x) + self.r1[1](r1) + self.r2[0](r2)
        squeezed = self.x[3](x) + self.r1[2](r1) + self.r2[1](r2) + self.refine2_squeeze(F.relu(e2))
        return torch.cat([squeezed, x], dim=1)


class FoldedRDB(nn.Module):
    """The merged outputs stay whole; consumers read all groups (zero weights outside theirs)."""

    def __init__(self, block: _FastRDB) -> None:
        super().__init__()
        g = block.g
        groups = 4 * g

        def leading_zeros(conv: nn.Conv2d, n: int) -> nn.Conv2d:
            w = conv.weight
            return _conv(torch.cat([w.new_zeros(n * g, *w.shape[1:]), w]), None, padding=1)

        def reading(conv: nn.Conv2d, group: int) -> nn.Conv2d:
            w = conv.weight
            full = w.new_zeros(w.shape[0], groups, *w.shape[2:])
            full[:, group * g : (group + 1) * g] = w
            return _conv(full, conv.bias, padding=1)

        self.from_x = block.from_x
        self.from_r1, self.from_r2 = (
            leading_zeros(block.from_r1, 1),
            leading_zeros(block.from_r2, 2),
        )
        self.refine0, self.refine1 = reading(block.refine0, 0), reading(block.refine1, 1)
        self.refine2_squeeze = reading(block.refine2_squeeze, 2)
        select = torch.zeros(g, groups, 1, 1)
        select[torch.arange(g), 3 * g + torch.arange(g)] = 1.0
        self.select = _conv(select, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.from_x(x)
        r1 = self.refine0(F.relu(a))
        s1 = a + self.from_r1(r1)
        r2 = self.refine1(F.relu(s1))
        s2 = s1 + self.from_r2(r2)
        squeezed = self.select(s2) + self.refine2_squeeze(F.relu(s2))
        return torch.cat([squeezed, x], dim=1)


FORMS = {"merged": None, "separate": SeparateRDB, "folded": FoldedRDB}


def build(form: str, model: str) -> nn.Module:
    """The inference network of built-in ``model`` with its blocks in ``form``."""
    net = inference_network(init(model))
    cls = FORMS[form]
    if cls is not None:
        for module in list(net.modules()):
            if isinstance(module, nn.ModuleList):
                for i, child in enumerate(module):
                    if isinstance(child, _FastRDB):
                        module[i] = cls(child)
    return net.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="2D_denoising")
    parser.add_argument("--size", type=int, default=512, help="tile side (multiple of 4)")
    parser.add_argument("--precision", default="f32", choices=("f32", "bf16"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    import openvino as ov

    torch.set_num_threads(args.threads)
    x = np.random.default_rng(0).random((1, 1, args.size, args.size), dtype=np.float32)
    core = ov.Core()
    compiled, reference, diffs = {}, None, {}
    for form in FORMS:
        net = build(form, args.model)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            out = net(torch.from_numpy(x)).numpy()
            ov_model = ov.convert_model(
                net,
                example_input=torch.zeros(1, 1, 64, 64),
                input=[ov.PartialShape([1, 1, -1, -1])],
            )
        reference = out if reference is None else reference
        ov_model.reshape({ov_model.inputs[0]: [1, 1, args.size, args.size]})
        compiled[form] = core.compile_model(
            ov_model,
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": args.precision,
                "INFERENCE_NUM_THREADS": args.threads,
                "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY",
                "PERF_COUNT": True,
            },
        )
        got = compiled[form]({0: x})[0]
        diffs[form] = (float(np.abs(out - reference).max()), float(np.abs(got - reference).max()))
    times: dict[str, list[float]] = {form: [] for form in FORMS}
    for _ in range(args.repeats):
        for form, model in compiled.items():
            t0 = time.perf_counter()
            model({0: x})
            times[form].append(time.perf_counter() - t0)
    rows = []
    for form, model in compiled.items():
        request = model.create_infer_request()
        request.infer({0: x})
        per_type: collections.Counter = collections.Counter()
        for layer in request.profiling_info:
            per_type[layer.node_type] += layer.real_time.total_seconds()
        total = sum(per_type.values())
        split = per_type["Split"] + per_type["VariadicSplit"] + per_type["StridedSlice"]
        rows.append(
            [
                form,
                f"{median(times[form]):.3f}",
                f"{min(times[form]):.3f}",
                f"{median(times[form]) / median(times['merged']):.2f}",
                f"{100 * split / total:.1f} %",
                f"{100 * per_type['Concat'] / total:.1f} %",
                f"{diffs[form][0]:.1e}",
                f"{diffs[form][1]:.1e}",
            ]
        )
    print(f"CPU: {cpu_name()}, native bf16: {'yes' if native_bf16() else 'no'}")
    print(f"Machine: {machine_line()}")
    print(
        f"{args.model}, one {args.size}² tile, OpenVINO {ov.__version__.split('-')[0]} "
        f"{args.precision}, {args.threads} threads, {args.repeats} interleaved rounds\n"
    )
    print(
        table(
            [
                "form",
                "median s",
                "min s",
                "vs merged",
                "split layers",
                "concat layers",
                "max abs Δ, torch vs merged",
                "max abs Δ, OpenVINO vs torch merged",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
