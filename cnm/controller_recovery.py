"""The controller's part in crash safety: tearing a network down in an order a crash
can interrupt, finishing at start-up the network operations a crash did interrupt (their
intents, cnm.intents), and making an endpoint's kernel objects again for a repair.

A mixin of cnm.controller.Controller (kept apart: the controller is long enough), using
its stores, registries, lock and network table.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Protocol

from cnm.addresses import text
from cnm.driverapi import GLOBAL, DriverRegistry, EndpointInterface
from cnm.errors import CNMError, NotFound
from cnm.intents import NETWORK_CREATE, NETWORK_DELETE, Intent, Intents
from cnm.ipamapi import IpamRegistry
from cnm.model import Endpoint, EndpointState, Network
from cnm.store import Delete, Op, Put, Store

log = logging.getLogger("cnm.controller")

NET_PREFIX = "network/"
NAME_PREFIX = "netname/"
GLOBAL_CACHE = "globalcache/network/"


class GlobalNetworks(Protocol):
    """What the controller asks of the cluster (cnm.cluster.sync.ClusterSync)."""

    def allocate_network(self, net: Network) -> dict[str, str]:
        """Cluster-wide resources a new global network needs, as driver options (a VNI)."""

    def release_network(self, net: Network) -> None:
        """Give them back. Best effort."""

    def find_network(self, ref: str) -> dict | None:
        """A global network's record by name or ID from the cluster store; None when
        unknown or the store does not answer. Store I/O: never called under the lock."""

    def remote_endpoints(self, network_id: str) -> list[str]:
        """Names of endpoints other hosts have on the network, read from the cluster
        store (a host holds other hosts' endpoints only of networks it is on); raises
        Unavailable when the store does not answer."""


class Recovery:
    drivers: DriverRegistry
    ipams: IpamRegistry
    stores: dict[str, Store]
    lock: threading.RLock
    cluster: GlobalNetworks | None
    intents: Intents
    _networks: dict[str, Network]
    _global_loaded: bool

    if TYPE_CHECKING:  # the controller's own

        def store_for(self, scope: str) -> Store: ...
        def _notify(self, event: str, net: Network) -> None: ...
        def save_endpoint(self, ep: Endpoint) -> None: ...

    def _teardown_network(self, net: Network) -> list[str]:
        """The network's records, kernel objects, cluster resources and pools. Raises,
        changing nothing, when the first step refuses; after that, best effort: returns
        the failures. Idempotent (a start finishing an interrupted delete repeats it).
        Order: the step that may refuse comes first; the record goes before the pools,
        so a crash in between leaves no network whose pool is gone. Global: the cluster
        store first (etcd may be down). Local: the kernel first (a driver that cannot
        delete keeps the network)."""
        errors: list[str] = []
        if net.scope == GLOBAL:
            name_key = NAME_PREFIX + net.name
            store = self.store_for(GLOBAL)
            owner = store.get(name_key)
            ops: list[Op] = [Delete(NET_PREFIX + net.id)]
            if owner is not None and owner.value.get("id") == net.id:
                ops.append(Delete(name_key))  # never another network's name
            store.atomic(ops)
            self.stores["local"].delete(GLOBAL_CACHE + net.id)
            try:
                self.drivers.get(net.driver).delete_network(net.id)
            except CNMError as exc:
                errors.append(str(exc))
            if self.cluster is not None:
                self.cluster.release_network(net)
        else:
            self.drivers.get(net.driver).delete_network(net.id)
            self.store_for(net.scope).delete(NET_PREFIX + net.id)
        errors += self._release_pools(net)
        return errors

    def _release_pools(self, net: Network) -> list[str]:
        if net.ipam_driver == "null" or not net.pools:
            return []
        errors = []
        try:
            ipam = self.ipams.get(net.ipam_driver)
        except CNMError as exc:
            return [str(exc)]
        for pool in net.pools:
            try:
                ipam.release_pool(pool.pool_id)
            except CNMError as exc:  # best effort: the network is gone
                errors.append(str(exc))
        return errors

    def finish_intents(self) -> int:
        """At start-up, before networks are restored: finish what a crash interrupted.
        A creation that did not commit is rolled back (kernel objects through the
        driver, cluster resources, pools); a deletion that had begun is completed. Each
        is logged once (its intent goes with it); one whose step fails keeps its intent
        and is retried at the next start. Global ones wait while the cluster store
        does not answer (whether they committed cannot be told). Returns how many were
        finished."""
        finished = 0
        with self.lock:
            for intent in self.intents.pending(NETWORK_CREATE) + self.intents.pending(NETWORK_DELETE):
                try:
                    net = Network.from_record(intent.data)
                except (TypeError, KeyError) as exc:
                    log.error("dropping an unreadable intent %s: %s", intent.key, exc)
                    self.intents.done(intent.kind, intent.id)
                    continue
                if net.scope == GLOBAL and not self._global_loaded:
                    log.warning(
                        "network %s: an interrupted %s waits for the cluster store to answer", net.name, intent.kind
                    )
                    continue
                if intent.kind == NETWORK_CREATE:
                    finished += self._finish_create(intent, net)
                else:
                    finished += self._finish_delete(intent, net)
        return finished

    def _finish_create(self, intent: Intent, net: Network) -> int:
        if net.id in self._networks:  # it committed; only the intent was left
            if net.scope == GLOBAL:
                self.stores["local"].atomic(
                    [
                        Put(GLOBAL_CACHE + net.id, self._networks[net.id].to_record()),
                        self.intents.done_op(intent.kind, intent.id),
                    ]
                )
            else:
                self.intents.done(intent.kind, intent.id)
            return 0
        errors: list[str] = []
        try:
            self.drivers.get(net.driver).delete_network(net.id)
        except CNMError as exc:
            errors.append(str(exc))
        if net.scope == GLOBAL and self.cluster is not None:
            self.cluster.release_network(net)
        errors += self._release_pools(net)
        if errors:
            log.error(
                "network %s: rolling back its interrupted creation failed (retried at the next start): %s",
                net.name,
                "; ".join(errors),
            )
            return 0
        self.intents.done(intent.kind, intent.id)
        log.warning(
            "rolled back the creation of network %s (%s) that a crash interrupted: its kernel "
            "objects and %d pool(s) released",
            net.name,
            net.id[:12],
            len(net.pools),
        )
        return 1

    def _finish_delete(self, intent: Intent, net: Network) -> int:
        known = self._networks.get(net.id)
        if known is not None:
            net = known
        try:
            errors = self._teardown_network(net)
        except CNMError as exc:  # refused before any change, as a delete can be
            self.intents.done(intent.kind, intent.id)
            log.error(
                "network %s: its removal, interrupted by a crash, cannot be finished (%s); the network stays",
                net.name,
                exc,
            )
            return 0
        if known is not None:
            del self._networks[net.id]
            self._notify("delete", net)
        if errors:
            log.error(
                "network %s: finishing its interrupted removal failed (retried at the next start): %s",
                net.name,
                "; ".join(errors),
            )
            return 0
        self.intents.done(intent.kind, intent.id)
        log.warning("finished removing network %s (%s) that a crash interrupted", net.name, net.id[:12])
        return 1

    def recreate_endpoint(self, ep: Endpoint) -> None:
        """For an endpoint whose interface is gone (start-up repair): the driver drops
        whatever is left of it and makes it again, with the same addresses and MAC;
        IPAM and the record keep theirs. The caller joins it again."""
        with self.lock:
            net = self._networks.get(ep.network_id)
            if net is None:
                raise NotFound(f"network {ep.network_id[:12]} of endpoint {ep.name} is gone")
            driver = self.drivers.get(net.driver)
            for step in (driver.leave, driver.delete_endpoint):
                try:
                    step(net.id, ep.id)
                except CNMError as exc:
                    log.debug("recreating endpoint %s: %s", ep.id[:12], exc)
            iface = driver.create_endpoint(
                net.id, ep.id, EndpointInterface(text(ep.address), text(ep.address_v6), ep.mac), {}
            )
            ep.mac = iface.mac or ep.mac
            ep.state = EndpointState.CREATED.value
            ep.port_bindings = []
            self.save_endpoint(ep)
