"""Training-step throughput: our m-rBCR (PyTorch) vs the original (TensorFlow/Keras).

Command (from the repository root, on a quiet machine)::

    .venv/bin/python benchmarks/bench_train.py                          # 5 repeats, 32×128²
    .venv/bin/python benchmarks/bench_train.py --repeats 2 --lightning-steps 6   # quick check
    .venv/bin/python benchmarks/bench_train.py --batch 8 --patch 64 --original skip

What is measured
----------------
One training step = forward of a ``--batch``×1×``--patch``² batch + the reference loss over the
three output scales (MSE + 0.5 · mean |DFT_W(y − ŷ)|, summed over full, ½ and ¼ resolution) +
backward + one Adam update (lr 1e-3, ε 1e-7), starting from a freshly Glorot-initialised model.
The batch is real data: noisy FMD Confocal_BPAE_B field-19 raw frames as input and the field's
avg50 image as target, cut into ``--patch``² tiles and percentile-normalised (0.1/99.9) per
image; the same float32 arrays go to every implementation.

* ours, plain loop (channels-last): ``debcr.nn.MRBCR`` in train mode, run with merged weights
  (``debcr.nn.merged.merged_forward``, as ``debcr.model.train`` runs it) and as the faithful
  graph, ``debcr.nn.losses.mrbcr_loss``, ``torch.optim.Adam``; float32, and bfloat16 autocast
  (the loss is computed in float32).
* the CARE U-Net baseline (``debcr.nn.CAREUNet``, depth 2, 32 filters, Glorot init), MSE on
  its one output, the same batch, optimiser and loop.
* the original (if its environment exists, see ``original_env.py``; built on first use): debcr
  0.1.0's ``_core.model.m_rBCR.m_rBCR`` model, ``_core.model.loss.loss_function_mimo`` and
  ``_core.model.utils.multi_input``, with a new ``tf.keras.optimizers.Adam(1e-3)``, in a
  subprocess of the original environment's python. Two variants: the step exactly as the
  original's ``train_model`` loop runs it (eager ``GradientTape``, loss and PSNR metric inside the
  tape), and the same step wrapped in ``tf.function`` (graph mode; its tracing time is reported
  separately).
* ours through Lightning: ``debcr.model.train`` for ``--lightning-steps`` steps on the same
  patches (validation and checkpoints only at the end); the rate is taken between the end of the
  first and the end of the last training batch (timestamps from a hook), so set-up, the first
  step and the final validation are excluded. It shows the trainer's overhead over the plain
  loop.

Each plain-loop row reports the median (and min/max) of ``--repeats`` timed steps after
``--warmup`` untimed ones (``time.perf_counter``), and the convolution/matrix-product FLOPs of
one step (``torch.utils.flop_counter``; forward, loss and backward) with the rate achieved,
which separates how much work a network needs from how efficiently the CPU does it. Threads:
library defaults (torch: one per core; TF: all cores) unless ``--threads`` sets both. Timings
on a shared 2-core machine are noisy; the load average and the share of CPU taken by other
processes are printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import (
    FMD_FIELD19_GT,
    FMD_FIELD19_RAW,
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

LEARNING_RATE = 1e-3
ADAM_EPS = 1e-7  # Keras' default, which the original trained with

ORIGINAL_SNIPPET = r"""
import contextlib, io, json, sys, time
import numpy as np
low_path, gt_path, repeats, warmup, threads = sys.argv[1:6]
repeats, warmup, threads = int(repeats), int(warmup), int(threads)
sink = io.StringIO()
with contextlib.redirect_stdout(sink):
    import tensorflow as tf
    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf.random.set_seed(0)
    from debcr._core.model.m_rBCR import m_rBCR
    from debcr._core.model.loss import loss_function_mimo
    from debcr._core.model.metrics import metrics_func_mimo
    from debcr._core.model.utils import multi_input
low = np.load(low_path)[..., None]
gt = np.load(gt_path)[..., None]
t0 = time.perf_counter()
model = m_rBCR(input_shape=(low.shape[1], low.shape[2], 1))
build_s = time.perf_counter() - t0
n_params = int(sum(int(np.prod(v.shape)) for v in model.trainable_variables))
inputs = [tf.constant(a) for a in multi_input(low)]
targets = [tf.constant(a) for a in multi_input(gt)]


def make_step(optimizer):
    # the body of debcr._core.model.train.train_model's loop (batch loading aside)
    def step(w_list, o_list):
        with tf.GradientTape() as tape:
            predictions = model(w_list)
            loss = loss_function_mimo(o_list, predictions)
            metric = metrics_func_mimo(o_list, predictions)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss, metric
    return step


def timed(fn):
    first = None
    for i in range(warmup):
        t = time.perf_counter()
        fn()
        if i == 0:
            first = time.perf_counter() - t
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out, first


res, first, losses = {}, {}, {}
with contextlib.redirect_stdout(sink):
    eager = make_step(tf.keras.optimizers.Adam(learning_rate=1e-3))
    graph = tf.function(make_step(tf.keras.optimizers.Adam(learning_rate=1e-3)))
    for name, step in (("eager (as train_model)", eager), ("tf.function", graph)):
        def call(step=step):
            loss, _ = step(inputs, targets)
            losses[name] = float(loss.numpy())
        res[name], first[name] = timed(call)
print(json.dumps({"times": res, "first_call_s": first, "build_s": build_s, "params": n_params,
                  "last_loss": losses, "tf_version": tf.__version__,
                  "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}))
"""


def make_pairs(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` real (noisy, clean) patch pairs ``(n, size, size)`` float32 from FMD field 19.

    Inputs: ``size``² tiles of the raw frames 0, 1, … (as many frames as needed, up to 16; then
    the tiles repeat); targets: the same tiles of the field's avg50 image. Each image is
    percentile-normalised (0.1/99.9, no clipping) on its own, as ``debcr.data.prepare`` does.
    """
    from debcr.data import normalize

    if size > 512 or size % 4:
        raise ValueError("--patch must be a multiple of 4 and at most 512")
    origins = [
        (y, x) for y in range(0, 512 - size + 1, size) for x in range(0, 512 - size + 1, size)
    ]
    n_frames = min(len(FMD_FIELD19_RAW), -(-n // len(origins)))
    frames = [
        normalize(read_png(path).astype(np.float32), clip=False)
        for path in FMD_FIELD19_RAW[:n_frames]
    ]
    gt_img = normalize(read_png(FMD_FIELD19_GT).astype(np.float32), clip=False)
    low, gt = [], []
    for i in range(n):
        img = frames[(i // len(origins)) % n_frames]
        y, x = origins[i % len(origins)]
        low.append(img[y : y + size, x : x + size])
        gt.append(gt_img[y : y + size, x : x + size])
    return np.stack(low).astype(np.float32), np.stack(gt).astype(np.float32)


def bench_ours(low: np.ndarray, gt: np.ndarray, repeats: int, warmup: int) -> list[dict]:
    """Plain torch training steps: m-rBCR merged (as debcr trains) and faithful, float32 and
    bfloat16 autocast; the CARE U-Net baseline (MSE on its one output) at the same batch."""
    from torch.utils.flop_counter import FlopCounterMode

    import debcr
    from debcr.nn import CAREUNet, init_glorot_
    from debcr.nn.losses import mrbcr_loss
    from debcr.nn.merged import merged_forward

    # channels-last, as debcr's Lightning module trains
    x = torch.from_numpy(low[:, None]).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(gt[:, None])
    variants = [
        ("merged", "float32"),
        ("faithful", "float32"),
        ("merged", "bfloat16"),
        ("faithful", "bfloat16"),
        ("care", "float32"),
    ]
    rows = []
    for form, precision in variants:
        if form == "care":
            torch.manual_seed(0)
            model = init_glorot_(CAREUNet()).train().to(memory_format=torch.channels_last)
        else:
            model = debcr.model.init(None, seed=0).train().to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, eps=ADAM_EPS)
        last = {}

        def forward(model=model, form=form):
            if form == "merged":
                return merged_forward(model, x)
            return model(x)

        def step(forward=forward, optimizer=optimizer, precision=precision, form=form, last=last):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                outputs = forward()
            if form == "care":
                loss = torch.nn.functional.mse_loss(outputs.float(), y)
            else:
                loss = mrbcr_loss(outputs, y)
            loss.backward()
            optimizer.step()
            last["loss"] = float(loss.detach())

        with OtherLoad() as load:
            times = time_repeated(step, repeats, warmup)
        # Convolution and matrix-product FLOPs of one more step (forward, loss, backward):
        # separates the work a network needs from how fast the CPU does it.
        with FlopCounterMode(display=False) as flops:
            step()
        name = (
            "CARE U-Net (debcr.nn.CAREUNet, MSE), plain loop, float32"
            if form == "care"
            else f"ours ({form} weights), plain loop, {precision}"
        )
        rows.append(
            {
                "name": name,
                "times": times,
                "loss": last["loss"],
                "other": str(load),
                "gflop": flops.get_total_flops() / 1e9,
            }
        )
    return rows


#: Timestamps of the ends of training batches of the Lightning run (filled by a hook).
_STEP_ENDS: list[float] = []


def quiet_lightning() -> None:
    """Keep Lightning's info messages and checkpoint-loading notices out of the output."""
    import warnings

    import lightning.pytorch  # noqa: F401  (sets its loggers up on import; adjust them after)

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*weights_only.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")


def bench_lightning(low: np.ndarray, gt: np.ndarray, steps: int) -> dict:
    """``debcr.model.train`` for ``steps`` steps; steps/s between the first and last batch end."""
    import debcr
    import debcr.training.run as run_module
    from debcr.config import TrainConfig
    from debcr.training.module import MRBCRModule

    class TimedModule(MRBCRModule):
        def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
            _STEP_ENDS.append(time.perf_counter())

    quiet_lightning()
    _STEP_ENDS.clear()
    original_module = run_module.MRBCRModule
    run_module.MRBCRModule = TimedModule  # only adds the timestamp hook
    WORK.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=WORK, prefix="bench_train_") as tmp:
            config = TrainConfig(
                weights_path=str(Path(tmp) / "run"),
                batch_size=low.shape[0],
                num_steps=steps,
                val_freq=steps,
                save_freq=steps,
                patience=10,
                patch_size=low.shape[-1],
                learning_rate=LEARNING_RATE,
                adam_eps=ADAM_EPS,
                seed=0,
                accelerator="cpu",
                progress=False,
            )
            data = {"low": low, "gt": gt}
            val = {"low": low[:1], "gt": gt[:1]}
            with OtherLoad() as load:
                t0 = time.perf_counter()
                debcr.model.train(data, val, config)
                total = time.perf_counter() - t0
    finally:
        run_module.MRBCRModule = original_module
    stamps = list(_STEP_ENDS)
    if len(stamps) < 2:
        raise RuntimeError("Lightning ran fewer than 2 steps; use --lightning-steps ≥ 2")
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    return {
        "steps": len(stamps),
        "s_per_step": per_step,
        "total_s": total,
        "other": str(load),
        "precision": f"precision auto = {run_module.trainer_precision(config)}",
    }


def bench_original(
    info: dict, low: np.ndarray, gt: np.ndarray, repeats: int, warmup: int, threads: int
) -> dict | None:
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=WORK, prefix="bench_train_") as tmp:
        low_path, gt_path = Path(tmp) / "low.npy", Path(tmp) / "gt.npy"
        np.save(low_path, low)
        np.save(gt_path, gt)
        try:
            with OtherLoad() as load:
                res = run_json(
                    [
                        info["python"],
                        "-c",
                        ORIGINAL_SNIPPET,
                        str(low_path),
                        str(gt_path),
                        str(repeats),
                        str(warmup),
                        str(threads),
                    ]
                )
        except RuntimeError as exc:
            print(f"original debcr failed: {exc}", file=sys.stderr)
            return None
    res["other"] = str(load)
    return res


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant (5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--batch", type=int, default=32, help="patches per batch (default 32)")
    parser.add_argument("--patch", type=int, default=128, help="patch side in px (default 128)")
    parser.add_argument(
        "--lightning-steps",
        type=int,
        default=20,
        help="steps of the debcr.model.train run (default 20; 0 skips it)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads for both torch and TF (default 0: each library's default)",
    )
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
        help="leave glibc's allocator as it is (debcr.model.train tunes it; see debcr.runtime)",
    )
    args = parser.parse_args()
    if not args.no_malloc_tuning:
        from debcr.runtime import tune_allocator

        tune_allocator()
    if args.repeats < 1 or args.warmup < 1:
        parser.error("--repeats and --warmup must be at least 1")

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    load_avg = os.getloadavg()
    print(f"Machine: {machine_line()}")
    print(
        f"Load average at start: {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}; "
        f"torch threads {torch.get_num_threads()}; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}\n"
    )
    low, gt = make_pairs(args.batch, args.patch)
    ours = bench_ours(low, gt, args.repeats, args.warmup)
    lightning = bench_lightning(low, gt, args.lightning_steps) if args.lightning_steps else None

    info = original_env_info(args.original)
    orig = bench_original(info, low, gt, args.repeats, args.warmup, args.threads) if info else None
    refs: dict[str, float] = {}
    if orig:
        import original_env

        refs = {name: median(t) for name, t in orig["times"].items()}
        print(
            f"Original: {original_env.describe(info)}; TF intra-op threads setting "
            f"{orig['intra_op_threads']} (0 = all cores); model build {orig['build_s']:.2f} s; "
            "first call (incl. tf.function tracing): "
            + ", ".join(f"{k} {v:.2f} s" for k, v in orig["first_call_s"].items())
            + f"; parameters {orig['params']:,}\n"
        )
    else:
        print("Original: not measured (see the reason above)\n")

    eager_ref = refs.get("eager (as train_model)")
    graph_ref = refs.get("tf.function")
    print(
        f"Training step on a {args.batch}×1×{args.patch}×{args.patch} float32 batch (forward + "
        "3-scale reference loss + backward + Adam); "
        f"{args.repeats} timed steps after {args.warmup} warm-ups\n"
    )
    headers = [
        "implementation",
        "median s/step",
        "min s",
        "max s",
        "steps/s",
        "patches/s",
        "speed-up vs original eager",
        "speed-up vs original tf.function",
        "loss after last step",
        "GFLOP/step",
        "GFLOP/s",
        "other CPU load",
    ]

    def row(
        name: str, times: list[float], loss: float | None, other: str, gflop: float | None = None
    ) -> list[str]:
        med = median(times)
        return [
            name,
            f"{med:.3f}",
            f"{min(times):.3f}",
            f"{max(times):.3f}",
            f"{1 / med:.3f}",
            f"{args.batch / med:.1f}",
            fmt(eager_ref / med if eager_ref else None) + "×" * bool(eager_ref),
            fmt(graph_ref / med if graph_ref else None) + "×" * bool(graph_ref),
            "—" if loss is None else f"{loss:.4f}",
            "—" if gflop is None else f"{gflop:.1f}",
            "—" if gflop is None else f"{gflop / med:.0f}",
            other,
        ]

    rows = [row(r["name"], r["times"], r["loss"], r["other"], r["gflop"]) for r in ours]
    if lightning:
        per = lightning["s_per_step"]
        rows.append(
            [
                f"ours, debcr.model.train (Lightning), {lightning['precision']}, "
                f"{lightning['steps']} steps",
                f"{per:.3f} (mean)",
                "—",
                "—",
                f"{1 / per:.3f}",
                f"{args.batch / per:.1f}",
                fmt(eager_ref / per if eager_ref else None) + "×" * bool(eager_ref),
                fmt(graph_ref / per if graph_ref else None) + "×" * bool(graph_ref),
                "—",
                "—",
                "—",
                lightning["other"],
            ]
        )
    if orig:
        for name, times in orig["times"].items():
            rows.append(
                row(
                    f"original TF {orig['tf_version']}, {name}",
                    times,
                    orig["last_loss"].get(name),
                    orig["other"],
                )
            )
    print(table(headers, rows))
    if lightning:
        # compare with the plain loop at the precision Lightning trained at
        same = "bfloat16" if "bf16" in lightning["precision"] else "float32"
        plain = median(next(r["times"] for r in ours if r["name"].endswith(same)))
        print(
            f"\nLightning: {lightning['steps']} steps in {lightning['total_s']:.1f} s in all "
            f"(incl. set-up, first step, final validation and files); per step "
            f"{lightning['s_per_step']:.3f} s vs {plain:.3f} s in the plain {same} loop "
            f"(overhead {100 * (lightning['s_per_step'] / plain - 1):+.1f} %)."
        )
    print(
        "\nother CPU load = share of the cores used by other processes during that row's "
        "measurement (the original's: over its whole subprocess); > ~10% means inflated times."
        f"\nLoad average at end: {os.getloadavg()[0]:.2f}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "batch": args.batch,
                    "patch": args.patch,
                    "ours": {r["name"]: r["times"] for r in ours},
                    "lightning": lightning,
                    "original": orig and {k: v for k, v in orig.items() if k != "other"},
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
