"""Bridge driver without root: option parsing, names and MACs, and the driver's logic
against the in-memory OS layer (cnm.osl.fake.FakeNetlink)."""

from __future__ import annotations

import pytest

from cnm import labels
from cnm.driverapi import DriverRegistry, EndpointInterface, IPAMData, NetworkSpec
from cnm.errors import Conflict, Forbidden, InternalError, InvalidParameter, NotFound
from cnm.osl.fake import FakeNetlink
from drivers import register_builtin
from drivers.bridge import config, naming
from drivers.bridge.config import BridgeConfig
from drivers.bridge.driver import MAX_BRIDGE_PORTS, BridgeDriver
from drivers.bridge.hooks import NoFirewall
from drivers.host import HostDriver
from drivers.null import NullDriver

NID = "a1b2c3d4e5f6" + "0" * 52
EID = "e0e1e2e3e4e5e6" + "f" * 50


# -- config --------------------------------------------------------------------------


def test_defaults():
    assert config.parse({}, NID) == BridgeConfig(
        bridge_name="br-a1b2c3d4e5f6",
        mtu=1500,
        enable_icc=True,
        enable_ip_masquerade=True,
        host_binding_ipv4="0.0.0.0",
        internal=False,
        default_bridge=False,
    )


def test_all_options():
    cfg = config.parse(
        {
            labels.BRIDGE_NAME: "mybr0",
            labels.MTU: "1400",
            labels.ENABLE_ICC: "False",
            labels.ENABLE_IP_MASQUERADE: "0",
            labels.HOST_BINDING_IPV4: "127.0.0.1",
            labels.DEFAULT_BRIDGE: "TRUE",
            labels.INTERNAL: "1",
        },
        NID,
    )
    assert cfg == BridgeConfig("mybr0", 1400, False, False, "127.0.0.1", True, True)


def test_internal_flag_or_option():
    assert config.parse({}, NID, internal=True).internal
    assert config.parse({labels.INTERNAL: "true"}, NID).internal
    assert not config.parse({labels.INTERNAL: "false"}, NID).internal


def test_default_bridge_is_docker0_unless_named():
    assert config.parse({labels.DEFAULT_BRIDGE: "true"}, NID).bridge_name == "docker0"
    assert config.parse({labels.DEFAULT_BRIDGE: "true", labels.BRIDGE_NAME: "cbr0"}, NID).bridge_name == "cbr0"


def test_name_needs_network_id():
    with pytest.raises(InvalidParameter, match="network id"):
        config.parse({})


@pytest.mark.parametrize(
    "value,expected",
    [
        ("true", True),
        ("TRUE", True),
        ("True", True),
        ("1", True),
        ("false", False),
        ("FALSE", False),
        ("0", False),
        (" true ", True),
    ],
)
def test_booleans(value, expected):
    assert config.parse({labels.ENABLE_ICC: value}, NID).enable_icc is expected


@pytest.mark.parametrize("value", ["yes", "no", "2", "", "on", "truee"])
def test_bad_booleans(value):
    with pytest.raises(InvalidParameter, match=labels.ENABLE_ICC):
        config.parse({labels.ENABLE_ICC: value}, NID)


@pytest.mark.parametrize("value,expected", [("68", 68), ("1500", 1500), ("9000", 9000), ("65535", 65535)])
def test_mtu_good(value, expected):
    assert config.parse({labels.MTU: value}, NID).mtu == expected


@pytest.mark.parametrize("value", ["67", "0", "-1", "65536", "1500.0", "abc", "", "0x500"])
def test_mtu_bad(value):
    with pytest.raises(InvalidParameter, match="MTU|mtu"):
        config.parse({labels.MTU: value}, NID)


@pytest.mark.parametrize("name", ["b", "br0", "a" * 15, "br-x.y", "my_bridge", "Br-1"])
def test_bridge_name_good(name):
    assert config.parse({labels.BRIDGE_NAME: name}, NID).bridge_name == name


@pytest.mark.parametrize("name", ["", "a" * 16, "br/0", "br 0", "br:0", ".", "..", "br\t0"])
def test_bridge_name_bad(name):
    with pytest.raises(InvalidParameter, match=labels.BRIDGE_NAME):
        config.parse({labels.BRIDGE_NAME: name}, NID)


@pytest.mark.parametrize("value", ["0.0.0.0", "127.0.0.1", "198.18.0.1"])
def test_host_binding_good(value):
    assert config.parse({labels.HOST_BINDING_IPV4: value}, NID).host_binding_ipv4 == value


@pytest.mark.parametrize("value", ["", "localhost", "1.2.3", "256.1.1.1", "::1", "10.0.0.0/8"])
def test_host_binding_bad(value):
    with pytest.raises(InvalidParameter, match=labels.HOST_BINDING_IPV4):
        config.parse({labels.HOST_BINDING_IPV4: value}, NID)


def test_unknown_option_named_and_accepted_listed():
    with pytest.raises(InvalidParameter) as exc:
        config.parse({"com.docker.network.bridge.nme": "x"}, NID)
    msg = str(exc.value)
    assert "com.docker.network.bridge.nme" in msg
    for key in config.ACCEPTED:
        assert key in msg


def test_normalize_canonical_form_and_keeps_absent_keys_absent():
    assert config.normalize({labels.ENABLE_ICC: "0", labels.MTU: "01400"}) == {
        labels.ENABLE_ICC: "false",
        labels.MTU: "1400",
    }
    assert config.normalize({}) == {}


# -- names and MACs ------------------------------------------------------------------


@pytest.mark.parametrize(
    "address,mac",
    [
        ("172.18.0.2/16", "02:42:ac:12:00:02"),
        ("172.17.0.1", "02:42:ac:11:00:01"),
        ("10.255.0.254/24", "02:42:0a:ff:00:fe"),
    ],
)
def test_mac_from_ipv4(address, mac):
    assert naming.mac_from_ipv4(address) == mac


def test_random_mac_is_local_unicast_and_varies():
    macs = {naming.random_mac() for _ in range(20)}
    assert len(macs) > 1
    for mac in macs:
        first = int(mac.split(":")[0], 16)
        assert first & 0x02 and not first & 0x01


def test_interface_names_fit_ifnamsiz():
    assert naming.host_ifname(EID) == "veth" + EID[:7]
    assert naming.peer_ifname(EID) == "tmp" + EID[:7]
    assert len(naming.host_ifname(EID)) <= 15 and len(naming.peer_ifname(EID)) <= 15


# -- driver at the OS-layer seam -----------------------------------------------------------


def spec(nid=NID, options=None, internal=False, gateway="172.18.0.1/16", v6=None, **kw) -> NetworkSpec:
    ipv4 = (IPAMData(pool="172.18.0.0/16", gateway=gateway),) if gateway is not False else ()
    ipv6 = (IPAMData(pool="fd00:1::/64", gateway=v6),) if v6 else ()
    return NetworkSpec(
        id=nid, name="n1", options=options or {}, ipv4=ipv4, ipv6=ipv6, internal=internal, enable_ipv6=bool(v6), **kw
    )


@pytest.fixture
def nl():
    return FakeNetlink()


@pytest.fixture
def drv(nl):
    return BridgeDriver(lambda: nl)


def test_create_network_builds_bridge(drv, nl):
    drv.create_network(spec(options={labels.MTU: "1400"}))
    br = nl.link("br-a1b2c3d4e5f6")
    assert br.kind == "bridge" and br.mtu == 1400 and br.up
    assert br.alias == naming.network_alias(NID)
    assert nl.addresses("br-a1b2c3d4e5f6") == ["172.18.0.1/16"]
    assert nl.sysctls["net.ipv4.ip_forward"] == "1"
    assert nl.sysctls["net/ipv6/conf/br-a1b2c3d4e5f6/disable_ipv6"] == "1"


def test_ipv6_network_keeps_ipv6_and_gets_both_gateways(drv, nl):
    drv.create_network(spec(v6="fd00:1::1/64"))
    assert nl.addresses("br-a1b2c3d4e5f6") == ["172.18.0.1/16", "fd00:1::1/64"]
    assert nl.sysctls["net/ipv6/conf/br-a1b2c3d4e5f6/disable_ipv6"] == "0"
    assert nl.sysctls["net.ipv6.conf.all.forwarding"] == "1"


def test_internal_network_does_not_enable_forwarding(drv, nl):
    drv.create_network(spec(internal=True))
    assert "net.ipv4.ip_forward" not in nl.sysctls
    assert nl.addresses("br-a1b2c3d4e5f6") == ["172.18.0.1/16"]  # gateway still on the bridge


def test_two_ipv4_subnets_refused_before_kernel(drv, nl):
    s = NetworkSpec(
        id=NID,
        name="n",
        options={},
        ipv4=(IPAMData("10.1.0.0/24", "10.1.0.1/24"), IPAMData("10.2.0.0/24", "10.2.0.1/24")),
    )
    with pytest.raises(InvalidParameter, match="one IPv4 subnet"):
        drv.create_network(s)
    assert nl.link_names() == ["lo"]


def test_foreign_link_with_that_name_is_conflict_and_untouched(drv, nl):
    nl.add_foreign_link("mybr")
    with pytest.raises(Conflict, match="mybr already exists and was not created by cnm"):
        drv.create_network(spec(options={labels.BRIDGE_NAME: "mybr"}))
    assert nl.link_exists("mybr") and nl.addresses("mybr") == []
    drv.delete_network(NID)  # not ours: must survive
    assert nl.link_exists("mybr")


def test_bridge_name_used_by_another_network(drv, nl):
    drv.create_network(spec(options={labels.BRIDGE_NAME: "shared"}))
    other = "b" * 64
    with pytest.raises(Conflict, match=f"already used by network {NID[:12]}"):
        drv.create_network(spec(nid=other, options={labels.BRIDGE_NAME: "shared"}))


def test_create_rolls_back_on_failure(drv, nl):
    nl.fail_next["add_address"] = InternalError("boom")
    with pytest.raises(InternalError):
        drv.create_network(spec())
    assert nl.link_names() == ["lo"]
    assert drv.network_ids() == []


def test_firewall_failure_rolls_back(nl):
    class Broken(NoFirewall):
        def network_created(self, info):
            raise InternalError("nft failed")

    drv = BridgeDriver(lambda: nl, firewall=Broken())
    with pytest.raises(InternalError, match="nft"):
        drv.create_network(spec())
    assert not nl.link_exists("br-a1b2c3d4e5f6")


def test_delete_network_idempotent_and_finds_bridge_after_restart(drv, nl):
    drv.create_network(spec())
    fresh = BridgeDriver(lambda: nl)  # a restarted daemon: no memory
    fresh.delete_network(NID)
    assert not nl.link_exists("br-a1b2c3d4e5f6")
    fresh.delete_network(NID)
    drv.delete_network(NID)


def test_restore_adopts_own_bridge_recreates_missing_refuses_foreign(nl):
    BridgeDriver(lambda: nl).create_network(spec())
    nl.del_address("br-a1b2c3d4e5f6", "172.18.0.1/16")
    drv = BridgeDriver(lambda: nl)
    drv.restore_network(spec())
    assert nl.addresses("br-a1b2c3d4e5f6") == ["172.18.0.1/16"]
    assert drv.network_ids() == [NID]
    nl.delete_link("br-a1b2c3d4e5f6")
    drv.restore_network(spec())
    assert nl.link("br-a1b2c3d4e5f6").alias == naming.network_alias(NID)
    nl.add_foreign_link("br-bbbbbbbbbbbb")
    with pytest.raises(Conflict, match="not created by cnm"):
        BridgeDriver(lambda: nl).restore_network(spec(nid="b" * 64))


def test_endpoint_veth_mac_and_master(drv, nl):
    drv.create_network(spec(options={labels.MTU: "1400"}))
    out = drv.create_endpoint(NID, EID, EndpointInterface(address="172.18.0.5/16"), {})
    assert out.mac == "02:42:ac:12:00:05" and out.address == "172.18.0.5/16"
    assert not nl.link_exists(naming.host_ifname(EID))  # the veth is made at join
    res = drv.join(NID, EID, "/run/cnm/netns/sb", {})
    assert res.in_sandbox and nl.moved[naming.peer_ifname(EID)] == ("/run/cnm/netns/sb", res.src_ifname)
    host = nl.link(naming.host_ifname(EID))
    peer = nl.moved_links[naming.peer_ifname(EID)]
    assert host.up and host.master == nl.link_index("br-a1b2c3d4e5f6") and host.mtu == 1400
    assert peer.mac == "02:42:ac:12:00:05" and peer.mtu == 1400
    assert drv.endpoint_info(NID, EID) == {"com.docker.network.endpoint.macaddress": "02:42:ac:12:00:05"}


def test_endpoint_keeps_given_mac(drv, nl):
    drv.create_network(spec())
    out = drv.create_endpoint(NID, EID, EndpointInterface(address="172.18.0.5/16", mac="02:00:00:00:00:09"), {})
    drv.join(NID, EID, "/run/cnm/netns/sb", {})
    assert out.mac == "02:00:00:00:00:09" == nl.moved_links[naming.peer_ifname(EID)].mac


def _fill(drv, count):
    for i in range(count):
        eid = f"{i:07x}" + "0" * 57  # interface names come from the first 7 digits
        drv.create_endpoint(NID, eid, EndpointInterface(address=f"172.18.{i // 250}.{2 + i % 250}/16"), {})
        drv.join(NID, eid, f"/run/cnm/netns/{i}", {})


def test_port_limit_refused_before_kernel(drv, nl):
    drv.create_network(spec())
    _fill(drv, MAX_BRIDGE_PORTS)
    before = set(nl.link_names())
    with pytest.raises(Conflict) as exc:
        drv.create_endpoint(NID, EID, EndpointInterface(address="172.18.9.5/16"), {})
    assert str(exc.value) == ("bridge br-a1b2c3d4e5f6 has 1023 ports, the Linux maximum; create another network")
    assert set(nl.link_names()) == before


def test_port_limit_counts_foreign_ports_when_the_kernel_refuses(drv, nl):
    drv.create_network(spec())
    _fill(drv, MAX_BRIDGE_PORTS - 64)
    nl.add_ports("br-a1b2c3d4e5f6", 64)  # someone else's ports on our bridge
    drv.create_endpoint(NID, EID, EndpointInterface(address="172.18.9.6/16"), {})  # our own count: room
    with pytest.raises(Conflict, match="br-a1b2c3d4e5f6 has 1023 ports"):
        drv.join(NID, EID, "/run/cnm/netns/x", {})  # the kernel: none


def test_port_limit_is_the_kernels_1023(drv, nl):
    drv.create_network(spec())
    _fill(drv, MAX_BRIDGE_PORTS - 1)
    drv.create_endpoint(NID, EID, EndpointInterface(address="172.18.9.5/16"), {})  # the last one fits
    drv.join(NID, EID, "/run/cnm/netns/sb", {})
    with pytest.raises(Conflict, match="has 1023 ports"):
        drv.create_endpoint(NID, "c" * 64, EndpointInterface(address="172.18.9.6/16"), {})


def test_join_leaves_nothing_when_the_veth_cannot_be_made(drv, nl):
    drv.create_network(spec())
    drv.create_endpoint(NID, EID, EndpointInterface(address="172.18.0.5/16"), {})
    nl.fail_next["create_veth"] = InternalError("boom")  # one request: made, enslaved and up, or nothing
    with pytest.raises(InternalError):
        drv.join(NID, EID, "/run/cnm/netns/sb", {})
    assert not nl.link_exists(naming.host_ifname(EID)) and not nl.link_exists(naming.peer_ifname(EID))


def test_endpoint_on_unknown_network(drv):
    with pytest.raises(NotFound):
        drv.create_endpoint("x" * 64, EID, EndpointInterface(), {})


def test_join_gateway_and_internal(drv, nl):
    drv.create_network(spec(v6="fd00:1::1/64"))
    drv.create_endpoint(NID, EID, EndpointInterface(address="172.18.0.5/16"), {})
    res = drv.join(NID, EID, "/run/cnm/netns/x", {})
    assert (res.src_ifname, res.dst_prefix, res.gateway, res.gateway_v6) == (
        naming.peer_ifname(EID),
        "eth",
        "172.18.0.1",
        "fd00:1::1",
    )

    other = "d" * 64
    drv.create_network(spec(nid=other, internal=True, options={labels.BRIDGE_NAME: "intbr"}))
    drv.create_endpoint(other, "f" * 64, EndpointInterface(address="172.18.0.6/16"), {})
    res = drv.join(other, "f" * 64, "/run/cnm/netns/y", {})
    assert res.gateway is None and res.gateway_v6 is None


def test_join_twice_is_a_conflict_and_leave_removes_the_veth(drv, nl):
    drv.create_network(spec())
    drv.create_endpoint(NID, EID, EndpointInterface(address="172.18.0.5/16"), {})
    drv.join(NID, EID, "/run/x", {})
    with pytest.raises(Conflict, match="already joined"):
        drv.join(NID, EID, "/run/y", {})
    drv.leave(NID, EID)
    drv.leave(NID, EID)
    assert not nl.link_exists(naming.host_ifname(EID))
    drv.join(NID, EID, "/run/y", {})  # the endpoint can join again
    assert nl.link_exists(naming.host_ifname(EID))


def test_delete_endpoint_idempotent_and_only_ours(drv, nl):
    drv.create_network(spec())
    drv.create_endpoint(NID, EID, EndpointInterface(address="172.18.0.5/16"), {})
    drv.delete_endpoint(NID, EID)
    assert not nl.link_exists(naming.host_ifname(EID)) and not nl.link_exists(naming.peer_ifname(EID))
    drv.delete_endpoint(NID, EID)
    nl.add_foreign_link(naming.host_ifname(EID), kind="veth")
    drv.delete_endpoint(NID, EID)
    assert nl.link_exists(naming.host_ifname(EID))


def test_port_bindings_reach_the_firewall_hook(nl):
    seen = []

    class Recorder(NoFirewall):
        def ports_published(self, endpoint):
            seen.append(endpoint)

        def ports_revoked(self, network_id, endpoint_id):
            seen.append(("revoked", endpoint_id))

    drv = BridgeDriver(lambda: nl, firewall=Recorder())
    drv.create_network(spec(options={labels.HOST_BINDING_IPV4: "127.0.0.1"}))
    drv.create_endpoint(NID, EID, EndpointInterface(address="172.18.0.5/16"), {})
    binding = {"Proto": "tcp", "Port": 80, "HostPort": 8080}
    drv.program_external_connectivity(NID, EID, {"com.docker.network.portmap": [binding]})
    ep = seen[0]
    assert (ep.address, ep.bridge_name, ep.host_binding_ipv4, ep.port_bindings) == (
        "172.18.0.5",
        "br-a1b2c3d4e5f6",
        "127.0.0.1",
        (binding,),
    )
    assert drv.endpoint_info(NID, EID)["com.docker.network.portmap"] == [binding]
    drv.revoke_external_connectivity(NID, EID)
    drv.revoke_external_connectivity(NID, EID)
    assert seen[1:] == [("revoked", EID), ("revoked", EID)]
    assert "com.docker.network.portmap" not in drv.endpoint_info(NID, EID)


def test_internal_network_refuses_published_ports(drv, nl):
    drv.create_network(spec(internal=True))
    drv.create_endpoint(NID, EID, EndpointInterface(address="172.18.0.5/16"), {})
    with pytest.raises(InvalidParameter, match="internal"):
        drv.program_external_connectivity(NID, EID, {"com.docker.network.portmap": [{"Port": 80}]})


def test_validate_options_normalises_and_refuses_unknown(drv):
    assert drv.validate_options({labels.ENABLE_ICC: "0"}, False) == {labels.ENABLE_ICC: "false"}
    with pytest.raises(InvalidParameter, match="unknown option"):
        drv.validate_options({"x": "1"}, False)


# -- null, host, registration ----------------------------------------------------------------


def test_null_driver():
    d = NullDriver()
    assert d.join("n", "e", "/x", {}).src_ifname == ""
    iface = EndpointInterface(address="1.2.3.4/8")
    assert d.create_endpoint("n", "e", iface, {}) == iface
    assert d.validate_options({}, False) == {}
    with pytest.raises(InvalidParameter, match="takes no options"):
        d.validate_options({"a": "b"}, False)


def test_host_driver_join_forbidden():
    d = HostDriver()
    assert d.name == "host"
    with pytest.raises(Forbidden):
        d.join("n", "e", "/x", {})
    with pytest.raises(InvalidParameter):
        d.validate_options({"a": "b"}, False)


def test_register_builtin_does_not_touch_kernel():
    reg = DriverRegistry()
    made = []
    register_builtin(reg, netlink_factory=lambda: made.append(1) or FakeNetlink())
    assert reg.names() == ["bridge", "host", "null"]
    assert made == []  # the handle opens on first use
    assert reg.get("bridge").capabilities().data_scope == "local"
