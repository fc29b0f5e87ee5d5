"""Printing for the CLI: lines, one-line errors, aligned tables, JSON. Plain text on the
standard streams: no click, no rich (a table is a few padded strings)."""

from __future__ import annotations

import sys

from cnm.errors import CNMError
from cnm.texttable import table as table

TYPE_CHECKING = False  # typing stays off the CLI's execution path; type checkers see True
if TYPE_CHECKING:
    from typing import Any


def echo(text: str = "", err: bool = False) -> None:
    """One line on stdout (or stderr)."""
    (sys.stderr if err else sys.stdout).write(f"{text}\n")


def error_line(exc: CNMError) -> None:
    """A domain error as ONE line on stderr."""
    sys.stdout.flush()
    sys.stderr.write(f"Error: {' '.join(exc.message.splitlines())}\n")
    sys.stderr.flush()


def dumps(obj: Any) -> str:
    """JSON as Docker's CLI prints it (indent 4)."""
    from cnm.jsonlite import dumps  # (CLI start-up: only JSON output needs it)

    return dumps(obj, indent=4)
