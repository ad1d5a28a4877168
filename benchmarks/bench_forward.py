"""Forward time of one 32×1×128×128 batch: our m-rBCR (PyTorch) vs the original (TensorFlow/Keras).

Command (from the repository root)::

    .venv/bin/python benchmarks/bench_forward.py                  # 7 rounds, 2 warm-ups; ~4 min
    .venv/bin/python benchmarks/bench_forward.py --original skip  # ours only

What is measured
----------------
* The batch: 32 real 128² patches (non-overlapping tiles of FMD field-19 raw frames 0 and 1),
  percentile-normalised (0.1/99.9) to [0, 1]. The same float32 array goes to both implementations.
* Ours: the faithful (training) network, ``model.restore(x)`` under ``torch.inference_mode``,
  in float32 NCHW (the reference), float32 and bfloat16 (``torch.autocast``) channels_last; then
  each inference backend × precision as ``predict`` runs it (``debcr.backends.make_runner``: the
  inference-only network of ``debcr.nn.fast``; PyTorch channels_last, OpenVINO with two streams),
  with the published 2D_denoising weights. glibc's allocator is tuned as debcr tunes it
  (``--no-malloc-tuning`` leaves it alone, to measure what the tuning brings).
* The original (if its environment exists, see ``original_env.py``; built on first use): debcr
  0.1.0's Keras model restored from the published checkpoint, run in graph mode in a persistent
  subprocess of the original environment's python: ``model.predict_on_batch``, a
  ``tf.function``-wrapped ``model(inputs, training=False)``, and ``debcr.model.predict(model, x,
  32)`` (the Keras ``predict`` loop).
* Every variant is first called ``--warmup`` times untimed; then ``--repeats`` rounds each time
  every variant once (order rotated per round), so that ours and the original see the same
  background load. Reported: median, min and max (``time.perf_counter``), patches/s, the speed-up
  over the original's best graph-mode median (``predict_on_batch`` or ``tf.function``), the max
  abs. difference of each output from our float32 NCHW output and from the original's output, and
  the share of the CPU taken by other processes while each variant ran.

Timings on a shared 2-core machine are noisy: another CPU-heavy job running at the same time slows
either side (see the "other CPU load" column).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from _common import (
    FMD_FIELD19_RAW,
    WEIGHTS_2D_DENOISING,
    WORK,
    OriginalWorker,
    OtherLoad,
    fmt,
    machine_line,
    median,
    original_env_info,
    read_png,
    table,
)
from debcr import runtime

ORIGINAL_CODE = r"""
import sys, time
import numpy as np
batch_path, weights, out_path = sys.argv[1:4]
S = {}

def setup():
    import tensorflow as tf
    import debcr
    from debcr._core.model.utils import multi_input
    t0 = time.perf_counter()
    model = debcr.model.init(weights_path=weights, input_size=128, ckpt_name="ckpt-best")
    S["load_s"] = time.perf_counter() - t0
    x = np.load(batch_path)
    inputs = multi_input(x[..., None])
    S.update(tf=tf, debcr=debcr, model=model, x=x, inputs=inputs,
             tensors=[tf.constant(a) for a in inputs],
             graph=tf.function(lambda a, b, c: model([a, b, c], training=False)))

def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return {"s": time.perf_counter() - t0}

def _save():
    z0 = np.asarray(S["model"].predict_on_batch(S["inputs"])[0])[..., 0]
    np.save(out_path, z0.astype(np.float32))
    return {"saved": out_path}

JOBS = {
    "predict_on_batch": lambda: _timed(lambda: S["model"].predict_on_batch(S["inputs"])),
    "tf.function": lambda: _timed(lambda: [t.numpy() for t in S["graph"](*S["tensors"])]),
    "debcr.model.predict": lambda: _timed(
        lambda: S["debcr"].model.predict(S["model"], S["x"], batch_size=32)),
    "save": _save,
    "info": lambda: {
        "tf_version": S["tf"].__version__, "load_s": S["load_s"],
        "intra_op_threads": S["tf"].config.threading.get_intra_op_parallelism_threads(),
    },
}
"""
ORIGINAL_JOBS = ("predict_on_batch", "tf.function", "debcr.model.predict")


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


def our_variants(batch: np.ndarray, backends: bool = True) -> dict[str, Callable[[], np.ndarray]]:
    """Name → zero-argument call returning the full-resolution output (N, H, W) as numpy.

    The training network (eager, as before) in float32 NCHW (the reference), channels_last
    float32 and bfloat16 (autocast); then each inference backend × precision, as ``predict``
    runs them (:func:`debcr.backends.make_runner`: the inference-only network).
    """
    import debcr
    from debcr.backends import make_runner
    from debcr.backends.openvino_runner import available

    variants = {}
    for layout, precision in (
        ("NCHW", "float32"),
        ("channels_last", "float32"),
        ("channels_last", "bfloat16"),
    ):
        mf = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        model = debcr.model.init("2D_denoising").eval().to(memory_format=mf)
        x = torch.from_numpy(batch[:, None]).contiguous(memory_format=mf)

        def call(model=model, x=x, precision=precision):
            with torch.inference_mode(), runtime.autocast_context(x.device, precision):
                return model.restore(x).float()[:, 0].numpy()

        variants[f"eager {precision} {layout}"] = call
    if not backends:
        return variants
    model = debcr.model.init("2D_denoising")
    cpu = torch.device("cpu")
    for backend in ("torch", "openvino"):
        if backend == "openvino" and not available():
            print("OpenVINO not installed: its rows are skipped")
            continue
        for precision in ("float32", "bfloat16"):
            runner = make_runner(model, backend, cpu, precision)
            variants[f"{backend} {precision} (inference form)"] = lambda r=runner: r.run(batch)
    return variants


def measure(
    calls: dict[str, Callable[[], float]], repeats: int, warmup: int, pids: list[int]
) -> tuple[dict[str, list[float]], dict[str, OtherLoad]]:
    """Warm up every call, then ``repeats`` rotated rounds; each call returns its own seconds."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    names = list(calls)
    times: dict[str, list[float]] = {n: [] for n in names}
    loads = {n: OtherLoad(pids) for n in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            with loads[name]:
                times[name].append(calls[name]())
    return times, loads


def _timer(fn: Callable[[], object]) -> Callable[[], float]:
    def timed() -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return timed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed rounds (every variant once; default 7)"
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
    parser.add_argument(
        "--no-malloc-tuning",
        action="store_true",
        help="leave glibc's allocator as it is (to measure what debcr's tuning brings)",
    )
    args = parser.parse_args()
    if not args.no_malloc_tuning:
        runtime.tune_allocator()

    print(f"Machine: {machine_line()}\n")
    batch = make_batch(args.batch)
    ours = our_variants(batch)
    import debcr

    n_params = sum(p.numel() for p in debcr.model.init("2D_denoising").parameters())

    info = original_env_info(args.original)
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        batch_path, out_path = Path(tmp) / "batch.npy", Path(tmp) / "z0.npy"
        np.save(batch_path, batch)
        worker = None
        if info is not None:
            try:
                worker = OriginalWorker(
                    info["python"],
                    ORIGINAL_CODE,
                    [str(batch_path), str(WEIGHTS_2D_DENOISING), str(out_path)],
                )
            except RuntimeError as exc:
                print(f"original debcr failed: {exc}", file=sys.stderr)
        calls = {name: _timer(fn) for name, fn in ours.items()}
        if worker is not None:
            for job in ORIGINAL_JOBS:
                calls[f"original {job}"] = lambda job=job: worker.call(job)["s"]
        try:
            times, loads = measure(calls, args.repeats, args.warmup, [worker.pid] if worker else [])
            if worker is not None:
                orig_info = worker.call("info")
                worker.call("save")
                orig_out = np.load(out_path)
        finally:
            if worker is not None:
                worker.close()

    outs = {name: np.asarray(fn()) for name, fn in ours.items()}
    reference = outs["eager float32 NCHW"]
    orig_best = None
    if worker is not None:
        import original_env

        print(
            f"Original: {original_env.describe(info)}; TF intra-op threads setting "
            f"{orig_info['intra_op_threads']} (0 = all cores); "
            f"model build+restore {orig_info['load_s']:.2f} s\n"
        )
        orig_best = min(median(times[f"original {j}"]) for j in ORIGINAL_JOBS[:2])
    else:
        print("Original: not measured (see the reason above)\n")

    print(
        f"Batch {args.batch}×1×128×128 float32; {args.repeats} interleaved timed rounds after "
        f"{args.warmup} warm-ups per variant; m-rBCR parameters (ours): {n_params:,}\n"
    )
    headers = [
        "implementation",
        "median s",
        "min s",
        "max s",
        "patches/s",
        "speed-up vs original",
        "max abs diff vs eager fp32",
        "max abs diff vs original",
        "other CPU load",
    ]
    rows = []
    for name, t in times.items():
        med = median(t)
        is_orig = name.startswith("original")
        out = orig_out if is_orig else outs[name]
        rows.append(
            [
                name.replace("original", f"original TF {orig_info['tf_version']}")
                if is_orig
                else name,
                f"{med:.3f}",
                f"{min(t):.3f}",
                f"{max(t):.3f}",
                f"{args.batch / med:.1f}",
                fmt(orig_best / med) + "×" if orig_best else "n/a",
                f"{np.abs(out - reference).max():.2e}",
                "—" if is_orig else (f"{np.abs(out - orig_out).max():.2e}" if worker else "n/a"),
                str(loads[name]),
            ]
        )
    print(table(headers, rows))
    print(
        "\nother CPU load = share of the cores used by other processes while that variant ran; "
        "> ~10% means inflated times (interleaving spreads it evenly over all variants)."
    )
    if args.json:
        args.json.write_text(json.dumps({"params": n_params, "times": times}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
