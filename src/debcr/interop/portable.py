"""Standalone TorchScript and ONNX graphs of m-rBCR, checked against PyTorch when written.

Both take a batch ``(N, 1, H, W)`` of normalised images (H and W multiples of 4, any N) and
return the full-resolution restoration ``(N, 1, H, W)``, in the same normalised units (see
`debcr.data.normalize`). They run without debcr: TorchScript with ``torch.jit.load``
(also from C++ through libtorch), ONNX with ONNX Runtime, OpenVINO or any ONNX consumer.

Every export is checked on a real image (the bundled noisy nuclei sample, normalised as the
model expects) against the PyTorch model; an export whose output differs by more than
`TOLERANCE` is not written.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from debcr.data.normalize import normalize, percentiles_of
from debcr.defaults import PMAX, PMIN
from debcr.errors import ExportError
from debcr.files import atomic_output
from debcr.nn import MRBCR, MRBCRRestorer
from debcr.samples import sample_path

__all__ = [
    "ONNX_IR_VERSION",
    "ONNX_OPSET",
    "TOLERANCE",
    "ExportCheck",
    "check_image",
    "export_onnx",
    "export_torchscript",
    "missing_extra",
    "restorer",
    "write_onnx",
    "write_torchscript",
]

logger = logging.getLogger(__name__)

#: ONNX operator set of the exported graphs (ONNX Runtime ≥ 1.14, OpenVINO ≥ 2023.0); the files
#: are stamped with the lowest IR version it allows (`ONNX_IR_VERSION`).
ONNX_OPSET = 18
#: IR version of the exported ONNX files: the lowest that opset `ONNX_OPSET` allows, so that the
#: ONNX Runtime releases in Java consumers (deepImageJ, QuPath: 1.15 to 1.17) load them.
ONNX_IR_VERSION = 8
#: Largest |difference| to the PyTorch model (normalised units, float32) an export may show.
TOLERANCE = 1e-4

Format = Literal["torchscript", "onnx"]


@dataclass(frozen=True)
class ExportCheck:
    """What an export wrote and how closely it reproduces the PyTorch model.

    Attributes
    ----------
    path
        The file written.
    format
        ``"torchscript"`` or ``"onnx"``.
    max_abs_diff
        Largest |exported − PyTorch| on the check image, in normalised units.
    image_shape
        Shape of the check image (the bundled sample).
    """

    path: Path
    format: Format
    max_abs_diff: float
    image_shape: tuple[int, ...]

    def __str__(self) -> str:
        return (
            f"{self.format} model written to {self.path}; max |Δ| to PyTorch "
            f"{self.max_abs_diff:.2e} on a {'×'.join(map(str, self.image_shape))} image"
        )


def restorer(model: MRBCR) -> MRBCRRestorer:
    """A float32 CPU copy of ``model`` with one output (the full-resolution restoration)."""
    net = MRBCRRestorer()
    state = model.state_dict()
    net.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in state.items()})
    net.metadata = dict(getattr(model, "metadata", {}))
    return net.eval()


def check_image(model: MRBCR) -> np.ndarray:
    """The bundled noisy sample normalised as ``model`` expects, shaped ``(1, 1, H, W)``."""
    import tifffile

    settings = getattr(model, "metadata", {}).get("normalization")
    pmin, pmax = percentiles_of(settings) or (PMIN, PMAX)
    image = tifffile.imread(sample_path("nuclei_noisy"))
    return normalize(image, pmin=pmin, pmax=pmax, dtype=np.float32)[None, None]


def _reference(net: MRBCRRestorer, image: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return net(torch.from_numpy(image)).numpy()


def write_torchscript(net: MRBCRRestorer, path: Path) -> None:
    """Trace ``net`` and save it to ``path`` (no check; see `export_torchscript`)."""
    example = torch.zeros(1, 1, 64, 64)
    # torch deprecates TorchScript, but deepImageJ, ilastik and libtorch still run only it.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(net, example, check_trace=False)
        traced.save(os.fspath(path))


def write_onnx(net: MRBCRRestorer, path: Path, opset: int = ONNX_OPSET) -> None:
    """Export ``net`` to one ONNX file at ``path`` with dynamic batch, height and width."""
    try:
        import onnxscript  # noqa: F401  (the exporter needs it; fail here with a clear message)
    except ImportError as exc:
        raise ExportError(missing_extra("ONNX export", exc.name)) from exc
    dim = torch.export.Dim
    height, width = dim("height", min=1, max=16384), dim("width", min=1, max=16384)
    shapes = {"x": {0: dim("batch", min=1, max=4096), 2: 4 * height, 3: 4 * width}}
    # The exporter reports its progress with print(), warnings and INFO logs of its graph
    # passes; keep the user's console clean.
    with (
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
        _quiet_loggers("onnx_ir", "onnxscript", "torch.onnx"),
    ):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.zeros(1, 1, 64, 64),),
            os.fspath(path),
            input_names=["input"],
            output_names=["output"],
            opset_version=opset,
            dynamic_shapes=shapes,
            external_data=False,
            dynamo=True,
        )
    _stamp_lowest_ir(path)


def _stamp_lowest_ir(path: Path) -> None:
    """Stamp the ONNX file at ``path`` with the lowest IR version its opsets allow.

    The exporter writes the newest IR version its ``onnx`` knows (10 with onnx 1.16+), which
    ONNX Runtime before 1.18 refuses, although nothing in the graph needs it. deepImageJ and
    QuPath ship such older runtimes (1.15 to 1.17); the graph of opset `ONNX_OPSET` needs IR 8.
    """
    import onnx

    proto = onnx.load(os.fspath(path))
    proto.ir_version = onnx.helper.find_min_ir_version_for(
        list(proto.opset_import), ignore_unknown=True
    )
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(
            f"the exported ONNX graph is not valid at IR version {proto.ir_version} "
            f"({str(exc).splitlines()[0]}); nothing was written, please report this with the "
            "output of debcr info"
        ) from exc
    onnx.save(proto, os.fspath(path))


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def run_torchscript(path: Path, image: np.ndarray) -> np.ndarray:
    """Run a TorchScript file written by `write_torchscript` on ``image``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(os.fspath(path), map_location="cpu")
    with torch.inference_mode():
        return module(torch.from_numpy(image)).numpy()


def run_onnx(path: Path, image: np.ndarray) -> np.ndarray:
    """Run an ONNX file written by `write_onnx` on ``image`` with ONNX Runtime."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ExportError(missing_extra("checking an ONNX export", exc.name)) from exc
    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: image})[0]


def missing_extra(what: str, module: str | None) -> str:
    """The message for a missing optional package of the export extra."""
    return (
        f"{what} needs the package {module!r}, which is not installed; install the export "
        "extra: pip install 'debcr-torch[export]' (add torch==<your version> to keep your torch)"
    )


def _export(model: MRBCR, path: str | os.PathLike, fmt: Format, overwrite: bool) -> ExportCheck:
    net = restorer(model)
    image = check_image(net)
    expected = _reference(net, image)
    write, run = {
        "torchscript": (write_torchscript, run_torchscript),
        "onnx": (write_onnx, run_onnx),
    }[fmt]
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        write(net, tmp)
        diff = float(np.max(np.abs(run(tmp, image) - expected)))
        if not diff <= TOLERANCE:
            raise ExportError(
                f"the {fmt} export differs from the PyTorch model by up to {diff:.3g} "
                f"(allowed {TOLERANCE:g}) on the check image; nothing was written to {path}"
            )
    check = ExportCheck(path, fmt, diff, image.shape)
    logger.debug("%s", check)
    return check


def export_torchscript(
    model: MRBCR, path: str | os.PathLike, *, overwrite: bool = False
) -> ExportCheck:
    """Write ``model`` as a TorchScript file, checked against PyTorch on a real image.

    Parameters
    ----------
    model
        The network (any device; it is exported from a float32 CPU copy).
    path
        Output file (conventionally ``.pt``); written atomically.
    overwrite
        Replace an existing file.

    Returns
    -------
    ExportCheck
        The path and the largest difference to PyTorch on the bundled sample.

    Raises
    ------
    ExportError
        The traced graph differs from the model by more than `TOLERANCE`.
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    return _export(model, path, "torchscript", overwrite)


def export_onnx(model: MRBCR, path: str | os.PathLike, *, overwrite: bool = False) -> ExportCheck:
    """Write ``model`` as one ONNX file (opset `ONNX_OPSET`), checked with ONNX Runtime.

    The graph has a dynamic batch size and dynamic height and width (multiples of 4); its
    input is named ``input`` and its output ``output``.

    Parameters
    ----------
    model
        The network (any device; it is exported from a float32 CPU copy).
    path
        Output file (conventionally ``.onnx``); written atomically.
    overwrite
        Replace an existing file.

    Returns
    -------
    ExportCheck
        The path and the largest difference to PyTorch on the bundled sample.

    Raises
    ------
    ExportError
        ``onnxscript``/``onnxruntime`` are missing (install ``debcr-torch[export]``), or the
        graph differs from the model by more than `TOLERANCE`.
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    return _export(model, path, "onnx", overwrite)
