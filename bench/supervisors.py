"""What a container's supervisor costs: memory (PSS) per supervisor at N = 1, 100 and 500
running containers, and start-up latency — against containerd-shim-runc-v2, Docker's
per-container supervisor, measured in the same run.

Ours: `cnm.runtime.Runtime` driven directly (no daemon, no CLI: only the supervisor's
cost is in the figures), containers `busybox sleep 3600` joined to one throwaway network
namespace. Memory is read from /proc/PID/smaps_rollup while all N run at once: PSS
divides each shared page between the processes mapping it, so it is the fair share of a
process in a set that shares pages (a supervisor forked from the template shares most
of its pages with the template and every other supervisor). Printed per supervisor
(median), for the template process, and in total (supervisors + template) / N.

Start-up:
- `Runtime.start()` of `busybox true` (the whole start: directory, supervisor, namespaces,
  exec; the container's own set-up included), median over runs;
- supervisor start-up alone: the round trip that makes a supervisor and gets its answer,
  without starting a container (`Template.probe()`), median;
- for comparison, measured here too: a fresh `python -I -S` interpreter importing the
  supervisor's modules (what each container paid before the template), median.

Docker (Debian's docker.io; a private dockerd, see bench/containers.py's DockerSide): the
same N of `sleep` containers, each shim's PSS from smaps_rollup at the same moment.

    python bench/supervisors.py [--quick] [--no-docker] [--docker-500] [--mounts 0,2000]

--mounts M1,M2,…: instead, what the daemon's sandbox mounts cost a start (counts may go
down again: 0,4000,0,4000 shows the machine's drift). The bench, in
a mount namespace of its own, bind-mounts one network namespace M times under a
`netns` directory (as a daemon with M sandboxes holds them), and times Runtime.start()
of `busybox true` at each M for two runtimes, interleaved: one told that directory is
where namespaces are mounted (containers' mount namespaces are made without them: the
design since the "O(N) mounts" fix), one not (each container copies every mount, as
before). Also the mounts each container's namespace holds.

--quick: N = 1 and 20, 10 runs per latency (for iterating). BENCH_RUNS overrides the
runs per latency (default 30). --docker-500 also measures Docker at 500 (about 3 min).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.docker_side import smaps
from cnm.runtime import ContainerSpec, Runtime
from cnm.runtime.runtime import remove_all

BB = "/bin/busybox"
GOAL_PSS_MB = 1.0  # per container, issue 10
GOAL_PSS_RATIO = 0.4  # of a containerd-shim's
GOAL_STARTUP_MS = 3.0


def mb(kb: float) -> float:
    return kb / 1024


def median_ms(xs: list[float]) -> float:
    return 1000 * statistics.median(xs)


def p90_ms(xs: list[float]) -> float:
    return 1000 * sorted(xs)[int(0.9 * (len(xs) - 1))]


class Ours:
    """A Runtime on a temporary state dir, containers in a throwaway network namespace."""

    def __init__(self) -> None:
        self.ns = f"cnmbench-sv-{secrets.token_hex(3)}"
        self.dir = tempfile.mkdtemp(prefix="cnmbench-sv-")
        self.rt: Runtime | None = None
        self.n = 0

    def __enter__(self) -> Ours:
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.rt = Runtime(os.path.join(self.dir, "containers"), cgroup_root=f"cnmbench-{self.ns}")
        return self

    def __exit__(self, *exc: object) -> None:
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            remove_all(os.path.join(self.dir, "containers"))
            if self.rt is not None and hasattr(self.rt, "close"):
                self.rt.close()
            subprocess.run(["ip", "netns", "del", self.ns], check=False)
            shutil.rmtree(self.dir, ignore_errors=True)
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def spec(self, cid: str, argv: list[str]) -> ContainerSpec:
        return ContainerSpec(id=cid, argv=argv, netns=f"/run/netns/{self.ns}")

    def start_latency(self, runs: int) -> list[float]:
        out = []
        for i in range(runs + 3):
            t = time.perf_counter()
            self.rt.start(self.spec(f"t{i}", [BB, "true"]))
            dt = time.perf_counter() - t
            self.rt.wait(f"t{i}", 10)
            self.rt.remove(f"t{i}")
            if i >= 3:  # the first ones warm caches (and start the template)
                out.append(dt)
        return out

    def probe_latency(self, runs: int) -> list[float] | None:
        template = getattr(self.rt, "template", None)
        if template is None:
            return None
        template.probe()
        out = []
        for _ in range(runs):
            t = time.perf_counter()
            template.probe()
            out.append(time.perf_counter() - t)
        return out

    def grow_to(self, n: int) -> float:
        t = time.perf_counter()
        while self.n < n:
            self.rt.start(self.spec(f"s{self.n}", [BB, "sleep", "3600"]))
            self.n += 1
        return time.perf_counter() - t

    def supervisor_pids(self) -> list[int]:
        out = []
        cdir = os.path.join(self.dir, "containers")
        for name in os.listdir(cdir):
            try:
                with open(os.path.join(cdir, name, "state.json")) as f:
                    out.append(int(json.load(f)["shim_pid"]))
            except (OSError, ValueError, KeyError):
                continue
        return out

    def template_pid(self) -> int | None:
        template = getattr(self.rt, "template", None)
        return template.pid if template is not None else None

    def memory(self) -> dict:
        sups = [smaps(p) for p in self.supervisor_pids()]
        sups = [s for s in sups if s]
        tpid = self.template_pid()
        tmpl = smaps(tpid) if tpid else {}
        total_pss = sum(s["Pss"] for s in sups) + tmpl.get("Pss", 0)
        return {
            "n": len(sups),
            "pss_each": statistics.median(s["Pss"] for s in sups),
            "rss_each": statistics.median(s["Rss"] for s in sups),
            "private_dirty_each": statistics.median(s.get("Private_Dirty", 0) for s in sups),
            "template_pss": tmpl.get("Pss", 0),
            "template_rss": tmpl.get("Rss", 0),
            "per_container": total_pss / max(1, len(sups)),
        }


def startup_ms(runs: int) -> float | None:
    """Median supervisor start-up (Template.probe, ms) of a Runtime of our own, on this
    machine as it is now (bench/containers.py --thousands: at 0 and at 2,000 containers)."""
    with Ours() as ours:
        probes = ours.probe_latency(runs)
    return median_ms(probes) if probes else None


def fresh_interpreter_latency(runs: int) -> tuple[list[float], dict]:
    """The pre-template design's per-container cost: a new `python -I -S` importing the
    supervisor's modules (timed to exit), and its memory while it idles."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    boot = f"import sys; sys.path.insert(0, {root!r}); import cnm.runtime.shim"
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-S", "-c", boot], check=True)
        out.append(time.perf_counter() - t)
    p = subprocess.Popen([sys.executable, "-I", "-S", "-c", boot + "; import time; time.sleep(30)"])
    time.sleep(0.5)
    mem = smaps(p.pid)
    p.kill()
    p.wait()
    return out, mem


def measure_ours(runs: int, sizes: tuple[int, ...]) -> dict:
    res: dict = {"mem": {}}
    with Ours() as ours:
        starts = ours.start_latency(runs)
        res["start_ms"] = median_ms(starts)
        print(
            f"Runtime.start() of busybox true: median {median_ms(starts):.1f} ms (p90 {p90_ms(starts):.1f} ms, "
            f"{runs} runs)"
        )
        probes = ours.probe_latency(runs)
        res["probe_ms"] = median_ms(probes) if probes else None
        if probes:
            print(
                f"supervisor start-up alone (Template.probe: make a supervisor, get its answer): "
                f"median {median_ms(probes):.2f} ms (p90 {p90_ms(probes):.2f} ms)"
            )
        else:
            print("supervisor start-up alone: no template in this runtime (a fresh interpreter per container)")
        for n in sizes:
            dt = ours.grow_to(n)
            m = res["mem"][n] = ours.memory()
            print(
                f"N={n}: {m['n']} supervisors; each PSS {m['pss_each']:.0f} kB, RSS {m['rss_each']:.0f} kB, "
                f"private dirty {m['private_dirty_each']:.0f} kB (medians); template PSS "
                f"{m['template_pss']:.0f} kB (RSS {m['template_rss']:.0f} kB); (supervisors + template) / N = "
                f"{m['per_container']:.0f} kB a container  [started in {dt:.1f} s]"
            )
            # Start-up with N running: does making a supervisor or a start grow with N?
            at_n = [ours.probe_latency(runs) or [], ours.start_latency(runs)]
            m["probe_ms"], m["start_ms"] = (median_ms(x) if x else None for x in at_n)
            print(
                f"    with {n} running: supervisor start-up median "
                f"{m['probe_ms'] if m['probe_ms'] is None else round(m['probe_ms'], 2)} ms, Runtime.start() "
                f"median {m['start_ms']:.1f} ms; load {os.getloadavg()[0]:.1f}"
            )
    fresh, fmem = fresh_interpreter_latency(runs)
    res["fresh_ms"] = median_ms(fresh)
    print(
        f"a fresh `python -I -S` importing the supervisor (the design before the template): median "
        f"{median_ms(fresh):.1f} ms to exit; idle RSS {fmem.get('Rss', 0)} kB, PSS {fmem.get('Pss', 0)} kB"
    )
    return res


def measure_mounts(runs: int, counts: list[int]) -> dict:
    """Runtime.start() of `busybox true` at each count of sandbox mounts, with and without
    the namespace directory left out of containers' mounts; medians in ms."""
    from cnm.runtime import linux

    linux.unshare(linux.CLONE_NEWNS)  # our mounts vanish with us
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_SLAVE)
    res: dict = {}
    with Ours() as ours:
        nsdir = os.path.join(ours.dir, "netns")
        fixed = Runtime(os.path.join(ours.dir, "fixed"), cgroup_root=f"cnmbench-{ours.ns}-f", namespace_dirs=(nsdir,))
        made = 0
        try:
            for m in counts:
                while made < m:
                    target = os.path.join(nsdir, f"sb{made}")
                    open(target, "w").close()
                    linux.mount(f"/run/netns/{ours.ns}", target, None, linux.MS_BIND)
                    made += 1
                while made > m:  # counts may go down again (0,4000,0: drift shows)
                    made -= 1
                    linux.umount2(os.path.join(nsdir, f"sb{made}"), linux.MNT_DETACH)
                times: dict[str, list[float]] = {"fixed": [], "copying": []}
                mounts: dict[str, int] = {}
                for i in range(runs + 2):
                    for name, rt in (("fixed", fixed), ("copying", ours.rt)):
                        cid = f"m{m}-{i}"
                        spec = ours.spec(cid, [BB, "sleep", "5"])
                        t = time.perf_counter()
                        st = rt.start(spec)
                        dt = time.perf_counter() - t
                        with open(f"/proc/{st.pid}/mountinfo") as f:
                            mounts[name] = sum(1 for _ in f)
                        rt.remove(cid, force=True)
                        if i >= 2:
                            times[name].append(dt)
                res[m] = {k: median_ms(v) for k, v in times.items()}
                print(
                    f"M={m} sandbox mounts: Runtime.start() median {res[m]['fixed']:.1f} ms without them in "
                    f"containers' namespaces ({mounts['fixed']} mounts each), {res[m]['copying']:.1f} ms copying "
                    f"them ({mounts['copying']} mounts each); {runs} runs each, interleaved; load "
                    f"{os.getloadavg()[0]:.1f}"
                )
        finally:
            remove_all(os.path.join(ours.dir, "fixed"))
            fixed.close()
    return res


def measure_docker(sizes: tuple[int, ...]) -> dict:
    from bench.docker_side import DockerSide, DockerUnusable

    res: dict = {}
    try:
        with DockerSide() as dk:
            version = dk.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
            print(f"\nDocker {version} (private dockerd in namespace {dk.ns}):")
            have = 0
            for n in sizes:
                t = time.perf_counter()
                while have < n:
                    dk.docker("run", "-d", "--net", "bnet", "--name", f"sv{have}", dk.image, "sleep", "3600")
                    have += 1
                dt = time.perf_counter() - t
                shims = [s for s in (smaps(p) for p in dk.shim_pids()) if s]
                res[n] = {
                    "n": len(shims),
                    "pss_each": statistics.median(s["Pss"] for s in shims),
                    "rss_each": statistics.median(s["Rss"] for s in shims),
                    "per_container": sum(s["Pss"] for s in shims) / max(1, len(shims)),
                }
                r = res[n]
                print(
                    f"N={n}: {r['n']} containerd-shim-runc-v2; each PSS {r['pss_each']:.0f} kB, RSS "
                    f"{r['rss_each']:.0f} kB (medians); total / N = {r['per_container']:.0f} kB  "
                    f"[started in {dt:.1f} s]"
                )
            ids = dk.docker("ps", "-aq").stdout.split()
            for chunk in range(0, len(ids), 50):
                dk.docker("rm", "-f", *ids[chunk : chunk + 50], timeout=300)
    except DockerUnusable as exc:
        print(f"\nDocker not measured: {exc}")
        return {}
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 1 and 20, 10 runs per latency")
    ap.add_argument("--no-docker", action="store_true", help="do not start dockerd")
    ap.add_argument("--docker-500", action="store_true", help="also measure Docker at N = 500")
    ap.add_argument("--mounts", metavar="M1,M2", help="the cost of M sandbox mounts to a start (see above)")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    if os.geteuid() != 0:
        print("bench: run as root (it creates namespaces and containers)", file=sys.stderr)
        return 1
    runs = 10 if args.quick else int(os.environ.get("BENCH_RUNS", "30"))
    sizes = (1, 20) if args.quick else (1, 100, 500)
    docker_sizes = (1, 20) if args.quick else ((1, 100, 500) if args.docker_500 else (1, 100))

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    t0 = time.perf_counter()
    if args.mounts:
        try:
            measure_mounts(runs, [int(x) for x in args.mounts.split(",")])
        except KeyboardInterrupt:
            return 130
        print(f"(bench/supervisors.py took {time.perf_counter() - t0:.0f} s; other helpers share this machine)")
        return 0
    try:
        ours = measure_ours(runs, sizes)
        docker = {} if args.no_docker else measure_docker(docker_sizes)
    except KeyboardInterrupt:
        print("\nbench: interrupted (everything it made has been removed)", file=sys.stderr)
        return 130
    print("\nSummary (kB; ratio = ours / Docker's, same run):")
    for n in sizes:
        o = ours["mem"][n]
        line = (
            f"  N={n:<4} ours: {o['pss_each']:6.0f} PSS per supervisor, {o['per_container']:6.0f} with the "
            f"template's share"
        )
        d = docker.get(n)
        if d:
            ratio = o["per_container"] / d["per_container"]
            line += (
                f"   containerd-shim: {d['per_container']:6.0f}   ratio {ratio:4.2f} (goal <= {GOAL_PSS_RATIO:g}: "
                f"{'met' if ratio <= GOAL_PSS_RATIO else 'NOT met'})"
            )
        ok = mb(o["per_container"]) <= GOAL_PSS_MB
        print(line + f"   goal <= {GOAL_PSS_MB:g} MB: {'met' if ok else 'NOT met'}")
    if ours.get("probe_ms") is not None:
        print(
            f"  supervisor start-up {ours['probe_ms']:.2f} ms (goal <= {GOAL_STARTUP_MS:g}: "
            f"{'met' if ours['probe_ms'] <= GOAL_STARTUP_MS else 'NOT met'}); a fresh interpreter "
            f"{ours['fresh_ms']:.1f} ms; whole Runtime.start() {ours['start_ms']:.1f} ms"
        )
    else:
        print(
            f"  supervisor start-up: a fresh interpreter, {ours['fresh_ms']:.1f} ms; whole Runtime.start() "
            f"{ours['start_ms']:.1f} ms"
        )
    print(f"(bench/supervisors.py took {time.perf_counter() - t0:.0f} s; other helpers share this machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
