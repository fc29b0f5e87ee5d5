"""Noticing container exits without polling: each running container's supervisor pidfd
becomes a reader on the daemon's event loop, and its exit a call of the watcher's
`on_exit(cid)` in a worker thread (it takes the service's lock and does I/O)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable

from cnm.errors import CNMError

log = logging.getLogger(__name__)

ExitFd = Callable[[str], int | None]  # cid -> a pidfd readable at exit, None if not running


class ExitWatcher:
    """`watch(cid, on_exit)` is thread-safe and may be called before the event loop
    runs: watches wait until `start(loop)`. A container that has exited already (no
    pidfd) is reported at once."""

    def __init__(self, exit_fd: ExitFd) -> None:
        self._exit_fd = exit_fd
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: list[tuple[str, Callable[[str], None]]] = []
        self._lock = threading.Lock()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Begin watching on `loop` (from the loop's thread), the waiting watches first."""
        with self._lock:
            self._loop, pending = loop, self._pending
            self._pending = []
        for cid, on_exit in pending:
            self._add(cid, on_exit)

    def watch(self, cid: str, on_exit: Callable[[str], None]) -> None:
        with self._lock:
            loop = self._loop
            if loop is None:
                self._pending.append((cid, on_exit))
                return
        loop.call_soon_threadsafe(self._add, cid, on_exit)

    def _add(self, cid: str, on_exit: Callable[[str], None]) -> None:
        assert self._loop is not None
        loop = self._loop
        try:
            fd = self._exit_fd(cid)
        except CNMError:
            fd = None
        if fd is None:
            self._exited(cid, on_exit)
            return

        def ready() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            self._exited(cid, on_exit)

        loop.add_reader(fd, ready)

    def _exited(self, cid: str, on_exit: Callable[[str], None]) -> None:
        def handle() -> None:
            try:
                on_exit(cid)
            except Exception:
                log.exception("cleaning up after container %s", cid[:12])

        assert self._loop is not None
        self._loop.run_in_executor(None, handle)
