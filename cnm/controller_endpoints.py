"""The controller's endpoint operations: an endpoint made (IPAM addresses, the
driver's endpoint, its record) and removed, joined to and left from a sandbox, its
ports programmed and revoked, re-learnt after a restart; the IPAM addresses nothing
holds given back at start-up.

A mixin of cnm.controller.Controller (kept apart: the controller is long enough), on
its registries, stores, lock and tables; every method takes the lock itself.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from cnm import labels
from cnm.addresses import IPInterface, address, host_of, interface, text, within
from cnm.driverapi import DriverRegistry, EndpointInterface, JoinResult
from cnm.errors import CNMError, Conflict, InvalidParameter, NotFound
from cnm.ids import new_id
from cnm.ipamapi import Ipam, IpamRegistry
from cnm.model import Endpoint, EndpointState, Network, PoolConfig
from cnm.retiring import Retirements, defers_teardown
from cnm.store import Store
from cnm.undo import Undo

log = logging.getLogger("cnm.controller")

EP_PREFIX = "endpoint/"
PORTMAP = labels.PORTMAP
# Drivers name kernel objects after an endpoint ID's first characters (the bridge's
# host veth: "veth" + 7 hex digits). 28 bits: two of 2,000 endpoints share them ~0.7%
# of the time, and the second's join failed ("already joined to a sandbox").
NAMED_PREFIX = 7


class Endpoints:
    drivers: DriverRegistry
    ipams: IpamRegistry
    stores: dict[str, Store]
    lock: threading.RLock
    retirements: Retirements
    _networks: dict[str, Network]
    _endpoints: dict[str, Endpoint]

    if TYPE_CHECKING:  # the controller's own

        def endpoints_of(self, network_id: str) -> list[Endpoint]: ...
        def _know_endpoint(self, ep: Endpoint) -> None: ...
        def _forget_endpoint(self, ep: Endpoint) -> None: ...
        def _notify_endpoint(self, event: str, net: Network, ep: Endpoint) -> None: ...

    def _fresh_endpoint_id(self) -> str:
        """A new endpoint ID whose first NAMED_PREFIX characters no other endpoint here
        has, retiring ones included (their veths are still being deleted)."""
        taken = {i[:NAMED_PREFIX] for i in self._endpoints}
        taken.update(i[:NAMED_PREFIX] for i in self.retirements.ids())
        while (eid := new_id())[:NAMED_PREFIX] in taken:
            pass
        return eid

    def create_endpoint(
        self,
        net: Network,
        name: str,
        *,
        container_id: str | None = None,
        ip: str | None = None,
        ip6: str | None = None,
        mac: str | None = None,
        aliases: list[str] | None = None,
    ) -> Endpoint:
        """IPAM addresses → driver endpoint → store. Rolls back completely on failure."""
        with self.lock:
            if any(ep.name == name for ep in self.endpoints_of(net.id)):
                raise Conflict(f"endpoint with name {name} already exists in network {net.name}")
            driver = self.drivers.get(net.driver)
            ep = Endpoint(
                id=self._fresh_endpoint_id(),
                name=name,
                network_id=net.id,
                container_id=container_id,
                aliases=list(aliases or []),
            )
            with Undo() as undo:
                if net.ipam_driver != "null":
                    ipam = self.ipams.get(net.ipam_driver)
                    v4, v6 = net.v4_pools(), net.v6_pools()
                    if v4:
                        ep.pool_id, ep.address = self._take_address(ipam, net, v4, ip, "IPv4")
                        undo.push(ipam.release_address, ep.pool_id, str(ep.address))
                        ep.gateway = next((p.gateway for p in v4 if p.pool_id == ep.pool_id), None)
                    elif ip:
                        raise InvalidParameter(f"network {net.name} has no IPv4 subnet for --ip {ip}")
                    if v6:
                        ep.pool_id_v6, ep.address_v6 = self._take_address(ipam, net, v6, ip6, "IPv6")
                        undo.push(ipam.release_address, ep.pool_id_v6, str(ep.address_v6))
                        ep.gateway_v6 = next((p.gateway for p in v6 if p.pool_id == ep.pool_id_v6), None)
                    elif ip6:
                        raise InvalidParameter(f"network {net.name} has no IPv6 subnet for --ip6 {ip6}")
                elif ip or ip6:
                    raise InvalidParameter(f"network {net.name} ({net.driver}) takes no --ip/--ip6")
                # The record before the driver's kernel objects (an overlay veth, a plugin's):
                # a crash in between leaves an endpoint in no sandbox, which start-up
                # releases through the driver, never objects nothing names.
                self.stores["local"].put(EP_PREFIX + ep.id, ep.to_record())
                undo.push(self.stores["local"].delete, EP_PREFIX + ep.id)
                iface = driver.create_endpoint(
                    net.id, ep.id, EndpointInterface(text(ep.address), text(ep.address_v6), mac), {}
                )
                undo.push(driver.delete_endpoint, net.id, ep.id)
                if iface.mac != ep.mac:
                    ep.mac = iface.mac
                    self.stores["local"].put(EP_PREFIX + ep.id, ep.to_record())
                self._know_endpoint(ep)
                undo.commit()
            return ep

    def _take_address(
        self, ipam: Ipam, net: Network, pools: list[PoolConfig], requested: str | None, family: str
    ) -> tuple[str, IPInterface]:
        """As _address; an address still held by a retiring endpoint (its veth being
        deleted in the background) is waited for — its deletion done now — not refused."""
        try:
            return self._address(ipam, net, pools, requested, family)
        except Conflict:
            if not self.retirements.expedite(net, self.drivers.get(net.driver), requested):
                raise
        return self._address(ipam, net, pools, requested, family)

    @staticmethod
    def _address(
        ipam: Ipam, net: Network, pools: list[PoolConfig], requested: str | None, family: str
    ) -> tuple[str, IPInterface]:
        """(pool_id, address): the requested address from the pool that contains it, or
        the next free one from the first pool that has one."""

        def got(p: PoolConfig, answer: str) -> tuple[str, IPInterface]:
            # IPAM answers "a.b.c.d/len" (Docker's protocol); a bare address takes the subnet's.
            what = f"address from IPAM driver {net.ipam_driver}"
            return p.pool_id, interface(answer, what) if "/" in answer else within(host_of(answer, what), p.subnet)

        if requested:
            want = address(requested, f"{family} address")
            for p in pools:
                if want in p.subnet:
                    return got(p, ipam.request_address(p.pool_id, str(want), {}))
            raise InvalidParameter(
                f"address {requested} is not within any subnet of network {net.name} "
                f"({', '.join(str(p.subnet) for p in pools)})"
            )
        last: CNMError | None = None
        for p in pools:
            try:
                return got(p, ipam.request_address(p.pool_id, None, {}))
            except Conflict as exc:  # this pool is full: try the next subnet
                last = exc
        raise last or Conflict(f"no available {family} addresses in network {net.name}")

    def delete_endpoint(self, ep: Endpoint) -> None:
        """Driver → store → IPAM. Best effort and idempotent: every step runs, failures
        are collected and reported together. The record goes before its addresses: a
        crash in between leaves addresses nothing holds (start-up gives them back,
        reconcile_ipam), never a record naming addresses IPAM may hand out again."""
        with self.lock:
            net = self._networks.get(ep.network_id)
            errors: list[str] = []
            if net is not None:
                try:
                    self.drivers.get(net.driver).delete_endpoint(net.id, ep.id)
                except CNMError as exc:
                    errors.append(str(exc))
            self.stores["local"].delete(EP_PREFIX + ep.id)
            self._forget_endpoint(ep)
            errors += self._release_addresses(ep)
            if errors:
                log.warning("endpoint %s removed with errors: %s", ep.name, "; ".join(errors))

    def _release_addresses(self, ep: Endpoint) -> list[str]:
        """Give the endpoint's addresses back to IPAM; the errors, if any."""
        net = self._networks.get(ep.network_id)
        if net is None or net.ipam_driver == "null":
            return []
        errors = []
        ipam = self.ipams.get(net.ipam_driver)
        for pool_id, addr in ((ep.pool_id, ep.address), (ep.pool_id_v6, ep.address_v6)):
            if pool_id and addr:
                try:
                    ipam.release_address(pool_id, str(addr))
                except CNMError as exc:
                    errors.append(str(exc))
        return errors

    def defers_teardown(self, ep: Endpoint) -> bool:
        """Whether the endpoint's driver deletes its kernel objects in the background."""
        net = self._networks.get(ep.network_id)
        return net is not None and defers_teardown(self.drivers.get(net.driver))

    def remove_endpoint(self, ep: Endpoint) -> None:
        """Leave (if joined) and delete the endpoint. A driver that deletes in the
        background (cnm.retiring) takes its kernel objects out of use once the caller's
        store transaction commits, and its addresses are given back when they are gone.
        Best effort and idempotent, as leave and delete_endpoint are."""
        with self.lock:
            net = self._networks.get(ep.network_id)
            driver = self.drivers.get(net.driver) if net is not None else None
            if net is None or driver is None or not defers_teardown(driver) or ep.id not in self._endpoints:
                self.leave(ep)
                self.delete_endpoint(ep)
                return
            try:
                driver.revoke_external_connectivity(net.id, ep.id)
            except CNMError as exc:
                log.warning("leave %s: %s", ep.name, exc)
            joined = ep.state == EndpointState.JOINED.value
            ep.state, ep.port_bindings = EndpointState.CREATED.value, []
            self.retirements.retire(ep, net, driver)  # type: ignore[arg-type]
            self._forget_endpoint(ep)
            if joined:
                self._notify_endpoint("disconnect", net, ep)

    def save_endpoint(self, ep: Endpoint) -> None:
        self.stores["local"].put(EP_PREFIX + ep.id, ep.to_record())

    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        try:
            return self._endpoints[endpoint_id]
        except KeyError:
            raise NotFound(f"endpoint {endpoint_id[:12]} not found") from None

    def join(self, ep: Endpoint, sandbox_id: str, sandbox_key: str, ifname: str) -> JoinResult:
        """The driver's join; the endpoint records what it answered (gateway, static
        default route, opt-out of the gateway bridge) and the interface name the
        sandbox gives it. Plugging the interface in is the sandbox's (cnm.sandbox).
        Rolls back on failure (the endpoint itself stays, as after create)."""
        with self.lock:
            net = self._networks[ep.network_id]
            driver = self.drivers.get(net.driver)
            with Undo() as undo:
                # A driver that creates the sandbox's end there names it as asked (no rename).
                options = {labels.ENDPOINT_IFNAME: ifname} if driver.capabilities().names_interfaces else {}
                result = driver.join(net.id, ep.id, sandbox_key, options)
                undo.push(driver.leave, net.id, ep.id)
                ep.state = EndpointState.JOINED.value
                ep.sandbox_id, ep.ifname = sandbox_id, ifname
                ep.port_bindings = []
                ep.gateway = host_of(result.gateway, f"gateway from driver {net.driver}") if result.gateway else None
                ep.gateway_v6 = (
                    host_of(result.gateway_v6, f"IPv6 gateway from driver {net.driver}") if result.gateway_v6 else None
                )
                ep.static_default_route = any(r.destination in ("0.0.0.0/0", "::/0") for r in result.static_routes)
                ep.disable_gateway_service = result.disable_gateway_service
                self.save_endpoint(ep)
                undo.commit()
            self._notify_endpoint("connect", net, ep)
            return result

    def program_external_connectivity(self, ep: Endpoint, bindings: list[dict]) -> None:
        """Publish ports on a joined endpoint (`bindings` in Docker's wire shape)."""
        with self.lock:
            net = self._networks[ep.network_id]
            self.drivers.get(net.driver).program_external_connectivity(net.id, ep.id, {PORTMAP: bindings})
            ep.port_bindings = list(bindings)
            self.save_endpoint(ep)

    def revoke_external_connectivity(self, ep: Endpoint) -> None:
        """Idempotent."""
        with self.lock:
            net = self._networks.get(ep.network_id)
            if net is not None:
                self.drivers.get(net.driver).revoke_external_connectivity(net.id, ep.id)
            ep.port_bindings = []
            if ep.id in self._endpoints:
                self.save_endpoint(ep)

    def leave(self, ep: Endpoint) -> None:
        """Revoke ports, driver leave. Idempotent; the sandbox unplugs the interface
        first (cnm.sandbox)."""
        with self.lock:
            net = self._networks.get(ep.network_id)
            if net is None:
                return
            driver = self.drivers.get(net.driver)
            for step in (
                lambda: driver.revoke_external_connectivity(net.id, ep.id),
                lambda: driver.leave(net.id, ep.id),
            ):
                try:
                    step()
                except CNMError as exc:
                    log.warning("leave %s: %s", ep.name, exc)
            joined = ep.state == EndpointState.JOINED.value
            ep.state = EndpointState.CREATED.value
            ep.port_bindings = []
            if ep.id in self._endpoints:
                self.save_endpoint(ep)
            if joined:
                self._notify_endpoint("disconnect", net, ep)

    def all_endpoints(self) -> list[Endpoint]:
        with self.lock:
            return list(self._endpoints.values())

    def restore_endpoint(self, ep: Endpoint) -> None:
        """After a daemon restart: tell the driver about an endpoint that still exists
        in the kernel (and re-publish its ports)."""
        with self.lock:
            net = self._networks.get(ep.network_id)
            if net is None:
                return
            driver = self.drivers.get(net.driver)
            driver.restore_endpoint(
                net.id,
                ep.id,
                EndpointInterface(text(ep.address), text(ep.address_v6), ep.mac),
                {PORTMAP: list(ep.port_bindings)} if ep.port_bindings else {},
            )

    def reconcile_ipam(self) -> int:
        """Release addresses IPAM holds that nothing references (a crash between
        "address reserved" and "endpoint stored"). Only for IPAMs that can list their
        allocations; returns how many were released."""
        with self.lock:
            released = 0
            for net in self._networks.values():
                if net.ipam_driver == "null" or net.scope != "local":
                    continue
                ipam = self.ipams.get(net.ipam_driver)
                allocated = getattr(ipam, "allocated", None)
                if allocated is None:
                    continue
                eps = self.endpoints_of(net.id)
                for pool in net.pools:
                    used = {a for a in (pool.gateway, *pool.aux_addresses.values()) if a is not None}
                    used |= {a.ip for ep in eps for a in ep.addresses()}
                    used |= self.retirements.addresses(net.id)
                    try:
                        for addr in allocated(pool.pool_id):
                            if host_of(addr) not in used:
                                log.warning("releasing leaked address %s in network %s", addr, net.name)
                                ipam.release_address(pool.pool_id, addr)
                                released += 1
                    except CNMError as exc:  # a missing or corrupt pool must not stop start-up
                        log.error("network %s: cannot reconcile pool %s: %s", net.name, pool.pool_id, exc)
            return released
