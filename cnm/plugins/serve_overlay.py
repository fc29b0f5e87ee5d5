"""The overlay driver served to Docker engines: multi-host VXLAN networks without swarm,
with etcd as the cluster store.

Scope is reported as "local" (each engine creates the network itself: Docker accepts
global-scope plugin networks only with swarm or a --cluster-store, which Docker 23
removed) and connectivity as "global". The hosts agree on the network through
cnm.plugins.overlay_cluster (a key: -o cnm.overlay.name, else the subnets), and learn
each other's endpoints through the same ClusterSync the cnm daemon uses: peers
published on this host's etcd lease at Join, withdrawn at Leave, programmed into the
VXLAN device's FDB and neighbour tables as they come and go.

    docker network create -d cnm-overlay --ipam-driver cnm-overlay --subnet 10.90.0.0/24 web

on every host gives one overlay. Use the served IPAM (`--ipam`) for addresses that
are unique across hosts; Docker's default IPAM would hand out the same ones on each
host, and CreateEndpoint refuses an address another host's endpoint already holds.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from cnm import labels
from cnm.cluster.sync import ClusterSync
from cnm.cluster.vni import VNI_OPTION as VXLANID_LIST
from cnm.cluster.vni import parse_vni
from cnm.driverapi import GLOBAL, Driver, EndpointInterface, JoinResult, NetworkSpec
from cnm.errors import CNMError, Conflict, NotFound, Unavailable
from cnm.model import Endpoint, Network
from cnm.plugins import overlay_cluster as oc
from cnm.plugins.serve import DriverPlugin, quietly
from cnm.plugins.served_state import ServedState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _OnlyDriver:
    """Every driver name resolves to the one overlay driver this plugin serves."""

    driver: Driver

    def get(self, name: str) -> Driver:
        return self.driver


class _ControllerView:
    """What ClusterSync asks of a controller (cnm.cluster.sync.ClusterHost), for a
    plugin that has one driver and no networks of its own to adopt: every network id
    maps to the overlay driver (which keeps peers of networks it has not built yet,
    and programs them later)."""

    def __init__(self, driver: Driver) -> None:
        self.drivers = _OnlyDriver(driver)

    def list_networks(self) -> list[Network]:
        return []

    def get_network(self, ref: str) -> Network:
        return Network(id=ref, name=ref[:12], driver="overlay", scope=GLOBAL)

    def adopt_remote_network(self, record: dict) -> Network | None:
        return None  # networks come from the Docker engine only

    def forget_remote_network(self, network_id: str) -> None:
        pass


class ClusterOverlayPlugin(DriverPlugin):
    """cnm's OverlayDriver for Docker engines; `store` is the etcd cluster store."""

    def __init__(self, driver, store, advertise: str, state: ServedState | None = None, *, ttl: int = 10) -> None:
        super().__init__(driver, state)
        self.scope, self.connectivity_scope = "local", "global"
        self.store = store
        self.advertise = advertise
        self.sync = ClusterSync(_ControllerView(driver), store, advertise, ttl=ttl)
        # Docker may create or remove networks concurrently (one thread per call); the
        # membership of one overlay must not be joined and left by two at once.
        self._networks_lock = threading.Lock()

    def start(self) -> list[str]:
        """Join the cluster; then leave the overlays this host is still a member of
        but no Docker network here uses (a removal whose leave failed, a crash).
        Returns what could not be done."""
        self.sync.start()
        ours = set(self._ids.values())
        endpoints = self._endpoint_ids()
        done: list[str] = []
        try:
            for cid in oc.memberships(self.store, self.advertise):
                if cid not in ours:
                    oc.leave(self.store, cid, self.advertise)
                    log.info("left overlay %s: no Docker network on this host uses it", cid[:12])
            for cid, addr, eid in oc.claims_of(self.store, self.advertise):
                if eid not in endpoints:
                    oc.release_address(self.store, cid, addr, eid)
        except CNMError as exc:
            done.append(f"cluster memberships not reconciled (cluster store: {exc})")
        return done

    def _endpoint_ids(self) -> set[str]:
        if self.state is None:
            return set()
        return {eid for nid, _ in self.state.networks() for eid, _ in self.state.endpoints(nid)}

    def close(self) -> None:
        self.sync.close()

    # -- networks ---------------------------------------------------------------------------

    def on_create_network(self, body: Mapping[str, Any]) -> None:
        with self._networks_lock:
            self._create_network(body)

    def _create_network(self, body: Mapping[str, Any]) -> None:
        opts = body.get("Options") or {}
        generic = {str(k): str(v) for k, v in (opts.get(labels.GENERIC) or {}).items()}
        name = generic.pop(oc.NAME_OPTION, "")
        pinned = parse_vni(generic[VXLANID_LIST]) if VXLANID_LIST in generic else None
        spec = self.network_spec(body, generic)
        key = oc.identity({oc.NAME_OPTION: name} if name else {}, [p.pool for p in spec.ipv4 + spec.ipv6])
        nid = body["NetworkID"]
        cid = oc.cluster_id(key)
        for other, driver_id in self._ids.items():
            if driver_id == cid and other != nid:
                raise Conflict(
                    f"this host already has overlay {key.split(':', 1)[1]} as Docker network "
                    f"{other[:12]}: one network per overlay on each host"
                )
        cid, vni = oc.join(self.store, key, [p.pool for p in spec.ipv4 + spec.ipv6], self.advertise, pinned)
        spec = replace(spec, id=cid, options={**spec.options, VXLANID_LIST: str(vni)})
        try:
            self._creating(nid, cid)
            self.driver.create_network(spec)
        except BaseException:
            self._not_created(nid)
            quietly(lambda: oc.leave(self.store, cid, self.advertise))
            raise
        self._ids[nid] = cid

        def undo() -> None:
            self._ids.pop(nid, None)
            quietly(lambda: self.driver.delete_network(cid))
            quietly(lambda: oc.leave(self.store, cid, self.advertise))

        self._record_network(nid, spec, undo, extra={"key": key})

    def delete_network(self, network_id: str) -> None:
        with self._networks_lock:
            self._delete_network(network_id)

    def _delete_network(self, network_id: str) -> None:
        # Local first, and a failed leave is not Docker's error: Docker has already
        # released the network's IPAM and never retries a DeleteNetwork. A membership
        # left behind is dropped when the plugin next starts (start()).
        cid = self.driver_id(network_id)
        super().delete_network(network_id)
        if cid != network_id:
            try:
                oc.leave(self.store, cid, self.advertise)
            except CNMError as exc:
                log.warning(
                    "overlay %s removed here, but leaving it in the cluster failed (%s); "
                    "retried when the plugin starts",
                    cid[:12],
                    exc,
                )

    # -- endpoints --------------------------------------------------------------------------

    def create_endpoint(
        self, network_id: str, endpoint_id: str, iface: EndpointInterface, options: dict[str, Any]
    ) -> EndpointInterface | None:
        """Claim the endpoint's addresses in etcd first: with Docker's default IPAM two
        engines hand out the same address, and the second is refused here."""
        cid = self.driver_id(network_id)
        claimed: list[str] = []
        try:
            for addr in (iface.address, iface.address_v6):
                if addr:
                    oc.claim_address(self.store, cid, addr, self.advertise, endpoint_id)
                    claimed.append(addr)
            return super().create_endpoint(network_id, endpoint_id, iface, options)
        except BaseException:
            for addr in claimed:
                quietly(functools.partial(oc.release_address, self.store, cid, addr, endpoint_id))
            raise

    def join(self, network_id: str, endpoint_id: str, sandbox_key: str, options: dict[str, Any]) -> JoinResult:
        result = super().join(network_id, endpoint_id, sandbox_key, options)
        try:
            self._publish(network_id, endpoint_id)
        except BaseException:
            quietly(lambda: super(ClusterOverlayPlugin, self).leave(network_id, endpoint_id))
            raise
        return result

    def leave(self, network_id: str, endpoint_id: str) -> None:
        self.sync.unpublish(Endpoint(id=endpoint_id, name=endpoint_id[:12], network_id=network_id))
        super().leave(network_id, endpoint_id)

    def delete_endpoint(self, network_id: str, endpoint_id: str) -> None:
        self.sync.unpublish(Endpoint(id=endpoint_id, name=endpoint_id[:12], network_id=network_id))
        cid = self.driver_id(network_id)
        rec = (self.state.endpoint(network_id, endpoint_id) if self.state else None) or {}
        super().delete_endpoint(network_id, endpoint_id)
        for addr in (rec.get("address"), rec.get("address_v6")):
            if addr:
                try:
                    oc.release_address(self.store, cid, addr, endpoint_id)
                except CNMError as exc:  # dropped at the next start (start())
                    log.warning("address %s stays claimed in the cluster for now: %s", addr, exc)

    def discover_new(self, discovery_type: int, data: dict[str, Any]) -> None:
        """Hosts come from etcd (ClusterSync), not from Docker's node discovery."""

    def discover_delete(self, discovery_type: int, data: dict[str, Any]) -> None:
        """See discover_new."""

    def _publish(self, network_id: str, endpoint_id: str, rec: Mapping[str, Any] | None = None) -> None:
        cid = self.driver_id(network_id)
        if rec is None:
            rec = self.state.endpoint(network_id, endpoint_id) if self.state else None
        mac = (rec or {}).get("mac") or self.driver.endpoint_info(cid, endpoint_id).get(labels.ENDPOINT_MAC)
        address = (rec or {}).get("address")
        if not address or not mac:
            raise NotFound(f"endpoint {endpoint_id[:12]} has no address or MAC to announce")
        ep = Endpoint(
            id=endpoint_id,
            name=endpoint_id[:12],
            network_id=cid,
            address=address,
            address_v6=(rec or {}).get("address_v6"),
            mac=mac,
            container_id="",
        )
        self.sync.publish(Network(id=cid, name=cid[:12], driver="overlay", scope=GLOBAL), ep)

    # -- after a restart ----------------------------------------------------------------------

    def restore_network(self, network_id: str, spec: NetworkSpec, rec: Mapping[str, Any]) -> None:
        # Re-assert our membership with the recorded VNI: `forget-host` may have freed
        # the overlay while this plugin was down, and its VNI may since belong to another.
        key = (rec.get("extra") or {}).get("key")
        if key:
            vni = parse_vni(spec.options[VXLANID_LIST])
            try:
                oc.join(self.store, key, [p.pool for p in spec.ipv4 + spec.ipv6], self.advertise, vni)
            except Unavailable as exc:
                log.warning("overlay %s restored without checking the cluster (%s)", spec.id[:12], exc)
        self.driver.restore_network(spec)

    def restored_endpoint(self, network_id: str, endpoint_id: str, rec: Mapping[str, Any]) -> None:
        if rec.get("joined"):
            self._publish(network_id, endpoint_id, rec)
