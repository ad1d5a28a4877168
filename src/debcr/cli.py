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

import debcr
from debcr.errors import DebcrError

logger = logging.getLogger("debcr")

BUILTIN_MODELS = ("2D_denoising", "3D_denoising", "bright_SR", "confocal_SR")
#: Extensions ``debcr predict`` picks up when given a folder.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy", ".npz", ".zarr")


def _cmd_info(args: argparse.Namespace) -> int:
    from debcr.runtime import system_info

    for key, value in system_info().items():
        print(f"{key:>12}: {value}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from debcr.convert import convert_tf_checkpoint

    path = convert_tf_checkpoint(
        args.checkpoint, args.output, task=args.task, overwrite=args.overwrite
    )
    print(f"wrote {path}")
    return 0


def _inputs(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and path.suffix != ".zarr":
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DebcrError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"input {path} does not exist")
    return files


def _output_for(source: Path, out: Path, many: bool, suffix: str) -> Path:
    if not many and out.suffix:
        return out
    name = source.name.split(".")[0]
    return out / f"{name}_restored{suffix}"


def _cmd_predict(args: argparse.Namespace) -> int:
    from debcr import model as api

    sources = _inputs(args.inputs)
    out = Path(args.output)
    many = len(sources) > 1 or not out.suffix
    net = api.init(args.model, device=args.device or "auto")
    for source in sources:
        target = _output_for(source, out, many, args.suffix)
        api.predict(
            net,
            source,
            batch_size=args.batch,
            tile_size=args.tile,
            device=args.device,
            precision=args.precision,
            output=target,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
        print(f"{source} -> {target}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from debcr.demo import run_demo

    result = run_demo(args.output, overwrite=args.overwrite, progress=not args.quiet)
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``debcr`` (kept importable for the docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="debcr",
        description="Restore fluorescence microscopy images (denoising, deconvolution) with "
        "m-rBCR.",
    )
    parser.add_argument("--version", action="version", version=f"debcr {debcr.__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    info = sub.add_parser("info", help="versions and devices (paste this into bug reports)")
    info.set_defaults(func=_cmd_info)

    conv = sub.add_parser(
        "convert-tf",
        help="convert a checkpoint of the original TensorFlow DeBCR into a debcr model file",
    )
    conv.add_argument("checkpoint", help="checkpoint prefix, e.g. weights/ckpt-best")
    conv.add_argument("output", help="model file to write (.safetensors)")
    conv.add_argument("--task", default=None, help="task label stored in the file")
    conv.add_argument("--overwrite", action="store_true", help="replace an existing output")
    conv.set_defaults(func=_cmd_convert)

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
        help=f"built-in model ({', '.join(BUILTIN_MODELS)}) or a model file "
        "(default: 2D_denoising)",
    )
    pred.add_argument("--tile", type=int, default=None, help="tile core size in pixels")
    pred.add_argument("--batch", type=int, default=None, help="tiles per forward pass")
    pred.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)"
    )
    pred.add_argument("--precision", default="float32", choices=("float32", "bfloat16", "float16"))
    pred.add_argument("--suffix", default=".tif", help="file type for outputs in a folder (.tif)")
    pred.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    pred.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pred.set_defaults(func=_cmd_predict)

    demo = sub.add_parser(
        "demo", help="restore the bundled sample with the built-in model; writes TIFF + PNG"
    )
    demo.add_argument("-o", "--output", default="demo_output", help="output folder")
    demo.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``debcr`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
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
    except KeyboardInterrupt:
        print("interrupted; no partial output was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
