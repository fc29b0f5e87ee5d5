"""`net ps` latency at N running containers against its latency at 0 (issue 10: at 2,000
<= 1.3 x at 0), paired: two private daemons (bench/ours_side.py's DemoHost) run side by
side, one empty and one with N detached busybox `sleep` containers over two networks (as
bench/thousands.py starts them), and every round times each command against both, one
right after the other — so both figures see the same load on a shared machine
(bench/thousands.py measures at 0 and at N minutes apart).

    sudo .venv/bin/python bench/ps_latency.py [--n 2000] [--runs 21] [--other /path/to/net]

Commands: `net ps`, `net ps -a`, `net ps -q`, `net ls -q` (one round trip whose work does
not grow with containers), and the daemon's side alone: one raw `GET
/containers/json?as=table` (what `net ps` asks) and `GET /networks`. `--other NET` adds
that `net`'s `ps` (e.g. main's checkout before a change: a paired before/after of the
CLI's side against the same daemons). `--json` adds `net ps --format json` (the
Docker-shaped JSON: ~1.3 MB at 2,000, slow). Medians in ms; the load average printed."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from bench.ours_side import OursSide
from bench.thousands import NETWORKS
from cnm.demo import BB, DemoHost


def commands(other: str | None, with_json: bool) -> dict[str, Callable[[OursSide], float]]:
    """Each command as a function of the side it runs against: seconds taken."""

    def cli(*argv: str) -> Callable[[OursSide], float]:
        return lambda side: side.cli(*argv)

    def api(path: str) -> Callable[[OursSide], float]:
        return lambda side: side.api("GET", path)

    def theirs(side: OursSide) -> float:
        assert other is not None
        t = time.perf_counter()
        r = subprocess.run([other, "-H", f"unix://{side.sock}", "ps"], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"bench: {other} ps failed: {r.stderr.strip()}")
        return time.perf_counter() - t

    out = {
        "ps": cli("ps"),
        "ls -q": cli("ls", "-q"),
        "ps -a": cli("ps", "-a"),
        "ps -q": cli("ps", "-q"),
        "API as=table": api("/containers/json?as=table"),
        "API networks": api("/networks"),
    }
    if other:
        out["other ps"] = theirs
    if with_json:
        out["ps --format json"] = cli("ps", "--format", "json")
    return out


def rounds(sides: dict[str, OursSide], runs: int, cmds: dict[str, Callable[[OursSide], float]]) -> dict:
    """Medians (ms) per command and side over `runs` rounds, each side right after the other."""
    times: dict[tuple[str, str], list[float]] = {(c, s): [] for c in cmds for s in sides}
    loads = []
    for i in range(runs):
        for c, run in cmds.items():
            order = list(sides.items()) if i % 2 == 0 else list(reversed(sides.items()))
            for s, side in order:
                times[(c, s)].append(1000 * run(side))
        loads.append(os.getloadavg()[0])
    return {"medians": {k: statistics.median(v) for k, v in times.items()}, "load": statistics.median(loads)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--other", help="another `net` (e.g. main's) whose ps is timed in the same rounds")
    ap.add_argument("--json", action="store_true", help="time `net ps --format json` too")
    ap.add_argument("--hold", metavar="FILE", help="before removing, write the sockets to FILE; wait until it is gone")
    args = ap.parse_args()
    with DemoHost() as empty_host, DemoHost() as full_host:
        sides = {"0": OursSide(empty_host), str(args.n): OursSide(full_host)}
        for side in sides.values():
            for name, subnet in NETWORKS:
                side.cli("create", "--subnet", subnet, name)
        full = sides[str(args.n)]
        t0 = time.perf_counter()
        for i in range(args.n):
            full.cli("run", "-d", "--net", NETWORKS[i % 2][0], BB, "sleep", "36000")
            if (i + 1) % 500 == 0:
                print(f"  {i + 1} started (load {os.getloadavg()[0]:.1f})", flush=True)
        print(f"started {args.n} in {time.perf_counter() - t0:.0f} s; ps's output {len(full.out('ps'))} bytes")
        res = rounds(sides, args.runs, commands(args.other, args.json))
        med = res["medians"]
        print(f"{args.runs} paired rounds, load {res['load']:.1f} (median of the rounds'):")
        for c in commands(args.other, args.json):
            a, b = med[(c, "0")], med[(c, str(args.n))]
            print(f"  {c:<18} at 0 {a:7.2f} ms, at {args.n} {b:7.2f} ms: x{b / a:.2f}")
        if args.hold:
            with open(args.hold, "w") as f:
                f.write("".join(f"{side.sock}\n" for side in sides.values()))
            print(f"holding: remove {args.hold} to go on", flush=True)
            while os.path.exists(args.hold):
                time.sleep(1)
        t = time.perf_counter()
        full.remove_all()
        print(f"removed {args.n} in {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
