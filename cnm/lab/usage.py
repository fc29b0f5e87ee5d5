"""What a lab's processes cost: every process the lab started, by kind, with its PSS
(proportional set size: shared pages divided among the processes sharing them, so the
sum is what the lab really holds), from /proc (no commands run here).

A lab's processes are those in its hosts' network namespaces (daemons, etcd members,
container supervisors and their templates, `net lab exec` shells), those in the
sandbox and overlay namespaces the daemons mounted (containers), and their children.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cnm.lab import procs
from cnm.runtime.files import SHIM_COMM, TEMPLATE_COMM

KINDS = ("daemon", "supervisor", "template", "etcd", "container", "other")


@dataclass
class Usage:
    pids: dict[str, list[int]] = field(default_factory=dict)  # kind -> pids
    pss_kb: dict[str, int] = field(default_factory=dict)  # kind -> total PSS (kB)

    @property
    def total_kb(self) -> int:
        return sum(self.pss_kb.values())

    def count(self, kind: str) -> int:
        return len(self.pids.get(kind, ()))

    def per_process_kb(self, kind: str) -> float:
        n = self.count(kind)
        return self.pss_kb.get(kind, 0) / n if n else 0.0


def pss_kb(pid: int) -> int:
    """Pss from /proc/PID/smaps_rollup, 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _stat(pid: int) -> tuple[int, str] | None:
    """(ppid, comm)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    return int(text[text.rindex(")") + 2 :].split()[1]), comm


def kind_of(pid: int, comm: str, daemons: set[int], etcd: set[int], inner: bool) -> str:
    if pid in daemons:
        return "daemon"
    if pid in etcd or comm == "etcd":
        return "etcd"
    if comm == SHIM_COMM:
        return "supervisor"
    if comm == TEMPLATE_COMM:
        return "template"
    return "container" if inner else "other"


def lab_usage(rec_dir: str, host_netns: list[str], daemons: set[int], etcd: set[int]) -> Usage:
    """PSS by kind of every process of the lab whose hosts are these namespaces."""
    host_inodes = {i for ns in host_netns if (i := procs.netns_inode(Path("/run/netns") / ns))}
    in_hosts = procs.pids_in_netns(host_inodes) if host_inodes else []
    inner_inodes = procs.nsfs_inodes_seen_by(in_hosts, rec_dir)
    inner = set(procs.pids_in_netns(inner_inodes)) if inner_inodes else set()
    table: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            table[int(entry)] = st
    chosen = set(in_hosts) | inner
    grew = True
    while grew:  # children (a container's own processes, exec'd tools)
        grew = False
        for pid, (ppid, _) in table.items():
            if ppid in chosen and pid not in chosen:
                chosen.add(pid)
                if ppid in inner:
                    inner.add(pid)
                grew = True
    out = Usage()
    for pid in sorted(chosen):
        comm = table.get(pid, (0, ""))[1]
        kind = kind_of(pid, comm, daemons, etcd, pid in inner)
        out.pids.setdefault(kind, []).append(pid)
        out.pss_kb[kind] = out.pss_kb.get(kind, 0) + pss_kb(pid)
    return out


__all__ = ["Usage", "lab_usage", "pss_kb", "KINDS"]
