"""The resolver's name table: which names each container may see, and their records.

Pure and thread-safe: plain dicts behind one lock, no sockets, no dnslib. The daemon
calls `add`/`remove` synchronously inside its container operations (from worker
threads) and the resolver calls `lookup`/`ptr` from the event loop, so a change is
visible to the very next query.

Visibility (Docker's rule for user-defined networks): a client sees the names of every
endpoint on every network its container is attached to. The client is identified by
its source address, looked up first among the endpoints of the network whose listener
received the query, then among all endpoints; the container's networks follow from its
endpoints. A source address we do not know (the host itself, say) sees the names of the
listener's network only — it can reach that network anyway.

Names of an endpoint, each matched case-insensitively with or without a trailing dot:
the container name, its aliases on that network, the container ID's 12-character
prefix, and each of those suffixed with `.<network name>`. When a name exists on the
listener's network, only that network's records answer it (the addresses reachable
through the interface the query came in on, as Docker prefers the querying endpoint's
network); otherwise the records of all the client's networks that have it.
"""

from __future__ import annotations

import ipaddress
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass

from cnm.addresses import address_text

SHORT_ID = 12
A, AAAA, PTR, ANY = "A", "AAAA", "PTR", "ANY"


@dataclass(frozen=True)
class Entry:
    network_id: str
    network_name: str
    endpoint_id: str
    container_id: str | None
    name: str
    aliases: tuple[str, ...]
    ipv4: str | None
    ipv6: str | None
    publish: bool = True

    @property
    def owner(self) -> str:
        """Who the endpoint belongs to: its container, or itself when it has none."""
        return self.container_id or f"endpoint:{self.endpoint_id}"

    def names(self) -> list[str]:
        """Every normalised name this endpoint answers to on its network."""
        if not self.publish:
            return []
        base = [self.name, *self.aliases]
        if self.container_id and len(self.container_id) >= SHORT_ID:
            base.append(self.container_id[:SHORT_ID])
        plain = [normalize(n) for n in base if n and normalize(n)]
        suffix = normalize(self.network_name)
        out = dict.fromkeys(plain + ([f"{n}.{suffix}" for n in plain] if suffix else []))
        return list(out)


@dataclass(frozen=True)
class Answer:
    rtype: str  # "A", "AAAA" or "PTR"
    value: str  # an address, or a name without trailing dot


def normalize(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _plain_ip(address: str | None) -> str | None:
    """'172.18.0.2/16' or '172.18.0.2' -> canonical '172.18.0.2'; None/'' -> None."""
    if not address:
        return None
    return address_text(address.split("%")[0])  # no zone index: answers carry none


def reverse_name_to_ip(qname: str) -> str | None:
    """'2.0.18.172.in-addr.arpa.' -> '172.18.0.2'; a full ip6.arpa nibble name -> the
    IPv6 address; anything else (partial names, garbage) -> None."""
    labels = normalize(qname).split(".")
    try:
        if labels[-2:] == ["in-addr", "arpa"] and len(labels) == 6:
            octets = labels[:4][::-1]
            if all(o.isdigit() and str(int(o)) == o for o in octets):
                return str(ipaddress.IPv4Address(".".join(octets)))
        if labels[-2:] == ["ip6", "arpa"] and len(labels) == 34:
            nibbles = labels[:32][::-1]
            if all(len(n) == 1 and n in "0123456789abcdef" for n in nibbles):
                groups = ["".join(nibbles[i : i + 4]) for i in range(0, 32, 4)]
                return str(ipaddress.IPv6Address(":".join(groups)))
    except ValueError:
        return None
    return None


class NameTable:
    """Endpoints by network, name and address; answers lookups for one client.

    Every method is safe to call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._by_name: dict[str, dict[str, list[str]]] = {}  # network -> name -> [endpoint]
        self._by_addr: dict[str, list[str]] = {}  # address -> [endpoint]
        self._by_owner: dict[str, list[str]] = {}  # container -> [endpoint]
        self._name_refs: dict[str, int] = {}  # name -> endpoints using it
        self._rr: dict[tuple[str, str], itertools.count] = {}  # (name, type) -> rotation
        # Bumped by every change, so a cache of built replies (cnm.dns.fastpath) knows
        # when to drop them; read without the lock (an int read is atomic).
        self.generation = 0

    # -- changes ---------------------------------------------------------------------

    def add(
        self,
        network_id: str,
        network_name: str,
        endpoint_id: str,
        container_id: str | None,
        name: str,
        aliases: list[str] | tuple[str, ...] | None,
        ipv4: str | None,
        ipv6: str | None,
        *,
        publish: bool = True,
    ) -> None:
        """Register (or replace, so idempotent) one endpoint. Addresses may carry a prefix
        length ('172.18.0.2/16'). Raises ValueError for an unparsable address.

        publish=False: the endpoint only identifies its container as a client (queries
        from its address see the container's networks) and answers to no name — for an
        overlay container's endpoint on the local gateway bridge, say."""
        entry = Entry(
            network_id,
            network_name,
            endpoint_id,
            container_id,
            name,
            tuple(aliases or ()),
            _plain_ip(ipv4),
            _plain_ip(ipv6),
            publish,
        )
        with self._lock:
            self._remove_locked(endpoint_id)
            self.generation += 1
            self._entries[endpoint_id] = entry
            names = self._by_name.setdefault(network_id, {})
            for n in entry.names():
                names.setdefault(n, []).append(endpoint_id)
                self._name_refs[n] = self._name_refs.get(n, 0) + 1
            for ip in (entry.ipv4, entry.ipv6):
                if ip:
                    self._by_addr.setdefault(ip, []).append(endpoint_id)
            self._by_owner.setdefault(entry.owner, []).append(endpoint_id)

    def remove(self, endpoint_id: str) -> bool:
        """Forget one endpoint; False when it was not there (idempotent)."""
        with self._lock:
            removed = self._remove_locked(endpoint_id)
            if removed:
                self.generation += 1
            return removed

    def remove_network(self, network_id: str) -> int:
        """Forget every endpoint of a network; returns how many."""
        with self._lock:
            ids = [e.endpoint_id for e in self._entries.values() if e.network_id == network_id]
            for eid in ids:
                self._remove_locked(eid)
            self._by_name.pop(network_id, None)
            self.generation += 1
            return len(ids)

    def _remove_locked(self, endpoint_id: str) -> bool:
        entry = self._entries.pop(endpoint_id, None)
        if entry is None:
            return False
        names = self._by_name.get(entry.network_id, {})
        for n in entry.names():
            _discard(names, n, endpoint_id)
            left = self._name_refs.get(n, 1) - 1
            if left <= 0:
                self._name_refs.pop(n, None)
                for t in (A, AAAA):
                    self._rr.pop((n, t), None)
            else:
                self._name_refs[n] = left
        if not names:
            self._by_name.pop(entry.network_id, None)
        for ip in (entry.ipv4, entry.ipv6):
            if ip:
                _discard(self._by_addr, ip, endpoint_id)
        _discard(self._by_owner, entry.owner, endpoint_id)
        return True

    # -- queries ---------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def networks_of(self, client_ip: str, listener_network_id: str | None = None) -> list[str]:
        """The networks whose names `client_ip` may see, listener's network first.
        Unknown clients see the listener's network only (empty without one)."""
        with self._lock:
            return self._networks_locked(_canon(client_ip), listener_network_id)

    def _networks_locked(self, client_ip: str | None, listener: str | None) -> list[str]:
        eps = [self._entries[e] for e in self._by_addr.get(client_ip or "", ())]
        mine = [e for e in eps if e.network_id == listener] or eps
        if not mine:
            return [listener] if listener else []
        owners = {e.owner for e in mine}
        nets = {self._entries[eid].network_id for o in owners for eid in self._by_owner.get(o, ())}
        ordered = sorted(nets)
        if listener in nets:
            ordered.remove(listener)
            ordered.insert(0, listener)
        return ordered

    def lookup(
        self, client_ip: str, listener_network_id: str | None, qname: str, qtype: str, *, turn: int | None = None
    ) -> list[Answer] | None:
        """Records of `qname` for this client: None when the name is not ours (forward
        it), [] when it is ours but has no record of `qtype` (NODATA). A/AAAA answers
        rotate by one position per query of the same name and type (round robin);
        `turn` asks for a given position instead, without moving the rotation."""
        return self._lookup(client_ip, listener_network_id, qname, qtype, turn)[0]

    def rotation(
        self, client_ip: str, listener_network_id: str | None, qname: str, qtype: str
    ) -> tuple[int, Callable[[], int] | None]:
        """How the answer to this query rotates: (1, None) when it is always the same,
        (n, next_turn) when it cycles through n orders and next_turn() moves the shared
        rotation on (what lookup() without `turn` does); (0, None) when it rotates in
        two ways at once (ANY with several A and several AAAA: not reusable)."""
        spins = self._lookup(client_ip, listener_network_id, qname, qtype, 0)[1]
        if not spins:
            return 1, None
        if len(spins) > 1:
            return 0, None
        key, n = spins[0]
        with self._lock:
            counter = self._rr.setdefault(key, itertools.count())
        return n, counter.__next__

    def _lookup(
        self, client_ip: str, listener_network_id: str | None, qname: str, qtype: str, turn: int | None
    ) -> tuple[list[Answer] | None, list[tuple[tuple[str, str], int]]]:
        name = normalize(qname)
        qtype = qtype.upper()
        spins: list[tuple[tuple[str, str], int]] = []
        with self._lock:
            found: list[Entry] = []
            for net in self._networks_locked(_canon(client_ip), listener_network_id):
                eids = self._by_name.get(net, {}).get(name)
                if eids:
                    found.extend(self._entries[e] for e in eids)
                    if net == listener_network_id:
                        break  # the listener's network wins outright
            if not found:
                return None, spins
            out: list[Answer] = []
            for rtype, attr in ((A, "ipv4"), (AAAA, "ipv6")):
                if qtype not in (rtype, ANY):
                    continue
                addrs = list(dict.fromkeys(getattr(e, attr) for e in found if getattr(e, attr)))
                if len(addrs) > 1:
                    spins.append(((name, rtype), len(addrs)))
                    step = turn if turn is not None else next(self._rr.setdefault((name, rtype), itertools.count()))
                    step %= len(addrs)
                    addrs = addrs[step:] + addrs[:step]
                out.extend(Answer(rtype, a) for a in addrs)
            return out, spins

    def ptr(self, client_ip: str, listener_network_id: str | None, qname: str) -> list[Answer] | None:
        """PTR for a reverse name ('2.0.18.172.in-addr.arpa'): `<container name>.<network>`
        of each visible endpoint with that address; None when none is visible."""
        ip = reverse_name_to_ip(qname)
        if ip is None:
            return None
        with self._lock:
            nets = self._networks_locked(_canon(client_ip), listener_network_id)
            hits = [self._entries[e] for e in self._by_addr.get(ip, ())]
            hits = [e for e in hits if e.network_id in nets and e.name and e.publish]
            if not hits:
                return None
            hits.sort(key=lambda e: nets.index(e.network_id))
            names = dict.fromkeys(f"{e.name}.{e.network_name}" if e.network_name else e.name for e in hits)
            return [Answer(PTR, n) for n in names]

    def addresses(self) -> set[str]:
        """Every registered address (for tests and diagnostics)."""
        with self._lock:
            return set(self._by_addr)


def _canon(ip: str) -> str | None:
    try:
        return _plain_ip(ip)
    except ValueError:
        return None


def _discard(index: dict[str, list[str]], key: str, value: str) -> None:
    values = index.get(key)
    if values is None:
        return
    try:
        values.remove(value)
    except ValueError:
        pass
    if not values:
        del index[key]
