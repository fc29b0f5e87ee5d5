"""BridgeDriver against a real kernel, through a Netlink bound to the test's namespace.
Nothing may appear in the root namespace."""

from __future__ import annotations

import socket

import pytest

from cnm import labels
from cnm.driverapi import EndpointInterface, IPAMData, NetworkSpec
from cnm.errors import Conflict
from cnm.osl import netns
from cnm.osl.netlink import Netlink
from drivers.bridge import naming
from drivers.bridge.driver import BridgeDriver
from tests.integration.conftest import link_names, sh

NID = "0123456789ab" + "c" * 52
BR = "br-0123456789ab"


def spec(
    nid: str = NID,
    options: dict | None = None,
    internal: bool = False,
    subnet: str = "172.30.0.0/24",
    gateway: str = "172.30.0.1/24",
) -> NetworkSpec:
    return NetworkSpec(
        id=nid, name="t", options=options or {}, ipv4=(IPAMData(pool=subnet, gateway=gateway),), internal=internal
    )


def ns_cat(ns: str, path: str) -> str:
    return sh("ip", "netns", "exec", ns, "cat", path).stdout.strip()


@pytest.fixture
def driver(host_ns):
    drv = BridgeDriver(lambda: Netlink(host_ns))
    yield drv
    drv.close()


def test_create_and_delete_network(host_ns, driver):
    root_links = sh("ip", "-o", "link", "show").stdout
    root_forward = open("/proc/sys/net/ipv4/ip_forward").read()

    driver.create_network(spec(options={labels.MTU: "1400"}))
    out = sh("ip", "-n", host_ns, "-d", "link", "show", BR).stdout
    assert "bridge" in out and "mtu 1400" in out and "UP" in out.split(">")[0]
    assert f"alias {naming.network_alias(NID)}" in out
    assert "inet 172.30.0.1/24" in sh("ip", "-n", host_ns, "-o", "addr", "show", "dev", BR).stdout
    assert ns_cat(host_ns, "/proc/sys/net/ipv4/ip_forward") == "1"
    assert ns_cat(host_ns, f"/proc/sys/net/ipv6/conf/{BR}/disable_ipv6") == "1"

    driver.delete_network(NID)
    assert BR not in link_names(host_ns)
    driver.delete_network(NID)  # idempotent

    assert sh("ip", "-o", "link", "show").stdout == root_links  # root namespace untouched
    assert open("/proc/sys/net/ipv4/ip_forward").read() == root_forward


def test_foreign_link_is_conflict_and_left_alone(host_ns, driver):
    sh("ip", "-n", host_ns, "link", "add", "mine", "type", "bridge")
    with pytest.raises(Conflict, match="mine already exists and was not created by cnm"):
        driver.create_network(spec(options={labels.BRIDGE_NAME: "mine"}))
    assert "mine" in link_names(host_ns)
    assert "inet " not in sh("ip", "-n", host_ns, "-o", "addr", "show", "dev", "mine").stdout
    driver.delete_network(NID)
    assert "mine" in link_names(host_ns)


def test_restarted_driver_restores_and_deletes_by_mark(host_ns, driver):
    driver.create_network(spec())
    driver.close()
    fresh = BridgeDriver(lambda: Netlink(host_ns))
    try:
        sh("ip", "-n", host_ns, "addr", "flush", "dev", BR)
        fresh.restore_network(spec())
        assert "inet 172.30.0.1/24" in sh("ip", "-n", host_ns, "-o", "addr", "show", "dev", BR).stdout
        amnesiac = BridgeDriver(lambda: Netlink(host_ns))
        amnesiac.delete_network(NID)  # no memory: finds it by its alias
        amnesiac.close()
        assert BR not in link_names(host_ns)
    finally:
        fresh.close()


def test_endpoints_join_and_talk(host_ns, driver, tmp_path):
    """Two endpoints plugged in the way the core will do it; a datagram crosses the bridge."""
    driver.create_network(spec(options={labels.MTU: "1400"}))
    sandboxes = []
    try:
        for i, eid in enumerate(("a" * 64, "b" * 64), start=2):
            iface = driver.create_endpoint(NID, eid, EndpointInterface(address=f"172.30.0.{i}/24"), {})
            assert iface.mac == f"02:42:ac:1e:00:0{i}"
            path = str(tmp_path / f"sb{i}")
            netns.create_netns(path)
            sandboxes.append(path)
            res = driver.join(NID, eid, path, {})
            assert res.gateway == "172.30.0.1" and res.src_ifname == naming.peer_ifname(eid) and res.in_sandbox
            host = sh("ip", "-n", host_ns, "-d", "link", "show", naming.host_ifname(eid)).stdout
            assert f"master {BR}" in host and "mtu 1400" in host
            # A bridge port: no IPv6 address (nor its routes) of its own on the host.
            assert "addrgenmode none" in host, host
            assert sh("ip", "-n", host_ns, "-6", "addr", "show", "dev", naming.host_ifname(eid)).stdout == ""
            v6 = f"/proc/sys/net/ipv6/conf/{naming.host_ifname(eid)}/disable_ipv6"
            assert sh("ip", "netns", "exec", host_ns, "cat", v6).stdout.strip() == "1"  # nor an ff00::/8 route
            routes = sh("ip", "-n", host_ns, "-6", "route", "show", "table", "all", "dev", naming.host_ifname(eid))
            assert routes.stdout == "", routes.stdout
            with Netlink(path) as sb:
                sb.rename_link(res.src_ifname, f"{res.dst_prefix}0")
                sb.set_link_up("lo")
                sb.set_link_up("eth0")
                sb.add_address("eth0", iface.address)
                sb.add_default_route(res.gateway)
            inside = sh("nsenter", f"--net={path}", "--", "ip", "-o", "link", "show", "eth0").stdout
            assert iface.mac in inside and "mtu 1400" in inside
        ports = sh("ip", "-n", host_ns, "-o", "link", "show", "master", BR).stdout.splitlines()
        assert len(ports) == 2

        def udp(addr: str) -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((addr, 0))
            s.settimeout(5)
            return s

        a = netns.run_in_netns(sandboxes[0], udp, "172.30.0.2")
        b = netns.run_in_netns(sandboxes[1], udp, "172.30.0.3")
        try:
            a.sendto(b"hello", b.getsockname())
            data, peer = b.recvfrom(100)
            assert data == b"hello" and peer[0] == "172.30.0.2"
        finally:
            a.close()
            b.close()

        driver.delete_endpoint(NID, "a" * 64)
        assert naming.host_ifname("a" * 64) not in link_names(host_ns)
        driver.delete_endpoint(NID, "a" * 64)  # idempotent
    finally:
        for path in sandboxes:
            netns.delete_netns(path)
    driver.delete_network(NID)


def test_a_bridge_full_of_someone_elses_ports_is_refused_naming_it(host_ns, driver):
    """The driver counts its own endpoints; the kernel's EXFULL (which names no bridge)
    for ports it did not make becomes the same refusal, naming the bridge."""
    driver.create_network(spec(subnet="172.30.0.0/16", gateway="172.30.0.1/16"))
    nl = Netlink(host_ns)
    try:
        from cnm.osl import rtnl

        br = nl.link_index(BR)
        for i in range(1023):  # someone else's ports, by the raw socket
            nl._rt.do(rtnl.create_veth(f"f{i}", f"g{i}", master=br))
        assert nl.bridge_port_count(BR) == 1023
        eid = "e" * 64
        driver.create_endpoint(NID, eid, EndpointInterface(address="172.30.1.2/16"), {})
        sandbox = f"/run/netns/{host_ns}"
        with pytest.raises(Conflict, match=f"bridge {BR} has 1023 ports, the Linux maximum"):
            driver.join(NID, eid, sandbox, {})
        assert not nl.link_exists(naming.host_ifname(eid))
    finally:
        nl.close()
