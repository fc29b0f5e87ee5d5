"""The sandbox's rules, as pure functions over what it knows of its endpoints.

One view of the endpoints, in attach order, answers every question a join or a leave
asks: does the sandbox need an endpoint on the gateway bridge (libnetwork's
`needDefaultGW`, computed once from all endpoints), which endpoint holds the default
route, where published ports belong, and what the next interface is called. No I/O:
unit-tested without root.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from cnm.addresses import IPAddress
from cnm.driverapi import JoinResult

# Drivers whose endpoints never need (or give) a way out through the gateway bridge.
NO_GATEWAY_DRIVERS = ("null", "host")
IFNAME_PREFIX = "eth"


@dataclass(frozen=True)
class EndpointView:
    """One endpoint of a sandbox as the rules see it (from the endpoint, its network
    and what its driver's join answered)."""

    id: str
    ifname: str | None = None
    driver: str = "bridge"
    internal: bool = False
    on_gateway_bridge: bool = False  # the sandbox's own endpoint on the gateway bridge
    gateway: IPAddress | None = None
    gateway_v6: IPAddress | None = None
    static_default_route: bool = False  # the join gave a static route to 0/0 or ::/0
    disable_gateway_service: bool = False
    holds_ports: bool = False  # published ports are programmed on it

    def gives_a_way_out(self) -> bool:
        return bool(self.gateway or self.gateway_v6 or self.static_default_route)


def has_static_default_route(result: JoinResult) -> bool:
    return any(r.destination in ("0.0.0.0/0", "::/0") for r in result.static_routes)


def needs_gateway_bridge(endpoints: Sequence[EndpointView]) -> bool:
    """Docker's rule: the sandbox needs the gateway bridge when it has an endpoint that
    could lead out (not null/host, not internal, not opted out) and none of those
    gives a way out. The gateway-bridge endpoint itself does not count."""
    need = False
    for ep in endpoints:
        if ep.on_gateway_bridge or ep.driver in NO_GATEWAY_DRIVERS or ep.internal or ep.disable_gateway_service:
            continue
        if ep.gives_a_way_out():
            return False
        need = True
    return need


def gateway_bridge_endpoint(endpoints: Sequence[EndpointView]) -> EndpointView | None:
    return next((ep for ep in endpoints if ep.on_gateway_bridge), None)


def without_unneeded_gateway_bridge(endpoints: Sequence[EndpointView]) -> list[EndpointView]:
    """The endpoints that stay: all of them, less the gateway-bridge endpoint when
    the others no longer need it."""
    if needs_gateway_bridge(endpoints):
        return list(endpoints)
    return [ep for ep in endpoints if not ep.on_gateway_bridge]


def gateway_endpoint(endpoints: Sequence[EndpointView]) -> EndpointView | None:
    """The endpoint that holds the default route: the first, in attach order, that
    gives a way out. (A join makes its endpoint the holder only when no earlier one
    gives a way out, so the holder changes only when it leaves or when the gateway
    bridge is dropped.)"""
    return next((ep for ep in endpoints if ep.gives_a_way_out()), None)


def port_endpoint(endpoints: Sequence[EndpointView]) -> EndpointView | None:
    """Where published ports belong: the endpoint with the way out (the gateway
    bridge's, for an overlay or a plugin that gives none); else the first endpoint
    not on the gateway bridge (an internal network's, whose driver then refuses)."""
    return gateway_endpoint(endpoints) or next(
        (ep for ep in endpoints if not ep.on_gateway_bridge and ep.driver not in NO_GATEWAY_DRIVERS), None
    )


def ports_holder(endpoints: Sequence[EndpointView]) -> EndpointView | None:
    return next((ep for ep in endpoints if ep.holds_ports), None)


def next_ifname(endpoints: Sequence[EndpointView], prefix: str = IFNAME_PREFIX, taken: Collection[str] = ()) -> str:
    """The lowest free `prefix<N>` (eth0, eth1, …; a gap left by a disconnect is reused),
    none of `taken` (names of interfaces on their way out)."""
    names = [ep.ifname for ep in endpoints if ep.ifname] + list(taken)
    used = {int(name[len(prefix) :]) for name in names if name.startswith(prefix) and name[len(prefix) :].isdigit()}
    i = 0
    while i in used:
        i += 1
    return f"{prefix}{i}"


def parked_ifname(endpoint_id: str) -> str:
    """The name an endpoint's interface waits under until its driver deletes it: unique
    per endpoint, never a name a join gives (15 characters, IFNAMSIZ)."""
    return "gone" + endpoint_id[:11]
