"""bench/containers.py --thousands: N (2,000) detached containers on one host, over two
networks (a Linux bridge holds 1,023 ports), started, listed and removed through the
`net` CLI, with the issue's goals:

- total PSS of the daemon, the supervisor template and every supervisor <= 2.5 GB
  (and per container <= 1.0 MB: supervisor + its share of the template);
- start time per container <= 0.2 of Docker's (Docker measured at 100 in the same run);
- removal per container <= 0.25 of Docker's (the same);
- `net run -d` and `net ps` latency at N <= 1.3 x their latency at 0 (medians);
- supervisor start-up (Template.probe, bench/supervisors.py) <= 3 ms at N as at 0.

Also printed: the kernel resources N containers take (descriptors, processes, mounts,
network namespaces, slab memory) and how long the background deletion of their veths
takes after the last `rm` returns."""

from __future__ import annotations

import os
import statistics
import subprocess
import time

from bench.ours_side import OursSide
from cnm.demo import BB

GOAL_TOTAL_PSS_GB = 2.5
GOAL_LATENCY_GROWTH = 1.3
GOAL_STARTUP_MS = 3.0
NETWORKS = (("t1", "10.200.0.0/21"), ("t2", "10.200.8.0/21"))


def fmt(v: float | None) -> str:
    return "failed" if v is None else f"{v:.2f}"


def meminfo(key: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def latencies(ours: OursSide, runs: int) -> dict[str, float | None]:
    """Medians (ms) of `net ps` and of `net run -d` (those containers removed again);
    None for a command that failed (the failure is printed). Each one is followed by
    `net ls -q` (one round trip whose work does not grow with containers): "ref" is
    its median, the machine's load at these moments (at 0 and at N are minutes apart)."""
    out: dict[str, float | None] = {}
    refs: list[float] = []
    for key, argv in (
        ("ps", lambda i: ["ps"]),
        ("run", lambda i: ["run", "-d", "--net", NETWORKS[i % 2][0], BB, "sleep", "3600"]),
    ):
        times, made = [], []
        for i in range(runs):
            t = time.perf_counter()
            r = ours.host.net(*argv(i), quiet=True)
            times.append(1000 * (time.perf_counter() - t))
            refs.append(1000 * ours.cli("ls", "-q"))
            if r.returncode != 0:
                print(f"  net {' '.join(argv(i))} failed: {r.stderr.strip()}")
                times = []
                break
            if key == "run":
                made.append(r.stdout.strip())
        if made:
            ours.cli("container", "rm", "-f", *made)
        out[key] = statistics.median(times) if times else None
    out["ref"] = statistics.median(refs)
    from bench.supervisors import startup_ms

    out["probe"] = startup_ms(runs)
    return out


def resources(ours: OursSide) -> dict[str, int]:
    from cnm.runtime import Runtime

    pid = ours.daemon_pid
    # Supervisors share the daemon's mount namespace; a container has its own.
    running = [st for st in Runtime(ours.state_dir).list() if st.status == "running" and st.pid]
    newest = max(running, key=lambda st: st.started_at or "").pid if running else None
    out = {
        "daemon fds": len(os.listdir(f"/proc/{pid}/fd")),
        "daemon threads": len(os.listdir(f"/proc/{pid}/task")),
        "mounts in the daemon's namespace": sum(1 for _ in open(f"/proc/{pid}/mountinfo")),
        "network namespaces": len(os.listdir(ours.host.dir / "run" / "netns")),
        "slab kB": meminfo("Slab"),
        "processes on the machine": sum(1 for e in os.listdir("/proc") if e.isdigit()),
    }
    if newest:
        out["mounts in the newest container's namespace"] = sum(1 for _ in open(f"/proc/{newest}/mountinfo"))
    return out


def retired_links(ours: OursSide) -> int:
    from drivers.bridge.graveyard import GRAVEYARD_GROUP

    r = subprocess.run(
        ["ip", "-n", ours.host.ns, "-o", "link", "show", "group", str(GRAVEYARD_GROUP)], capture_output=True, text=True
    )
    return len(r.stdout.splitlines())


def thousands(ours: OursSide, n: int, runs: int) -> dict:
    for name, subnet in NETWORKS:
        ours.cli("create", "--subnet", subnet, name)
    res: dict = {"n": n}
    print(f"\n--thousands: {n} detached containers over {len(NETWORKS)} networks")
    res["at 0"] = latencies(ours, runs)
    res["resources at 0"] = resources(ours)
    print("  at 0: " + ", ".join(f"{k} {fmt(v)} ms" for k, v in res["at 0"].items()))
    times: list[float] = []
    t0 = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        r = ours.host.net("run", "-d", "--net", NETWORKS[i % 2][0], BB, "sleep", "36000", quiet=True)
        times.append(1000 * (time.perf_counter() - t))
        if r.returncode != 0:
            res["failed"] = f"container {i + 1} of {n}: {r.stderr.strip()}"
            print(f"  stopped: {res['failed']}")
            break
        if (i + 1) % 250 == 0:
            print(
                f"  {i + 1} started, {statistics.median(times[-250:]):.1f} ms each lately "
                f"(load {os.getloadavg()[0]:.1f})"
            )
    res["started"] = len(times) - (1 if "failed" in res else 0)
    res["start total s"] = time.perf_counter() - t0
    res["start per container ms"] = 1000 * res["start total s"] / max(1, len(times))
    res["start first/last 100 ms"] = (statistics.median(times[:100]), statistics.median(times[-100:]))
    res["memory"] = ours.memory()
    res["resources at n"] = resources(ours)
    listed = len(ours.out("ps", "-q").split())
    res["listed"] = listed
    res["at n"] = latencies(ours, runs)
    print(
        f"  at {res['started']} (ps lists {listed}): " + ", ".join(f"{k} {fmt(v)} ms" for k, v in res["at n"].items())
    )
    t = time.perf_counter()
    ours.remove_all()
    res["remove total s"] = time.perf_counter() - t
    res["remove per container ms"] = 1000 * res["remove total s"] / max(1, res["started"])
    t = time.perf_counter()
    while retired_links(ours) and time.perf_counter() - t < 300:
        time.sleep(0.2)
    res["drain s"] = time.perf_counter() - t
    return res


def report(res: dict, fig) -> None:
    n, m = res["started"], res["memory"]
    total_gb = (m["daemon_pss_kb"] + m["supervisor_pss_kb"] + m["template_pss_kb"]) / 1024 / 1024
    print(f"\n--thousands ({n} of {res['n']} started{'; ' + res['failed'] if 'failed' in res else ''}):")
    print(
        f"  total PSS (daemon {m['daemon_pss_kb'] / 1024:.0f} MB + template {m['template_pss_kb'] / 1024:.1f} MB + "
        f"{m['supervisors']} supervisors {m['supervisor_pss_kb'] / 1024:.0f} MB): {total_gb:.2f} GB  "
        f"goal <= {GOAL_TOTAL_PSS_GB:g}: {'met' if total_gb <= GOAL_TOTAL_PSS_GB else 'NOT met'}"
    )
    per = m["per_container_kb"] / 1024
    print(
        f"  per container: supervisor {m['pss_each_kb']:.0f} kB PSS (private dirty {m['private_dirty_each_kb']:.0f}),"
        f" with the template's share {per:.2f} MB  goal <= 1.0: {'met' if per <= 1.0 else 'NOT met'}; "
        f"daemon {m['daemon_pss_kb'] / max(1, n):.0f} kB a container"
    )
    for label, ours_ms, key, goal in (
        ("start per container", res["start per container ms"], "per detached container (ms)", 0.2),
        ("removal per container", res["remove per container ms"], "removal per container (ms)", 0.25),
    ):
        theirs = fig.median(key, theirs=True)
        if theirs:
            r = ours_ms / theirs
            print(
                f"  {label}: {ours_ms:.1f} ms, Docker's at 100 {theirs:.1f} ms: ratio {r:.2f}  goal <= {goal:g}: "
                f"{'met' if r <= goal else 'NOT met'}"
            )
        else:
            print(f"  {label}: {ours_ms:.1f} ms (Docker not measured)")
    first, last = res["start first/last 100 ms"]
    print(f"  start latency, median of the first 100 {first:.1f} ms, of the last 100 {last:.1f} ms")
    for key, label in (("run", "net run -d"), ("ps", "net ps")):
        a, b = res["at 0"][key], res["at n"][key]
        if a is None or b is None:
            print(f"  {label}: {fmt(a)} ms at 0, {fmt(b)} ms at {n}")
            continue
        load = res["at n"]["ref"] / res["at 0"]["ref"]
        print(
            f"  {label}: {a:.1f} ms at 0, {b:.1f} ms at {n}: x{b / a:.2f}  goal <= {GOAL_LATENCY_GROWTH:g}: "
            f"{'met' if b / a <= GOAL_LATENCY_GROWTH else 'NOT met'}; against net ls -q at the same moments "
            f"(x{load:.2f}): x{b / a / load:.2f}"
        )
    for when in ("at 0", "at n"):
        p = res[when]["probe"]
        print(
            f"  supervisor start-up (Template.probe) {when.replace('n', str(n))}: {fmt(p)} ms"
            + ("" if p is None else f"  goal <= {GOAL_STARTUP_MS:g}: {'met' if p <= GOAL_STARTUP_MS else 'NOT met'}")
        )
    r0, r1 = res["resources at 0"], res["resources at n"]
    print(
        "  kernel and process resources, at 0 -> at n: "
        + "; ".join(f"{k} {r0.get(k, 0)} -> {r1.get(k, 0)}" for k in r1)
    )
    print(
        f"  removal: {res['remove total s']:.1f} s for the `rm -f` calls; the last veth deleted "
        f"{res['drain s']:.1f} s after the last call returned"
    )
