"""The resolver's UDP side: one thread answers the queries of every listener.

Each wake-up drains up to UDP_BATCH queued queries per ready socket, answering repeats
from the reply cache (cnm.dns.fastpath: a dict lookup and an ID patch) and the rest
through the resolver's slow path (dnslib), inline. A thread blocked in epoll rather than
the daemon's event loop because a loop turn costs Python work per wake-up that a
tight epoll loop does not (measured: ~10% more CPU per query with the loop's
add_reader than here, at 32 queries outstanding; a per-query asyncio transport cost
~6x more). What is not answered at once, a forwarded query, goes to the event loop.

Thread safety: the reply cache is touched by this thread only; the name table locks
itself; sockets are added and removed under `_lock`, which a drain holds, so a socket
is never closed under a drain.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
from collections.abc import Callable

from cnm.dns.fastpath import ReplyCache
from cnm.dns.handler import MAX_QUERY

log = logging.getLogger("cnm.dns")

UDP_BATCH = 256  # queries answered per socket and wake-up before the next socket's turn
# One byte more than the handler accepts, so an oversized query is seen as such (FORMERR)
# rather than cut to size; a bigger buffer would cost an allocation per query.
_UDP_READ = MAX_QUERY + 1

# The slow path: the reply to send now, or None (dropped, or handed on to be forwarded).
SlowPath = Callable[["UdpSocket", bytes, tuple], bytes | None]


class UdpSocket:
    """One listener's UDP socket (bound, non-blocking)."""

    def __init__(self, network_id: str, sock: socket.socket, cache: ReplyCache, slow: SlowPath) -> None:
        self.network_id = network_id
        self.sock = sock
        self.cache = cache
        self.slow = slow
        self.closed = False

    def drain(self) -> None:
        recv, send = self.sock.recvfrom, self.sock.sendto
        cache_get = self.cache.get
        nid = self.network_id
        for _ in range(UDP_BATCH):
            try:
                data, addr = recv(_UDP_READ)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # ICMP errors from earlier replies (a client gone away): nothing to do.
                log.debug("dns udp error on %s: %s", nid[:12], exc)
                continue
            reply: bytes | bytearray | None = cache_get(data, addr[0], nid)
            if reply is None:
                reply = self.slow(self, data, addr)
                if reply is None:
                    continue
            try:
                send(reply, addr)
            except OSError as exc:  # send buffer full, or the client is gone: it retries
                log.debug("dns: reply to %s dropped: %s", addr[0], exc)

    def sendto(self, reply: bytes, addr: tuple) -> None:
        """A late reply (a forwarded query's), from any thread."""
        if self.closed:
            return
        try:
            self.sock.sendto(reply, addr)
        except OSError as exc:
            log.debug("dns: reply to %s dropped: %s", addr[0], exc)

    def close(self) -> None:
        self.closed = True
        self.sock.close()


class UdpPoller:
    """The thread: started with the first socket, stopped by close()."""

    def __init__(self, name: str = "cnm-dns-udp") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._socks: dict[int, UdpSocket] = {}
        self._epoll: select.epoll | None = None
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None

    def add(self, udp: UdpSocket) -> None:
        with self._lock:
            if self._thread is None:
                self._start_locked()
            assert self._epoll is not None
            fd = udp.sock.fileno()
            self._socks[fd] = udp
            self._epoll.register(fd, select.EPOLLIN)

    def remove(self, udp: UdpSocket) -> None:
        """Stop answering on `udp` (closing it is the caller's). Idempotent."""
        with self._lock:  # waits for a drain of it to end
            fd = udp.sock.fileno()
            if self._socks.get(fd) is udp:
                del self._socks[fd]
                if self._epoll is not None:
                    self._epoll.unregister(fd)

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            os.write(self._wake_w, b"x")
        if thread is not threading.current_thread():
            thread.join(5)
        with self._lock:
            if self._epoll is not None:
                self._epoll.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._epoll, self._wake_r, self._wake_w = None, -1, -1

    def _start_locked(self) -> None:
        self._epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self._thread = threading.Thread(target=self._run, args=(self._epoll, self._wake_r), name=self.name, daemon=True)
        self._thread.start()

    def _run(self, epoll: select.epoll, wake: int) -> None:
        while True:
            try:
                events = epoll.poll()
            except InterruptedError:
                continue
            for fd, _ in events:
                if fd == wake:
                    return
                with self._lock:
                    udp = self._socks.get(fd)
                    if udp is None:
                        continue
                    try:
                        udp.drain()
                    except Exception:  # a bug must cost one batch, never the resolver
                        log.exception("dns: answering on %s failed", udp.network_id[:12])
