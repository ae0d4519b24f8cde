"""Pieces of the Snakemake HTML report (`snakemake --report`): Markdown result tables as standalone HTML pages.

The report shows an HTML result inline; the tables are written as Markdown (RESULTS.md, COMPARE.md, readable in a
terminal or on GitHub) and converted here with the `markdown` library (its `tables` extension).
"""

from __future__ import annotations

import html

import markdown

STYLE = """
body { font-family: system-ui, sans-serif; font-size: 14px; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.8em 0 1.6em; }
th, td { border: 1px solid #bbb; padding: 4px 8px; }
th { background: #eef2f7; }
td sub { color: #555; display: block; }
"""


def markdown_page(text: str, title: str) -> str:
    """A standalone HTML page (UTF-8, inline style) from Markdown text with pipe tables."""
    body = markdown.markdown(text, extensions=["tables"], output_format="html")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
