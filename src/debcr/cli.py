"""The ``debcr`` command line.

``debcr --help`` starts without importing torch; each subcommand imports what it
needs. User mistakes end with a one-line message and exit code 2, never a stack
trace (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from debcr._version import __version__
from debcr.defaults import BACKENDS, BEST_MODEL, PRECISIONS, UNITS
from debcr.errors import DebcrError
from debcr.weights import PRETRAINED

logger = logging.getLogger("debcr")


def _cmd_info(args: argparse.Namespace) -> int:
    from debcr.backends import system_info

    info = system_info()
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:>{width}}: {value}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from debcr.interop import convert_tf_checkpoint

    path = convert_tf_checkpoint(
        args.checkpoint, args.output, task=args.task, overwrite=args.overwrite
    )
    print(f"wrote {path}")
    return 0


def _channel_list(values: Sequence[str] | None) -> list[int | str] | None:
    """``--channel`` values: whole numbers are indices, anything else a channel name."""
    if not values:
        return None
    return [int(v) if v.lstrip("-").isdigit() else v for v in values]


def _predict_options(args: argparse.Namespace) -> dict[str, object]:
    """Keyword arguments of `debcr.model.predict` from the options, checked up front
    (by `PredictOptions`, before any model is loaded)."""
    from debcr.data.normalize import check_percentiles
    from debcr.defaults import PMAX, PMIN
    from debcr.inference.options import PredictOptions

    given = [f"--{name}" for name in ("pmin", "pmax") if getattr(args, name) is not None]
    if args.no_normalize and given:
        raise DebcrError(
            f"{' and '.join(given)} {'set' if len(given) > 1 else 'sets'} the percentile "
            "normalisation that --no-normalize turns off; give one or the other"
        )
    if given:  # one of the two given: checked with the other's default, named as options
        check_percentiles(
            PMIN if args.pmin is None else args.pmin,
            PMAX if args.pmax is None else args.pmax,
            what="(--pmin, --pmax)",
        )
    options = {
        "batch_size": args.batch,
        "tile_size": args.tile,
        "halo": args.halo,
        "normalize": not args.no_normalize,
        "pmin": args.pmin,  # None: the model's own (PredictOptions.for_model)
        "pmax": args.pmax,
        "units": args.units,
        "channels": _channel_list(args.channel),
        "device": args.device,
        "precision": args.precision,
        "backend": args.backend,
        "overwrite": args.overwrite,
        "progress": not args.quiet,
        "tta": args.tta,
        "uncertainty": args.uncertainty,
    }
    PredictOptions(**options)
    return options


#: Failures of one input that do not stop a `debcr predict --keep-going` run as bugs would.
_INPUT_ERRORS = (DebcrError, OSError, ValueError)


def _cmd_predict(args: argparse.Namespace) -> int:
    from debcr.data.io.plan import image_files, plan_outputs

    plan = plan_outputs(image_files(args.inputs), Path(args.output), args.suffix)
    options = _predict_options(args)
    from debcr import model as api
    from debcr.runtime import inference_device
    from debcr.sources import restorable

    # A model file's header suffices where OpenVINO keeps its conversion: no torch to start.
    net = restorable(args.model, args.device or "auto")
    inference_device(args.device)  # a wrong device is said once, before any input
    restored: list[Path] = []
    failed: list[Path] = []
    for source, target in plan:
        try:
            written = api.predict(net, source, output=target, **options)
        except Exception as exc:
            expected = isinstance(exc, _INPUT_ERRORS)
            if not args.keep_going:
                if not expected:  # a bug: main shows the traceback; say which file hit it
                    print(f"debcr predict: failed on {source}", file=sys.stderr)
                    raise
                stopped = (
                    f" (stopped after {len(restored)} of {len(plan)} inputs; outputs written so "
                    "far stay; --keep-going restores the others)"
                    if len(plan) > 1
                    else ""
                )
                raise DebcrError(f"{source}: {exc}{stopped}") from exc
            if getattr(args, "debug", False):
                import traceback

                traceback.print_exc()
            reason = str(exc) if expected else f"{type(exc).__name__}: {exc}"
            print(f"debcr predict: error: {source}: {reason}", file=sys.stderr)
            failed.append(source)
            continue
        restored.append(source)
        print(f"{source} -> {target}")
        if args.uncertainty:
            print(f"{source} -> {written[1]} (uncertainty)")
    if args.keep_going:
        summary = f"{len(restored)} restored, {len(failed)} failed"
        if failed:
            print(f"debcr predict: {summary}: {', '.join(map(str, failed))}", file=sys.stderr)
        else:
            print(summary)
    return 2 if failed else 0


def _group_list(text: str | None) -> list[str]:
    """``"1-18,21"`` → ``["1", …, "18", "21"]``."""
    groups: list[str] = []
    for part in (text or "").split(","):
        part = part.strip()
        if "-" in part and all(p.isdigit() for p in part.split("-", 1)):
            first, last = (int(p) for p in part.split("-", 1))
            groups += [str(g) for g in range(first, last + 1)]
        elif part:
            groups.append(part)
    return groups


def _prepare_split(args: argparse.Namespace) -> object:
    explicit = {s: _group_list(getattr(args, f"{s}_groups")) for s in ("train", "val", "test")}
    if any(explicit.values()):
        return {k: v for k, v in explicit.items() if v}
    return tuple(float(f) for f in args.split.split(","))


def _cmd_prepare(args: argparse.Namespace) -> int:
    from debcr.modes import MODES

    spec = MODES[args.mode]
    split = _prepare_split(args)
    # Options of some modes only, refused for the others (naming the modes that take them).
    own = {"background_filter": args.background, "max_frames": args.max_frames}
    refusals = {
        "background_filter": "--background needs ground truth; it is for {} preparation",
        "max_frames": "--max-frames is for --mode {}",
    }
    for option, value in own.items():
        if value is not None and option not in spec.options:
            takers = " / ".join(m.name for m in MODES.values() if option in m.options)
            raise DebcrError(refusals[option].format(takers))
    result = spec.prepare(
        args.inputs,
        args.name,
        args.output,
        split=split,
        patch_size=args.patch,
        overlap=args.overlap,
        seed=args.seed,
        overwrite=args.overwrite,
        **{option: value for option, value in own.items() if value is not None},
    )
    for name, path in result.paths.items():
        print(f"{name}: {path} ({result.patches[name]} {spec.items}, groups {result.groups[name]})")
    return 0


def _run_config(path: Path):
    """The configuration of a run folder; a run from before recipes trained with ``paper``'s."""
    import yaml

    from debcr import config as cfg

    config = cfg.load(path)
    written = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    if isinstance(written, dict) and "recipe" not in written:
        return cfg.load_dict({**written, "recipe": "paper"})
    return config


def _cmd_train(args: argparse.Namespace) -> int:
    from debcr import config as cfg
    from debcr.defaults import RUN_CONFIG
    from debcr.model import train
    from debcr.training import TrainingInterrupted

    paths = [item for item in args.arguments if "=" not in item]
    if len(paths) > 1:
        raise DebcrError(
            f"give one CONFIG.yaml, got {len(paths)} ({', '.join(paths)}); overrides are "
            "written key=value"
        )
    overrides = cfg.parse_overrides([item for item in args.arguments if "=" in item])
    if args.resume:
        if paths:
            raise DebcrError(
                f"--resume continues {args.resume} with its own {RUN_CONFIG}; leave out "
                f"{paths[0]} and give changes as key=value overrides"
            )
        run_dir = Path(args.resume)
        if run_dir.exists() and not run_dir.is_dir():
            raise DebcrError(
                f"--resume takes the folder of a training run, but {run_dir} is a file; give "
                f"the run's folder (its weights_path), e.g. `debcr train --resume {run_dir.parent}`"
            )
        overrides["weights_path"] = str(run_dir)
        config = _run_config(run_dir / RUN_CONFIG).with_overrides(overrides)
    else:
        if not paths:
            raise DebcrError(
                "give a CONFIG.yaml (e.g. from `debcr.config.save`) or --resume RUN_DIR"
            )
        config = cfg.load(paths[0]).with_overrides(**overrides)
    if args.train:
        config = config.with_overrides(train_data=args.train)
    if args.val:
        config = config.with_overrides(val_data=args.val)
    if args.init:
        config = config.with_overrides(init_model=args.init)
    if not config.train_data or not config.val_data:
        raise DebcrError(
            "no training/validation data: pass --train X_train.npz --val X_val.npz "
            "(or set train_data/val_data in the config)"
        )
    if args.resume:
        cfg.save(config, Path(args.resume) / RUN_CONFIG)
    try:
        train(config.train_data, config.val_data, config, resume=bool(args.resume))
    except TrainingInterrupted as stop:  # Ctrl-C, SIGTERM: the step it stopped at is saved
        if stop.step is None:
            print(
                f"interrupted before the first checkpoint; nothing to resume in {stop.run_dir}",
                file=sys.stderr,
            )
        else:
            print(
                f"interrupted at step {stop.step}; resume with "
                f"`debcr train --resume {stop.run_dir}`",
                file=sys.stderr,
            )
        return 128 + _signal_number(stop.signal)
    print(f"best model: {Path(config.weights_path) / BEST_MODEL}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from debcr.evaluate import evaluate

    result = evaluate(args.pred, args.gt, args.input, args.output, overwrite=args.overwrite)
    for name, path in result["files"].items():
        print(f"{name}: {path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from debcr import model as api

    package = {
        key: value
        for key, value in (
            ("name", args.name),
            ("description", args.description),
            ("authors", args.author),
            ("license", args.license),
            ("tags", args.tag),
        )
        if value
    }
    result = api.export(
        args.model, args.output, format=args.format, overwrite=args.overwrite, **package
    )
    print(result)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from debcr.demo import run_demo

    result = run_demo(args.output, overwrite=args.overwrite, progress=not args.quiet)
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


def _add_info(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    info = sub.add_parser("info", help="versions and devices (paste this into bug reports)")
    info.set_defaults(func=_cmd_info)


def _add_convert(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    conv = sub.add_parser(
        "convert-tf",
        help="convert a checkpoint of the original TensorFlow DeBCR into a debcr model file",
    )
    conv.add_argument("checkpoint", help="checkpoint prefix, e.g. weights/ckpt-best")
    conv.add_argument("output", help="model file to write (.safetensors)")
    conv.add_argument("--task", default=None, help="task label stored in the file")
    conv.add_argument("--overwrite", action="store_true", help="replace an existing output")
    conv.set_defaults(func=_cmd_convert)


def _positive_int(text: str) -> int:
    """An argparse type: a whole number ≥ 1 (0 used to fall back silently to the default)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be at least 1, got {value}; leave the option out for the default"
        )
    return value


def _halo(text: str) -> int:
    """An argparse type: a halo in pixels, a multiple of 4 that is 0 or more."""
    from debcr.defaults import SIZE_MULTIPLE

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of pixels, got {text!r}"
        ) from None
    if value < 0 or value % SIZE_MULTIPLE:
        raise argparse.ArgumentTypeError(
            f"must be a multiple of {SIZE_MULTIPLE} that is 0 or more, got {value}; leave the "
            "option out for the network's receptive field"
        )
    return value


def _add_predict(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from debcr.defaults import PMAX, PMIN

    pred = sub.add_parser(
        "predict", help="restore images (files or folders); inputs are never touched"
    )
    pred.add_argument(
        "inputs", nargs="+", help="image files (TIFF, PNG, NPY, NPZ, Zarr) or folders"
    )
    pred.add_argument(
        "-o", "--output", required=True, help="output file, or folder for several inputs"
    )
    pred.add_argument(
        "--model",
        default="2D_denoising",
        help=f"built-in model ({', '.join(PRETRAINED)}), a model file, a training run "
        "folder or a BioImage Model Zoo package (default: 2D_denoising)",
    )
    pred.add_argument("--tile", type=_positive_int, default=None, help="tile core size in pixels")
    pred.add_argument("--batch", type=_positive_int, default=None, help="tiles per forward pass")
    pred.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)"
    )
    pred.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto (default): bfloat16 where the CPU/GPU computes it natively (see debcr "
        "info), else float32; float32 is the exact mode",
    )
    pred.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="what runs the network: auto (default: OpenVINO on a CPU where it is installed, "
        "as the install does on Linux, Windows x86_64 and macOS; else PyTorch), torch or openvino",
    )
    pred.add_argument(
        "--halo",
        type=_halo,
        default=None,
        help="context around each tile in pixels, a multiple of 4 (default: the network's "
        "receptive field; 0: none, as the original DeBCR's patch predict)",
    )
    pred.add_argument(
        "--units",
        choices=UNITS,
        default=UNITS[0],
        help="intensities of the result: auto (default: calibrated for denoising models, "
        "affine for resolution enhancement), the input's units through a monotone curve that "
        "keeps the mean (calibrated), a straight line fitted to the input (affine), only the "
        "percentile normalisation inverted (percentile), or the network output as is "
        "(normalized)",
    )
    pred.add_argument(
        "--tta",
        action="store_true",
        help="average the 8 rotations and flips of every tile (about +0.2 dB, 8x the time)",
    )
    pred.add_argument(
        "--uncertainty",
        action="store_true",
        help="also write NAME.uncertainty.SUFFIX beside each output: the spread of the 8 "
        "rotations/flips in the result's units (implies --tta)",
    )
    pred.add_argument(
        "--no-normalize",
        action="store_true",
        help="feed the values as they are (inputs normalised beforehand, as in the original)",
    )
    pred.add_argument(
        "--pmin", type=float, default=None, help=f"lower normalisation percentile ({PMIN})"
    )
    pred.add_argument(
        "--pmax", type=float, default=None, help=f"upper normalisation percentile ({PMAX})"
    )
    pred.add_argument("--suffix", default=".tif", help="file type for outputs in a folder (.tif)")
    pred.add_argument(
        "--channel",
        action="append",
        metavar="C",
        help="restore only this channel (index or name); repeat for several (default: all)",
    )
    pred.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    pred.add_argument(
        "--keep-going",
        action="store_true",
        help="when an input fails, restore the others and print a summary (exit code 2 "
        "if any failed)",
    )
    pred.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pred.set_defaults(func=_cmd_predict)


def _add_prepare(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from debcr.modes import DEFAULT_MODE, MODES

    prep = sub.add_parser(
        "prepare",
        help="images → normalised training patches split by field (NPZ): LOW GT pairs, or "
        "noisy images only with --mode noise2noise RAW_DIR / --mode noise2void IMAGES...",
    )
    prep.add_argument(
        "inputs",
        nargs="+",
        metavar="PATH",
        help="supervised: LOW GT (folders with one subfolder per field, or files); "
        "noise2noise: folder(s) of fields (RAW/<field>/frames, or one TYX stack per field); "
        "noise2void: noisy image files or folders",
    )
    prep.add_argument(
        "--mode",
        choices=tuple(MODES),
        default=DEFAULT_MODE,
        help=f"training mode the patches are for (default {DEFAULT_MODE})",
    )
    prep.add_argument("--name", required=True, help="dataset name (NAME_train.npz, ...)")
    prep.add_argument("-o", "--output", required=True, help="output folder")
    prep.add_argument("--patch", type=int, default=128, help="patch size (default 128)")
    prep.add_argument("--overlap", type=float, default=0.0, help="patch overlap 0–0.9")
    prep.add_argument("--split", default="0.8,0.1,0.1", help="train,val,test fractions of fields")
    for part in ("train", "val", "test"):
        prep.add_argument(
            f"--{part}-groups",
            help=f"fields for {part}, e.g. 1-18 (overrides --split; unlisted fields are left out)",
        )
    prep.add_argument("--background", type=float, default=None, help="drop background patches")
    prep.add_argument(
        "--max-frames",
        type=int,
        default=None,
        help="noise2noise: use at most this many frames per field",
    )
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument("--overwrite", action="store_true")
    prep.set_defaults(func=_cmd_prepare)


def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tr = sub.add_parser(
        "train",
        help="train or fine-tune m-rBCR (CONFIG.yaml with key=value overrides, or --resume)",
    )
    tr.add_argument(
        "arguments",
        nargs="*",
        metavar="CONFIG | KEY=VALUE",
        help="the YAML configuration (debcr or original DeBCR keys; not with --resume) and "
        "overrides such as batch_size=16",
    )
    tr.add_argument("--train", help="training patches (NPZ from `debcr prepare`)")
    tr.add_argument("--val", help="validation patches (NPZ from `debcr prepare`)")
    tr.add_argument("--init", help="start from a built-in model name or a model file")
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    tr.set_defaults(func=_cmd_train)


def _add_evaluate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ev = sub.add_parser(
        "evaluate", help="PSNR/SSIM/NRMSE/FRC/entropy report of restored images against GT"
    )
    ev.add_argument("pred", help="restored image or stack")
    ev.add_argument("gt", help="ground truth of the same shape")
    ev.add_argument("--input", default=None, help="the degraded input, for comparison")
    ev.add_argument("-o", "--output", required=True, help="report folder")
    ev.add_argument("--overwrite", action="store_true")
    ev.set_defaults(func=_cmd_evaluate)


def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    exp = sub.add_parser(
        "export",
        help="share a model: BioImage Model Zoo package (.zip), ONNX (.onnx) or TorchScript (.pt)",
        description="Export a model for Fiji/deepImageJ, ilastik, QuPath, the BioImage Model Zoo "
        "(.zip, validated with bioimageio.core before it is written; its warnings are shown), "
        "ONNX Runtime (.onnx) or libtorch (.pt). Needs the export extra: pip install "
        "'debcr-torch[export]'.",
    )
    exp.add_argument(
        "model",
        help=f"built-in model ({', '.join(PRETRAINED)}), a model file or a training run folder",
    )
    exp.add_argument("output", help="file to write: .zip (BMZ package), .onnx or .pt")
    exp.add_argument(
        "--format", choices=("bmz", "onnx", "torchscript"), help="default: from the suffix"
    )
    exp.add_argument("--name", help="model name shown in the Zoo (BMZ; required for own models)")
    exp.add_argument("--description", help="one-sentence description (BMZ)")
    exp.add_argument(
        "--author",
        action="append",
        help="author name; repeat for several (BMZ; required for own models; a built-in model "
        "keeps its published authors and lists these as having packaged it)",
    )
    exp.add_argument("--license", help="SPDX licence of the weights (BMZ; default CC-BY-4.0)")
    exp.add_argument("--tag", action="append", help="extra tag; repeat for several (BMZ)")
    exp.add_argument("--overwrite", action="store_true", help="replace an existing output")
    exp.set_defaults(func=_cmd_export)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo", help="restore the bundled sample with the built-in model; writes TIFF + PNG"
    )
    demo.add_argument("-o", "--output", default="demo_output", help="output folder")
    demo.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``debcr`` (kept importable for the docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="debcr",
        description="Restore fluorescence microscopy images (denoising, deconvolution) with "
        "m-rBCR.",
    )
    parser.add_argument("--version", action="version", version=f"debcr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # The call order is the order in which `debcr --help` lists the commands.
    _add_info(sub)
    _add_convert(sub)
    _add_predict(sub)
    _add_prepare(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_export(sub)
    _add_demo(sub)
    return parser


def _stop_on_signals() -> None:
    """Make SIGTERM and SIGHUP stop debcr as Ctrl-C (SIGINT) does.

    The handler raises KeyboardInterrupt in the main thread, so the cleanup of unfinished
    outputs (`debcr.files.staged`) runs and ``main`` reports the interruption. Further
    signals are ignored while that cleanup runs. Only from the main thread (signal.signal
    refuses others), and not where a signal was set to be ignored (``nohup``).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, frame: object) -> None:
        for sig in wanted:
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the cleanup short
        raise KeyboardInterrupt(signal.Signals(signum).name)

    wanted = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    for sig in wanted:
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, stop)


def _signal_number(name: str) -> int:
    import signal

    return int(getattr(signal, name, signal.SIGINT))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``debcr`` command."""
    if argv is None:  # run as the command, not called from Python: SIGTERM/SIGHUP as Ctrl-C
        _stop_on_signals()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    # Lightning gives its "lightning" logger a handler of its own and lets
    # "lightning.pytorch" propagate when the root logger has one: every message came twice.
    logging.getLogger("lightning").propagate = False
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (DebcrError, FileNotFoundError, FileExistsError, ValueError) as exc:
        if args.debug:
            raise
        print(f"debcr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        # SIGTERM/SIGHUP arrive as KeyboardInterrupt("SIGTERM") (see _stop_on_signals).
        name = str(exc.args[0]) if exc.args else "SIGINT"
        print(
            f"debcr {args.command}: interrupted ({name}); no partial output was left behind",
            file=sys.stderr,
        )
        return 128 + _signal_number(name)


if __name__ == "__main__":
    sys.exit(main())
