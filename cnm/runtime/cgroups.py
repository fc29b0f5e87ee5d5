"""Per-container cgroups: detect v1/v2, compute paths, write limits, remove.

Detection and path computation are pure (they take the text of /proc/self/mountinfo
and /proc/self/cgroup), so they are unit-tested with captured files from both layouts.

Layout, per controller (memory, cpu, pids), whichever the machine has:
  v1  <mount>/<own cgroup>/<root>/<id>   nested under the caller's own cgroup, so the
      daemon's own limits (e.g. its systemd unit) still cover its containers;
  v2  <mount>/<root>/<id>                under the hierarchy root: v2 forbids processes
      in a cgroup that delegates controllers, and the daemon's own cgroup has one.
An absolute `root` ("/cnm") is taken from the hierarchy root in both cases. `root`
defaults to "cnm", so ownership is obvious; tests pass their own to get a private tree.

A container gets a cgroup only in the controllers it has a limit for, unless the
Runtime asks for accounting (then also the ACCOUNTING ones: memory, cpuacct, pids, which
`stats` reads). Moving a process into a cgroup takes cgroup_threadgroup_rwsem for
writing, and when no other move happened lately that waits for an RCU grace period:
~10 ms of start latency per container on the 2-CPU test machine (measured: 12.5 ms
median start without, 25 ms with, interleaved; joins in a tight loop cost 0.05 ms,
which hides it). Without cgroups, stats come from /proc (cnm.runtime.stats).
Asking for a limit whose controller is missing raises InvalidParameter.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass

from cnm.errors import InternalError, InvalidParameter
from cnm.runtime import linux

CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")  # cpuacct: v1 only (v2's cpu counts time)
V2_CONTROLLERS = ("memory", "cpu", "pids")
# What `stats` reads, with accounting. Not v1's cpu: CPU time is cpuacct's (v2: cpu.stat
# exists in every cgroup); the cpu controller is joined only for a CPU limit.
ACCOUNTING = ("memory", "cpuacct", "pids")
CFS_PERIOD_US = 100_000


@dataclass(frozen=True)
class Hierarchy:
    version: int  # 1 or 2
    mountpoint: str
    own: str  # the caller's cgroup, relative to the mountpoint ("/" at the top)


@dataclass(frozen=True)
class Layout:
    controllers: dict[str, Hierarchy]  # controller -> the hierarchy that has it


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def parse_mountinfo(text: str) -> list[tuple[str, str, str, list[str]]]:
    """(mount root, mount point, fs type, super options) for each line of mountinfo."""
    out = []
    for line in text.splitlines():
        if " - " not in line:
            continue
        pre, post = line.split(" - ", 1)
        pre_f, post_f = pre.split(), post.split()
        if len(pre_f) < 5 or len(post_f) < 3:
            continue
        out.append((_unescape(pre_f[3]), _unescape(pre_f[4]), post_f[0], post_f[2].split(",")))
    return out


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/self/cgroup -> {controller: path}; the v2 entry ("0::/path") is under ""."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        for c in ctrls.split(",") if ctrls else [""]:
            out[c] = path
    return out


def _relative(own: str, mount_root: str) -> str:
    if mount_root != "/" and (own == mount_root or own.startswith(mount_root + "/")):
        own = own[len(mount_root) :] or "/"
    return own or "/"


def detect(mountinfo: str, proc_cgroup: str, v2_controllers: dict[str, str]) -> Layout:
    """Which hierarchy serves each controller. A v1 hierarchy wins over v2 (on a hybrid
    machine the unified mount has only the controllers no v1 hierarchy took).
    v2_controllers: {cgroup2 mountpoint: contents of its cgroup.controllers}."""
    own = parse_proc_cgroup(proc_cgroup)
    found: dict[str, Hierarchy] = {}
    v2: list[tuple[str, str]] = []
    for root, point, fstype, opts in parse_mountinfo(mountinfo):
        if fstype == "cgroup":
            for c in CONTROLLERS:
                if c in opts and c not in found:
                    found[c] = Hierarchy(1, point, _relative(own.get(c, "/"), root))
        elif fstype == "cgroup2":
            v2.append((root, point))
    for root, point in v2:
        available = v2_controllers.get(point, "").split()
        for c in V2_CONTROLLERS:
            if c in available and c not in found:
                found[c] = Hierarchy(2, point, _relative(own.get("", "/"), root))
    return Layout(found)


def container_dirs(layout: Layout, root: str, cid: str, controllers: list[str] | None = None) -> dict[str, str]:
    """controller -> absolute cgroup directory for container `cid`, for the given
    controllers (default: all available ones) that the layout has (pure)."""
    out = {}
    for c, h in layout.controllers.items():
        if controllers is not None and c not in controllers:
            continue
        if root.startswith("/"):
            base = root
        elif h.version == 1:
            base = f"{h.own.rstrip('/')}/{root}"
        else:
            base = f"/{root}"
        out[c] = os.path.normpath(f"{h.mountpoint}/{base}/{cid}")
    return out


def limit_writes(
    layout: Layout, memory: int | None, cpus: float | None, pids: int | None
) -> list[tuple[str, str, str]]:
    """(controller, file, value) to write for the requested limits (pure).
    Raises InvalidParameter when a limit's controller is missing."""
    want = {"memory": memory, "cpu": cpus, "pids": pids}
    what = {"memory": "a memory limit", "cpu": "a CPU limit", "pids": "a pids limit"}
    out: list[tuple[str, str, str]] = []
    for c, value in want.items():
        if value is None:
            continue
        h = layout.controllers.get(c)
        if h is None:
            raise InvalidParameter(f"cannot set {what[c]}: the {c} cgroup controller is not available on this host")
        if c == "memory":
            out.append((c, "memory.limit_in_bytes" if h.version == 1 else "memory.max", str(int(value))))
        elif c == "cpu":
            quota = max(1000, int(round(float(value) * CFS_PERIOD_US)))
            if h.version == 1:
                out += [(c, "cpu.cfs_period_us", str(CFS_PERIOD_US)), (c, "cpu.cfs_quota_us", str(quota))]
            else:
                out.append((c, "cpu.max", f"{quota} {CFS_PERIOD_US}"))
        else:
            out.append((c, "pids.max", str(int(value))))
    return out


def plan_mounts(proc_cgroup: str) -> list[tuple[str, str, str | None]]:
    """(directory name, fs type, options) to mount the hierarchies that hold our
    controllers, from /proc/self/cgroup: v1 co-mounted sets as they are ("cpu,cpuacct"),
    then cgroup2 for controllers no v1 hierarchy has (pure)."""
    out: list[tuple[str, str, str | None]] = []
    covered: set[str] = set()
    has_v2 = False
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and not parts[1]:
            has_v2 = True
            continue
        ctrls = [c for c in parts[1].split(",") if c]
        if set(ctrls) & set(CONTROLLERS):
            out.append((",".join(ctrls), "cgroup", ",".join(ctrls)))
            covered |= set(ctrls)
    if has_v2 and not set(V2_CONTROLLERS) <= covered:
        out.append(("unified", "cgroup2", None))
    return out


def container_view(layout: Layout, joined: list[str], proc_cgroup: str) -> list[tuple[str, str, str]]:
    """(directory under /sys/fs/cgroup, "" for that directory itself; fs type; options)
    of the hierarchies a container sees there: only those in which it has a cgroup of
    its own (`joined` controllers), so that, mounted from inside its cgroup namespace,
    each shows that cgroup as its root and nothing of the host's or other containers'
    (pure). v1 hierarchies by their co-mounted set ("cpu,cpuacct"); cgroup2 at
    /sys/fs/cgroup itself when it is the only one (Docker's layout on a v2 host)."""
    v1 = {c for c in joined if c in layout.controllers and layout.controllers[c].version == 1}
    v2 = any(c in layout.controllers and layout.controllers[c].version == 2 for c in joined)
    out = [
        (name, fstype, opts or "")
        for name, fstype, opts in plan_mounts(proc_cgroup)
        if (fstype == "cgroup" and set(name.split(",")) & v1) or (fstype == "cgroup2" and v2)
    ]
    if len(out) == 1 and out[0][1] == "cgroup2":
        return [("", "cgroup2", "")]
    return out


def read_layout(mount_dir: str | None = None) -> Layout:
    """Detect the calling process's cgroup layout from /proc (side effect: reads files).

    A daemon started with `ip netns exec` runs in a mount namespace of its own where
    /sys was remounted and no cgroup filesystem is visible. Cgroup membership does not
    depend on the mount namespace, so when no hierarchy is visible at all and
    `mount_dir` is given, the hierarchies listed in /proc/self/cgroup are mounted again
    under `mount_dir` (a directory the runtime owns) and detected from there. Mounting
    an existing v1 hierarchy with the same options attaches to it: same cgroups, same
    limits. This is the only mount the runtime makes outside a container, and only
    when a limit is asked for.
    """
    with open("/proc/self/cgroup") as f:
        proc_cgroup = f.read()
    layout = _detect_here(proc_cgroup)
    if layout.controllers or mount_dir is None:
        return layout
    for name, fstype, opts in plan_mounts(proc_cgroup):
        target = os.path.join(mount_dir, name)
        os.makedirs(target, exist_ok=True)
        if not os.path.ismount(target):
            try:
                linux.mount("cgroup", target, fstype, 0, opts)
            except OSError:
                continue  # that hierarchy stays unavailable; asking for its limit says so
    return _detect_here(proc_cgroup)


def _detect_here(proc_cgroup: str) -> Layout:
    with open("/proc/self/mountinfo") as f:
        mountinfo = f.read()
    v2: dict[str, str] = {}
    for _, point, fstype, _ in parse_mountinfo(mountinfo):
        if fstype == "cgroup2":
            try:
                with open(os.path.join(point, "cgroup.controllers")) as f:
                    v2[point] = f.read()
            except OSError:
                v2[point] = ""
    return detect(mountinfo, proc_cgroup, v2)


class Cgroups:
    """Creates and removes containers' cgroups under `root` (see the module doc)."""

    def __init__(self, root: str = "cnm", layout: Layout | None = None, mount_dir: str | None = None) -> None:
        if not root or ".." in root.split("/"):
            raise InvalidParameter(f"invalid cgroup root {root!r}")
        self.root = root
        self.mount_dir = mount_dir  # where to mount hierarchies if none is visible
        self._layout = layout
        self._proc_cgroup: str | None = None

    @property
    def layout(self) -> Layout:
        if self._layout is None:
            self._layout = read_layout(self.mount_dir)
        return self._layout

    def view(self, joined: list[str]) -> list[tuple[str, str, str]]:
        """container_view() for a container with cgroups in `joined` controllers."""
        if not joined:
            return []
        if self._proc_cgroup is None:
            with open("/proc/self/cgroup") as f:  # the daemon's membership: read once
                self._proc_cgroup = f.read()
        return container_view(self.layout, joined, self._proc_cgroup)

    def dirs(
        self,
        cid: str,
        memory: int | None = None,
        cpus: float | None = None,
        pids: int | None = None,
        accounting: bool = False,
    ) -> dict[str, str]:
        """controller -> directory the container will get: for these limits, or with
        `accounting` in every controller the machine has."""
        wanted = [c for c, v in (("memory", memory), ("cpu", cpus), ("pids", pids)) if v is not None]
        if accounting:
            wanted = list(dict.fromkeys(wanted + list(ACCOUNTING)))
        return container_dirs(self.layout, self.root, cid, wanted)

    def create(
        self,
        cid: str,
        memory: int | None = None,
        cpus: float | None = None,
        pids: int | None = None,
        accounting: bool = False,
    ) -> list[str]:
        """Make the container's cgroup directories and write its limits; return the
        directories (in creation order). Nothing is left behind on failure."""
        writes = limit_writes(self.layout, memory, cpus, pids)  # validate before touching
        dirs = self.dirs(cid, memory, cpus, pids, accounting)
        made: list[str] = []
        try:
            for c, d in dirs.items():
                if d in made:
                    continue  # v2 controllers, or v1 co-mounted ones, share one directory
                if self.layout.controllers[c].version == 2:
                    self._enable_v2(self.layout.controllers[c].mountpoint, os.path.dirname(d))
                os.makedirs(os.path.dirname(d), exist_ok=True)
                os.mkdir(d)
                made.append(d)
            for c, name, value in writes:
                with open(os.path.join(dirs[c], name), "w") as f:
                    f.write(value)
        except OSError as exc:
            remove(made)
            if exc.errno == errno.EEXIST:
                raise InternalError(f"cgroup {exc.filename} already exists: remove the stale container first") from exc
            raise InternalError(f"cannot set up the container's cgroups: {exc}") from exc
        return made

    @staticmethod
    def _enable_v2(mountpoint: str, parent: str) -> None:
        # v2 only lets a child use a controller its parent delegated, all the way down.
        ctrls = " ".join(f"+{c}" for c in V2_CONTROLLERS)
        path = mountpoint
        for part in [p for p in os.path.relpath(parent, mountpoint).split("/") if p and p != "."]:
            try:
                with open(os.path.join(path, "cgroup.subtree_control"), "w") as f:
                    f.write(ctrls)
            except OSError:
                pass  # best effort: a missing controller shows up as a failed limit write
            path = os.path.join(path, part)
            os.makedirs(path, exist_ok=True)
        try:
            with open(os.path.join(path, "cgroup.subtree_control"), "w") as f:
                f.write(ctrls)
        except OSError:
            pass


def remove(dirs: list[str], timeout: float = 2.0) -> list[str]:
    """rmdir each directory (idempotent). A cgroup whose last task is still exiting
    answers EBUSY for a moment: retry until `timeout`. Returns the errors left."""
    errors = []
    for d in reversed(dirs):
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno == errno.EBUSY and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                errors.append(f"cgroup {d}: {exc.strerror}")
                break
    return errors
