"""Whole-image restoration: speed and quality vs the original; disk-to-disk memory on a huge image.

Commands (from the repository root)::

    .venv/bin/python benchmarks/bench_predict.py                       # (a) 2048², (b) 4096²
    .venv/bin/python benchmarks/bench_predict.py --part b --size 8192  # the 8192² memory target
    .venv/bin/python benchmarks/bench_predict.py --grid 2 --size 2048  # quick: 1024², 2048²
    .venv/bin/python benchmarks/bench_predict.py --part a              # only (a) (or b)

(a) Speed and quality on real content. A 2048² uint8 image is made of the 16 raw frames 0–15 of
    FMD Confocal_BPAE_B field 19 (the test field) arranged 4×4 (``--grid`` 1–4 picks a smaller
    mosaic); the ground truth is the field's avg50 image tiled the same way. Timed (median of
    ``--repeats`` runs of our defaults, ``--variant-repeats`` of our other variants, after a
    warm-up on a 512² crop; model load reported separately; the original runs in a persistent
    subprocess and its runs are interleaved with ours, so both see the same background load):

    * ours: ``debcr.model.predict(model, image, progress=False)`` with the defaults (precision
      and backend ``"auto"``: bfloat16 with OpenVINO on a CPU with native bfloat16 and the
      ``fast`` extra installed), and the variants of ``VARIANTS`` (``--variants``): the exact
      mode (float32), the PyTorch backend in float32 and bfloat16, OpenVINO with 2048² tiles, and
      the faithful training network run eagerly in float32 with 512² tiles (what every earlier
      release ran, with the allocator tuning of this process); the published 2D_denoising
      weights; output in input units.
    * the original (debcr 0.1.0 / TensorFlow, in a subprocess of its own environment, see
      original_env.py), the paper's workflow: ``normalize(img, 0.1, 99.9)`` → ``crop(img[None], 128,
      (0.5, 0.5))`` → ``predict(model, patches, batch_size=32)`` → ``stitch(pred, patch_num,
      (0.5, 0.5), use_cosine=True)``; its output (normalised units) is saved to
      ``benchmarks/_work/bench_predict/original_<N>.npy``.

    Quality against the GT (skimage, data_range=255): "raw" = output in input units (ours as
    returned; the original's mapped back with the same percentiles, x·(p99.9 − p0.1) + p0.1);
    "affine" = after the least-squares fit α·x + β to the GT (CARE's normalize_minmse convention).

(b) Disk to disk. An N² uint16 TIFF (default 4096², ``--size``; the target is 8192²) is made by
    tiling the real nuclei image stardist/img2d.tif (512²) and written uncompressed to
    ``benchmarks/_work/bench_predict/``; a fresh subprocess runs ``debcr.model.predict(model,
    "in.tif", output="out.tif", progress=False)``; reported: wall time of the process and of the
    call, Mpx/s, and the process's peak RSS (VmHWM of the child from /proc, read at its end;
    resident pages of the memory-mapped input/output count too; ru_maxrss is not used because on
    Linux a child inherits the parent's high-water mark through fork/exec). Target: < 1.5 GB.
    Duration = size² / speed: at the ~0.085 Mpx/s (float32) measured on the 2-core CPU, 4096²
    takes about 3.5 min and 8192² about 14 min (hence the default 4096²; the working memory does
    not depend on the size, as the tiles do not).

Timings on a shared 2-core machine are noisy (another CPU-heavy job slows either side); the load
average before each part is printed.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import (
    STARDIST_IMG,
    WEIGHTS_2D_DENOISING,
    WORK,
    OriginalWorker,
    OtherLoad,
    fmd_mosaic,
    fmt,
    machine_line,
    median,
    original_env_info,
    table,
)

OUT_DIR = WORK / "bench_predict"

ORIGINAL_WORKFLOW = r"""
import sys, time
import numpy as np
in_path, weights, out_path = sys.argv[1:4]
S = {}

def setup():
    import tensorflow as tf
    import debcr
    t0 = time.perf_counter()
    model = debcr.model.init(weights_path=weights, input_size=128, ckpt_name="ckpt-best")
    S["load_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    debcr.model.predict(model, np.zeros((32, 128, 128), np.float32), batch_size=32)
    S["warmup_s"] = time.perf_counter() - t0
    S.update(tf=tf, debcr=debcr, model=model, img=np.load(in_path))

def workflow():
    debcr, model, img = S["debcr"], S["model"], S["img"]
    t = [time.perf_counter()]
    norm = debcr.data.normalize(img, 0.1, 99.9)
    t.append(time.perf_counter())
    patches = debcr.data.crop(norm[None], 128, (0.5, 0.5))
    n_patch, patch_num = debcr.data.crop(norm[None], 128, (0.5, 0.5), dry_run=True)
    t.append(time.perf_counter())
    pred = debcr.model.predict(model, patches, batch_size=32)
    t.append(time.perf_counter())
    S["out"] = debcr.data.stitch(pred, patch_num, (0.5, 0.5), use_cosine=True)
    t.append(time.perf_counter())
    S["n_patch"], S["patch_num"] = int(n_patch), list(patch_num)
    return {"normalize": t[1] - t[0], "crop": t[2] - t[1], "predict": t[3] - t[2],
            "stitch": t[4] - t[3], "total": t[4] - t[0]}

def save():
    np.save(out_path, np.asarray(S["out"][0], np.float32))
    return {"out_shape": list(S["out"].shape), "n_patches": S["n_patch"],
            "patch_num": S["patch_num"], "tf_version": S["tf"].__version__,
            "load_s": S["load_s"], "warmup_s": S["warmup_s"]}

JOBS = {"workflow": workflow, "save": save}
"""

# Peak memory: VmHWM (high-water mark of this process's own resident set). getrusage's ru_maxrss
# is not used: on Linux a child's ru_maxrss (also via wait4 / RUSAGE_CHILDREN) starts from the
# parent's resident size at fork/exec, so a large benchmark parent would inflate it.
# A sampling thread also records the peaks of RssAnon (heap, tensors) and RssFile (resident pages of
# mapped files: libraries and the memory-mapped input/output, which the kernel can drop).
DISK_CHILD = r"""
import json, sys, threading, time
def status_kb():
    with open("/proc/self/status") as fh:
        rows = (ln.split(":", 1) for ln in fh)
        return {k: int(v.split()[0]) for k, v in rows if k.startswith(("Vm", "Rss"))}
peaks = {"RssAnon": 0, "RssFile": 0}
stop = threading.Event()
def sample():
    while not stop.is_set():
        st = status_kb()
        for key in peaks:
            peaks[key] = max(peaks[key], st.get(key, 0))
        stop.wait(0.1)
t0 = time.perf_counter()
import debcr
model = debcr.model.init("2D_denoising")
t1 = time.perf_counter()
before = status_kb()["VmHWM"]
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
tile = {"tile_size": int(sys.argv[3])} if len(sys.argv) > 3 else {}
debcr.model.predict(model, sys.argv[1], output=sys.argv[2], overwrite=True, progress=False, **tile)
t2 = time.perf_counter()
stop.set()
sampler.join()
print(json.dumps({"startup_s": t1 - t0, "predict_s": t2 - t1, "hwm_before_predict_kb": before,
                  "hwm_kb": status_kb()["VmHWM"], "peak_anon_kb": peaks["RssAnon"],
                  "peak_file_kb": peaks["RssFile"]}))
"""


#: Our variants besides the defaults: predict's keyword arguments. "training network" runs the
#: faithful network eagerly, as every release before the inference-only form did.
VARIANTS: dict[str, dict] = {
    "exact": {"precision": "float32"},
    "torch-float32": {"backend": "torch", "precision": "float32"},
    "torch-bfloat16": {"backend": "torch", "precision": "bfloat16"},
    "openvino-float32-2048": {"backend": "openvino", "precision": "float32", "tile_size": 2048},
    "openvino-bfloat16-2048": {"backend": "openvino", "precision": "bfloat16", "tile_size": 2048},
    "training-network-float32": {"backend": "torch", "precision": "float32", "tile_size": 512},
}


class _TrainingNetwork(torch.nn.Module):
    """The faithful (training) m-rBCR seen as a generic network, so predict runs it eagerly."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.net = model
        self.metadata = {"halo": 88}

    def restore(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.restore(x)


def our_variants(model: torch.nn.Module, names: list[str]) -> list[tuple[str, dict]]:
    """(label, predict kwargs) for the defaults and each named variant, resolved for labels."""
    from debcr.backends.openvino_runner import available
    from debcr.nn.receptive import halo_for
    from debcr.runtime import resolve_precision

    precision = resolve_precision("auto", torch.device("cpu"))
    backend = "openvino" if available() else "torch"
    out = [
        (
            f"ours defaults ({backend}, {precision}, halo {halo_for(model, precision)})",
            {},
        )
    ]
    for name in names:
        kwargs = dict(VARIANTS[name])
        if kwargs.get("backend") == "openvino" and not available():
            continue
        label = f"ours {name} (halo {halo_for(model, kwargs.get('precision', precision))})"
        if name == "training-network-float32":
            kwargs["model"] = _TrainingNetwork(model)
            label = "ours training network, eager float32, tile 512, halo 88 (before)"
        out.append((label, kwargs))
    return out


# ---------------------------------------------------------------------------------------------
# quality
def affine_fit(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """α·pred + β with (α, β) minimising ‖α·pred + β − gt‖² (CARE's normalize_minmse)."""
    x = pred.astype(np.float64).ravel()
    y = gt.astype(np.float64).ravel()
    xc = x - x.mean()
    alpha = float(np.dot(xc, y - y.mean()) / max(np.dot(xc, xc), 1e-30))
    beta = float(y.mean() - alpha * x.mean())
    return alpha * pred.astype(np.float64) + beta


def quality(pred: np.ndarray, gt: np.ndarray) -> dict:
    from skimage.metrics import peak_signal_noise_ratio as psnr
    from skimage.metrics import structural_similarity as ssim

    gt64 = gt.astype(np.float64)
    raw = pred.astype(np.float64)
    fit = affine_fit(raw, gt64)
    return {
        "psnr_raw": psnr(gt64, raw, data_range=255),
        "ssim_raw": ssim(gt64, raw, data_range=255),
        "psnr_affine": psnr(gt64, fit, data_range=255),
        "ssim_affine": ssim(gt64, fit, data_range=255),
    }


# ---------------------------------------------------------------------------------------------
# (a)
def part_a(args: argparse.Namespace) -> dict:
    import debcr

    noisy, gt = fmd_mosaic(args.grid)
    n = noisy.shape[0]
    mpx = noisy.size / 1e6
    print(
        f"## (a) whole-image restoration, {n}×{n} uint8 (FMD field 19, {args.grid}×{args.grid} "
        f"raw frames), load average {os.getloadavg()[0]:.2f}\n"
    )

    t0 = time.perf_counter()
    model = debcr.model.init("2D_denoising")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    debcr.model.predict(model, noisy[:512, :512], progress=False)  # also finds/caches the halo
    warm_s = time.perf_counter() - t0

    params = inspect.signature(debcr.model.predict).parameters
    units = params["units"].default if "units" in params else None
    variants = our_variants(model, args.variants)
    if units is not None and units != "percentile":
        # the same mapping back to input units as used for the original below
        variants.append(("ours defaults, units='percentile'", {"units": "percentile"}))

    info = original_env_info(args.original)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out_path = OUT_DIR / f"original_{n}.npy"
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        in_path = Path(tmp) / "input.npy"
        np.save(in_path, noisy)
        worker = None
        if info is not None:
            try:
                worker = OriginalWorker(
                    info["python"],
                    ORIGINAL_WORKFLOW,
                    [str(in_path), str(WEIGHTS_2D_DENOISING), str(out_path)],
                )
            except RuntimeError as exc:
                print(f"original debcr failed: {exc}", file=sys.stderr)
        pids = [worker.pid] if worker else []

        # (name, call returning (seconds, output or stage times), repeats)
        schedule = []
        for name, kwargs in variants:
            reps = args.repeats if not kwargs else args.variant_repeats

            def ours(kwargs=kwargs):
                from debcr.inference.engine import predict_array
                from debcr.inference.options import PredictOptions

                kwargs = dict(kwargs)
                net = kwargs.pop("model", None)
                t0 = time.perf_counter()
                if net is None:
                    out = debcr.model.predict(model, noisy, progress=False, **kwargs)
                else:
                    out = predict_array(net, noisy, PredictOptions(progress=False, **kwargs))
                return time.perf_counter() - t0, out

            schedule.append((name, ours, reps))
        orig_name = "original workflow"
        if worker is not None:

            def original():
                stages = worker.call("workflow")
                return stages["total"], stages

            schedule.insert(1, (orig_name, original, args.original_repeats))

        times = {name: [] for name, _, _ in schedule}
        loads = {name: OtherLoad(pids) for name, _, _ in schedule}
        last: dict[str, object] = {}
        stage_runs: list[dict] = []
        try:
            for r in range(max(reps for _, _, reps in schedule)):
                for name, fn, reps in schedule:
                    if r < reps:
                        with loads[name]:
                            seconds, result = fn()
                        times[name].append(seconds)
                        last[name] = result
                        if name == orig_name:
                            stage_runs.append(result)
            orig = worker.call("save") if worker is not None else None
        finally:
            if worker is not None:
                worker.close()

    if units is not None:
        print(f"ours: predict's default units={units!r}")
    print(
        f"ours: model load {load_s:.2f} s, first call on a 512² crop (warm-up, computes the halo) "
        f"{warm_s:.2f} s; timed runs: {args.repeats} of the defaults, {args.variant_repeats} of "
        "each other variant (interleaved with the original's)\n"
    )

    rows: list[dict] = [{"method": "noisy input", **quality(noisy, gt)}]
    same_rule = None  # ours mapped back by percentiles only, like the original below
    for name, kwargs in variants:
        rows.append(
            {
                "method": name,
                "times": times[name],
                "other": str(loads[name]),
                **quality(last[name], gt),
            }
        )
        if kwargs.get("units") == "percentile" or (units in (None, "percentile") and not kwargs):
            same_rule = last[name]

    orig_mpxs = None
    if orig is not None:
        import original_env

        lo, hi = np.percentile(noisy, (0.1, 99.9))
        out01 = np.load(out_path)
        out_raw = out01.astype(np.float64) * (hi - lo) + lo
        extent = out01.shape
        gt_crop = gt[: extent[0], : extent[1]]
        rows.append(
            {
                "method": f"original TF {orig['tf_version']} workflow",
                "times": times[orig_name],
                "other": str(loads[orig_name]),
                **quality(out_raw, gt_crop),
            }
        )
        orig_mpxs = mpx / median(times[orig_name])
        zeros = int(np.count_nonzero(out01 == 0))
        stages = {k: median([r[k] for r in stage_runs]) for k in stage_runs[0]}
        print(
            f"original: {original_env.describe(info)}\n"
            f"original: model build+restore {orig['load_s']:.2f} s, warm-up predict of 32 patches "
            f"{orig['warmup_s']:.2f} s; {orig['n_patches']} patches ({orig['patch_num'][0]}×"
            f"{orig['patch_num'][1]}), stitched extent {extent[0]}×{extent[1]} of {n}×{n}; "
            f"{len(stage_runs)} timed run(s); stage medians: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items())
            + f"\noriginal: {zeros} output pixels are exactly 0 (border ring), "
            f"percentiles used for mapping back: p0.1={lo:g}, p99.9={hi:g}\n"
        )
        if same_rule is not None and same_rule.shape == extent:
            ours01 = (same_rule.astype(np.float64) - lo) / (hi - lo)
            diff = np.abs(ours01 - out01)[1:-1, 1:-1]
            print(
                "ours (defaults, percentile units) vs original, in normalised units, without the "
                f"original's 1-px border: mean |Δ| {diff.mean():.2e}, "
                f"99.9th percentile {np.percentile(diff, 99.9):.2e}, max {diff.max():.2e}\n"
            )

    headers = [
        "method",
        "median s",
        "Mpx/s",
        "ratio vs original",
        "PSNR raw dB",
        "SSIM raw",
        "PSNR affine dB",
        "SSIM affine",
        "other CPU load",
    ]
    body = []
    for r in rows:
        if "times" in r:
            med = median(r["times"])
            speed = mpx / med
            ratio = fmt(speed / orig_mpxs) + "×" if orig_mpxs else "n/a"
            timing = [f"{med:.2f}", f"{speed:.3f}", ratio]
        else:
            timing = ["—", "—", "—"]
            r["other"] = "—"
        body.append(
            [
                r["method"],
                *timing,
                f"{r['psnr_raw']:.2f}",
                f"{r['ssim_raw']:.4f}",
                f"{r['psnr_affine']:.2f}",
                f"{r['ssim_affine']:.4f}",
                r["other"],
            ]
        )
    print(table(headers, body) + "\n")
    print(
        "other CPU load = share of the cores used by other processes during that row's timed runs "
        "(ours and the original's are interleaved); > ~10% means inflated times.\n"
    )
    return {
        "rows": rows,
        "mpx_per_s": {r["method"]: mpx / median(r["times"]) for r in rows if "times" in r},
    }


# ---------------------------------------------------------------------------------------------
# (b)
def make_big_tiff(size: int) -> Path:
    import tifffile

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"in_{size}.tif"
    if path.exists():
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if page.shape == (size, size) and page.compression == 1:
                return path
    tile = tifffile.imread(STARDIST_IMG)
    reps = -(-size // tile.shape[0]), -(-size // tile.shape[1])
    big = np.tile(tile, reps)[:size, :size]
    tmp = path.with_suffix(".tmp.tif")
    tifffile.imwrite(tmp, big, photometric="minisblack")  # uncompressed, contiguous
    tmp.replace(path)
    return path


def part_b(args: argparse.Namespace, speed_hint: float | None) -> dict:
    import tifffile

    size = args.size
    mpx = size * size / 1e6
    t0 = time.perf_counter()
    src = make_big_tiff(size)
    make_s = time.perf_counter() - t0
    dst = OUT_DIR / f"out_{size}.tif"
    if dst.exists():
        dst.unlink()
    eta = f", expected ≈{mpx / speed_hint / 60:.1f} min at the speed of (a)" if speed_hint else ""
    print(
        f"## (b) disk to disk, {size}×{size} uint16 TIFF ({src.stat().st_size / 2**20:.0f} MiB, "
        f"uncompressed; made in {make_s:.1f} s) → float32 TIFF{eta}; load average "
        f"{os.getloadavg()[0]:.2f}\n",
        flush=True,
    )

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        OtherLoad() as load,
    ):
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", DISK_CHILD, str(src), str(dst)]
            + ([str(args.disk_tile)] if args.disk_tile else []),
            stdout=out,
            stderr=err,
            env=env,
        )
        _, status, _ = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        print(f"disk-to-disk run failed (rc={proc.returncode}):\n{stderr[-3000:]}", file=sys.stderr)
        return {}
    child = json.loads(stdout.strip().splitlines()[-1])
    peak_gb = child["hwm_kb"] * 1024 / 1e9
    base_gb = child["hwm_before_predict_kb"] * 1024 / 1e9

    res = tifffile.memmap(dst, mode="r")
    rows = np.linspace(0, size - 1, 17).astype(int)
    sample = np.asarray(res[rows])
    check = (
        f"output {res.shape} {res.dtype}, {dst.stat().st_size / 2**20:.0f} MiB; sampled rows "
        f"finite: {bool(np.isfinite(sample).all())}, range {sample.min():.1f}–{sample.max():.1f}"
        f"; first/last row mean {float(res[0].mean()):.1f}/{float(res[-1].mean()):.1f}"
    )
    del res
    if not args.keep:
        dst.unlink()
    headers = [
        "image",
        "process wall s",
        "predict call s",
        "Mpx/s (call)",
        "Mpx/s (process)",
        "peak RSS GB",
        "RSS before predict GB",
        "peak anon / file-backed GB (sampled)",
        "target < 1.5 GB",
        "other CPU load",
    ]
    print(
        table(
            headers,
            [
                [
                    f"{size}×{size} uint16 → float32"
                    + (f", tile {args.disk_tile}" if args.disk_tile else ""),
                    f"{wall:.1f}",
                    f"{child['predict_s']:.1f}",
                    f"{mpx / child['predict_s']:.3f}",
                    f"{mpx / wall:.3f}",
                    f"{peak_gb:.3f}",
                    f"{base_gb:.3f}",
                    f"{child['peak_anon_kb'] * 1024 / 1e9:.3f} / "
                    f"{child['peak_file_kb'] * 1024 / 1e9:.3f}",
                    "met" if peak_gb < 1.5 else "NOT met",
                    str(load),
                ]
            ],
        )
    )
    print(f"\n{check}\n")
    return {"wall_s": wall, "predict_s": child["predict_s"], "peak_rss_gb": peak_gb}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=("a", "b", "both"), default="both")
    parser.add_argument(
        "--grid",
        type=int,
        default=4,
        help="(a) mosaic of grid×grid FMD frames, 512 px each (1–4; default 4 → 2048²)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="(a) timed runs of our defaults (default 3)"
    )
    parser.add_argument(
        "--variant-repeats",
        type=int,
        default=1,
        help="(a) timed runs of our other variants: bfloat16, units='percentile' (default 1)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        help="(a) our variants besides the defaults (default: all)",
    )
    parser.add_argument(
        "--original",
        choices=("auto", "skip"),
        default="auto",
        help="(a) auto: run the original if its env exists or can be built",
    )
    parser.add_argument(
        "--original-repeats",
        type=int,
        default=1,
        help="(a) timed runs of the original workflow (default 1; ~1–2 min each)",
    )
    parser.add_argument(
        "--size", type=int, default=4096, help="(b) image side (default 4096; target 8192)"
    )
    parser.add_argument(
        "--disk-tile", type=int, help="(b) tile_size of the restoration (default: predict's)"
    )
    parser.add_argument("--keep", action="store_true", help="(b) keep the output TIFF")
    parser.add_argument("--json", type=Path, help="also write a summary here")
    args = parser.parse_args()

    print(f"Machine: {machine_line()}\n")
    summary: dict = {}
    speed = None
    if args.part in ("a", "both"):
        res = part_a(args)
        summary["a"] = {k: v for k, v in res.items() if k != "rows"}
        speed = next(iter(res["mpx_per_s"].values()), None)
    if args.part in ("b", "both"):
        summary["b"] = part_b(args, speed)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
