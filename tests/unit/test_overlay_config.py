"""Overlay options, VNI validation, MTU and naming: pure functions."""

from __future__ import annotations

import pytest

from cnm import labels
from cnm.driverapi import IPAMData, NetworkSpec
from cnm.errors import InvalidParameter
from drivers.overlay import config, naming
from drivers.overlay.peers import parse_node, parse_peer, parse_peer_key

NID = "0123456789ab" + "f" * 52


POOL = IPAMData("10.200.0.0/24", "10.200.0.1/24")


def spec(options=None, ipv4=(POOL,), ipv6=(), enable_ipv6=False):
    return NetworkSpec(
        id=NID,
        name="ov",
        options=options if options is not None else {config.VXLANID_LIST: "256"},
        ipv4=ipv4,
        ipv6=ipv6,
        enable_ipv6=enable_ipv6,
    )


@pytest.mark.parametrize("raw,vni", [("256", 256), (" 4096 ", 4096), ("1", 1), ("16777215", 16777215), ("300,", 300)])
def test_vni_accepted(raw, vni):
    assert config.parse_vni(raw) == vni


@pytest.mark.parametrize("raw", ["0", "16777216", "-5", "abc", "", "256,257", "1.5"])
def test_vni_rejected(raw):
    with pytest.raises(InvalidParameter, match="VXLAN id"):
        config.parse_vni(raw)


def test_mtu_is_underlay_minus_vxlan_overhead_unless_given():
    assert config.overlay_mtu(1500) == 1450
    assert config.overlay_mtu(9000) == 8950
    assert config.overlay_mtu(1500, 1400) == 1400
    with pytest.raises(InvalidParameter, match="too small"):
        config.overlay_mtu(100)


def test_normalize_checks_and_canonicalises():
    assert config.normalize({config.VXLANID_LIST: " 257", labels.MTU: "1400 "}) == {
        config.VXLANID_LIST: "257",
        labels.MTU: "1400",
    }
    assert config.normalize({}) == {}  # the core adds the VNI later
    with pytest.raises(InvalidParameter, match="unknown option"):
        config.normalize({labels.BRIDGE_NAME: "x"})
    with pytest.raises(InvalidParameter, match="MTU"):
        config.normalize({labels.MTU: "20"})


def test_parse_spec():
    cfg = config.parse(spec(), underlay_mtu=1500)
    assert (cfg.vni, cfg.mtu, cfg.gateways, cfg.subnets, cfg.ipv6) == (
        256,
        1450,
        ("10.200.0.1/24",),
        ("10.200.0.0/24",),
        False,
    )
    assert config.parse(spec({config.VXLANID_LIST: "9", labels.MTU: "1300"}), 1500).mtu == 1300


def test_parse_several_subnets_gives_one_gateway_each():
    cfg = config.parse(
        spec(
            ipv4=(IPAMData("10.1.0.0/24", "10.1.0.1/24"), IPAMData("10.2.0.0/16", "10.2.0.1/32")),
            ipv6=(IPAMData("fd00:1::/64", "fd00:1::1/64"),),
            enable_ipv6=True,
        ),
        1500,
    )
    # The gateway takes its subnet's prefix whatever length the core wrote.
    assert cfg.gateways == ("10.1.0.1/24", "10.2.0.1/16", "fd00:1::1/64")
    assert cfg.ipv6


def test_parse_requires_vni_and_sane_gateway():
    with pytest.raises(InvalidParameter, match="no VXLAN id"):
        config.parse(spec({}), 1500)
    with pytest.raises(InvalidParameter, match="outside its subnet"):
        config.parse(spec(ipv4=(IPAMData("10.1.0.0/24", "10.9.0.1/24"),)), 1500)


def test_names_fit_ifnamsiz_and_are_derived_from_ids():
    assert naming.netns_path("/run/cnm", 256, NID) == "/run/cnm/overlay/256-0123456789ab"
    assert naming.network_of_netns("256-0123456789ab") == (256, "0123456789ab")
    assert naming.network_of_netns("lost+found") is None
    assert naming.bridge_name(256, NID) == "ov-000100-01234"
    assert naming.vxlan_name(16777215, NID) == "vx-ffffff-01234"
    for name in (
        naming.bridge_name(16777215, NID),
        naming.vxlan_name(1, NID),
        naming.bridge_end("e" * 64),
        naming.container_end("e" * 64),
    ):
        assert 1 <= len(name) <= 15
    assert naming.bridge_end("abcdef0123") != naming.container_end("abcdef0123")


def test_peer_payloads():
    p = parse_peer(
        {"network_id": "n", "endpoint_id": "e", "ip": "10.0.0.3/24", "mac": "02-42-0A-00-00-03", "vtep": "198.18.0.2"}
    )
    assert (p.ip, p.mac, p.vtep) == ("10.0.0.3", "02:42:0a:00:00:03", "198.18.0.2")
    assert (
        parse_peer(
            {"network_id": "n", "endpoint_id": "e", "ip": "10.0.0.3", "mac": "02:42:0a:00:00:03", "vtep": "198.18.0.2"}
        ).ip
        == "10.0.0.3"
    )
    assert parse_peer(
        {
            "network_id": "n",
            "endpoint_id": "e",
            "ip": "10.0.0.3",
            "ip6": "fd00::3/64",
            "mac": "02:42:0a:00:00:03",
            "vtep": "198.18.0.2",
        }
    ).ips == {"10.0.0.3", "fd00::3"}
    with pytest.raises(InvalidParameter, match="IPv6"):
        parse_peer(
            {
                "network_id": "n",
                "endpoint_id": "e",
                "ip": "10.0.0.3",
                "ip6": "10.0.0.4",
                "mac": "02:42:0a:00:00:03",
                "vtep": "198.18.0.2",
            }
        )
    assert parse_peer_key({"network_id": "n", "endpoint_id": "e"}) == ("n", "e")
    assert parse_node({"address": "198.18.0.9"}) == "198.18.0.9"
    for bad in (
        {"network_id": "n", "endpoint_id": "e", "ip": "x", "mac": "02:42:0a:00:00:03", "vtep": "1.2.3.4"},
        {"network_id": "n", "endpoint_id": "e", "ip": "10.0.0.1", "mac": "zz", "vtep": "1.2.3.4"},
        {"network_id": "n", "endpoint_id": "e", "ip": "10.0.0.1", "mac": "02:42:0a:00:00:03", "vtep": "::1"},
        {"endpoint_id": "e", "ip": "10.0.0.1", "mac": "02:42:0a:00:00:03", "vtep": "1.2.3.4"},
    ):
        with pytest.raises(InvalidParameter):
            parse_peer(bad)
    with pytest.raises(InvalidParameter):
        parse_node({"address": "not-an-ip"})
