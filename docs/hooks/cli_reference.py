"""MkDocs hook: the command-line reference page, generated from debcr's argparse parser.

The page ``reference/cli.md`` holds the hand-written introduction and the marker
``<!-- cli-reference -->``; at build time the marker is replaced by the output of
``debcr --help`` and one section per subcommand with its ``--help`` text, all taken from
`debcr.cli.build_parser`. Nothing is copied by hand, so the page cannot drift from
the code. Help is formatted at a fixed width, so the page does not depend on the terminal
the documentation is built in.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PAGE = "reference/cli.md"
MARKER = "<!-- cli-reference -->"
#: Width of the help text (characters), independent of the terminal's COLUMNS.
WIDTH = 100


def _fixed_width(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` format its help ``WIDTH`` characters wide."""

    def formatter(prog: str) -> argparse.HelpFormatter:
        return argparse.HelpFormatter(prog, width=WIDTH, max_help_position=32)

    parser.formatter_class = formatter
    if hasattr(parser, "color"):  # Python 3.14+ may colour help text for a terminal
        parser.color = False


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """``(name, one-line help, parser)`` of every subcommand, in ``debcr --help`` order."""
    commands = []
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        if not isinstance(action, argparse._SubParsersAction):
            continue
        summaries = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, sub in action.choices.items():
            commands.append((name, summaries.get(name, ""), sub))
    return commands


def _block(text: str) -> str:
    return "```text\n" + text.rstrip() + "\n```\n"


def _build_parser() -> argparse.ArgumentParser:
    try:
        from debcr.cli import build_parser
    except ModuleNotFoundError:  # building from a checkout where debcr is not installed
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
        from debcr.cli import build_parser
    return build_parser()


def cli_reference() -> str:
    """The generated Markdown: top-level help, then one section per subcommand."""
    parser = _build_parser()
    _fixed_width(parser)
    parts = ["## `debcr`\n", _block(parser.format_help())]
    for name, summary, sub in _subcommands(parser):
        _fixed_width(sub)
        parts.append(f"## `debcr {name}`\n")
        if summary:
            parts.append(summary[:1].upper() + summary[1:] + ".\n")
        parts.append(_block(sub.format_help()))
    return "\n".join(parts)


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != PAGE:
        return markdown
    generated = cli_reference()
    if MARKER in markdown:
        return markdown.replace(MARKER, generated)
    return markdown + "\n" + generated
