"""An undo stack for multi-step operations: push the inverse of each step as it
succeeds; if the block exits with an exception before `commit()`, the inverses run in
reverse order (each best-effort, failures logged, the original error re-raised)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)


class Undo:
    def __init__(self) -> None:
        self._steps: list[tuple[Callable[..., Any], tuple]] = []
        self._committed = False

    def push(self, fn: Callable[..., Any], *args: Any) -> None:
        self._steps.append((fn, args))

    def commit(self) -> None:
        self._committed = True

    def rollback(self) -> list[str]:
        failures = []
        while self._steps:
            fn, args = self._steps.pop()
            try:
                fn(*args)
            except Exception as exc:  # keep undoing: leave as little as possible behind
                log.error("rollback step %s%r failed: %s", getattr(fn, "__qualname__", fn), args, exc)
                failures.append(str(exc))
        return failures

    def __enter__(self) -> Undo:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None and not self._committed:
            self.rollback()
