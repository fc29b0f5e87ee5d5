"""Nested transaction blocks of a local store (cnm.store.Store.transaction): one lock
held from the outermost block's start to its end, and the after-commit steps queued
meanwhile run once it has ended — outside the lock, so that a step may use the store."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from cnm.store import run_after_commit


class NestedTransactions:
    """Mixed into a store: `_begin()`/`_commit()` are the store's own work at the
    outermost block's start and end (SQLite's BEGIN/COMMIT; nothing in memory)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0  # open transaction blocks (the lock's owner's)
        self._after: list[Callable[[], None]] = []

    def _begin(self) -> None:
        pass

    def _commit(self) -> None:
        pass

    @contextmanager
    def transaction(self) -> Iterator[None]:
        outer = False
        try:
            with self._lock:
                outer = self._depth == 0
                if outer:
                    self._begin()
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                    if outer:
                        self._commit()
        finally:
            if outer:
                with self._lock:
                    steps, self._after = self._after, []
                run_after_commit(steps)

    def after_commit(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._depth:
                self._after.append(fn)
                return
        run_after_commit([fn])
