"""The bridge driver's published ports and retired veths: port bindings handed to the
firewall (and taken back), and an endpoint's veth taken out of use at once and deleted
later in a batch (drivers.bridge.graveyard).

A mixin of drivers.bridge.driver.BridgeDriver (kept apart: the driver is long
enough); every method takes the driver's lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from cnm import labels
from cnm.errors import InvalidParameter, NotFound
from drivers.bridge import naming
from drivers.bridge.graveyard import Graveyard
from drivers.bridge.hooks import BridgeFirewall, PublishedEndpoint
from drivers.bridge.kernel import BridgeNetwork, HostNetlink

PORTMAP_OPTION = labels.PORTMAP


class BridgeExternal:
    _firewall: BridgeFirewall
    _lock: threading.RLock
    _networks: dict[str, BridgeNetwork]
    graveyard: Graveyard

    if TYPE_CHECKING:  # BridgeDriver's own

        @property
        def nl(self) -> HostNetlink: ...
        def _network(self, network_id: str) -> BridgeNetwork: ...

    def delete_endpoint_later(self, network_id: str, endpoint_id: str, done: Callable[[], None]) -> None:
        """Leave and delete the endpoint with its veth taken out of use now (down: no
        traffic either way) and deleted in the background (cnm's deferred teardown:
        see drivers.bridge.graveyard). `done()` is called from the graveyard's thread
        once the veth is gone: only then may the caller hand out again what it
        held (its addresses and MAC). Until then the veth counts as a bridge port."""
        host, alias = naming.host_ifname(endpoint_id), naming.endpoint_alias(endpoint_id)
        with self._lock:
            net = self._networks.get(network_id)
            if net is not None:
                net.endpoints.pop(endpoint_id, None)
                net.retiring.add(endpoint_id)
            self.graveyard.retire(self.nl, host, alias)

        def gone() -> None:
            with self._lock:
                if net is not None:
                    net.retiring.discard(endpoint_id)
            done()

        self.graveyard.bury(host, alias, gone)

    def collect_retired(self) -> None:
        """At start-up: delete at once every veth an earlier life of the daemon retired
        (one request for all of them)."""
        with self._lock:
            self.graveyard.collect(self.nl)

    def program_external_connectivity(self, network_id: str, endpoint_id: str, options: Mapping[str, object]) -> None:
        with self._lock:
            net = self._network(network_id)
            ep = net.endpoints.get(endpoint_id)
            if ep is None:
                raise NotFound(f"endpoint {endpoint_id[:12]} is not known to the bridge driver")
            raw = options.get(PORTMAP_OPTION) or ()
            if not isinstance(raw, (list, tuple)):
                raise InvalidParameter(f"{PORTMAP_OPTION} must be a list of port bindings")
            bindings = tuple(dict(b) for b in raw)
            if net.config.internal and bindings:
                raise InvalidParameter("ports cannot be published on an internal network")
            self._firewall.ports_published(
                PublishedEndpoint(
                    network_id=network_id,
                    endpoint_id=endpoint_id,
                    bridge_name=net.bridge,
                    address=naming.plain_address(ep.address),
                    address_v6=naming.plain_address(ep.address_v6),
                    host_binding_ipv4=net.config.host_binding_ipv4,
                    port_bindings=bindings,
                )
            )
            ep.port_bindings = bindings

    def revoke_external_connectivity(self, network_id: str, endpoint_id: str) -> None:
        with self._lock:
            self._firewall.ports_revoked(network_id, endpoint_id)
            net = self._networks.get(network_id)
            ep = net.endpoints.get(endpoint_id) if net else None
            if ep is not None:
                ep.port_bindings = ()
