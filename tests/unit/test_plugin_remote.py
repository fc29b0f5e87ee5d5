"""RemoteDriver / RemoteIpam against the standard-library fake plugin: every request
body field by field and in order, and every fault with an error naming the plugin."""

from __future__ import annotations

import time

import pytest

from cnm.driverapi import DriverRegistry, EndpointInterface, IPAMData, JoinResult, NetworkSpec, StaticRoute
from cnm.errors import Conflict, InternalError, InvalidParameter, NotFound, Unavailable
from cnm.ipamapi import IpamRegistry
from cnm.plugins.client import PluginClient
from cnm.plugins.discovery import Discovery, PluginSpec
from cnm.plugins.testing import FakePlugin
from drivers.remote import RemoteDriver, needs_gateway_bridge, resolver
from ipam.remote import RemoteIpam
from ipam.remote import resolver as ipam_resolver

NID, EID = "n" * 64, "e" * 64


@pytest.fixture
def fake(tmp_path):
    with FakePlugin(str(tmp_path / "fakep.sock")) as f:
        yield f


def client_for(path, name="fakep", timeout=2.0, retry=0.0) -> PluginClient:
    return PluginClient(PluginSpec(name, f"unix://{path}", str(path)), timeout=timeout, activate_retry=retry)


@pytest.fixture
def driver(fake):
    return RemoteDriver("fakep", client_for(fake.path))


@pytest.fixture
def ipam(fake):
    return RemoteIpam("fakep", client_for(fake.path))


SPEC = NetworkSpec(
    id=NID,
    name="net1",
    options={"mtu": "1400"},
    ipv4=(
        IPAMData(
            pool="10.99.0.0/24", gateway="10.99.0.1/24", aux_addresses={"r": "10.99.0.9/24"}, address_space="FakeLocal"
        ),
    ),
    ipv6=(IPAMData(pool="fd00:1::/64"),),
    internal=False,
    enable_ipv6=True,
)


def test_full_lifecycle_requests_in_order(fake, driver):
    assert driver.capabilities().data_scope == "local"
    driver.create_network(SPEC)
    iface = driver.create_endpoint(NID, EID, EndpointInterface("10.99.0.2/24"), {"k": "v"})
    assert iface == EndpointInterface("10.99.0.2/24", None, None)
    assert driver.endpoint_info(NID, EID) == {"fake": True}
    res = driver.join(NID, EID, "/run/netns/sb1", {})
    driver.program_external_connectivity(NID, EID, {"com.docker.network.portmap": []})
    driver.revoke_external_connectivity(NID, EID)
    driver.leave(NID, EID)
    driver.delete_endpoint(NID, EID)
    driver.delete_network(NID)
    assert fake.calls() == [
        "Plugin.Activate",
        "NetworkDriver.GetCapabilities",
        "NetworkDriver.CreateNetwork",
        "NetworkDriver.CreateEndpoint",
        "NetworkDriver.EndpointOperInfo",
        "NetworkDriver.Join",
        "NetworkDriver.ProgramExternalConnectivity",
        "NetworkDriver.RevokeExternalConnectivity",
        "NetworkDriver.Leave",
        "NetworkDriver.DeleteEndpoint",
        "NetworkDriver.DeleteNetwork",
    ]
    assert fake.body("Plugin.Activate") is None
    assert fake.body("NetworkDriver.CreateNetwork") == {
        "NetworkID": NID,
        "Options": {
            "com.docker.network.generic": {"mtu": "1400"},
            "com.docker.network.enable_ipv6": True,
            "com.docker.network.internal": False,
        },
        "IPv4Data": [
            {
                "AddressSpace": "FakeLocal",
                "Pool": "10.99.0.0/24",
                "Gateway": "10.99.0.1/24",
                "AuxAddresses": {"r": "10.99.0.9/24"},
            }
        ],
        "IPv6Data": [{"AddressSpace": "", "Pool": "fd00:1::/64", "AuxAddresses": {}}],
    }
    assert fake.body("NetworkDriver.CreateEndpoint") == {
        "NetworkID": NID,
        "EndpointID": EID,
        "Interface": {"Address": "10.99.0.2/24", "AddressIPv6": "", "MacAddress": ""},
        "Options": {"k": "v"},
    }
    assert fake.body("NetworkDriver.EndpointOperInfo") == {"NetworkID": NID, "EndpointID": EID}
    assert fake.body("NetworkDriver.Join") == {
        "NetworkID": NID,
        "EndpointID": EID,
        "SandboxKey": "/run/netns/sb1",
        "Options": {},
    }
    assert fake.body("NetworkDriver.ProgramExternalConnectivity") == {
        "NetworkID": NID,
        "EndpointID": EID,
        "Options": {"com.docker.network.portmap": []},
    }
    for m in ("RevokeExternalConnectivity", "Leave", "DeleteEndpoint"):
        assert fake.body(f"NetworkDriver.{m}") == {"NetworkID": NID, "EndpointID": EID}
    assert fake.body("NetworkDriver.DeleteNetwork") == {"NetworkID": NID}
    assert res == JoinResult(
        src_ifname="fake0",
        dst_prefix="eth",
        gateway="10.99.0.1",
        static_routes=(StaticRoute("169.254.1.1/32", 1, None), StaticRoute("10.200.0.0/16", 0, "10.99.0.254")),
    )
    assert not needs_gateway_bridge(res)


def test_capabilities_cached_and_activation_once(fake, driver):
    driver.capabilities(), driver.capabilities()
    driver.leave(NID, EID)
    assert fake.calls().count("Plugin.Activate") == 1
    assert fake.calls().count("NetworkDriver.GetCapabilities") == 1


def test_connectivity_scope_defaults_to_scope_and_bad_scope_refused(fake, driver):
    fake.script("NetworkDriver.GetCapabilities", body={"Scope": "global"})
    caps = driver.capabilities()
    assert (caps.data_scope, caps.connectivity_scope) == ("global", "global")
    other = RemoteDriver("fakep", client_for(fake.path))
    fake.script("NetworkDriver.GetCapabilities", body={"Scope": "galaxy"})
    with pytest.raises(InternalError, match="fakep.*Scope"):
        other.capabilities()


def test_driver_fills_empty_mac(fake, driver):
    fake.script("NetworkDriver.CreateEndpoint", body={"Interface": {"MacAddress": "02:AA:00:00:00:01"}})
    got = driver.create_endpoint(NID, EID, EndpointInterface("10.99.0.2/24"), {})
    assert got == EndpointInterface("10.99.0.2/24", None, "02:aa:00:00:00:01")


def test_driver_setting_an_already_set_field_is_an_error_and_rolls_back(fake, driver):
    fake.script("NetworkDriver.CreateEndpoint", body={"Interface": {"Address": "10.99.0.7/24"}})
    with pytest.raises(InternalError, match=r"fakep.*Interface.Address.*already set to 10.99.0.2/24"):
        driver.create_endpoint(NID, EID, EndpointInterface("10.99.0.2/24"), {})
    assert fake.calls("NetworkDriver.")[-2:] == ["NetworkDriver.CreateEndpoint", "NetworkDriver.DeleteEndpoint"]


def test_program_external_connectivity_404_is_not_an_error(fake, driver):
    fake.script("NetworkDriver.ProgramExternalConnectivity", status=404, raw=b"404 page not found")
    fake.script("NetworkDriver.RevokeExternalConnectivity", status=404, raw=b"")
    driver.program_external_connectivity(NID, EID, {})
    driver.revoke_external_connectivity(NID, EID)


def test_discovery_only_node_type_forwarded(fake, driver):
    driver.discover_new("node", {"Address": "198.18.0.2", "BindAddress": "198.18.0.2", "Self": False})
    driver.discover_new("peer", {"x": 1})
    driver.discover_delete("node", {"Address": "198.18.0.2", "BindAddress": "", "Self": False})
    assert fake.calls("NetworkDriver.") == ["NetworkDriver.DiscoverNew", "NetworkDriver.DiscoverDelete"]
    assert fake.body("NetworkDriver.DiscoverNew") == {
        "DiscoveryType": 1,
        "DiscoveryData": {"Address": "198.18.0.2", "BindAddress": "198.18.0.2", "Self": False},
    }


def test_restore_makes_no_call(fake, driver):
    driver.restore_network(SPEC)
    driver.restore_endpoint(NID, EID, EndpointInterface("10.99.0.2/24"), {})
    assert fake.calls() == []


def test_allocate_network_optional(fake, driver):
    fake.script("NetworkDriver.AllocateNetwork", status=404, raw=b"not found")
    assert driver.allocate_network(SPEC) == {}
    fake.script("NetworkDriver.AllocateNetwork", body={"Options": {"vni": "42"}})
    assert driver.allocate_network(SPEC) == {"vni": "42"}
    assert fake.body("NetworkDriver.AllocateNetwork")["Options"] == {"mtu": "1400"}


# -- IPAM -----------------------------------------------------------------------------------


def test_ipam_lifecycle_requests(fake, ipam):
    assert ipam.capabilities() == {"RequiresMACAddress": False, "RequiresRequestReplay": False}
    assert ipam.default_address_spaces() == ("FakeLocal", "FakeGlobal")
    pool = ipam.request_pool("FakeLocal", "10.99.0.0/24", "10.99.0.128/25", {"o": "1"}, False)
    assert (pool.pool_id, pool.subnet) == ("fake/10.99.0.0/24", "10.99.0.0/24")
    gw = ipam.request_address(pool.pool_id, None, {"RequestAddressType": "com.docker.network.gateway"})
    addr = ipam.request_address(pool.pool_id, "10.99.0.5", {})
    assert (gw, addr) == ("10.99.0.1/24", "10.99.0.5/24")
    ipam.release_address(pool.pool_id, addr)
    ipam.release_pool(pool.pool_id)
    assert fake.calls("IpamDriver.") == [
        "IpamDriver.GetCapabilities",
        "IpamDriver.GetDefaultAddressSpaces",
        "IpamDriver.RequestPool",
        "IpamDriver.RequestAddress",
        "IpamDriver.RequestAddress",
        "IpamDriver.ReleaseAddress",
        "IpamDriver.ReleasePool",
    ]
    assert fake.body("IpamDriver.RequestPool") == {
        "AddressSpace": "FakeLocal",
        "Pool": "10.99.0.0/24",
        "SubPool": "10.99.0.128/25",
        "Options": {"o": "1"},
        "V6": False,
    }
    assert fake.body("IpamDriver.RequestAddress", 0) == {
        "PoolID": "fake/10.99.0.0/24",
        "Address": "",
        "Options": {"RequestAddressType": "com.docker.network.gateway"},
    }
    assert fake.body("IpamDriver.RequestAddress", 1)["Address"] == "10.99.0.5"
    assert fake.body("IpamDriver.ReleaseAddress") == {"PoolID": "fake/10.99.0.0/24", "Address": "10.99.0.5"}
    assert fake.body("IpamDriver.ReleasePool") == {"PoolID": "fake/10.99.0.0/24"}


def test_ipam_error_field_and_capabilities_failure(fake, ipam):
    fake.script("IpamDriver.GetCapabilities", status=500, body={"Error": "no"})
    assert ipam.capabilities()["RequiresMACAddress"] is False
    fake.script("IpamDriver.RequestAddress", status=409, body={"Error": "pool exhausted"})
    with pytest.raises(Conflict, match="network plugin fakep: pool exhausted"):
        ipam.request_address("p", None, {})
    fake.script("IpamDriver.RequestAddress", body={"Address": "", "Data": {}})
    with pytest.raises(InternalError, match="fakep.*lacks field Address"):
        ipam.request_address("p", None, {})
    fake.script("IpamDriver.RequestPool", body={"PoolID": "x", "Pool": "fd00::/64"})
    with pytest.raises(InternalError, match="IPv4 request"):
        ipam.request_pool("s", None, None, {}, False)


# -- faults -------------------------------------------------------------------------------------


def test_plugin_missing(tmp_path):
    d = RemoteDriver("gone", client_for(tmp_path / "gone.sock", "gone"))
    with pytest.raises(Unavailable, match="network plugin gone: socket .* does not exist"):
        d.capabilities()


def test_socket_not_listening(tmp_path):
    import socket

    path = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))  # bound, never listening: connect is refused
    try:
        start = time.monotonic()
        with pytest.raises(Unavailable, match="network plugin dead: nothing listens"):
            RemoteDriver("dead", client_for(path, "dead", retry=0.3)).capabilities()
        assert time.monotonic() - start < 2.0  # retried briefly, no stall
    finally:
        s.close()


def test_slow_beyond_timeout(fake):
    fake.script("NetworkDriver.CreateNetwork", delay=1.0)
    d = RemoteDriver("fakep", client_for(fake.path, timeout=0.3))
    start = time.monotonic()
    with pytest.raises(Unavailable, match="network plugin fakep: NetworkDriver.CreateNetwork timed out after 0.3s"):
        d.create_network(SPEC)
    assert time.monotonic() - start < 0.9


def test_connection_dropped(fake, driver):
    fake.script("NetworkDriver.DeleteNetwork", drop=True)
    with pytest.raises(Unavailable, match="network plugin fakep: connection lost during NetworkDriver.DeleteNetwork"):
        driver.delete_network(NID)


def test_non_json_body(fake, driver):
    fake.script("NetworkDriver.Join", raw=b"<html>oops</html>")
    with pytest.raises(
        InternalError, match="network plugin fakep: NetworkDriver.Join answered a body that is not JSON"
    ):
        driver.join(NID, EID, "/x", {})


@pytest.mark.parametrize(
    "status,body,cls,text",
    [
        (500, {"Err": "bridge exploded"}, InternalError, "network plugin fakep: bridge exploded"),
        (500, {"Error": "newer shape"}, InternalError, "network plugin fakep: newer shape"),
        (400, {"Err": "bad option mtu"}, InvalidParameter, "network plugin fakep: bad option mtu"),
        (404, {"Err": "no such network"}, NotFound, "network plugin fakep: no such network"),
        (409, {"Err": "exists"}, Conflict, "network plugin fakep: exists"),
        (500, None, InternalError, "network plugin fakep: plain text"),
        (200, {"Err": "error on a 200"}, InternalError, "network plugin fakep: error on a 200"),
    ],
)
def test_error_answers_keep_category(fake, driver, status, body, cls, text):
    if body is None:
        fake.script("NetworkDriver.CreateNetwork", status=status, raw=b"plain text")
    else:
        fake.script("NetworkDriver.CreateNetwork", status=status, body=body)
    with pytest.raises(cls) as info:
        driver.create_network(SPEC)
    assert str(info.value) == text


@pytest.mark.parametrize(
    "answer,field",
    [
        ({"InterfaceName": {"SrcName": 7}}, "InterfaceName.SrcName"),
        ({"InterfaceName": "veth0"}, "InterfaceName"),
        ({"Gateway": "not-an-ip"}, "Gateway"),
        (
            {"StaticRoutes": [{"Destination": "10.0.0.0/8", "RouteType": "0", "NextHop": "1.2.3.4"}]},
            r"StaticRoutes\[0\].RouteType",
        ),
        ({"StaticRoutes": [{"Destination": "10.0.0.0/8", "RouteType": 0}]}, r"StaticRoutes\[0\]"),
        ({"DisableGatewayService": "yes"}, "DisableGatewayService"),
    ],
)
def test_wrong_field_types_name_the_field(fake, driver, answer, field):
    fake.script("NetworkDriver.Join", body=answer)
    with pytest.raises(InternalError, match=f"network plugin fakep: .*{field}"):
        driver.join(NID, EID, "/x", {})


def test_wrong_implements(tmp_path):
    with FakePlugin(str(tmp_path / "ip.sock"), implements=("IpamDriver",)) as f:
        with pytest.raises(InvalidParameter, match="plugin ip does not implement NetworkDriver"):
            RemoteDriver("ip", client_for(f.path, "ip")).capabilities()
        f.script("Plugin.Activate", body={"Implements": "NetworkDriver"})
        with pytest.raises(InternalError, match="Implements"):
            RemoteDriver("ip", client_for(f.path, "ip")).capabilities()


def test_no_gateway_needs_gateway_bridge():
    assert needs_gateway_bridge(JoinResult("v"))
    assert not needs_gateway_bridge(JoinResult("v", static_routes=(StaticRoute("0.0.0.0/0", 1),)))


# -- registry hooks -------------------------------------------------------------------------------


def test_registry_fallback_finds_plugins_lazily(tmp_path):
    disc = Discovery([str(tmp_path)])
    reg = DriverRegistry(fallback=resolver(disc, timeout=1.0))
    with pytest.raises(NotFound, match="network driver 'nope' not found"):
        reg.get("nope")
    with pytest.raises(NotFound):
        reg.get("bad name!")
    with FakePlugin(str(tmp_path / "p1.sock")) as f:
        d = reg.get("p1")
        assert isinstance(d, RemoteDriver) and f.calls() == []  # lazy: nothing contacted yet
        assert reg.get("p1") is d and "p1" in reg.names()
        assert d.capabilities().data_scope == "local"
        ipams = IpamRegistry(fallback=ipam_resolver(disc))
        assert ipams.get("p1").default_address_spaces() == ("FakeLocal", "FakeGlobal")
