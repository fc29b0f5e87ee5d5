"""Keeps this host in step with the cluster store (etcd), holding only what it needs.

What lives where:
    network/<id>, netname/<name>   global networks (written by the host that creates one)
    vni/<n>                        VXLAN ids in use (cnm.cluster.vni)
    nodes/<vtep>                   one key per live host, on its lease (liveness, for forget-host)
    peers/<network>/<endpoint>     one key per endpoint of a global network: address, MAC,
                                   the host's VTEP, names for DNS — on the owner's lease

What a host watches, so that a change reaches the hosts that need it and no others:
    network/           every host. Network records are few and small, and a host must know
                       a network to join it by name and to drop it when it is removed.
    peers/<network>/   only while this host has an endpoint on <network>. The first local
                       endpoint published on a network subscribes: one listing of the
                       prefix, programmed at once (a container's peers are there when it
                       starts), then a watch from the listing's revision. The last one
                       withdrawn unsubscribes: the watch ends, the peers it brought go.
nodes/ is not watched: the hosts whose VXLAN the overlay accepts are the hosts of the
peers held (cnm.cluster.peerset counts them), told to the drivers as node events.

A watch that loses history (compaction, a long outage, a store restored from a backup)
resyncs its own prefix only: network/ relists the networks, a network's peer watch that
network's peers. All watches run on the store's watch hub (two threads in all). This
host's peers and node key are on its lease, so they vanish from the other hosts when it
does; after a lease is lost they are published again on the new one. After a restart,
records of endpoints removed while the daemon was down go with the old lease (ttl s).

Locks: `_apply` orders every change to the held peers with its effects (watch events,
subscribe, unsubscribe, resync). Effects use the network and driver captured when the
subscription began, never the controller: a caller holding the controller's lock (a
container being connected) can subscribe while a watch event is applied. Network events
take `_networks_lock` and call the controller without holding `_apply`.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cnm.addresses import text
from cnm.cluster import vni as vnis
from cnm.cluster.lease import NodeLease
from cnm.cluster.peerset import PeerSet
from cnm.cluster.subscriptions import (  # noqa: F401  (re-exported)
    PEERS,
    ClusterHost,
    DriverLookup,
    PeerSubscriptions,
    RemoteNames,
    Subscription,
    peers_prefix,
)
from cnm.errors import CNMError, Unavailable
from cnm.model import Endpoint, Network
from cnm.store import KV, WatchEvent

if TYPE_CHECKING:
    from cnm.store.etcd import EtcdStore

log = logging.getLogger(__name__)

NETWORKS, NODES = "network/", "nodes/"
RETRY_SECONDS = 2.0  # the publisher's look, when nothing woke it
MAX_BACKOFF = 30.0  # between publish attempts while etcd does not answer


class ClusterSync(PeerSubscriptions):
    def __init__(
        self,
        controller: ClusterHost,
        store: EtcdStore,
        advertise: str,
        *,
        ttl: int = 10,
        discovery: RemoteNames | None = None,
    ) -> None:
        self.ctl = controller
        self.store = store
        self.advertise = advertise
        self.ttl = ttl
        self.discovery = discovery  # cnm.naming.ServiceDiscovery, for remote names
        self.lease: NodeLease | None = None
        self._lock = threading.RLock()  # _published, _unconfirmed, _withdraw
        self._published: dict[str, tuple[str, dict, Any]] = {}  # our endpoint id -> (key, record, network)
        self._key_owner: dict[str, str] = {}  # key -> our endpoint id
        # Our keys etcd may not have: a put failed, the lease they were on was lost, or a
        # listing missed them. Only these are put again (a whole-host republish on every
        # hiccup is a storm when a thousand hosts hiccup at once).
        self._unconfirmed: set[str] = {f"{NODES}{advertise}"}
        self._withdraw: set[str] = set()  # keys to delete once etcd answers
        self._apply = threading.RLock()
        self._held = PeerSet(advertise)
        self._subs: dict[str, Subscription] = {}
        self._node_drivers: list[Any] = []  # drivers told of nodes (never shrinks)
        self._networks_lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._started = False
        self._cancel_networks: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None

    # --------------------------------------------------------------- life
    def start(self) -> None:
        self.lease = NodeLease(self.store, self.ttl, on_new_lease=self._on_new_lease)
        start = self._load_networks()
        self._cancel_networks = self.store.watch(
            NETWORKS, self._on_network, resync=self.resync_networks, start_revision=start, resync_first=start is None
        )
        self._wake.set()
        self._thread = threading.Thread(target=self._run, name="cluster-sync", daemon=True)
        self._thread.start()
        self._started = True
        with self._lock:
            nets = {net.id: net for _, _, net in self._published.values()}
        for net in nets.values():  # published before start()
            self._subscribe(net)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()  # the publisher sleeps on it: wake it to see _stop
        cancels = [self._cancel_networks] if self._cancel_networks else []
        with self._apply:
            for sub in self._subs.values():
                sub.active = False
                if sub.cancel is not None:
                    cancels.append(sub.cancel)
            self._subs.clear()
        for cancel in cancels:
            cancel()
        if self._thread is not None:
            self._thread.join(5)
        if self.lease is not None:
            # Not revoked: our containers keep running after the daemon stops, so our
            # peers stay published until the lease expires (a restart renews them).
            self.lease.close(revoke=False)

    def _run(self) -> None:
        """Put our unconfirmed keys and delete withdrawn ones until etcd has them right,
        backing off (with jitter, so a thousand hosts do not retry in step) while it
        does not answer."""
        backoff = 0.0
        while not self._stop.is_set():
            self._wake.wait(RETRY_SECONDS)
            # Cleared before the work: a request made while it runs is not lost.
            self._wake.clear()
            try:
                self._flush()
                backoff = 0.0
            except CNMError as exc:
                backoff = min(max(2 * backoff, 0.5), MAX_BACKOFF)
                log.info("cluster: publishing this host failed (%s); retrying in ~%.0fs", exc, backoff)
                self._stop.wait(backoff * random.uniform(0.5, 1.0))
                self._wake.set()

    def _on_new_lease(self, _lease: int) -> None:
        """Everything of ours was on the old lease: all of it is to be put again."""
        with self._lock:
            self._unconfirmed = {f"{NODES}{self.advertise}"} | {key for key, _, _ in self._published.values()}
        self._wake.set()

    # --------------------------------------------------------- introspection
    def subscriptions(self) -> list[str]:
        """The networks whose peers this host holds (has endpoints on)."""
        with self._apply:
            return sorted(self._subs)

    def held_peers(self, network_id: str | None = None) -> list[dict]:
        """The remote endpoints held, of one network or all."""
        with self._apply:
            nets = [network_id] if network_id is not None else self._held.networks()
            return [rec for nid in nets for rec in self._held.peers(nid)]

    def vteps(self) -> list[str]:
        """The remote hosts this host exchanges VXLAN with (hosts of the peers held)."""
        with self._apply:
            return self._held.vteps()

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
        """Names of the endpoints other hosts have on `network_id`, read from the store
        (a host without endpoints there holds none of them). Raises Unavailable when
        etcd does not answer."""
        kvs = self.store.list(peers_prefix(network_id))
        return [
            kv.value.get("name") or kv.key.rsplit("/", 1)[-1][:12]
            for kv in kvs
            if kv.value.get("vtep") != self.advertise
        ]

    # ------------------------------------------------------- our endpoints
    def publish(self, net: Network, ep: Endpoint) -> None:
        """Announce a local endpoint of a global network (on our lease), and hold the
        network's peers from now on (the first endpoint there subscribes)."""
        rec = {
            "network_id": net.id,
            "endpoint_id": ep.id,
            "ip": text(ep.address),
            "ip6": text(ep.address_v6),
            "mac": ep.mac,
            "vtep": self.advertise,
            "name": ep.name,
            "aliases": list(ep.aliases),
            "container_id": ep.container_id,
        }
        key = f"{peers_prefix(net.id)}{ep.id}"
        with self._lock:
            self._published[ep.id] = (key, rec, net)
            self._key_owner[key] = ep.id
            self._withdraw.discard(key)  # a resync may have taken it for a stale one of ours
            self._unconfirmed.add(key)
        try:
            self._put(key, rec)
            self._confirm(key, rec)
        except CNMError as exc:
            log.warning("cluster: could not publish endpoint %s yet: %s", ep.name, exc)
            self._wake.set()
        if self._started:
            self._subscribe(net)

    def unpublish(self, ep: Endpoint) -> None:
        with self._lock:
            item = self._published.pop(ep.id, None)
            if item is None:
                return
            self._key_owner.pop(item[0], None)
            self._unconfirmed.discard(item[0])
            try:
                self.store.delete(item[0])
            except CNMError as exc:
                # Our lease lives on, so it would never go by itself: retried by _run.
                log.warning("cluster: could not withdraw endpoint %s yet: %s", ep.name, exc)
                self._withdraw.add(item[0])
                self._wake.set()
        self._unsubscribe(item[2].id)

    def _put(self, key: str, rec: dict) -> None:
        lease = self.lease.id if self.lease is not None else None
        if lease is None:
            raise Unavailable("no cluster lease yet")
        self.store.put(key, rec, lease=lease)

    def _flush(self) -> None:
        """Put what is unconfirmed, delete what is withdrawn. No lock is held over a
        request (a slow etcd must not stall the watch callbacks that need the lock)."""
        node = f"{NODES}{self.advertise}"
        with self._lock:
            todo = list(self._unconfirmed)
        for key in todo:
            rec = {"address": self.advertise} if key == node else self._record(key)
            if rec is None:
                with self._lock:
                    self._unconfirmed.discard(key)  # withdrawn meanwhile
                continue
            self._put(key, rec)
            self._confirm(key, rec)
        with self._lock:
            gone = list(self._withdraw)
        for key in gone:
            self.store.delete(key)
            with self._lock:
                if self._record(key) is None:
                    self._withdraw.discard(key)

    def _record(self, key: str) -> dict | None:
        with self._lock:
            eid = self._key_owner.get(key)
            return self._published[eid][1] if eid is not None else None

    def _confirm(self, key: str, rec: dict) -> None:
        """`key` was put with `rec`: confirmed if that is still what we publish; if it
        was withdrawn while the put was in flight, the put brought it back: delete it."""
        with self._lock:
            now = self._record(key) if key != f"{NODES}{self.advertise}" else rec
            if now == rec:
                self._unconfirmed.discard(key)
            elif now is None:
                self._unconfirmed.discard(key)
                self._withdraw.add(key)
                self._wake.set()

    def _ours_on(self, network_id: str) -> bool:
        with self._lock:
            return any(net.id == network_id for _, _, net in self._published.values())

    # ------------------------------------------------------- subscriptions

    def resync(self) -> None:
        """Reconcile the networks and every subscription against fresh listings."""
        self.resync_networks()
        with self._apply:
            subs = list(self._subs.values())
        for sub in subs:
            self._resync_peers(sub)

    # ----------------------------------------------------- kernel effects

    # ------------------------------------------------------------ networks
    def _load_networks(self) -> int | None:
        """The first listing of network/; the revision to watch from, None if etcd did
        not answer (the watch then relists as soon as it does)."""
        try:
            kvs, rev = self.store.snapshot(NETWORKS)
        except CNMError as exc:
            log.warning("cluster store not reachable yet (%s); will resync when it is", exc)
            return None
        with self._networks_lock:
            self._apply_networks(kvs)
        return rev + 1

    def resync_networks(self) -> None:
        with self._networks_lock:
            self._apply_networks(self.store.list(NETWORKS))

    def _apply_networks(self, kvs: list[KV]) -> None:
        nets = {kv.key[len(NETWORKS) :]: kv.value for kv in kvs}
        for rec in nets.values():
            self.ctl.adopt_remote_network(rec)
        for net in self.ctl.list_networks():
            if net.scope == "global" and net.id not in nets:
                self.ctl.forget_remote_network(net.id)

    def _on_network(self, ev: WatchEvent) -> None:
        with self._networks_lock:
            nid = ev.key[len(NETWORKS) :]
            if ev.kind == "put" and ev.value:
                self.ctl.adopt_remote_network(ev.value)
            elif ev.kind == "delete":
                self.ctl.forget_remote_network(nid)
