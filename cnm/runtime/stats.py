"""One-shot resource usage of a container: what `docker stats --no-stream` shows
(network counters are the sandbox's: the API adds them).

`read(dirs)` takes {controller: (cgroup version, directory)} and reads each file once;
a missing file or controller leaves its figures None. `fill_from_procs` gives the
figures no cgroup has (a container without accounting cgroups) from /proc: CPU time as
the sum over its live processes of their own and their reaped children's time (every
process that ended in a container was reaped inside it, so nothing is lost or counted
twice), memory as their RSS, tasks as their threads. Parsing is pure (`parse_*`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

_UNLIMITED_V1 = 1 << 62  # memory.limit_in_bytes when no limit is set (PAGE_COUNTER_MAX, page-rounded)


@dataclass
class Stats:
    read_ns: int  # when these were read (ns since the epoch)
    memory_usage: int | None = None  # bytes, page cache included (as Docker reports)
    memory_limit: int | None = None  # bytes: the limit, or the host's memory if none
    memory_max_usage: int | None = None  # v1's max_usage_in_bytes, v2's memory.peak
    memory_failcnt: int | None = None  # v1 failcnt; v2: memory.events "max"
    memory_stat: dict[str, int] = field(default_factory=dict)
    cpu_total_ns: int | None = None
    cpu_user_ns: int | None = None
    cpu_system_ns: int | None = None
    percpu_ns: list[int] = field(default_factory=list)  # v1 only
    throttling: tuple[int, int, int] | None = None  # periods, throttled periods, throttled ns
    system_cpu_ns: int = 0  # the host's busy+idle time, /proc/stat (Docker's system_cpu_usage)
    online_cpus: int = 1
    pids_current: int | None = None
    pids_limit: int | None = None  # None: no limit


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else None


def parse_flat_keyed(text: str | None) -> dict[str, int]:
    """memory.stat, cpu.stat, memory.events: "key value" lines."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def system_cpu_ns(proc_stat: str, clk_tck: int) -> int:
    """The first line of /proc/stat summed (user … steal) in ns, as Docker computes it."""
    for line in proc_stat.splitlines():
        if line.startswith("cpu "):
            ticks = sum(int(x) for x in line.split()[1:9])
            return ticks * 1_000_000_000 // clk_tck
    return 0


def host_memory() -> int | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def read(dirs: dict[str, tuple[int, str]]) -> Stats:
    """Figures from the container's cgroups: {controller: (version, directory)}."""
    st = Stats(read_ns=time.time_ns())
    total = host_memory()
    if "memory" in dirs:
        version, d = dirs["memory"]
        if version == 1:
            st.memory_usage = _int(_read(f"{d}/memory.usage_in_bytes"))
            limit = _int(_read(f"{d}/memory.limit_in_bytes"))
            st.memory_max_usage = _int(_read(f"{d}/memory.max_usage_in_bytes"))
            st.memory_failcnt = _int(_read(f"{d}/memory.failcnt"))
            if limit is not None and limit >= _UNLIMITED_V1:
                limit = None
        else:
            st.memory_usage = _int(_read(f"{d}/memory.current"))
            limit = _int(_read(f"{d}/memory.max"))  # "max": None
            st.memory_max_usage = _int(_read(f"{d}/memory.peak"))
            st.memory_failcnt = parse_flat_keyed(_read(f"{d}/memory.events")).get("max")
        st.memory_limit = min(x for x in (limit, total) if x is not None) if (limit or total) else None
        st.memory_stat = parse_flat_keyed(_read(f"{d}/memory.stat"))
    # CPU time: v1's cpuacct; on v2 cpu.stat is in every cgroup, whatever is enabled.
    acct = dirs.get("cpuacct") or next((v for v in dirs.values() if v[0] == 2), None)
    if acct is not None:
        version, d = acct
        if version == 1:
            st.cpu_total_ns = _int(_read(f"{d}/cpuacct.usage"))
            st.cpu_user_ns = _int(_read(f"{d}/cpuacct.usage_user"))
            st.cpu_system_ns = _int(_read(f"{d}/cpuacct.usage_sys"))
            st.percpu_ns = [int(x) for x in (_read(f"{d}/cpuacct.usage_percpu") or "").split() if x.isdigit()]
        else:
            cpu = parse_flat_keyed(_read(f"{d}/cpu.stat"))
            st.cpu_total_ns, st.cpu_user_ns, st.cpu_system_ns = (
                cpu[k] * 1000 if k in cpu else None for k in ("usage_usec", "user_usec", "system_usec")
            )
    if "cpu" in dirs:
        version, d = dirs["cpu"]
        cpu = parse_flat_keyed(_read(f"{d}/cpu.stat"))
        if "nr_periods" in cpu:
            throttled = cpu.get("throttled_time", cpu.get("throttled_usec", 0) * 1000)
            st.throttling = (cpu["nr_periods"], cpu.get("nr_throttled", 0), throttled)
    if "pids" in dirs:
        d = dirs["pids"][1]
        st.pids_current = _int(_read(f"{d}/pids.current"))
        st.pids_limit = _int(_read(f"{d}/pids.max"))
    st.system_cpu_ns = system_cpu_ns(_read("/proc/stat") or "", os.sysconf("SC_CLK_TCK"))
    st.online_cpus = len(st.percpu_ns) or os.cpu_count() or 1
    return st


def pids(directory: str) -> list[int]:
    """The processes in a cgroup (its cgroup.procs)."""
    return [int(x) for x in (_read(os.path.join(directory, "cgroup.procs")) or "").split() if x.isdigit()]


def parse_proc_stat(text: str) -> tuple[int, int, int, int, int, int]:
    """(utime, stime, cutime, cstime, threads, rss pages) from a /proc/PID/stat line."""
    f = text[text.rindex(")") + 2 :].split()
    return int(f[11]), int(f[12]), int(f[13]), int(f[14]), int(f[17]), int(f[21])


def namespace_pids(pid1: int) -> list[int]:
    """Processes in the PID namespace whose init (as the host sees it) is `pid1`."""
    try:
        ns = os.readlink(f"/proc/{pid1}/ns/pid")
    except OSError:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == ns:
                    out.append(int(entry))
            except OSError:
                continue
    return out


def fill_from_procs(st: Stats, pids: list[int]) -> Stats:
    """Fill the figures `st` lacks from the processes' /proc entries."""
    tck = os.sysconf("SC_CLK_TCK")
    user = system = threads = rss = 0
    for pid in pids:
        text = _read(f"/proc/{pid}/stat")
        if text is None:
            continue
        ut, stime, cut, cst, nthreads, pages = parse_proc_stat(text)
        user, system = user + ut + cut, system + stime + cst
        threads, rss = threads + nthreads, rss + pages
    if st.cpu_total_ns is None:
        st.cpu_user_ns = user * 1_000_000_000 // tck
        st.cpu_system_ns = system * 1_000_000_000 // tck
        st.cpu_total_ns = st.cpu_user_ns + st.cpu_system_ns
    if st.memory_usage is None:
        st.memory_usage = rss * os.sysconf("SC_PAGE_SIZE")
        st.memory_limit = host_memory()
    if st.pids_current is None:
        st.pids_current = threads
    return st
