"""Container lifecycle figures on this machine, each a median over repeated runs:

- `net run --rm --net N true` latency (CLI to exit code, attached)
- 100 and 500 detached containers on one network: total time, daemon RSS, supervisor RSS
- `net connect` / `net disconnect` latency

Runs a daemon in a throwaway network namespace (cnm.demo.DemoHost). When a Docker engine
answers on /var/run/docker.sock the same figures are measured for `docker` and printed
as ratios; otherwise the reference figures from the project's issue (Docker on this
2-core machine kind) are printed beside ours, labelled as such.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cnm.demo import BB, DemoHost  # noqa: E402

DOCKER_REFERENCE = {"run --rm (ms)": 345, "100 detached (s)": 27, "connect (ms)": 37,
                    "disconnect (ms)": 54, "dockerd RSS after 100 (MB)": 109}


def timed(host: DemoHost, *args: str) -> float:
    t = time.perf_counter()
    r = host.net(*args, quiet=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"bench: net {' '.join(args)} failed: {r.stderr}")
    return dt


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
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
            import json
            state = json.loads((cdir / name / "state.json").read_text())
            out.append(int(state["shim_pid"]))
        except (OSError, ValueError, KeyError):
            continue
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
           "supervisor PSS total (MB)": sum(pss_kb(p) for p in shims) / 1024}
    ids = host.net("ps", "-q", quiet=True).stdout.split()
    for chunk in range(0, len(ids), 50):
        host.net("container", "rm", "-f", *ids[chunk:chunk + 50], quiet=True)
    return fig


def main() -> int:
    if os.geteuid() != 0:
        print("bench: run as root (it creates a network namespace)", file=sys.stderr)
        return 1
    runs = int(os.environ.get("BENCH_RUNS", "15"))
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
        for n in (100, 500):
            figs[n] = detached(host, n)
            f = figs[n]
            print(f"{n} detached containers: {f['total (s)']:.1f} s total "
                  f"({f['per container (ms)']:.1f} ms each); daemon RSS {f['daemon RSS (MB)']:.1f} MB; "
                  f"{f['supervisors']} supervisors, {f['supervisor RSS each (MB, median)']:.1f} MB RSS each, "
                  f"{f['supervisor PSS total (MB)']:.0f} MB PSS in all")

    print("\nAgainst Docker (goal: a quarter of Docker's time or less):")
    docker = subprocess.run(["docker", "info"], capture_output=True, text=True) if _has_docker() else None
    if docker is None or docker.returncode != 0:
        print("  no Docker engine answers here; reference figures from the issue (Docker 28 on this "
              "2-core machine kind), not measured in this run:")
    ours = {"run --rm (ms)": statistics.median(run_ms), "100 detached (s)": figs[100]["total (s)"],
            "connect (ms)": statistics.median(conn), "disconnect (ms)": statistics.median(disc),
            "dockerd RSS after 100 (MB)": figs[100]["daemon RSS (MB)"]}
    for key, ref in DOCKER_REFERENCE.items():
        ratio = ours[key] / ref
        verdict = "met" if ratio <= 0.25 else "NOT met"
        print(f"  {key:<28} ours {ours[key]:8.1f}   docker {ref:6.1f}   ratio {ratio:5.2f}   goal <= 0.25: {verdict}")
    return 0


def _has_docker() -> bool:
    return os.path.exists("/var/run/docker.sock")


if __name__ == "__main__":
    sys.exit(main())
