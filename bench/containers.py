"""Every figure of issue 10, ours against Docker's measured in the same run:

- `run --rm --net N true` (CLI, attached, to the exit code)          goal <= 0.25 of Docker's
- 100 detached containers (`run -d`, one CLI call each)             goal <= 0.2
- `connect` / `disconnect` through the CLI                           goal <= 0.5
- `connect` / `disconnect` through the API (a raw HTTP client, the same for both daemons)
                                                                     goal <= 0.25
- one API round trip from the CLI: `net ls -q` against Docker's own clients on OUR daemon
  (bench/cli.py's round_trip)                                        goal <= 1.5
- per-container memory: supervisor (+ the template's share) against containerd-shim-runc-v2,
  PSS at 100 (bench/supervisors.py measures the supervisor alone)   goal <= 1.0 MB, <= 0.4
- removal per container (`rm -f`, 10 a call, ours and Docker's calls interleaved)
                                                                     goal <= 0.25 (issue: at 2,000)
- `net ps` / `docker ps` at 0 and at 100 running containers: how each grows (the issue's
  goal, net ps at 2,000 <= 1.3 x at 0, is --thousands')
- with --thousands: 2,000 detached containers over two networks (bench/thousands.py):
  total PSS, start and removal per container against Docker's at 100, `net run` and
  `net ps` at 2,000 against at 0, supervisor start-up at 0 and 2,000, kernel resources.

Both daemons run at once, each in a throwaway network namespace: ours (cnm.demo.DemoHost)
and a private dockerd (bench/docker_side.py; Debian's 20.10, vfs storage,
--iptables=false, user networks of its built-in bridge). Every time figure is paired:
each round runs ours and Docker's back to back, the order alternating, and the ratio
printed is the median of the per-round ratios (other helpers share these 2 cores; a
slower moment slows both). Medians throughout; load averages before and after.

    sudo .venv/bin/python bench/containers.py [--quick] [--no-docker] [--thousands [N]]

--quick: 5 rounds and 20 detached (for iterating). BENCH_RUNS overrides the rounds (15).
Without Docker (--no-docker, or dockerd cannot start here) the issue's reference figures
are printed instead, labelled as such.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.docker_side import DockerSide, DockerUnusable, smaps
from bench.ours_side import OursSide
from cnm.demo import BB, DemoHost

# The figures for Docker on this machine kind, for a run without Docker.
DOCKER_REFERENCE = {
    "run --rm (ms)": 319,
    "per detached container (ms)": 269,
    "CLI connect (ms)": 42,
    "CLI disconnect (ms)": 60,
}
GOALS = {
    "run --rm (ms)": 0.25,
    "per detached container (ms)": 0.2,
    "CLI connect (ms)": 0.5,
    "CLI disconnect (ms)": 0.5,
    "API connect (ms)": 0.25,
    "API disconnect (ms)": 0.25,
    "removal per container (ms)": 0.25,
    "per-container PSS (MB)": 0.4,
}
CLI_GOAL, PSS_GOAL_MB = 1.5, 1.0


class Paired:
    """Figures measured in rounds, ours and Docker's back to back in each."""

    def __init__(self) -> None:
        self.ours: dict[str, list[float]] = {}
        self.theirs: dict[str, list[float]] = {}

    def round(self, rnd: int, name: str, ours: Callable[[], float], theirs: Callable[[], float] | None) -> None:
        pair = [("ours", ours), ("theirs", theirs)] if rnd % 2 == 0 else [("theirs", theirs), ("ours", ours)]
        for side, fn in pair:
            if fn is not None:
                (self.ours if side == "ours" else self.theirs).setdefault(name, []).append(1000 * fn())

    def add(self, name: str, ours: float, theirs: float | None) -> None:
        self.ours.setdefault(name, []).append(ours)
        if theirs is not None:
            self.theirs.setdefault(name, []).append(theirs)

    def median(self, name: str, theirs: bool = False) -> float | None:
        xs = (self.theirs if theirs else self.ours).get(name)
        return statistics.median(xs) if xs else None

    def ratio(self, name: str) -> float | None:
        a, b = self.ours.get(name, []), self.theirs.get(name, [])
        pairs = [x / y for x, y in zip(a, b, strict=False) if y]  # a side that failed a round is short
        return statistics.median(pairs) if pairs else None


def measure(ours: OursSide, dk: DockerSide | None, runs: int, detached: int, fig: Paired) -> dict:
    """Every figure but --thousands'; returns the extra facts for the report."""
    facts: dict = {}
    for _ in range(3):  # warm both: caches, templates, images
        ours.cli("run", "--rm", "--net", "benchnet", BB, "true")
        if dk:
            dk.timed("run", "--rm", "--net", "bnet", dk.image, "true")
    for rnd in range(runs):
        fig.round(
            rnd,
            "run --rm (ms)",
            lambda: ours.cli("run", "--rm", "--net", "benchnet", BB, "true"),
            (lambda: dk.timed("run", "--rm", "--net", "bnet", dk.image, "true")) if dk else None,
        )
    print_row(fig, "run --rm (ms)")

    ours.cli("run", "-d", "--name", "cc", "--net", "benchnet", BB, "sleep", "3600")
    if dk:
        dk.docker("run", "-d", "--name", "cc", "--net", "bnet", dk.image, "sleep", "3600")
    for rnd in range(runs):
        fig.round(
            rnd,
            "CLI connect (ms)",
            lambda: ours.cli("connect", "benchnet2", "cc"),
            (lambda: dk.timed("network", "connect", "bnet2", "cc")) if dk else None,
        )
        fig.round(
            rnd,
            "CLI disconnect (ms)",
            lambda: ours.cli("disconnect", "benchnet2", "cc"),
            (lambda: dk.timed("network", "disconnect", "bnet2", "cc")) if dk else None,
        )
    theirs_api = api_client(dk.sock) if dk else None
    for rnd in range(runs):
        fig.round(
            rnd,
            "API connect (ms)",
            lambda: ours.api("POST", "/v1.41/networks/benchnet2/connect", {"Container": "cc"}),
            (lambda: timed_api(theirs_api, "POST", "/v1.41/networks/bnet2/connect", {"Container": "cc"}))
            if dk
            else None,
        )
        fig.round(
            rnd,
            "API disconnect (ms)",
            lambda: ours.api("POST", "/v1.41/networks/benchnet2/disconnect", {"Container": "cc"}),
            (lambda: timed_api(theirs_api, "POST", "/v1.41/networks/bnet2/disconnect", {"Container": "cc"}))
            if dk
            else None,
        )
    for name in ("CLI connect (ms)", "CLI disconnect (ms)", "API connect (ms)", "API disconnect (ms)"):
        print_row(fig, name)
    ours.cli("container", "rm", "-f", "cc")
    if dk:
        dk.docker("rm", "-f", "cc")

    from bench.cli import round_trip

    facts["round_trip"] = round_trip(ours.sock, runs)
    print(
        "net ls -q against Docker's clients on our daemon: "
        + "; ".join(
            f"{c} {f['ms']:.1f} ms" + ("" if c == "net" else f" (ratio {f['ratio']:.2f})")
            for c, f in facts["round_trip"].items()
        )
    )

    facts["detached"] = detached_figures(ours, dk, detached, fig)
    return facts


def api_client(sock: str):
    from cnm.api.transport import UnixSocketTransport

    return UnixSocketTransport(sock)


def timed_api(client, method: str, path: str, body: dict | None) -> float:
    t = time.perf_counter()
    status, _, data = client.request(method, path, body)
    dt = time.perf_counter() - t
    if status >= 300:
        raise SystemExit(f"bench: {method} {path}: HTTP {status}: {data[:300]!r}")
    return dt


def detached_figures(ours: OursSide, dk: DockerSide | None, n: int, fig: Paired) -> dict:
    """n detached containers each, started in interleaved blocks of 10; memory with all
    of them running; then removed, 50 a call, interleaved too."""
    block = 10
    ps_rounds(ours, dk, fig, "ps at 0 (ms)")
    t_ours = t_dk = 0.0
    for b in range(0, n, block):
        for side in ("ours", "dk") if (b // block) % 2 == 0 else ("dk", "ours"):
            if side == "ours":
                t_ours += sum(
                    ours.cli("run", "-d", "--net", "benchnet", BB, "sleep", "3600") for _ in range(min(block, n - b))
                )
            elif dk:
                t_dk += sum(
                    dk.timed("run", "-d", "--net", "bnet", dk.image, "sleep", "3600") for _ in range(min(block, n - b))
                )
    fig.add("per detached container (ms)", 1000 * t_ours / n, 1000 * t_dk / n if dk else None)
    ps_rounds(ours, dk, fig, f"ps at {n} (ms)")
    mem = {"ours": ours.memory()}
    if dk:
        shims = [s for s in (smaps(p) for p in dk.shim_pids()) if s]
        mem["shims"] = {
            "n": len(shims),
            "pss_each": sum(s["Pss"] for s in shims) / max(1, len(shims)),
            "rss_each": statistics.median(s["Rss"] for s in shims) if shims else 0,
        }
        mem["docker daemons"] = {"dockerd": smaps(dk.dockerd_pid()), "containerd": smaps(dk.containerd_pid() or 0)}
    o = mem["ours"]
    fig.add("per-container PSS (MB)", o["per_container_kb"] / 1024, mem["shims"]["pss_each"] / 1024 if dk else None)
    removal_figures(ours, dk, fig)
    for name in (
        "per detached container (ms)",
        "per-container PSS (MB)",
        "removal per container (ms)",
        "ps at 0 (ms)",
        f"ps at {n} (ms)",
    ):
        print_row(fig, name)
    growth = []
    for theirs in (False, True) if dk else (False,):
        at_n, at_0 = fig.median(f"ps at {n} (ms)", theirs), fig.median("ps at 0 (ms)", theirs)
        growth.append(at_n / at_0 if at_n and at_0 else float("nan"))
    print(f"  `ps` at {n} / at 0: ours x{growth[0]:.2f}" + (f", Docker's x{growth[1]:.2f}" if dk else ""))
    print(
        f"  at {n}: ours {o['supervisors']} supervisors, {o['supervisor_pss_kb'] / 1024:.0f} MB PSS together "
        f"+ the template {o['template_pss_kb'] / 1024:.1f} MB, daemon PSS {o['daemon_pss_kb'] / 1024:.0f} MB"
        + (
            f"; Docker {mem['shims']['n']} shims, {mem['shims']['pss_each'] * mem['shims']['n'] / 1024:.0f} MB "
            f"PSS together, dockerd {mem['docker daemons']['dockerd'].get('Pss', 0) / 1024:.0f} + containerd "
            f"{mem['docker daemons']['containerd'].get('Pss', 0) / 1024:.0f} MB PSS"
            if dk
            else ""
        )
    )
    return mem


def ps_rounds(ours: OursSide, dk: DockerSide | None, fig: Paired, name: str, runs: int = 7) -> None:
    """`net ps` against `docker ps` (the table of running containers), paired."""
    for rnd in range(runs):
        fig.round(rnd, name, lambda: ours.cli("ps"), (lambda: dk.timed("ps")) if dk else None)


def removal_figures(ours: OursSide, dk: DockerSide | None, fig: Paired, block: int = 10) -> None:
    """`rm -f` of every container, `block` a call, ours and Docker's calls interleaved
    (the order alternating) so that both sides see the same moments of the machine's
    load; each pair of calls is a round (ratio: median of the rounds')."""
    mine = ours.out("ps", "-aq").split()
    theirs = dk.docker("ps", "-aq").stdout.split() if dk else []
    rounds = (min(len(mine), len(theirs)) if dk else len(mine)) // block

    def ours_rm(ids: list[str]) -> Callable[[], float]:
        return lambda: ours.cli("container", "rm", "-f", *ids) / len(ids)

    def theirs_rm(ids: list[str]) -> Callable[[], float] | None:
        return (lambda: dk.timed("rm", "-f", *ids) / len(ids)) if dk else None

    for rnd in range(rounds):
        part = slice(rnd * block, (rnd + 1) * block)
        fig.round(rnd, "removal per container (ms)", ours_rm(mine[part]), theirs_rm(theirs[part]))
    ours.remove_all()  # the rest, if the sides had different counts
    if dk:
        dk.remove_all()


def print_row(fig: Paired, name: str) -> None:
    o, d, r = fig.median(name), fig.median(name, theirs=True), fig.ratio(name)
    line = f"{name:<30} ours {o:8.2f}"
    if d is not None:
        line += f"   docker {d:8.2f}   ratio {r:5.2f}"
    print(line, flush=True)


def report(fig: Paired, facts: dict, docker: bool, why_not: str | None) -> None:
    print(
        "\nAgainst Docker, "
        + (
            "measured in this run (paired rounds; ratio = median of per-round ours / Docker's)"
            if docker
            else f"NOT measured ({why_not}): the issue's reference figures (Docker 20.10 on this machine kind)"
        )
        + ":"
    )
    print(f"  {'figure':<30} {'ours':>9} {'Docker':>9} {'ratio':>6}  goal")
    for name, goal in GOALS.items():
        o = fig.median(name)
        if o is None:
            continue
        d = fig.median(name, theirs=True) if docker else DOCKER_REFERENCE.get(name)
        r = fig.ratio(name) if docker else (o / d if d else None)
        verdict = "" if r is None else f"<= {goal:g}: {'met' if r <= goal else 'NOT met'}"
        print(
            f"  {name:<30} {o:9.2f} {d if d is not None else float('nan'):9.2f} "
            f"{r if r is not None else float('nan'):6.2f}  {verdict}"
        )
    pss = fig.median("per-container PSS (MB)")
    if pss is not None:
        print(
            f"  {'per-container PSS <= 1.0 MB':<30} {pss:9.2f} {'':>9} {'':>6}  {'met' if pss <= PSS_GOAL_MB else 'NOT met'}"
        )
    for client, f in facts.get("round_trip", {}).items():
        if client != "net":
            print(
                f"  {'net ls -q vs ' + client:<30} {facts['round_trip']['net']['ms']:9.2f} {f['ms']:9.2f} "
                f"{f['ratio']:6.2f}  <= {CLI_GOAL:g}: {'met' if f['ratio'] <= CLI_GOAL else 'NOT met'}"
            )
    if "thousands" in facts:
        from bench.thousands import report as thousands_report

        thousands_report(facts["thousands"], fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 rounds, 20 detached containers")
    ap.add_argument("--no-docker", action="store_true", help="do not start dockerd; print the reference figures")
    ap.add_argument(
        "--thousands",
        nargs="?",
        type=int,
        const=2000,
        default=0,
        metavar="N",
        help="also start, list and remove N (2000) detached containers over two networks",
    )
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows under `| tee` too
    if os.geteuid() != 0:
        print("bench: run as root (it creates network namespaces)", file=sys.stderr)
        return 1
    runs = 5 if args.quick else int(os.environ.get("BENCH_RUNS", "15"))
    detached = 20 if args.quick else 100

    def on_term(signum, frame):  # SIGTERM unwinds like Ctrl-C: every `with` cleans up
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    t0, load0 = time.perf_counter(), os.getloadavg()
    fig, facts, why_not = Paired(), {}, None
    try:
        with DemoHost() as host:
            ours = OursSide(host)
            ours.cli("create", "--subnet", "10.250.0.0/20", "benchnet")
            ours.cli("create", "--subnet", "10.251.0.0/20", "benchnet2")
            dk_cm: DockerSide | None = None
            if args.no_docker:
                why_not = "--no-docker"
            else:
                try:
                    dk_cm = DockerSide().__enter__()
                    print(
                        f"Docker {dk_cm.version} in namespace {dk_cm.ns} (client {dk_cm.client}); ours in "
                        f"{host.ns}; load average {load0[0]:.1f}"
                    )
                except DockerUnusable as exc:
                    why_not = str(exc).splitlines()[0]
                    print(f"bench: Docker not measured: {exc}", file=sys.stderr)
            try:
                facts = measure(ours, dk_cm, runs, detached, fig)
                if args.thousands:
                    from bench.thousands import thousands

                    facts["thousands"] = thousands(ours, args.thousands, runs)
            finally:
                if dk_cm is not None:
                    dk_cm.__exit__()
    except KeyboardInterrupt:
        print("\nbench: interrupted (everything it made has been removed)", file=sys.stderr)
        return 130
    report(fig, facts, why_not is None, why_not)
    load1 = os.getloadavg()
    print(
        f"\n(bench/containers.py took {time.perf_counter() - t0:.0f} s; load average {load0[0]:.1f} before, "
        f"{load1[0]:.1f} after, on {os.cpu_count()} cores shared with other work)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
