"""`net` against Docker's Go client, command by command, on the SAME daemon (ours).

Needs root: a private daemon runs in a throwaway network namespace (cnm.demo.DemoHost,
removed afterwards). Each command that makes one API round trip is run by

    net            .venv/bin/net as scripts/setup.sh writes it (python -IS, cnm.cli.launcher)
    net (pip)      the console script pip writes (a normal interpreter start, with site)
    docker 20.10   /usr/bin/docker -H unix://<our socket> …   (Debian's docker.io)
    docker 28      /usr/local/bin/docker -H unix://<our socket> …

paired and interleaved: every round runs each command once with each client, in an
order that rotates from round to round, so a machine that slows down (other helpers
share these 2 cores) slows all of them alike. Printed: the median wall time of each
(ms), the median of the per-round ratios net / docker (the goal: <= 1.5), CPU time
(user+system of the finished process, from wait4) and what the daemon itself spends on
the same API call (a raw HTTP request from this warm process: the floor under every
client). On a busy machine the medians mostly measure the scheduler: the "best wall"
table (each client's least disturbed run) and the CPU table are then the ones to read. PYTHONDONTWRITEBYTECODE is removed from the clients' environment (users have
cached bytecode).

    sudo .venv/bin/python bench/cli.py [--runs 21] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnm.api.transport import UnixSocketTransport
from cnm.demo import BB, NET, DemoHost

DOCKERS = {"docker 20.10": "/usr/bin/docker", "docker 28": "/usr/local/bin/docker"}
GOAL = 1.5
PIP_SCRIPT = "#!{python}\nimport sys\nfrom cnm.cli.entry import main\nsys.exit(main())\n"


class Clients:
    """The CLIs under test, each with its argv prefix and environment."""

    def __init__(self, sock: str, workdir: str) -> None:
        host = f"unix://{sock}"
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("DOCKER_")}
        pip_net = os.path.join(workdir, "net-pip")
        with open(pip_net, "w") as f:
            f.write(PIP_SCRIPT.format(python=sys.executable))
        os.chmod(pip_net, 0o755)
        docker_env = dict(env, DOCKER_CONFIG=os.path.join(workdir, "docker-config"), DOCKER_CLI_HINTS="false")
        os.makedirs(docker_env["DOCKER_CONFIG"], exist_ok=True)
        self.argv = {"net": [NET, "-H", host], "net (pip)": [pip_net, "-H", host]}
        self.env = {"net": env, "net (pip)": env}
        for name, path in DOCKERS.items():
            if os.access(path, os.X_OK):
                self.argv[name] = [path, "-H", host]
                self.env[name] = docker_env
        self.docker = [n for n in self.argv if n.startswith("docker")]

    def run(self, client: str, args: list[str]) -> tuple[float, float, str]:
        """(wall s, CPU s, stdout) of one command; raises if it fails."""
        with tempfile.TemporaryFile() as err:
            t = time.perf_counter()
            p = subprocess.Popen(self.argv[client] + args, env=self.env[client], stdout=subprocess.PIPE, stderr=err)
            assert p.stdout is not None
            out = p.stdout.read()  # until EOF; reaped below, with its rusage
            _, status, usage = os.wait4(p.pid, 0)
            wall = time.perf_counter() - t
            p.stdout.close()
            p.returncode = os.waitstatus_to_exitcode(status)
            if p.returncode != 0:
                err.seek(0)
                raise RuntimeError(f"{client} {' '.join(args)}: exit {p.returncode}: {err.read().decode().strip()}")
        return wall, usage.ru_utime + usage.ru_stime, out.decode()


class Figures:
    def __init__(self) -> None:
        self.wall: dict[tuple[str, str], list[float]] = {}
        self.cpu: dict[tuple[str, str], list[float]] = {}
        self.rounds: dict[tuple[str, str], list[int]] = {}

    def add(self, command: str, client: str, rnd: int, wall: float, cpu: float) -> None:
        for store, value in ((self.wall, wall), (self.cpu, cpu), (self.rounds, rnd)):
            store.setdefault((command, client), []).append(value)  # type: ignore[arg-type]

    def median(self, command: str, client: str, cpu: bool = False) -> float | None:
        values = (self.cpu if cpu else self.wall).get((command, client))
        return 1000 * statistics.median(values) if values else None

    def best(self, command: str, client: str) -> float | None:
        """The least disturbed run's wall time (on a shared machine, the nearest to the
        command's own cost)."""
        values = self.wall.get((command, client))
        return 1000 * min(values) if values else None

    def ratio(self, command: str, a: str, b: str) -> float | None:
        """The median over rounds of a's time / b's time in the same round."""
        wa = dict(zip(self.rounds.get((command, a), []), self.wall.get((command, a), []), strict=True))
        wb = dict(zip(self.rounds.get((command, b), []), self.wall.get((command, b), []), strict=True))
        pairs = [wa[r] / wb[r] for r in wa if r in wb]
        return statistics.median(pairs) if pairs else None


def _pick(client: str, ours: list[str], docker: list[str]) -> list[str]:
    return ours if client.startswith("net") else docker


# One step: what each client runs for it, as (figure name, argv) pairs run in order (a
# connect and its disconnect stay together: the next client's connect needs it undone).
STEPS = [
    lambda c, n: [("ls -q", _pick(c, ["ls", "-q"], ["network", "ls", "-q"]))],
    lambda c, n: [("ls", _pick(c, ["ls"], ["network", "ls"]))],
    lambda c, n: [("inspect", _pick(c, ["inspect", "benchnet"], ["network", "inspect", "benchnet"]))],
    lambda c, n: [
        ("create", _pick(c, ["create", n], ["network", "create", n])),
        ("rm", _pick(c, ["rm", n], ["network", "rm", n])),
    ],
    lambda c, n: [
        ("connect", _pick(c, ["connect", "benchnet2", "cc"], ["network", "connect", "benchnet2", "cc"])),
        ("disconnect", _pick(c, ["disconnect", "benchnet2", "cc"], ["network", "disconnect", "benchnet2", "cc"])),
    ],
    lambda c, n: [("ps", ["ps"])],
    lambda c, n: [("ps -q", ["ps", "-q"])],
    lambda c, n: [("container inspect", ["container", "inspect", "cc"])],
    lambda c, n: [("logs", ["logs", "cc"])],
]


def run_argv(client: str) -> list[str]:
    return _pick(
        client,
        ["run", "-d", "--net", "benchnet", BB, "sleep", "3600"],
        ["run", "-d", "--net", "benchnet", "busybox", BB, "sleep", "3600"],
    )


def round_trip(sock: str, runs: int) -> dict[str, dict[str, float]]:
    """`net ls -q` against `docker network ls -q` (each Docker client present) on the daemon
    at `sock`, paired and interleaved: {client: {"ms": median wall, "cpu": median CPU ms,
    "ratio": median per-round net / client}}. For bench/containers.py."""
    workdir = tempfile.mkdtemp(prefix="cnm-bench-cli-")
    try:
        cl = Clients(sock, workdir)
        fig = Figures()
        clients = [c for c in cl.argv if c != "net (pip)"]
        for rnd in range(runs + 1):
            for client in clients[rnd % len(clients) :] + clients[: rnd % len(clients)]:
                wall, cpu, _ = cl.run(client, ["ls", "-q"] if client == "net" else ["network", "ls", "-q"])
                if rnd:
                    fig.add("ls -q", client, rnd, wall, cpu)
        return {
            c: {
                "ms": fig.median("ls -q", c) or 0.0,
                "cpu": fig.median("ls -q", c, cpu=True) or 0.0,
                "ratio": fig.ratio("ls -q", "net", c) or 0.0,
            }
            for c in clients
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def daemon_side(sock: str, calls: dict[str, tuple[str, str, dict | None]], runs: int) -> dict[str, float]:
    """Median ms the daemon takes to answer each API call (one raw request at a time)."""
    t = UnixSocketTransport(sock)
    out = {}
    for name, (method, path, body) in calls.items():
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            status, _, _ = t.request(method, path, body)
            times.append(time.perf_counter() - start)
            if status >= 400:
                raise RuntimeError(f"{method} {path}: HTTP {status}")
        out[name] = 1000 * statistics.median(times)
    return out


def bench(runs: int) -> None:
    workdir = tempfile.mkdtemp(prefix="cnm-bench-cli-")
    load0 = os.getloadavg()
    try:
        with DemoHost() as host:
            cl = Clients(str(host.sock), workdir)
            host.net("create", "--subnet", "10.251.0.0/16", "benchnet", quiet=True)
            host.net("create", "--subnet", "10.252.0.0/16", "benchnet2", quiet=True)
            r = host.net(
                "run", "-d", "--name", "cc", "--net", "benchnet", BB, "sh", "-c", "echo ready; sleep 3600", quiet=True
            )
            if r.returncode != 0:
                raise SystemExit(f"bench: net run failed: {r.stderr}")
            docker_run = docker_run_works(cl)
            fig = Figures()
            clients = list(cl.argv)
            for rnd in range(runs + 1):  # round 0 warms caches and is not counted
                order = clients[rnd % len(clients) :] + clients[: rnd % len(clients)]
                # Each step is run by every client back to back (in a rotating order), so a
                # ratio compares runs made moments apart, against the same daemon state.
                for step in STEPS:
                    for client in order:
                        for name, args in step(client, f"n{rnd}-{clients.index(client)}"):
                            wall, cpu, _ = cl.run(client, args)
                            if rnd:
                                fig.add(name, client, rnd, wall, cpu)
                # run -d, then rm -f (Docker's run where it works against our daemon)
                made = {}
                for client in order:
                    if client.startswith("net") or docker_run:
                        wall, cpu, out = cl.run(client, run_argv(client))
                        made[client] = out.strip()
                        if rnd:
                            fig.add("run -d", client, rnd, wall, cpu)
                    else:
                        made[client] = host.net(*run_argv("net"), quiet=True).stdout.strip()
                for client in order:
                    rm = ["container", "rm", "-f"] if client.startswith("net") else ["rm", "-f"]
                    wall, cpu, _ = cl.run(client, [*rm, made[client]])
                    if rnd:
                        fig.add("rm -f", client, rnd, wall, cpu)
            cid = host.net("run", "-d", "--net", "benchnet", BB, "sleep", "3600", quiet=True).stdout.strip()
            daemon = daemon_side(
                str(host.sock),
                {
                    "ls -q": ("GET", "/networks", None),
                    "ls": ("GET", "/networks", None),
                    "inspect": ("GET", "/networks/benchnet", None),
                    "ps": ("GET", "/containers/json", None),
                    "ps -q": ("GET", "/containers/json", None),
                    "container inspect": ("GET", "/containers/cc/json", None),
                    "logs": ("GET", "/containers/cc/logs?stdout=1&stderr=1", None),
                },
                max(runs, 11),
            )
            host.net("container", "rm", "-f", "cc", cid, quiet=True)
            report(fig, cl, daemon, runs, docker_run, load0, os.getloadavg())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def docker_run_works(cl: Clients) -> str | None:
    """Whether `docker run -d` works against our daemon (it needs Docker's separate create
    and start); the reason it does not, or None."""
    if not cl.docker:
        return None
    client = cl.docker[0]
    try:
        p = subprocess.run(
            cl.argv[client] + ["run", "-d", "--net", "benchnet", "busybox", BB, "sleep", "3600"],
            env=cl.env[client],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        return None
    if p.returncode != 0:
        return None
    subprocess.run(cl.argv[client] + ["rm", "-f", p.stdout.strip()], env=cl.env[client], capture_output=True)
    return client


def fmt(x: float | None, spec: str = "6.1f") -> str:
    return format(x, spec) if x is not None else "   n/a"


def report(
    fig: Figures,
    cl: Clients,
    daemon: dict[str, float],
    runs: int,
    docker_run: str | None,
    load0: tuple[float, ...],
    load1: tuple[float, ...],
) -> None:
    commands = list(dict.fromkeys(c for c, _ in fig.wall))
    versions = {
        n: subprocess.run([cl.argv[n][0], "--version"], capture_output=True, text=True).stdout.strip()
        for n in cl.docker
    }
    print(
        f"`net` against Docker's client on our daemon: {runs} rounds, medians in ms, ratio = net / docker "
        f"per round (goal <= {GOAL:g})."
    )
    for n, v in versions.items():
        print(f"  {n}: {v}")
    print(f"  load average before {load0[0]:.2f}, after {load1[0]:.2f} (2 cores, shared with other work)")
    heads = ["command", "net", "net (pip)", *[f"{d}  ratio" for d in cl.docker], "daemon"]
    print("\nwall ms      " + "  ".join(f"{h:>16}" for h in heads[1:]))
    worst = 0.0
    for c in commands:
        cells = [fmt(fig.median(c, "net")), fmt(fig.median(c, "net (pip)"))]
        for d in cl.docker:
            r = fig.ratio(c, "net", d)
            worst = max(worst, r or 0.0)
            cells.append(f"{fmt(fig.median(c, d))} {fmt(r, '5.2f')}")
        cells.append(fmt(daemon.get(c), "6.2f"))
        print(f"{c:<18}" + "  ".join(f"{x:>16}" for x in cells))
    print("\nbest wall ms " + "  ".join(f"{h:>16}" for h in heads[1:-1]))
    for c in commands:
        net_best = fig.best(c, "net")
        cells = [fmt(net_best), fmt(fig.best(c, "net (pip)"))]
        for d in cl.docker:
            theirs = fig.best(c, d)
            cells.append(f"{fmt(theirs)} {fmt(net_best / theirs if net_best and theirs else None, '5.2f')}")
        print(f"{c:<18}" + "  ".join(f"{x:>16}" for x in cells))
    print("\ncpu ms       " + "  ".join(f"{h:>16}" for h in ["net", "net (pip)", *cl.docker]))
    for c in commands:
        cells = [fmt(fig.median(c, n, cpu=True)) for n in ["net", "net (pip)", *cl.docker]]
        print(f"{c:<18}" + "  ".join(f"{x:>16}" for x in cells))
    if docker_run is None and cl.docker:
        print(
            "\nrun -d: Docker's client cannot run containers on our daemon yet (docker run needs Docker's "
            "separate create and start); its rm -f removes a container net made."
        )
    print(
        f"\nworst ratio net / docker over the commands above: {worst:.2f} (goal <= {GOAL:g}: "
        f"{'met' if worst <= GOAL else 'NOT met'})"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 21)))
    ap.add_argument("--quick", action="store_true", help="5 rounds (for iterating)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (it creates a network namespace)", file=sys.stderr)
        return 1
    bench(5 if args.quick else args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
