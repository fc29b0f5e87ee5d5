"""The API's accept loop and per-connection guards, in front of aiohttp's protocol.

Three things aiohttp and asyncio leave open, closed here:

- **Half-sent requests.** A connection must deliver a request's headers within
  `header_timeout` of being accepted, or of the first byte after an idle keep-alive
  pause, or it is closed (Go's ReadHeaderTimeout). Bodies are bounded by
  `body_timeout` where they are read (`cnm.api.common.json_body`); idle keep-alive
  connections by aiohttp's `keepalive_timeout`.
- **Too many connections.** At `max_connections` the listener stops accepting until
  one closes: new clients wait in the kernel's backlog instead of costing a file
  descriptor each (Go's netutil.LimitListener).
- **Out of file descriptors.** asyncio's accept loop logs "socket.accept() out of
  system resource" for every failed accept, and re-arms itself once per failure, so a
  daemon out of descriptors logged millions of lines. Here a resource error (EMFILE,
  ENFILE, ENOBUFS, ENOMEM) pauses accepting with exponential back-off (10 ms to
  `accept_retry_max`), and is logged at most once per `error_log_interval` with the
  count of failures since the last line.

Everything is on the event loop (no threads); `Limits` carries the knobs, small in
tests, Docker-like generous in the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from cnm.accept_backoff import AcceptBackoff, RateLimitedLog

log = logging.getLogger("cnm.api")

ACCEPT_BATCH = 32  # accepts per readiness event: fair to the rest of the loop


@dataclass(frozen=True)
class Limits:
    """How much one client may hold of the API. Defaults suit a daemon; tests shrink them."""

    header_timeout: float = 10.0  # accept (or first byte after idle) -> complete headers
    body_timeout: float = 60.0  # headers -> complete body, where a body is read
    keepalive_timeout: float = 120.0  # an idle keep-alive connection is closed after this
    max_connections: int = 512  # open connections at once; more wait in the backlog
    max_body: int = 1 << 20  # bytes of a JSON request body (413 above)
    backlog: int = 128
    accept_retry_max: float = 1.0  # longest pause after a resource error on accept
    error_log_interval: float = 60.0  # at most one log line per kind of trouble per interval


LIMITS = web.AppKey("cnm_limits", Limits)


class RateLimitFilter(logging.Filter):
    """Passes one record per `interval` seconds (per logger it is attached to), adding
    how many were dropped meanwhile. For aiohttp's own server log: it logs every
    malformed request with a traceback at ERROR, which a client could turn into a flood."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self.next_at = 0.0
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        import time  # (the monotonic clock, not the loop's: records come from any thread)

        now = time.monotonic()
        if now < self.next_at:
            self.dropped += 1
            return False
        if self.dropped:
            record.msg = f"{record.msg} ({self.dropped} more like it since the last report)"
            self.dropped = 0
        record.exc_info, record.exc_text = None, None  # one line: no traceback
        self.next_at = now + self.interval
        return True


def http_logger(limits: Limits) -> logging.Logger:
    """The logger aiohttp's request handlers use, rate-limited with this server's
    interval (one filter on the process-wide logger, reset when a server starts)."""
    logger = logging.getLogger("cnm.api.http")
    for f in logger.filters:
        if isinstance(f, RateLimitFilter):
            f.interval, f.next_at, f.dropped = limits.error_log_interval, 0.0, 0
            return logger
    logger.addFilter(RateLimitFilter(limits.error_log_interval))
    return logger


class ConnectionGuard(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol: every callback is passed on, and a
    timer closes a connection whose request headers do not arrive in time. The error
    middleware calls `request_started()` (headers complete: disarm) and
    `request_done()` (back to idle: the next byte re-arms)."""

    def __init__(self, inner: asyncio.Protocol, listener: Listener) -> None:
        self.inner = inner
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.idle = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._arm()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.idle:
            self.idle = False
            self._arm()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.listener.connection_closed()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def request_started(self) -> None:
        self.idle = False
        self._disarm()

    def request_done(self) -> None:
        self.idle = True

    def _arm(self) -> None:
        self._disarm()
        self.timer = self.listener.loop.call_later(self.listener.limits.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        self.listener.slow_clients(
            "API: closed a connection whose request headers did not arrive within %gs",
            self.listener.limits.header_timeout,
        )
        if self.transport is not None:
            self.transport.abort()


def guard_of(request: web.Request) -> ConnectionGuard | None:
    transport = request.transport
    proto = transport.get_protocol() if transport is not None else None
    return proto if isinstance(proto, ConnectionGuard) else None


class Listener:
    """Accepts on a listening socket and hands each connection to `factory()`'s
    protocol (aiohttp's), wrapped in a ConnectionGuard. `close()` stops accepting;
    open connections are aiohttp's to close (its runner does, on cleanup)."""

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        limits: Limits,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.sock = sock
        self.factory = factory
        self.limits = limits
        self.loop = loop
        self.open = 0  # accepted and not yet closed (including being set up)
        self.reading = False
        self.closed = False
        self.retry_handle: asyncio.TimerHandle | None = None
        self.resource_error = RateLimitedLog(limits.error_log_interval, log, loop.time)
        self.at_limit = RateLimitedLog(limits.error_log_interval, log, loop.time)
        self.slow_clients = RateLimitedLog(limits.error_log_interval, log, loop.time)
        self.backoff = AcceptBackoff("API", limits.accept_retry_max, self.resource_error)
        self.tasks: set[asyncio.Task] = set()

    # -- accepting --------------------------------------------------------------------

    def start(self) -> None:
        self.sock.setblocking(False)
        self._resume()

    def _resume(self) -> None:
        self.retry_handle = None
        if self.closed or self.reading or self.open >= self.limits.max_connections:
            return
        self.loop.add_reader(self.sock.fileno(), self._accept_some)
        self.reading = True

    def _pause(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.sock.fileno())
            self.reading = False

    def _accept_some(self) -> None:
        for _ in range(ACCEPT_BATCH):
            if self.open >= self.limits.max_connections:
                self._pause()
                self.at_limit(
                    "API: %d connections open, the limit: new ones wait until one closes", self.limits.max_connections
                )
                return
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._back_off(exc)
                return
            self.backoff.succeeded()
            self.open += 1
            task = self.loop.create_task(self._serve(conn))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _back_off(self, exc: OSError) -> None:
        """Stop accepting for a while (no busy loop: the socket stays readable while the
        backlog holds clients), then try again; log at most once per interval."""
        pause = self.backoff.failed(exc)
        self._pause()
        if self.retry_handle is None and not self.closed:
            self.retry_handle = self.loop.call_later(pause, self._resume)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: ConnectionGuard(self.factory(), self), conn)
        except Exception as exc:  # e.g. out of memory making the transport
            conn.close()
            self.connection_closed()
            self.resource_error("API: could not set up an accepted connection: %s", exc)

    # -- bookkeeping ----------------------------------------------------------------------

    def connection_closed(self) -> None:
        self.open -= 1
        if not self.reading and self.retry_handle is None:
            self._resume()

    def close(self) -> None:
        """Stop accepting and close the listening socket. Idempotent."""
        self.closed = True
        self._pause()
        if self.retry_handle is not None:
            self.retry_handle.cancel()
            self.retry_handle = None
        self.sock.close()

    async def wait_closed(self) -> None:
        return None


class GuardedUnixSite(web.BaseSite):
    """An aiohttp site on an already bound and listening unix socket, served through a
    Listener (aiohttp's runner stops it like any site)."""

    __slots__ = ("_sock", "_limits", "_path")

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, limits: Limits) -> None:
        super().__init__(runner, backlog=limits.backlog)
        self._sock = sock
        self._limits = limits
        self._path = sock.getsockname()

    @property
    def name(self) -> str:
        return f"http://unix:{self._path}:"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        listener = Listener(self._sock, server, self._limits, asyncio.get_running_loop())
        listener.start()
        self._server = listener  # type: ignore[assignment]  # BaseSite.stop() calls close()
