"""The resolver's sockets: UDP and TCP listeners on each network's gateway, and the
forwarder that relays other names to the host's upstream resolvers.

UDP queries are answered by one thread for all listeners (cnm.dns.udp: repeats from the
reply cache, the rest through the handler, inline); everything else runs on the
daemon's asyncio loop: TCP, and forwarding. Only forwarded queries become tasks, and
their number is capped, as are TCP connections, so a flood costs bounded memory.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from dnslib import DNSHeader
from dnslib.buffer import Buffer

from cnm.addresses import address_text
from cnm.dns.fastpath import ReplyCache
from cnm.dns.handler import Forward, Local, decide, servfail
from cnm.dns.records import NameTable
from cnm.dns.udp import UdpPoller, UdpSocket
from cnm.errors import InvalidParameter, Unavailable

log = logging.getLogger("cnm.dns")

DNS_PORT = 53
UPSTREAM_TIMEOUT = 2.0
MAX_INFLIGHT = 256  # forwarded queries waiting on upstreams, all listeners together
MAX_TCP_CONNECTIONS = 64
TCP_IDLE = 10.0  # seconds a TCP client may sit silent (RFC 7766 suggests ~10 s)
TCP_QUERIES_PER_CONNECTION = 100
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux value; the stdlib lacks the name


def parse_upstream(text: str) -> tuple[str, int]:
    """'192.0.2.1', '192.0.2.1:5353', '2001:db8::1', '[2001:db8::1]:5353' -> (ip, port)."""
    text = text.strip()
    host, port = text, DNS_PORT
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else DNS_PORT
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = int(p)
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError as exc:
        raise InvalidParameter(f"upstream DNS server {text!r} is not an IP address") from exc
    if not 0 < port < 65536:
        raise InvalidParameter(f"upstream DNS server {text!r} has an invalid port")
    return str(ip), port


@dataclass
class _Listener:
    network_id: str
    address: str
    udp: UdpSocket
    tcp: asyncio.AbstractServer
    conns: set[asyncio.StreamWriter] = field(default_factory=set)

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()
        for w in list(self.conns):
            w.close()


def _bound_socket(address: str, kind: socket.SocketKind, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # The gateway address may not be on the bridge yet (or still in IPv6 DAD):
        # FREEBIND lets us bind now and receive as soon as it is.
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
        sock.setblocking(False)
        return sock
    except OSError as exc:
        sock.close()
        proto = "TCP" if kind == socket.SOCK_STREAM else "UDP"
        raise Unavailable(f"cannot listen for DNS on {address} {proto} port {port}: {exc.strerror or exc}") from exc


class Resolver:
    """The embedded DNS server of one daemon: any number of listeners, one name table.

    `upstreams` is called for every forwarded query, so a changed host resolv.conf
    applies without a restart. Async methods run on the loop; the *_threadsafe twins are
    for the daemon's worker threads."""

    def __init__(
        self,
        table: NameTable,
        upstreams: Callable[[], list[str]],
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        port: int = DNS_PORT,
        upstream_timeout: float = UPSTREAM_TIMEOUT,
    ) -> None:
        self.table = table
        self._upstreams = upstreams
        self._loop = loop
        self.port = port
        self.upstream_timeout = upstream_timeout
        self._listeners: dict[tuple[str, str], _Listener] = {}
        self._tasks: set[asyncio.Task] = set()
        self._tcp_connections = 0
        self.cache = ReplyCache(table)  # the UDP thread's only
        self._udp = UdpPoller()

    # -- lifecycle -------------------------------------------------------------------

    def listeners(self) -> list[tuple[str, str]]:
        """(network_id, address) of every listener."""
        return sorted(self._listeners)

    async def add_listener(self, network_id: str, address: str) -> None:
        """Serve UDP and TCP on address:port for `network_id`. Idempotent per address; a
        network may have several (its IPv4 and IPv6 gateways)."""
        self._loop = self._loop or asyncio.get_running_loop()
        try:
            address = address_text(address)
        except ValueError as exc:
            raise InvalidParameter(f"DNS listener address {address!r} is not an IP address") from exc
        if (network_id, address) in self._listeners:
            return
        udp_sock = _bound_socket(address, socket.SOCK_DGRAM, self.port)
        try:
            tcp_sock = _bound_socket(address, socket.SOCK_STREAM, self.port)
        except Exception:
            udp_sock.close()
            raise
        udp = UdpSocket(network_id, udp_sock, self.cache, self._on_datagram)
        conns: set[asyncio.StreamWriter] = set()
        try:
            tcp = await asyncio.start_server(
                lambda r, w: self._serve_tcp(network_id, conns, r, w), sock=tcp_sock, backlog=64
            )
        except Exception as exc:
            udp.close()
            tcp_sock.close()
            raise Unavailable(f"cannot listen for DNS on {address} TCP port {self.port}: {exc}") from exc
        self._listeners[(network_id, address)] = _Listener(network_id, address, udp, tcp, conns)
        self._udp.add(udp)
        log.info("dns: listening on %s:%d for network %s", address, self.port, network_id[:12])

    async def remove_listener(self, network_id: str) -> int:
        """Stop every listener of `network_id`; returns how many (0: idempotent no-op)."""
        gone = [k for k in self._listeners if k[0] == network_id]
        for key in gone:
            listener = self._listeners.pop(key)
            self._udp.remove(listener.udp)  # no drain of it runs once this returns
            listener.close()
            await listener.tcp.wait_closed()
        return len(gone)

    async def close(self) -> None:
        for network_id in {k[0] for k in self._listeners}:
            await self.remove_listener(network_id)
        self._udp.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def add_listener_threadsafe(self, network_id: str, address: str, timeout: float = 10) -> None:
        self._run(self.add_listener(network_id, address), timeout)

    def remove_listener_threadsafe(self, network_id: str, timeout: float = 10) -> int:
        return self._run(self.remove_listener(network_id), timeout)

    def close_threadsafe(self, timeout: float = 10) -> None:
        self._run(self.close(), timeout)

    def _run(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        loop = self._loop
        if loop is None:
            coro.close()
            raise Unavailable("the DNS resolver has no event loop yet: pass loop= when creating it")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coro.close()
            raise RuntimeError("a *_threadsafe method was called on the resolver's own loop: await the coroutine")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    # -- queries ---------------------------------------------------------------------

    def _decide(self, data: bytes, client_ip: str, network_id: str, tcp: bool) -> bytes | Forward | None:
        try:
            generation = self.table.generation
            out = decide(self.table, data, client_ip, network_id, tcp=tcp)
            if isinstance(out, Local):
                if not tcp:
                    self.cache.put(data, client_ip, network_id, out, generation)
                return out.reply
            return out
        except Exception:  # a bug must cost one query, never the listener
            log.exception("dns: query from %s failed", client_ip)
            return servfail(data)

    def _on_datagram(self, udp: UdpSocket, data: bytes, addr: tuple) -> bytes | None:
        """The slow path of one UDP query, on the UDP thread: the reply to send now, or
        None (dropped, or forwarded: a task on the loop sends the upstream's answer)."""
        decision = self._decide(data, addr[0], udp.network_id, tcp=False)
        if decision is None or isinstance(decision, bytes):
            return decision
        loop = self._loop
        if loop is None or loop.is_closed() or len(self._tasks) >= MAX_INFLIGHT:
            return servfail(data)
        loop.call_soon_threadsafe(lambda: self._spawn(self._relay_udp(udp, addr, decision)))
        return None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay_udp(self, udp: UdpSocket, addr: tuple, fwd: Forward) -> None:
        reply = await self.forward(fwd, tcp=False)
        udp.sendto(reply, addr)

    async def _serve_tcp(
        self,
        network_id: str,
        conns: set[asyncio.StreamWriter],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        if self._tcp_connections >= MAX_TCP_CONNECTIONS:
            writer.close()
            return
        self._tcp_connections += 1
        conns.add(writer)
        try:
            peer = writer.get_extra_info("peername")[0]
            for _ in range(TCP_QUERIES_PER_CONNECTION):
                try:
                    size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), TCP_IDLE), "big")
                    data = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    break
                decision = self._decide(data, peer, network_id, tcp=True)
                if isinstance(decision, Forward):
                    decision = await self.forward(decision, tcp=True)
                if decision is None:
                    break  # no header to answer to: the stream cannot be trusted any more
                writer.write(len(decision).to_bytes(2, "big") + decision)
                await writer.drain()
        except Exception:
            log.debug("dns: tcp connection failed", exc_info=True)
        finally:
            self._tcp_connections -= 1
            conns.discard(writer)
            writer.close()

    # -- forwarding ------------------------------------------------------------------

    def upstream_servers(self) -> list[tuple[str, int]]:
        """The upstreams to try, in order, minus any of our own listeners (a host whose
        resolv.conf points at a gateway would otherwise loop queries forever)."""
        ours = {(addr, self.port) for _, addr in self._listeners}
        out: list[tuple[str, int]] = []
        try:
            texts = self._upstreams()
        except Exception:
            log.exception("dns: could not read the upstream resolvers")
            return out
        for text in texts:
            try:
                server = parse_upstream(text)
            except (InvalidParameter, ValueError):
                log.warning("dns: ignoring upstream %r", text)
                continue
            if server not in ours and server not in out:
                out.append(server)
        return out

    async def forward(self, fwd: Forward, *, tcp: bool) -> bytes:
        """The first upstream's reply to `fwd`, relayed as is; SERVFAIL if none answers."""
        for host, port in self.upstream_servers():
            try:
                exchange = self._exchange_tcp if tcp else self._exchange_udp
                reply = await asyncio.wait_for(exchange(host, port, fwd), self.upstream_timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                log.debug("dns: upstream %s:%d failed for %s: %s", host, port, fwd.qname, exc)
                continue
            if reply is not None:
                return reply
        return servfail(fwd.query) or b""

    async def _exchange_udp(self, host: str, port: int, fwd: Forward) -> bytes | None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            # A connected socket on a fresh random port: the kernel drops datagrams from
            # anyone but the upstream, and the port plus the query ID resist spoofing.
            await loop.sock_connect(sock, (host, port))
            await loop.sock_sendall(sock, fwd.query)
            while True:
                reply = await loop.sock_recv(sock, 65535)
                if _answers(reply, fwd.qid):
                    return reply

    async def _exchange_tcp(self, host: str, port: int, fwd: Forward) -> bytes | None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(len(fwd.query).to_bytes(2, "big") + fwd.query)
            await writer.drain()
            size = int.from_bytes(await reader.readexactly(2), "big")
            reply = await reader.readexactly(size)
            return reply if _answers(reply, fwd.qid) else None
        finally:
            writer.close()


def _answers(reply: bytes, qid: int) -> bool:
    if len(reply) < 12 or len(reply) > 65535:
        return False
    try:
        header = DNSHeader.parse(Buffer(reply[:12]))
    except Exception:
        return False
    return bool(header.qr) and header.id == qid


__all__ = ["Resolver", "parse_upstream", "DNS_PORT"]
