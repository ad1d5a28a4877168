"""The documentation site builds in strict mode, with every tutorial executed during the build.

The site is built the way a user builds it: from a copy of the files the build reads (no
`../shared` beside it, so the tutorials run on what a clone holds), with the `debcr` of that
copy, into a temporary folder.
"""

from __future__ import annotations

import ast
import html
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT

TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("tutorial_*.py"))
#: What `mkdocs build` reads besides the tutorials: the configuration, the pages, the package
#: (rendered by mkdocstrings, imported by the tutorials and hooks) and the included changelog.
BUILD_INPUTS = ("mkdocs.yml", "CHANGELOG.md", "docs", "src")
#: The modules of the build's own tools (mkdocs.yml's theme, plugins and Markdown extensions).
BUILD_TOOLS = ("mkdocs", "material", "mkdocs_gallery", "mkdocstrings_handlers.python", "pymdownx")
RAW_ROLE = re.compile(r":(?:func|class|data|meth|mod|attr|exc|obj):`?")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("clone")
    for name in BUILD_INPUTS:
        source = ROOT / name
        if source.is_dir():
            # docs/generated is the last build's output: without it every tutorial runs again.
            ignore = shutil.ignore_patterns("generated", "__pycache__", "*.egg-info")
            shutil.copytree(source, copy / name, ignore=ignore)
        else:
            shutil.copy2(source, copy / name)
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": str(copy / "src")}  # this copy's debcr, not the checkout's
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    return out


def _text(page: Path) -> str:
    """The visible text of an HTML page (tags removed, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))


def _tutorial_page(site: Path, stem: str) -> Path:
    return site / "generated" / "tutorials" / stem / "index.html"


@pytest.mark.slow
def test_every_tutorial_ran_and_shows_its_output(site: Path) -> None:
    assert len(TUTORIALS) >= 5
    for script in TUTORIALS:
        page = _tutorial_page(site, script.stem)
        html_text = page.read_text(encoding="utf-8")
        assert "<img" in html_text, f"{script.name}: no figure on {page}"
        assert "Out:" in html_text or "mkd-result-output" in html_text, script.name


@pytest.mark.slow
def test_tutorials_work_from_what_a_clone_holds(site: Path) -> None:
    """Tutorial 5 converts a real original checkpoint; tutorial 2's fine-tune is an improvement."""
    converted = _text(_tutorial_page(site, "tutorial_05_from_tensorflow"))
    assert "296 of 296 weight tensors identical" in converted
    assert "largest difference between the two restorations: 0.0" in converted

    tuned = _text(_tutorial_page(site, "tutorial_02_fine_tune"))
    scores = r"PSNR (built-in model|fine-tuned model) +vs ground truth: +([\d.]+)"
    psnrs = dict(re.findall(scores, tuned))
    assert set(psnrs) == {"built-in model", "fine-tuned model"}, psnrs
    # 40 demonstration steps with the default recipe gain 0.24 dB on the held-out quarter
    assert float(psnrs["fine-tuned model"]) > float(psnrs["built-in model"]) + 0.2, psnrs


def test_tutorials_read_only_what_a_clone_holds() -> None:
    """No tutorial looks for the project's data folder (`../shared`), which users do not have."""
    for script in TUTORIALS:
        assert "shared" not in script.read_text(encoding="utf-8"), script.name


@pytest.mark.slow
def test_reference_pages_are_generated(site: Path) -> None:
    from debcr.cli import build_parser

    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in commands:
        assert f"usage: debcr {name}" in cli, name
    api = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("debcr.model.predict", "debcr.model.init", "debcr.data.load", "debcr.metrics"):
        assert name in api, name
    # The sample users start from and the exceptions they catch have their own sections.
    for name in ("debcr.samples", "debcr.samples.nuclei", "debcr.errors", "debcr.errors.DataError"):
        assert f'id="{name}"' in api, name


@pytest.mark.slow
def test_rendered_pages_show_no_sphinx_markup(site: Path) -> None:
    """Docstrings are Markdown: no raw Sphinx roles, and no `>>>` example turned into quotes."""
    roles = {
        str(page.relative_to(site)): RAW_ROLE.findall(_text(page))
        for page in site.rglob("*.html")
        if RAW_ROLE.search(_text(page))
    }
    assert not roles, roles
    api = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    assert "<blockquote" not in api


@pytest.mark.slow
def test_site_holds_no_build_files(site: Path) -> None:
    leaked = sorted(
        str(path.relative_to(site))
        for path in site.rglob("*")
        if path.suffix in (".md5", ".pickle")
        or "hooks" in path.relative_to(site).parts
        or path.name.startswith("ckpt-")
    )
    assert not leaked, leaked


def _requirements_of_docs_extra() -> list[str]:
    """debcr's own requirements plus those of its `docs` extra, extras of debcr expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    requirements, todo, seen = list(project["dependencies"]), ["docs"], set()
    while todo:
        extra = todo.pop()
        seen.add(extra)
        for requirement in extras[extra]:
            self_extras = re.fullmatch(rf"{project['name']}\[(.+)\]", requirement.replace(" ", ""))
            if self_extras:
                todo += [name for name in self_extras.group(1).split(",") if name not in seen]
            else:
                requirements.append(requirement)
    return requirements


#: Run in a fresh interpreter: only distributions that `pip install -e ".[docs]"` installs can
#: be imported; importing any other one (even indirectly) fails as if it were not installed.
_IMPORT_CHECK = """
import importlib, importlib.abc, importlib.metadata as md, json, sys
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

requirements, modules = json.loads(sys.argv[1])
allowed, todo = set(), [(Requirement(r), "") for r in requirements]
while todo:
    req, extra = todo.pop()
    if req.marker is not None and not req.marker.evaluate({"extra": extra}):
        continue
    name = canonicalize_name(req.name)
    wanted = {(name, e) for e in req.extras} | {(name, "")}
    if wanted <= allowed:
        continue
    allowed |= wanted
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        continue
    for r in dist.requires or ():
        todo += [(Requirement(r), e) for e in [""] + sorted(req.extras)]
installed = {name for name, _ in allowed} | {"debcr-torch"}
owners = md.packages_distributions()

class OnlyDocsExtra(importlib.abc.MetaPathFinder):
    # The usual finders, blind to distributions outside the docs extra (as if not installed).

    def __init__(self, finders):
        self.finders = finders

    def find_spec(self, fullname, path=None, target=None):
        # Finders that imported modules add (importlib_metadata's, …) go behind this one too.
        self.finders += [finder for finder in sys.meta_path if finder is not self]
        sys.meta_path[:] = [self]
        dists = {canonicalize_name(d) for d in owners.get(fullname.partition(".")[0], [])}
        if dists and not dists & installed:
            return None
        for finder in self.finders:
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None

    def find_distributions(self, context=md.DistributionFinder.Context()):
        # Libraries that ask the metadata whether a package is installed get the same answer.
        for finder in self.finders:
            for dist in getattr(finder, "find_distributions", lambda context: ())(context):
                if canonicalize_name(dist.metadata["Name"] or "") in installed:
                    yield dist

sys.meta_path[:] = [OnlyDocsExtra(list(sys.meta_path))]
missing = {}
for module in modules:
    try:
        importlib.import_module(module)
    except ImportError as error:
        missing[module] = str(error)
print(json.dumps(missing))
"""


def _imports_of(script: Path) -> set[str]:
    """The modules a script imports (absolute imports, as written)."""
    modules = set()
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def test_docs_extra_covers_every_import_of_the_build() -> None:
    """`pip install -e ".[docs]"` then `mkdocs build`: everything the build imports is installed.

    The tutorials run during the build, so their imports count, as do the hooks and the
    build's plugins. Modules of other distributions are blocked in a fresh interpreter.
    """
    scripts = [*TUTORIALS, *(ROOT / "docs" / "hooks").glob("*.py")]
    modules = sorted(set().union(*map(_imports_of, scripts)) | set(BUILD_TOOLS))
    modules = [m for m in modules if m.partition(".")[0] not in sys.stdlib_module_names]
    import json

    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_CHECK, json.dumps([_requirements_of_docs_extra(), modules])],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    missing = json.loads(result.stdout.strip().splitlines()[-1])
    assert not missing, f"imported by the docs build but not installed by the docs extra: {missing}"
