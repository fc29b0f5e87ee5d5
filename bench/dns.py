"""Embedded DNS benchmark: queries per second and p50/p99 latency with 1,000 names.

A plain script: prints figures, no asserts. Needs root: it creates a throwaway network
namespace (removed afterwards), runs the resolver there (cnm.dns.standalone) on
addresses of that namespace's loopback, and a UDP client in the same namespace.
    sudo .venv/bin/python bench/dns.py [--names 1000] [--seconds 4]

Rows: in-process cost of one lookup (NameTable.lookup and the full wire handler), then
over the wire: one query at a time (latency), a window of 32 outstanding queries
(throughput), and forwarded queries (to a dnsmasq upstream in the namespace, if present).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dnslib import DNSRecord  # noqa: E402

from cnm.dns.handler import handle  # noqa: E402
from cnm.dns.records import NameTable  # noqa: E402
from cnm.osl.proc import stop  # noqa: E402

NET = "n" * 64
SERVER = "10.89.0.1"
CLIENT = "10.89.0.2"
UPSTREAM = "10.89.255.53"
DNSMASQ = "/usr/sbin/dnsmasq"


def endpoints(n: int) -> list[dict]:
    """n containers on one network; every 10th shares the alias 'svc' (round robin)."""
    return [dict(network_id=NET, network_name="bench", endpoint_id=f"ep{i}", container_id=f"{i:064x}",
                 name=f"c{i}", aliases=["svc"] if i % 10 == 0 else [],
                 ipv4=f"10.89.{2 + i // 250}.{1 + i % 250}", ipv6=None) for i in range(n)] + [
        dict(network_id=NET, network_name="bench", endpoint_id="client", container_id="f" * 64,
             name="client", aliases=[], ipv4=CLIENT, ipv6=None)]


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def line(what: str, qps: float, lat: list[float] | None = None) -> None:
    tail = f"   p50 {pct(lat, .5) * 1e6:8.0f} µs   p99 {pct(lat, .99) * 1e6:8.0f} µs" if lat else ""
    print(f"{what:<52} {qps:>10,.0f} q/s{tail}")


def in_process(n: int, seconds: float) -> None:
    table = NameTable()
    for ep in endpoints(n):
        table.add(**ep)
    names = [f"c{i}" for i in range(n)]
    packets = [DNSRecord.question(name).pack() for name in names]
    for label, fn, args in (("in-process NameTable.lookup", table.lookup, names),
                            ("in-process handle() (parse + lookup + pack)", None, packets)):
        lat: list[float] = []
        end = time.perf_counter() + seconds / 2
        i = 0
        while time.perf_counter() < end and i < 200_000:
            a = args[i % n]
            t0 = time.perf_counter()
            if fn is not None:
                fn(CLIENT, NET, a, "A")
            else:
                handle(table, a, CLIENT, NET)
            lat.append(time.perf_counter() - t0)
            i += 1
        line(label, len(lat) / sum(lat), lat)


# -- the client, run inside the namespace -------------------------------------------

def client(names: list[str], seconds: float, window: int, max_queries: int) -> dict:
    """Send A queries for random names with up to `window` outstanding; returns counts
    and per-query latencies (seconds)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((CLIENT, 0))
    sock.connect((SERVER, 53))
    sock.setblocking(False)
    pending: dict[int, float] = {}
    lat: list[float] = []
    sent = lost = 0
    qid = random.randrange(65536)
    t_start = time.perf_counter()
    end = t_start + seconds
    while True:
        now = time.perf_counter()
        if now >= end or sent >= max_queries:
            if not pending or now >= end + 1:
                break
        else:
            while len(pending) < window and sent < max_queries:
                qid = (qid + 1) % 65536
                q = DNSRecord.question(random.choice(names))
                q.header.id = qid
                pending[qid] = time.perf_counter()
                sock.send(q.pack())
                sent += 1
        r, _, _ = select.select([sock], [], [], 0.2)
        if not r:
            # A lost datagram must not stall the window forever.
            stale = [k for k, t in pending.items() if time.perf_counter() - t > 1.0]
            lost += len(stale)
            for k in stale:
                del pending[k]
            continue
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                break
            rid = int.from_bytes(data[:2], "big")
            t0 = pending.pop(rid, None)
            if t0 is not None:
                lat.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - t_start
    return {"sent": sent, "answered": len(lat), "lost": lost + len(pending), "elapsed": elapsed, "lat": lat}


# -- orchestration (root namespace side) ----------------------------------------------

def run_client(ns: str, names: list[str], seconds: float, window: int, max_queries: int) -> dict:
    argv = ["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__), "--client",
            json.dumps({"names": names, "seconds": seconds, "window": window, "max_queries": max_queries})]
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout)


def report(label: str, res: dict) -> None:
    qps = res["answered"] / res["elapsed"] if res["elapsed"] else 0.0
    line(label, qps, res["lat"])
    if res["lost"]:
        print(f"{'':<52} ({res['lost']} of {res['sent']} queries unanswered)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--names", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--client")
    args = ap.parse_args()
    if args.client:
        spec = json.loads(args.client)
        print(json.dumps(client(spec["names"], spec["seconds"], spec["window"], spec["max_queries"])))
        return

    print(f"embedded DNS, {args.names} names registered")
    in_process(args.names, args.seconds)
    if os.geteuid() != 0:
        print("(over-the-wire rows skipped: they need root to create a network namespace)")
        return
    ns = f"cnmb-{secrets.token_hex(4)}"
    procs: list[subprocess.Popen] = []
    tmp = tempfile.mkdtemp(prefix="cnm-dns-bench-")
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        for addr in (SERVER, CLIENT, UPSTREAM):
            subprocess.run(["ip", "-n", ns, "addr", "add", f"{addr}/32", "dev", "lo"], check=True)
        upstreams: list[str] = []
        if os.path.exists(DNSMASQ):
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts",
                 "--conf-file=/dev/null", "--user=root", "--address=/upstream.test/198.18.9.9",
                 f"--listen-address={UPSTREAM}", "--bind-interfaces", "--port", "53", "--cache-size=0",
                 f"--pid-file={tmp}/dnsmasq.pid"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            upstreams.append(UPSTREAM)
        cfg = os.path.join(tmp, "cfg.json")
        with open(cfg, "w") as f:
            json.dump({"port": 53, "upstreams": upstreams, "listeners": [[NET, SERVER]],
                       "endpoints": endpoints(args.names)}, f)
        resolver = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "cnm.dns.standalone", cfg],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                    cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        procs.append(resolver)
        if resolver.stdout.readline().strip() != "ready":
            print("resolver did not start")
            return
        time.sleep(0.3)    # let dnsmasq bind
        names = [f"c{i}" for i in range(args.names)]
        report("UDP, 1 outstanding (latency), random names", run_client(ns, names, args.seconds, 1, 200_000))
        report("UDP, 32 outstanding (throughput), random names", run_client(ns, names, args.seconds, 32, 400_000))
        report("UDP, 32 outstanding, round-robin alias (100 addrs)", run_client(ns, ["svc"], args.seconds / 2, 32, 200_000))
        if upstreams:
            report("UDP, 8 outstanding, forwarded to dnsmasq", run_client(ns, ["upstream.test"], args.seconds / 2, 8, 100_000))
    finally:
        for p in procs:
            stop(p, timeout=5)
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
