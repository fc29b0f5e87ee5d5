"""Overlay figures, measured in labs built on this machine (`net lab`):

- convergence: from `net run -d` returning on h1 to the first ping answered from a
  container on h2 (median and p95 over BENCH_CONTAINERS containers, default 50);
- TCP throughput with iperf3, overlay (container to container across hosts) against the
  underlay (host to host) in the same run, as a ratio;
- `net lab up` time for 2, 5 and 10 hosts.

Goals: convergence median under 100 ms; overlay at least 90 % of the underlay's throughput.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NET = str(Path(sys.executable).parent / "net")
PY = sys.executable

# Waits for "go" on stdin, then sends an ICMP echo request every millisecond until one is
# answered; prints the CLOCK_MONOTONIC time of the answer (system-wide, so comparable
# across namespaces). Started before the target exists, so that no process start-up
# lies between `net run -d` returning and the first ping.
PROBE = r"""
import os, socket, struct, sys, time
dst = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(0.001)
def csum(b):
    n = sum(struct.unpack("!%dH" % (len(b) // 2), b)); n = (n >> 16) + (n & 0xffff); n += n >> 16
    return ~n & 0xffff
ident = os.getpid() & 0xffff
print("ready", flush=True)
sys.stdin.readline()
deadline = time.monotonic() + 30
seq = 0
while time.monotonic() < deadline:
    seq = (seq + 1) & 0xffff
    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"cnm-probe!"
    pkt = struct.pack("!BBHHH", 8, 0, csum(hdr), ident, seq) + b"cnm-probe!"
    try:
        s.sendto(pkt, (dst, 0))   # EAGAIN while the neighbour is unknown: keep trying
    except OSError:
        pass
    try:
        while True:
            data, addr = s.recvfrom(2048)
            if addr[0] == dst and data[20] == 0:
                print(time.monotonic(), flush=True); sys.exit(0)
    except (socket.timeout, BlockingIOError):
        pass
print("timeout", flush=True); sys.exit(1)
"""


class Lab:
    def __init__(self, name: str, yaml_text: str) -> None:
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"cnm-bench-{name}-"))
        self.env = dict(os.environ, CNM_LAB_DIR=str(self.dir))
        (self.dir / "lab.yaml").write_text(yaml_text)

    def net(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        r = subprocess.run([NET, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and r.returncode != 0:
            raise SystemExit(f"bench: net {' '.join(args)} failed: {r.stderr.strip() or r.stdout.strip()}")
        return r

    def up(self) -> float:
        t = time.perf_counter()
        self.net("lab", "up", str(self.dir / "lab.yaml"))
        return time.perf_counter() - t

    def down(self) -> None:
        self.net("lab", "down", self.name, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def on(self, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.net("lab", "exec", self.name, host, "--", "net", *args, check=check)

    def popen_on(self, host: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [NET, "lab", "exec", self.name, host, "--", "net", *args],
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def netns(self, host: str) -> str:
        return f"lab-{self.name}-{host}"


def lab_yaml(name: str, hosts: int, containers: bool = True) -> str:
    hs = [f"h{i}" for i in range(1, hosts + 1)]
    out = [
        f"name: {name}",
        f"hosts: [{', '.join(hs)}]",
        "cluster_store:",
        "  etcd: 1",
        "networks:",
        "  - {name: ov, driver: overlay, subnet: 10.60.0.0/16}",
    ]
    if containers:
        out.append("containers:")
        out += [f"  - {{name: c{i}, host: {h}, network: ov}}" for i, h in enumerate(hs, 1)]
    return "\n".join(out) + "\n"


def convergence(lab: Lab, n: int) -> list[float]:
    lab.on("h2", "run", "-d", "--name", "prober", "--net", "ov", PY, "-c", "import time; time.sleep(3600)")
    samples = []
    for i in range(n):
        ip = f"10.60.{100 + i // 200}.{1 + i % 200}"
        probe = lab.popen_on("h2", "exec", "-i", "prober", "--", PY, "-c", PROBE, ip)
        assert probe.stdout.readline().strip() == "ready"
        lab.on("h1", "run", "-d", "--name", f"t{i}", "--net", "ov", "--ip", ip, "/bin/busybox", "sleep", "3600")
        t0 = time.monotonic()
        out, err = probe.communicate("go\n", timeout=40)
        line = out.strip().splitlines()[-1] if out.strip() else "timeout"
        if line == "timeout":
            print(f"  container {i}: no answer ({err.strip()[-200:]})", file=sys.stderr)
            continue
        samples.append(max(0.0, float(line) - t0) * 1000)
    return samples


def iperf(lab: Lab) -> tuple[float, float]:
    def run_client(ns_cmd: list[str], target: str) -> float:
        r = subprocess.run(
            [*ns_cmd, "iperf3", "-c", target, "-t", "4", "-J"], capture_output=True, text=True, timeout=60
        )
        return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9

    srv = subprocess.Popen(
        ["ip", "netns", "exec", lab.netns("h1"), "iperf3", "-s", "-1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    under = run_client(["ip", "netns", "exec", lab.netns("h2")], "198.18.0.1")
    srv.wait(10)
    lab.on("h1", "run", "-d", "--name", "iperf-srv", "--net", "ov", "--ip", "10.60.200.1", "iperf3", "-s")
    lab.on("h2", "run", "-d", "--name", "iperf-cli", "--net", "ov", "/bin/busybox", "sleep", "3600")
    time.sleep(0.5)
    pid = json.loads(lab.on("h2", "container", "inspect", "iperf-cli").stdout)[0]["State"]["Pid"]
    over = run_client(["nsenter", f"--target={pid}", "--net"], "10.60.200.1")
    return under, over


def main() -> int:
    if os.geteuid() != 0:
        print("bench: run as root (it builds labs of network namespaces)", file=sys.stderr)
        return 1
    n = int(os.environ.get("BENCH_CONTAINERS", "50"))
    lab = Lab("bench-ov", lab_yaml("bench-ov", 2, containers=False))
    try:
        lab.up()
        lab.on("h1", "run", "-d", "--name", "warm", "--net", "ov", "/bin/busybox", "sleep", "3600")
        conv = convergence(lab, n)
        if conv:
            conv.sort()
            p95 = conv[min(len(conv) - 1, int(0.95 * len(conv)))]
            med = statistics.median(conv)
            print(
                f"convergence (net run -d on h1 -> first ping answered from h2), {len(conv)} containers: "
                f"median {med:.1f} ms, p95 {p95:.1f} ms   goal median < 100 ms: {'met' if med < 100 else 'NOT met'}"
            )
        if shutil.which("iperf3"):
            under, over = iperf(lab)
            ratio = over / under
            print(
                f"TCP throughput: underlay {under:.2f} Gbit/s, overlay {over:.2f} Gbit/s, ratio {ratio:.2f}   "
                f"goal >= 0.90: {'met' if ratio >= 0.9 else 'NOT met'}"
            )
        else:
            print("TCP throughput: iperf3 is not installed; skipped")
    finally:
        lab.down()
    for hosts in (2, 5, 10):
        name = f"bench-up{hosts}"
        lab = Lab(name, lab_yaml(name, hosts))
        try:
            took = lab.up()
            print(f"net lab up, {hosts} hosts (1 etcd member, one overlay, a container per host): {took:.1f} s")
        finally:
            lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
