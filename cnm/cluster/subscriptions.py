"""This host's subscriptions to the peers of the global networks it has endpoints on:
one listing then a watch per network (peers/<network>/), the peer set they keep, and
its effects on the drivers (neighbour and FDB entries, VTEPs) and the DNS.

A mixin of cnm.cluster.sync.ClusterSync (kept apart: the member is long enough); the
locking rules are ClusterSync's (its module docstring).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from cnm.cluster.lease import NodeLease
from cnm.cluster.peerset import Effect, NodeDown, NodeUp, PeerDown, PeerSet, PeerUp
from cnm.driverapi import Driver
from cnm.errors import CNMError
from cnm.model import Network
from cnm.store import KV, WatchEvent

if TYPE_CHECKING:
    from cnm.store.etcd import EtcdStore

log = logging.getLogger(__name__)
PEERS = "peers/"
PEER_FIELDS = ("network_id", "endpoint_id", "ip", "ip6", "mac", "vtep")


def peers_prefix(network_id: str) -> str:
    return f"{PEERS}{network_id}/"


@dataclass(eq=False)
class Subscription:
    """This host's interest in one network's peers, while it has endpoints there."""

    network: Any  # the Network (or the served plugin's view of one)
    driver: Any  # its driver, found once, when the subscription began
    active: bool = True
    cancel: Callable[[], None] | None = None


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


class PeerSubscriptions:
    _apply: threading.RLock
    _held: PeerSet
    _lock: threading.RLock
    _node_drivers: list[Any]
    _published: dict[str, tuple[str, dict, Any]]
    _stop: threading.Event
    _subs: dict[str, Subscription]
    _unconfirmed: set[str]
    _wake: threading.Event
    _withdraw: set[str]
    advertise: str
    ctl: ClusterHost
    discovery: RemoteNames | None
    lease: NodeLease | None
    store: EtcdStore

    if TYPE_CHECKING:  # ClusterSync's own

        def _ours_on(self, network_id: str) -> bool: ...

    def _subscribe(self, net: Any) -> None:
        if net.id in self._subs:
            return
        target, driver = self._resolve(net)  # before _apply: it may take the controller's lock
        with self._apply:
            if net.id in self._subs or self._stop.is_set() or not self._ours_on(net.id):
                return
            sub = Subscription(target, driver)
            self._subs[net.id] = sub
            self._held.open(net.id)
            self._tell_nodes(driver)
            start = None
            if self.lease is not None and self.lease.healthy:
                try:
                    kvs, rev = self.store.snapshot(peers_prefix(net.id))
                    self._reconcile(sub, kvs)
                    start = rev + 1
                except CNMError as exc:
                    log.info("cluster: peers of %s not listed yet (%s); the watch will", net.id[:12], exc)
            sub.cancel = self.store.watch(
                peers_prefix(net.id),
                functools.partial(self._on_peer, sub),
                resync=functools.partial(self._resync_peers, sub),
                start_revision=start,
                resync_first=start is None,
            )

    def _unsubscribe(self, network_id: str) -> None:
        with self._apply:
            if self._ours_on(network_id):
                return
            sub = self._subs.pop(network_id, None)
            if sub is None:
                return
            sub.active = False
            self._run_effects(sub, self._held.drop(network_id))
        if sub.cancel is not None:
            sub.cancel()  # not under _apply: it waits for a callback that takes it

    def _resolve(self, net: Any) -> tuple[Any, Any]:
        try:
            net = self.ctl.get_network(net.id)
        except (CNMError, AttributeError):
            pass
        try:
            driver = self.ctl.drivers.get(net.driver)
        except (CNMError, AttributeError):
            driver = None
        return net, driver

    def _tell_nodes(self, driver: Any) -> None:
        if driver is None or driver in self._node_drivers:
            return
        self._node_drivers.append(driver)
        for vtep in self._held.vteps():
            self._node_event(driver, True, vtep)

    def _on_peer(self, sub: Subscription, ev: WatchEvent) -> None:
        with self._apply:
            if not sub.active:
                return  # a late event of a watch being cancelled
            if ev.kind == "put" and ev.value:
                effects = self._held.put(sub.network.id, ev.value)
            elif ev.kind == "delete":
                effects = self._held.delete(sub.network.id, ev.key.rsplit("/", 1)[-1])
            else:
                return
            self._run_effects(sub, effects)

    def _resync_peers(self, sub: Subscription) -> None:
        with self._apply:
            if not sub.active:
                return
            self._reconcile(sub, self.store.list(peers_prefix(sub.network.id)))

    def _reconcile(self, sub: Subscription, kvs: Iterable[KV]) -> None:
        kvs = list(kvs)
        self._run_effects(sub, self._held.reconcile(sub.network.id, [kv.value for kv in kvs]))
        listed = {kv.key: kv.value for kv in kvs}
        with self._lock:
            ours = {key: rec for key, rec, _ in self._published.values()}
            for key, value in listed.items():
                if value.get("vtep") == self.advertise and key not in ours:
                    self._withdraw.add(key)  # an endpoint of ours that no longer exists
            prefix = peers_prefix(sub.network.id)
            for key, rec in ours.items():
                if key.startswith(prefix) and listed.get(key) != rec:
                    self._unconfirmed.add(key)  # ours, missing there (gone with an old lease?)
            if self._withdraw or self._unconfirmed:
                self._wake.set()

    def _run_effects(self, sub: Subscription, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, NodeUp | NodeDown):
                for d in self._node_drivers:
                    self._node_event(d, isinstance(e, NodeUp), e.vtep)
            elif isinstance(e, PeerUp):
                self._peer_up(sub, e.peer)
            elif isinstance(e, PeerDown):
                self._peer_down(sub, e.peer)

    def _peer_up(self, sub: Subscription, rec: dict) -> None:
        if sub.driver is not None:
            try:
                sub.driver.discover_new("peer", {k: rec.get(k) for k in PEER_FIELDS})
            except CNMError as exc:
                log.warning("programming peer %s: %s", str(rec.get("endpoint_id"))[:12], exc)
        if self.discovery is not None:
            self.discovery.remote_endpoint_up(sub.network, rec)

    def _peer_down(self, sub: Subscription, rec: dict) -> None:
        eid = str(rec["endpoint_id"])  # PeerSet holds only records that have one
        if sub.driver is not None:
            try:
                sub.driver.discover_delete("peer", {"network_id": sub.network.id, "endpoint_id": eid})
            except CNMError as exc:
                log.warning("removing peer %s: %s", str(eid)[:12], exc)
        if self.discovery is not None:
            self.discovery.remote_endpoint_down(eid)

    @staticmethod
    def _node_event(driver: Any, up: bool, vtep: str) -> None:
        try:
            if up:
                driver.discover_new("node", {"address": vtep})
            else:
                driver.discover_delete("node", {"address": vtep})
        except CNMError as exc:
            log.warning("node %s: %s", vtep, exc)
