"""The Sandbox over fakes at the OS seam (no root): the real controller, IPAM and bridge
driver; a driver whose join names no gateway (as overlay and some plugins answer).
Asserts what results — interfaces and routes inside the sandbox's namespace, the
ports each endpoint publishes, names, records — after joins, leaves and releases."""

from __future__ import annotations

import pytest

from cnm.container_requests import EndpointRequest
from cnm.errors import Conflict, InvalidParameter
from cnm.naming import GATEWAY_BRIDGE
from cnm.ports import PortBinding
from cnm.requests import IPAMConfigRequest, NetworkCreate
from cnm.sandbox.sandbox import SANDBOX_PREFIX, Sandbox
from tests.unit.fakehost import FakeHost

CID = "c0ffee" + "0" * 58
WEB = PortBinding("tcp", 80, None, 8080)


@pytest.fixture
def host():
    h = FakeHost()
    yield h
    h.close()


def network(host: FakeHost, name: str, subnet: str, driver: str = "bridge", **kw: object):
    return host.controller.create_network(
        NetworkCreate(name=name, driver=driver, ipam_configs=[IPAMConfigRequest(subnet=subnet)], **kw)
    )  # type: ignore[arg-type]


def build(host: FakeHost, *nets, ports=(), cid: str = CID) -> Sandbox:
    return host.sandboxes.build(cid, cid, "web", "webhost", [(n, EndpointRequest()) for n in nets], list(ports))


def ifnames(host: FakeHost, sb: Sandbox) -> list[str]:
    return sorted(n for n in host.ns(sb.key).link_names() if n != "lo")


def by_network(sb: Sandbox) -> dict[str, object]:
    return {ep.network_id: ep for ep in sb.endpoints()}


def test_bridge_network_eth0_addressed_routed_named(host):
    net = network(host, "n1", "10.1.0.0/24")
    sb = build(host, net)
    assert sb.key == f"{host.os.netns_dir}/{CID[:12]}"
    assert ifnames(host, sb) == ["eth0"]
    eth0 = host.ns(sb.key).link("eth0")
    assert eth0.up and host.ns(sb.key).link("lo").up
    assert host.ns(sb.key).addresses("eth0") == ["10.1.0.2/24"]
    assert host.default_routes(sb.key) == {"0.0.0.0/0": ("eth0", "10.1.0.1")}
    assert sb.hosts().splitlines()[-1] == "10.1.0.2\twebhost"
    assert "nameserver 192.0.2.53" in sb.resolv_conf()
    assert host.discovery.table.addresses() == {"10.1.0.2"}
    assert host.store.get(SANDBOX_PREFIX + CID).value["endpoint_ids"] == [sb.endpoints()[0].id]
    assert GATEWAY_BRIDGE not in {n.name for n in host.controller.list_networks()}


def test_no_gateway_gets_the_gateway_bridge_with_route_and_ports(host):
    ov = network(host, "ov", "10.2.0.0/24", driver="nogw")
    sb = build(host, ov, ports=[WEB])
    assert ifnames(host, sb) == ["eth0", "eth1"]
    gwnet = host.controller.get_network(GATEWAY_BRIDGE)
    eps = by_network(sb)
    assert set(eps) == {ov.id, gwnet.id}
    assert host.default_routes(sb.key)["0.0.0.0/0"][0] == "eth1"
    # Ports are published where the way out is: on the gateway bridge.
    assert list(host.firewall.published) == [eps[gwnet.id].id]
    assert [p.host_port for p in sb.published_ports()] == [8080]
    assert sb.hosts().splitlines()[-1] == "10.2.0.2\twebhost"  # the network's address, not the plumbing


def test_connecting_a_way_out_drops_the_gateway_bridge_and_moves_route_and_ports(host):
    ov = network(host, "ov", "10.2.0.0/24", driver="nogw")
    br = network(host, "br", "10.3.0.0/24")
    sb = build(host, ov, ports=[WEB])
    gwnet = host.controller.get_network(GATEWAY_BRIDGE)
    gw_ep = by_network(sb)[gwnet.id]
    sb.join(br, EndpointRequest(aliases=["api"]))
    eps = by_network(sb)
    assert set(eps) == {ov.id, br.id}  # the gateway bridge endpoint left
    # Its interface is out of use and out of the way at once, deleted in the background.
    parked = f"gone{gw_ep.id[:11]}"
    assert ifnames(host, sb) == ["eth0", "eth2", parked] and not host.ns(sb.key).link(parked).up
    host.settle()
    assert ifnames(host, sb) == ["eth0", "eth2"]
    assert host.default_routes(sb.key) == {"0.0.0.0/0": ("eth2", "10.3.0.1")}
    assert list(host.firewall.published) == [eps[br.id].id]  # ports moved with the way out
    assert gw_ep.id not in {ep.id for ep in host.controller.all_endpoints()}
    assert [p.host_port for p in sb.published_ports()] == [8080]
    # And back: leaving the bridge brings the gateway bridge back, route and ports with it.
    sb.leave(eps[br.id])
    host.settle()
    eps = by_network(sb)
    assert set(eps) == {ov.id, gwnet.id}
    assert ifnames(host, sb) == ["eth0", "eth1"]
    assert host.default_routes(sb.key)["0.0.0.0/0"][0] == "eth1"
    assert list(host.firewall.published) == [eps[gwnet.id].id]


def test_a_way_out_first_means_no_gateway_bridge_at_all(host):
    br = network(host, "br", "10.3.0.0/24")
    ov = network(host, "ov", "10.2.0.0/24", driver="nogw")
    sb = build(host, br)
    sb.join(ov, EndpointRequest())
    assert set(by_network(sb)) == {br.id, ov.id}
    assert host.default_routes(sb.key) == {"0.0.0.0/0": ("eth0", "10.3.0.1")}


def test_leaving_the_default_route_holder_routes_via_the_next(host):
    a = network(host, "a", "10.4.0.0/24")
    b = network(host, "b", "10.5.0.0/24")
    sb = build(host, a, ports=[WEB])
    sb.join(b, EndpointRequest())
    assert host.default_routes(sb.key) == {"0.0.0.0/0": ("eth0", "10.4.0.1")}
    sb.leave(by_network(sb)[a.id])
    assert host.default_routes(sb.key) == {"0.0.0.0/0": ("eth1", "10.5.0.1")}
    assert list(host.firewall.published) == [by_network(sb)[b.id].id]
    # The freed name is used again, at once: the old interface was renamed out of the way.
    sb.join(a, EndpointRequest())
    host.settle()
    assert ifnames(host, sb) == ["eth0", "eth1"] and by_network(sb)[a.id].ifname == "eth0"
    assert host.default_routes(sb.key) == {"0.0.0.0/0": ("eth1", "10.5.0.1")}


def test_names_announced_at_join_and_withdrawn_at_leave(host):
    net = network(host, "n1", "10.1.0.0/24")
    sb = build(host, net)
    sb.join(network(host, "n2", "10.6.0.0/24"), EndpointRequest(aliases=["db"]))
    ep2 = [ep for ep in sb.endpoints() if ep.aliases == ["db"]][0]
    assert host.discovery.table.addresses() == {"10.1.0.2", "10.6.0.2"}
    sb.leave(ep2)
    assert host.discovery.table.addresses() == {"10.1.0.2"}
    sb.release()
    assert host.discovery.table.addresses() == set()


def test_release_leaves_nothing(host):
    ov = network(host, "ov", "10.2.0.0/24", driver="nogw")
    before_links = host.host_links()
    sb = build(host, ov, ports=[WEB])
    assert host.host_links() != before_links
    sb.release()
    assert not host.world.exists(sb.key)
    assert host.controller.all_endpoints() == []
    assert host.host_links("veth") == [] and set(host.host_links()) - set(before_links) <= {GATEWAY_BRIDGE}
    assert host.ports.allocations() == []
    assert host.store.get(SANDBOX_PREFIX + CID) is None and host.sandboxes.get(CID) is None
    assert host.firewall.published == {}
    sb.release()  # idempotent


def test_a_failed_build_rolls_back_everything(host):
    net = network(host, "n1", "10.1.0.0/24")
    host.ports.allocate("tcp", None, 8080, owner="someone")
    records = {kv.key for kv in host.store.list("")}
    with pytest.raises(Conflict, match="8080"):
        build(host, net, ports=[WEB])
    host.settle()
    assert host.world.namespaces == {}
    assert host.controller.all_endpoints() == [] and host.host_links("veth") == []
    assert {kv.key for kv in host.store.list("")} == records
    assert host.sandboxes.get(CID) is None
    # Nothing was held back: the same build works once the port is free.
    host.ports.release_owner("someone")
    assert build(host, net, ports=[WEB]).published_ports()[0].host_port == 8080


def test_a_failed_join_changes_nothing(host):
    net = network(host, "n1", "10.1.0.0/24")
    sb = build(host, net, ports=[WEB])
    other = network(host, "n2", "10.7.0.0/24")
    state = (
        ifnames(host, sb),
        host.default_routes(sb.key),
        dict(host.firewall.published),
        {kv.key: kv.value for kv in host.store.list("")},
    )
    with pytest.raises(InvalidParameter, match="not within any subnet"):
        sb.join(other, EndpointRequest(ip="10.99.0.5"))
    host.world.host.fail_next["create_veth"] = Conflict("injected")
    with pytest.raises(Conflict, match="injected"):
        sb.join(other, EndpointRequest())
    assert (
        ifnames(host, sb),
        host.default_routes(sb.key),
        dict(host.firewall.published),
        {kv.key: kv.value for kv in host.store.list("")},
    ) == state


def test_building_twice_is_refused_and_release_makes_room(host):
    net = network(host, "n1", "10.1.0.0/24")
    sb = build(host, net)
    with pytest.raises(Conflict, match="exists already"):
        build(host, net)
    sb.release()
    again = build(host, net)
    assert ifnames(host, again) == ["eth0"]


def test_after_a_restart_the_sandbox_is_found_and_restored(host):
    ov = network(host, "ov", "10.2.0.0/24", driver="nogw")
    sb = build(host, ov, ports=[WEB])
    order = list(sb.record.endpoint_ids)
    host.ports.release_owner(sb.id)  # the new daemon's allocator starts empty
    again = host.make_sandboxes().get(CID)
    assert again is not None and again.record.endpoint_ids == order
    again.restore(pid=4242)
    assert again.key == sb.key
    assert [a[2] for a in host.ports.allocations()] == [8080]
    assert [p.host_port for p in again.published_ports()] == [8080]
