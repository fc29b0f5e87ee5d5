"""Labs at scale: `net lab up`, `check` and `down` of generated labs of 20, 50 and 100
hosts (3 etcd members, 2 overlays, a container per host on each), with the time of
each phase and the lab's memory as PSS by kind of process.

    sudo .venv/bin/python bench/lab_scale.py [--hosts 20,50,100] [--overlays 2]
        [--per-host 1] [--rounds 1] [--heartbeat 100] [--keep]

Each lab is `net lab up FILE` / `net lab check NAME` / `net lab down NAME` run as a
user would (the CLI's own output gives the phases' times). Memory is measured once
the lab is up and checked: the PSS (/proc/PID/smaps_rollup) of every process the lab
started (cnm.lab.usage), by kind: daemons, container supervisors, their template
processes, etcd members, containers. PSS divides shared pages among the processes
sharing them, so the sum is what the lab holds; MemAvailable's drop is printed too
(it also counts the kernel's share — namespaces, links, sockets — but moves with
whatever else runs on the machine). etcd's highest raft term is read from its logs
(term 2: one election, at start; more: leaders lost under load).

Goal (issue 14): 100 hosts up in <= 120 s, checks pass, down in <= 60 s, <= 4 GB in
all, a daemon <= 25 MB PSS. Other helpers share this machine's two cores: the load
average before and after each run is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnm.lab.usage import KINDS, lab_usage  # noqa: E402

NET = str(Path(sys.executable).parent / "net")
GOALS = {"up": 120.0, "down": 60.0, "total_mb": 4096.0, "daemon_mb": 25.0}


def lab_doc(name: str, hosts: int, overlays: int, per_host: int, heartbeat: int | None) -> dict:
    """The generated lab: overlays ov1…, a group of containers per overlay (the first
    group serves HTTP), checks sampled across hosts on every overlay, TCP on the first,
    isolation between the first two, the overlay MTU."""
    nets = [{"name": f"ov{i}", "driver": "overlay", "subnet": f"10.{60 + i}.0.0/16"} for i in range(1, overlays + 1)]
    groups = []
    for i in range(1, overlays + 1):
        g = {"group": f"g{i}", "per_host": per_host, "network": f"ov{i}"}
        if i == 1:
            g["command"] = "busybox httpd -f -p 80 -h /etc"
        groups.append(g)
    sample = min(20, hosts * per_host)
    checks: list[dict] = []
    for i in range(1, overlays + 1):
        checks.append({"from": f"g{i}", "ping": f"g{i}", "sample": sample})
    checks.append({"from": "g1", "tcp": "g1:80", "sample": min(10, sample)})
    if overlays > 1:  # isolation: another overlay's containers reach nothing of ov1's
        checks.append({"from": "g2", "ping": "g1", "expect": "fail", "sample": min(5, sample)})
        checks.append({"from": "g2", "tcp": "g1:80", "expect": "fail", "sample": min(5, sample)})
    checks.append({"from": "g1", "mtu": 1450, "sample": min(5, sample)})
    store: dict = {"etcd": min(3, hosts)}
    if heartbeat:
        store["heartbeat"] = heartbeat
    return {
        "name": name,
        "hosts": {"count": hosts, "prefix": "h"},
        "underlay": {"subnet": "198.18.0.0/24"},
        "cluster_store": store,
        "networks": nets,
        "containers": groups,
        "checks": checks,
    }


def run(argv: list[str], env: dict, timeout: float) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    return time.monotonic() - t0, r


def phases(stdout: str) -> dict[str, float]:
    """'daemons: 100 steps ok (4.2s)' lines of `net lab up` (plain progress)."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+): \d+ steps? ok \(([\d.]+)s\)", stdout, re.M)}


def mem_available_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def etcd_term(rec: dict) -> int:
    best = 0
    for m in rec.get("etcd", {}).values():
        try:
            text = Path(m["log"]).read_text(errors="replace")
        except (OSError, KeyError):
            continue
        best = max([best, *(int(t) for t in re.findall(r"elected leader \S+ at term (\d+)", text))])
    return best


def one(hosts: int, args: argparse.Namespace, base: Path) -> dict:
    name = f"s{hosts}-{secrets.token_hex(2)}"
    doc = lab_doc(name, hosts, args.overlays, args.per_host, args.heartbeat)
    path = base / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {**os.environ, "CNM_LAB_DIR": str(base / "labs")}
    env.pop("NET_HOST", None)
    res: dict = {"hosts": hosts, "containers": hosts * args.per_host * args.overlays, "load_before": os.getloadavg()[0]}
    mem0 = mem_available_kb()
    res["up"], r = run([NET, "lab", "up", str(path)], env, 900)
    res["phases"] = phases(r.stdout)
    if r.returncode != 0:
        print(r.stdout, r.stderr, file=sys.stderr)
        raise SystemExit(f"net lab up failed at {hosts} hosts")
    res["check"], c = run([NET, "lab", "check", name], env, 600)
    res["check_ok"] = c.returncode == 0
    res["probes"] = c.stdout.strip().splitlines()[-1] if c.stdout.strip() else c.stderr.strip()
    if not res["check_ok"]:
        print(c.stdout, c.stderr, file=sys.stderr)
    rec = json.loads((base / "labs" / name / "lab.json").read_text())
    usage = lab_usage(
        rec["dir"],
        list(rec["namespaces"]),
        {d["pid"] for d in rec["daemons"].values()},
        {d["pid"] for d in rec["etcd"].values() if d.get("pid")},
    )
    res["pss_mb"] = {k: usage.pss_kb.get(k, 0) / 1024 for k in KINDS}
    res["count"] = {k: usage.count(k) for k in KINDS}
    res["total_mb"] = usage.total_kb / 1024
    res["daemon_mb"] = usage.per_process_kb("daemon") / 1024
    res["mem_drop_mb"] = (mem0 - mem_available_kb()) / 1024
    res["cpu_s"] = {k: sum(cpu_seconds(pid) for pid in usage.pids.get(k, ())) for k in KINDS}
    res["etcd_term"] = etcd_term(rec)
    res["load_up"] = os.getloadavg()[0]
    if args.keep:
        print(f"kept: CNM_LAB_DIR={base / 'labs'} net lab down {name}")
        return res
    started = {
        pid: Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[19]
        for pids in usage.pids.values()
        for pid in pids
        if Path(f"/proc/{pid}").exists()
    }
    res["down"], d = run([NET, "lab", "down", name], env, 600)
    if d.returncode != 0 or "warning" in d.stderr:
        print(d.stdout, d.stderr, file=sys.stderr)
    left = [n for n in os.listdir("/run/netns") if n.startswith(f"lab-{name}-")]
    survivors = [pid for pid, st in started.items() if _same(pid, st)]
    res["clean"] = not left and not survivors and not (base / "labs" / name).exists()
    res["load_after"] = os.getloadavg()[0]
    return res


def cpu_seconds(pid: int) -> float:
    """User + system CPU a live process has used so far (its exited children not counted)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _same(pid: int, start: str) -> bool:
    """Still the same live process (not a zombie)?"""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X") and fields[19] == start


def report(rows: list[dict]) -> None:
    print(
        f"\n{'hosts':>5} {'ctrs':>4} {'up s':>6} {'check s':>7} {'down s':>6}  {'daemons MB (each)':>18} "
        f"{'superv MB':>9} {'templ MB':>8} {'etcd MB':>7} {'ctr MB':>6} {'total MB':>8} {'MemAvail drop':>13} "
        f"{'term':>4} {'load':>11}"
    )
    for r in rows:
        p = r["pss_mb"]
        print(
            f"{r['hosts']:>5} {r['containers']:>4} {r['up']:>6.1f} {r['check']:>7.1f} {r.get('down', 0):>6.1f}  "
            f"{p['daemon']:>9.0f} ({r['daemon_mb']:>5.1f}) {p['supervisor']:>9.0f} {p['template']:>8.0f} "
            f"{p['etcd']:>7.0f} {p['container']:>6.0f} {r['total_mb']:>8.0f} {r['mem_drop_mb']:>13.0f} "
            f"{r['etcd_term']:>4} {r['load_before']:>4.1f}-{r['load_up']:>4.1f}"
        )
        print(
            "      phases: "
            + ", ".join(f"{k} {v:.1f}s" for k, v in r["phases"].items())
            + f"; checks: {r['probes']}"
            + ("" if r["check_ok"] else " (FAILED)")
            + ("" if r.get("clean", True) else "; NOT CLEAN after down")
        )
        if r.get("cpu_s"):
            print(
                "      CPU s so far (up + check), live processes by kind: "
                + ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_s"].items() if v)
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", default="20,50,100", help="comma-separated lab sizes")
    ap.add_argument("--overlays", type=int, default=2)
    ap.add_argument("--per-host", type=int, default=1, help="containers per host on each overlay")
    ap.add_argument("--rounds", type=int, default=1, help="runs per size (medians printed)")
    ap.add_argument("--heartbeat", type=int, default=None, help="etcd heartbeat ms (lab default otherwise)")
    ap.add_argument("--keep", action="store_true", help="leave the (last) lab up")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (labs make network namespaces)")
    sizes = [int(x) for x in args.hosts.split(",") if x]
    base = Path(tempfile.mkdtemp(prefix="cnm-labscale-", dir="/tmp"))
    os.chmod(base, 0o700)
    rows, ok = [], True
    try:
        for n in sizes:
            runs = [one(n, args, base) for _ in range(args.rounds)]
            for r in runs:
                report([r])
                ok &= r["check_ok"] and r.get("clean", True)
            if len(runs) > 1:
                med = {**runs[0]}
                for key in ("up", "check", "down", "total_mb", "daemon_mb", "mem_drop_mb"):
                    med[key] = statistics.median(r.get(key, 0) for r in runs)
                med["pss_mb"] = {k: statistics.median(r["pss_mb"][k] for r in runs) for k in KINDS}
                med["phases"] = {k: statistics.median(r["phases"].get(k, 0) for r in runs) for k in runs[0]["phases"]}
                med["load_before"] = min(r["load_before"] for r in runs)  # the range over all runs
                med["load_up"] = max(r["load_up"] for r in runs)
                med["check_ok"] = all(r["check_ok"] for r in runs)
                med["cpu_s"] = {k: statistics.median(r["cpu_s"][k] for r in runs) for k in KINDS}
                print(f"median of {len(runs)}:")
                report([med])
                rows.append(med)
            else:
                rows += runs
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(base)])
    big = [r for r in rows if r["hosts"] >= 100]
    for r in big:
        verdicts = [
            f"up {r['up']:.0f}s (<= {GOALS['up']:.0f})",
            f"down {r.get('down', 0):.0f}s (<= {GOALS['down']:.0f})",
            f"total {r['total_mb']:.0f} MB (<= {GOALS['total_mb']:.0f})",
            f"daemon {r['daemon_mb']:.1f} MB (<= {GOALS['daemon_mb']:.0f})",
        ]
        met = (
            r["up"] <= GOALS["up"]
            and r.get("down", 0) <= GOALS["down"]
            and r["total_mb"] <= GOALS["total_mb"]
            and r["daemon_mb"] <= GOALS["daemon_mb"]
            and r["check_ok"]
        )
        print(
            f"\ngoal at {r['hosts']} hosts: "
            + ", ".join(verdicts)
            + f", checks {'pass' if r['check_ok'] else 'FAIL'}"
            + (" — met" if met else " — NOT met")
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
