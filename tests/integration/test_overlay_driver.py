"""OverlayDriver across two (three) fake hosts: real VXLAN, real packets, real nftables.

Topology, all in throwaway namespaces (nothing in the root namespace):

    sw: bridge "sw0" ── hA u0 198.18.0.1/24   (host_ns fixture)   container cA: 10.200.0.2
                    ├─ hB u0 198.18.0.2/24                        container cB: 10.200.0.3
                    └─ hC u0 198.18.0.3/24   (an outsider sending VXLAN)

Each host runs its own OverlayDriver (VxlanNetlink bound to that host, run_dir in
tmp_path, NftVxlanFilter in that host). The test plays the core: it moves the
container end into a container namespace, addresses it, and feeds discovery events.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cnm.driverapi import EndpointInterface, IPAMData, NetworkSpec
from cnm.osl import netns, nft
from cnm.osl.vxlan import VxlanNetlink
from drivers.overlay import naming
from drivers.overlay.config import VXLANID_LIST
from drivers.overlay.driver import OverlayDriver
from drivers.overlay.filter import TABLE_FAMILY, TABLE_NAME, NftVxlanFilter
from tests.integration.conftest import sh

NID1 = "1111111111aa" + "1" * 52
NID2 = "2222222222bb" + "2" * 52
SUBNET, GATEWAY = "10.200.0.0/24", "10.200.0.1/24"
VTEP = {"A": "198.18.0.1", "B": "198.18.0.2", "C": "198.18.0.3"}


def spec(nid: str = NID1, vni: int = 256, subnet: str = SUBNET, gateway: str = GATEWAY) -> NetworkSpec:
    return NetworkSpec(
        id=nid, name=f"ov{vni}", options={VXLANID_LIST: str(vni)}, ipv4=(IPAMData(pool=subnet, gateway=gateway),)
    )


def in_path(path: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh("nsenter", f"--net={path}", "--", *argv, check=check)


BB = "/bin/busybox"  # the machine has no iputils ping


def ping(ns: str, address: str, count: int = 1) -> bool:
    """True if any of `count` echo requests is answered (busybox waits -W seconds for
    the first reply after sending them all)."""
    r = sh("ip", "netns", "exec", ns, BB, "ping", "-c", str(count), "-i", "0.2", "-W", "2", address, check=False)
    return r.returncode == 0


def no_ping(ns: str, address: str) -> bool:
    r = sh("ip", "netns", "exec", ns, BB, "ping", "-c", "1", "-W", "1", address, check=False)
    return r.returncode != 0


def rx_packets(path: str, dev: str) -> int:
    out = json.loads(in_path(path, "ip", "-s", "-j", "link", "show", "dev", dev).stdout)
    return out[0]["stats64"]["rx"]["packets"]


def drop_counter(ns: str) -> int:
    """Packets counted by the drop rule of our table in host `ns`."""
    for item in nft.list_ruleset_json(ns)["nftables"]:
        rule = item.get("rule")
        if not rule or rule["table"] != TABLE_NAME:
            continue
        exprs = rule["expr"]
        if any("drop" in e for e in exprs):
            return next(e["counter"]["packets"] for e in exprs if "counter" in e)
    raise AssertionError(f"no drop rule in table {TABLE_NAME} of {ns}")


@dataclass
class Host:
    name: str  # `ip netns` name of the host namespace
    vtep: str
    driver: OverlayDriver
    run_dir: Path
    containers: list[str] = field(default_factory=list)

    def container(self, nid: str, eid: str, address: str) -> tuple[str, str]:
        """Create an endpoint and plug it into a new container namespace, as the core
        would. Returns (container namespace, MAC)."""
        iface = self.driver.create_endpoint(nid, eid, EndpointInterface(address=address), {})
        join = self.driver.join(nid, eid, "", {})
        assert join.gateway is None and join.dst_prefix == "eth" and not join.static_routes
        cns = f"cnmt-c{secrets.token_hex(3)}"
        sh("ip", "netns", "add", cns)
        self.containers.append(cns)
        self.driver.host.move_link_to_netns(join.src_ifname, f"/run/netns/{cns}", new_name="eth0")
        sh("ip", "-n", cns, "addr", "add", address, "dev", "eth0")
        sh("ip", "-n", cns, "link", "set", "eth0", "up")
        sh("ip", "-n", cns, "link", "set", "lo", "up")
        return cns, iface.mac

    def peer(self, nid: str, eid: str, address: str, mac: str, vtep: str, *, delete: bool = False) -> None:
        data = {"network_id": nid, "endpoint_id": eid, "ip": address, "mac": mac, "vtep": vtep}
        (self.driver.discover_delete if delete else self.driver.discover_new)("peer", data)


@pytest.fixture
def cluster(host_ns, tmp_path):
    """Hosts A (host_ns), B and C on one underlay switch; drivers on A and B."""
    sw, hb, hc = (f"cnmt-{p}{secrets.token_hex(3)}" for p in ("sw", "hb", "hc"))
    made = [sw, hb, hc]
    hosts: dict[str, Host] = {}
    try:
        for ns in made:
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", sw, "link", "add", "sw0", "type", "bridge")
        sh("ip", "-n", sw, "link", "set", "sw0", "up")
        for key, ns in (("A", host_ns), ("B", hb), ("C", hc)):
            port = f"p{key}"
            sh("ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "u0", "netns", ns)
            sh("ip", "-n", sw, "link", "set", port, "master", "sw0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{VTEP[key]}/24", "dev", "u0")
            sh("ip", "-n", ns, "link", "set", "u0", "up")
        for key, ns in (("A", host_ns), ("B", hb)):
            path = f"/run/netns/{ns}"
            run_dir = tmp_path / key
            drv = OverlayDriver(
                lambda p, path=path: VxlanNetlink(p or path),
                run_dir=str(run_dir),
                advertise_addr=VTEP[key],
                underlay_mtu=1500,
                firewall=NftVxlanFilter(ns),
            )
            hosts[key] = Host(ns, VTEP[key], drv, run_dir)
        hosts["A"].driver.discover_new("node", {"address": VTEP["B"]})
        hosts["B"].driver.discover_new("node", {"address": VTEP["A"]})
        hosts["C"] = Host(hc, VTEP["C"], None, tmp_path / "C")  # type: ignore[arg-type]
        yield hosts
    finally:
        for key in ("A", "B"):
            host = hosts.get(key)
            if host is None:
                continue
            for nid in host.driver.network_ids():
                try:
                    host.driver.delete_network(nid)
                except Exception as exc:  # report, but finish the cleanup
                    print(f"cleanup: delete_network {nid[:12]} on {key}: {exc}")
            host.driver.close()
            for c in host.containers:
                sh("ip", "netns", "del", c, check=False)
            ovdir = host.run_dir / naming.NETNS_SUBDIR
            for leftover in ovdir.iterdir() if ovdir.exists() else ():
                netns.delete_netns(str(leftover))
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def pair(cluster):
    """Network 1 on A and B, one container on each, peers and nodes programmed."""
    a, b = cluster["A"], cluster["B"]
    a.driver.create_network(spec())
    b.driver.create_network(spec())
    ea, eb = secrets.token_hex(32), secrets.token_hex(32)
    ca, mac_a = a.container(NID1, ea, "10.200.0.2/24")
    cb, mac_b = b.container(NID1, eb, "10.200.0.3/24")
    a.peer(NID1, eb, "10.200.0.3/24", mac_b, b.vtep)
    b.peer(NID1, ea, "10.200.0.2", mac_a, a.vtep)
    return dict(a=a, b=b, c=cluster["C"], ca=ca, cb=cb, ea=ea, eb=eb, mac_a=mac_a, mac_b=mac_b)


def test_ping_across_hosts_kernel_state_and_peer_removal(pair):
    a, b = pair["a"], pair["b"]
    root_links = sh("ip", "-o", "link", "show").stdout
    assert pair["mac_a"] == "02:42:0a:c8:00:02"  # from the IP
    assert ping(pair["ca"], "10.200.0.3", 2)
    assert ping(pair["cb"], "10.200.0.2")

    path, vx = a.driver.netns_path(NID1), a.driver.vxlan_name(NID1)
    assert path == str(a.run_dir / "overlay" / f"256-{NID1[:12]}")
    details = in_path(path, "ip", "-d", "link", "show", "dev", vx).stdout
    assert "vxlan id 256 " in details and "local 198.18.0.1" in details
    assert "dstport 4789" in details and "nolearning" in details and "proxy" in details
    assert f"master {a.driver.bridge_name(NID1)}" in details and "mtu 1450" in details
    # The VXLAN socket lives in the host namespace; the device does not.
    assert ":4789" in sh("ip", "netns", "exec", a.name, "ss", "-uan").stdout
    assert vx not in sh("ip", "-n", a.name, "-o", "link").stdout
    assert "mtu 1450" in sh("ip", "-n", pair["ca"], "link", "show", "eth0").stdout
    assert "inet 10.200.0.1/24" in in_path(path, "ip", "-o", "addr", "show", "dev", a.driver.bridge_name(NID1)).stdout

    fdb = in_path(path, "bridge", "fdb", "show", "dev", vx).stdout
    assert f"{pair['mac_b']} dst 198.18.0.2" in fdb and "self permanent" in fdb
    neigh = in_path(path, "ip", "neigh", "show", "dev", vx).stdout
    assert f"10.200.0.3 lladdr {pair['mac_b']} PERMANENT" in neigh

    a.peer(NID1, pair["eb"], "10.200.0.3", pair["mac_b"], b.vtep, delete=True)
    # (the bridge's own learnt entry for the MAC may stay; the VXLAN one must go)
    assert f"{pair['mac_b']} dst" not in in_path(path, "bridge", "fdb", "show", "dev", vx).stdout
    assert "10.200.0.3" not in in_path(path, "ip", "neigh", "show", "dev", vx).stdout
    assert no_ping(pair["ca"], "10.200.0.3")
    a.peer(NID1, pair["eb"], "10.200.0.3", pair["mac_b"], b.vtep, delete=True)  # idempotent

    a.driver.delete_network(NID1)
    assert not netns.is_netns(path)
    assert vx not in sh("ip", "-n", a.name, "-o", "link").stdout
    assert ":4789" not in sh("ip", "netns", "exec", a.name, "ss", "-uan").stdout  # socket closed
    assert nft.list_tables(a.name) == []  # filter gone with the last network
    a.driver.delete_network(NID1)  # idempotent
    assert sh("ip", "-o", "link", "show").stdout == root_links  # root namespace untouched
    assert TABLE_NAME not in sh("nft", "list", "tables").stdout


def vxlan_packet(vni: int, dst_mac: str, src_mac: str) -> bytes:
    """VXLAN header (flags I, VNI) + an inner Ethernet frame of a local experimental
    ethertype (0x88b5), so nothing on the way parses its payload."""
    header = struct.pack("!B3xI", 0x08, vni << 8)
    frame = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
    return header + frame + struct.pack("!H", 0x88B5) + b"cnm-overlay-test".ljust(46, b"\0")


def send_from(host_ns: str, src: str, dst: str, payload: bytes, count: int = 3) -> None:
    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((src, 0))
            for _ in range(count):
                s.sendto(payload, (dst, 4789))

    netns.run_in_netns(f"/run/netns/{host_ns}", send)


def test_filter_drops_vxlan_from_unknown_vtep_until_it_becomes_a_node(pair):
    a, c = pair["a"], pair["c"]
    path, vx = a.driver.netns_path(NID1), a.driver.vxlan_name(NID1)
    assert nft.list_tables(a.name) == [(TABLE_FAMILY, TABLE_NAME)]  # our table, nobody else's
    pkt = vxlan_packet(256, pair["mac_a"], "02:42:de:ad:be:ef")

    rx0, drops0 = rx_packets(path, vx), drop_counter(a.name)
    send_from(c.name, c.vtep, a.vtep, pkt)
    time.sleep(0.3)
    assert drop_counter(a.name) - drops0 >= 3
    assert rx_packets(path, vx) == rx0
    assert "02:42:de:ad:be:ef" not in in_path(path, "bridge", "fdb", "show").stdout

    a.driver.discover_new("node", {"address": c.vtep})
    assert c.vtep in a.driver.nodes()
    send_from(c.name, c.vtep, a.vtep, pkt)
    time.sleep(0.3)
    assert rx_packets(path, vx) - rx0 >= 3
    # The bridge learnt the injected source MAC on the VXLAN port: the frame got in.
    assert f"02:42:de:ad:be:ef dev {vx}" in in_path(path, "bridge", "fdb", "show").stdout

    a.driver.discover_delete("node", {"address": c.vtep})
    rx1 = rx_packets(path, vx)
    send_from(c.name, c.vtep, a.vtep, pkt)
    time.sleep(0.3)
    assert rx_packets(path, vx) == rx1
    assert ping(pair["ca"], "10.200.0.3")  # known node still gets through


def test_networks_with_different_vnis_are_isolated(pair):
    a, b = pair["a"], pair["b"]
    # Network 2: same subnet, VNI 257, on both hosts; a container on B only.
    a.driver.create_network(spec(NID2, 257))
    b.driver.create_network(spec(NID2, 257))
    cb2, _ = b.container(NID2, secrets.token_hex(32), "10.200.0.9/24")
    # Even told (wrongly) that A's container is a peer of network 2, B's frames carry
    # VNI 257 and land on network 2's bridge at A, never on network 1's.
    b.peer(NID2, pair["ea"], "10.200.0.2", pair["mac_a"], a.vtep)
    rx_net1 = rx_packets(a.driver.netns_path(NID1), a.driver.vxlan_name(NID1))
    rx_net2 = rx_packets(a.driver.netns_path(NID2), a.driver.vxlan_name(NID2))
    assert no_ping(cb2, "10.200.0.2")
    assert rx_packets(a.driver.netns_path(NID2), a.driver.vxlan_name(NID2)) - rx_net2 >= 1
    assert rx_packets(a.driver.netns_path(NID1), a.driver.vxlan_name(NID1)) == rx_net1
    assert ping(pair["cb"], "10.200.0.2")  # network 1 unaffected

    # restore is idempotent: same devices, peers still programmed, still pinging.
    before = in_path(b.driver.netns_path(NID1), "ip", "-o", "link").stdout
    b.driver.restore_network(spec())
    assert in_path(b.driver.netns_path(NID1), "ip", "-o", "link").stdout == before
    assert ping(pair["cb"], "10.200.0.2")


def test_capture_shows_vni_and_inner_addresses(pair, tmp_path):
    b = pair["b"]
    pcap, log = tmp_path / "vxlan.pcap", tmp_path / "tshark.log"
    with open(log, "w") as logf:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", b.name, "tshark", "-i", "u0", "-c", "4", "-w", str(pcap), "-f", "udp port 4789"],
            stdout=logf,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while "Capturing on" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert "Capturing on" in log.read_text(), f"tshark did not start: {log.read_text()}"
        # More echoes than tshark keeps: a late start of the capture cannot starve it.
        assert ping(pair["ca"], "10.200.0.3", 6)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    fields = sh("tshark", "-r", str(pcap), "-T", "fields", "-e", "vxlan.vni", "-e", "ip.src", "-e", "ip.dst").stdout
    rows = [line.split("\t") for line in fields.strip().splitlines()]
    assert len(rows) == 4, fields
    assert {r[0] for r in rows} == {"256"}
    pairs = {(r[1], r[2]) for r in rows}  # outer,inner source / outer,inner destination
    assert ("198.18.0.1,10.200.0.2", "198.18.0.2,10.200.0.3") in pairs
    assert ("198.18.0.2,10.200.0.3", "198.18.0.1,10.200.0.2") in pairs


GOLDEN = Path(__file__).resolve().parents[1] / "unit" / "golden"


def test_golden_filter_scripts_are_valid_nftables(host_ns):
    files = sorted(GOLDEN.glob("overlay_filter_*.nft"))
    assert files, f"no overlay golden files in {GOLDEN}"
    for path in files:
        nft.apply(path.read_text(), host_ns)
        nft.apply(path.read_text(), host_ns)  # replaces itself: re-applying works
        assert nft.list_tables(host_ns) == [(TABLE_FAMILY, TABLE_NAME)]
    NftVxlanFilter(host_ns).clear()
    NftVxlanFilter(host_ns).clear()  # idempotent
    assert nft.list_tables(host_ns) == []
