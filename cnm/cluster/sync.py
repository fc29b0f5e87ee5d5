"""Keeps this host in step with the cluster store (etcd).

What lives where:
    network/<id>, netname/<name>   global networks (written by the host that creates one)
    vni/<n>                        VXLAN ids in use (cnm.cluster.vni)
    nodes/<vtep>                   one key per live host, on that host's lease
    peers/<network>/<endpoint>     one key per endpoint on a global network: address, MAC,
                                   the host's VTEP, names for DNS — on the owner's lease

Every daemon watches network/, peers/ and nodes/ and programs its kernel from the
events (drivers' discover_new/discover_delete, networks built or removed). A watch
that loses history (compaction, outage at start) triggers a full resync, which
reconciles against a fresh listing: no missed events, no stale peers. The daemon's own
peers and node key are published on its lease, so they vanish from the other hosts
when this host does; after a lease is lost they are published again on the new one.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from cnm.cluster import vni as vnis
from cnm.cluster.lease import NodeLease
from cnm.driverapi import Driver
from cnm.errors import CNMError, Unavailable
from cnm.model import Endpoint, Network
from cnm.store import WatchEvent

if TYPE_CHECKING:
    from cnm.store.etcd import EtcdStore

log = logging.getLogger(__name__)

NETWORKS, PEERS, NODES = "network/", "peers/", "nodes/"
RETRY_SECONDS = 2.0


class DriverLookup(Protocol):
    def get(self, name: str) -> Driver: ...


class ClusterHost(Protocol):
    """What the sync asks of this host's controller (cnm.controller.Controller)."""

    @property
    def drivers(self) -> DriverLookup: ...
    def list_networks(self) -> list[Network]: ...
    def get_network(self, ref: str) -> Network: ...
    def adopt_remote_network(self, record: dict) -> Network | None: ...
    def forget_remote_network(self, network_id: str) -> None: ...


class RemoteNames(Protocol):
    """Names of other hosts' endpoints for the embedded DNS (cnm.naming.ServiceDiscovery)."""

    def remote_endpoint_up(self, net: Network, rec: dict) -> None: ...
    def remote_endpoint_down(self, endpoint_id: str) -> None: ...


class ClusterSync:
    def __init__(self, controller: ClusterHost, store: EtcdStore, advertise: str, *, ttl: int = 10,
                 discovery: RemoteNames | None = None) -> None:
        self.ctl = controller
        self.store = store
        self.advertise = advertise
        self.ttl = ttl
        self.discovery = discovery                  # cnm.naming.ServiceDiscovery, for remote names
        self.lease: NodeLease | None = None
        self._lock = threading.RLock()
        self._peers: dict[str, dict] = {}           # endpoint id -> record (other hosts' endpoints)
        self._nodes: set[str] = set()
        self._published: dict[str, tuple[str, dict]] = {}   # our endpoint id -> (key, record)
        self._withdraw: set[str] = set()                     # keys to delete once etcd answers
        # Resync (a listing) and watch events (from three threads) must not interleave:
        # a listing taken before a delete event would otherwise re-add the deleted peer.
        self._apply = threading.RLock()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._cancels: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None

    # --------------------------------------------------------------- life
    def start(self) -> None:
        self.lease = NodeLease(self.store, self.ttl, on_new_lease=lambda _id: self._dirty.set())
        for prefix, handler in ((NETWORKS, self._on_network), (PEERS, self._on_peer), (NODES, self._on_node)):
            self._cancels.append(self.store.watch(prefix, handler, resync=self.resync))
        self._dirty.set()
        self._thread = threading.Thread(target=self._run, name="cluster-sync", daemon=True)
        self._thread.start()
        try:
            self.resync()
        except CNMError as exc:
            log.warning("cluster store not reachable yet (%s); will resync when it is", exc)

    def close(self) -> None:
        self._stop.set()
        for cancel in self._cancels:
            cancel()
        if self._thread is not None:
            self._thread.join(5)
        if self.lease is not None:
            # Not revoked: our containers keep running after the daemon stops, so our
            # peers stay published until the lease expires (a restart renews them).
            self.lease.close(revoke=False)

    def _run(self) -> None:
        """Publish our node key and peers whenever they may be missing (first start,
        new lease after an outage, a failed publish), retrying until etcd answers."""
        while not self._stop.is_set():
            if self._dirty.wait(RETRY_SECONDS) or self._withdraw:
                # Cleared before the work: a request made while it runs is not lost.
                self._dirty.clear()
                try:
                    self._publish_all()
                    self._withdraw_all()
                except CNMError as exc:
                    self._dirty.set()
                    log.info("cluster: publishing this host failed (%s); retrying", exc)
                    self._stop.wait(RETRY_SECONDS)
            elif self._needs_resync:
                try:
                    self.resync()
                except CNMError:
                    pass

    _needs_resync = False

    # ------------------------------------------------------ allocation
    def allocate_network(self, net: Network) -> dict[str, str]:
        """Cluster resources a new global network needs (a VNI for overlay)."""
        if net.driver != "overlay":
            return {}
        return {vnis.VNI_OPTION: str(vnis.allocate(self.store, net.id))}

    def release_network(self, net: Network) -> None:
        value = net.options.get(vnis.VNI_OPTION)
        if value and value.isdigit():
            try:
                vnis.release(self.store, int(value))
            except CNMError as exc:
                log.warning("could not release VNI %s: %s", value, exc)

    def find_network(self, ref: str) -> dict | None:
        """A global network by name or full ID straight from the store (for a lookup
        that races the watch). None when unknown or the store does not answer — asked
        only while our lease is healthy, so an etcd outage costs no timeout here."""
        if self.lease is None or not self.lease.healthy:
            return None
        try:
            named = self.store.get(f"netname/{ref}")
            nid = named.value.get("id") if named else ref
            kv = self.store.get(f"{NETWORKS}{nid}")
            return kv.value if kv else None
        except CNMError:
            return None

    def remote_endpoints(self, network_id: str) -> list[str]:
        with self._lock:
            return [rec.get("name") or eid[:12] for eid, rec in self._peers.items()
                    if rec.get("network_id") == network_id]

    # ------------------------------------------------------- our endpoints
    def publish(self, net: Network, ep: Endpoint) -> None:
        """Announce a local endpoint of a global network (on our lease)."""
        rec = {"network_id": net.id, "endpoint_id": ep.id, "ip": ep.address, "ip6": ep.address_v6,
               "mac": ep.mac, "vtep": self.advertise, "name": ep.name, "aliases": list(ep.aliases),
               "container_id": ep.container_id}
        key = f"{PEERS}{net.id}/{ep.id}"
        with self._lock:
            self._published[ep.id] = (key, rec)
            self._withdraw.discard(key)     # a resync may have taken it for a stale one of ours
        try:
            self._put(key, rec)
        except CNMError as exc:
            log.warning("cluster: could not publish endpoint %s yet: %s", ep.name, exc)
            self._dirty.set()

    def unpublish(self, ep: Endpoint) -> None:
        with self._lock:
            item = self._published.pop(ep.id, None)
            if item is None:
                return
            try:
                self.store.delete(item[0])
            except CNMError as exc:
                # Our lease lives on, so it would never go by itself: retried by _run.
                log.warning("cluster: could not withdraw endpoint %s yet: %s", ep.name, exc)
                self._withdraw.add(item[0])

    def _withdraw_all(self) -> None:
        with self._lock:
            for key in list(self._withdraw):
                self.store.delete(key)
                self._withdraw.discard(key)

    def _put(self, key: str, rec: dict) -> None:
        lease = self.lease.id if self.lease is not None else None
        if lease is None:
            raise Unavailable("no cluster lease yet")
        self.store.put(key, rec, lease=lease)

    def _publish_all(self) -> None:
        self._put(f"{NODES}{self.advertise}", {"address": self.advertise})
        with self._lock:
            # Under the lock, so an unpublish cannot slip between our snapshot and a put
            # and have the put bring a removed endpoint back.
            for key, rec in list(self._published.values()):
                self._put(key, rec)

    # ------------------------------------------------------------ watch
    def resync(self) -> None:
        """Reconcile everything against a fresh listing of the store."""
        with self._apply:
            self._resync()

    def _resync(self) -> None:
        try:
            nets = {kv.key[len(NETWORKS):]: kv.value for kv in self.store.list(NETWORKS)}
            peers = {kv.key: kv.value for kv in self.store.list(PEERS)}
            nodes = {kv.key[len(NODES):] for kv in self.store.list(NODES)}
        except CNMError:
            self._needs_resync = True
            raise
        self._needs_resync = False
        for rec in nets.values():
            self._adopt(rec)
        for net in self.ctl.list_networks():
            if net.scope == "global" and net.id not in nets:
                self.ctl.forget_remote_network(net.id)
        for addr in nodes - self._nodes:
            self._node_up(addr)
        for addr in self._nodes - nodes:
            self._node_down(addr)
        wanted = {rec.get("endpoint_id"): rec for rec in peers.values() if rec.get("vtep") != self.advertise}
        with self._lock:
            ours = {key for key, _ in self._published.values()}
            for key, rec in peers.items():
                if rec.get("vtep") == self.advertise and key not in ours:
                    self._withdraw.add(key)     # an endpoint of ours that no longer exists
        with self._lock:
            stale = [eid for eid in self._peers if eid not in wanted]
        for eid in stale:
            self._peer_down(eid)
        for eid, rec in wanted.items():
            if self._peers.get(eid) != rec:
                self._peer_up(rec)
        # Our own peers may have been lost with an old lease: make sure they are there.
        self._dirty.set()

    def _on_network(self, ev: WatchEvent) -> None:
        with self._apply:
            self._on_network_locked(ev)

    def _on_network_locked(self, ev: WatchEvent) -> None:
        nid = ev.key[len(NETWORKS):]
        if ev.kind == "put" and ev.value:
            self._adopt(ev.value)
        elif ev.kind == "delete":
            self.ctl.forget_remote_network(nid)

    def _adopt(self, rec: dict) -> None:
        """Build a network made elsewhere, then program the peers that arrived before it."""
        if self.ctl.adopt_remote_network(rec) is None:
            return
        with self._lock:
            waiting = [p for p in self._peers.values() if p.get("network_id") == rec.get("id")]
        for peer in waiting:
            self._peer_up(peer)
        for addr in list(self._nodes):
            self._node_up(addr)

    def _on_peer(self, ev: WatchEvent) -> None:
        with self._apply:
            self._on_peer_locked(ev)

    def _on_peer_locked(self, ev: WatchEvent) -> None:
        eid = ev.key.rsplit("/", 1)[-1]
        if ev.kind == "put" and ev.value:
            if ev.value.get("vtep") != self.advertise:
                self._peer_up(ev.value)
        else:
            self._peer_down(eid)

    def _on_node(self, ev: WatchEvent) -> None:
        with self._apply:
            self._on_node_locked(ev)

    def _on_node_locked(self, ev: WatchEvent) -> None:
        addr = ev.key[len(NODES):]
        if ev.kind == "put":
            self._node_up(addr)
        else:
            self._node_down(addr)

    # ----------------------------------------------------- kernel effects
    def _driver_for(self, network_id: str):
        try:
            net = self.ctl.get_network(network_id)
        except CNMError:
            return None, None
        return net, self.ctl.drivers.get(net.driver)

    def _peer_up(self, rec: dict) -> None:
        eid = rec.get("endpoint_id")
        if not eid:
            return
        with self._lock:
            self._peers[eid] = rec
        net, driver = self._driver_for(rec.get("network_id", ""))
        if driver is None:
            return   # kept: programmed by the driver itself once the network appears (overlay remembers)
        try:
            driver.discover_new("peer", {k: rec.get(k) for k in ("network_id", "endpoint_id", "ip", "ip6", "mac",
                                                                 "vtep")})
        except CNMError as exc:
            log.warning("programming peer %s: %s", eid[:12], exc)
        if self.discovery is not None and net is not None:
            self.discovery.remote_endpoint_up(net, rec)

    def _peer_down(self, eid: str) -> None:
        with self._lock:
            rec = self._peers.pop(eid, None)
        if rec is None:
            return
        net, driver = self._driver_for(rec.get("network_id", ""))
        if driver is not None:
            try:
                driver.discover_delete("peer", {"network_id": rec.get("network_id"), "endpoint_id": eid})
            except CNMError as exc:
                log.warning("removing peer %s: %s", eid[:12], exc)
        if self.discovery is not None:
            self.discovery.remote_endpoint_down(eid)

    def _overlay_drivers(self):
        seen = []
        for net in self.ctl.list_networks():
            if net.scope == "global":
                try:
                    d = self.ctl.drivers.get(net.driver)
                except CNMError:
                    continue
                if d not in seen:
                    seen.append(d)
        try:
            d = self.ctl.drivers.get("overlay")
            if d not in seen:
                seen.append(d)
        except CNMError:
            pass
        return seen

    def _node_up(self, addr: str) -> None:
        self._nodes.add(addr)
        for d in self._overlay_drivers():
            try:
                d.discover_new("node", {"address": addr})
            except CNMError as exc:
                log.warning("node %s: %s", addr, exc)

    def _node_down(self, addr: str) -> None:
        self._nodes.discard(addr)
        for d in self._overlay_drivers():
            try:
                d.discover_delete("node", {"address": addr})
            except CNMError as exc:
                log.warning("node %s: %s", addr, exc)
