"""MkDocs hook: the command-line reference page, generated from debcr's argparse parser."""

from __future__ import annotations


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "reference/cli.md":
        return markdown
    from debcr.cli import build_parser

    return markdown + "\n```text\n" + build_parser().format_help() + "```\n"
