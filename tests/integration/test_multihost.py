"""Multi-host, end to end: a 3-host lab (3 etcd members, two overlays) built with
`net lab`, then the wire, isolation and every fault of the multi-host issue."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import NET, ROOT, sh

BB = "/bin/busybox"
LAB = "mh" + secrets.token_hex(2)  # unique: two suites may run at once on one machine
LAB_YAML = (ROOT / "labs" / "three-hosts.yaml").read_text().replace("name: three-hosts", f"name: {LAB}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("lab")
    env = dict(os.environ, CNM_LAB_DIR=str(base))
    (base / "lab.yaml").write_text(LAB_YAML)

    def net(*args, check=True, timeout=120):
        r = subprocess.run([NET, *args], capture_output=True, text=True, env=env, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"net {' '.join(args)}: {r.returncode}\n{r.stdout}{r.stderr}")
        return r

    net.env = env
    net("lab", "up", str(base / "lab.yaml"), timeout=300)
    try:
        yield net
    finally:
        r = net("lab", "down", LAB, check=False)
        # Nothing of the lab is left: namespaces, processes, mounts, files.
        assert r.returncode == 0, r.stdout + r.stderr
        assert not [ns for ns in sh("ip", "netns", "list").stdout.split() if ns.startswith(f"lab-{LAB}-")]
        assert not (base / LAB).exists()
        assert str(base) not in Path("/proc/self/mountinfo").read_text()
        leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, str(base))]
        assert not leftovers, leftovers


def _cmdline_has(pid: str, text: str) -> bool:
    try:
        return text in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False


def on(lab, host, *args, check=True, timeout=60):
    return lab("lab", "exec", LAB, host, "--", "net", *args, check=check, timeout=timeout)


def ping(lab, host, ct, target, check=False):
    return on(lab, host, "exec", ct, "--", BB, "ping", "-c1", "-W2", target, check=check).returncode == 0


def ct_ip(lab, host, ct, net):
    info = json.loads(on(lab, host, "container", "inspect", ct).stdout)[0]
    return info["NetworkSettings"]["Networks"][net]["IPAddress"]


def test_checks_pass_every_pair_mtu_and_isolation(lab):
    r = lab("lab", "check", LAB, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "11 checks: 11 passed, 0 failed" in r.stdout


def test_vxlan_on_the_wire_carries_the_vni(lab, tmp_path):
    from scapy.all import IP, UDP, VXLAN, rdpcap

    vni = int(
        json.loads(on(lab, "h1", "inspect", "red").stdout)[0]["Options"]["com.docker.network.overlay.vxlanid_list"]
    )
    red1, red2 = ct_ip(lab, "h1", "red1", "red"), ct_ip(lab, "h2", "red2", "red")
    pcap = tmp_path / "ul.pcap"
    cap = subprocess.Popen(
        [NET, "lab", "capture", LAB, "h1:ul0", "-w", str(pcap), "-c", "4", "-t", "10", "-f", "udp port 4789"],
        env=lab.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    time.sleep(1.0)
    on(lab, "h2", "exec", "red2", "--", BB, "ping", "-c", "3", red1)
    cap.wait(30)
    packets = [p for p in rdpcap(str(pcap)) if p.haslayer(VXLAN)]
    assert packets, cap.stdout.read()
    for p in packets:
        assert p[UDP].dport == 4789 and p[VXLAN].vni == vni
        inner = p[VXLAN].payload
        assert {inner[IP].src, inner[IP].dst} == {red1, red2}
        assert {p[IP].src, p[IP].dst} == {"198.18.0.1", "198.18.0.2"}


def test_injected_vxlan_from_a_stranger_is_dropped(lab):
    from scapy.all import ICMP, IP, VXLAN, Ether, raw

    vni = int(
        json.loads(on(lab, "h1", "inspect", "red").stdout)[0]["Options"]["com.docker.network.overlay.vxlanid_list"]
    )
    info = json.loads(on(lab, "h1", "container", "inspect", "red1").stdout)[0]["NetworkSettings"]["Networks"]["red"]
    sw = f"lab-{LAB}-sw"
    sh("ip", "-n", sw, "addr", "add", "198.18.0.99/24", "dev", "br0")
    try:

        def rx():
            out = on(lab, "h1", "exec", "red1", "--", "cat", "/proc/net/dev").stdout
            line = next(ln for ln in out.splitlines() if ln.strip().startswith("eth0:"))
            return int(line.split(":", 1)[1].split()[1])  # received packets

        frame = raw(
            VXLAN(vni=vni, flags=0x08)
            / Ether(dst=info["MacAddress"], src="02:42:de:ad:be:ef")
            / IP(src="10.31.0.250", dst=info["IPAddress"])
            / ICMP()
        )
        before = rx()
        code = (
            "import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.bind(('198.18.0.99', 0))\n"
            "for _ in range(20): s.sendto(bytes.fromhex(sys.argv[1]), ('198.18.0.1', 4789))\n"
        )
        sh("ip", "netns", "exec", sw, "python3", "-c", code, frame.hex())
        time.sleep(0.5)
        assert rx() - before < 20  # none of the 20 injected frames arrived
        drops = sh("ip", "netns", "exec", f"lab-{LAB}-h1", "nft", "list", "table", "inet", "cnm-overlay").stdout
        assert "drop" in drops and "packets 0 " not in drops.split("drop")[0][-60:]
    finally:
        sh("ip", "-n", sw, "addr", "del", "198.18.0.99/24", "dev", "br0", check=False)


def test_daemon_sigkill_and_restart_resyncs(lab):
    red1, red2 = ct_ip(lab, "h1", "red1", "red"), ct_ip(lab, "h2", "red2", "red")
    lab("lab", "stop", "--kill", LAB, "h2")
    try:
        # The data plane stays up without the daemon; other hosts keep working.
        assert ping(lab, "h1", "red1", red2)
        assert ping(lab, "h3", "red3", red1)
        on(lab, "h1", "run", "-d", "--name", "while-h2-down", "--net", "red", BB, "sleep", "600")
    finally:
        lab("lab", "start", LAB, "h2")
    assert ping(lab, "h2", "red2", red1)
    # The restarted host learned what happened while it was down.
    newcomer = ct_ip(lab, "h1", "while-h2-down", "red")
    assert ping(lab, "h2", "red2", newcomer)
    assert newcomer in on(lab, "h2", "exec", "red2", "--", BB, "nslookup", "while-h2-down").stdout
    # And its own new containers are known to the others.
    on(lab, "h2", "run", "-d", "--name", "after-restart", "--net", "red", BB, "sleep", "600")
    assert ping(lab, "h1", "red1", ct_ip(lab, "h2", "after-restart", "red"))
    assert len({ct_ip(lab, "h1", "while-h2-down", "red"), ct_ip(lab, "h2", "after-restart", "red"), red1, red2}) == 4


def test_dual_stack_overlay_carries_ipv6_between_hosts(lab):
    on(lab, "h1", "create", "-d", "overlay", "--subnet", "10.35.0.0/24", "--ipv6", "--subnet", "fd00:35::/64", "dual")
    on(lab, "h1", "run", "-d", "--name", "d1", "--net", "dual", BB, "sleep", "600")
    on(lab, "h2", "run", "-d", "--name", "d2", "--net", "dual", BB, "sleep", "600", timeout=60)
    info = json.loads(on(lab, "h2", "container", "inspect", "d2").stdout)[0]
    v6 = info["NetworkSettings"]["Networks"]["dual"]["GlobalIPv6Address"]
    assert v6.startswith("fd00:35::")
    ok = False
    for _ in range(10):  # the peer reaches h1 through etcd; DAD may hold the address a moment
        if on(lab, "h1", "exec", "d1", "--", BB, "ping", "-6", "-c1", "-W1", v6, check=False).returncode == 0:
            ok = True
            break
        time.sleep(0.3)
    assert ok, "IPv6 across the overlay"
    assert ping(lab, "h1", "d1", ct_ip(lab, "h2", "d2", "dual"))


def test_one_of_three_etcd_members_down(lab):
    lab("lab", "stop", "--etcd", LAB, "h3")
    try:
        on(lab, "h1", "create", "-d", "overlay", "--subnet", "10.33.0.0/24", "green")
        on(lab, "h3", "run", "-d", "--name", "g3", "--net", "green", BB, "sleep", "600", timeout=60)
        on(lab, "h1", "run", "-d", "--name", "g1", "--net", "green", BB, "sleep", "600")
        assert ping(lab, "h1", "g1", ct_ip(lab, "h3", "g3", "green"))
    finally:
        lab("lab", "start", "--etcd", LAB, "h3")


def test_all_of_etcd_down_then_back(lab):
    for h in ("h1", "h2", "h3"):
        lab("lab", "stop", "--etcd", LAB, h)
    try:
        # Local networks and running containers are unaffected.
        on(lab, "h1", "create", "--subnet", "10.90.0.0/24", "offline-bridge")
        on(lab, "h1", "run", "-d", "--name", "loc1", "--net", "offline-bridge", BB, "sleep", "600")
        on(lab, "h1", "run", "-d", "--name", "loc2", "--net", "offline-bridge", BB, "sleep", "600")
        assert ping(lab, "h1", "loc1", ct_ip(lab, "h1", "loc2", "offline-bridge"))
        assert ping(lab, "h1", "red1", ct_ip(lab, "h2", "red2", "red"))
        # Global operations fail fast and clearly.
        t = time.monotonic()
        r = on(lab, "h1", "create", "-d", "overlay", "purple", check=False)
        assert r.returncode != 0 and time.monotonic() - t < 10
        assert "cluster store" in r.stderr and "unreachable" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    finally:
        for h in ("h1", "h2", "h3"):
            subprocess.Popen([NET, "lab", "start", "--etcd", LAB, h], env=lab.env)
    deadline = time.monotonic() + 30
    while True:
        r = on(lab, "h1", "create", "-d", "overlay", "--subnet", "10.34.0.0/24", "purple", check=False)
        if r.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert r.returncode == 0, r.stderr
    on(lab, "h3", "run", "-d", "--name", "p3", "--net", "purple", BB, "sleep", "600", timeout=60)
    on(lab, "h1", "run", "-d", "--name", "p1", "--net", "purple", BB, "sleep", "600")
    assert ping(lab, "h1", "p1", ct_ip(lab, "h3", "p3", "purple"))
