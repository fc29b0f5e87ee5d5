"""The embedded resolver over real sockets, in throwaway namespaces.

Topology (all inside namespaces this test creates):
  host ns:  br-a 10.89.0.1/24 + fd89::1/64 (network A), br-b 10.89.1.1/24 (network B),
            veth to the upstream ns 10.89.9.1/24; runs the resolver (standalone runner)
  c1: web      10.89.0.2, fd89::2 on A   (aliases frontend, svc)
  c2: client   10.89.0.3 on A   (alias svc) and 10.89.1.3 on B
  c3: db       10.89.1.4 on B
  up: dnsmasq  10.89.9.2, answers upstream.test -> 198.18.9.9
Lookups are made with busybox nslookup from the container namespaces.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import ns_sh, sh, stop

BUSYBOX = "/bin/busybox"
DNSMASQ = "/usr/sbin/dnsmasq"
NA, NB, NC = "a" * 64, "b" * 64, "c" * 64
C1, C2, C3 = "1" * 64, "2" * 64, "3" * 64

pytestmark = pytest.mark.skipif(
    not (os.path.exists(BUSYBOX) and os.path.exists(DNSMASQ)),
    reason="needs /bin/busybox (busybox-static) and /usr/sbin/dnsmasq (dnsmasq-base)",
)

ENDPOINTS = [
    dict(
        network_id=NA,
        network_name="neta",
        endpoint_id="e1a",
        container_id=C1,
        name="web",
        aliases=["frontend", "svc"],
        ipv4="10.89.0.2/24",
        ipv6="fd89::2/64",
    ),
    dict(
        network_id=NA,
        network_name="neta",
        endpoint_id="e2a",
        container_id=C2,
        name="client",
        aliases=["svc"],
        ipv4="10.89.0.3/24",
        ipv6=None,
    ),
    dict(
        network_id=NB,
        network_name="netb",
        endpoint_id="e2b",
        container_id=C2,
        name="client",
        aliases=[],
        ipv4="10.89.1.3/24",
        ipv6=None,
    ),
    dict(
        network_id=NB,
        network_name="netb",
        endpoint_id="e3b",
        container_id=C3,
        name="db",
        aliases=[],
        ipv4="10.89.1.4/24",
        ipv6=None,
    ),
]

# Sends raw payloads (hex, one per argv) over UDP, then one over TCP, to SERVER:53 and
# prints a JSON list of reply hex strings (None: no reply within the timeout).
PROBE = r"""
import json, socket, sys
server, mode, payloads = sys.argv[1], sys.argv[2], [bytes.fromhex(h) for h in sys.argv[3:]]
out = []
for p in payloads:
    if mode == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.7)
        s.sendto(p, (server, 53))
        try: out.append(s.recv(65535).hex())
        except socket.timeout: out.append(None)
    else:
        s = socket.create_connection((server, 53), timeout=3)
        s.sendall(len(p).to_bytes(2, "big") + p)
        try:
            n = int.from_bytes(s.recv(2), "big"); data = b""
            while len(data) < n:
                chunk = s.recv(n - len(data))
                if not chunk: break
                data += chunk
            out.append(data.hex() if n else None)
        except socket.timeout: out.append(None)
    s.close()
print(json.dumps(out))
"""


class Lab:
    def __init__(self, host: str, tmp: Path) -> None:
        self.host, self.tmp = host, tmp
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.resolver: subprocess.Popen | None = None

    def ns(self, suffix: str) -> str:
        name = f"{self.host}-{suffix}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def build(self) -> None:
        h = self.host
        for br, cidr in (("br-a", "10.89.0.1/24"), ("br-b", "10.89.1.1/24")):
            sh("ip", "-n", h, "link", "add", br, "type", "bridge")
            sh("ip", "-n", h, "addr", "add", cidr, "dev", br)
            sh("ip", "-n", h, "link", "set", br, "up")
        sh("ip", "-n", h, "addr", "add", "fd89::1/64", "dev", "br-a", "nodad")
        self.c = {k: self.ns(k) for k in ("c1", "c2", "c3")}
        for ns_key, ifname, br, cidr in (
            ("c1", "eth0", "br-a", "10.89.0.2/24"),
            ("c2", "eth0", "br-a", "10.89.0.3/24"),
            ("c2", "eth1", "br-b", "10.89.1.3/24"),
            ("c3", "eth0", "br-b", "10.89.1.4/24"),
        ):
            peer = f"v{ns_key}{ifname[-1]}"
            sh("ip", "-n", h, "link", "add", peer, "type", "veth", "peer", "name", ifname, "netns", self.c[ns_key])
            sh("ip", "-n", h, "link", "set", peer, "master", br, "up")
            sh("ip", "-n", self.c[ns_key], "addr", "add", cidr, "dev", ifname)
            sh("ip", "-n", self.c[ns_key], "link", "set", ifname, "up")
        sh("ip", "-n", self.c["c1"], "addr", "add", "fd89::2/64", "dev", "eth0", "nodad")
        self.up = self.ns("up")
        sh("ip", "-n", h, "link", "add", "vup", "type", "veth", "peer", "name", "eth0", "netns", self.up)
        sh("ip", "-n", h, "addr", "add", "10.89.9.1/24", "dev", "vup")
        sh("ip", "-n", h, "link", "set", "vup", "up")
        sh("ip", "-n", self.up, "addr", "add", "10.89.9.2/24", "dev", "eth0")
        sh("ip", "-n", self.up, "link", "set", "eth0", "up")

    def start_dnsmasq(self) -> None:
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.up,
                DNSMASQ,
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--user=root",
                "--address=/upstream.test/198.18.9.9",
                "--listen-address=10.89.9.2",
                "--bind-interfaces",
                "--port",
                "53",
                f"--pid-file={self.tmp / 'dnsmasq.pid'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "dnsmasq.log", "wb"),
            start_new_session=True,
        )
        self.procs.append(proc)
        deadline = time.monotonic() + 10
        while "10.89.9.2:53" not in ns_sh(self.up, "ss", "-lnu").stdout.replace("%", ""):
            assert proc.poll() is None, (self.tmp / "dnsmasq.log").read_text()
            assert time.monotonic() < deadline, "dnsmasq did not start"
            time.sleep(0.05)

    def start_resolver(self, upstreams: list[str]) -> None:
        cfg = self.tmp / "resolver.json"
        cfg.write_text(
            json.dumps(
                {
                    "port": 53,
                    "upstreams": upstreams,
                    "upstream_timeout": 1.0,
                    # 10.89.2.1 is nowhere yet: IP_FREEBIND must bind it anyway.
                    "listeners": [[NA, "10.89.0.1"], [NA, "fd89::1"], [NB, "10.89.1.1"], [NC, "10.89.2.1"]],
                    "endpoints": ENDPOINTS,
                }
            )
        )
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.host, sys.executable, "-m", "cnm.dns.standalone", str(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.tmp / "resolver.log", "wb"),
            text=True,
            cwd=Path(__file__).resolve().parents[2],
            start_new_session=True,
        )
        self.procs.append(proc)
        self.resolver = proc
        line = proc.stdout.readline()
        assert line.strip() == "ready", (self.tmp / "resolver.log").read_text()

    def command(self, **cmd) -> None:
        assert self.resolver and self.resolver.stdin and self.resolver.stdout
        self.resolver.stdin.write(json.dumps(cmd) + "\n")
        self.resolver.stdin.flush()
        assert self.resolver.stdout.readline().strip() == "ok"

    def alive(self) -> bool:
        return self.resolver is not None and self.resolver.poll() is None

    def nslookup(self, ns_key: str, name: str, server: str = "10.89.0.1", qtype: str | None = "a"):
        argv = [BUSYBOX, "nslookup"] + ([f"-type={qtype}"] if qtype else []) + [name, server]
        return ns_sh(self.c[ns_key], *argv, check=False, timeout=20)

    def probe(self, ns_key: str, mode: str, payloads: list[bytes], server: str = "10.89.0.1") -> list[bytes | None]:
        r = ns_sh(self.c[ns_key], sys.executable, "-c", PROBE, server, mode, *(p.hex() for p in payloads))
        return [bytes.fromhex(x) if x is not None else None for x in json.loads(r.stdout)]

    def close(self) -> None:
        for proc in self.procs:
            stop(proc, timeout=5)
        for name in self.namespaces:
            sh("ip", "netns", "del", name, check=False)


@pytest.fixture
def lab(host_ns, tmp_path):
    lab = Lab(host_ns, tmp_path)
    try:
        lab.build()
        lab.start_dnsmasq()
        lab.start_resolver(["10.89.9.2"])
        yield lab
    finally:
        lab.close()


def answers(result: subprocess.CompletedProcess) -> list[str]:
    """Addresses of the answer section of busybox nslookup's output (after the server lines)."""
    body = result.stdout.split("\n\n", 1)[1] if "\n\n" in result.stdout else ""
    return re.findall(r"^Address:\s*(\S+)$", body, re.M)


def test_name_and_alias_and_short_id(lab):
    assert answers(lab.nslookup("c2", "web")) == ["10.89.0.2"]
    assert answers(lab.nslookup("c2", "frontend")) == ["10.89.0.2"]
    assert answers(lab.nslookup("c2", C1[:12])) == ["10.89.0.2"]
    assert answers(lab.nslookup("c2", "WEB.neta.")) == ["10.89.0.2"]


def test_shared_network_through_either_listener(lab):
    # client shares B with db: visible via A's listener as well as B's.
    assert answers(lab.nslookup("c2", "db", "10.89.0.1")) == ["10.89.1.4"]
    assert answers(lab.nslookup("c2", "db", "10.89.1.1")) == ["10.89.1.4"]
    assert answers(lab.nslookup("c3", "client", "10.89.1.1")) == ["10.89.1.3"]


def test_unshared_network_has_no_answer(lab):
    r = lab.nslookup("c3", "web", "10.89.1.1")
    assert answers(r) == [] and "10.89.0.2" not in r.stdout
    r = lab.nslookup("c1", "db")
    assert answers(r) == [] and "10.89.1.4" not in r.stdout


def test_round_robin_alias(lab):
    runs = [answers(lab.nslookup("c1", "svc", qtype="a")) for _ in range(2)]
    assert all(sorted(r) == ["10.89.0.2", "10.89.0.3"] for r in runs), runs
    assert runs[0][0] != runs[1][0], runs


def test_ptr(lab):
    r = lab.nslookup("c2", "10.89.0.2", qtype=None)
    assert "web.neta" in r.stdout, r.stdout


def test_forwarded_to_upstream(lab):
    assert answers(lab.nslookup("c1", "upstream.test", qtype="a")) == ["198.18.9.9"]


def test_upstream_over_tcp(lab):
    from dnslib import DNSRecord

    (reply,) = lab.probe("c1", "tcp", [DNSRecord.question("upstream.test").pack()])
    assert [str(rr.rdata) for rr in DNSRecord.parse(reply).rr] == ["198.18.9.9"]
    (reply,) = lab.probe("c1", "tcp", [DNSRecord.question("web").pack()])
    assert [str(rr.rdata) for rr in DNSRecord.parse(reply).rr] == ["10.89.0.2"]


def test_no_upstream_answers_servfail(lab):
    from dnslib import RCODE, DNSRecord

    lab.command(op="upstreams", upstreams=["10.89.9.77"])  # nobody there
    t0 = time.monotonic()
    r = ns_sh(
        lab.c["c1"],
        sys.executable,
        "-c",
        PROBE.replace("settimeout(0.7)", "settimeout(3)"),
        "10.89.0.1",
        "udp",
        DNSRecord.question("upstream.test").pack().hex(),
    )
    reply = bytes.fromhex(json.loads(r.stdout)[0])
    assert DNSRecord.parse(reply).header.rcode == RCODE.SERVFAIL
    assert time.monotonic() - t0 < 3


def test_add_and_remove_take_effect_at_once(lab):
    lab.command(
        op="add",
        network_id=NA,
        network_name="neta",
        endpoint_id="e4a",
        container_id="4" * 64,
        name="late",
        aliases=[],
        ipv4="10.89.0.44/24",
        ipv6=None,
    )
    assert answers(lab.nslookup("c2", "late")) == ["10.89.0.44"]
    lab.command(op="remove", endpoint_id="e1a")
    assert answers(lab.nslookup("c2", "web")) == []
    # The alias keeps its other member only.
    assert answers(lab.nslookup("c2", "svc", qtype="a")) == ["10.89.0.3"]


def test_repeated_queries_come_from_the_reply_cache_and_follow_changes(lab):
    """The same query (but its ID) again and again: answered from the reply cache, each
    with its own ID, the alias still rotating; a change shows in the very next reply."""
    from dnslib import DNSRecord

    def q(name: str, qid: int) -> bytes:
        rec = DNSRecord.question(name)
        rec.header.id = qid
        return bytes(rec.pack())

    replies = [
        DNSRecord.parse(r)
        for r in lab.probe("c1", "udp", [q("svc", i) for i in range(1, 5)] + [q("web", 7), q("web", 8)])
    ]
    assert [r.header.id for r in replies] == [1, 2, 3, 4, 7, 8]
    firsts = [str(r.rr[0].rdata) for r in replies[:4]]
    assert firsts[0] != firsts[1] and firsts[:2] == firsts[2:], firsts
    assert all(sorted(str(rr.rdata) for rr in r.rr) == ["10.89.0.2", "10.89.0.3"] for r in replies[:4])
    assert [[str(rr.rdata) for rr in r.rr] for r in replies[4:]] == [["10.89.0.2"]] * 2
    lab.command(op="remove", endpoint_id="e1a")
    (svc, web) = [DNSRecord.parse(r) for r in lab.probe("c1", "udp", [q("svc", 9), q("web", 10)])]
    assert [str(rr.rdata) for rr in svc.rr] == ["10.89.0.3"]
    assert web.rr == [] and web.header.aa == 0  # not ours any more: the upstream's answer


def test_malformed_packets_do_not_hurt(lab):
    from dnslib import RCODE, DNSRecord
    from scapy.layers.dns import DNS, DNSQR

    good = bytes(DNS(id=0x1001, rd=1, qd=DNSQR(qname="web")))
    truncated_header = good[:7]
    bad_label = bytearray(good)
    bad_label[12] = 0x3F  # label claims 63 bytes
    loop = bytes(DNS(id=0x1003, qdcount=1, qd=[]))[:12] + b"\xc0\x0c\x00\x01\x00\x01"
    garbage = bytes(DNS(id=0x1004, qdcount=1, qd=[]))[:12] + os.urandom(4096 - 12)
    no_question = bytes(DNS(id=0x1005, qdcount=0, qd=[]))[:12]
    replies = lab.probe("c1", "udp", [truncated_header, bytes(bad_label), loop, garbage, no_question])
    assert replies[0] is None
    for reply, qid in zip(replies[1:], (0x1001, 0x1003, 0x1004, 0x1005), strict=True):
        assert reply is not None
        parsed = DNSRecord.parse(reply)
        assert (parsed.header.id, parsed.header.rcode) == (qid, RCODE.FORMERR)
    # Same over TCP, then garbage framing (length prefix promising more than is sent).
    tcp = lab.probe("c1", "tcp", [bytes(bad_label), loop])
    assert all(DNSRecord.parse(r).header.rcode == RCODE.FORMERR for r in tcp)
    ns_sh(
        lab.c["c1"],
        sys.executable,
        "-c",
        "import socket; s=socket.create_connection(('10.89.0.1',53),timeout=2); "
        "s.sendall(b'\\xff\\xff' + b'x' * 100); s.close()",
    )
    assert lab.alive()
    assert answers(lab.nslookup("c1", "web")) == ["10.89.0.2"]
    assert answers(lab.nslookup("c1", "upstream.test", qtype="a")) == ["198.18.9.9"]


def test_ipv6_listener_and_aaaa(lab):
    r = lab.nslookup("c1", "web", "fd89::1", qtype="aaaa")
    assert answers(r) == ["fd89::2"], r.stdout
    r = lab.nslookup("c2", "web", "10.89.0.1", qtype="aaaa")
    assert answers(r) == ["fd89::2"], r.stdout


def test_listener_bound_before_its_address_exists(lab):
    # The resolver bound 10.89.2.1 at start-up with IP_FREEBIND; the address appears now.
    sh("ip", "-n", lab.host, "addr", "add", "10.89.2.1/24", "dev", "br-a")
    sh("ip", "-n", lab.c["c1"], "route", "add", "10.89.2.1", "dev", "eth0")
    # c1 is known by its source address (an endpoint of network A), so it sees A's names
    # through network C's listener too.
    assert answers(lab.nslookup("c1", "client", "10.89.2.1")) == ["10.89.0.3"]


THREADSAFE = r"""
import asyncio, socket, threading, sys
from dnslib import DNSRecord
from cnm.dns.records import NameTable
from cnm.dns.server import Resolver
loop = asyncio.new_event_loop()
threading.Thread(target=loop.run_forever, daemon=True).start()
table = NameTable()
resolver = Resolver(table, list, loop)
resolver.add_listener_threadsafe("n1", "10.89.0.1")
resolver.add_listener_threadsafe("n1", "10.89.0.1")          # idempotent
table.add("n1", "neta", "e9", None, "fromthread", [], "10.89.0.99", None)
def ask():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
    s.sendto(DNSRecord.question("fromthread").pack(), ("10.89.0.1", 53))
    try: return [str(rr.rdata) for rr in DNSRecord.parse(s.recv(4096)).rr]
    except socket.timeout: return None
print(ask())
print(resolver.remove_listener_threadsafe("n1"))
print(ask())
resolver.close_threadsafe()
"""


def test_threadsafe_api_from_a_worker_thread(lab):
    # A second resolver in the host namespace, driven the way the daemon drives it; the
    # lab's resolver is stopped first so port 53 on 10.89.0.1 is free for it.
    lab.resolver.terminate()
    lab.resolver.wait(5)
    r = ns_sh(lab.host, sys.executable, "-c", THREADSAFE, timeout=30)
    assert r.stdout.splitlines() == ["['10.89.0.99']", "1", "None"], r.stdout + r.stderr
