"""A cluster where hardware ends: 1,000 simulated hosts against a real 3-member etcd.

    sudo .venv/bin/python bench/cluster_sim.py [--hosts 1000] [--networks 100]
        [--endpoints 50000] [--workers 4] [--churn-seconds 30] [--churn-rate 50]

Each host is bench/simhost.SimHost: the real ClusterSync (scoped watching, leases,
resyncs) on its own EtcdStore, with the overlay driver's peer table but no kernel.
Hosts run in a few worker processes (one watch hub each); etcd's members (Debian's
etcd-server) run on loopback addresses of a network namespace made for the run (their
data on /dev/shm), removed afterwards. Needs root.

The cluster: networks have skewed popularity (the i-th is chosen 1/sqrt(i) as often as
the first: a few large, many small); each host is on
1 to 4 of them and spreads its endpoints over them. Phases: start every host; publish
every endpoint (cold start) and wait until every host holds exactly the peers of its
networks; churn (endpoints added and removed at --churn-rate per second, on networks
each host is already on, etcd compacted every 10 s); some hosts join and leave a
network; a last check that every host holds exactly what it should.

Convergence: an endpoint published on one host, until the last host of its network
has it in its peer table (every host's clock is the machine's CLOCK_MONOTONIC).
Prints p50/p99 of that and of single deliveries, etcd's CPU and memory and database
size, and each host's cluster state in bytes (bench/simhost.deep_size). Exits
non-zero when an endpoint never reached a host of its network, or a host ends with a
wrong set of peers (the suite runs a small configuration as a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TICK = os.sysconf("SC_CLK_TCK")
TTL = 30  # node lease: renewed every 10 s, as Kubernetes' node leases are


@dataclass
class HostSpec:
    name: str
    vtep: str
    endpoints: list[str]  # etcd client URLs, rotated so hosts spread over members
    attach: list[list]  # [endpoint id, network id, address, mac]
    spare: list[str] = field(default_factory=list)  # networks it may join later


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


# -- the plan (pure, seeded) ---------------------------------------------------------------


def plan(hosts: int, networks: int, endpoints: int, members: list[str], seed: int) -> tuple[list[str], list[HostSpec]]:
    from bench.simhost import network_id

    rng = random.Random(seed)
    names = [f"net{i}" for i in range(networks)]
    weights = [1 / (i + 1) ** 0.5 for i in range(networks)]
    specs: list[HostSpec] = []
    per_net: dict[str, int] = defaultdict(int)
    per_host = max(1, endpoints // hosts)
    for h in range(hosts):
        k = rng.choices([1, 2, 3, 4], weights=[35, 35, 20, 10])[0]
        mine: list[str] = []
        while len(mine) < min(k, networks):
            pick = rng.choices(names, weights=weights)[0]
            if pick not in mine:
                mine.append(pick)
        vtep = f"198.18.{h // 250}.{h % 250 + 1}"
        eps = members[h % len(members) :] + members[: h % len(members)]
        attach = []
        for i in range(per_host):
            net = mine[i % len(mine)]
            n = per_net[net]
            per_net[net] += 1
            mac = f"02:42:{h >> 8 & 0xFF:02x}:{h & 0xFF:02x}:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}"
            attach.append([f"h{h}-{i}", network_id(net), f"10.{names.index(net) % 250}.{n // 250}.{n % 250 + 1}", mac])
        spare = [network_id(n) for n in rng.sample(names, min(3, networks)) if n not in mine]
        specs.append(HostSpec(f"h{h}", vtep, eps, attach, spare))
    return names, specs


def digest(eids) -> str:
    """A short fingerprint of a set of endpoint ids (what a host holds, or should)."""
    import hashlib

    eids = sorted(eids)
    return f"{len(eids)}:{hashlib.sha1(chr(10).join(eids).encode()).hexdigest()[:16]}"


def expected_peers(specs: list[HostSpec], state: dict[str, dict[str, str]]) -> dict[str, str]:
    """Host -> digest of the endpoint ids it should hold, from where every endpoint is
    now (state: host -> endpoint id -> network id)."""
    by_net: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for host, eps in state.items():
        for eid, nid in eps.items():
            by_net[nid].add((host, eid))
    out = {}
    for host, eps in state.items():
        nets = set(eps.values())
        out[host] = digest(eid for nid in nets for h, eid in by_net[nid] if h != host)
    return out


# -- the worker: a few hundred hosts in one process --------------------------------------------


def worker() -> None:
    from bench.simhost import SimHost
    from cnm.store.etcd import WatchHub

    hub = WatchHub("etcd-watch sim")
    hosts: dict[str, SimHost] = {}
    seen: dict[str, list[tuple[str, float, bool]]] = defaultdict(list)
    published: dict[str, list] = {}  # churn endpoint -> [network, host, t_add, t_del]
    pool = ThreadPoolExecutor(8)

    def on_seen_for(name: str):
        def on_seen(eid: str, up: bool) -> None:
            if eid.startswith("c"):
                seen[eid].append((name, time.monotonic(), up))

        return on_seen

    def reply(**kw) -> None:
        print(json.dumps(kw), flush=True)

    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "start":
            for raw in cmd["hosts"]:
                spec = HostSpec(**raw)
                h = SimHost(
                    spec.name, spec.vtep, spec.endpoints, hub=hub, ttl=TTL, timeout=10.0, on_seen=on_seen_for(spec.name)
                )
                h.spec = spec  # type: ignore[attr-defined]
                hosts[spec.name] = h
            list(pool.map(lambda h: h.start(), hosts.values()))
            reply(ok=True)
        elif op == "load":

            def load(h: SimHost) -> None:
                for eid, nid, ip, mac in h.spec.attach:  # type: ignore[attr-defined]
                    h.attach(nid, eid, ip, mac)

            list(pool.map(load, hosts.values()))
            reply(ok=True)
        elif op == "counts":
            reply(counts={n: len(h.sync._held) for n, h in hosts.items()})
        elif op == "held":
            reply(held={n: digest(rec["endpoint_id"] for rec in h.sync.held_peers()) for n, h in hosts.items()})
        elif op == "churn":
            churn(hosts, published, cmd["seconds"], cmd["rate"], random.Random(cmd["seed"]), cmd["index"], pool)
            reply(ok=True)
        elif op == "join":
            times = []
            for name, nid, eid, ip, mac in cmd["joins"]:
                times.append(("join", hosts[name].attach(nid, eid, ip, mac), time.monotonic()))
            for name, _, eid, _, _ in cmd["joins"]:
                t0 = hosts[name].detach(eid)
                times.append(("leave", t0, time.monotonic()))
            reply(times=times)
        elif op == "report":
            import resource

            reply(
                seen=seen,
                published=published,
                rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                hosts={
                    n: {
                        "bytes": h.state_bytes(),
                        "peers": len(h.sync.held_peers()),
                        "networks": len(h.sync.subscriptions()),
                        "watches": len(h.store._watches),
                    }
                    for n, h in hosts.items()
                },
                state={n: {eid: nid for eid, (_, nid) in h.endpoints.items()} for n, h in hosts.items()},
            )
        elif op == "stop":
            # The whole cluster goes (etcd with it): no host needs a graceful close, and
            # closing 250 of them one by one takes a minute.
            reply(ok=True)
            os._exit(0)


def churn(
    hosts: dict, published: dict, seconds: float, rate: float, rng: random.Random, index: int, pool: ThreadPoolExecutor
) -> None:
    """Add and remove endpoints at `rate` per second on networks each host is on already
    (its memberships, hence who should see what, stay as they are). Operations start on
    schedule on a pool, so a slow etcd write does not lower the rate."""
    import threading

    names = sorted(hosts)
    lock = threading.Lock()
    end = time.monotonic() + seconds
    live: list[str] = []
    busy: set[str] = set()  # one operation at a time per host, as a daemon's lock does
    futures = []

    def add(name: str, eid: str, nid: str, ip: str, mac: str) -> None:
        t0 = hosts[name].attach(nid, eid, ip, mac)
        written = time.monotonic() - t0  # etcd's write (commit) latency, the first part
        with lock:
            published[eid] = [nid, name, t0, None, written]
            live.append(eid)
            busy.discard(name)

    def remove(name: str, eid: str) -> None:
        t0 = hosts[name].detach(eid)
        with lock:
            published[eid][3] = t0
            busy.discard(name)

    n = 0
    next_at = time.monotonic()
    while time.monotonic() < end:
        next_at += rng.expovariate(rate) if rate > 0 else seconds
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        with lock:
            old = [e for e in live if time.monotonic() - published[e][2] > 2.0 and published[e][1] not in busy]
            if old and rng.random() < 0.5:
                eid = rng.choice(old)
                live.remove(eid)
                owner = published[eid][1]
                busy.add(owner)
                futures.append(pool.submit(remove, owner, eid))
                continue
            free = [h for h in names if h not in busy]
            if not free:
                continue
            name = rng.choice(free)
            busy.add(name)
        nid = rng.choice(sorted(hosts[name].networks_on()))
        n += 1
        # Addresses and MACs no other endpoint has (10.240+ is not used by the plan).
        ip = f"10.{240 + index % 10}.{(n // 250) % 250}.{n % 250 + 1}"
        mac = f"02:43:{index & 0xFF:02x}:{n >> 16 & 0xFF:02x}:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}"
        futures.append(pool.submit(add, name, f"c{name}-{n}", nid, ip, mac))
    for f in futures:
        f.result()


# -- the coordinator ------------------------------------------------------------------------


class Workers:
    def __init__(self, count: int, ns_path: str) -> None:
        self.procs = []
        for _ in range(count):
            # The coordinator's thread is inside the namespace: a child starts there too.
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, os.path.abspath(__file__), "--worker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=ROOT,
                )
            )

    def send(self, cmds: list[dict]) -> list[dict]:
        for p, cmd in zip(self.procs, cmds, strict=True):
            p.stdin.write(json.dumps(cmd) + "\n")
            p.stdin.flush()
        out = []
        for p in self.procs:
            line = p.stdout.readline()
            if not line:
                raise SystemExit(f"a worker died (exit {p.wait()})")
            out.append(json.loads(line))
        return out

    def all(self, cmd: dict) -> list[dict]:
        return self.send([cmd] * len(self.procs))

    def close(self) -> None:
        from cnm.osl.proc import stop

        for p in self.procs:
            stop(p, timeout=10)


def etcd_figures(members) -> dict:
    import requests

    out = {}
    for m in members:
        with open(f"/proc/{m.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICK
        rss = next(int(line.split()[1]) * 1024 for line in open(f"/proc/{m.pid}/status") if line.startswith("VmRSS"))
        status = requests.post(m.client_url + "/v3/maintenance/status", json={}, timeout=5).json()
        out[m.name] = {
            "cpu": cpu,
            "rss": rss,
            "db": int(status.get("dbSize", 0)),
            "db_in_use": int(status.get("dbSizeInUse", 0)),
            "term": int(status.get("raftTerm", 0)),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--networks", type=int, default=100)
    ap.add_argument("--endpoints", type=int, default=50000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--churn-seconds", type=float, default=30.0)
    ap.add_argument("--churn-rate", type=float, default=50.0)
    ap.add_argument("--joins", type=int, default=20)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--worker", action="store_true")
    args = ap.parse_args()
    if args.worker:
        worker()
        return 0
    if os.geteuid() != 0:
        print("cluster_sim needs root (a network namespace for etcd)")
        return 2
    # A signal must still run the clean-up below (etcd, workers, namespace, data).
    import signal

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(143))
    from bench.cluster_report import report
    from bench.simhost import create_network
    from cnm.cluster.etcd_server import client_endpoints, make_members, start_cluster
    from cnm.osl.netns import netns_path, setns_current_thread
    from cnm.store.etcd import EtcdStore

    ns = f"cnmsim-{secrets.token_hex(4)}"
    data = tempfile.mkdtemp(prefix="cnm-sim-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    members = []
    workers = None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        members = make_members(
            [(f"e{i}", f"127.0.0.{i + 1}") for i in range(args.members)],
            data,
            netns={f"e{i}": ns for i in range(args.members)},
        )
        for m in members:
            # The labs' 50/500 ms raft timing elects a new leader whenever a member misses
            # half a second of CPU; a thousand hosts on two cores starve it that long.
            # These are etcd's defaults x2 (still a fraction of a real WAN's).
            m.extra_args = ("--heartbeat-interval", "200", "--election-timeout", "2000")
        start_cluster(members)
        setns_current_thread(netns_path(ns))
        urls = client_endpoints(members)
        names, specs = plan(args.hosts, args.networks, args.endpoints, urls, args.seed)
        admin = EtcdStore(urls, timeout=10.0)
        for i, name in enumerate(names):
            create_network(admin, name, 256 + i)
        state0 = {s.name: {eid: nid for eid, nid, _, _ in s.attach} for s in specs}
        want = expected_peers(specs, state0)
        print(
            f"cluster: {args.hosts} hosts in {args.workers} processes, {args.networks} overlays, "
            f"{sum(len(s.attach) for s in specs)} endpoints, {args.members} etcd member(s); "
            f"{sum(int(v.split(':')[0]) for v in want.values()):,} peers held in all "
            f"(every host holding every peer: {args.hosts * sum(len(s.attach) for s in specs):,})"
        )
        workers = Workers(args.workers, netns_path(ns))
        shares = [[asdict(s) for s in specs[i :: args.workers]] for i in range(args.workers)]
        t = time.monotonic()
        workers.send([{"op": "start", "hosts": share} for share in shares])
        started = time.monotonic() - t
        cpu0 = etcd_figures(members)
        t = time.monotonic()
        workers.all({"op": "load"})
        published = time.monotonic() - t
        print(f"  ({published:.0f} s to publish; waiting for every host to hold its peers)", flush=True)
        converged = wait_held(workers, want, 600)
        loaded = time.monotonic() - t
        print(
            f"start {started:.1f} s; publish every endpoint {published:.1f} s; every host holds its "
            f"networks' peers {loaded:.1f} s after the first publish" + ("" if converged else " (NOT converged)")
        )
        cpu1 = etcd_figures(members)
        t = time.monotonic()
        stop_compacting = compact_every(admin, 10.0)
        workers.send(
            [
                {
                    "op": "churn",
                    "seconds": args.churn_seconds,
                    "rate": args.churn_rate / args.workers,
                    "seed": args.seed + i,
                    "index": i,
                }
                for i in range(args.workers)
            ]
        )
        stop_compacting()
        churned = time.monotonic() - t
        cpu2 = etcd_figures(members)
        joins = join_leave(workers, specs, args.joins, args.workers, args.seed)
        time.sleep(2.0)
        reports = workers.all({"op": "report"})
        state = {h: eps for r in reports for h, eps in r["state"].items()}
        final = wait_held(workers, expected_peers(specs, state), 60)
        code = report(
            args,
            specs,
            reports,
            joins,
            {"start": cpu0, "loaded": cpu1, "churned": cpu2},
            {"load": loaded, "churn": churned},
            converged and final,
        )
        workers.all({"op": "stop"})  # a clean stop; when aborted, close() just ends them
        return code
    finally:
        if workers is not None:
            workers.close()
        setns_current_thread(f"/proc/self/fd/{home}")
        os.close(home)
        for m in members:
            m.stop()
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(data, ignore_errors=True)


def wait_held(workers: Workers, want: dict[str, str], timeout: float) -> bool:
    """Until every host holds exactly what it should: counts first (cheap), then the
    fingerprints of the ids."""
    deadline = time.monotonic() + timeout
    counts = {h: int(d.split(":")[0]) for h, d in want.items()}
    while True:
        held = {h: v for r in workers.all({"op": "counts"}) for h, v in r["counts"].items()}
        if all(held.get(h) == n for h, n in counts.items()):
            prints = {h: v for r in workers.all({"op": "held"}) for h, v in r["held"].items()}
            wrong = [h for h in want if prints.get(h) != want[h]]
            if not wrong:
                return True
        else:
            wrong = [h for h, n in counts.items() if held.get(h) != n]
        if time.monotonic() > deadline:
            h = wrong[0]
            print(
                f"  {len(wrong)} host(s) hold the wrong peers, e.g. {h}: holds {held.get(h)}, "
                f"should hold {want[h]} (count:fingerprint)"
            )
            return False
        time.sleep(2.0)


def compact_every(store, period: float):
    """Compact etcd's history every `period` s (what --auto-compaction does in production)."""
    import threading

    stop = threading.Event()

    def run() -> None:
        while not stop.wait(period):
            try:
                store.compact(store.revision())
            except Exception as exc:  # a bench: say so and go on
                print(f"  (compaction failed: {exc})")

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return lambda: (stop.set(), t.join(5))


def join_leave(workers: Workers, specs: list[HostSpec], count: int, nworkers: int, seed: int) -> list:
    """`count` hosts each join a network they are not on (first endpoint there), then leave."""
    rng = random.Random(seed + 99)
    cmds: list[list] = [[] for _ in range(nworkers)]
    picked = [s for s in rng.sample(specs, min(count, len(specs))) if s.spare]
    for n, spec in enumerate(picked):
        idx = specs.index(spec)
        cmds[idx % nworkers].append(
            [
                spec.name,
                spec.spare[0],
                f"j{spec.name}",
                f"10.251.{n // 250}.{n % 250 + 1}",
                f"02:44:00:00:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}",
            ]
        )
    out = workers.send([{"op": "join", "joins": c} for c in cmds])
    return [t for r in out for t in r["times"]]


if __name__ == "__main__":
    sys.exit(main())
