"""One result table and its Markdown: what every benchmark's `tables(report)` returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Table:
    """One result table: `name` selects it in a marker; the first `text_columns` columns are
    text (left-aligned), the others numbers (right-aligned)."""

    name: str
    columns: Sequence[str]
    rows: Sequence[Sequence[str]]
    caption: str = ""
    text_columns: int = 1

    def markdown(self) -> str:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

        rule = ["---" if i < self.text_columns else "---:" for i in range(len(self.columns))]
        lines = [self.caption, ""] if self.caption else []
        lines += [line(self.columns), line(rule), *(line(row) for row in self.rows)]
        return "\n".join(lines)
