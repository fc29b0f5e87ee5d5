"""Service discovery glue: keeps the embedded resolver's name table and listeners in
step with networks and endpoints. One object, called by the controller (networks) and
the container service (endpoints); the resolver itself is cnm.dns."""

from __future__ import annotations

import logging
from collections.abc import Callable

from cnm.addresses import text
from cnm.dns import NameTable
from cnm.dns.resolvconf import embedded_resolv_conf
from cnm.errors import CNMError
from cnm.model import Endpoint, Network

log = logging.getLogger(__name__)

# Drivers whose networks get the embedded resolver (Docker: user-defined networks).
DNS_DRIVERS = ("bridge", "overlay")
GATEWAY_BRIDGE = "cnm_gwbridge"


def uses_embedded_dns(net: Network) -> bool:
    """User-defined networks only; the default bridge keeps the host's resolvers."""
    return not net.builtin and net.driver in DNS_DRIVERS


def has_local_listener(net: Network) -> bool:
    """Overlay gateways live in the overlay's own namespace, out of the daemon's reach:
    their containers ask the resolver on the gateway bridge instead."""
    return uses_embedded_dns(net) and net.driver == "bridge"


class ServiceDiscovery:
    def __init__(self, table: NameTable | None = None) -> None:
        self.table = table or NameTable()
        self.resolver = None  # cnm.dns.server.Resolver, set once the loop runs
        self._listeners: dict[str, list[str]] = {}  # network id -> gateway addresses
        self._bound: set[str] = set()  # networks whose listener is up

    # ---- networks (called from worker threads, or before the loop starts) ----
    def network_event(self, event: str, net: Network) -> None:
        if not has_local_listener(net):
            if event == "delete":
                self.table.remove_network(net.id)
            return
        if event == "create":
            gws = [str(p.gateway) for p in net.pools if p.gateway]
            self._listeners[net.id] = gws
            if self.resolver is not None:
                for gw in gws:
                    try:
                        self.resolver.add_listener_threadsafe(net.id, gw)
                        self._bound.add(net.id)
                    except CNMError as exc:
                        log.error("no DNS on network %s (%s): its containers keep the host's resolvers", net.name, exc)
        elif event == "delete":
            self._listeners.pop(net.id, None)
            self._bound.discard(net.id)
            if self.resolver is not None:
                self.resolver.remove_listener_threadsafe(net.id)
            self.table.remove_network(net.id)

    async def start(self, resolver) -> None:
        """Bind a listener on every known user network's gateways (on the loop)."""
        self.resolver = resolver
        for nid, gws in self._listeners.items():
            for gw in gws:
                try:
                    await resolver.add_listener(nid, gw)
                    self._bound.add(nid)
                except CNMError as exc:
                    log.error("DNS listener on %s: %s", gw, exc)

    # ---- endpoints (called synchronously inside run/connect/disconnect) ----
    def endpoint_joined(self, net: Network, ep: Endpoint) -> None:
        if net.name == GATEWAY_BRIDGE:
            # Identifies the container when it asks through the gateway bridge; answers to no name.
            self.table.add(
                net.id,
                net.name,
                ep.id,
                ep.container_id,
                ep.name,
                [],
                text(ep.address),
                text(ep.address_v6),
                publish=False,
            )
        elif uses_embedded_dns(net):
            self.table.add(
                net.id, net.name, ep.id, ep.container_id, ep.name, ep.aliases, text(ep.address), text(ep.address_v6)
            )

    def remote_endpoint_up(self, net: Network, rec: dict) -> None:
        """A container on another host of a global network (from the cluster store)."""
        if uses_embedded_dns(net) and rec.get("name"):
            self.table.add(
                net.id,
                net.name,
                rec["endpoint_id"],
                rec.get("container_id"),
                rec["name"],
                rec.get("aliases") or [],
                rec.get("ip"),
                rec.get("ip6"),
            )

    def remote_endpoint_down(self, endpoint_id: str) -> None:
        self.table.remove(endpoint_id)

    def endpoint_left(self, ep: Endpoint) -> None:
        self.table.remove(ep.id)

    def resolv_conf(self, nets: list[Network], host_text: str, fallback: Callable[[str], str]) -> str:
        # Only gateways whose listener is up: a resolver that does not answer is worse
        # than the host's resolvers.
        gws = [
            str(p.gateway)
            for n in nets
            if has_local_listener(n) and n.id in self._bound
            for p in n.v4_pools()
            if p.gateway
        ]
        return embedded_resolv_conf(gws, host_text) if gws else fallback(host_text)
