"""Printing helpers: one-line errors, aligned tables (plain text: fast, no rich)."""
from __future__ import annotations

from typing import Sequence

from cnm.cli.runflow import error_line  # noqa: F401  (one definition, click-free; re-exported)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], gap: int = 3) -> str:
    """Columns padded like Docker's tabwriter (at least `gap` spaces between them)."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [str(c).ljust(w + gap) for c, w in zip(row[:-1], widths)] + [str(row[-1])]
        lines.append("".join(cells).rstrip())
    return "\n".join(lines)
