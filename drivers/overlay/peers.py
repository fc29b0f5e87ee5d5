"""The peer table: remote endpoints of each overlay network, and the kernel entries
they call for. Pure: no kernel, no I/O.

A peer is a remote endpoint: its IP and MAC, and the underlay address (VTEP) of the
host it lives on. Each becomes a permanent neighbour entry (IP -> MAC, answered by the
VXLAN device's ARP proxy) and an FDB entry (MAC -> VTEP). The store's watch may deliver
events in any order (an endpoint's address reused before the old endpoint's delete
arrives, peers of a network not created here yet), so the table keeps every peer by
endpoint id and the driver asks it which entry SHOULD exist for a given IP or MAC:
the most recently added peer claiming it wins, and an entry goes only when no peer
claims it any more.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from cnm.errors import InvalidParameter


@dataclass(frozen=True, slots=True)
class Peer:
    network_id: str
    endpoint_id: str
    ip: str  # plain address, no prefix
    mac: str  # lower-case, colon-separated
    vtep: str  # the remote host's underlay IPv4 address
    ip6: str | None = None  # its IPv6 address on a dual-stack network (a second neighbour entry)

    @property
    def ips(self) -> set[str]:
        return {self.ip} | ({self.ip6} if self.ip6 else set())


def _text(data: Mapping[str, object], key: str, kind: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidParameter(f"{kind} event needs a non-empty string {key!r}, got {value!r}")
    return value


def parse_mac(value: str) -> str:
    parts = value.strip().lower().replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        raise InvalidParameter(f"invalid MAC address {value!r}: want six hex pairs, e.g. 02:42:0a:00:00:02")
    return ":".join(parts)


def parse_ipv4(value: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value.strip()))
    except ValueError:
        raise InvalidParameter(f"invalid {what} {value!r}: want an IPv4 address") from None


def parse_peer(data: Mapping[str, object]) -> Peer:
    """The discover payload {"network_id", "endpoint_id", "ip" (prefix optional), "mac",
    "vtep", and optionally "ip6"} -> Peer. Raises InvalidParameter."""
    raw_ip = _text(data, "ip", "peer")
    try:
        ip = str(ipaddress.ip_interface(raw_ip.strip()).ip)
    except ValueError:
        raise InvalidParameter(f"invalid peer address {raw_ip!r}: want an IP address, prefix optional") from None
    ip6 = None
    if data.get("ip6"):
        raw6 = _text(data, "ip6", "peer")
        try:
            ip6 = str(ipaddress.IPv6Interface(raw6.strip()).ip)
        except ValueError:
            raise InvalidParameter(
                f"invalid peer IPv6 address {raw6!r}: want an IPv6 address, prefix optional"
            ) from None
    return Peer(
        network_id=_text(data, "network_id", "peer"),
        endpoint_id=_text(data, "endpoint_id", "peer"),
        ip=ip,
        mac=parse_mac(_text(data, "mac", "peer")),
        vtep=parse_ipv4(_text(data, "vtep", "peer"), "peer VTEP address"),
        ip6=ip6,
    )


def parse_peer_key(data: Mapping[str, object]) -> tuple[str, str]:
    """(network_id, endpoint_id) of a discover_delete payload: the rest is not needed."""
    return _text(data, "network_id", "peer"), _text(data, "endpoint_id", "peer")


def parse_node(data: Mapping[str, object]) -> str:
    """{"address": "a.b.c.d"} -> the node's VTEP address."""
    return parse_ipv4(_text(data, "address", "node"), "node address")


class PeerTable:
    """Remote peers by network and endpoint id, indexed by the IPs and MACs they claim,
    so a lookup costs the claimants of one address (one, but for a reuse race), not a
    scan of the network: a full resync of P peers is O(P), not O(P^2). Each index entry
    is a tuple of claimants, newest last. Not thread-safe (the driver locks)."""

    def __init__(self) -> None:
        self._peers: dict[str, dict[str, Peer]] = {}  # network -> endpoint -> peer, add order
        self._by_ip: dict[str, dict[str, tuple[str, ...]]] = {}  # network -> ip -> endpoints claiming it
        self._by_mac: dict[str, dict[str, tuple[str, ...]]] = {}  # network -> mac -> endpoints claiming it

    def add(self, peer: Peer) -> Peer | None:
        """Record (or update) a peer; returns the previous version for that endpoint."""
        old = self.remove(peer.network_id, peer.endpoint_id)
        nid, eid = peer.network_id, peer.endpoint_id
        self._peers.setdefault(nid, {})[eid] = peer
        by_ip = self._by_ip.setdefault(nid, {})
        for ip in peer.ips:
            by_ip[ip] = by_ip.get(ip, ()) + (eid,)
        by_mac = self._by_mac.setdefault(nid, {})
        by_mac[peer.mac] = by_mac.get(peer.mac, ()) + (eid,)
        return old

    def remove(self, network_id: str, endpoint_id: str) -> Peer | None:
        net = self._peers.get(network_id)
        old = net.pop(endpoint_id, None) if net is not None else None
        if old is None:
            return None
        if not net:
            del self._peers[network_id]
        for ip in old.ips:
            _unclaim(self._by_ip, network_id, ip, endpoint_id)
        _unclaim(self._by_mac, network_id, old.mac, endpoint_id)
        return old

    def peers(self, network_id: str) -> list[Peer]:
        """In the order they were (last) added."""
        return list(self._peers.get(network_id, {}).values())

    def _winner(self, network_id: str, index: dict[str, dict[str, tuple[str, ...]]], key: str) -> Peer | None:
        claims = index.get(network_id, {}).get(key)
        return self._peers[network_id][claims[-1]] if claims else None  # the newest claimant

    def neighbour_for(self, network_id: str, ip: str) -> str | None:
        """The MAC the neighbour entry for `ip` should carry; None = no entry."""
        p = self._winner(network_id, self._by_ip, ip)
        return p.mac if p else None

    def fdb_for(self, network_id: str, mac: str) -> str | None:
        """The VTEP the FDB entry for `mac` should point to; None = no entry."""
        p = self._winner(network_id, self._by_mac, mac)
        return p.vtep if p else None

    def desired(self, network_id: str) -> tuple[dict[str, str], dict[str, str]]:
        """All entries the network needs: ({ip: mac}, {mac: vtep})."""
        neigh: dict[str, str] = {}
        fdb: dict[str, str] = {}
        for p in self.peers(network_id):  # later peers overwrite earlier ones
            for ip in p.ips:
                neigh[ip] = p.mac
            fdb[p.mac] = p.vtep
        return neigh, fdb


def _unclaim(index: dict[str, dict[str, tuple[str, ...]]], network_id: str, key: str, endpoint_id: str) -> None:
    net = index.get(network_id)
    claims = net.get(key) if net is not None else None
    if net is None or claims is None:
        return
    left = tuple(e for e in claims if e != endpoint_id)
    if left:
        net[key] = left
    else:
        del net[key]
        if not net:
            del index[network_id]
