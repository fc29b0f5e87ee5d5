"""`GET /containers/{id}/stats` (`docker stats`): CPU, memory and pids of the
container, and its network counters, as Docker's StatsJSON.

Sources: the container's cgroups where it has them (a container started with
--memory/--cpus/--pids-limit: memory.current or memory.usage_in_bytes, cpu.stat or
cpuacct.usage, pids.current), else its processes — those of its PID namespace, from
/proc (CPU time of the live ones plus what its init reaped; resident memory). Network
counters come from its network namespace (/proc/PID/net/dev: the sandbox's interfaces).
`stream=false` answers one sample with the one before it a second earlier (Docker's
CLI computes CPU % from the pair); `one-shot=true` answers at once, without the pair;
streaming sends a sample a second.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from cnm.api.common import Route, blocking
from cnm.api.logs import _flag
from cnm.api.top import namespace_members
from cnm.errors import NotFound

INTERVAL = 1.0
NS = 1_000_000_000
_NET_FIELDS = (
    "rx_bytes",
    "rx_packets",
    "rx_errors",
    "rx_dropped",
    None,
    None,
    None,
    None,
    "tx_bytes",
    "tx_packets",
    "tx_errors",
    "tx_dropped",
)


@dataclass
class Sample:
    read: str = "0001-01-01T00:00:00Z"
    cpu_total: int = 0  # ns
    cpu_user: int = 0
    cpu_kernel: int = 0
    system_cpu: int = 0  # ns, the host's
    online_cpus: int = 0
    memory: int = 0
    memory_limit: int = 0
    pids: int = 0
    pids_limit: int = 0
    networks: dict[str, dict[str, int]] = field(default_factory=dict)


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/dev -> {iface: Docker's counters}, loopback left out (as Docker's)."""
    out = {}
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        name = name.strip()
        values = rest.split()
        if not name or name == "lo" or len(values) < 12:
            continue
        out[name] = {k: int(v) for k, v in zip(_NET_FIELDS, values, strict=False) if k}
    return out


def system_cpu_ns(proc_stat: str, ticks: int) -> int:
    """The host's CPU time since boot, as Docker's getSystemCPUUsage reads /proc/stat."""
    for line in proc_stat.splitlines():
        if line.startswith("cpu "):
            return sum(int(v) for v in line.split()[1:8]) * NS // ticks
    return 0


def proc_cpu_ns(stat_text: str, ticks: int, with_children: bool) -> tuple[int, int]:
    """(user, kernel) ns of one /proc/PID/stat; with its reaped children's if asked."""
    fields = stat_text.rpartition(")")[2].split()
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    if with_children:
        utime, stime = utime + cutime, stime + cstime
    return utime * NS // ticks, stime * NS // ticks


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _int(path: str) -> int | None:
    text = _read(path).strip()
    return int(text) if text.isdigit() else None


def sample(pid: int | None, cgroup_dirs: dict[str, str], host_memory: int) -> Sample:
    """One sample of a running container (init `pid`); zeros when it is not running."""
    now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
    ticks = os.sysconf("SC_CLK_TCK")
    s = Sample(
        read=now,
        system_cpu=system_cpu_ns(_read("/proc/stat"), ticks),
        online_cpus=os.cpu_count() or 1,
        memory_limit=host_memory,
    )
    if pid is None:
        return s
    members = namespace_members(pid)
    for p in members:
        text = _read(f"/proc/{p}/stat")
        if text:
            user, kernel = proc_cpu_ns(text, ticks, with_children=p == pid)
            s.cpu_user += user
            s.cpu_kernel += kernel
            statm = _read(f"/proc/{p}/statm").split()
            if len(statm) > 1:
                s.memory += int(statm[1]) * os.sysconf("SC_PAGE_SIZE")
    s.cpu_total = s.cpu_user + s.cpu_kernel
    s.pids = len(members)
    mem = cgroup_dirs.get("memory")
    if mem:
        usage = _int(f"{mem}/memory.current") or _int(f"{mem}/memory.usage_in_bytes")
        limit = _int(f"{mem}/memory.max") or _int(f"{mem}/memory.limit_in_bytes")
        if usage is not None:
            s.memory = usage
        if limit:
            s.memory_limit = min(limit, host_memory) if host_memory else limit
    cpu = cgroup_dirs.get("cpu")
    if cpu:
        v1 = _int(f"{cpu}/cpuacct.usage")
        v2 = {
            k: int(v)
            for k, v in (
                line.split()
                for line in _read(f"{cpu}/cpu.stat").splitlines()
                if len(line.split()) == 2 and line.split()[1].isdigit()
            )
        }
        if v1 is not None:
            s.cpu_total = v1
        elif "usage_usec" in v2:
            s.cpu_total = v2["usage_usec"] * 1000
            s.cpu_user, s.cpu_kernel = v2.get("user_usec", 0) * 1000, v2.get("system_usec", 0) * 1000
    pids = cgroup_dirs.get("pids")
    if pids:
        s.pids = _int(f"{pids}/pids.current") or s.pids
        s.pids_limit = _int(f"{pids}/pids.max") or 0
    s.networks = parse_net_dev(_read(f"/proc/{pid}/net/dev"))
    return s


def _cpu(s: Sample) -> dict:
    return {
        "cpu_usage": {"total_usage": s.cpu_total, "usage_in_kernelmode": s.cpu_kernel, "usage_in_usermode": s.cpu_user},
        "system_cpu_usage": s.system_cpu,
        "online_cpus": s.online_cpus,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }


def stats_json(cid: str, name: str, now: Sample, before: Sample | None) -> dict:
    """Docker's StatsJSON from two samples (`before` None: an empty precpu, as one-shot)."""
    prev = before or Sample()
    return {
        "read": now.read,
        "preread": prev.read,
        "id": cid,
        "name": "/" + name,
        "pids_stats": {"current": now.pids, **({"limit": now.pids_limit} if now.pids_limit else {})},
        "blkio_stats": {
            "io_service_bytes_recursive": None,
            "io_serviced_recursive": None,
            "io_queue_recursive": None,
            "io_service_time_recursive": None,
            "io_wait_time_recursive": None,
            "io_merged_recursive": None,
            "io_time_recursive": None,
            "sectors_recursive": None,
        },
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": _cpu(now),
        "precpu_stats": _cpu(prev),
        "memory_stats": {"usage": now.memory, "limit": now.memory_limit, "stats": {}} if now.pids else {},
        "networks": now.networks,
    }


def routes(target: Callable[[str], tuple[str, str, int | None, dict[str, str]]], host_memory: int) -> list[Route]:
    """`target(ref)` -> (id, name, init pid or None when not running, cgroup dirs)."""

    async def stats(request: web.Request) -> web.StreamResponse:
        stream = _flag(request, "stream", True)
        one_shot = _flag(request, "one-shot")
        cid, name, pid, dirs = await blocking(request, target, request.match_info["ref"])
        first = await blocking(request, sample, pid, dirs, host_memory)
        if not stream:
            pair = None
            if not one_shot and pid is not None:
                await asyncio.sleep(INTERVAL)
                pair, first = first, await blocking(request, sample, pid, dirs, host_memory)
            body = json.dumps(stats_json(cid, name, first, pair)).encode()
            return web.Response(body=body, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        before: Sample | None = None
        current = first
        try:
            while True:
                await resp.write(json.dumps(stats_json(cid, name, current, before)).encode() + b"\n")
                if pid is None:
                    break  # not running: one sample of zeros, as Docker
                await asyncio.sleep(INTERVAL)
                if request.transport is None or request.transport.is_closing():
                    break
                try:
                    cid, name, pid, dirs = await blocking(request, target, cid)
                except NotFound:
                    break
                before, current = current, await blocking(request, sample, pid, dirs, host_memory)
            await resp.write_eof()
        except ConnectionResetError:
            pass
        return resp

    return [Route("GET", "/containers/{ref}/stats", stats)]
