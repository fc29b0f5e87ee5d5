"""The SDK end to end: plugins written with it, reached through RemoteDriver/RemoteIpam
(the same classes the daemon uses), and this project's drivers served through it."""

from __future__ import annotations

import json

import pytest

from cnm.driverapi import EndpointInterface, IPAMData, JoinResult, NetworkSpec, StaticRoute
from cnm.errors import Conflict, InternalError, InvalidParameter, NotFound
from cnm.ipamapi import Pool
from cnm.osl.fake import FakeNetlink
from cnm.plugins.client import PluginClient
from cnm.plugins.discovery import PluginSpec
from cnm.plugins.sdk import Dispatcher, IpamPlugin, NetworkPlugin, interface_answer, join_answer, make_server
from cnm.plugins.serve import DriverPlugin, IpamAdapter
from cnm.store.memory import MemoryStore
from drivers.bridge import BridgeDriver
from drivers.remote import RemoteDriver
from ipam.default import DefaultIpam
from ipam.remote import RemoteIpam

NID, EID = "a" * 64, "b" * 64


class Memo(NetworkPlugin):
    """A small SDK plugin that remembers what it was told."""

    def __init__(self) -> None:
        self.networks: dict[str, tuple] = {}

    def create_network(self, network_id, options, ipv4, ipv6):
        if options.get("fail") == "yes":
            raise InvalidParameter("option fail=yes refused")
        self.networks[network_id] = (options, ipv4, ipv6)

    def create_endpoint(self, network_id, endpoint_id, iface, options):
        if network_id not in self.networks:
            raise NotFound(f"network {network_id[:12]} unknown")
        return EndpointInterface(iface.address, iface.address_v6, "02:00:00:00:00:07")

    def join(self, network_id, endpoint_id, sandbox_key, options):
        return JoinResult(
            "veth-m", "eth", gateway="10.1.0.1", static_routes=(StaticRoute("10.9.0.0/16", 0, "10.1.0.254"),)
        )


class Pools(IpamPlugin):
    requires_mac_address = True

    def request_pool(self, address_space, pool, sub_pool, options, v6):
        return Pool("p1", pool or "10.1.0.0/24", {"com.docker.network.gateway": "10.1.0.1/24"})

    def request_address(self, pool_id, address, options):
        if address == "10.1.0.3":
            raise Conflict("10.1.0.3 is taken")
        return f"{address or '10.1.0.2'}/24"


@pytest.fixture
def served(tmp_path):
    server = make_server(Memo(), Pools(), name="memo", plugin_dir=str(tmp_path)).start()
    client = PluginClient(PluginSpec("memo", f"unix://{server.path}", server.path), timeout=2, activate_retry=0)
    yield client
    server.close()


def test_sdk_plugin_through_remote_driver(served):
    d = RemoteDriver("memo", served)
    assert d.capabilities().data_scope == "local"
    spec = NetworkSpec(NID, "n", {"mtu": "1400"}, ipv4=(IPAMData("10.1.0.0/24", "10.1.0.1/24"),))
    d.create_network(spec)
    iface = d.create_endpoint(NID, EID, EndpointInterface("10.1.0.2/24"), {})
    assert iface == EndpointInterface("10.1.0.2/24", None, "02:00:00:00:00:07")
    assert d.join(NID, EID, "/x", {}) == JoinResult(
        "veth-m", "eth", "10.1.0.1", None, (StaticRoute("10.9.0.0/16", 0, "10.1.0.254"),)
    )
    d.program_external_connectivity(NID, EID, {})  # default: accepted
    d.leave(NID, EID), d.delete_endpoint(NID, EID), d.delete_network(NID)
    with pytest.raises(InvalidParameter, match="network plugin memo: option fail=yes refused"):
        d.create_network(NetworkSpec("c" * 64, "n", {"fail": "yes"}))
    with pytest.raises(NotFound, match="network plugin memo: network cccccccccccc unknown"):
        d.create_endpoint("c" * 64, EID, EndpointInterface(), {})


def test_sdk_ipam_through_remote_ipam(served):
    ipam = RemoteIpam("memo", served)
    assert ipam.capabilities()["RequiresMACAddress"] is True
    assert ipam.default_address_spaces() == ("LocalDefault", "GlobalDefault")
    pool = ipam.request_pool("LocalDefault", None, None, {}, False)
    assert pool == Pool("p1", "10.1.0.0/24", {"com.docker.network.gateway": "10.1.0.1/24"})
    assert ipam.request_address("p1", None, {}) == "10.1.0.2/24"
    with pytest.raises(Conflict, match="network plugin memo: 10.1.0.3 is taken"):
        ipam.request_address("p1", "10.1.0.3", {})


def test_dispatcher_error_shapes():
    d = Dispatcher(Memo(), Pools())
    assert d.handle("/Plugin.Activate", b"") == (200, {"Implements": ["NetworkDriver", "IpamDriver"]})
    assert d.handle("/NetworkDriver.Nope", b"{}")[0] == 404
    assert d.handle("/NetworkDriver.CreateNetwork", b"{not json")[0] == 400
    status, doc = d.handle("/NetworkDriver.DeleteNetwork", b"{}")
    assert (status, doc) == (400, {"Err": "the request lacks field NetworkID"})
    status, doc = d.handle("/IpamDriver.RequestPool", json.dumps({"SubPool": "10.0.0.0/25"}).encode())
    # IPAM errors name "Error" (the protocol) and "Err" (what Docker's client reads)
    assert status == 400 and doc["Error"] == doc["Err"] == "SubPool needs a Pool"
    assert d.handle("/IpamDriver.Nope", b"{}")[1]["Err"].startswith("IpamDriver.Nope")


def test_interface_answer_only_fills_empty_fields():
    asked = EndpointInterface("10.0.0.2/24")
    assert interface_answer(asked, EndpointInterface("10.0.0.2/24", None, "02:00:00:00:00:01")) == {
        "Interface": {"MacAddress": "02:00:00:00:00:01"}
    }
    assert interface_answer(asked, None) == {}
    with pytest.raises(InternalError, match="Interface.Address"):
        interface_answer(asked, EndpointInterface("10.0.0.9/24"))


def test_join_answer_wire_shape():
    assert join_answer(JoinResult("v0", "eth", "10.0.0.1", static_routes=(StaticRoute("1.1.1.1/32", 1),))) == {
        "InterfaceName": {"SrcName": "v0", "DstPrefix": "eth"},
        "Gateway": "10.0.0.1",
        "GatewayIPv6": "",
        "StaticRoutes": [{"Destination": "1.1.1.1/32", "RouteType": 1, "NextHop": ""}],
        "DisableGatewayService": False,
    }


def test_served_bridge_and_default_ipam_round_trip(tmp_path):
    """Our bridge driver and default IPAM, served and used remotely, behave as built-ins."""
    nl = FakeNetlink()
    store = MemoryStore()
    server = make_server(
        DriverPlugin(BridgeDriver(lambda: nl, peer_in_sandbox=False)),
        IpamAdapter(DefaultIpam({"LocalDefault": store, "GlobalDefault": store})),
        name="cnmbr",
        plugin_dir=str(tmp_path),
    ).start()
    try:
        client = PluginClient(PluginSpec("cnmbr", f"unix://{server.path}", server.path), timeout=5)
        ipam, drv = RemoteIpam("cnmbr", client), RemoteDriver("cnmbr", client)
        space, _ = ipam.default_address_spaces()
        pool = ipam.request_pool(space, "10.77.0.0/24", None, {}, False)
        gw = ipam.request_address(pool.pool_id, None, {"RequestAddressType": "com.docker.network.gateway"})
        addr = ipam.request_address(pool.pool_id, None, {})
        assert (gw, addr) == ("10.77.0.1/24", "10.77.0.2/24")
        drv.create_network(
            NetworkSpec(NID, "x", {"com.docker.network.bridge.name": "br-plug"}, ipv4=(IPAMData(pool.subnet, gw),))
        )
        assert nl.link_exists("br-plug")
        iface = drv.create_endpoint(NID, EID, EndpointInterface(addr), {})
        assert iface.mac and iface.address == addr  # the bridge filled the empty MAC
        res = drv.join(NID, EID, "/x", {})
        assert res.gateway == "10.77.0.1" and nl.link_exists(res.src_ifname)
        with pytest.raises(InvalidParameter, match="network plugin cnmbr: .*bogus"):
            drv.create_network(NetworkSpec("c" * 64, "y", {"com.docker.network.bogus": "1"}))
        drv.leave(NID, EID), drv.delete_endpoint(NID, EID), drv.delete_network(NID)
        assert not nl.link_exists("br-plug")
        ipam.release_address(pool.pool_id, addr)
        ipam.release_pool(pool.pool_id)
    finally:
        server.close()
