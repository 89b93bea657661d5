"""Render a report document to Markdown and to one self-contained HTML file.

The document is plain data (banners, sections of paragraphs, tables and images), so both formats
show the same content. The HTML embeds every PNG as a base64 data URI and its CSS inline: it opens
from an e-mail attachment with no network and no other files.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Banner:
    """A warning shown above everything else (``ident`` becomes the HTML id)."""

    ident: str
    text: str


@dataclass(frozen=True)
class TableData:
    """A table of already formatted cells."""

    headers: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    """A titled part of the report: paragraphs, then tables, then images (alt text, PNG)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[TableData] = field(default_factory=list)
    images: list[tuple[str, Path]] = field(default_factory=list)


@dataclass
class Document:
    """The whole report."""

    title: str
    banners: list[Banner] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)


def to_markdown(doc: Document) -> str:
    """Markdown with images referenced by file name (they sit beside report.md)."""
    lines = [f"# {doc.title}", ""]
    for banner in doc.banners:
        lines += [f"> **{banner.text}**", ""]
    for section in doc.sections:
        lines += [f"## {section.title}", ""]
        for paragraph in section.paragraphs:
            lines += [paragraph, ""]
        for table in section.tables:
            lines += [*_markdown_table(table), ""]
        for alt, path in section.images:
            lines += [f"![{alt}]({path.name})", ""]
    return "\n".join(lines)


def _markdown_table(table: TableData) -> list[str]:
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    numeric = [all(_is_number(r[i]) for r in table.rows) for i in range(len(table.headers))]
    aligns = ["---:" if n and table.rows else "---" for n in numeric]
    return [row(table.headers), "|" + "|".join(aligns) + "|", *(row(r) for r in table.rows)]


_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto;
       max-width: 1280px; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
.banner { padding: .8rem 1rem; margin: 1rem 0; border-radius: 6px; font-weight: bold; }
#simulated-banner { background: #fff3cd; border: 2px solid #e0a800; color: #7a5b00; }
#mismatch-banner { background: #f8d7da; border: 2px solid #c82333; color: #721c24; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .85rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; }
th { background: #37474f; color: #fff; } td.num { text-align: right; }
tr:nth-child(even) td { background: #f6f8fa; }
figure { margin: 1rem 0; } img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #555; }
"""


def to_html(doc: Document) -> str:
    """One HTML page with inline CSS and the PNGs as data URIs (no scripts, no external files)."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(doc.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(doc.title)}</h1>",
    ]
    for banner in doc.banners:
        out.append(f'<div class="banner" id="{banner.ident}">{html.escape(banner.text)}</div>')
    for section in doc.sections:
        out.append(f"<section><h2>{html.escape(section.title)}</h2>")
        out += [f"<p>{_inline(p)}</p>" for p in section.paragraphs]
        out += [_html_table(t) for t in section.tables]
        out += [_figure(alt, path) for alt, path in section.images]
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


def _inline(text: str) -> str:
    # Paragraphs may use `code` spans, as in the Markdown; everything else is escaped.
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html_table(table: TableData) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join(
        "<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in table.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_cell(cell: str) -> str:
    css = ' class="num"' if _is_number(cell) else ""
    return f"<td{css}>{html.escape(cell)}</td>"


def _is_number(cell: str) -> bool:
    try:
        float(cell.replace(",", ""))
    except ValueError:
        return cell == "-"
    return True


def _figure(alt: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(alt)}" data-name="{html.escape(path.name)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'
    )
