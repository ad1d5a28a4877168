"""The package's architecture file: m-rBCR as one torch-only source, and the hashes it has had.

A package's ``pytorch_state_dict`` weights name their network by a source file, not by an
import of debcr. `architecture_source` writes that file; `KNOWN_ARCHITECTURE_SHA256`
lets `load_bmz` recognise m-rBCR in the packages debcr has written.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from debcr.defaults import SIZE_MULTIPLE
from debcr.errors import ExportError
from debcr.nn import mrbcr as mrbcr_module

__all__ = [
    "ARCHITECTURE_CALLABLE",
    "ARCHITECTURE_FILE",
    "KNOWN_ARCHITECTURE_SHA256",
    "architecture_source",
    "file_sha256",
    "known_architectures",
]

#: Name of the network class in the package's architecture file.
ARCHITECTURE_CALLABLE = "MRBCRRestorer"
#: Name of the architecture file in the package.
ARCHITECTURE_FILE = "mrbcr.py"
#: sha256 of every architecture file debcr has exported. A package whose architecture hashes to
#: one of these is m-rBCR with the parameter names of `MRBCR`. When
#: ``debcr/nn/mrbcr.py`` changes, add the new hash here (a test says so) and keep the old ones.
KNOWN_ARCHITECTURE_SHA256: frozenset[str] = frozenset(
    {
        # debcr 0.1.0
        "f8584fe2adac62c6b13a76289e7aaa26f63cc2bd6b020b4b49f9edc604405d23",
        # docstrings with Markdown code spans instead of Sphinx roles
        "ce4b356dcbaea0aead6558cd388410f99a364f0e31342ead721bfc9789789359",
        # the architecture's name and version moved to debcr.defaults (read without torch)
        "5d764d1e136de07a3466be54b19cbc938a6fe68ad30c620eeddb56f8caea5c73",
    }
)

_ARCHITECTURE_IMPORTS = frozenset({"__future__", "itertools", "torch"})


def architecture_source() -> str:
    """The network as one source file that needs only torch (the package's architecture).

    It is ``debcr/nn/mrbcr.py`` with its one import from debcr replaced by the constant it
    imports, so that loading a package never imports a module named ``debcr`` (a different
    package of that name exists on the package index).
    """
    text = Path(mrbcr_module.__file__).read_text(encoding="utf-8")
    line = "from debcr.defaults import SIZE_MULTIPLE\n"
    source = text.replace(line, f"SIZE_MULTIPLE = {SIZE_MULTIPLE}\n")
    imported = {
        alias.name if isinstance(node, ast.Import) else node.module or ""
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    foreign = sorted(m for m in imported if m.split(".")[0] not in _ARCHITECTURE_IMPORTS)
    if foreign:
        raise ExportError(
            f"{mrbcr_module.__file__} imports {foreign}; the exported architecture file may "
            f"import only {sorted(_ARCHITECTURE_IMPORTS)} (update architecture_source)"
        )
    return source


def file_sha256(data: bytes) -> str:
    """The sha256 of a file's bytes, as a package's ``sha256`` fields hold it (hex digits)."""
    return hashlib.sha256(data).hexdigest()


def known_architectures() -> frozenset[str]:
    """The registered hashes and that of this version's architecture file."""
    return KNOWN_ARCHITECTURE_SHA256 | {file_sha256(architecture_source().encode("utf-8"))}
