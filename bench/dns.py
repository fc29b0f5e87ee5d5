"""Embedded DNS against dnsmasq: queries per second and p50/p99 latency, same client,
same run, 1,000 names.

    sudo .venv/bin/python bench/dns.py [--names 1000] [--seconds 4] [--rounds 3]

Needs root (a throwaway network namespace, removed afterwards), `dnsperf` (Debian's
dnsperf) and `dnsmasq` (dnsmasq-base). In the namespace, on loopback addresses:
our resolver (cnm.dns.standalone, the daemon's resolver code) on 10.89.0.1, dnsmasq on
10.89.0.2 serving the same names and addresses from a hosts file, and the client on
10.89.0.3 (registered as a container of the network, as a real client would be).

The client is dnsperf, the DNS project's own load generator: C, it keeps exactly
`-q` queries outstanding and reports what was answered, so neither server is judged
through a Python client's overhead. Each row says how much CPU the client and the
server used (100% = one core): on this 2-core machine the client and server share the
cores, and a server below 100% while the client is near it would mean the client is
the limit. Rounds alternate the order of the two servers; figures are medians.

Rows: in-process costs (NameTable.lookup, the full handler, a reply-cache hit), then
over the wire, per server: throughput with 32 outstanding (random names), latency at
32 outstanding (a separate dnsperf -v run, which costs the client some speed), and the
same for the 100-address round-robin alias `svc`; last, queries forwarded to an
upstream (dnsmasq) through our resolver.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dnslib import DNSRecord

from cnm.dns.fastpath import ReplyCache
from cnm.dns.handler import Local, decide, handle
from cnm.dns.records import NameTable
from cnm.osl.proc import stop

NET = "n" * 64
OURS = "10.89.0.1"
DNSMASQ_ADDR = "10.89.0.2"
CLIENT = "10.89.0.3"
UPSTREAM = "10.89.255.53"
DNSMASQ = "/usr/sbin/dnsmasq"
DNSPERF = "/usr/bin/dnsperf"
WINDOW = 32
TICK = os.sysconf("SC_CLK_TCK")


def endpoints(n: int) -> list[dict]:
    """n containers on one network; every 10th shares the alias 'svc' (round robin)."""
    return [
        dict(
            network_id=NET,
            network_name="bench",
            endpoint_id=f"ep{i}",
            container_id=f"{i:064x}",
            name=f"c{i}",
            aliases=["svc"] if i % 10 == 0 else [],
            ipv4=f"10.89.{2 + i // 250}.{1 + i % 250}",
            ipv6=None,
        )
        for i in range(n)
    ] + [
        dict(
            network_id=NET,
            network_name="bench",
            endpoint_id="client",
            container_id="f" * 64,
            name="client",
            aliases=[],
            ipv4=CLIENT,
            ipv6=None,
        )
    ]


def hosts_file(eps: list[dict]) -> str:
    """The same names and addresses for dnsmasq (svc: one line per member)."""
    lines = []
    for ep in eps:
        lines.append(f"{ep['ipv4']} {ep['name']}")
        lines.extend(f"{ep['ipv4']} {alias}" for alias in ep["aliases"])
    return "\n".join(lines) + "\n"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


# -- in process ------------------------------------------------------------------------


def in_process(n: int, seconds: float) -> None:
    table = NameTable()
    for ep in endpoints(n):
        table.add(**ep)
    names = [f"c{i}" for i in range(n)]
    packets = [bytes(DNSRecord.question(name).pack()) for name in names]
    cache = ReplyCache(table)
    for p in packets:
        out = decide(table, p, CLIENT, NET)
        assert isinstance(out, Local)
        cache.put(p, CLIENT, NET, out, table.generation)
    rows = (
        ("NameTable.lookup", lambda i: table.lookup(CLIENT, NET, names[i], "A")),
        ("handle() (dnslib parse + lookup + pack)", lambda i: handle(table, packets[i], CLIENT, NET)),
        ("reply cache hit (the fast path)", lambda i: cache.get(packets[i], CLIENT, NET)),
    )
    for label, fn in rows:
        count, end = 0, time.perf_counter() + seconds / 3
        t0 = time.perf_counter()
        while time.perf_counter() < end:
            for i in range(0, n, 7):
                fn(i)
            count += len(range(0, n, 7))
        per = (time.perf_counter() - t0) / count
        print(f"  in-process {label:<44} {per * 1e6:8.2f} µs per query")


# -- over the wire -----------------------------------------------------------------------


@dataclass
class Run:
    qps: float
    lost: int
    client_cpu: float  # cores busy, 1.0 = one core
    server_cpu: float
    lat: list[float]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def dnsperf(
    ns: str, server: str, server_pid: int, datafile: str, seconds: float, verbose: bool, window: int = WINDOW
) -> Run:
    argv = [
        "ip",
        "netns",
        "exec",
        ns,
        DNSPERF,
        "-s",
        server,
        "-a",
        CLIENT,
        "-d",
        datafile,
        "-q",
        str(window),
        "-l",
        str(seconds),
    ] + (["-v"] if verbose else [])
    out_path = datafile + ".out"
    before = cpu_seconds(server_pid)
    t0 = time.monotonic()
    with open(out_path, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    server_cpu = (cpu_seconds(server_pid) - before) / wall
    text = open(out_path).read()
    os.unlink(out_path)
    if proc.returncode != 0:
        raise SystemExit(f"dnsperf failed ({proc.returncode}):\n{text[-2000:]}")
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", text).group(1))
    lost = int(re.search(r"Queries lost:\s+(\d+)", text).group(1))
    lat = [float(m) for m in re.findall(r"^> \S+ \S+ \S+ ([\d.]+)$", text, re.M)] if verbose else []
    # dnsperf's own CPU over the whole run, from the kernel's accounting of the child.
    client_cpu = (usage.ru_utime + usage.ru_stime) / wall
    return Run(qps, lost, client_cpu, server_cpu, lat)


def summary(label: str, runs: list[Run]) -> float:
    qps = statistics.median(r.qps for r in runs)
    lost = sum(r.lost for r in runs)
    cc = statistics.median(r.client_cpu for r in runs)
    sc = statistics.median(r.server_cpu for r in runs)
    print(
        f"  {label:<46} {qps:>9,.0f} q/s  (client {cc:4.0%} cpu, server {sc:4.0%} cpu"
        f"{f', {lost} lost' if lost else ''})"
    )
    return qps


def latency(label: str, runs: list[Run]) -> tuple[float, float]:
    lat = [x for r in runs for x in r.lat]
    p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
    qps = statistics.median(r.qps for r in runs)
    print(
        f"  {label:<46} p50 {p50 * 1e6:6.0f} µs  p99 {p99 * 1e6:6.0f} µs  "
        f"({len(lat):,} queries; {qps:,.0f} q/s while logging each)"
    )
    return p50, p99


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--names", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    print(f"embedded DNS, {args.names} names registered")
    in_process(args.names, min(args.seconds, 3.0))
    missing = [p for p in (DNSPERF, DNSMASQ) if not os.path.exists(p)]
    if os.geteuid() != 0 or missing:
        print(
            "(over-the-wire rows skipped: they need root and "
            + (f"{', '.join(missing)} (apt-get install dnsperf dnsmasq-base)" if missing else "a namespace")
            + ")"
        )
        return
    ns = f"cnmb-{secrets.token_hex(4)}"
    procs: list[subprocess.Popen] = []
    # dnsperf's -v output and the data files go to memory, not to disk.
    tmp = tempfile.mkdtemp(prefix="cnm-dns-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        for addr in (OURS, DNSMASQ_ADDR, CLIENT, UPSTREAM):
            subprocess.run(["ip", "-n", ns, "addr", "add", f"{addr}/32", "dev", "lo"], check=True)
        eps = endpoints(args.names)
        with open(f"{tmp}/hosts", "w") as f:
            f.write(hosts_file(eps[: args.names]))
        common = [
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--user=root",
            "--bind-interfaces",
            "--port",
            "53",
        ]
        dnsmasq = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                DNSMASQ,
                *common,
                f"--addn-hosts={tmp}/hosts",
                f"--listen-address={DNSMASQ_ADDR}",
                f"--pid-file={tmp}/dnsmasq.pid",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(dnsmasq)
        procs.append(
            subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    DNSMASQ,
                    *common,
                    "--cache-size=0",
                    "--address=/upstream.test/198.18.9.9",
                    f"--listen-address={UPSTREAM}",
                    f"--pid-file={tmp}/upstream.pid",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        with open(f"{tmp}/cfg.json", "w") as f:
            json.dump({"port": 53, "upstreams": [UPSTREAM], "listeners": [[NET, OURS]], "endpoints": eps}, f)
        resolver = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "cnm.dns.standalone", f"{tmp}/cfg.json"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=root,
        )
        procs.append(resolver)
        if resolver.stdout.readline().strip() != "ready":
            raise SystemExit("resolver did not start")
        names = [f"c{i}" for i in range(args.names)]
        random.shuffle(names)
        with open(f"{tmp}/names", "w") as f:
            f.writelines(f"{n} A\n" for n in names)
        with open(f"{tmp}/svc", "w") as f:
            f.write("svc A\n")
        with open(f"{tmp}/upstream", "w") as f:
            f.write("upstream.test A\n")
        time.sleep(0.3)  # let dnsmasq bind
        servers = {"ours": (OURS, resolver.pid), "dnsmasq": (DNSMASQ_ADDR, dnsmasq.pid)}
        # Warm both: our reply cache fills on first sight of each query, dnsmasq reads its file.
        for addr, pid in servers.values():
            for data in ("names", "svc"):
                dnsperf(ns, addr, pid, f"{tmp}/{data}", 1, False)
        runs: dict[tuple[str, str, bool], list[Run]] = {}
        for rnd in range(args.rounds):
            order = list(servers) if rnd % 2 == 0 else list(servers)[::-1]
            for data in ("names", "svc"):
                for verbose in (False, True):
                    for name in order:
                        addr, pid = servers[name]
                        secs = args.seconds if not verbose else max(1.0, args.seconds / 2)
                        runs.setdefault((name, data, verbose), []).append(
                            dnsperf(ns, addr, pid, f"{tmp}/{data}", secs, verbose)
                        )
        print(f"over the wire, dnsperf -q {WINDOW}, {args.rounds} rounds of {args.seconds:g}s, medians:")
        q = {}
        for data, what in (("names", "random names"), ("svc", "100-address alias")):
            for name in servers:
                q[name, data] = summary(f"{name:<8} {what}", runs[name, data, False])
            for name in servers:
                latency(f"{name:<8} {what}, latency", runs[name, data, True])
        print(f"  ours / dnsmasq, random names:         {q['ours', 'names'] / q['dnsmasq', 'names']:.2f}x")
        print(f"  ours / dnsmasq, 100-address alias:    {q['ours', 'svc'] / q['dnsmasq', 'svc']:.2f}x")
        print(f"  ours, alias / single names:           {q['ours', 'svc'] / q['ours', 'names']:.2f}x")
        fwd = [dnsperf(ns, OURS, resolver.pid, f"{tmp}/upstream", max(1.0, args.seconds / 2), False, window=8)]
        summary("ours, forwarded to dnsmasq, 8 outstanding", fwd)
        print(
            f"  (load average during the run: {os.getloadavg()[0]:.2f}; "
            f"bench's own children: {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024} MB max RSS)"
        )
    finally:
        for p in procs:
            stop(p, timeout=5)
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
