"""bench/cluster_sim.py's figures: convergence, etcd's cost, each host's memory."""

from __future__ import annotations

import statistics
from collections import defaultdict


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def ms(x: float) -> str:
    return f"{x * 1000:7.1f} ms"


def report(args, specs, reports: list[dict], joins: list, etcd: dict, seconds: dict, exact: bool) -> int:
    members_of: dict[str, set[str]] = defaultdict(set)  # network -> hosts on it during churn
    for s in specs:
        for _, nid, _, _ in s.attach:
            members_of[nid].add(s.name)
    published: dict[str, list] = {}
    seen: dict[str, list] = defaultdict(list)
    for r in reports:
        published.update(r["published"])
        for eid, events in r["seen"].items():
            seen[eid].extend(events)

    adds, dels, one_add = [], [], []
    missing = 0
    writes = [rec[4] for rec in published.values() if len(rec) > 4]
    for eid, (nid, owner, t_add, t_del, *_) in published.items():
        observers = members_of[nid] - {owner}
        if not observers:
            continue
        first_up: dict[str, float] = {}
        first_down: dict[str, float] = {}
        for host, t, up in seen.get(eid, ()):
            (first_up if up else first_down).setdefault(host, t)
        got = [first_up[h] - t_add for h in observers if h in first_up]
        missing += len(observers) - len(got)
        one_add.extend(got)
        if len(got) == len(observers):
            adds.append(max(got))
        if t_del is not None:
            gone = [first_down[h] - t_del for h in observers if h in first_down]
            missing += len(observers) - len(gone)
            if len(gone) == len(observers):
                dels.append(max(gone))

    print(
        f"churn: {len(published)} endpoints published over {seconds['churn']:.0f} s "
        f"({len(published) / seconds['churn']:.0f}/s), {len(dels)} of them withdrawn; "
        f"hosts per network: median {statistics.median(len(v) for v in members_of.values()):.0f}, "
        f"max {max(len(v) for v in members_of.values())}"
    )
    print(
        f"  convergence, published -> on every host of its network:  p50 {ms(pct(adds, 0.5))}  "
        f"p99 {ms(pct(adds, 0.99))}  max {ms(max(adds, default=float('nan')))}"
    )
    print(
        f"  convergence, withdrawn -> gone from every host:           p50 {ms(pct(dels, 0.5))}  "
        f"p99 {ms(pct(dels, 0.99))}"
    )
    print(
        f"  of which etcd's write (publish() returning):              p50 {ms(pct(writes, 0.5))}  "
        f"p99 {ms(pct(writes, 0.99))}"
    )
    print(
        f"  single deliveries (one endpoint to one host):             p50 {ms(pct(one_add, 0.5))}  "
        f"p99 {ms(pct(one_add, 0.99))}  ({len(one_add):,})"
    )
    if missing:
        print(f"  NOT CONVERGED: {missing} endpoint/host pairs never arrived")
    jt = [t1 - t0 for kind, t0, t1 in joins if kind == "join"]
    lt = [t1 - t0 for kind, t0, t1 in joins if kind == "leave"]
    if jt:
        print(
            f"  a host joining a network (listing + programming its peers): p50 {ms(pct(jt, 0.5))}  "
            f"p99 {ms(pct(jt, 0.99))};  leaving: p50 {ms(pct(lt, 0.5))}"
        )

    print("etcd (per member):")
    for name in etcd["churned"]:
        load_cpu = (etcd["loaded"][name]["cpu"] - etcd["start"][name]["cpu"]) / seconds["load"]
        churn_cpu = (etcd["churned"][name]["cpu"] - etcd["loaded"][name]["cpu"]) / seconds["churn"]
        e = etcd["churned"][name]
        print(
            f"  {name}: cpu {load_cpu:4.0%} while loading, {churn_cpu:4.0%} during churn; "
            f"rss {e['rss'] / 2**20:5.0f} MB; db {e['db'] / 2**20:5.1f} MB ({e['db_in_use'] / 2**20:.1f} MB in use); "
            f"raft term {e['term']} (elections)"
        )

    hosts = {h: v for r in reports for h, v in r["hosts"].items()}
    by_peers = sorted(hosts.values(), key=lambda v: v["peers"])
    per_peer = [v["bytes"] / v["peers"] for v in hosts.values() if v["peers"]]
    print("hosts' cluster state (peers held, both tables; own records; networks):")
    print(
        f"  bytes per host: p50 {pct([v['bytes'] for v in by_peers], 0.5) / 1024:6.0f} KiB, "
        f"p99 {pct([v['bytes'] for v in by_peers], 0.99) / 1024:6.0f} KiB, max {by_peers[-1]['bytes'] / 1024:.0f} KiB; "
        f"{statistics.median(per_peer):.0f} bytes per peer held (median)"
    )
    groups: dict[int, list] = defaultdict(list)
    for v in hosts.values():
        groups[v["networks"]].append(v)
    for k in sorted(groups):
        g = groups[k]
        print(
            f"  on {k} network(s): {len(g):4d} hosts, peers held median {statistics.median(v['peers'] for v in g):6.0f}, "
            f"state median {statistics.median(v['bytes'] for v in g) / 1024:6.0f} KiB, "
            f"watches {statistics.median(v['watches'] for v in g):.0f}"
        )
    small, large = by_peers[: len(by_peers) // 10 or 1], by_peers[-(len(by_peers) // 10 or 1) :]
    print(
        f"  fewest-peer tenth: {statistics.median(v['peers'] for v in small):.0f} peers, "
        f"{statistics.median(v['bytes'] for v in small) / 1024:.0f} KiB; most-peer tenth: "
        f"{statistics.median(v['peers'] for v in large):.0f} peers, {statistics.median(v['bytes'] for v in large) / 1024:.0f} KiB"
    )
    rss = [r["rss"] for r in reports]
    print(
        f"  worker processes: {statistics.median(rss) / 2**20:.0f} MB max RSS each (median), "
        f"{sum(rss) / len(hosts) / 1024:.0f} KiB per host all in (interpreter, threads, connections)"
    )
    ok = exact and not missing
    print("every host holds exactly the peers of its networks" if exact else "SOME HOSTS HOLD THE WRONG PEERS")
    return 0 if ok else 1
