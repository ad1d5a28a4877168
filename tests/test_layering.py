"""The house rules of the package, read from the source with ``ast`` (nothing is imported).

Layers, bottom to top: base helpers (no third-party imports of ours to speak of) → the
numpy-only layer (data, config, metrics, evaluate) → the network (torch from here up) →
model files, runtime, interop and the inference backends → the model resolver and the
inference engine → training → the ``debcr.model`` facade → the edges (CLI, demo, napari).
A module may import only from its own layer or below (also inside functions;
``if TYPE_CHECKING:`` blocks are exempt), the imports form no loop, torch never appears
below ``nn``, Lightning only in training (and the napari jobs that drive it), and
napari/Qt only in ``debcr.napari``. Rooms stay small: no module over :data:`MAX_LINES` lines,
and a private name (``_x``) is imported only by modules of its own package.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT

SRC = ROOT / "src"

#: Layer of each module, by longest matching name prefix.
LAYERS: dict[str, int] = {
    "debcr._version": 0,
    "debcr.errors": 0,
    "debcr.defaults": 0,
    "debcr.files": 0,
    "debcr.weights": 0,
    "debcr.samples": 0,
    "debcr.data": 1,
    "debcr.config": 1,
    "debcr.modes": 1,
    "debcr.metrics": 1,
    "debcr.evaluate": 1,
    "debcr.nn": 2,
    "debcr.runtime": 3,
    "debcr.modelfile": 3,
    "debcr.interop": 3,
    "debcr.backends": 3,
    "debcr.sources": 4,
    "debcr.inference": 4,
    "debcr.training": 5,
    "debcr.model": 6,
    "debcr.cli": 7,
    "debcr.demo": 7,
    "debcr.napari": 7,
    "debcr": 7,
}
TORCH_FREE_BELOW = LAYERS["debcr.nn"]
#: The most lines a module may hold before it must be split by idea.
MAX_LINES = 700
GUI_PACKAGES = ("napari", "qtpy", "magicgui", "superqt", "PyQt5", "PyQt6", "PySide2", "PySide6")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # a debcr module, or the top-level name of a third-party package
    line: int
    lazy: bool  # inside a function


def layer(module: str) -> int:
    """The layer of ``module`` (longest prefix of a dotted name in :data:`LAYERS`)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    raise AssertionError(f"{module} has no layer: add it to LAYERS in {__file__}")


def modules(src: Path) -> dict[str, Path]:
    found = {}
    for path in sorted((src / "debcr").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _walk(node: ast.AST, lazy: bool = False):
    """Import nodes with whether they sit inside a function; skips TYPE_CHECKING blocks."""
    for child in ast.iter_child_nodes(node):
        if _is_type_checking(child):
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, lazy
        inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield from _walk(child, inner)


@functools.cache
def imports(src: Path) -> list[Import]:
    known = modules(src)
    found = []
    for module, path in known.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node, lazy in _walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif node.level:  # relative import: resolve against the package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names = [f"{base}.{node.module}" if node.module else base]
            else:
                names = [node.module or ""]
            for name in names:
                if name.split(".")[0] != "debcr":
                    found.append(Import(module, name.split(".")[0], node.lineno, lazy))
                    continue
                # `from debcr.nn import receptive` imports a submodule, `import MRBCR` the package
                subs = [f"{name}.{a.name}" for a in getattr(node, "names", [])]
                targets = (
                    [s for s in subs if s in known] if isinstance(node, ast.ImportFrom) else []
                )
                for target in targets or [name]:
                    if target != module:
                        found.append(Import(module, target, node.lineno, lazy))
    return found


def _where(imp: Import) -> str:
    return f"{imp.module}:{imp.line} imports {imp.target}" + (
        " (in a function)" if imp.lazy else ""
    )


def upward_imports(src: Path) -> list[str]:
    return [
        _where(imp)
        for imp in imports(src)
        if imp.target.startswith("debcr") and layer(imp.target) > layer(imp.module)
    ]


def import_cycles(src: Path) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {m: set() for m in modules(src)}
    for imp in imports(src):
        if imp.target in graph:
            graph[imp.module].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def forbidden_packages(src: Path) -> list[str]:
    problems = []
    for imp in imports(src):
        if imp.target.startswith("debcr"):
            continue
        mod = imp.module
        if imp.target == "torch" and layer(mod) < TORCH_FREE_BELOW:
            problems.append(_where(imp) + ": torch below the network layer")
        if imp.target == "lightning" and not mod.startswith(("debcr.training", "debcr.napari")):
            problems.append(_where(imp) + ": Lightning outside training")
        if imp.target in GUI_PACKAGES and not mod.startswith("debcr.napari"):
            problems.append(_where(imp) + ": GUI package outside debcr.napari")
        if imp.target in ("torch", "lightning") and mod.startswith("debcr.napari") and not imp.lazy:
            problems.append(_where(imp) + ": napari imports the plugin at start-up; import lazily")
    return problems


def root_imports(src: Path) -> list[str]:
    """Nothing imports the package root (it exists for users; ``_version`` holds the version)."""
    return [_where(imp) for imp in imports(src) if imp.target == "debcr"]


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def long_modules(src: Path) -> list[str]:
    """Modules over :data:`MAX_LINES` lines, with their length."""
    found = []
    for module, path in modules(src).items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            found.append(f"{module}: {lines} lines")
    return found


def private_imports(src: Path) -> list[str]:
    """``from debcr.x import _name`` where ``debcr.x`` lies outside the importer's package.

    The modules directly under ``debcr`` share no package: each is its own room.
    """
    known = modules(src)
    found = []
    for module, path in known.items():
        package = _package(module, path)
        for node, _lazy in _walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target not in known:
                continue
            owner = _package(target, known[target])
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and (owner != package or owner == "debcr"):
                    found.append(f"{module}:{node.lineno} imports {alias.name} from {target}")
    return found


def test_every_module_has_a_layer() -> None:
    for module in modules(SRC):
        layer(module)


def test_no_module_imports_from_a_higher_layer() -> None:
    assert upward_imports(SRC) == []


def test_imports_form_no_loop() -> None:
    assert import_cycles(SRC) == []


def test_torch_lightning_and_gui_stay_in_their_layers() -> None:
    assert forbidden_packages(SRC) == []


def test_nothing_imports_the_package_root() -> None:
    assert root_imports(SRC) == []


def test_no_module_is_too_long() -> None:
    assert long_modules(SRC) == []


def test_private_names_stay_in_their_package() -> None:
    assert private_imports(SRC) == []


@pytest.fixture
def broken_tree(tmp_path: Path) -> Path:
    """A copy of the package with one violation of each rule added."""
    src = tmp_path / "src"
    for path in modules(SRC).values():
        target = src / path.relative_to(SRC)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    normalize = src / "debcr" / "data" / "normalize.py"
    normalize.write_text(
        normalize.read_text(encoding="utf-8")
        + "\n\ndef _late():\n    import torch\n\n    from debcr.model import init\n",
        encoding="utf-8",
    )
    nn_init = src / "debcr" / "nn" / "mrbcr.py"
    nn_init.write_text(nn_init.read_text(encoding="utf-8") + "\nimport debcr.inference\n")
    files = src / "debcr" / "files.py"
    files.write_text(files.read_text(encoding="utf-8") + "\nimport napari\nimport debcr\n")
    errors = src / "debcr" / "errors.py"
    errors.write_text(errors.read_text(encoding="utf-8") + "\n# padding\n" * (MAX_LINES + 1))
    metrics = src / "debcr" / "metrics.py"
    metrics.write_text(
        metrics.read_text(encoding="utf-8") + "\nfrom debcr.files import _private_helper\n"
    )
    return src


def test_the_checks_catch_each_kind_of_violation(broken_tree: Path) -> None:
    assert "debcr.data.normalize" in " ".join(upward_imports(broken_tree))
    cycles = import_cycles(broken_tree)
    assert any({"debcr.nn.mrbcr", "debcr.inference"} <= set(c) for c in cycles), cycles
    problems = " ".join(forbidden_packages(broken_tree))
    assert "debcr.data.normalize" in problems and "torch below" in problems
    assert "debcr.files" in problems and "GUI package" in problems
    assert any(p.startswith("debcr.files") for p in root_imports(broken_tree))
    assert any(p.startswith("debcr.errors: ") for p in long_modules(broken_tree))
    assert any(
        p.startswith("debcr.metrics:") and "_private_helper from debcr.files" in p
        for p in private_imports(broken_tree)
    )
