"""Published ports: Docker's `-p` syntax and the host-port allocator.

    parse_port_spec("127.0.0.1:8080:80/udp") -> [PortBinding(...)]
    PortAllocator(ephemeral_range).allocate("tcp", None, 8080) -> 8080

The parser and the allocator's bookkeeping are pure; the only side effect is
`port_in_use`, which tries to bind a socket (injectable, so tests can fake it).
A port is checked against processes only when it is handed out, not on restore.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace

from cnm import portspec
from cnm.errors import Conflict, InternalError, InvalidParameter, Unavailable

PROTOCOLS = portspec.PROTOCOLS
_WILDCARD = {4: "0.0.0.0", 6: "::"}
# libnetwork's types.Protocol is a uint8 (the IP protocol number): on Docker's plugin
# wire a port binding's "Proto" is 6 or 17, not "tcp" or "udp".
PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17}
_PROTOCOL_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 132: "sctp"}


def proto_name(value: object) -> str:
    """A binding's protocol as Docker's wire (6, 17) or people ("tcp", "UDP") write it
    -> "tcp" / "udp". Raises InvalidParameter for anything else."""
    text = str(value).strip().lower()
    name = _PROTOCOL_NAMES.get(int(text), text) if text.isascii() and text.isdigit() and len(text) <= 3 else text
    if name not in PROTOCOLS:
        raise InvalidParameter(
            f"invalid protocol {value!r}" + (f" ({name})" if name != text else "") + ": use tcp or udp"
        )
    return name


@dataclass(frozen=True)
class PortBinding:
    """One `-p` entry. host_port None = an ephemeral port; host_port..host_port_end =
    any free port of that range (Docker's `8000-8010:80`). After allocation host_port
    holds the chosen port and host_port_end is None. host_ip None = all addresses."""

    proto: str
    container_port: int
    host_ip: str | None = None
    host_port: int | None = None
    host_port_end: int | None = None

    def allocated(self, port: int) -> PortBinding:
        return replace(self, host_port=port, host_port_end=None)

    def to_record(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, record: Mapping) -> PortBinding:
        names = {"proto", "container_port", "host_ip", "host_port", "host_port_end"}
        return cls(**{k: v for k, v in record.items() if k in names})

    def __str__(self) -> str:
        ip = f"[{self.host_ip}]" if self.host_ip and ":" in self.host_ip else (self.host_ip or "")
        hp = "" if self.host_port is None else str(self.host_port)
        if self.host_port_end is not None:
            hp += f"-{self.host_port_end}"
        return f"{ip + ':' if ip else ''}{hp + ':' if hp or ip else ''}{self.container_port}/{self.proto}"


# -- parsing (the grammar is cnm.portspec's, shared with the CLI) ---------------------------


def normalize_ip(text: str | None, spec: str = "") -> str | None:
    """None for all addresses (None, '', 0.0.0.0); otherwise the canonical address."""
    return portspec.normalize_ip(text, spec)


def parse_port_spec(spec: str) -> list[PortBinding]:
    """Parse one `-p` value into bindings (several for a range like 8000-8001:80-81).
    Raises InvalidParameter naming what is wrong."""
    return [PortBinding(*b) for b in portspec.parse(spec)]


def parse_port_specs(specs: Iterable[str]) -> list[PortBinding]:
    return [b for spec in specs for b in parse_port_spec(spec)]


# -- the side effect ------------------------------------------------------------------


def port_in_use(proto: str, host_ip: str, port: int) -> bool:
    """True if a process in the current network namespace holds (host_ip, port).
    Binds without SO_REUSEADDR, so a wildcard probe also sees specific-address
    sockets. Raises InvalidParameter if host_ip is not an address of this host."""
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as s:
        if family == socket.AF_INET6:
            # Probe IPv6 alone: IPv4 ports are checked by their own probe.
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            s.bind((host_ip, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            if exc.errno == errno.EADDRNOTAVAIL:
                raise InvalidParameter(f"host IP {host_ip} is not an address of this host") from exc
            if exc.errno == errno.EACCES:
                return False  # privileged port and no privilege: cannot tell; DNAT does not bind
            raise InternalError(f"cannot check host port {port}/{proto} on {host_ip}: {exc.strerror}") from exc
    return False


# -- the allocator ------------------------------------------------------------------


@dataclass(frozen=True)
class _Alloc:
    proto: str
    family: int
    host_ip: str | None  # None = all addresses of the family
    port: int
    owner: str


def _where(host_ip: str | None) -> tuple[int, str | None]:
    """(family, address or None for all addresses of that family)."""
    ip = normalize_ip(host_ip)
    if ip == "::":
        return 6, None
    return (6 if ip is not None and ":" in ip else 4), ip


class PortAllocator:
    """Host ports this daemon has published. Thread-safe.

    A wildcard binding (no host IP) conflicts with every binding of the same
    family, protocol and port, and vice versa. IPv4 and IPv6 are separate."""

    def __init__(
        self,
        ephemeral_range: Callable[[], tuple[int, int]],  # e.g. cnm.osl.sysctl.local_port_range
        in_use: Callable[[str, str, int], bool] = port_in_use,
    ) -> None:
        self._range = ephemeral_range
        self._in_use = in_use
        self._allocs: dict[tuple[str, int, str | None, int], _Alloc] = {}
        self._cursor: int | None = None
        self._lock = threading.Lock()

    def _conflict(self, proto: str, family: int, host_ip: str | None, port: int) -> _Alloc | None:
        for a in self._allocs.values():
            if (a.proto, a.family, a.port) == (proto, family, port) and (
                a.host_ip is None or host_ip is None or a.host_ip == host_ip
            ):
                return a
        return None

    def _free(self, proto: str, family: int, host_ip: str | None, port: int) -> bool:
        return self._conflict(proto, family, host_ip, port) is None and not self._in_use(
            proto, host_ip or _WILDCARD[family], port
        )

    def _take(self, proto: str, family: int, host_ip: str | None, port: int, owner: str) -> int:
        self._allocs[(proto, family, host_ip, port)] = _Alloc(proto, family, host_ip, port, owner)
        return port

    def allocate(
        self,
        proto: str,
        host_ip: str | None = None,
        port: int | None = None,
        port_end: int | None = None,
        owner: str = "",
    ) -> int:
        """Reserve a host port and return it. port None = the next free ephemeral
        port; port..port_end = the first free port of that range. Raises Conflict if
        the port is ours already or bound by a process, Unavailable if no ephemeral
        port is left, InvalidParameter for a bad protocol, port or address."""
        if proto not in PROTOCOLS:
            raise InvalidParameter(f"invalid protocol {proto!r}: use tcp or udp")
        family, host_ip = _where(host_ip)
        where = host_ip or _WILDCARD[family]
        with self._lock:
            if port is None:
                return self._take(proto, family, host_ip, self._ephemeral(proto, family, host_ip), owner)
            for p in (port, port_end or port):
                if not 1 <= p <= 65535:
                    raise InvalidParameter(f"invalid host port {p}: must be 1-65535")
            if port_end is not None and port_end != port:
                for p in range(port, port_end + 1):
                    if self._free(proto, family, host_ip, p):
                        return self._take(proto, family, host_ip, p, owner)
                raise Conflict(f"no free host port in {port}-{port_end}/{proto} on {where}; choose another range")
            if self._conflict(proto, family, host_ip, port) is not None:
                raise Conflict(f"host port {port}/{proto} is already allocated on {where}; choose another host port")
            if self._in_use(proto, where, port):
                raise Conflict(
                    f"host port {port}/{proto} is in use by another process on {where}; choose another host port"
                )
            return self._take(proto, family, host_ip, port, owner)

    def _ephemeral(self, proto: str, family: int, host_ip: str | None) -> int:
        lo, hi = self._range()
        if not 1 <= lo <= hi <= 65535:
            raise InternalError(f"bad ephemeral port range {lo}-{hi}")
        start = self._cursor if self._cursor is not None and lo <= self._cursor <= hi else lo
        # Round-robin from the last pick, like Docker: a just-released port is not
        # handed out again at once.
        for i in range(hi - lo + 1):
            p = lo + (start - lo + i) % (hi - lo + 1)
            if self._free(proto, family, host_ip, p):
                self._cursor = p + 1
                return p
        raise Unavailable(f"no free host port for {proto} in the ephemeral range {lo}-{hi}")

    def release(self, proto: str, host_ip: str | None, port: int) -> None:
        """Give the port back. Idempotent."""
        family, ip = _where(host_ip)
        with self._lock:
            self._allocs.pop((proto, family, ip, port), None)

    def release_owner(self, owner: str) -> int:
        """Release every port of one owner (an endpoint); returns how many."""
        with self._lock:
            keys = [k for k, a in self._allocs.items() if a.owner == owner]
            for k in keys:
                del self._allocs[k]
            return len(keys)

    def restore(self, bindings: Iterable[PortBinding], owner: str = "") -> None:
        """After a daemon restart: mark stored, already-allocated bindings as ours,
        without probing (our own DNAT holds them, not a socket). Idempotent."""
        with self._lock:
            for b in bindings:
                if b.host_port is None:
                    continue
                family, ip = _where(b.host_ip)
                self._take(b.proto, family, ip, b.host_port, owner)

    def allocations(self) -> list[tuple[str, str, int, str]]:
        """(proto, host ip, port, owner), sorted. For inspect and tests."""
        with self._lock:
            return sorted((a.proto, a.host_ip or _WILDCARD[a.family], a.port, a.owner) for a in self._allocs.values())
