"""The sandbox's pure rules: gateway bridge (libnetwork's needDefaultGW), default
route, where ports go, interface names; and the hosts/resolv.conf text."""

from __future__ import annotations

from ipaddress import ip_address

from cnm.driverapi import JoinResult, StaticRoute
from cnm.sandbox import rules
from cnm.sandbox.files import container_resolv_conf, hosts_file
from cnm.sandbox.rules import EndpointView as V


def bridge(eid: str, ifname: str | None = None, **kw: object) -> V:
    return V(eid, ifname, driver="bridge", gateway="10.0.0.1", **kw)  # type: ignore[arg-type]


def overlay(eid: str, ifname: str | None = None, **kw: object) -> V:
    return V(eid, ifname, driver="overlay", **kw)  # type: ignore[arg-type]


def gwbridge(eid: str = "gw", ifname: str | None = None) -> V:
    return V(eid, ifname, driver="bridge", gateway="172.30.0.1", on_gateway_bridge=True)


def test_gateway_bridge_needed_only_when_nothing_else_leads_out():
    assert not rules.needs_gateway_bridge([])
    assert not rules.needs_gateway_bridge([bridge("a")])
    assert rules.needs_gateway_bridge([overlay("a")])
    # One endpoint with a way out is enough, in either order (computed from all of them).
    assert not rules.needs_gateway_bridge([overlay("a"), bridge("b")])
    assert not rules.needs_gateway_bridge([bridge("a"), overlay("b")])
    # The gateway-bridge endpoint itself does not count.
    assert rules.needs_gateway_bridge([overlay("a"), gwbridge()])
    assert not rules.needs_gateway_bridge([gwbridge()])


def test_what_does_not_count_for_the_gateway_bridge():
    for quiet in (
        V("a", driver="overlay", internal=True),
        V("a", driver="null"),
        V("a", driver="host"),
        V("a", driver="overlay", disable_gateway_service=True),
    ):
        assert not rules.needs_gateway_bridge([quiet])
        assert rules.needs_gateway_bridge([quiet, overlay("b")])
    # A static default route or an IPv6-only gateway is a way out too.
    assert not rules.needs_gateway_bridge([V("a", driver="remote", static_default_route=True)])
    assert not rules.needs_gateway_bridge([V("a", driver="remote", gateway_v6="fd00::1")])


def test_default_route_is_the_first_way_out_in_attach_order():
    assert rules.gateway_endpoint([]) is None
    assert rules.gateway_endpoint([overlay("a")]) is None
    assert rules.gateway_endpoint([overlay("a"), gwbridge("g")]).id == "g"
    assert rules.gateway_endpoint([bridge("a"), bridge("b")]).id == "a"
    assert rules.gateway_endpoint([overlay("a"), bridge("b"), gwbridge("g")]).id == "b"


def test_an_unneeded_gateway_bridge_is_dropped():
    eps = [overlay("a"), gwbridge("g"), bridge("b")]
    assert [v.id for v in rules.without_unneeded_gateway_bridge(eps)] == ["a", "b"]
    eps = [overlay("a"), gwbridge("g")]
    assert rules.without_unneeded_gateway_bridge(eps) == eps
    assert rules.without_unneeded_gateway_bridge([gwbridge("g")]) == []


def test_ports_go_with_the_way_out():
    assert rules.port_endpoint([overlay("a"), gwbridge("g")]).id == "g"
    assert rules.port_endpoint([bridge("a"), bridge("b")]).id == "a"
    # No way out at all (an internal network): the first endpoint, whose driver decides.
    assert rules.port_endpoint([V("i", driver="bridge", internal=True)]).id == "i"
    assert rules.port_endpoint([]) is None
    assert rules.ports_holder([bridge("a"), bridge("b", holds_ports=True)]).id == "b"
    assert rules.ports_holder([bridge("a")]) is None


def test_interface_names_fill_the_lowest_gap():
    assert rules.next_ifname([]) == "eth0"
    assert rules.next_ifname([bridge("a", "eth0"), bridge("b", "eth1")]) == "eth2"
    assert rules.next_ifname([bridge("b", "eth1")]) == "eth0"
    assert rules.next_ifname([bridge("a", "eth0"), bridge("c", "eth2")]) == "eth1"
    assert rules.next_ifname([bridge("a", "ethx"), bridge("b", "wlan0")]) == "eth0"
    assert rules.next_ifname([bridge("a", "net0")], prefix="net") == "net1"


def test_static_default_route_from_a_join():
    assert rules.has_static_default_route(JoinResult("v", static_routes=(StaticRoute("0.0.0.0/0", 1),)))
    assert rules.has_static_default_route(JoinResult("v", static_routes=(StaticRoute("::/0", 0, "fe80::1"),)))
    assert not rules.has_static_default_route(JoinResult("v", static_routes=(StaticRoute("10.0.0.0/8", 1),)))


def test_hosts_file():
    text = hosts_file("web", [ip_address("172.18.0.2"), ip_address("fd00::2")], [("10.0.0.9", "db")])
    lines = text.splitlines()
    assert lines[0] == "127.0.0.1\tlocalhost"
    assert lines[-3:] == ["172.18.0.2\tweb", "fd00::2\tweb", "10.0.0.9\tdb"]
    assert text.endswith("\n")


def test_resolv_conf_drops_loopback_resolvers():
    assert (
        container_resolv_conf("nameserver 127.0.0.53\nsearch x\n")
        == "search x\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    )
    assert container_resolv_conf("nameserver ::1\nnameserver 192.0.2.1\n") == "nameserver 192.0.2.1\n"
