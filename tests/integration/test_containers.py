"""Containers on one host, end to end: the daemon runs in a throwaway namespace, the
`net` CLI starts real namespaced containers, and real packets are checked."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from tests.integration.conftest import link_names, ns_sh, sh

BB = "/bin/busybox"


def ct_inspect(d, ref):
    return json.loads(d.net("container", "inspect", ref).stdout)[0]


def ip_of(d, ref, net=None):
    nets = ct_inspect(d, ref)["NetworkSettings"]["Networks"]
    return (nets[net] if net else next(iter(nets.values())))["IPAddress"]


def run_d(d, *args):
    return d.net("run", "-d", *args).stdout.strip()


def sleeper(d, *args):
    return run_d(d, *args, BB, "sleep", "1000")


def ping(d, ref, target, check=True):
    r = d.net("exec", ref, "--", BB, "ping", "-c1", "-W1", target, check=False)
    return r.returncode == 0


def test_mode_none_sees_only_lo(daemon):
    out = daemon.net("run", "--rm", "--net", "none", BB, "ip", "-o", "link").stdout
    names = {line.split(":")[1].strip() for line in out.splitlines()}
    assert names == {"lo"}


def test_mode_host_sees_host_namespace(daemon):
    out = daemon.net("run", "--rm", "--net", "host", BB, "ip", "-o", "link").stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}
    assert names == link_names(daemon.ns)
    assert "cnm0" in names


def test_bridge_mode_address_route_gateway(daemon):
    out = daemon.net(
        "run",
        "--rm",
        BB,
        "sh",
        "-c",
        "ip -o -4 addr show eth0; ip route; ping -c1 -W2 172.17.0.1 >/dev/null && echo GW-OK",
    ).stdout
    assert "172.17.0." in out and "/16" in out
    assert "default via 172.17.0.1 dev eth0" in out
    assert "GW-OK" in out


def test_run_exit_code_streams_and_isolated_namespaces(daemon):
    r = daemon.net(
        "run",
        "--rm",
        "--hostname",
        "box1",
        BB,
        "sh",
        "-c",
        "echo out; echo err >&2; hostname; echo $$; exit 7",
        check=False,
    )
    assert r.returncode == 7
    assert r.stdout.split() == ["out", "box1", "1"]
    assert r.stderr.strip() == "err"
    assert daemon.net("ps", "-a", "-q").stdout.strip() == ""  # --rm removed it


def test_container_mode_shares_network(daemon):
    x = run_d(daemon, "--name", "cx", BB, "httpd", "-f", "-p", "8080", "-h", "/etc")
    xip = ip_of(daemon, "cx")
    out = daemon.net(
        "run",
        "--rm",
        "--net",
        "container:cx",
        BB,
        "sh",
        "-c",
        "ip -o -4 addr show eth0; wget -q -O - http://127.0.0.1:8080/hostname",
    ).stdout
    assert xip in out
    assert x[:12] in out  # x's /etc/hostname served by x's httpd over x's loopback


def test_same_network_ping_and_isolation_between_networks(daemon):
    daemon.net("create", "--subnet", "10.31.0.0/24", "n1")
    daemon.net("create", "--subnet", "10.32.0.0/24", "n2")
    sleeper(daemon, "--name", "a1", "--net", "n1")
    sleeper(daemon, "--name", "a2", "--net", "n1")
    sleeper(daemon, "--name", "b1", "--net", "n2")
    a2, b1 = ip_of(daemon, "a2"), ip_of(daemon, "b1")
    assert a2.startswith("10.31.0.") and b1.startswith("10.32.0.")
    assert ping(daemon, "a1", a2)
    assert not ping(daemon, "a1", b1)
    assert not ping(daemon, "b1", ip_of(daemon, "a1"))
    # A container on both reaches both.
    sleeper(daemon, "--name", "both", "--net", "n1")
    daemon.net("connect", "n2", "both")
    ifaces = daemon.net("exec", "both", "--", BB, "ip", "-o", "link").stdout
    assert "eth0" in ifaces and "eth1" in ifaces
    assert ping(daemon, "both", a2) and ping(daemon, "both", b1)
    inspect_n2 = json.loads(daemon.net("inspect", "n2").stdout)[0]
    assert {c["Name"] for c in inspect_n2["Containers"].values()} == {"b1", "both"}
    daemon.net("disconnect", "n2", "both")
    assert "eth1" not in daemon.net("exec", "both", "--", BB, "ip", "-o", "link").stdout
    assert not ping(daemon, "both", b1)
    assert ping(daemon, "both", a2)


def test_icc_off_blocks_same_network(daemon):
    daemon.net("create", "-o", "com.docker.network.bridge.enable_icc=false", "noicc")
    sleeper(daemon, "--name", "cp", "--net", "noicc")
    sleeper(daemon, "--name", "cq", "--net", "noicc")
    assert not ping(daemon, "cp", ip_of(daemon, "cq"))
    gw = ct_inspect(daemon, "cp")["NetworkSettings"]["Networks"]["noicc"]["Gateway"]
    assert ping(daemon, "cp", gw)  # the host is still reachable


def test_internal_network_has_no_route_out(daemon):
    daemon.net("create", "--internal", "--subnet", "10.33.0.0/24", "intnet")
    out = daemon.net("run", "--rm", "--net", "intnet", BB, "ip", "route").stdout
    assert "default" not in out and "10.33.0.0/24" in out
    # Traffic leaving the subnet is dropped even with a route: try the default bridge's gateway.
    sleeper(daemon, "--name", "i1", "--net", "intnet")
    daemon.net("exec", "--privileged", "i1", "--", BB, "ip", "route", "add", "default", "via", "10.33.0.1")
    assert not ping(daemon, "i1", "172.17.0.1")


# Host-side clients are small Python programs run inside the namespace (busybox-static's
# `wget -T` segfaults on Debian 12, so container-side wget runs under `timeout`).
HTTP_GET = "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=3).read().decode().strip())"
UDP_ASK = """import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
for _ in range(5):
    s.sendto(b"ping\\n", (sys.argv[1], int(sys.argv[2])))
    try:
        print(s.recv(100).decode().strip()); break
    except OSError:
        pass
"""


UDP_ECHO = """import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 5353))
while True:
    data, peer = s.recvfrom(100); s.sendto(b"pong", peer)
"""


def _http_get(ns, host, port):
    return ns_sh(ns, sys.executable, "-c", HTTP_GET, f"http://{host}:{port}/hostname", check=False)


def test_published_tcp_and_udp_ports(daemon):
    web = run_d(
        daemon, "--name", "web", "-p", "18080:8080", "-p", "8080", BB, "httpd", "-f", "-p", "8080", "-h", "/etc"
    )
    ports = ct_inspect(daemon, "web")["NetworkSettings"]["Ports"]["8080/tcp"]
    host_ports = sorted(int(p["HostPort"]) for p in ports)
    assert 18080 in host_ports
    ephemeral = [p for p in host_ports if p != 18080][0]
    lo, hi = map(int, ns_sh(daemon.ns, "cat", "/proc/sys/net/ipv4/ip_local_port_range").stdout.split())
    assert lo <= ephemeral <= hi
    assert f"{ephemeral}->8080/tcp" in daemon.net("ps").stdout
    # From the host itself, on 127.0.0.1 and on the host's own address.
    assert _http_get(daemon.ns, "127.0.0.1", 18080).stdout.strip() == web[:12]
    assert _http_get(daemon.ns, "172.17.0.1", ephemeral).stdout.strip() == web[:12]
    # From another container via the host address (hairpin).
    out = daemon.net(
        "run", "--rm", BB, "timeout", "5", BB, "wget", "-q", "-O", "-", "http://172.17.0.1:18080/hostname"
    ).stdout
    assert out.strip() == web[:12]
    # UDP: a busybox nc echo-ish listener answering once.
    # The base interpreter: a venv under /tmp is not visible in a container (private /tmp).
    run_d(daemon, "--name", "udp", "-p", "15353:5353/udp", os.path.realpath(sys.executable), "-c", UDP_ECHO)
    time.sleep(0.3)
    r = ns_sh(daemon.ns, sys.executable, "-c", UDP_ASK, "127.0.0.1", "15353", check=False)
    assert "pong" in r.stdout


def test_published_port_from_another_host(daemon, host_ns):
    """Traffic from a second namespace ("another host") reaches a published port."""
    other = f"{host_ns}-o"
    sh("ip", "netns", "add", other)
    try:
        sh("ip", "link", "add", "cnmt-up0", "netns", daemon.ns, "type", "veth", "peer", "name", "up1", "netns", other)
        ns_sh(daemon.ns, "ip", "addr", "add", "198.18.5.1/24", "dev", "cnmt-up0")
        ns_sh(daemon.ns, "ip", "link", "set", "cnmt-up0", "up")
        ns_sh(other, "ip", "addr", "add", "198.18.5.2/24", "dev", "up1")
        ns_sh(other, "ip", "link", "set", "up1", "up")
        ns_sh(other, "ip", "link", "set", "lo", "up")
        web = run_d(daemon, "-p", "18081:8080", BB, "httpd", "-f", "-p", "8080", "-h", "/etc")
        assert _http_get(other, "198.18.5.1", 18081).stdout.strip() == web[:12]
    finally:
        sh("ip", "netns", "del", other, check=False)


def test_bad_input_one_line_nothing_created(daemon):
    daemon.net("create", "--subnet", "10.34.0.0/24", "n")
    sleeper(daemon, "--name", "taken", "--net", "n", "--ip", "10.34.0.50", "-p", "18090:80")
    run_d(daemon, "--name", "stopped", BB, "true")
    for _ in range(50):
        if ct_inspect(daemon, "stopped")["State"]["Status"] == "exited":
            break
        time.sleep(0.1)

    def snapshot():
        return (
            sorted(link_names(daemon.ns)),
            daemon.net("ps", "-a", "-q").stdout,
            sorted(os.listdir(daemon.run_dir / "netns")) if (daemon.run_dir / "netns").exists() else [],
        )

    before = snapshot()
    cases = [
        (["run", "--net", "nosuch", BB, "true"], "not found"),
        (["run", "-p", "80:80:80:80", BB, "true"], "port"),
        (["run", "-p", "99999:80", BB, "true"], "port"),
        (["run", "-p", "18090:80", BB, "true"], "already allocated"),
        (["run", "--net", "n", "--ip", "10.99.0.5", BB, "true"], "not within"),
        (["run", "--net", "n", "--ip", "10.34.0.50", BB, "true"], "in use"),
        (["run", "--net", "container:stopped", BB, "true"], "not running"),
        (["run", "--name", "taken", BB, "true"], "already in use"),
        (["run", "--rootfs", "/nonexistent/rootfs", BB, "true"], "rootfs"),
        (["run", BB + "-nope"], "no such file"),
    ]
    for args, text in cases:
        r = daemon.net(*args, check=False)
        assert r.returncode != 0, args
        err = r.stderr.strip()
        assert len(err.splitlines()) == 1 and text in err.lower(), (args, err)
    assert snapshot() == before


def test_port_bound_by_process_is_refused(daemon):
    srv = __import__("subprocess").Popen(["ip", "netns", "exec", daemon.ns, BB, "nc", "-l", "-p", "18095"])
    try:
        time.sleep(0.3)
        r = daemon.net("run", "-p", "18095:80", BB, "true", check=False)
        assert r.returncode != 0 and "in use" in r.stderr
    finally:
        srv.kill()
        srv.wait()


def _kernel_state(d):
    veths = sh("ip", "-n", d.ns, "-o", "link", "show", "type", "veth").stdout.count("\n")
    bridges = sorted(
        ln.split(":")[1].strip()
        for ln in sh("ip", "-n", d.ns, "-o", "link", "show", "type", "bridge").stdout.splitlines()
    )
    netns_files = sorted(os.listdir(d.run_dir / "netns")) if (d.run_dir / "netns").exists() else []
    return veths, bridges, netns_files


def test_cleanup_leaves_nothing(daemon):
    base = _kernel_state(daemon)
    ruleset_before = ns_sh(daemon.ns, "nft", "list", "ruleset").stdout
    daemon.net("create", "c1")
    daemon.net("create", "c2")
    sleeper(daemon, "--name", "k1", "--net", "c1", "-p", "18100:80")
    sleeper(daemon, "--name", "k2", "--net", "c2")
    daemon.net("connect", "c1", "k2")
    sleeper(daemon, "--name", "k3")
    shims = [ct_inspect(daemon, n)["State"]["Pid"] for n in ("k1", "k2", "k3")]
    daemon.net("container", "rm", "-f", "k1", "k2", "k3")
    daemon.net("rm", "c1", "c2")
    assert _kernel_state(daemon) == base
    assert ns_sh(daemon.ns, "nft", "list", "ruleset").stdout == ruleset_before
    for pid in shims:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
    assert os.listdir(daemon.run_dir / "containers") == []
    # No allocation left: the default bridge hands out .2 again.
    assert ip_of(daemon, sleeper(daemon, "--name", "again")) == "172.17.0.2"


def templates_of(pid: int) -> list[int]:
    """The supervisor template processes whose parent is `pid` (a daemon)."""
    from cnm.runtime import files, linux

    out = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        st = linux.proc_stat(int(p))
        if ppid == pid and st and st[2] == files.TEMPLATE_COMM and st[0] not in "ZX":
            out.append(int(p))
    return out


def _gone(pid: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower():
            return True
        time.sleep(0.02)
    return False


def test_sigkill_daemon_containers_survive(make_daemon):
    d = make_daemon()
    d.net("create", "--subnet", "10.35.0.0/24", "n")
    sleeper(d, "--name", "s1", "--net", "n")
    sleeper(d, "--name", "s2", "--net", "n", "-p", "18110:8080")
    ip1, ip2 = ip_of(d, "s1"), ip_of(d, "s2")
    [template] = templates_of(d.proc.pid)
    d.kill()
    assert _gone(template), "the supervisor template outlived its daemon"
    d.start()
    assert len(templates_of(d.proc.pid)) == 1
    assert ct_inspect(d, "s1")["State"]["Running"] and ct_inspect(d, "s2")["State"]["Running"]
    assert ping(d, "s1", ip2) and ping(d, "s2", ip1)
    sleeper(d, "--name", "s3", "--net", "n")
    assert ip_of(d, "s3") not in (ip1, ip2, "10.35.0.1")
    # The daemon holds each sandbox's namespace file (s1's and s2's recovered through a
    # supervisor); no container's mount namespace holds a copy of any (issue 10: O(N)).
    netns_dir = f" {d.run_dir}/netns/"
    assert Path(f"/proc/{d.proc.pid}/mountinfo").read_text().count(netns_dir) >= 3
    for name in ("s1", "s3"):
        assert netns_dir not in Path(f"/proc/{ct_inspect(d, name)['State']['Pid']}/mountinfo").read_text()
    r = d.net("run", "-p", "18110:80", BB, "true", check=False)
    assert r.returncode != 0 and "already allocated" in r.stderr
    # A flushed ruleset is repaired by a restart.
    ns_sh(d.ns, "nft", "flush", "ruleset")
    [template] = templates_of(d.proc.pid)
    d.stop()
    assert _gone(template)
    d.start()
    assert "cnm" in ns_sh(d.ns, "nft", "list", "tables").stdout
    d.net("stop", "-t", "1", "s1")
    assert ct_inspect(d, "s1")["State"]["Status"] == "exited"


def test_ipv6_network_addresses_routes_and_fixed_ip6(daemon):
    daemon.net("create", "--ipv6", "--subnet", "fd00:77::/64", "--subnet", "10.36.0.0/24", "v6")
    sleeper(daemon, "--name", "six", "--net", "v6")
    sleeper(daemon, "--name", "fixed6", "--net", "v6", "--ip6", "fd00:77::99")
    out = daemon.net("exec", "six", "--", BB, "sh", "-c", "ip -6 addr show eth0; ip -6 route").stdout
    assert "fd00:77::2/64" in out and "default via fd00:77::1 dev eth0" in out
    net6 = ct_inspect(daemon, "fixed6")["NetworkSettings"]["Networks"]["v6"]
    assert net6["GlobalIPv6Address"] == "fd00:77::99" and net6["IPv6Gateway"] == "fd00:77::1"
    # No DAD delay on the gateway: the first ping of a fresh network answers at once.
    t = time.monotonic()
    assert daemon.net("exec", "six", "--", BB, "ping", "-6", "-c1", "-W2", "fd00:77::1", check=False).returncode == 0
    assert time.monotonic() - t < 0.9
    assert ping(daemon, "six", "10.36.0.3") or ping(daemon, "six", ip_of(daemon, "fixed6", "v6"))
    assert daemon.net("exec", "six", "--", BB, "ping", "-6", "-c1", "-W2", "fd00:77::99", check=False).returncode == 0


def test_rootfs_overlay_and_cgroup_limits(daemon, tmp_path):
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    os.link(BB, root / "bin" / "busybox") if os.stat(BB).st_dev == os.stat(tmp_path).st_dev else __import__(
        "shutil"
    ).copy(BB, root / "bin" / "busybox")
    os.symlink("busybox", root / "bin" / "sh")
    out = daemon.net(
        "run",
        "--rm",
        "--rootfs",
        str(root),
        "/bin/sh",
        "-c",
        "/bin/busybox ls /; echo written > /new-file; /bin/busybox cat /new-file",
    ).stdout
    assert "bin" in out.split() and "written" in out
    assert not (root / "new-file").exists()  # the lower layer is read-only
    # In its own cgroups, with its limits: /proc/self/cgroup says "/" (its cgroup namespace),
    # /sys/fs/cgroup shows those cgroups (v1: a directory per hierarchy; v2: one tree).
    out = daemon.net(
        "run",
        "--rm",
        "--memory",
        "64m",
        "--pids-limit",
        "10",
        BB,
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max "
        "/sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null; true",
    ).stdout
    assert out.split() == [str(64 * 1024 * 1024), "10"]
