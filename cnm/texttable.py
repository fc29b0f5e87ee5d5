"""Text tables as Docker's CLI prints them: columns padded like its tabwriter (at least
`gap` spaces between them), no trailing blanks. Pure: the CLI prints its tables with it,
and the daemon renders `net ps`'s (cnm.api.ps_listing) with the same lines."""

from __future__ import annotations

TYPE_CHECKING = False  # typing stays off the CLI's execution path; type checkers see True
if TYPE_CHECKING:
    from collections.abc import Sequence

GAP = 3


def widths(headers: Sequence[object], rows: Sequence[Sequence[object]]) -> list[int]:
    """Each column's width: its longest cell's."""
    return [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]


def line(row: Sequence[object], widths: Sequence[int], gap: int = GAP) -> str:
    """One row: every cell but the last padded to its column's width and the gap."""
    cells = [str(c).ljust(w + gap) for c, w in zip(row[:-1], widths, strict=False)] + [str(row[-1])]
    return "".join(cells).rstrip()


def table(headers: Sequence[object], rows: Sequence[Sequence[object]], gap: int = GAP) -> str:
    """The whole table, header first, lines joined by newlines (no final one)."""
    ws = widths(headers, rows)
    return "\n".join(line(row, ws, gap) for row in [headers, *rows])
