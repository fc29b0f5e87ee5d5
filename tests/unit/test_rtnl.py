"""cnm.osl.rtnl's packed requests, read back with pyroute2's own parsers (the reference
the project otherwise uses for netlink), and its parsing of answers pyroute2 builds."""

from __future__ import annotations

import errno
import socket
import struct

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from cnm.osl import rtnl


def decoded(msg: rtnl.Message, cls):
    """The message as the kernel receives it (header + body), parsed by pyroute2."""
    raw = struct.pack("=IHHII", 16 + len(msg.body), msg.type, msg.flags | rtnl.NLM_F_REQUEST, 1, 0) + msg.body
    out = cls(raw)
    out.decode()
    assert out["header"]["length"] == len(raw)
    return out


def test_veth_with_its_peer_born_in_a_namespace_on_a_bridge_and_up():
    msg = rtnl.create_veth(
        "vethabc1234", "eth1", mtu=1450, peer_mac="02:42:0a:00:00:05", peer_netns_fd=7, master=3, up=True
    )
    assert msg.type == rtnl.RTM_NEWLINK and msg.flags == rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
    m = decoded(msg, ifinfmsg)
    assert m["flags"] & 1 and m["change"] & 1  # IFF_UP set and changed
    assert (m.get_attr("IFLA_IFNAME"), m.get_attr("IFLA_MTU"), m.get_attr("IFLA_MASTER")) == ("vethabc1234", 1450, 3)
    info = m.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert peer.get_attr("IFLA_IFNAME") == "eth1"
    assert peer.get_attr("IFLA_ADDRESS") == "02:42:0a:00:00:05"
    assert peer.get_attr("IFLA_NET_NS_FD") == 7
    assert peer.get_attr("IFLA_MTU") == 1450


def test_a_plain_veth_leaves_the_host_end_down_and_unattached():
    m = decoded(rtnl.create_veth("a", "b"), ifinfmsg)
    assert m["change"] == 0 and m.get_attr("IFLA_MASTER") is None


def test_set_link_by_name_or_index():
    m = decoded(rtnl.set_link(name="veth1", alias="cnm:ep:x", up=False, group=0x636E6D01), ifinfmsg)
    assert (m["index"], m["flags"] & 1, m["change"] & 1) == (0, 0, 1)
    assert (m.get_attr("IFLA_IFNAME"), m.get_attr("IFLA_IFALIAS"), m.get_attr("IFLA_GROUP")) == (
        "veth1",
        "cnm:ep:x",
        0x636E6D01,
    )
    m = decoded(rtnl.set_link(9, new_name="gone0", master=0), ifinfmsg)
    assert (m["index"], m["change"], m.get_attr("IFLA_IFNAME"), m.get_attr("IFLA_MASTER")) == (9, 0, "gone0", 0)


def test_delete_by_index_name_or_group_never_group_zero():
    assert decoded(rtnl.delete_link(5), ifinfmsg)["index"] == 5
    assert decoded(rtnl.delete_link(name="x"), ifinfmsg).get_attr("IFLA_IFNAME") == "x"
    m = decoded(rtnl.delete_link(group=77), ifinfmsg)
    assert (m["index"], m.get_attr("IFLA_GROUP"), m.get_attr("IFLA_IFNAME")) == (0, 77, None)
    with pytest.raises(ValueError, match="group 0"):
        rtnl.delete_link(group=0)


def test_addresses_v4_with_broadcast_v6_without_dad():
    m = decoded(rtnl.add_address(4, "172.18.0.5/16"), ifaddrmsg)
    assert (m["family"], m["prefixlen"], m["index"]) == (socket.AF_INET, 16, 4)
    assert (m.get_attr("IFA_LOCAL"), m.get_attr("IFA_ADDRESS"), m.get_attr("IFA_BROADCAST")) == (
        "172.18.0.5",
        "172.18.0.5",
        "172.18.255.255",
    )
    assert decoded(rtnl.add_address(4, "10.0.0.1/31"), ifaddrmsg).get_attr("IFA_BROADCAST") is None
    m = decoded(rtnl.add_address(4, "fd00::5/64"), ifaddrmsg)
    assert (m["family"], m["prefixlen"], m.get_attr("IFA_ADDRESS")) == (socket.AF_INET6, 64, "fd00::5")
    assert m["flags"] & rtnl.IFA_F_NODAD and m.get_attr("IFA_FLAGS") & rtnl.IFA_F_NODAD


def test_routes_default_and_on_link():
    m = decoded(rtnl.add_route("0.0.0.0/0", gateway="10.0.0.1", oif=3), rtmsg)
    assert (m["family"], m["dst_len"], m["table"], m["scope"], m["type"]) == (socket.AF_INET, 0, 254, 0, 1)
    assert (m.get_attr("RTA_DST"), m.get_attr("RTA_GATEWAY"), m.get_attr("RTA_OIF")) == (None, "10.0.0.1", 3)
    m = decoded(rtnl.add_route("10.9.0.0/16", oif=3, scope=rtnl.RT_SCOPE_LINK, table=1000, replace=True), rtmsg)
    assert (m["dst_len"], m["scope"], m.get_attr("RTA_DST"), m.get_attr("RTA_TABLE")) == (
        16,
        rtnl.RT_SCOPE_LINK,
        "10.9.0.0",
        1000,
    )
    assert rtnl.add_route("::/0", gateway="fd00::1").flags & rtnl.NLM_F_REPLACE == 0


def test_parse_link_reads_what_pyroute2_encodes():
    m = ifinfmsg()
    m["header"]["type"], m["header"]["sequence_number"] = rtnl.RTM_NEWLINK, 9
    m["index"], m["flags"] = 12, 1
    m["attrs"] = [
        ("IFLA_IFNAME", "veth0ab"),
        ("IFLA_MTU", 1500),
        ("IFLA_MASTER", 4),
        ("IFLA_IFALIAS", "cnm:ep:abc"),
        ("IFLA_GROUP", 5),
        ("IFLA_ADDRESS", "02:42:ac:11:00:02"),
        ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth")]}),
    ]
    m.encode()
    link = rtnl.parse_link(m.data)
    assert link == rtnl.LinkInfo(
        index=12,
        name="veth0ab",
        up=True,
        master=4,
        alias="cnm:ep:abc",
        group=5,
        kind="veth",
        mtu=1500,
        mac="02:42:ac:11:00:02",
    )


def test_parse_error_with_the_kernels_own_words():
    text = b"Device does not exist\0"
    tlv = struct.pack("=HH", 4 + len(text), rtnl.NLMSGERR_ATTR_MSG) + text + b"\0" * (-len(text) & 3)
    body = struct.pack("=i", -errno.ENODEV) + struct.pack("=IHHII", 32, 16, 1, 3, 0) + tlv
    msg = struct.pack("=IHHII", 16 + len(body), rtnl.NLMSG_ERROR, rtnl.NLM_F_ACK_TLVS, 3, 0) + body
    assert rtnl.parse_error(msg) == (errno.ENODEV, "Device does not exist")
    ack = struct.pack("=IHHII", 36, rtnl.NLMSG_ERROR, 0, 3, 0) + struct.pack("=i", 0) + b"\0" * 16
    assert rtnl.parse_error(ack) == (0, "")


# -- neighbours and FDB entries, read back by pyroute2's ndmsg ---------------------------


def test_neighbour_replace_is_a_permanent_ip_to_mac_entry():
    msg = rtnl.neighbour(12, "10.61.0.7", "02:42:0A:3d:00:07")
    assert msg.type == rtnl.RTM_NEWNEIGH and msg.flags == rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
    m = decoded(msg, ndmsg)
    assert (m["family"], m["ifindex"], m["state"], m["flags"]) == (socket.AF_INET, 12, rtnl.NUD_PERMANENT, 0)
    assert (m.get_attr("NDA_DST"), m.get_attr("NDA_LLADDR")) == ("10.61.0.7", "02:42:0a:3d:00:07")


def test_neighbour_of_an_ipv6_address():
    m = decoded(rtnl.neighbour(3, "fd00::7", "02:00:00:00:00:01"), ndmsg)
    assert (m["family"], m.get_attr("NDA_DST")) == (socket.AF_INET6, "fd00::7")


def test_neighbour_delete_names_only_the_address():
    msg = rtnl.delete_neighbour(12, "10.61.0.7")
    assert (msg.type, msg.flags) == (rtnl.RTM_DELNEIGH, 0)
    m = decoded(msg, ndmsg)
    assert (m["family"], m["ifindex"], m.get_attr("NDA_DST"), m.get_attr("NDA_LLADDR")) == (
        socket.AF_INET,
        12,
        "10.61.0.7",
        None,
    )


def test_fdb_replace_is_the_devices_own_permanent_entry_to_a_vtep():
    msg = rtnl.fdb(5, "02:42:0a:3d:00:07", "198.18.0.9")
    assert msg.type == rtnl.RTM_NEWNEIGH and msg.flags == rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE
    m = decoded(msg, ndmsg)
    assert (m["family"], m["ifindex"]) == (socket.AF_BRIDGE, 5)
    assert m["state"] == rtnl.NUD_PERMANENT | rtnl.NUD_NOARP and m["flags"] == rtnl.NTF_SELF
    assert (m.get_attr("NDA_LLADDR"), m.get_attr("NDA_DST")) == ("02:42:0a:3d:00:07", "198.18.0.9")


def test_fdb_delete_with_and_without_the_vtep():
    m = decoded(rtnl.delete_fdb(5, "02:42:0a:3d:00:07"), ndmsg)
    assert m["family"] == socket.AF_BRIDGE and m["flags"] == rtnl.NTF_SELF
    assert (m.get_attr("NDA_LLADDR"), m.get_attr("NDA_DST")) == ("02:42:0a:3d:00:07", None)
    msg = rtnl.delete_fdb(5, "02:42:0a:3d:00:07", "198.18.0.9")
    assert msg.type == rtnl.RTM_DELNEIGH
    assert decoded(msg, ndmsg).get_attr("NDA_DST") == "198.18.0.9"


def test_bad_addresses_are_refused_before_anything_is_sent():
    with pytest.raises(ValueError):
        rtnl.neighbour(1, "10.0.0.300", "02:00:00:00:00:01")
    with pytest.raises(ValueError):
        rtnl.fdb(1, "02:00:00:00:01", "198.18.0.1")
