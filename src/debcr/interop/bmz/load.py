"""Reading a package back: the m-rBCR model of a ``.zip``, a folder or its ``rdf.yaml``.

Needs no ``bioimageio``: the description is read as YAML, every file is checked against its
sha256, and only packages whose architecture is m-rBCR as debcr exports it are accepted.

Nothing in a package is trusted before it is checked: entry sizes are read from the zip
directory and bounded before an entry is decompressed (a small zip can hold gigabytes), files
are read in chunks and hashed as they stream, sources must lie inside the package, every part
of the description must have the shape the format gives it, and the weights are unpickled
with ``weights_only`` (a pickle's code never runs). A bad package ends in one
`ModelFileError` sentence naming the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any

import torch
import yaml

from debcr.defaults import BMZ_DESCRIPTIONS, PMAX, PMIN
from debcr.errors import ModelFileError
from debcr.interop.bmz.architecture import known_architectures
from debcr.modelfile import check_metadata
from debcr.nn import MRBCR

__all__ = ["MAX_TEXT_BYTES", "MAX_TOTAL_BYTES", "MAX_WEIGHTS_BYTES", "load_bmz"]

#: Largest description, attachment or architecture file read (an m-rBCR rdf.yaml is ~4 kB).
MAX_TEXT_BYTES = 1 << 20
#: Largest weights file read (m-rBCR's 236,630 parameters take ~1 MB in every format).
MAX_WEIGHTS_BYTES = 64 << 20
#: Largest total of all files in a package zip (test images included).
MAX_TOTAL_BYTES = 512 << 20
#: Largest compression ratio of a file over 1 MiB that is read: weights barely compress, a
#: ratio far above this is a decompression bomb.
MAX_RATIO = 100

_CHUNK = 1 << 20
#: What a damaged zip entry raises while it is decompressed.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,  # an unsupported compression method
    RuntimeError,  # an encrypted entry
)


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.0f} kB"


def _stream(fh: IO[bytes], limit: int, too_big: str) -> tuple[bytes, str]:
    """The bytes of ``fh`` and their sha256, read and hashed in chunks; ModelFileError
    ``too_big`` past ``limit`` bytes (a folder's file may grow after its size was checked)."""
    data, digest = bytearray(), hashlib.sha256()
    while chunk := fh.read(_CHUNK):
        data += chunk
        if len(data) > limit:
            raise ModelFileError(too_big)
        digest.update(chunk)
    return bytes(data), digest.hexdigest()


class _Package:
    """Read files of a package: a zip, or a folder holding the rdf."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_file() and path.suffix.lower() == ".zip":
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError, ValueError) as exc:
                raise ModelFileError(
                    f"{path} is not a readable zip file ({exc}); copy it again"
                ) from exc
            self.folder = None
            self._check_total()
        else:
            self.folder = path if path.is_dir() else path.parent

    def _check_total(self) -> None:
        infos = self._zip.infolist()
        total = sum(info.file_size for info in infos)
        if total > MAX_TOTAL_BYTES:
            largest = max(infos, key=lambda info: info.file_size)
            raise ModelFileError(
                f"{self.path} unpacks to {_size(total)} ({largest.filename} alone "
                f"{_size(largest.file_size)}), more than an m-rBCR package can hold "
                f"({_size(MAX_TOTAL_BYTES)}); it is not a debcr package or it is damaged"
            )

    def rdf(self) -> tuple[str, dict[str, Any]]:
        names = [self.path.name] if self.path.name in BMZ_DESCRIPTIONS else list(BMZ_DESCRIPTIONS)
        for name in names:
            if self.exists(name):
                try:
                    content = yaml.safe_load(self.read(name, MAX_TEXT_BYTES)[0])
                except yaml.YAMLError as exc:  # also a !!python tag: safe_load never runs it
                    raise ModelFileError(
                        f"{self.path}: {name} is not valid YAML ({_yaml_problem(exc)})"
                    ) from exc
                if not isinstance(content, dict):
                    raise ModelFileError(
                        f"{self.path}: {name} holds {_kind(content)}, not a model description "
                        "(a mapping of keys such as type, inputs and weights)"
                    )
                return name, content
        raise ModelFileError(
            f"{self.path} is not a BioImage Model Zoo package: it has no rdf.yaml or "
            "bioimageio.yaml"
        )

    def exists(self, name: str) -> bool:
        if self._zip is not None:
            return name in self._zip.namelist()
        return (self.folder / name).is_file()

    def read(self, name: str, limit: int) -> tuple[bytes, str]:
        """The bytes of file ``name`` (at most ``limit``) and their sha256, streamed."""
        if not self.exists(name):
            raise ModelFileError(f"{self.path} lists the file {name!r}, but the package lacks it")
        too_big = (
            f"{self.path}: {name} holds {{}}, more than the {_size(limit)} such a file of an "
            "m-rBCR package can hold; it is not a debcr package or it is damaged"
        )
        grown = too_big.format(f"over {_size(limit)}")
        try:
            if self._zip is None:
                size = (self.folder / name).stat().st_size
                if size > limit:
                    raise ModelFileError(too_big.format(_size(size)))
                with (self.folder / name).open("rb") as fh:
                    return _stream(fh, limit, grown)
            info = self._zip.getinfo(name)
            self._check_entry(info, limit, too_big)
            with self._zip.open(info) as fh:
                return _stream(fh, limit, grown)
        except ModelFileError:  # a ValueError too, but already the sentence to show
            raise
        except _ZIP_ERRORS as exc:
            if self._zip is not None and self._zip.getinfo(name).flag_bits & 0x1:
                raise ModelFileError(
                    f"{self.path}: {name} is encrypted (password-protected); debcr reads "
                    "unencrypted packages, export or download it again without a password"
                ) from exc
            raise ModelFileError(
                f"{self.path}: {name} cannot be read, the package is damaged "
                f"({type(exc).__name__}: {exc}); download or copy it again"
            ) from exc

    def _check_entry(self, info: zipfile.ZipInfo, limit: int, too_big: str) -> None:
        """Refuse entry ``info`` from the zip directory alone, before decompressing it."""
        if info.file_size > limit:
            raise ModelFileError(too_big.format(_size(info.file_size)))
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _CHUNK and ratio > MAX_RATIO:
            raise ModelFileError(
                f"{self.path}: {info.filename} unpacks {ratio:.0f} times its packed size "
                f"(to {_size(info.file_size)}), which no m-rBCR package file does; it is not "
                "a debcr package or it is damaged"
            )

    def read_checked(self, entry: Mapping[str, Any], what: str, limit: int) -> bytes:
        source = entry.get("source")
        if not isinstance(source, str) or not source:
            raise ModelFileError(
                f"{self.path}: the {what} has no source file name (found {_kind(source)})"
            )
        if "://" in source:
            raise ModelFileError(
                f"{self.path}: the {what} is a remote file ({source}); download the package "
                "with its files (the .zip from bioimage.io) and load that"
            )
        parts = PurePosixPath(source.replace("\\", "/")).parts
        if source.startswith(("/", "\\")) or ".." in parts or ":" in "".join(parts[:1]):
            raise ModelFileError(
                f"{self.path}: the {what} {source!r} lies outside the package; a package names "
                "its files by paths inside it"
            )
        data, sha256 = self.read(source, limit)
        expected = entry.get("sha256")
        if expected and sha256 != expected:
            raise ModelFileError(
                f"{self.path}: the {what} {source} does not match its sha256 (the package is "
                "damaged or was edited); download it again"
            )
        return data

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


@contextmanager
def _open_package(path: Path) -> Iterator[_Package]:
    package = _Package(path)
    try:
        yield package
    finally:
        package.close()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``exc`` in one line: the problem and where (PyYAML's message spans several lines)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem}, line {mark.line + 1}" if mark is not None else problem


def _kind(value: Any) -> str:
    """A few words on what ``value`` is, for a message: ``a list ['x']``."""
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{'an' if type(value).__name__[0] in 'aeiou' else 'a'} {type(value).__name__} {shown}"


def _expect(path: Path, value: Any, kind: type, name: str) -> Any:
    """``value``, the description's field ``name``, if it is a ``kind`` (None: an empty one)."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        expected = {dict: "a mapping", list: "a list"}.get(kind, kind.__name__)
        raise ModelFileError(
            f"{path}: {name} in the package's description must be {expected}, but it is "
            f"{_kind(value)}; the package is malformed"
        )
    return value


def _check_architecture(package: _Package, weights: Mapping[str, Any]) -> None:
    arch = _expect(
        package.path,
        weights.get("architecture"),
        dict,
        "weights.pytorch_state_dict.architecture",
    )
    callable_name = arch.get("callable", "?")
    if "source" not in arch:
        library = arch.get("import_from", "?")
        raise ModelFileError(
            f"{package.path} holds architecture {callable_name} from the library {library}, "
            "not m-rBCR; debcr runs only m-rBCR models"
        )
    source = package.read_checked(arch, "architecture file", MAX_TEXT_BYTES)
    if hashlib.sha256(source).hexdigest() not in known_architectures():
        raise ModelFileError(
            f"{package.path} holds architecture {callable_name} ({arch['source']}), which is not "
            "m-rBCR as debcr exports it; debcr runs only m-rBCR models"
        )


#: Processing steps debcr does as a package asks: ``ensure_dtype`` (debcr computes in float32)
#: and, on the input, ``scale_range`` (the percentile normalisation of `debcr.model.predict`).
_HONOURED = {"inputs": ("ensure_dtype", "scale_range"), "outputs": ("ensure_dtype",)}


def _steps(path: Path, rdf: Mapping[str, Any], tensors: str, field: str) -> list[dict[str, Any]]:
    """The ``field`` steps of the first of ``tensors``; refuse a step debcr cannot do."""
    listed = _expect(path, rdf.get(tensors), list, tensors)
    first = _expect(path, listed[0] if listed else None, dict, f"{tensors}[0]")
    steps = [
        step
        for step in _expect(path, first.get(field), list, f"{tensors}[0].{field}")
        if isinstance(step, dict)
    ]
    for step in steps:
        if step.get("id") not in _HONOURED[tensors]:
            raise ModelFileError(
                f"{path}: its {field} step {step.get('id')!r} is not one debcr applies (only "
                f"{' and '.join(_HONOURED[tensors])}), so debcr would not restore as the "
                "package intends; run this package with bioimageio.core, or export the model "
                "from debcr, which normalises by percentiles (scale_range)"
            )
    return steps


def _normalization(path: Path, rdf: Mapping[str, Any]) -> dict[str, Any]:
    _steps(path, rdf, "outputs", "postprocessing")
    for step in _steps(path, rdf, "inputs", "preprocessing"):
        if step.get("id") == "scale_range":
            kwargs = _expect(path, step.get("kwargs"), dict, "the scale_range kwargs")
            try:
                pmin = float(kwargs.get("min_percentile", 0.0))
                pmax = float(kwargs.get("max_percentile", 100.0))
            except (TypeError, ValueError) as exc:
                raise ModelFileError(
                    f"{path}: the scale_range percentiles in the package's description are "
                    f"not numbers ({exc}); the package is malformed"
                ) from exc
            return {"method": "percentile", "pmin": pmin, "pmax": pmax}
    return {"method": "percentile", "pmin": PMIN, "pmax": PMAX}


def _attached(package: _Package, rdf: Mapping[str, Any]) -> dict[str, Any]:
    """The debcr model description attached to the package (``{}`` if none)."""
    for entry in _expect(package.path, rdf.get("attachments"), list, "attachments"):
        source = entry.get("source", "") if isinstance(entry, dict) else ""
        if isinstance(source, str) and source.endswith("debcr_model.json"):
            data = package.read_checked(entry, "model description", MAX_TEXT_BYTES)
            try:
                attached = json.loads(data)
            except ValueError as exc:  # not JSON, or not UTF-8
                raise ModelFileError(
                    f"{package.path}: {source} is not valid JSON ({exc}); the package is damaged"
                ) from exc
            if not isinstance(attached, dict):
                raise ModelFileError(
                    f"{package.path}: {source} holds {_kind(attached)}, not a model description "
                    "(a JSON object); the package is malformed"
                )
            return check_metadata(f"{package.path}: {source}", attached)
    return {}


def _halo(path: Path, rdf: Mapping[str, Any]) -> dict[str, int]:
    config = _expect(path, rdf.get("config"), dict, "config")
    config = _expect(path, config.get("debcr"), dict, "config.debcr")
    halo = config.get("halo")
    if halo is None:
        return {}
    if isinstance(halo, bool) or not isinstance(halo, int) or halo < 0:
        raise ModelFileError(
            f"{path}: config.debcr.halo in the package's description must be a whole number "
            f"of pixels, but it is {_kind(halo)}; the package is malformed"
        )
    return {"halo": halo} if halo else {}


def _state_dict(path: Path, data: bytes, source: str) -> MRBCR:
    """The m-rBCR model of the weights file ``source``'s bytes (never running a pickle)."""
    try:
        # weights_only: the unpickler builds tensors and containers only, never runs code. Its
        # warnings (pickle protocols) are about the bad file refused here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # random bytes, a foreign pickle: any parser error means a bad file
        raise ModelFileError(
            f"{path}: the weights file {source} is not a PyTorch state dict of tensors "
            f"({type(exc).__name__}); it is damaged, or holds code or objects that debcr does "
            "not run; download the package again"
        ) from exc
    if not isinstance(state, dict):
        raise ModelFileError(
            f"{path}: the weights file {source} holds {_kind(state)}, not a PyTorch state dict"
        )
    model = MRBCR()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(map(str, set(state) - set(expected)))
    wrong = [
        key
        for key in expected
        if key in state
        and (not isinstance(state[key], torch.Tensor) or state[key].shape != expected[key].shape)
    ]
    if missing or unexpected or wrong:
        raise ModelFileError(
            f"{path}: the weights file {source} does not fit m-rBCR: {len(missing)} missing, "
            f"{len(unexpected)} unexpected and {len(wrong)} mis-shaped parameters "
            f"(e.g. {(missing + unexpected + wrong)[:3]})"
        )
    model.load_state_dict(state, strict=True)
    return model


def load_bmz(path: str | os.PathLike) -> MRBCR:
    """Load the m-rBCR model of a BioImage Model Zoo package (``bioimageio`` not needed).

    Parameters
    ----------
    path
        A package ``.zip``, a folder holding its ``rdf.yaml``, or that file.

    Returns
    -------
    MRBCR
        In eval mode on the CPU; ``metadata`` holds the package's normalisation settings
        (its ``scale_range`` percentiles, which `debcr.model.predict` then uses; 0.1 and 99.9
        without one), halo and provenance.

    Raises
    ------
    ModelFileError
        Not a package, a file missing or not matching its sha256, no ``pytorch_state_dict``
        weights, an architecture other than m-rBCR (named in the message), or a processing
        step debcr does not apply (such as ``zero_mean_unit_variance``: debcr normalises by
        percentiles, as a package's ``scale_range`` asks).
    """
    path = Path(path)
    with _open_package(path) as package:
        _, rdf = package.rdf()
        if rdf.get("type") != "model":
            raise ModelFileError(f"{path} describes a {rdf.get('type')!r}, not a model")
        formats = _expect(path, rdf.get("weights"), dict, "weights")
        weights = _expect(
            path, formats.get("pytorch_state_dict"), dict, "weights.pytorch_state_dict"
        )
        if not weights:
            raise ModelFileError(
                f"{path} has no pytorch_state_dict weights (it has: "
                f"{', '.join(map(str, formats)) or 'none'}); debcr loads m-rBCR packages with "
                "PyTorch state-dict weights"
            )
        _check_architecture(package, weights)
        data = package.read_checked(weights, "weights file", MAX_WEIGHTS_BYTES)
        attached = _attached(package, rdf)
    model = _state_dict(path, data, str(weights["source"]))
    name = rdf.get("name", attached.get("name", ""))
    model.metadata = {
        **attached,
        "name": name if isinstance(name, str) else str(name),
        "normalization": _normalization(path, rdf),
        "source": f"BioImage Model Zoo package {path}",
        **_halo(path, rdf),
    }
    return model.eval()
