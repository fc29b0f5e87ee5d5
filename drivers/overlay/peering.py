"""The overlay driver's peers and nodes: discovery events (a remote endpoint, a cluster
host) turned into neighbour and FDB entries on each network's VXLAN device and into
the VXLAN source filter.

A mixin of drivers.overlay.driver.OverlayDriver (kept apart: the driver is long
enough); every method runs under the driver's lock.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from drivers.overlay.kernel import (
    LocalNetwork,
)
from drivers.overlay.peers import Peer, PeerTable, parse_node, parse_peer, parse_peer_key

PEER, NODE = "peer", "node"  # discovery kinds (Docker's DiscoveryType, by name)


class OverlayPeers:
    _lock: threading.RLock
    _networks: dict[str, LocalNetwork]
    _nodes: set[str]
    _peers: PeerTable
    advertise_addr: str

    if TYPE_CHECKING:  # OverlayDriver's own

        def _sync_filter(self, extra: bool = False) -> None: ...

    def discover_new(self, kind: str, data: Mapping[str, object]) -> None:
        """kind "peer": {"network_id", "endpoint_id", "ip", "mac", "vtep", "ip6"?} -> neighbour
        and FDB entries on the network's VXLAN device (now, or when the network is
        created here). Peers on this host (vtep == advertise_addr) are skipped.
        kind "node": {"address"} -> a VTEP the filter accepts VXLAN from.
        Other kinds are ignored (as Docker's overlay does). Idempotent."""
        with self._lock:
            if kind == PEER:
                self._peer_add(parse_peer(data))
            elif kind == NODE:
                address = parse_node(data)
                if address not in self._nodes:
                    self._nodes.add(address)
                    self._refresh_filter()

    def discover_delete(self, kind: str, data: Mapping[str, object]) -> None:
        """Forget a peer (by network and endpoint id) or a node. Idempotent."""
        with self._lock:
            if kind == PEER:
                network_id, endpoint_id = parse_peer_key(data)
                old = self._peers.remove(network_id, endpoint_id)
                if old is not None:
                    self._sync_entries(network_id, old.ips, {old.mac})
            elif kind == NODE:
                address = parse_node(data)
                if address in self._nodes:
                    self._nodes.discard(address)
                    self._refresh_filter()

    def _refresh_filter(self) -> None:
        if self._networks:
            self._sync_filter()

    def _peer_add(self, peer: Peer) -> None:
        if peer.vtep == self.advertise_addr:
            # One of our own endpoints: reachable on the bridge, no entries needed.
            old = self._peers.remove(peer.network_id, peer.endpoint_id)
        else:
            old = self._peers.add(peer)
        ips = peer.ips | (old.ips if old else set())
        macs = {peer.mac} | ({old.mac} if old else set())
        self._sync_entries(peer.network_id, ips, macs)

    def _sync_entries(self, network_id: str, ips: set[str], macs: set[str]) -> None:
        """Make the kernel match the table for these IPs and MACs (FDB first, so the
        ARP proxy never answers for a MAC the device cannot reach yet)."""
        net = self._networks.get(network_id)
        if net is None:
            return  # programmed when the network is created
        for mac in sorted(macs):
            vtep = self._peers.fdb_for(network_id, mac)
            if vtep:
                net.nl.fdb_replace(net.vxlan, mac, vtep)
            else:
                net.nl.fdb_delete(net.vxlan, mac)
        for ip in sorted(ips):
            owner = self._peers.neighbour_for(network_id, ip)
            if owner:
                net.nl.neigh_replace(net.vxlan, ip, owner)
            else:
                net.nl.neigh_delete(net.vxlan, ip)

    def _program_all_peers(self, net: LocalNetwork) -> None:
        neigh, fdb = self._peers.desired(net.id)
        for mac, vtep in sorted(fdb.items()):
            net.nl.fdb_replace(net.vxlan, mac, vtep)
        for ip, mac in sorted(neigh.items()):
            net.nl.neigh_replace(net.vxlan, ip, mac)
