"""`net lab up`'s progress lines: plain (through a pipe, into a log) or rich (a
terminal). The CLI loads this module only for the lab commands."""

from __future__ import annotations

import sys
import time

from cnm.cli.output import echo

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class PlainProgress:
    """One line per finished phase (for logs and pipes)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, phase: str, done: int, total: int, state: str, detail: str = "") -> None:
        if state == "start":
            self.t0 = time.monotonic()
        elif state == "done":
            echo(f"{phase}: {total} step{'s' if total != 1 else ''} ok ({time.monotonic() - self.t0:.1f}s)")
        elif state == "fail":
            echo(f"{phase}: FAILED at {detail}")
        else:
            return
        sys.stdout.flush()  # a pipe or log file sees each phase as it ends, not all at exit


class RichProgress:
    """A spinner with a count on the running phase, a tick per finished one (rich,
    loaded lazily)."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console()
        self.status: Any = None
        self.t0 = time.monotonic()

    def __call__(self, phase: str, done: int, total: int, state: str, detail: str = "") -> None:
        if state == "start":
            self.t0 = time.monotonic()
            self.status = self.console.status(f"{phase} 0/{total}")
            self.status.start()
            return
        if state == "step":
            if self.status is not None:
                self.status.update(f"{phase} {done}/{total}")
            return
        if self.status is not None:
            self.status.stop()
            self.status = None
        took = time.monotonic() - self.t0
        if state == "done":
            self.console.print(
                f"[green]✓[/] {phase} [dim]{total} step{'s' if total != 1 else ''}, {took:.1f}s[/]", highlight=False
            )
        else:
            from rich.markup import escape

            self.console.print(f"[red]✗[/] {phase}: {escape(detail)}", highlight=False)


def _progress() -> Any:
    if sys.stdout.isatty():
        try:
            return RichProgress()
        except ImportError:
            pass
    return PlainProgress()
