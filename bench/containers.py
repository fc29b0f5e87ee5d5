"""Container lifecycle figures on this machine, each a median over repeated runs:

- `net run --rm --net N true` latency (CLI to exit code, attached)
- 100 and 500 detached containers on one network: total time, daemon RSS, supervisor RSS
- `net connect` / `net disconnect` latency

Ours: a daemon in a throwaway network namespace (cnm.demo.DemoHost).

Docker, in the same run, where a Docker engine can run here (Debian's docker.io: see
tests/integration/dockerd.py): a private dockerd (its own containerd, data and exec roots,
--bridge=none --iptables=false) in a throwaway network namespace of its own, a user network
of Docker's built-in bridge driver (`docker network create -d bridge --subnet 10.88.0.0/16
bnet`) and the same figures measured with /usr/bin/docker (the 20.10 client), then printed
as ratios ours / Docker's. Docker's detached figure is measured at 100 containers only
(about 0.25 s each here; --docker-500 adds 500). Everything Docker made is removed
afterwards, on errors and Ctrl-C too. Where dockerd cannot start (or with --no-docker) the
reference figures from the project's issue are printed instead, labelled as such.

    python bench/containers.py [--quick] [--no-docker] [--docker-500]

--quick: 5 runs per latency and 20 detached containers (for iterating; the figures are
not the benchmark's). BENCH_RUNS overrides the number of runs (default 15).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cnm.demo import BB, DemoHost

# The reference figures: Docker 28 on this 2-core machine kind, not measured here.
DOCKER_REFERENCE = {"run --rm (ms)": 345, "100 detached (s)": 27, "connect (ms)": 37,
                    "disconnect (ms)": 54, "daemon RSS after 100 (MB)": 109}
GOAL = 0.25          # ours / Docker's, for the time figures
CLI_GOAL = 1.5       # net / docker client, one API round trip on the same daemon (bench/cli.py)


def timed(host: DemoHost, *args: str) -> float:
    t = time.perf_counter()
    r = host.net(*args, quiet=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"bench: net {' '.join(args)} failed: {r.stderr}")
    return dt


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def daemon_pid(host: DemoHost) -> int:
    # `ip netns exec` execs the daemon in place: the Popen pid is the daemon's.
    return host.proc.pid


def shim_pids(host: DemoHost) -> list[int]:
    out = []
    cdir = host.dir / "run" / "containers"
    for name in os.listdir(cdir):
        try:
            state = json.loads((cdir / name / "state.json").read_text())
            out.append(int(state["shim_pid"]))
        except (OSError, ValueError, KeyError):
            continue
    return out


def template_pids(host: DemoHost) -> list[int]:
    """The daemon's supervisor template process (its child named cnm-template): the
    supervisors share its memory, so its PSS counts with theirs."""
    out = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        st = _proc_stat(int(entry))
        try:
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if st and st[0] == daemon_pid(host) and comm == "cnm-template":
            out.append(int(entry))
    return out


def detached(host: DemoHost, n: int) -> dict:
    t = time.perf_counter()
    for i in range(n):
        timed(host, "run", "-d", "--net", "benchnet", "--name", f"c{n}-{i}", BB, "sleep", "3600")
    total = time.perf_counter() - t
    shims = shim_pids(host)
    fig = {"total (s)": total, "per container (ms)": 1000 * total / n,
           "daemon RSS (MB)": rss_kb(daemon_pid(host)) / 1024,
           "supervisors": len(shims),
           "supervisor RSS each (MB, median)": statistics.median(rss_kb(p) for p in shims) / 1024 if shims else 0,
           "supervisor PSS total (MB)": sum(pss_kb(p) for p in shims + template_pids(host)) / 1024}
    ids = host.net("ps", "-q", quiet=True).stdout.split()
    for chunk in range(0, len(ids), 50):
        host.net("container", "rm", "-f", *ids[chunk:chunk + 50], quiet=True)
    return fig


def median_ms(xs: list[float]) -> float:
    return 1000 * statistics.median(xs)


def p90_ms(xs: list[float]) -> float:
    return 1000 * sorted(xs)[int(0.9 * len(xs))]


def measure_ours(runs: int, sizes: tuple[int, ...]) -> dict:
    with DemoHost() as host:
        host.net("create", "--subnet", "10.250.0.0/20", "benchnet", quiet=True)
        for _ in range(3):   # warm caches
            timed(host, "run", "--rm", "--net", "benchnet", BB, "true")
        run_ms = [1000 * timed(host, "run", "--rm", "--net", "benchnet", BB, "true") for _ in range(runs)]
        print(f"net run --rm --net N true: median {statistics.median(run_ms):.1f} ms "
              f"(p90 {sorted(run_ms)[int(0.9 * len(run_ms))]:.1f} ms, {runs} runs)")

        host.net("create", "benchnet2", quiet=True)
        host.net("run", "-d", "--name", "cc", "--net", "benchnet", BB, "sleep", "3600", quiet=True)
        conn, disc = [], []
        for _ in range(runs):
            conn.append(1000 * timed(host, "connect", "benchnet2", "cc"))
            disc.append(1000 * timed(host, "disconnect", "benchnet2", "cc"))
        host.net("container", "rm", "-f", "cc", quiet=True)
        print(f"net connect: median {statistics.median(conn):.1f} ms; "
              f"net disconnect: median {statistics.median(disc):.1f} ms")

        figs = {}
        for n in sizes:
            figs[n] = detached(host, n)
            f = figs[n]
            print(f"{n} detached containers: {f['total (s)']:.1f} s total "
                  f"({f['per container (ms)']:.1f} ms each); daemon RSS {f['daemon RSS (MB)']:.1f} MB; "
                  f"{f['supervisors']} supervisors, {f['supervisor RSS each (MB, median)']:.1f} MB RSS each, "
                  f"{f['supervisor PSS total (MB)']:.0f} MB PSS in all")

        # One CLI call with one API round trip and no container work (the floor under every
        # figure above), against Docker's own clients on this same daemon, paired and
        # interleaved (bench/cli.py has every command).
        from bench.cli import round_trip
        rt = round_trip(str(host.sock), runs)
        print("net ls -q against docker network ls -q on this daemon: "
              + "; ".join(f"{c} {f['ms']:.1f} ms ({f['cpu']:.1f} ms CPU)" + ("" if c == "net" else
                          f", ratio {f['ratio']:.2f}") for c, f in rt.items()))
    return {"run_ms": run_ms, "conn": conn, "disc": disc, "figs": figs, "ls_ms": rt["net"]["ms"], "round_trip": rt}


# -- Docker, measured in the same run ---------------------------------------------------

class DockerUnusable(Exception):
    """Docker cannot be measured here; the message says why (for the fallback's label)."""


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(ppid, CPU seconds user+system) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores; not idle, not iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class DockerSide:
    """A private dockerd in a throwaway network namespace, with two user networks of
    Docker's built-in bridge driver. A context manager: leaving it (error, Ctrl-C,
    SIGTERM) tears the engine down and deletes the namespace."""

    def __init__(self) -> None:
        self.ns = f"cnmbench-dk-{secrets.token_hex(3)}"
        self.engine = None
        self.ns_made = False

    def __enter__(self) -> DockerSide:
        from tests.integration.dockerd import DockerEngine, DockerUnavailable, unavailable_reason
        reason = unavailable_reason()
        if reason:
            raise DockerUnusable(reason)
        try:
            subprocess.run(["ip", "netns", "add", self.ns], check=True, capture_output=True)
            self.ns_made = True
            subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True, capture_output=True)
            self.engine = DockerEngine(self.ns)
            try:
                self.engine.start()
            except DockerUnavailable as exc:
                raise DockerUnusable(f"dockerd cannot start here: {exc}") from None
            # Under --iptables=false the bridge driver skips its NAT/isolation chains (nothing
            # here needs them: the benchmark never leaves the namespace); the embedded DNS
            # still sets its DNAT rules, inside each container's own namespace.
            for name, subnet in (("bnet", "10.88.0.0/16"), ("bnet2", "10.89.0.0/16")):
                r = self.docker("network", "create", "-d", "bridge", "--subnet", subnet, name, check=False)
                if r.returncode != 0:
                    raise DockerUnusable(f"Docker's built-in bridge driver cannot be used here "
                                         f"(--bridge=none --iptables=false): {r.stderr.strip()}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        # Not to be cut short by a second Ctrl-C: half a teardown leaks a dockerd.
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            if self.engine is not None:
                try:
                    self.engine.teardown()
                except RuntimeError as err:
                    print(f"bench: {err}", file=sys.stderr)
            if self.ns_made:
                subprocess.run(["ip", "netns", "del", self.ns], check=False, capture_output=True)
                self.ns_made = False
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.engine.docker(*args, check=check, timeout=timeout)

    def timed(self, *args: str) -> float:
        t = time.perf_counter()
        self.docker(*args)
        return time.perf_counter() - t

    # -- processes --------------------------------------------------------------------

    def dockerd_pid(self) -> int:
        # unshare and sh exec in place, nsenter --net too: the Popen pid is dockerd's.
        return self.engine.proc.pid

    def containerd_pid(self) -> int | None:
        marker = f"--config {self.engine.exec_root}/"
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                st = _proc_stat(int(entry))
                if st and st[0] == self.dockerd_pid() and marker in _cmdline(int(entry)):
                    return int(entry)
        return None

    def shim_pids(self) -> list[int]:
        """containerd-shim-runc-v2 of this engine (one per container; they daemonize, so
        found by the containerd address in their command line, not by ancestry)."""
        marker = f"-address {self.engine.exec_root}/"
        return [int(e) for e in os.listdir("/proc") if e.isdigit()
                and "containerd-shim" in (c := _cmdline(int(e))) and marker in c]

    def cpu_s(self, pids: list[int]) -> float:
        return sum(st[1] for p in pids if (st := _proc_stat(p)))

    # -- figures ----------------------------------------------------------------------

    def run_rm(self, runs: int) -> list[float]:
        for _ in range(3):   # warm caches
            self.timed("run", "--rm", "--net", "bnet", self.image, "true")
        return [self.timed("run", "--rm", "--net", "bnet", self.image, "true") for _ in range(runs)]

    def connect_disconnect(self, runs: int) -> tuple[list[float], list[float]]:
        self.docker("run", "-d", "--name", "cc", "--net", "bnet", self.image, "sleep", "1000")
        conn, disc = [], []
        for _ in range(runs):
            conn.append(self.timed("network", "connect", "bnet2", "cc"))
            disc.append(self.timed("network", "disconnect", "bnet2", "cc"))
        self.docker("rm", "-f", "cc")
        return conn, disc

    def detached(self, n: int) -> dict:
        daemons = [self.dockerd_pid(), self.containerd_pid()]
        before = {"dockerd": rss_kb(daemons[0]) / 1024, "containerd": rss_kb(daemons[1]) / 1024}
        cpu0, busy0 = self.cpu_s(daemons), machine_busy_s()
        t = time.perf_counter()
        for i in range(n):
            self.docker("run", "-d", "--net", "bnet", "--name", f"d{n}-{i}", self.image, "sleep", "1000")
        total = time.perf_counter() - t
        busy = machine_busy_s() - busy0
        shims = self.shim_pids()
        fig = {"total (s)": total, "per container (ms)": 1000 * total / n,
               "dockerd RSS (MB)": rss_kb(daemons[0]) / 1024,
               "containerd RSS (MB)": rss_kb(daemons[1]) / 1024,
               "RSS before (MB)": before,
               "machine CPU (s)": busy,
               "daemon CPU (s)": self.cpu_s(daemons) - cpu0,
               "shim CPU (s)": self.cpu_s(shims),
               "shims": len(shims),
               "shim RSS each (MB, median)": statistics.median(rss_kb(p) for p in shims) / 1024 if shims else 0,
               "shim PSS total (MB)": sum(pss_kb(p) for p in shims) / 1024}
        fig["daemon RSS (MB)"] = fig["dockerd RSS (MB)"] + fig["containerd RSS (MB)"]
        t = time.perf_counter()
        ids = self.docker("ps", "-aq").stdout.split()
        for chunk in range(0, len(ids), 50):
            self.docker("rm", "-f", *ids[chunk:chunk + 50], timeout=300)
        fig["rm -f all (s)"] = time.perf_counter() - t
        return fig

    def breakdown(self, runs: int) -> dict:
        """Where `docker run --rm` spends its time: the client alone, one API round trip,
        and run --rm with no network namespace (--net host), with an empty one (--net
        none: the sandbox, made by runc's prestart hook `dockerd libnetwork-setkey`) and
        on the bridge network (veth pair, address, and the embedded DNS resolver, whose
        DNAT rules are set with iptables in the container's namespace even under
        --iptables=false)."""
        steps = {"client only (docker --version)": [], "API round trip (docker network ls -q)": [],
                 "run --rm --net host": [], "run --rm --net none": [], "run --rm --net bnet": []}
        for _ in range(runs):
            t = time.perf_counter()
            subprocess.run([self.engine_docker, "--version"], capture_output=True, check=True)
            steps["client only (docker --version)"].append(time.perf_counter() - t)
            steps["API round trip (docker network ls -q)"].append(self.timed("network", "ls", "-q"))
            for net in ("host", "none", "bnet"):
                steps[f"run --rm --net {net}"].append(self.timed("run", "--rm", "--net", net, self.image, "true"))
        return {k: median_ms(v) for k, v in steps.items()}

    @property
    def image(self) -> str:
        from tests.integration.dockerd import IMAGE
        return IMAGE

    @property
    def engine_docker(self) -> str:
        from tests.integration.dockerd import DOCKER
        return DOCKER


def measure_docker(runs: int, sizes: tuple[int, ...]) -> dict:
    with DockerSide() as dk:
        version = dk.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        print(f"\nDocker {version} (private dockerd in namespace {dk.ns}; user network of the "
              f"built-in bridge driver, --iptables=false; client {dk.engine_docker}):")
        run_s = dk.run_rm(runs)
        print(f"docker run --rm --net bnet IMAGE true: median {median_ms(run_s):.1f} ms "
              f"(p90 {p90_ms(run_s):.1f} ms, {runs} runs)")
        conn, disc = dk.connect_disconnect(runs)
        print(f"docker network connect: median {median_ms(conn):.1f} ms; "
              f"docker network disconnect: median {median_ms(disc):.1f} ms")
        figs = {}
        for n in sizes:
            figs[n] = f = dk.detached(n)
            print(f"{n} detached containers: {f['total (s)']:.1f} s total ({f['per container (ms)']:.1f} ms each); "
                  f"dockerd+containerd RSS {f['daemon RSS (MB)']:.1f} MB ({f['dockerd RSS (MB)']:.1f} + "
                  f"{f['containerd RSS (MB)']:.1f}; before them {f['RSS before (MB)']['dockerd']:.1f} + "
                  f"{f['RSS before (MB)']['containerd']:.1f}); {f['shims']} shims, "
                  f"{f['shim RSS each (MB, median)']:.1f} MB RSS each, {f['shim PSS total (MB)']:.0f} MB PSS in all")
            print(f"  CPU while starting them: the machine {f['machine CPU (s)']:.1f} s of "
                  f"{os.cpu_count() * f['total (s)']:.0f} s ({os.cpu_count()} cores), of which dockerd+containerd "
                  f"{f['daemon CPU (s)']:.1f} s, shims {f['shim CPU (s)']:.1f} s (the rest: the clients, runc, "
                  f"dockerd's re-execs, iptables); removing them all (docker rm -f): {f['rm -f all (s)']:.1f} s")
        bd = dk.breakdown(max(5, runs // 2))
        print("where docker run --rm's time goes (medians): "
              + "; ".join(f"{k} {v:.1f} ms" for k, v in bd.items()))
    return {"run_ms": [1000 * x for x in run_s], "conn": [1000 * x for x in conn],
            "disc": [1000 * x for x in disc], "figs": figs, "ls_ms": bd["API round trip (docker network ls -q)"]}


# -- the comparison ---------------------------------------------------------------------

def compare(ours: dict, docker: dict | None, n: int, why_not: str | None) -> None:
    of = ours["figs"][n]
    rows = [("run --rm (ms)", statistics.median(ours["run_ms"]), True),
            (f"{n} detached (s)", of["total (s)"], True),
            ("connect (ms)", statistics.median(ours["conn"]), True),
            ("disconnect (ms)", statistics.median(ours["disc"]), True),
            (f"daemon RSS after {n} (MB)", of["daemon RSS (MB)"], False),
            ("per-container RSS (MB)", of["supervisor RSS each (MB, median)"], False),
            (f"all {n} containers' PSS (MB)", of["supervisor PSS total (MB)"], False)]
    if docker is not None:
        df = docker["figs"][n]
        theirs = {"run --rm (ms)": statistics.median(docker["run_ms"]), f"{n} detached (s)": df["total (s)"],
                  "connect (ms)": statistics.median(docker["conn"]),
                  "disconnect (ms)": statistics.median(docker["disc"]),
                  f"daemon RSS after {n} (MB)": df["daemon RSS (MB)"],
                  "per-container RSS (MB)": df["shim RSS each (MB, median)"],
                  f"all {n} containers' PSS (MB)": df["shim PSS total (MB)"]}
        print(f"\nAgainst Docker, measured in this run (ratio = ours / Docker's; goal for the times: "
              f"<= {GOAL:g}). Docker's daemon RSS is dockerd + containerd, its per-container "
              f"RSS/PSS a containerd-shim-runc-v2's (ours: a supervisor's):")
    else:
        theirs = DOCKER_REFERENCE
        print(f"\nAgainst Docker (goal for the times: <= {GOAL:g} of Docker's): NOT measured in this run "
              f"({why_not}); REFERENCE figures from the issue (Docker 28 on this 2-core machine kind):")
    for key, value, goal in rows:
        ref = theirs.get(key)
        if ref is None:
            continue
        ratio = value / ref if ref else float("inf")
        verdict = f"goal <= {GOAL:g}: {'met' if ratio <= GOAL else 'NOT met'}" if goal else ""
        label = "docker" if docker is not None else "ref."
        print(f"  {key:<28} ours {value:8.1f}   {label} {ref:8.1f}   ratio {ratio:5.2f}   {verdict}".rstrip())
    for client, f in ours["round_trip"].items():
        if client != "net":
            verdict = f"goal <= {CLI_GOAL:g}: {'met' if f['ratio'] <= CLI_GOAL else 'NOT met'}"
            print(f"  {'net ls -q vs ' + client:<28} ours {ours['ls_ms']:8.1f}   same daemon {f['ms']:5.1f}   "
                  f"ratio {f['ratio']:5.2f}   {verdict}")
    if docker is not None:
        print(f"  (docker network ls -q against Docker's own daemon: {docker['ls_ms']:.1f} ms)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 runs per latency, 20 detached containers")
    ap.add_argument("--no-docker", action="store_true", help="do not start dockerd; print the reference figures")
    ap.add_argument("--docker-500", action="store_true", help="also measure 500 detached containers on Docker")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)     # progress shows under `| tee` too
    if os.geteuid() != 0:
        print("bench: run as root (it creates network namespaces)", file=sys.stderr)
        return 1
    runs = 5 if args.quick else int(os.environ.get("BENCH_RUNS", "15"))
    sizes = (20,) if args.quick else (100, 500)
    docker_sizes = (20,) if args.quick else ((100, 500) if args.docker_500 else (100,))

    def on_term(signum, frame):     # SIGTERM unwinds like Ctrl-C: every `with` cleans up
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    t0 = time.perf_counter()
    try:
        return run(args, runs, sizes, docker_sizes, t0)
    except KeyboardInterrupt:
        print("\nbench: interrupted (everything it made has been removed)", file=sys.stderr)
        return 130


def run(args: argparse.Namespace, runs: int, sizes: tuple[int, ...], docker_sizes: tuple[int, ...],
        t0: float) -> int:
    ours = measure_ours(runs, sizes)
    docker, why_not = None, None
    if args.no_docker:
        why_not = "--no-docker"
    else:
        try:
            docker = measure_docker(runs, docker_sizes)
        except DockerUnusable as exc:
            why_not = str(exc).splitlines()[0]
            print(f"\nbench: Docker not measured: {exc}", file=sys.stderr)
        except Exception as exc:     # our figures stand; the engine is already torn down
            why_not = f"the Docker measurement failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            print(f"\nbench: {why_not}\n{exc}", file=sys.stderr)
    compare(ours, docker, sizes[0], why_not)
    if docker is not None and 500 in sizes and 500 not in docker_sizes:
        per = docker["figs"][docker_sizes[0]]["per container (ms)"]
        print(f"  (Docker measured at {docker_sizes[0]} detached only: {per:.0f} ms a container here, so 500 "
              f"would add ~{(500 * per / 1000 + 40) / 60:.0f} min with their removal; --docker-500 measures it)")
    if docker is not None and 500 in docker["figs"] and 500 in ours["figs"]:
        o, d = ours["figs"][500], docker["figs"][500]
        print(f"  {'500 detached (s)':<28} ours {o['total (s)']:8.1f}   docker {d['total (s)']:8.1f}   "
              f"ratio {o['total (s)'] / d['total (s)']:5.2f}   goal <= {GOAL:g}: "
              f"{'met' if o['total (s)'] / d['total (s)'] <= GOAL else 'NOT met'}")
        print(f"  {'daemon RSS after 500 (MB)':<28} ours {o['daemon RSS (MB)']:8.1f}   docker "
              f"{d['daemon RSS (MB)']:8.1f}   ratio {o['daemon RSS (MB)'] / d['daemon RSS (MB)']:5.2f}")
    print(f"\n(bench/containers.py took {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
