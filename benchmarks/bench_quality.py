"""The quality benchmark: m-rBCR against CARE and CAREamics on the same data, patches and steps.

Commands (from the repository root; CPU)::

    # the whole benchmark (every task × method × seed), two units at a time on a 2-core machine
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_quality.py --jobs 2 --reuse
    # in parts: only some tasks / methods; finished units are kept and reused (--reuse)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_quality.py --tasks fmd_supervised \\
        --methods care,careamics_care --jobs 1 --reuse
    # a recipe comparison in one table (the config key ``recipe`` of debcr's TrainConfig)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_quality.py --tasks fmd_supervised \\
        --methods mrbcr_finetune,mrbcr_finetune@paper,mrbcr_finetune@debcr --reuse
    # the quiet per-step timing (one process at a time, 2 threads) used for the s/step column
    .venv/bin/python benchmarks/bench_quality.py --timing
    # the tables from whatever has finished so far (trains nothing)
    .venv/bin/python benchmarks/bench_quality.py --report-only
    # smoke run
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_quality.py --tasks fmd_supervised \\
        --steps 6 --val-freq 3 --seeds 0 --frames 2 --no-save

Tasks and methods (a *unit* = task × method × seed)
---------------------------------------------------
* ``fmd_supervised`` — FMD *Confocal_BPAE_B* pairs prepared by ``bench_fmd.prepare_data`` (noisy
  single frames ↔ avg50; train fields 1–18 with 8 frames each, val field 20, test field 19;
  ``--patch``² patches, background filter 0.1): ``mrbcr_finetune`` (``debcr.model.train`` from
  the built-in ``2D_denoising``), ``mrbcr_scratch`` (Glorot init), ``care`` (the CARE U-Net of
  ``_baselines.py`` with CSBDeep's settings: MAE, Adam lr 4e-4, on the very batches m-rBCR sees),
  ``careamics_care`` (CAREamics' supervised CARE algorithm on the same patch pairs, its defaults
  otherwise, see ``careamics_runner.py``).
* ``fmd_n2v2`` / ``fmd_n2n`` — the same frames prepared by ``bench_selfsup.prepare_sets`` (no
  background filter): ``mrbcr_n2v2`` (``mode: noise2void``) vs ``careamics_n2v2``;
  ``mrbcr_n2n`` (``mode: noise2noise``) vs ``careamics_n2n``.
* ``sr_simulated`` — ``bench_sr``'s simulated resolution enhancement (FMD avg50 images blurred
  with the measured lattice-light-sheet bead PSF, FMD-calibrated Poisson–Gaussian noise; train
  fields 1–18 × 4 realisations, val field 20, test field 19 × ``--sr-frames`` realisations):
  ``mrbcr`` (from scratch) vs ``care``; ``mrbcr_finetune`` (from ``confocal_SR``) on request.
  The FRC resolution (``bench_sr.frc_resolution``, 1/7 threshold, px) is reported too.
* Reference rows without training (``--methods`` names them, or all are run when ``--methods``
  is not given): ``noisy`` and ``zeroshot`` (``2D_denoising``) for the FMD tasks, ``input`` (the
  degraded image) for ``sr_simulated``.

A method may carry a recipe suffix, ``mrbcr_finetune@paper``: that m-rBCR row passes
``recipe: paper`` in its training config (``--recipe NAME`` does so for every m-rBCR row without a
suffix). Without either, the key is not passed and debcr's default recipe applies. Only the
budget is set for m-rBCR (batch, steps, patch, validation interval, seed, mode, no early
stopping); learning rate, loss, augmentation and patch normalisation are the recipe's.

Budget and validation (identical for every method): ``--steps`` optimiser steps of ``--batch``
patches of ``--patch``²; validation every ``--val-freq`` steps on ``--val-patches`` evenly spaced
validation patches (as bench_fmd; ``//8`` Noise2Noise locations of 8 frames each); no early
stopping; the best model by validation loss (CAREamics: the model after the last step, its
runner's choice). The default budget, 600 steps of 16 × 64², is what the whole benchmark can
afford on a 2-core CPU (m-rBCR ≈ 1–1.4 s/step on one thread); the CARE U-Net's validation MAE
is flat after about 500 steps at this batch (0.0120 at 500–700, 0.0119 at 1000 steps, one
seed), m-rBCR's validation loss still falls slowly at 600 (see each unit's ``val_losses``).

Prediction: every row restores the ``--frames`` raw frames of test field 19 (whole 512² images)
with ``debcr.model.predict(model, frame)`` defaults (whole-image 0.1/99.9 percentiles, output
calibrated to the input's units); CARE U-Net through the same tiled engine
(``_baselines.predict_care``); CAREamics in its own venv on the percentile-normalised frames,
its output brought to the input's units by the same calibration (``bench_selfsup.calibrated``).
Scores: ``bench_fmd.score`` against ``gt/19/avg50.png`` (PSNR/SSIM raw with data range 255,
minmax, affine). The per-seed value is the mean over the frames; tables show mean ± std over
the seeds.

Running: ``--jobs N`` runs N units at once, each in its own subprocess with one thread
(``OMP_NUM_THREADS=1``, torch threads 1); the parent prepares the data once and collects the
results. Every finished unit is written atomically to
``benchmarks/_work/bench_quality/<settings-key>/<task>/<method>/seed<k>.json`` (per-frame metrics
and their summary, training wall time, steps, the median s/step seen during training, the other
CPU load); its log is in ``<settings-key>/logs/``. ``--reuse`` skips units whose file exists
with identical settings. The report (``benchmarks/results/quality.md`` and ``quality.json``)
covers every finished unit of the settings key, so a benchmark run in parts reports all parts.

``--timing`` instead trains every selected (task, method) for ``--timing-warmup`` +
``--timing-steps`` steps (validation only at the end, no prediction), one process at a time
with 2 threads, and stores the median s/step after the warm-up and the other CPU load in
``benchmarks/_work/bench_quality/timing.json``; the report's s/step comes from there when it
matches batch and patch, otherwise from the training run itself (marked "run").
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _common import HERE, WORK, OtherLoad, command_line, log, machine_line, publish, table

RESULTS = HERE / "results" / "quality.md"
RESULTS_JSON = HERE / "results" / "quality.json"
OUT = WORK / "bench_quality"
TIMING = OUT / "timing.json"
CONVENTIONS = ("raw", "minmax", "affine")
TASKS = {
    "fmd_supervised": ("mrbcr_finetune", "mrbcr_scratch", "care", "careamics_care"),
    "fmd_n2v2": ("mrbcr_n2v2", "careamics_n2v2"),
    "fmd_n2n": ("mrbcr_n2n", "careamics_n2n"),
    "sr_simulated": ("mrbcr", "care"),
}
OPTIONAL = {"sr_simulated": ("mrbcr_finetune",)}
REFERENCES = {
    "fmd_supervised": ("noisy", "zeroshot"),
    "fmd_n2v2": ("noisy", "zeroshot"),  # run once, under fmd_supervised
    "fmd_n2n": ("noisy", "zeroshot"),
    "sr_simulated": ("input",),
}
LABELS = {
    "noisy": "noisy input",
    "input": "degraded input",
    "zeroshot": "2D_denoising zero-shot",
    "mrbcr_finetune": "m-rBCR fine-tuned from 2D_denoising",
    "mrbcr_scratch": "m-rBCR from scratch",
    "care": "CARE U-Net (CSBDeep settings)",
    "careamics_care": "CAREamics CARE",
    "mrbcr_n2v2": "m-rBCR N2V2",
    "careamics_n2v2": "CAREamics N2V2",
    "mrbcr_n2n": "m-rBCR Noise2Noise",
    "careamics_n2n": "CAREamics Noise2Noise",
    "mrbcr": "m-rBCR from scratch",
}
SR_LABELS = {"mrbcr_finetune": "m-rBCR fine-tuned from confocal_SR"}
#: bench_sr's default simulation (measured LLSM bead PSF, FMD noise calibration).
SR_SIM = {
    "psf": "llsm",
    "psf_radius": 10,
    "psf_zoom": 1.0,
    "read_noise": 0.0,
    "noise_seed": 2024,
    "train_noise": 4,
    "cells3d": 5,
}
SETTINGS_VERSION = 1


# -- methods -------------------------------------------------------------------------------


def split_method(method: str) -> tuple[str, str | None]:
    """``"mrbcr_finetune@paper"`` → ``("mrbcr_finetune", "paper")``."""
    base, _, recipe = method.partition("@")
    return base, recipe or None


def project_of(base: str) -> str:
    if base.startswith("careamics_"):
        return "careamics"
    return "care" if base == "care" else "debcr"


def is_mrbcr(base: str) -> bool:
    return base.startswith("mrbcr")


def is_reference(base: str) -> bool:
    return base in ("noisy", "input", "zeroshot")


def label_of(task: str, method: str) -> str:
    base, recipe = split_method(method)
    text = (SR_LABELS if task == "sr_simulated" else {}).get(base, LABELS[base])
    return f"{text} [recipe {recipe}]" if recipe else text


def resolve_methods(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """``task → [method, …]`` for the selected tasks (--methods, --recipe applied)."""
    chosen = None
    if args.methods:
        chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
    plan: dict[str, list[str]] = {}
    used = set()
    for task in args.tasks:
        allowed = REFERENCES[task] + TASKS[task] + OPTIONAL.get(task, ())
        wanted = list(REFERENCES[task] + TASKS[task]) if chosen is None else chosen
        methods = []
        for method in wanted:
            base, recipe = split_method(method)
            if base not in allowed:
                continue
            if recipe and not is_mrbcr(base):
                parser.error(f"{method}: a recipe suffix applies to m-rBCR rows only")
            if is_mrbcr(base) and not recipe and args.recipe:
                method = f"{base}@{args.recipe}"
            used.add(base)
            methods.append(method)
        plan[task] = methods
    if chosen is not None:
        unknown = [m for m in chosen if split_method(m)[0] not in used]
        if unknown:
            parser.error(f"--methods {unknown} match none of the tasks {args.tasks}")
    return plan


# -- settings and files --------------------------------------------------------------------


def settings_of(args: argparse.Namespace) -> dict:
    """Everything that changes a unit's result (the recipe is part of the method name)."""
    return {
        "version": SETTINGS_VERSION,
        "steps": args.steps,
        "batch": args.batch,
        "patch": args.patch,
        "val_freq": args.val_freq,
        "val_patches": args.val_patches,
        "frames": args.frames,
        "sr_frames": sr_frames(args),
        "careamics_augment": args.careamics_augment,
        "sr_sim": SR_SIM,
    }


def settings_key(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def sr_frames(args: argparse.Namespace) -> int:
    return min(args.frames, args.sr_frames)


def unit_path(root: Path, task: str, method: str, seed: int) -> Path:
    return root / task / method / f"seed{seed}.json"


def write_atomic(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# -- data (prepared once by the parent, under OUT/data) ------------------------------------


def data_paths(task: str, args: argparse.Namespace, prepare: bool) -> dict:
    """Paths of the task's prepared sets (and a description); ``prepare`` writes them if needed.

    The preparation functions of bench_fmd / bench_selfsup / bench_sr are used unchanged; their
    module-level ``OUT`` is pointed at this benchmark's work folder first.
    """
    import bench_fmd
    import bench_selfsup
    import bench_sr

    root = OUT / "data"
    if task == "fmd_supervised":
        manifest = root / f"fmd_p{args.patch}.json"
        if prepare and read_json(manifest) is None:
            bench_fmd.OUT = root / "fmd"
            paths, info = bench_fmd.prepare_data(args.patch)
            write_atomic(manifest, {"paths": {k: str(v) for k, v in paths.items()}, "info": info})
        return json.loads(manifest.read_text())
    if task in ("fmd_n2v2", "fmd_n2n"):
        manifest = root / f"selfsup_p{args.patch}.json"
        if prepare and read_json(manifest) is None:
            bench_selfsup.OUT = root / "selfsup"
            sets = bench_selfsup.prepare_sets(args.patch)
            paths = {name: {k: str(v) for k, v in files.items()} for name, files in sets.items()}
            write_atomic(manifest, {"paths": paths})
        return json.loads(manifest.read_text())
    ns = sr_namespace(args)
    manifest = root / f"sr_{bench_sr.settings_key(ns, data_only=True)}.json"
    if prepare and read_json(manifest) is None:
        bench_sr.OUT = root / "sr"
        psf, psf_info = sr_psf()
        paths, info = bench_sr.prepare_sets(psf, ns)
        info["psf"] = psf_info
        write_atomic(manifest, {"paths": {k: str(v) for k, v in paths.items()}, "info": info})
    return json.loads(manifest.read_text())


def sr_namespace(args: argparse.Namespace) -> argparse.Namespace:
    """The argument namespace bench_sr's functions read (its default simulation)."""
    return argparse.Namespace(**SR_SIM, patch=args.patch, frames=sr_frames(args))


def sr_psf() -> tuple[np.ndarray, dict]:
    import bench_sr

    return bench_sr.load_psf(SR_SIM["psf"], SR_SIM["psf_radius"], SR_SIM["psf_zoom"])


def test_pairs(task: str, args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """(test inputs (n, H, W) in DN, GT (H, W)) of a task."""
    if task == "sr_simulated":
        import bench_sr

        psf, _ = sr_psf()
        gt = bench_sr.fmd_gt(bench_sr.TEST_FIELD)
        low = bench_sr.degraded(
            gt, psf, sr_frames(args), SR_SIM["noise_seed"], bench_sr.TEST_FIELD, 0.0
        )
        return low, gt
    from bench_fmd import read_png, test_frames

    paths, gt = test_frames(args.frames)
    return np.stack([read_png(p) for p in paths]), gt


# -- training ------------------------------------------------------------------------------


def deltas(ends: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(ends)]


def train_mrbcr(task, base, recipe, seed, sets, run_dir: Path, budget: dict):
    """One ``debcr.model.train`` run; (best model, info). Only the budget is set (+ recipe)."""
    import debcr
    from debcr.config import TrainConfig
    from debcr.training.curves import read_metrics

    mode = {"mrbcr_n2v2": "noise2void", "mrbcr_n2n": "noise2noise"}.get(base, "supervised")
    if base == "mrbcr_finetune":
        init = "confocal_SR" if task == "sr_simulated" else "2D_denoising"
    else:
        init = None
    shutil.rmtree(run_dir, ignore_errors=True)
    fields = dict(
        weights_path=str(run_dir),
        batch_size=budget["batch"],
        num_steps=budget["steps"],
        patience=budget["steps"],  # no early stopping: every run takes exactly --steps steps
        val_freq=budget["val_freq"],
        save_freq=budget["val_freq"],
        patch_size=budget["patch"],
        mode=mode,
        seed=seed,
        accelerator="cpu",
        progress=False,
    )
    if recipe:
        fields["recipe"] = recipe
    config = TrainConfig(**fields)
    from careamics_runner import step_timer  # the same callback (stdlib + Lightning only)

    timer = step_timer()
    log(f"m-rBCR {base} (mode {mode}, init {init or 'Glorot'}, recipe {recipe or 'default'})")
    t0 = time.perf_counter()
    model = debcr.model.train(
        sets["train"], sets["val"], config, init_model=init, callbacks=[timer]
    )
    wall = time.perf_counter() - t0
    series = read_metrics(run_dir)
    val_loss = series.get("val_loss", [])
    best = min(val_loss, key=lambda sv: sv[1]) if val_loss else (None, None)
    info = {
        "init": init or "none (Glorot)",
        "mode": mode,
        "recipe": recipe,
        "recipe_effective": getattr(config, "recipe", None),  # None: debcr without the key
        "wall_s": wall,
        "steps": len(series.get("train_loss", [])) or len(timer.ends),
        "step_times": deltas(timer.ends),
        # metrics.csv counts steps from 0; +1 = optimiser steps done (as CARE's count)
        "best_step": None if best[0] is None else best[0] + 1,
        "best_val_loss": best[1],
        "val_losses": [(step + 1, v) for step, v in val_loss],
    }
    return model, info


def train_care_timed(sets: dict, seed: int, budget: dict):
    """``_baselines.train_care`` with the end of every optimiser step timed; (model, info)."""
    import torch

    import _baselines

    ends: list[float] = []

    class TimedAdam(torch.optim.Adam):
        def step(self, closure=None):
            out = super().step(closure)
            ends.append(time.perf_counter())
            return out

    original = torch.optim.Adam
    torch.optim.Adam = TimedAdam  # only adds the timestamp; train_care builds Adam by name
    try:
        model, info = _baselines.train_care(
            sets["train"],
            sets["val"],
            steps=budget["steps"],
            batch=budget["batch"],
            val_freq=budget["val_freq"],
            seed=seed,
            log=log,
        )
    finally:
        torch.optim.Adam = original
    info["step_times"] = deltas(ends)
    return model, info


def careamics_run(base, seed, sets, frames_norm, work: Path, budget: dict, augment: bool):
    """Train CAREamics (its own venv) on the same patches; (normalised prediction or None, info)."""
    from careamics_env import ensure_env

    algorithm = {"careamics_care": "care", "careamics_n2v2": "n2v2"}.get(base, "n2n")
    keys = {"care": ("low", "gt"), "n2v2": ("low",), "n2n": ("repeats",)}[algorithm]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with np.load(sets["train"]) as npz:
        np.savez(work / "train.npz", **{k: npz[k] for k in keys})
    np.savez(work / "val.npz", **{k: sets["val"][k] for k in keys})
    cmd = [
        str(ensure_env()),
        str(HERE / "careamics_runner.py"),
        "--algorithm",
        algorithm,
        "--train",
        str(work / "train.npz"),
        "--val",
        str(work / "val.npz"),
        "--steps",
        str(budget["steps"]),
        "--batch",
        str(budget["batch"]),
        "--seed",
        str(seed + 1),  # CAREamics refuses seed 0
        "--workdir",
        str(work / "run"),
        "--augment" if augment else "--no-augment",
    ]
    if frames_norm is not None:
        np.save(work / "test.npy", frames_norm.astype(np.float32))
        cmd += ["--test", str(work / "test.npy"), "--out", str(work / "out.npy")]
    log(f"CAREamics {algorithm}: {' '.join(cmd[2:])}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    (work / "runner.log").write_text(proc.stderr)
    if proc.returncode:
        tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
        raise RuntimeError(f"CAREamics run failed (rc {proc.returncode}):\n{tail}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info.update(wall_s=info["train_seconds"], init="none (CAREamics default)")
    out = np.load(work / "out.npy") if frames_norm is not None else None
    for name in ("train.npz", "val.npz", "test.npy", "out.npy"):  # copies; keep logs, checkpoints
        (work / name).unlink(missing_ok=True)
    return out, info


def unit_sets(task: str, base: str, args: argparse.Namespace, val_patches: int) -> dict:
    """``{"train": path, "val": dict of arrays}`` for a trainable (task, method)."""
    from bench_fmd import val_subset
    from bench_selfsup import subset

    manifest = data_paths(task, args, prepare=False)
    paths = manifest["paths"]
    if task in ("fmd_supervised", "sr_simulated"):
        return {"train": paths["train"], "val": val_subset(Path(paths["val"]), val_patches)}
    name = "n2v" if task == "fmd_n2v2" else "n2n"
    n_val = val_patches if name == "n2v" else max(1, val_patches // 8)
    return {"train": paths[name]["train"], "val": subset(Path(paths[name]["val"]), n_val)}


# -- one unit ------------------------------------------------------------------------------


def summarise(per_frame: list[dict]) -> dict:
    keys = [k for k in per_frame[0] if k != "frc"]
    out = {}
    for k in keys:
        values = [f[k] for f in per_frame]
        out[k] = {"mean": statistics.fmean(values), "std": statistics.pstdev(values)}
    if "frc" in per_frame[0]:
        frc = [f["frc"] for f in per_frame]
        filled = [2.0 if v is None else v for v in frc]
        out["frc"] = {
            "mean": statistics.fmean(filled),
            "std": statistics.pstdev(filled),
            "no_crossing": sum(v is None for v in frc),
        }
    return out


def run_unit(task: str, method: str, seed: int, args: argparse.Namespace, settings: dict) -> dict:
    """Train (if needed), restore the test images, score them; the unit's record."""
    import torch

    import debcr
    from _baselines import predict_care
    from bench_fmd import score
    from bench_selfsup import calibrated, percentile_scale

    base, recipe = split_method(method)
    budget = {k: settings[k] for k in ("steps", "batch", "patch", "val_freq")}
    run_root = OUT / "runs" / settings_key(settings) / task / method / f"seed{seed}"
    load = OtherLoad()
    t_unit = time.perf_counter()
    train_info = None
    low, gt = test_pairs(task, args)
    with load:
        if is_reference(base):
            if base == "zeroshot":
                model = debcr.model.init("2D_denoising")
                preds = [debcr.model.predict(model, f, progress=False) for f in low]
            else:
                preds = [f.astype(np.float32) for f in low]
        else:
            sets = unit_sets(task, base, args, args.val_patches)
            if base.startswith("careamics_"):
                scales = [percentile_scale(f) for f in low]
                norm = np.stack([(f - lo) / (hi - lo) for f, (lo, hi) in zip(low, scales)])
                out, train_info = careamics_run(
                    base,
                    seed,
                    sets,
                    norm,
                    run_root / "careamics",
                    budget,
                    args.careamics_augment == "default",
                )
                preds = [calibrated(f, o) for f, o in zip(low, out)]
            elif base == "care":
                model, train_info = train_care_timed(sets, seed, budget)
                preds = [predict_care(model, f) for f in low]
            else:
                model, train_info = train_mrbcr(
                    task, base, recipe, seed, sets, run_root / "run", budget
                )
                t0 = time.perf_counter()
                preds = [debcr.model.predict(model, f, progress=False) for f in low]
                train_info["predict_s"] = time.perf_counter() - t0
    per_frame = []
    for pred in preds:
        s = score(np.asarray(pred, np.float32), gt)
        if task == "sr_simulated":
            from bench_sr import frc_resolution

            s["frc"] = frc_resolution(np.asarray(pred, np.float32), gt)
        per_frame.append(s)
    record = {
        "task": task,
        "method": method,
        "project": project_of(base),
        "seed": seed,
        "settings": settings,
        "frames": len(per_frame),
        "summary": summarise(per_frame),
        "per_frame": per_frame,
        "other_load": load.fraction,
        "unit_wall_s": time.perf_counter() - t_unit,
        "torch_threads": torch.get_num_threads(),
        "debcr_version": debcr.__version__,
        "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    if train_info is not None:
        times = train_info.get("step_times") or []
        train_info["s_per_step_median"] = statistics.median(times[5:] or times) if times else None
        record["train"] = train_info
    return record


def timing_unit(task: str, method: str, args: argparse.Namespace) -> dict:
    """A short quiet training run (no prediction); median s/step after the warm-up."""
    import torch

    base, recipe = split_method(method)
    steps = args.timing_warmup + args.timing_steps
    budget = {"steps": steps, "batch": args.batch, "patch": args.patch, "val_freq": steps}
    sets = unit_sets(task, base, args, min(args.val_patches, 8))
    work = OUT / "timing_runs" / task / method
    with OtherLoad() as load:
        if base.startswith("careamics_"):
            _, info = careamics_run(
                base, 0, sets, None, work, budget, args.careamics_augment == "default"
            )
        elif base == "care":
            _, info = train_care_timed(sets, 0, budget)
        else:
            _, info = train_mrbcr(task, base, recipe, 0, sets, work, budget)
    times = info["step_times"][args.timing_warmup - 1 :]
    return {
        "task": task,
        "method": method,
        "s_per_step": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "timed_steps": len(times),
        "warmup": args.timing_warmup,
        "batch": args.batch,
        "patch": args.patch,
        "threads": torch.get_num_threads(),
        "other_load": load.fraction,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def child_main(args: argparse.Namespace) -> int:
    """Run one unit (``--unit TASK/METHOD/SEED``) in this process and write its file."""
    import torch

    from bench_fmd import quiet_lightning

    torch.set_num_threads(args.threads)
    quiet_lightning()
    task, method, seed = args.unit.split("/")
    settings = settings_of(args)
    if args.timing:
        result = timing_unit(task, method, args)
        write_atomic(Path(args.unit_out), result)
    else:
        record = run_unit(task, method, int(seed), args, settings)
        write_atomic(Path(args.unit_out), record)
        sm = record["summary"]
        log(
            f"done: PSNR raw {sm['psnr_raw']['mean']:.2f} dB, SSIM affine "
            f"{sm['ssim_affine']['mean']:.4f}"
        )
    return 0


# -- the parent: scheduling ----------------------------------------------------------------


def run_lanes(
    units: list[tuple[str, str, int]], args, out_of, jobs: int, threads: int, log_dir: Path
) -> list:
    """Run units as subprocesses, ``jobs`` at once (logs in ``log_dir``); return the failures."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    pending, running, failed = list(units), {}, []
    while pending or running:
        while pending and len(running) < jobs:
            task, method, seed = unit = pending.pop(0)
            name = f"{task}_{method}_seed{seed}{'_timing' if args.timing else ''}"
            log_file = log_dir / f"{name.replace('@', '-')}.log"
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                *sys.argv[1:],
                "--unit",
                f"{task}/{method}/{seed}",
                "--unit-out",
                str(out_of(unit)),
                "--threads",
                str(threads),
            ]
            fh = log_file.open("w")
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
            running[proc] = (unit, fh, log_file, time.perf_counter())
            log(f"started {task} / {method} / seed {seed} (pid {proc.pid}, log {log_file.name})")
        time.sleep(1.0)
        for proc in [p for p in running if p.poll() is not None]:
            unit, fh, log_file, t0 = running.pop(proc)
            fh.close()
            took = time.perf_counter() - t0
            if proc.returncode:
                failed.append(unit)
                tail = "\n    ".join(log_file.read_text().strip().splitlines()[-12:])
                log(f"FAILED {unit} (rc {proc.returncode}, {took:.0f} s):\n    {tail}")
            else:
                log(f"finished {unit[0]} / {unit[1]} / seed {unit[2]} in {took:.0f} s")
    return failed


# -- report --------------------------------------------------------------------------------


def load_timing() -> dict:
    return read_json(TIMING) or {}


def mean_std(values: list[float], digits: int) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def collect(root: Path, seeds: list[int]) -> dict[str, dict[str, list[dict]]]:
    """``task → method → [unit records]`` for every finished unit under ``root``.

    Reference rows (seed 0) of fmd_supervised are shown in the other FMD tasks' tables too
    (same test frames, same scoring)."""
    found: dict[str, dict[str, list[dict]]] = {}
    for task in TASKS:
        for method_dir in sorted((root / task).glob("*")) if (root / task).exists() else []:
            ref = is_reference(split_method(method_dir.name)[0])
            records = []
            for seed in [0] if ref else seeds:
                rec = read_json(method_dir / f"seed{seed}.json")
                if rec is not None:
                    records.append(rec)
            if records:
                found.setdefault(task, {})[method_dir.name] = records
    shared = {
        m: r for m, r in found.get("fmd_supervised", {}).items() if m in ("noisy", "zeroshot")
    }
    for task in ("fmd_n2v2", "fmd_n2n"):
        if task in found:
            found[task] = {**shared, **found[task]}
    return found


def method_order(task: str, method: str) -> tuple:
    base, recipe = split_method(method)
    order = REFERENCES[task] + TASKS[task] + OPTIONAL.get(task, ())
    return (order.index(base) if base in order else 99, recipe or "")


def s_per_step(task: str, method: str, records: list[dict], args, timing: dict):
    """(value, source): the quiet timing if it matches batch/patch, else the runs' median."""
    t = timing.get(f"{task}/{method}")
    if t and t["batch"] == args.batch and t["patch"] == args.patch:
        return t["s_per_step"], f"timing ({100 * t['other_load']:.0f}% other load)"
    seen = [r["train"]["s_per_step_median"] for r in records if r.get("train")]
    seen = [v for v in seen if v is not None]
    if seen:
        return statistics.fmean(seen), "run"
    return None, "—"


def rows_for(found, args, timing) -> tuple[list[dict], dict[str, str]]:
    """The JSON rows and the Markdown table per task."""
    json_rows, md = [], {}
    for task in TASKS:
        if task not in found:
            continue
        headers = ["method", "project", "seeds"]
        headers += [f"PSNR {c}" for c in CONVENTIONS] + [f"SSIM {c}" for c in CONVENTIONS]
        if task == "sr_simulated":
            headers.append("FRC (px)")
        headers += ["s/step (source)", "train min/seed", "best val step", "other load"]
        body = []
        for method in sorted(found[task], key=lambda m: method_order(task, m)):
            recs = sorted(found[task][method], key=lambda r: r["seed"])
            base, recipe = split_method(method)
            ref = is_reference(base)
            seeds = [r["seed"] for r in recs]
            sm = [r["summary"] for r in recs]
            sps, source = (None, "—") if ref else s_per_step(task, method, recs, args, timing)
            row = {
                "task": task,
                "method": method,
                "project": project_of(base),
                "steps": 0 if ref else int(recs[0]["train"]["steps"]),
                "seeds": seeds,
                "psnr_raw": [s["psnr_raw"]["mean"] for s in sm],
                "ssim_affine": [s["ssim_affine"]["mean"] for s in sm],
                "s_per_step": sps,
                "s_per_step_source": source,
                "recipe": recipe,
                "reference": ref,
                "frames": recs[0]["frames"],
            }
            for metric in ("psnr", "ssim"):
                for conv in CONVENTIONS:
                    row[f"{metric}_{conv}"] = [s[f"{metric}_{conv}"]["mean"] for s in sm]
            if task == "sr_simulated":
                row["frc"] = [s["frc"]["mean"] for s in sm]
            json_rows.append(row)
            n = len(seeds)
            seeds_cell = "— (reference)" if ref else f"{n} ({','.join(map(str, seeds))})"
            if not ref and n < 3:
                seeds_cell += " ⚠ fewer than 3"
            label = label_of(task, method)
            effective = {r["train"].get("recipe_effective") for r in recs if r.get("train")}
            if is_mrbcr(base) and not recipe and effective - {None}:
                label += f" (default recipe: {', '.join(sorted(map(str, effective)))})"
            cells = [label + f" `{method}`", project_of(base), seeds_cell]
            for metric, digits in (("psnr", 2), ("ssim", 4)):
                cells += [mean_std(row[f"{metric}_{c}"], digits) for c in CONVENTIONS]
            if task == "sr_simulated":
                none = sum(s["frc"]["no_crossing"] for s in sm)
                cells.append(mean_std(row["frc"], 2) + (f" ({none} frames ≤ 2 px)" if none else ""))
            trains = [r["train"] for r in recs if r.get("train")]
            cells.append("—" if sps is None else f"{sps:.3f} ({source})")
            cells.append(
                f"{statistics.fmean(t['wall_s'] for t in trains) / 60:.1f}" if trains else "—"
            )
            cells.append(", ".join(str(t.get("best_step", "last")) for t in trains) or "—")
            cells.append(", ".join(f"{100 * r['other_load']:.0f}%" for r in recs))
            body.append(cells)
        md[task] = table(headers, body)
    return json_rows, md


TASK_TITLES = {
    "fmd_supervised": "FMD Confocal_BPAE_B, supervised (noisy frame → avg50)",
    "fmd_n2v2": "FMD Confocal_BPAE_B, Noise2Void (N2V2), no ground truth in training",
    "fmd_n2n": "FMD Confocal_BPAE_B, Noise2Noise (8 frames per field), no ground truth in training",
    "sr_simulated": "Simulated resolution enhancement (bench_sr: LLSM bead PSF, FMD noise)",
}


def careamics_line() -> str:
    try:
        from careamics_env import DEFAULT_PATH, careamics_version

        return f"CAREamics {careamics_version(DEFAULT_PATH / 'bin' / 'python')}"
    except (OSError, RuntimeError, subprocess.SubprocessError):
        return "CAREamics (venv absent)"


def report(found, args, settings, key, started, total_s, failed) -> tuple[str, list[dict]]:
    from debcr.runtime import cpu_name

    timing = load_timing()
    json_rows, md = rows_for(found, args, timing)
    missing = [
        f"{r['task']}/{r['method']} ({len(r['seeds'])} seeds)"
        for r in json_rows
        if not r["reference"] and len(r["seeds"]) < len(args.seeds)
    ]
    budget = (
        f"{args.steps} steps of {args.batch} × {args.patch}² patches for every trained row, "
        f"validation every {args.val_freq} steps on {args.val_patches} evenly spaced validation "
        f"patches (Noise2Noise: {max(1, args.val_patches // 8)} locations × 8 frames), no early "
        "stopping, best model by validation loss (CAREamics: after the last step); seeds "
        f"{args.seeds} (CAREamics seed + 1)"
    )
    methods = (
        "m-rBCR: debcr.model.train with only the budget, mode and seed set (learning rate, loss, "
        "augmentation, patch normalisation from debcr's "
        + (f"recipe '{args.recipe}'" if args.recipe else "default recipe")
        + "; a `@NAME` suffix passes recipe NAME); CARE U-Net: _baselines.train_care (depth 2, "
        "32 filters, residual, 332,641 parameters; MAE, Adam lr 4e-4; same batches as m-rBCR); "
        f"{careamics_line()}: careamics_runner.py in its own venv, CAREamics' defaults (U-Net "
        "depth 2 / 32 channels with batch norm, Adam with torch's default lr 1e-3, "
        "ReduceLROnPlateau, validation once per epoch, early stopping off; CARE and N2N: MAE; "
        "N2V2: 0.2 % masked pixels, ROI 11), augmentation "
        + ("CAREamics' default (flips + rot90)" if args.careamics_augment == "default" else "none")
    )
    predict = (
        f"FMD tasks: the {args.frames} raw frames of test field 19 vs gt/19/avg50.png; "
        f"sr_simulated: {sr_frames(args)} simulated noise realisations of field 19 vs its avg50. "
        "debcr.model.predict defaults (whole-image percentiles, calibrated units) for m-rBCR; the "
        "same tiled engine for the CARE U-Net; CAREamics predicts the percentile-normalised "
        "frames, the output is calibrated to the input's units by the same function. PSNR (dB) "
        "and SSIM raw (data range 255), minmax, affine (CARE normalize_minmse); per seed the "
        "mean over the frames, shown as mean ± std over seeds"
    )
    timing_text = (
        "s/step: 'timing' = median of a separate quiet run (--timing: "
        f"{args.timing_warmup} warm-up + {args.timing_steps} timed steps at batch {args.batch}, "
        "patch " + f"{args.patch}², one process, 2 threads); 'run' = median step time seen in the "
        "benchmark's own training runs (1 thread, possibly beside another lane)"
    )
    text = (
        "# Quality benchmark: m-rBCR against CARE and CAREamics (same data, patches and steps)\n\n"
        f"* Command: `{command_line('bench_quality.py')}`\n"
        f"* Date: {started:%Y-%m-%d %H:%M %Z} (this invocation {total_s / 60:.1f} min; rows "
        "include every finished unit of these settings, see each unit's file for its date)\n"
        f"* Machine: {cpu_name()}; {machine_line()}\n"
        f"* Settings key `{key}`: {json.dumps(settings, sort_keys=True)}\n"
        f"* Budget: {budget}\n"
        f"* Methods: {methods}\n"
        f"* Test and scores: {predict}\n"
        f"* {timing_text}\n"
        + (f"* Rows with fewer seeds than asked: {', '.join(missing)}\n" if missing else "")
        + (f"* Failed units in this invocation: {failed}\n" if failed else "")
    )
    for task, body in md.items():
        text += f"\n## {TASK_TITLES[task]}\n\n{body}\n"
    return text, json_rows


# -- main ----------------------------------------------------------------------------------


def parse_args() -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}"
    )
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods (a method applies to the tasks that have it; NAME@RECIPE "
        "runs an m-rBCR row with that recipe); default: every default method and reference row",
    )
    parser.add_argument(
        "--recipe", default=None, help="pass recipe NAME to every m-rBCR row without @ suffix"
    )
    parser.add_argument("--steps", type=int, default=600, help="training steps (600)")
    parser.add_argument("--batch", type=int, default=16, help="patches per batch (16)")
    parser.add_argument("--patch", type=int, default=64, help="patch side in px (64)")
    parser.add_argument("--val-freq", type=int, default=100, help="steps between validations")
    parser.add_argument("--val-patches", type=int, default=64, help="validation patches (64)")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (0,1,2)")
    parser.add_argument("--frames", type=int, default=50, help="test frames of field 19 (50)")
    parser.add_argument(
        "--sr-frames", type=int, default=5, help="sr_simulated test realisations (5; ≤ --frames)"
    )
    parser.add_argument(
        "--careamics-augment",
        choices=("default", "none"),
        default="default",
        help="CAREamics augmentation: its default flips+rot90, or none",
    )
    parser.add_argument("--jobs", type=int, default=1, help="units run at once (1)")
    parser.add_argument("--reuse", action="store_true", help="skip units already finished")
    parser.add_argument("--no-save", action="store_true", help="don't write results/quality.*")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: report the finished units of these settings and seeds",
    )
    parser.add_argument("--timing", action="store_true", help="quiet s/step timing instead")
    parser.add_argument("--timing-steps", type=int, default=30, help="timed steps (30)")
    parser.add_argument("--timing-warmup", type=int, default=5, help="warm-up steps (5)")
    parser.add_argument("--unit", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--unit-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if unknown := [t for t in args.tasks if t not in TASKS]:
        parser.error(f"unknown --tasks {unknown}; choose from {list(TASKS)}")
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.val_freq = min(args.val_freq, args.steps)
    if args.timing_warmup < 1 or args.timing_steps < 2:
        parser.error("--timing-warmup must be >= 1 and --timing-steps >= 2")
    return args, parser


def main() -> int:
    from debcr.runtime import cpu_name

    args, parser = parse_args()
    if args.unit:
        return child_main(args)
    plan = resolve_methods(args, parser)
    started = datetime.datetime.now().astimezone()
    t0 = time.perf_counter()
    settings = settings_of(args)
    key = settings_key(settings)
    root = OUT / key
    print(f"Machine: {cpu_name()}; {machine_line()}")
    for task in args.tasks:
        if plan[task]:
            info = data_paths(task, args, prepare=True)
            log(f"data for {task}: {info.get('info', {}).get('patches', info['paths'])}")

    if args.timing:
        units = [
            (task, method, 0)
            for task in args.tasks
            for method in plan[task]
            if not is_reference(split_method(method)[0])
        ]
        tmp = OUT / "timing_parts"
        failed = run_lanes(
            units, args, lambda u: tmp / f"{u[0]}_{u[1]}.json", 1, 2, OUT / "timing_logs"
        )
        timing = load_timing()
        rows = []
        for task, method, _ in units:
            rec = read_json(tmp / f"{task}_{method}.json")
            if rec is None or (task, method, 0) in failed:
                continue
            timing[f"{task}/{method}"] = rec
            rows.append(
                [
                    task,
                    method,
                    f"{rec['s_per_step']:.3f}",
                    f"{rec['min']:.3f}–{rec['max']:.3f}",
                    str(rec["timed_steps"]),
                    f"{100 * rec['other_load']:.0f}%",
                ]
            )
        write_atomic(TIMING, timing)
        print(
            f"\nQuiet training-step timing (batch {args.batch}, patch {args.patch}², 2 threads; "
            f"median after {args.timing_warmup} warm-up steps), written to "
            f"{TIMING.relative_to(HERE.parent)}\n"
        )
        print(table(["task", "method", "s/step", "min–max", "steps timed", "other load"], rows))
        return 1 if failed else 0

    units, reused = [], []
    for seed in args.seeds:
        for task in args.tasks:
            for method in plan[task]:
                ref = is_reference(split_method(method)[0])
                # reference rows are seedless (seed 0); the FMD tasks share fmd_supervised's
                utask = "fmd_supervised" if ref and task.startswith("fmd_") else task
                unit = (utask, method, 0 if ref else seed)
                if unit in units or f"{unit[0]}/{unit[1]}/{unit[2]}" in reused:
                    continue
                rec = read_json(unit_path(root, *unit)) if args.reuse else None
                if rec is not None and rec.get("settings") == settings:
                    reused.append(f"{unit[0]}/{unit[1]}/{unit[2]}")
                    continue
                units.append(unit)
    units.sort(key=lambda u: (not is_reference(split_method(u[1])[0]),))
    if args.report_only:
        units = []
    log(f"{len(units)} units to run ({args.jobs} at once), {len(reused)} reused")
    failed = run_lanes(units, args, lambda u: unit_path(root, *u), args.jobs, 1, root / "logs")
    seeds = sorted(set(args.seeds))
    found = collect(root, seeds)
    if not found:
        log("no finished units")
        return 1
    text, rows = report(found, args, settings, key, started, time.perf_counter() - t0, failed)
    publish(text, RESULTS, save=not args.no_save)
    if not args.no_save:
        RESULTS_JSON.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"written to {RESULTS_JSON.relative_to(HERE.parent)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
