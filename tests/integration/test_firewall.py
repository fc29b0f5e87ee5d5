"""The nftables firewall with real packets, inside a throwaway "host" namespace.

Topology (every namespace is created here and deleted afterwards):

    out (198.18.0.2) ── veth ── HOST (198.18.0.1)
                                 ├─ br-a 10.0.1.1/24: a1 .2, a2 .3        (icc on, masquerade)
                                 ├─ br-b 10.0.2.1/24: b1 .2               (icc on, masquerade)
                                 ├─ br-i 10.0.3.1/24: i1 .2, i2 .3        (internal)
                                 └─ br-n 10.0.4.1/24: n1 .2, n2 .3        (icc off)

`out` has routes to every container subnet via HOST, so anything that fails to pass
fails because of the firewall, not routing. Every container runs a tiny server on
TCP+UDP port 80 that answers "<name> <peer ip>", so the tests see who answered and
which source address it saw.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ns_sh, sh

from cnm.errors import InternalError, InvalidParameter
from cnm.firewall import TABLES, Firewall, NetworkRules, PortMapping
from cnm.osl import nft
from cnm.osl.sysctl import sysctl_path

HOST_IP = "198.18.0.1"
OUT_IP = "198.18.0.2"

NETS = {  # bridge: (subnet prefix, rules kwargs, containers)
    "br-a": ("10.0.1", {}, ["a1", "a2"]),
    "br-b": ("10.0.2", {}, ["b1"]),
    "br-i": ("10.0.3", {"internal": True}, ["i1", "i2"]),
    "br-n": ("10.0.4", {"icc": False}, ["n1", "n2"]),
}

SERVER = r"""
import socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
fam, any_ = (socket.AF_INET6, "::") if sys.argv[3:] == ["6"] else (socket.AF_INET, "0.0.0.0")
def udp():
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.bind((any_, port))
    while True:
        _, peer = u.recvfrom(100)
        u.sendto(f"{name} {peer[0]}".encode(), peer)
t = socket.socket(fam)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((any_, port))
t.listen(16)
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
while True:
    c, peer = t.accept()
    c.sendall(f"{name} {peer[0]}".encode())
    c.close()
"""

CLIENT = r"""
import socket, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(1.0)
try:
    if proto == "tcp":
        s.connect((host, port))
    else:
        s.sendto(b"hi", (host, port))
    print(s.recv(100).decode())
except OSError as exc:
    print(f"failed: {exc}")
    sys.exit(1)
"""


class Topo:
    def __init__(self, host: str) -> None:
        self.host = host
        self.ns: dict[str, str] = {}  # short name -> netns name
        self.ip: dict[str, str] = {}
        self.procs: list[subprocess.Popen] = []

    def add_ns(self, short: str) -> str:
        name = f"{self.host}-{short}"
        sh("ip", "netns", "add", name)
        self.ns[short] = name
        ns_sh(name, "ip", "link", "set", "lo", "up")
        return name

    def build(self) -> None:
        h = self.host
        ns_sh(h, "ip", "link", "set", "lo", "up")
        out = self.add_ns("out")
        sh("ip", "-n", h, "link", "add", "vout", "type", "veth", "peer", "name", "eth0", "netns", out)
        ns_sh(h, "ip", "addr", "add", f"{HOST_IP}/24", "dev", "vout")
        ns_sh(h, "ip", "link", "set", "vout", "up")
        ns_sh(out, "ip", "addr", "add", f"{OUT_IP}/24", "dev", "eth0")
        ns_sh(out, "ip", "link", "set", "eth0", "up")
        for br, (pfx, _, containers) in NETS.items():
            ns_sh(h, "ip", "link", "add", br, "type", "bridge")
            ns_sh(h, "ip", "addr", "add", f"{pfx}.1/24", "dev", br)
            ns_sh(h, "ip", "link", "set", br, "up")
            ns_sh(out, "ip", "route", "add", f"{pfx}.0/24", "via", HOST_IP)
            for i, c in enumerate(containers):
                cns = self.add_ns(c)
                self.ip[c] = f"{pfx}.{i + 2}"
                sh("ip", "-n", h, "link", "add", f"v{c}", "type", "veth", "peer", "name", "eth0", "netns", cns)
                ns_sh(h, "ip", "link", "set", f"v{c}", "master", br, "up")
                ns_sh(cns, "ip", "addr", "add", f"{self.ip[c]}/24", "dev", "eth0")
                ns_sh(cns, "ip", "link", "set", "eth0", "up")
                ns_sh(cns, "ip", "route", "add", "default", "via", f"{pfx}.1")
        self.ip["out"] = OUT_IP
        for short in self.ns:
            self.serve(short)

    def serve(self, short: str, port: int = 80, family: int = 4) -> None:
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[short], sys.executable, "-c", SERVER, short, str(port), str(family)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.procs.append(p)
        assert p.stdout.readline().strip() == "ready"

    def destroy(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait(5)
        for name in self.ns.values():
            sh("ip", "netns", "del", name, check=False)

    # -- probes ------------------------------------------------------------------

    def where(self, src: str) -> str:
        return self.host if src == "host" else self.ns[src]

    def ping(self, src: str, dst_ip: str) -> bool:
        return ns_sh(self.where(src), "/bin/busybox", "ping", "-c1", "-W1", dst_ip, check=False).returncode == 0

    def talk(self, src: str, proto: str, dst_ip: str, port: int = 80) -> str | None:
        """The answer "<server> <peer ip seen by the server>", or None if nothing came back."""
        r = ns_sh(self.where(src), sys.executable, "-c", CLIENT, proto, dst_ip, str(port), check=False)
        return r.stdout.strip() if r.returncode == 0 else None


def host_sysctl(host: str):
    def write(key: str, value: str) -> None:
        ns_sh(host, "sh", "-c", 'echo "$1" > "$2"', "_", value, sysctl_path(key))

    return write


@pytest.fixture
def topo6(host_ns):
    """out (fd00:99::2) -- HOST (fd00:99::1) -- br-6 fd00:6::1/64: c6 fd00:6::2"""
    t = Topo(host_ns)
    try:
        h = t.host
        out, c6 = t.add_ns("out"), t.add_ns("c6")
        sh("ip", "-n", h, "link", "add", "vout", "type", "veth", "peer", "name", "eth0", "netns", out)
        sh("ip", "-n", h, "link", "add", "vc6", "type", "veth", "peer", "name", "eth0", "netns", c6)
        ns_sh(h, "ip", "link", "add", "br-6", "type", "bridge")
        ns_sh(h, "ip", "link", "set", "vc6", "master", "br-6")
        for ns, dev, addr in [
            (h, "vout", "fd00:99::1/64"),
            (out, "eth0", "fd00:99::2/64"),
            (h, "br-6", "fd00:6::1/64"),
            (c6, "eth0", "fd00:6::2/64"),
        ]:
            ns_sh(ns, "ip", "addr", "add", addr, "dev", dev, "nodad")
            ns_sh(ns, "ip", "link", "set", dev, "up")
        ns_sh(h, "ip", "link", "set", "vc6", "up")
        ns_sh(c6, "ip", "-6", "route", "add", "default", "via", "fd00:6::1")
        ns_sh(out, "ip", "-6", "route", "add", "fd00:6::/64", "via", "fd00:99::1")
        t.serve("out", family=6)
        t.serve("c6", family=6)
        # Warm up neighbour discovery both sides of the host: the first packets
        # otherwise wait on ND longer than the probes' 1 s timeout.
        assert t.ping("c6", "fd00:6::1") and t.ping("out", "fd00:99::1")
        yield t
    finally:
        t.destroy()


@pytest.fixture
def topo(host_ns):
    t = Topo(host_ns)
    try:
        t.build()
        yield t
    finally:
        t.destroy()


@pytest.fixture
def firewall(topo):
    h = topo.host
    fw = Firewall(
        apply=lambda script: nft.apply(script, h), sysctl=host_sysctl(h), delete=lambda: nft.delete_tables(TABLES, h)
    )
    for br, (pfx, kw, _) in NETS.items():
        fw.set_network(NetworkRules(id=f"net-{br}", bridge=br, subnets_v4=(f"{pfx}.0/24",), **kw))
    return fw


def ours(host: str) -> bool:
    return ("inet", "cnm") in nft.list_tables(host)


def test_networks_isolation_icc_internal_masquerade(topo, firewall):
    t = topo
    assert ns_sh(t.host, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    # same bridge, icc on
    assert t.ping("a1", t.ip["a2"])
    # isolation, both ways
    assert not t.ping("a1", t.ip["b1"])
    assert not t.ping("b1", t.ip["a1"])
    # icc off: containers cannot talk, the gateway still answers
    assert not t.ping("n1", t.ip["n2"])
    assert t.ping("n1", "10.0.4.1")
    # internal: talk inside, nothing out, nothing in
    assert t.ping("i1", t.ip["i2"])
    assert t.talk("i1", "tcp", OUT_IP) is None
    assert t.talk("out", "tcp", t.ip["i1"]) is None
    # a normal network reaches the outside, masqueraded behind the host's address
    assert t.talk("a1", "tcp", OUT_IP) == f"out {HOST_IP}"
    assert t.talk("b1", "udp", OUT_IP) == f"out {HOST_IP}"
    # unpublished container ports are not reachable from outside even with a route
    assert t.talk("out", "tcp", t.ip["a1"]) is None

    # masquerade off: the outside sees the container's own address
    firewall.set_network(NetworkRules(id="net-br-b", bridge="br-b", subnets_v4=("10.0.2.0/24",), masquerade=False))
    assert t.talk("b1", "tcp", OUT_IP) == f"out {t.ip['b1']}"

    # a flushed ruleset is repaired by reapply()
    ns_sh(t.host, "nft", "flush", "ruleset")
    assert t.ping("a1", t.ip["b1"]), "without our table the bridges route to each other"
    firewall.reapply()
    assert not t.ping("a1", t.ip["b1"])

    firewall.teardown()
    assert not ours(t.host)
    firewall.teardown()  # idempotent
    # without our table everything above that was blocked passes: the firewall did it
    assert t.ping("a1", t.ip["b1"])
    assert t.ping("n1", t.ip["n2"])
    assert t.talk("i1", "tcp", OUT_IP) == f"out {t.ip['i1']}"


def test_published_ports(topo, firewall):
    t = topo
    firewall.add_ports(
        "ep-a1",
        [
            PortMapping("tcp", None, 8080, t.ip["a1"], 80, "br-a"),
            PortMapping("udp", None, 5353, t.ip["a1"], 80, "br-a"),
        ],
    )
    firewall.add_ports("ep-n1", [PortMapping("tcp", HOST_IP, 9090, t.ip["n1"], 80, "br-n")])

    # from another host: source address preserved
    assert t.talk("out", "tcp", HOST_IP, 8080) == f"a1 {OUT_IP}"
    assert t.talk("out", "udp", HOST_IP, 5353) == f"a1 {OUT_IP}"
    # from the host itself, on its own address and on loopback
    assert t.talk("host", "tcp", HOST_IP, 8080) == f"a1 {HOST_IP}"
    assert t.talk("host", "tcp", "127.0.0.1", 8080) == "a1 10.0.1.1"
    # hairpin: a container on the same bridge via the host address is masqueraded
    assert t.talk("a2", "tcp", HOST_IP, 8080) == "a1 10.0.1.1"
    # ... and from another network via the host address (like Docker's proxy)
    assert t.talk("b1", "tcp", HOST_IP, 8080) is not None
    # a port bound to one host address is not published on the others
    assert t.talk("out", "tcp", HOST_IP, 9090) == f"n1 {OUT_IP}"
    assert t.talk("host", "tcp", "127.0.0.1", 9090) is None
    # icc off still lets a neighbour reach a published port through the host address
    assert t.talk("n2", "tcp", HOST_IP, 9090) == "n1 10.0.4.1"
    assert t.talk("n2", "tcp", t.ip["n1"], 80) is None

    firewall.remove_ports("ep-a1")
    assert t.talk("out", "tcp", HOST_IP, 8080) is None

    # a flush wipes the DNAT; reapply() brings it back
    ns_sh(t.host, "nft", "flush", "ruleset")
    assert t.talk("out", "tcp", HOST_IP, 9090) is None
    firewall.reapply()
    assert t.talk("out", "tcp", HOST_IP, 9090) == f"n1 {OUT_IP}"

    # a failed apply leaves state and kernel as they were
    before = firewall.state
    real_apply = firewall._apply
    firewall._apply = lambda script: real_apply(script + "this is not nft\n")
    with pytest.raises(InternalError, match="nft refused"):
        firewall.add_ports("ep-b1", [PortMapping("tcp", None, 7070, t.ip["b1"], 80, "br-b")])
    firewall._apply = real_apply
    assert firewall.state is before
    assert t.talk("out", "tcp", HOST_IP, 9090) == f"n1 {OUT_IP}"
    assert t.talk("out", "tcp", HOST_IP, 7070) is None

    firewall.teardown()
    assert not ours(t.host)


def test_ipv6_masquerade_and_published_port(topo6):
    t, h = topo6, topo6.host
    fw = Firewall(
        apply=lambda script: nft.apply(script, h), sysctl=host_sysctl(h), delete=lambda: nft.delete_tables(TABLES, h)
    )
    fw.set_network(NetworkRules(id="net-6", bridge="br-6", subnets_v6=("fd00:6::/64",)))
    fw.add_ports(
        "ep-c6",
        [
            PortMapping("tcp", None, 8080, "fd00:6::2", 80, "br-6"),
            PortMapping("udp", "fd00:99::1", 5353, "fd00:6::2", 80, "br-6"),
        ],
    )
    try:
        assert t.talk("c6", "tcp", "fd00:99::2") == "out fd00:99::1"
        assert t.talk("out", "tcp", "fd00:99::1", 8080) == "c6 fd00:99::2"
        assert t.talk("out", "udp", "fd00:99::1", 5353) == "c6 fd00:99::2"
        assert t.talk("out", "tcp", "fd00:6::2", 80) is None  # unpublished
    finally:
        fw.teardown()
    assert t.talk("out", "tcp", "fd00:6::2", 80) == "c6 fd00:99::2"


GOLDEN = Path(__file__).resolve().parents[1] / "unit" / "golden"


def test_golden_scripts_are_valid_nft_and_foreign_tables_survive(host_ns):
    ns_sh(host_ns, "nft", "add table inet someone_else")
    goldens = sorted(GOLDEN.glob("firewall_*.nft"))
    assert goldens, f"no golden files under {GOLDEN}"
    for path in goldens:
        nft.apply(path.read_text(), host_ns)
        nft.apply(path.read_text(), host_ns)  # idempotent
        assert nft.list_tables(host_ns).count(("inet", "cnm")) == 1, path.name
    nft.delete_tables(TABLES, host_ns)
    nft.delete_tables(TABLES, host_ns)
    assert nft.list_tables(host_ns) == [("inet", "someone_else")]
    with pytest.raises(InvalidParameter, match="not one of ours"):
        nft.delete_tables([("inet", "someone_else")], host_ns)
    assert nft.list_tables(host_ns) == [("inet", "someone_else")]
