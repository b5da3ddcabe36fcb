"""One `--output markdown|json|table` for every reporting command (diff, dry-run, chargeback).

A command builds a Document: a one-line summary, sections (a table, a list of lines, or a chart),
and the machine-readable data. `render` turns it into
- markdown: fit for a pull-request comment: the summary first, each section folded in
  `<details>`, charts as Mermaid `xychart-beta` blocks (GitHub renders them in comments);
- json: the data, money as exact decimal strings and times as RFC 3339, for machines;
- table: rich tables for a terminal (charts are left to the markdown).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, Final

from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from spendgate.logic.windows import rfc3339

FORMATS: Final = ("markdown", "json", "table")


def add_output_flag(parser: argparse.ArgumentParser, default: str = "table") -> None:
    parser.add_argument("--output", "-o", choices=FORMATS, default=default,
                        help=f"markdown (a pull-request comment), json (for machines) or table (default {default})")


@dataclass(frozen=True)
class Table:
    columns: Sequence[str]
    rows: Sequence[Sequence[str]]
    numeric: frozenset[int] = frozenset()  # column indexes aligned right


@dataclass(frozen=True)
class Chart:
    """A Mermaid xychart: bars and lines over the same x labels (values in dollars)."""

    title: str
    x_labels: Sequence[str]
    bars: Sequence[Sequence[Decimal]] = ()
    lines: Sequence[Sequence[Decimal]] = ()
    y_label: str = "USD"


@dataclass(frozen=True)
class Section:
    title: str
    table: Table | None = None
    lines: Sequence[str] = ()
    charts: Sequence[Chart] = ()
    note: str = ""  # one line under the title


@dataclass(frozen=True)
class Document:
    summary: str  # one line: what a reviewer reads first
    sections: Sequence[Section] = ()
    data: Any = None  # the JSON output
    header: str = ""  # markdown only, above the summary (e.g. a hidden marker)
    facts: Sequence[str] = field(default_factory=list)  # short lines under the summary


def render(document: Document, output: str) -> str:
    if output == "json":
        return json.dumps(document.data, indent=2, default=_json_value, ensure_ascii=False) + "\n"
    if output == "markdown":
        return markdown(document)
    return table_text(document)


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# markdown -------------------------------------------------------------------------------------


def markdown(document: Document) -> str:
    parts = [document.header] if document.header else []
    parts.append(f"### {document.summary}")
    if document.facts:
        parts.append("\n".join(f"- {fact}" for fact in document.facts))
    for section in document.sections:
        body = [section.note] if section.note else []
        if section.table is not None:
            body.append(markdown_table(section.table))
        if section.lines:
            body.append("\n".join(f"- {line}" for line in section.lines))
        body.extend(mermaid(chart) for chart in section.charts)
        parts.append(f"<details><summary>{_escape(section.title)}</summary>\n\n" + "\n\n".join(body)
                     + "\n\n</details>")
    return "\n\n".join(parts) + "\n"


def markdown_table(table: Table) -> str:
    align = ["---:" if index in table.numeric else "---" for index in range(len(table.columns))]
    rows = [table.columns, align, *table.rows]
    return "\n".join("| " + " | ".join(_escape(str(cell)) if row is not align else cell for cell in row) + " |"
                     for row in rows)


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def mermaid(chart: Chart) -> str:
    """A Mermaid `xychart-beta` block: bars and lines share the x axis and the y range."""
    values = [v for series in (*chart.bars, *chart.lines) for v in series]
    top = max(values, default=Decimal(1)) * Decimal("1.1")
    labels = ", ".join(f'"{label}"' for label in chart.x_labels)
    lines = ["```mermaid", "xychart-beta", f'    title "{chart.title}"', f"    x-axis [{labels}]",
             f'    y-axis "{chart.y_label}" 0 --> {_number(top)}']
    lines += [f"    bar [{', '.join(_number(v) for v in series)}]" for series in chart.bars]
    lines += [f"    line [{', '.join(_number(v) for v in series)}]" for series in chart.lines]
    return "\n".join([*lines, "```"])


def _number(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


# spreadsheets ---------------------------------------------------------------------------------


def csv_text(table: Table, byte_order_mark: bool = False) -> str:
    """One table as CSV (RFC 4180: a header row, CRLF line ends, quotes only where needed). Cells are written
    as given, so money stays a plain decimal. With `byte_order_mark` the text starts with U+FEFF, which tells
    spreadsheet programs (Excel above all) that the file is UTF-8."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(table.columns)
    writer.writerows([str(cell) for cell in row] for row in table.rows)
    return ("\ufeff" if byte_order_mark else "") + buffer.getvalue()


# terminal -------------------------------------------------------------------------------------


def table_text(document: Document) -> str:
    console = Console(file=io.StringIO(), width=160, force_terminal=False, color_system=None)
    console.print(document.summary, markup=False, highlight=False)
    for fact in document.facts:
        console.print(f"  {fact}", markup=False, highlight=False)
    for section in document.sections:
        if section.table is None and not section.lines:
            continue
        console.print()
        console.print(section.title, style="bold", markup=False, highlight=False)
        if section.note:
            console.print(section.note, markup=False, highlight=False)
        for line in section.lines:
            console.print(f"  {line}", markup=False, highlight=False)
        if section.table is not None:
            console.print(rich_table(section.table))
    output: io.StringIO = console.file  # type: ignore[assignment]
    return output.getvalue()


def rich_table(table: Table) -> RichTable:
    shown = RichTable(show_edge=False, header_style="bold")
    for index, column in enumerate(table.columns):
        shown.add_column(column, justify="right" if index in table.numeric else "left")
    for row in table.rows:
        shown.add_row(*(Text(str(cell)) for cell in row))  # Text: no rich markup in data
    return shown
