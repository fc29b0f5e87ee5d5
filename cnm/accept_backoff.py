"""What a server does when accept() fails, shared by the API's asyncio listener
(cnm.api.listener) and the plugin servers' threads (cnm.plugins.server).

Out of file descriptors (or memory), accept() fails while the listening socket stays
readable — the client waits in the backlog — so a server that simply tries again spins
on one core and logs one line per try (the issue's daemon: 6.5 million lines in 10
minutes). Instead: pause accepting, 10 ms doubling to `retry_max`, back to 10 ms after
the next success; and say so at most once per interval, with the count since the last
line. No I/O here: the caller sleeps (a timer on its loop, or an event wait on its
thread) for as long as `failed()` says.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from typing import Any

RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
FIRST_RETRY = 0.01


class RateLimitedLog:
    """One warning per `interval` seconds, saying how often it happened meanwhile."""

    def __init__(self, interval: float, logger: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.logger = logger
        self.clock = clock
        self.next_at = 0.0
        self.count = 0

    def __call__(self, message: str, *args: Any) -> None:
        self.count += 1
        now = self.clock()
        if now < self.next_at:
            return
        suffix = f" ({self.count} times since the last report)" if self.count > 1 else ""
        self.logger.warning(message + suffix, *args)
        self.count = 0
        self.next_at = now + self.interval


class AcceptBackoff:
    """The pause after each failed accept, and its (rate-limited) log line."""

    def __init__(self, what: str, retry_max: float, log: RateLimitedLog) -> None:
        self.what = what  # who is accepting: "API", "plugin /run/docker/plugins/x.sock"
        self.retry_max = retry_max
        self.log = log
        self.retry = FIRST_RETRY

    def failed(self, exc: OSError) -> float:
        """Seconds to stop accepting for, after `exc`."""
        kind = "out of a system resource" if exc.errno in RESOURCE_ERRNOS else "failed"
        self.log(
            "%s: accepting a connection %s: %s; retrying with back-off up to %gs",
            self.what,
            kind,
            exc.strerror or exc,
            self.retry_max,
        )
        pause = self.retry
        self.retry = min(self.retry * 2, self.retry_max)
        return pause

    def succeeded(self) -> None:
        self.retry = FIRST_RETRY
