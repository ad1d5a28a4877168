"""Test-time augmentation: its cost as a multiple of one plain pass, per backend and image size.

Commands (from the repository root)::

    .venv/bin/python benchmarks/bench_tta.py                      # 512², torch and openvino
    .venv/bin/python benchmarks/bench_tta.py --sizes 512 2048     # and the 2048² FMD mosaic
    .venv/bin/python benchmarks/bench_tta.py --save               # write results/tta.md

Image: the FMD Confocal_BPAE_B field 19 raw frames as a mosaic (512²: frame 0; 2048²: frames
0–15 arranged 4×4, as in bench_predict.py). Model: the built-in ``2D_denoising``. Each row
times, on the same image and backend with the default settings (precision ``"auto"``, the
backend's default tile and batch size), ``debcr.model.predict(model, image, progress=False)``
("single") and the same with ``tta=True`` ("TTA": the 8 transforms of each tile as one batch),
and, as the reference of what TTA cost before, the 8 transforms sent through the runner one
batch (of ``batch_size`` tiles) at a time ("8 passes", the earlier `restore_tta`). After one
untimed warm-up (a plain pass: the images are square, so TTA needs no other geometry), the
three run in turn ``--repeats`` times (interleaved, so the background load of a shared machine
reaches all of them alike; ``--skip-separate`` omits "8 passes"); reported are the median
times and the median of the per-round ratios TTA / single (the target is ≤ 8.5).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from _common import HERE, command_line, fmd_mosaic, fmt, log, machine_line, median, publish, table

SIZES = {512: 1, 1024: 2, 2048: 4}


def eight_passes(
    run: Callable[[np.ndarray], np.ndarray], tiles: np.ndarray, batch: int
) -> tuple[np.ndarray, np.ndarray]:
    """The earlier TTA: each transform through ``run`` ``batch`` tiles at a time."""
    from debcr.inference.tta import TRANSFORMS, dihedral, undo_dihedral

    outputs = np.empty((len(TRANSFORMS), *tiles.shape), dtype=np.float32)
    for k in TRANSFORMS:
        moved = np.ascontiguousarray(dihedral(tiles, k))
        restored = np.concatenate([run(moved[i : i + batch]) for i in range(0, len(moved), batch)])
        outputs[k] = undo_dihedral(restored, k)
    return outputs.mean(axis=0), outputs.std(axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512], choices=sorted(SIZES))
    parser.add_argument("--backends", nargs="+", default=["torch", "openvino"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-separate", action="store_true", help="omit the 8-passes rows")
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/tta.md")
    args = parser.parse_args()

    import debcr
    from debcr.inference import engine

    model = debcr.model.init("2D_denoising")
    batched = engine.restore_tta
    header = machine_line()
    rows = []
    for size in args.sizes:
        image = fmd_mosaic(SIZES[size])[0]
        for backend in args.backends:

            def plain(image=image, backend=backend) -> None:
                debcr.model.predict(model, image, backend=backend, progress=False)

            def tta(image=image, backend=backend) -> None:
                engine.restore_tta = batched
                debcr.model.predict(model, image, backend=backend, progress=False, tta=True)

            def separate(image=image, backend=backend) -> None:
                # The engine calls restore_tta(run, tiles, max_tiles): the old loop instead.
                engine.restore_tta = lambda run, tiles, _max: eight_passes(run, tiles, 1)
                try:
                    debcr.model.predict(model, image, backend=backend, progress=False, tta=True)
                finally:
                    engine.restore_tta = batched

            runs = {"single": plain, "tta": tta}
            if not args.skip_separate:
                runs["separate"] = separate
            times: dict[str, list[float]] = {name: [] for name in runs}
            # The images are square: TTA runs the geometry the plain pass compiles.
            log(f"{size}² {backend}: warm-up")
            plain()
            for r in range(args.repeats):
                for name, fn in runs.items():
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
                    log(f"{size}² {backend} round {r + 1}: {name} {times[name][-1]:.2f} s")
            ratios = [t / s for t, s in zip(times["tta"], times["single"])]
            old = [t / s for t, s in zip(times.get("separate", []), times["single"])]
            rows.append(
                [
                    f"{size}²",
                    backend,
                    fmt(median(times["single"])),
                    fmt(median(times["tta"])),
                    fmt(median(times["separate"])) if old else "–",
                    f"**{fmt(median(ratios))}×** ({', '.join(fmt(x) for x in ratios)})",
                    f"{fmt(median(old))}×" if old else "–",
                ]
            )
    report = "\n".join(
        [
            "# Test-time augmentation: cost against one pass",
            "",
            f"Command: `{command_line('bench_tta.py')}`",
            "",
            f"Machine: {header}",
            "",
            f"Median of {args.repeats} interleaved rounds (after a warm-up); model "
            "`2D_denoising`, default settings (precision and backend as named, default tile and "
            "batch size). TTA = the 8 transforms of each tile as one batch; 8 passes = the "
            "transforms one batch at a time (the earlier implementation), for reference.",
            "",
            table(
                [
                    "image",
                    "backend",
                    "single (s)",
                    "TTA (s)",
                    "8 passes (s)",
                    "TTA / single (rounds)",
                    "8 passes / single",
                ],
                rows,
            ),
            "",
        ]
    )
    publish(report, HERE / "results" / "tta.md", args.save)


if __name__ == "__main__":
    main()
