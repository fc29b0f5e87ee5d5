"""`net lab down`: remove everything a lab's record lists, at once rather than object
by object, best effort and idempotent.

Nothing a lab makes lives outside its namespaces and its directory: the daemons
mount their sandboxes in mount namespaces of their own, and every link, address,
nftables table and etcd key dies with the namespaces and processes. So the lab is
not emptied container by container through its daemons (that was most of `down`'s
time). Its daemons get SIGTERM together (they leave their containers running, as on
any stop); every other process in the lab's namespaces — supervisors, containers,
`net lab exec` shells — gets SIGKILL, and so do the etcd members (their data goes
with the lab, and members stopped together on SIGTERM each wait seconds to hand
their leadership over); then the namespaces and the directory go, each kind of
object in one sweep.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable
from pathlib import Path

from cnm.lab import procs
from cnm.lab.record import LabRecord
from cnm.lab.runner import Runner
from cnm.lab.underlay import namespaces_script

NETNS_DIR = Path("/run/netns")
DAEMON_STOP_TIMEOUT = 15.0
ETCD_STOP_TIMEOUT = 10.0


def down(runner: Runner, rec: LabRecord, say: Callable[[str], None] | None = None) -> list[str]:
    """Remove the lab; returns the problems met (empty = clean)."""
    say = say or (lambda _msg: None)
    problems: list[str] = []
    host_inodes = {i for ns in rec.namespaces if (i := procs.netns_inode(NETNS_DIR / ns))}
    # Before anything stops: the sandbox and overlay namespaces the lab's processes
    # hold (their mounts are visible only from inside their mount namespaces).
    in_hosts = procs.pids_in_netns(host_inodes) if host_inodes else []
    inner = procs.nsfs_inodes_seen_by(in_hosts, rec.dir) | procs.nsfs_inodes_under(rec.dir)

    daemons = {h: (d["pid"], d.get("start")) for h, d in rec.daemons.items() if d.get("pid")}
    outcome = procs.terminate_all(daemons, timeout=DAEMON_STOP_TIMEOUT)
    killed = sorted(h for h, o in outcome.items() if o == "killed")
    for h in killed:
        problems.append(f"{h}: the daemon did not stop on SIGTERM; killed")
    stopped = sum(1 for o in outcome.values() if o == "stopped")
    if daemons:
        say(f"daemons: {stopped} stopped, {len(killed)} killed, {len(daemons) - stopped - len(killed)} not running")

    strays = procs.pids_in_netns(host_inodes | inner) if host_inodes | inner else []
    etcd_pids = {d["pid"] for d in rec.etcd.values() if d.get("pid")}
    strays = [p for p in strays if p not in etcd_pids]
    procs.kill_all(strays)
    if strays:
        say(f"killed {len(strays)} other process(es) in the lab's namespaces (supervisors, containers, shells)")

    members = {m: (d["pid"], d.get("start")) for m, d in rec.etcd.items() if d.get("pid")}
    if members:
        # SIGKILL: its data goes with the lab, and members stopped together on SIGTERM
        # each wait seconds to hand leadership to another that is stopping too.
        out = procs.terminate_all(members, timeout=ETCD_STOP_TIMEOUT, sig=signal.SIGKILL)
        say("etcd: " + ", ".join(f"{m} {o}" for m, o in sorted(out.items())))

    for point, _ in procs.mounts_under(rec.dir):
        r = runner.run(["umount", "-l", point], check=False)
        if not r.ok:
            problems.append(f"umount {point}: {r.last_line()}")
    present = [ns for ns in reversed(rec.namespaces) if (NETNS_DIR / ns).exists()]
    if present:
        r = runner.run(["ip", "-force", "-batch", "-"], input=namespaces_script(present, delete=True), check=False)
        if not r.ok:
            left = [ns for ns in present if (NETNS_DIR / ns).exists()]
            if left:
                problems.append(f"ip netns del {' '.join(left)}: {r.last_line()}")
        say(f"removed {len(present)} namespace(s)")
    shutil.rmtree(rec.dir, ignore_errors=True)
    if Path(rec.dir).exists():
        problems.append(f"could not remove {rec.dir}")
    return problems


__all__ = ["down"]
