"""Printing for the CLI: lines, one-line errors, aligned tables, JSON. Plain text on the
standard streams: no click, no rich (a table is a few padded strings)."""

from __future__ import annotations

import sys

from cnm.errors import CNMError

TYPE_CHECKING = False  # typing stays off the CLI's execution path; type checkers see True
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


def echo(text: str = "", err: bool = False) -> None:
    """One line on stdout (or stderr)."""
    (sys.stderr if err else sys.stdout).write(f"{text}\n")


def error_line(exc: CNMError) -> None:
    """A domain error as ONE line on stderr."""
    sys.stdout.flush()
    sys.stderr.write(f"Error: {' '.join(exc.message.splitlines())}\n")
    sys.stderr.flush()


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], gap: int = 3) -> str:
    """Columns padded like Docker's tabwriter (at least `gap` spaces between them)."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [str(c).ljust(w + gap) for c, w in zip(row[:-1], widths, strict=False)] + [str(row[-1])]
        lines.append("".join(cells).rstrip())
    return "\n".join(lines)


def json_str(text: str) -> str:
    """A string as a JSON string, non-ASCII kept (Docker's COMMAND column)."""
    from cnm.jsonlite import dumps  # (CLI start-up: only JSON output needs it)

    return dumps(text, ascii=False)


def dumps(obj: Any) -> str:
    """JSON as Docker's CLI prints it (indent 4)."""
    from cnm.jsonlite import dumps  # (CLI start-up: only JSON output needs it)

    return dumps(obj, indent=4)
