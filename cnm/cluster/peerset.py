"""What a host holds of the cluster's endpoints, and what changes when it learns more. Pure.

A host subscribes to the networks it has endpoints on (cnm.cluster.sync) and holds the
remote endpoints (peers) of those networks only: by network and endpoint id, plus how
many peers it holds on each remote host (VTEP). Every change returns the effects the
host must carry out, in this order:

    NodeUp(vtep)    before the first peer held on that host: the VXLAN filter must
                    accept the host before traffic to its endpoints can flow
    PeerUp(rec)     a peer new or changed (program its FDB/neighbour entries, its names)
    PeerDown(rec)   a peer gone
    NodeDown(vtep)  after the last peer held on that host went

A record repeated unchanged (a watch replaying after a resync) changes nothing. The
records are the store's JSON values; the strings every record of a network repeats
(network id, VTEP) are interned, so holding 50,000 peers costs one copy of each.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeUp:
    vtep: str


@dataclass(frozen=True)
class PeerUp:
    peer: dict


@dataclass(frozen=True)
class PeerDown:
    peer: dict


@dataclass(frozen=True)
class NodeDown:
    vtep: str


Effect = NodeUp | PeerUp | PeerDown | NodeDown


def _slim(network_id: str, rec: dict) -> dict:
    # Interned keys and shared strings: JSON decoding makes fresh ones for every record.
    out = {sys.intern(k): v for k, v in rec.items()}
    out["network_id"] = sys.intern(network_id)
    if isinstance(out.get("vtep"), str):
        out["vtep"] = sys.intern(out["vtep"])
    return out


class PeerSet:
    """Peers of the subscribed networks. Not thread-safe (the owner locks)."""

    def __init__(self, own_vtep: str) -> None:
        self.own_vtep = own_vtep
        self._peers: dict[str, dict[str, dict]] = {}  # network -> endpoint id -> record
        self._hosts: dict[str, int] = {}  # vtep -> peers held on it

    # --- queries ---------------------------------------------------------------------

    def networks(self) -> list[str]:
        return list(self._peers)

    def peers(self, network_id: str) -> list[dict]:
        return list(self._peers.get(network_id, {}).values())

    def vteps(self) -> list[str]:
        return sorted(self._hosts)

    def __len__(self) -> int:
        return sum(len(p) for p in self._peers.values())

    def holds(self, network_id: str) -> bool:
        return network_id in self._peers

    # --- changes ---------------------------------------------------------------------

    def open(self, network_id: str) -> None:
        """Start holding `network_id` (no peers yet). Idempotent."""
        self._peers.setdefault(sys.intern(network_id), {})

    def put(self, network_id: str, rec: dict) -> list[Effect]:
        """A record of `network_id` was written. Ignored for a network not held, for
        a record without an endpoint id, and for one of this host's own endpoints
        (which takes back a remote one of that id, should there be one)."""
        eid = rec.get("endpoint_id")
        net = self._peers.get(network_id)
        if net is None or not isinstance(eid, str) or not eid:
            return []
        if rec.get("vtep") == self.own_vtep:
            return self.delete(network_id, eid)
        old = net.get(eid)
        new = _slim(network_id, rec)
        if old == new:
            return []
        net[eid] = new
        out: list[Effect] = []
        vtep = new.get("vtep")
        if old is None or old.get("vtep") != vtep:
            out += self._host_up(vtep)
        out.append(PeerUp(new))
        if old is not None and old.get("vtep") != vtep:
            out += self._host_down(old.get("vtep"))
        return out

    def delete(self, network_id: str, endpoint_id: str) -> list[Effect]:
        old = self._peers.get(network_id, {}).pop(endpoint_id, None)
        if old is None:
            return []
        return [PeerDown(old), *self._host_down(old.get("vtep"))]

    def reconcile(self, network_id: str, listing: Iterable[dict]) -> list[Effect]:
        """Make the held peers of `network_id` exactly those of `listing` (a fresh
        read of its records): removals first, then additions and changes."""
        if network_id not in self._peers:
            return []
        wanted: dict[str, dict] = {}
        for rec in listing:
            eid = rec.get("endpoint_id")
            if isinstance(eid, str) and eid and rec.get("vtep") != self.own_vtep:
                wanted[eid] = rec
        out: list[Effect] = []
        for eid in [e for e in self._peers[network_id] if e not in wanted]:
            out += self.delete(network_id, eid)
        for rec in wanted.values():
            out += self.put(network_id, rec)
        return out

    def drop(self, network_id: str) -> list[Effect]:
        """Stop holding `network_id`: every peer it brought goes."""
        net = self._peers.get(network_id)
        if net is None:
            return []
        out: list[Effect] = []
        for eid in list(net):
            out += self.delete(network_id, eid)
        del self._peers[network_id]
        return out

    def _host_up(self, vtep: object) -> list[Effect]:
        if not isinstance(vtep, str) or not vtep:
            return []
        n = self._hosts.get(vtep, 0)
        self._hosts[vtep] = n + 1
        return [NodeUp(vtep)] if n == 0 else []

    def _host_down(self, vtep: object) -> list[Effect]:
        if not isinstance(vtep, str) or vtep not in self._hosts:
            return []
        n = self._hosts[vtep] - 1
        if n > 0:
            self._hosts[vtep] = n
            return []
        del self._hosts[vtep]
        return [NodeDown(vtep)]
