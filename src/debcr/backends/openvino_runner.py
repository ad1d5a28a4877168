"""The OpenVINO backend: the inference-only network, compiled for the CPU.

The network (`debcr.nn.fast.inference_network`) is converted to an OpenVINO model once
per model (a few seconds) with dynamic batch and spatial sizes, and the converted model is
kept on disk in the user cache folder (see `cache_dir`), named by the model's weights
checksum, `FORM_VERSION` and the OpenVINO version, so a changed model or an upgrade
converts again. Beside the ``.xml`` and ``.bin`` of each conversion, a ``.sha256`` file (in
``sha256sum`` format, written last) holds their checksums: an entry whose files do not match
it is converted again, so a damaged or swapped cache file never reaches inference.

The conversions of the built-in models ship with debcr (`SHIPPED`, written by
`write_shipped`), so their first run converts nothing: a missing cache entry is filled from
the shipped one when it is for the same weights checksum and `FORM_VERSION`, its files match
the checksums of its manifest, and it was written by this OpenVINO release or an older one
(OpenVINO reads the IR of earlier releases, not always that of later ones); otherwise the
model is converted as any other, with a log line saying why. For every
tile geometry the model is then reshaped to ``(1, 1, H, W)`` and compiled (about a second).
OpenVINO's own compiled-model cache is not used: its blobs carry no checksum, and 50 flipped
bytes in one gave output off by 7 normalised units without an error; it saved ~0.45 s per
tile geometry and process (0.9 s against 0.45 s on a loaded 2-core CPU).

OpenVINO is imported lazily: importing this module does not need it; see `available`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from debcr.errors import DataError
from debcr.files import write_bytes
from debcr.modelfile import checksum_of, network_of
from debcr.runtime import cpu_threads

__all__ = ["FORM_VERSION", "SHIPPED", "OpenVINORunner", "available", "cache_dir", "write_shipped"]

logger = logging.getLogger(__name__)

#: Version of the inference-only network form (`debcr.nn.fast`) as converted here; raise
#: it whenever that form, its conversion or the cache entry's files change, so cached
#: conversions are rebuilt (2: entries carry a ``.sha256`` file).
FORM_VERSION = 2

#: OpenVINO's ``INFERENCE_PRECISION_HINT`` for each precision. (CPUs without float16
#: arithmetic run "f16" in bfloat16, or float32 where bfloat16 is missing too.)
_PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}

#: Compiled tile geometries kept per runner (the least recently used is dropped).
_MAX_COMPILED = 8

#: Name of the model's run-time info entry that records its cache key (checked on loading).
_KEY_INFO = "debcr_cache_key"

#: Default OpenVINO streams (tiles in flight at once, sharing the threads). On a quiet 2-core
#: CPU two streams of one thread restored the 2048² FMD mosaic (1024² tiles, bfloat16) in
#: 4.37 s against 4.52 s for one stream of two threads, but at 1.64 GB peak memory against
#: 1.16 GB (each stream holds its own activations): one stream keeps restoration under 1.5 GB.
STREAMS = 1

#: The folder of the shipped conversions of the built-in models: ``<name>.xml`` and
#: ``<name>.bin`` for each, and `_MANIFEST` naming their weights checksums, form version,
#: the OpenVINO release that wrote them and the files' sha256.
SHIPPED = Path(__file__).resolve().parent.parent / "weights" / "openvino"
_MANIFEST = "manifest.json"

_convert_lock = threading.Lock()


def available() -> bool:
    """Whether OpenVINO can be imported."""
    try:
        import openvino  # noqa: F401
    except Exception:  # ImportError, or a broken installation
        return False
    return True


def cache_dir() -> Path:
    """The folder of debcr's cached OpenVINO models.

    ``$DEBCR_CACHE_DIR/openvino`` if that variable is set, otherwise ``openvino`` in the user
    cache folder (``platformdirs.user_cache_dir("debcr")``, or ``~/.cache/debcr`` without
    platformdirs).
    """
    root = os.environ.get("DEBCR_CACHE_DIR")
    if not root:
        try:
            import platformdirs
        except ImportError:
            root = os.path.join(os.path.expanduser("~"), ".cache", "debcr")
        else:
            root = platformdirs.user_cache_dir("debcr")
    return Path(root) / "openvino"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def cache_key(model: Any, checksum: str | None = None) -> str:
    """The file name stem of ``model``'s cached conversion (weights, form, OpenVINO version);
    ``checksum`` is the weights' checksum when already known (`debcr.modelfile.checksum_of`)."""
    import openvino as ov

    checksum = checksum or checksum_of(model)
    return f"mrbcr-{checksum[:32]}-form{FORM_VERSION}-ov{_safe(ov.__version__)}"


def _release(version: str) -> tuple[int, ...]:
    """The release numbers of an OpenVINO version string (``"2026.4.1-22982-..."`` → 2026, 4, 1)."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("-")[0]))


def _shipped(core: Any, checksum: str) -> Any | None:
    """The shipped conversion of the weights ``checksum``; None if there is none, or it is
    stale, for a later OpenVINO, or damaged (each but the first said in a log line)."""
    import openvino as ov

    try:
        manifest = json.loads((SHIPPED / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # an installation without shipped conversions
    entry = manifest.get("models", {}).get(checksum)
    if entry is None:
        return None  # not a built-in model
    name = entry["name"]
    if manifest.get("form_version") != FORM_VERSION:
        logger.info(
            "the shipped OpenVINO model of %s is of network form %s, not %d; converting",
            name,
            manifest.get("form_version"),
            FORM_VERSION,
        )
        return None
    if _release(manifest["openvino"]) > _release(ov.__version__):
        logger.info(
            "the shipped OpenVINO model of %s was written by OpenVINO %s, later than the "
            "installed %s; converting",
            name,
            manifest["openvino"],
            ov.__version__,
        )
        return None
    xml, weights = SHIPPED / f"{name}.xml", SHIPPED / f"{name}.bin"
    try:
        # As for cache entries: the bytes checked are the bytes loaded.
        xml_bytes, weights_bytes = xml.read_bytes(), weights.read_bytes()
        for path, data in ((xml, xml_bytes), (weights, weights_bytes)):
            if hashlib.sha256(data).hexdigest() != entry[path.suffix[1:]]:
                raise ValueError(f"{path.name} does not match its checksum in {_MANIFEST}")
        ov_model = core.read_model(xml_bytes, weights_bytes)
    except Exception as exc:  # a damaged installation: convert instead
        logger.warning(
            "the shipped OpenVINO model %s cannot be used (%s); converting the network",
            xml,
            str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__,
        )
        return None
    logger.debug("loaded the shipped OpenVINO model of %s: %s", name, xml)
    return ov_model


def write_shipped(names: list[str] | None = None, folder: Path | None = None) -> Path:
    """Convert the built-in models ``names`` (default all) into ``folder`` (default
    `SHIPPED`) with their manifest; returns the manifest's path.

    For maintainers: run it after changing `FORM_VERSION` or the inference-only network
    (``python -c "from debcr.backends.openvino_runner import write_shipped; write_shipped()"``),
    so the built-in models keep starting without a conversion.
    """
    import openvino as ov

    from debcr.modelfile import load_model, tensor_checksum
    from debcr.weights import PRETRAINED

    folder = SHIPPED if folder is None else Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    models = {}
    for name in names or list(PRETRAINED):
        model = load_model(PRETRAINED[name].path)
        checksum = tensor_checksum(model.state_dict())
        ov_model = _convert(model)
        with tempfile.TemporaryDirectory() as tmp:
            ov.save_model(ov_model, f"{tmp}/{name}.xml", compress_to_fp16=False)
            for suffix in (".xml", ".bin"):
                data = Path(f"{tmp}/{name}{suffix}").read_bytes()
                write_bytes(folder / f"{name}{suffix}", data, overwrite=True)
                models.setdefault(checksum, {"name": name})[suffix[1:]] = hashlib.sha256(
                    data
                ).hexdigest()
    manifest = {
        "form_version": FORM_VERSION,
        "openvino": ov.__version__.split("-")[0],
        "models": models,
    }
    path = folder / _MANIFEST
    write_bytes(
        path, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode(), overwrite=True
    )
    return path


def _convert(model: Any) -> Any:
    """``model``'s inference-only network as an OpenVINO model of input ``(?, 1, ?, ?)``
    (a `debcr.modelfile.StoredModel` is loaded first)."""
    import openvino as ov
    import torch

    from debcr.nn.fast import inference_network

    net = inference_network(network_of(model))
    with torch.no_grad(), warnings.catch_warnings():
        # OpenVINO traces the network with torch.jit, which PyTorch deprecates: not ours to fix.
        warnings.filterwarnings("ignore", message=r".*torch\.jit", category=DeprecationWarning)
        return ov.convert_model(
            net,
            example_input=torch.zeros(1, 1, 64, 64),
            input=[ov.PartialShape([-1, 1, -1, -1])],
        )


def _paths(folder: Path, key: str) -> tuple[Path, Path, Path]:
    """The ``.xml``, ``.bin`` and ``.sha256`` files of the cache entry ``key`` in ``folder``."""
    return folder / f"{key}.xml", folder / f"{key}.bin", folder / f"{key}.sha256"


def _checksums(key: str, xml: bytes, weights: bytes) -> str:
    """The ``.sha256`` file's text for an entry's ``.xml`` and ``.bin`` bytes (sha256sum format)."""
    return "".join(
        f"{hashlib.sha256(data).hexdigest()}  {key}{suffix}\n"
        for data, suffix in ((xml, ".xml"), (weights, ".bin"))
    )


def _read(core: Any, folder: Path, key: str) -> Any | None:
    """The cached conversion ``key`` in ``folder``; None if absent, unreadable, damaged (its
    files do not match their checksums) or not ``key``'s."""
    xml, weights, sums = _paths(folder, key)
    if not xml.is_file():
        return None
    try:
        # The bytes checked are the bytes loaded: a file replaced in between cannot slip in.
        # (Hashing the ~2 MB of an m-rBCR entry takes ~2 ms, against ~50 ms to read the model.)
        xml_bytes, weights_bytes = xml.read_bytes(), weights.read_bytes()
        if not sums.is_file():
            raise ValueError(f"its checksum file {sums.name} is missing")
        if sums.read_text(encoding="utf-8") != _checksums(key, xml_bytes, weights_bytes):
            raise ValueError(f"its files do not match the checksums in {sums.name}")
        ov_model = core.read_model(xml_bytes, weights_bytes)
        found = (
            ov_model.get_rt_info([_KEY_INFO]).astype(str)
            if ov_model.has_rt_info([_KEY_INFO])
            else None
        )
        if found != key:
            raise ValueError(f"it records the key {found!r}")
        inputs = ov_model.inputs
        if len(inputs) != 1 or len(ov_model.outputs) != 1:
            raise ValueError(f"it has {len(inputs)} inputs and {len(ov_model.outputs)} outputs")
    except Exception as exc:  # a truncated, corrupt or foreign file: convert again
        logger.warning(
            "the cached OpenVINO model %s cannot be used (%s); building it again",
            xml,
            str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__,
        )
        return None
    logger.debug("loaded the OpenVINO model from the cache: %s", xml)
    return ov_model


def _write(ov_model: Any, folder: Path, key: str) -> None:
    """Save ``ov_model`` as ``key`` in ``folder`` atomically: into a temporary folder beside,
    then renamed into place, the checksums last (so an entry is complete once they exist)."""
    import openvino as ov

    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:20]}-", dir=folder))
    try:
        xml, weights, sums = _paths(tmp, key)
        ov.save_model(ov_model, str(xml), compress_to_fp16=False)
        sums.write_text(_checksums(key, xml.read_bytes(), weights.read_bytes()), encoding="utf-8")
        final_xml, final_weights, final_sums = _paths(folder, key)
        os.replace(weights, final_weights)
        os.replace(xml, final_xml)
        os.replace(sums, final_sums)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def load_or_convert(model: Any, core: Any) -> Any:
    """``model``'s OpenVINO conversion, from the cache or converted (and then cached)."""
    checksum = checksum_of(model)
    folder, key = cache_dir(), cache_key(model, checksum)
    sums = _paths(folder, key)[2]  # written last: it changes when a whole entry was written
    seen = _stamp(sums)
    ov_model = _read(core, folder, key)
    if ov_model is not None:
        return ov_model
    with _convert_lock:  # threads of one process convert once; processes may race harmlessly
        # Another thread may have converted meanwhile: read again only what changed since.
        changed = _stamp(sums) not in (seen, None)
        ov_model = _read(core, folder, key) if changed else None
        if ov_model is not None:
            return ov_model
        ov_model = _shipped(core, checksum)
        if ov_model is None:
            logger.info("converting the network for OpenVINO (once per model, ~20 s)")
            ov_model = _convert(model)
        ov_model.set_rt_info(key, [_KEY_INFO])
        try:
            _write(ov_model, folder, key)
        except Exception as exc:  # read-only or full disk: run without caching
            logger.warning("cannot cache the OpenVINO model in %s: %s", folder, exc)
    return ov_model


class OpenVINORunner:
    """Run an m-rBCR model with OpenVINO on the CPU at ``precision``.

    Parameters
    ----------
    model
        An m-rBCR model (`debcr.nn.MRBCR`), or a model file not yet loaded
        (`debcr.modelfile.StoredModel`): its conversion is read from the cache or the shipped
        ones without loading the weights, else its inference-only form is converted.
    precision
        ``"float32"``, ``"bfloat16"`` or ``"float16"`` (OpenVINO's inference precision hint;
        the CPU may substitute a precision it supports).
    threads
        CPU threads for inference; default `debcr.runtime.cpu_threads` (PyTorch's setting
        where torch is imported, else ``OMP_NUM_THREADS``, else OpenVINO's default: the
        physical cores).
    streams
        Tiles run at once (at most one per thread), each with its own activations in memory;
        see `STREAMS`.
    """

    backend = "openvino"

    def __init__(
        self,
        model: Any,
        precision: str,
        threads: int | None = None,
        streams: int = STREAMS,
    ) -> None:
        import openvino as ov

        if precision not in _PRECISION_HINTS:
            raise DataError(
                f"precision must be one of {', '.join(map(repr, _PRECISION_HINTS))}, "
                f"got {precision!r}"
            )
        self.precision = precision
        threads = threads if threads is not None else cpu_threads()
        #: Inference threads; None: OpenVINO's default.
        self.threads = max(1, int(threads)) if threads is not None else None
        self._core = ov.Core()
        self._model = load_or_convert(model, self._core)
        self._compiled: OrderedDict[tuple[int, int, int], Any] = OrderedDict()
        self._lock = threading.Lock()
        #: Tiles in flight at once (OpenVINO streams, sharing ``threads``).
        self.streams = max(1, min(int(streams), self.threads or os.cpu_count() or 1))

    def _config(self, streams: int) -> dict[str, Any]:
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": _PRECISION_HINTS[self.precision],
            "NUM_STREAMS": streams,
        }
        if self.threads is not None:
            config["INFERENCE_NUM_THREADS"] = self.threads
        if streams == 1:
            config["PERFORMANCE_HINT"] = "LATENCY"
        return config

    def _compiled_for(self, height: int, width: int, streams: int) -> Any:
        """The model compiled for ``(1, 1, height, width)`` tiles, ``streams`` at a time.

        One tile alone gets all threads in one stream; several share them out in streams.
        """
        key = (height, width, streams)
        with self._lock:
            compiled = self._compiled.get(key)
            if compiled is not None:
                self._compiled.move_to_end(key)
                return compiled
            ov_model = self._model.clone()
            ov_model.reshape({ov_model.inputs[0]: [1, 1, height, width]})
            compiled = self._core.compile_model(ov_model, "CPU", self._config(streams))
            logger.debug(
                "compiled the OpenVINO model for %d×%d tiles at %s",
                height,
                width,
                compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            )
            self._compiled[key] = compiled
            while len(self._compiled) > _MAX_COMPILED:
                self._compiled.popitem(last=False)
            return compiled

    def run(self, tiles: np.ndarray) -> np.ndarray:
        """Restore ``tiles``, float32 ``(N, H, W)`` with H and W divisible by 4."""
        tiles = np.asarray(tiles)
        if tiles.ndim != 3:
            raise DataError(
                f"the OpenVINO backend expects tiles shaped (N, H, W); got shape {tiles.shape}"
            )
        n, height, width = tiles.shape
        if height % 4 or width % 4 or height == 0 or width == 0:
            raise DataError(
                f"m-rBCR needs tile height and width divisible by 4 (and nonzero); got tiles "
                f"of shape {tiles.shape}. Pad the image or choose a tile size divisible by 4."
            )
        out = np.empty((n, height, width), dtype=np.float32)
        if n == 0:
            return out
        streams = min(self.streams, n)
        compiled = self._compiled_for(height, width, streams)
        if streams == 1:
            request = compiled.create_infer_request()
            for i in range(n):
                out[i] = request.infer({0: self._tile(tiles, i)})[0][0, 0]
            return out
        import openvino as ov

        def done(request: Any, i: int) -> None:
            out[i] = request.get_output_tensor(0).data[0, 0]

        queue = ov.AsyncInferQueue(compiled, streams)
        queue.set_callback(done)
        for i in range(n):
            queue.start_async({0: self._tile(tiles, i)}, userdata=i)
        queue.wait_all()
        return out

    @staticmethod
    def _tile(tiles: np.ndarray, i: int) -> np.ndarray:
        return np.ascontiguousarray(tiles[i], dtype=np.float32)[None, None]
