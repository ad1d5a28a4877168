"""Forward time of one 32×1×128×128 batch: our m-rBCR (PyTorch) vs the original (TensorFlow/Keras).

Command (from the repository root)::

    .venv/bin/python benchmarks/bench_forward.py                  # 7 repeats after 2 warm-ups
    .venv/bin/python benchmarks/bench_forward.py --original skip  # ours only

What is measured
----------------
* The batch: 32 real 128² patches (non-overlapping tiles of FMD field-19 raw frames 0 and 1),
  percentile-normalised (0.1/99.9) to [0, 1]. The same float32 array goes to both implementations.
* Ours: ``model.restore(x)`` (full-resolution output) under ``torch.inference_mode`` with the
  published 2D_denoising weights, in float32 and in bfloat16 (``torch.autocast``), with NCHW and
  with channels_last tensors/weights. Median, min and max of ``--repeats`` timed calls after
  ``--warmup`` untimed ones (``time.perf_counter``), patches/s, speed-up vs the original, and the
  max abs. difference of each output from our float32 NCHW output and from the original's output.
* The original (if its environment exists, see ``original_env.py``; built on first use): debcr
  0.1.0's Keras model restored from the published checkpoint, run in graph mode in a subprocess of
  the original environment's python: ``model.predict_on_batch``, a ``tf.function``-wrapped
  ``model(inputs, training=False)``, and ``debcr.model.predict(model, x, 32)`` (the Keras
  ``predict`` loop). The speed-up column divides the best graph-mode median of the original
  (``predict_on_batch`` or ``tf.function``) by ours.

Timings on a shared 2-core machine are noisy: another CPU-heavy job running at the same time slows
either side. The load average before the run is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from _common import (
    FMD_FIELD19_RAW,
    WEIGHTS_2D_DENOISING,
    WORK,
    OtherLoad,
    fmt,
    machine_line,
    median,
    original_env_info,
    read_png,
    run_json,
    table,
    time_repeated,
)

ORIGINAL_SNIPPET = r"""
import contextlib, io, json, sys, time
import numpy as np
batch_path, weights, out_path, repeats, warmup = sys.argv[1:6]
repeats, warmup = int(repeats), int(warmup)
sink = io.StringIO()
with contextlib.redirect_stdout(sink):
    import tensorflow as tf
    import debcr
    from debcr._core.model.utils import multi_input
    t0 = time.perf_counter()
    model = debcr.model.init(weights_path=weights, input_size=128, ckpt_name="ckpt-best")
    load_s = time.perf_counter() - t0
x = np.load(batch_path)
inputs = multi_input(x[..., None])
graph_call = tf.function(lambda a, b, c: model([a, b, c], training=False))
tensors = [tf.constant(a) for a in inputs]

def timed(fn):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out

res = {}
with contextlib.redirect_stdout(sink):
    res["predict_on_batch"] = timed(lambda: model.predict_on_batch(inputs))
    res["tf.function"] = timed(lambda: [t.numpy() for t in graph_call(*tensors)])
    res["debcr.model.predict"] = timed(lambda: debcr.model.predict(model, x, batch_size=32))
    z0 = np.asarray(model.predict_on_batch(inputs)[0])[..., 0]
np.save(out_path, z0.astype(np.float32))
print(json.dumps({"times": res, "load_s": load_s, "tf_version": tf.__version__,
                  "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}))
"""


def make_batch(n: int = 32, size: int = 128) -> np.ndarray:
    """n real patches (n, size, size) float32 in [0, 1] from FMD field 19 raw frames."""
    from debcr.data import normalize

    per_frame = (512 // size) ** 2
    frames = [read_png(p) for p in FMD_FIELD19_RAW[: -(-n // per_frame)]]
    patches = [
        f[y : y + size, x : x + size]
        for f in frames
        for y in range(0, 512, size)
        for x in range(0, 512, size)
    ][:n]
    return normalize(np.stack(patches), pmin=0.1, pmax=99.9).astype(np.float32)


def bench_ours(batch: np.ndarray, repeats: int, warmup: int) -> tuple[list[dict], int]:
    import debcr

    rows = []
    base = debcr.model.init("2D_denoising").eval()
    n_params = sum(p.numel() for p in base.parameters() if p.requires_grad)
    reference = None
    for layout in ("NCHW", "channels_last"):
        fmt_ = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        model = debcr.model.init("2D_denoising").eval().to(memory_format=fmt_)
        x = torch.from_numpy(batch[:, None]).contiguous(memory_format=fmt_)
        for precision in ("float32", "bfloat16"):

            def call(model=model, x=x, precision=precision):
                with torch.inference_mode():
                    if precision == "float32":
                        return model.restore(x)
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return model.restore(x)

            with OtherLoad() as load:
                times = time_repeated(call, repeats, warmup)
            out = call().float()[:, 0].numpy()
            if reference is None:
                reference = out
            rows.append(
                {
                    "name": f"ours {precision} {layout}",
                    "times": times,
                    "out": out,
                    "diff_fp32": float(np.abs(out - reference).max()),
                    "other": str(load),
                }
            )
    return rows, n_params


def bench_original(info: dict, batch: np.ndarray, repeats: int, warmup: int) -> dict | None:
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        batch_path, out_path = Path(tmp) / "batch.npy", Path(tmp) / "z0.npy"
        np.save(batch_path, batch)
        try:
            with OtherLoad() as load:
                res = run_json(
                    [
                        info["python"],
                        "-c",
                        ORIGINAL_SNIPPET,
                        str(batch_path),
                        str(WEIGHTS_2D_DENOISING),
                        str(out_path),
                        str(repeats),
                        str(warmup),
                    ]
                )
        except RuntimeError as exc:
            print(f"original debcr failed: {exc}", file=sys.stderr)
            return None
        res["out"] = np.load(out_path)
    res["other"] = str(load)
    return res


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed calls per variant (default 7)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    parser.add_argument("--batch", type=int, default=32, help="patches per batch (default 32)")
    parser.add_argument(
        "--original",
        choices=("auto", "skip"),
        default="auto",
        help="auto: time the original if its env exists or can be built; skip: don't",
    )
    parser.add_argument("--json", type=Path, help="also write the raw timings here")
    args = parser.parse_args()

    print(f"Machine: {machine_line()}\n")
    batch = make_batch(args.batch)
    ours, n_params = bench_ours(batch, args.repeats, args.warmup)

    info = original_env_info(args.original)
    orig = bench_original(info, batch, args.repeats, args.warmup) if info else None
    orig_best = None
    if orig:
        import original_env

        print(
            f"Original: {original_env.describe(info)}; TF intra-op threads setting "
            f"{orig['intra_op_threads']} (0 = all cores); "
            f"model build+restore {orig['load_s']:.2f} s\n"
        )
        orig_best = min(median(t) for k, t in orig["times"].items() if k != "debcr.model.predict")
    else:
        print("Original: not measured (see the reason above)\n")

    print(
        f"Batch {args.batch}×1×128×128 float32; {args.repeats} timed repeats after "
        f"{args.warmup} warm-ups; m-rBCR parameters (ours): {n_params:,}\n"
    )
    headers = [
        "implementation",
        "median s",
        "min s",
        "max s",
        "patches/s",
        "speed-up vs original",
        "max abs diff vs ours fp32",
        "max abs diff vs original",
        "other CPU load",
    ]
    rows = []
    for r in ours:
        med = median(r["times"])
        rows.append(
            [
                r["name"],
                f"{med:.3f}",
                f"{min(r['times']):.3f}",
                f"{max(r['times']):.3f}",
                f"{args.batch / med:.1f}",
                fmt(orig_best / med if orig_best else None) + "×" * bool(orig),
                f"{r['diff_fp32']:.2e}",
                f"{np.abs(r['out'] - orig['out']).max():.2e}" if orig else "n/a",
                r["other"],
            ]
        )
    if orig:
        for name, times in orig["times"].items():
            med = median(times)
            rows.append(
                [
                    f"original TF {orig['tf_version']} {name}",
                    f"{med:.3f}",
                    f"{min(times):.3f}",
                    f"{max(times):.3f}",
                    f"{args.batch / med:.1f}",
                    f"{orig_best / med:.2f}×",
                    f"{np.abs(orig['out'] - ours[0]['out']).max():.2e}",
                    "—",
                    orig["other"],
                ]
            )
    print(table(headers, rows))
    print(
        "\nother CPU load = share of the 2 cores used by other processes during that row's "
        "measurement (the original's: over its whole subprocess); > ~10% means inflated times."
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "params": n_params,
                    "ours": {r["name"]: r["times"] for r in ours},
                    "original": orig["times"] if orig else None,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
