"""A container's confinement plan: capabilities, no_new_privs, seccomp program and the
list of mount operations that build its filesystem view. Built in the daemon, once per
start, from the ContainerSpec and facts about this host; executed in the container
process before exec by cnm.runtime.confine_apply (which does no thinking of its own).

Pure, except HostFacts.probe() and host_devices() (read /proc and /dev), and a small
cache of compiled seccomp programs (a program depends only on the profile, the
capability set and the host, so a daemon compiles the default one once).

What a default container gets (Docker's defaults, and where we differ, why):
- capabilities: Docker's 14 in the bounding, permitted and effective sets; inheritable
  and ambient empty (runc's behaviour since CVE-2022-24769);
- no_new_privs: ON by default (Docker leaves it off unless --security-opt
  no-new-privileges). The issue asks for it, and every container here runs as root
  from a host directory or the host's own filesystem, so a setuid binary has nothing to
  grant but trouble. `--security-opt no-new-privileges=false` restores Docker's default;
  --privileged implies false unless said otherwise;
- seccomp: Docker's default profile (cnm.runtime.seccomp_default), compiled for the
  container's capability set; none with --privileged or seccomp=unconfined;
- /proc: a fresh proc with Docker's masked and read-only paths;
- /dev: a private tmpfs holding null, zero, full, random, urandom and tty, devpts
  (newinstance) with ptmx -> pts/ptmx, shm, mqueue, and the fd/stdin/stdout/stderr/core
  links. The tmpfs is mounted nodev and the six nodes are bind mounts of the host's:
  Docker's device cgroup lets a container mknod but not open other devices; without a
  device cgroup, nodev gives the same result (mknod works, opening the node does not);
- /sys: a fresh sysfs, read-only, mounted after joining the network namespace, so
  /sys/class/net lists the container's own interfaces;
- rootfs mode: the overlay is mounted nodev (image files cannot smuggle device nodes);
- host-filesystem mode: every host mount read-only and nodev (mount_setattr, recursive),
  private tmpfs on /tmp, /var/tmp and /run, and the daemon's own paths (root and run
  directories, socket) hidden; `-v` binds, --tmpfs and `-v /:/` (a writable root) say
  otherwise.
"""

from __future__ import annotations

import functools
import glob
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from cnm.errors import InvalidParameter
from cnm.runtime import caps as capslib
from cnm.runtime import files, linux
from cnm.runtime import seccomp_profile as sp
from cnm.runtime.confine_opts import TMPFS_DEFAULTS, check_mounts, parse_security_opts
from cnm.runtime.overlay import overlay_options
from cnm.runtime.seccomp_bpf import compile_filter
from cnm.runtime.seccomp_default import DEFAULT
from cnm.runtime.seccomp_profile import kernel_version

MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
)
HOST_PRIVATE_DIRS = (("/tmp", "mode=1777"), ("/var/tmp", "mode=1777"), ("/run", "mode=755"))

_NOSUID_NODEV_NOEXEC = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
_PROPAGATION = {
    "rprivate": linux.MS_PRIVATE | linux.MS_REC,
    "private": linux.MS_PRIVATE,
    "rslave": linux.MS_SLAVE | linux.MS_REC,
    "slave": linux.MS_SLAVE,
}
_TMPFS_FLAG_WORDS = {
    "nosuid": linux.MS_NOSUID,
    "nodev": linux.MS_NODEV,
    "noexec": linux.MS_NOEXEC,
    "sync": 16,
    "dirsync": 128,
    "noatime": 1024,
    "nodiratime": 2048,
    "relatime": 1 << 21,
    "strictatime": linux.MS_STRICTATIME,
}
_CLEARS = {"suid": "nosuid", "dev": "nodev", "exec": "noexec"}


@dataclass(frozen=True)
class HostFacts:
    """What the plan needs to know about this machine and daemon."""

    available: frozenset[str]  # capabilities this process can grant
    last_cap: int  # /proc/sys/kernel/cap_last_cap
    machine: str  # uname -m
    kernel: tuple[int, int]
    hide: tuple[str, ...] = ()  # daemon paths a host-filesystem container must not see
    extra_masked: tuple[str, ...] = ()  # Docker also masks per-CPU thermal_throttle dirs

    @classmethod
    def probe(cls, hide: tuple[str, ...] = ()) -> HostFacts:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
        u = os.uname()
        thermal = tuple(sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/thermal_throttle")))
        return cls(
            available=capslib.available(),
            last_cap=last,
            machine=u.machine,
            kernel=kernel_version(u.release),
            hide=tuple(os.path.abspath(p) for p in hide if p),
            extra_masked=thermal,
        )


def host_devices(top: str = "/dev") -> list[tuple[str, int, int, int, int]]:
    """(path, mode, rdev, uid, gid) of every device node under /dev (not pts, shm,
    mqueue), for a privileged container's /dev (Docker: HostDevices)."""
    out = []
    for d, dirs, names in os.walk(top):
        dirs[:] = [x for x in dirs if not (d == top and x in ("pts", "shm", "mqueue"))]
        for n in names:
            p = os.path.join(d, n)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                out.append((p, st.st_mode, st.st_rdev, st.st_uid, st.st_gid))
    return out


# --- capabilities, no_new_privs, seccomp ------------------------------------------------


def capability_set(cap_add: list[str], cap_drop: list[str], privileged: bool, host: HostFacts) -> frozenset[str]:
    return capslib.effective_set(list(cap_add), list(cap_drop), privileged, host.available)


@functools.lru_cache(maxsize=32)
def _program(profile: str, capset: frozenset[str], machine: str, kernel: tuple[int, int]) -> tuple[bytes, int]:
    if profile == "default":
        prof = DEFAULT
    else:
        prof = sp.parse(profile)
    res = sp.resolve(prof, capset, arch="amd64", seccomp_arch="SCMP_ARCH_X86_64", kernel=kernel)
    return compile_filter(res), res.flags


def seccomp_program(
    setting: str, privileged: bool, capset: frozenset[str], host: HostFacts
) -> tuple[bytes, int] | None:
    """(BPF program, seccomp flags) or None for no filter. Docker: a privileged container
    gets no filter unless a profile is given explicitly."""
    if setting == "unconfined" or (privileged and setting == "default"):
        return None
    if host.machine != "x86_64":
        raise InvalidParameter(
            f"seccomp filters are compiled for x86_64 only, not {host.machine}: "
            "run with --security-opt seccomp=unconfined"
        )
    return _program(setting, capset, host.machine, host.kernel)


# --- the filesystem view -----------------------------------------------------------------


def _tmpfs_mount(words: list[str], defaults: tuple[str, ...] = TMPFS_DEFAULTS) -> tuple[int, str]:
    """(MS_* flags, data) of a tmpfs from Docker-style words; the user's words win over
    the defaults ("exec" clears "noexec"); rw, atime, async and the like are the kernel's
    defaults anyway."""
    active = set(defaults)
    data = []
    for w in words:
        if "=" in w:
            data.append(w)
        elif w in _CLEARS:
            active.discard(_CLEARS[w])
        elif w in _TMPFS_FLAG_WORDS:
            active.add(w)
    flags = 0
    for w in active:
        flags |= _TMPFS_FLAG_WORDS[w]
    return flags, ",".join(data)


def _dev_ops(
    privileged: bool,
    devices: list[dict],
    kcore: bool,
    console: str | None,
    host_devs: list[tuple[str, int, int, int, int]],
) -> list[tuple]:
    dev_flags = linux.MS_NOSUID | linux.MS_STRICTATIME | (0 if privileged else linux.MS_NODEV)
    ops: list[tuple] = [("mount", "tmpfs", "/dev", "tmpfs", dev_flags, "mode=755,size=65536k", False)]
    if privileged:
        ops += [("mknod", path, mode, rdev, uid, gid) for path, mode, rdev, uid, gid in host_devs]
    else:
        ops += [("bind", f"/dev/{n}", f"/dev/{n}", "file", False, False, 0, False) for n in DEVICES]
    for d in devices:
        ops.append(("bind", d["host"], d["container"], "auto", False, False, 0, False))
    if console:
        ops.append(("bind", console, "/dev/console", "file", False, False, 0, False))
    ops += [
        (
            "mount",
            "devpts",
            "/dev/pts",
            "devpts",
            linux.MS_NOSUID | linux.MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
            False,
        ),
        ("symlink", "pts/ptmx", "/dev/ptmx"),
        ("mount", "shm", "/dev/shm", "tmpfs", _NOSUID_NODEV_NOEXEC, "mode=1777,size=65536k", False),
        ("mount", "mqueue", "/dev/mqueue", "mqueue", _NOSUID_NODEV_NOEXEC, "", False),
    ]
    ops += [("symlink", src, dst) for src, dst in DEV_LINKS]
    if kcore:
        ops.append(("symlink", "/proc/kcore", "/dev/core"))
    return ops


def _cgroup_ops(view: Sequence[tuple[str, str, str]], privileged: bool) -> list[tuple]:
    """/sys/fs/cgroup as Docker shows it: the container's own cgroups (the supervisor
    mounts them from inside the container's cgroup namespace, so each hierarchy's root
    is the container's cgroup), read-only unless privileged. Nothing when the container
    has no cgroup of its own (no limits): sysfs's empty directory stays."""
    if not view:
        return []
    ops: list[tuple] = []
    if any(name for name, _, _ in view):
        ops.append(("mount", "tmpfs", "/sys/fs/cgroup", "tmpfs", _NOSUID_NODEV_NOEXEC, "mode=755,size=64k", False))
    for name, fstype, options in view:
        ops.append(
            (
                "mount",
                "cgroup",
                "/sys/fs/cgroup" + (f"/{name}" if name else ""),
                fstype,
                _NOSUID_NODEV_NOEXEC,
                options,
                False,
            )
        )
        if "," in name:
            ops += [("symlink", name, f"/sys/fs/cgroup/{c}") for c in name.split(",")]  # cpu -> cpu,cpuacct
    if not privileged:
        ops.append(("setattr", "/sys/fs/cgroup", linux.MOUNT_ATTR_RDONLY, True))
    return ops


def _user_ops(mounts: list[dict], privileged: bool) -> list[tuple]:
    """-v/--mount binds and --tmpfs. Unless privileged they are nodev: there is no device
    cgroup here (Docker's stops a container with CAP_MKNOD from opening a node it makes),
    so a node made in a volume would open the host's disk (`mknod /data/sda b 8 0`)."""
    nodev = not privileged
    ops: list[tuple] = []
    for m in mounts:
        if m["type"] == "bind":
            if m["target"] == "/":
                continue  # "-v /:/" in host mode: handled by not making the root read-only
            ops.append(
                (
                    "bind",
                    m["source"],
                    m["target"],
                    "auto",
                    m.get("recursive", True),
                    m["read_only"],
                    _PROPAGATION[m.get("propagation", "rprivate")],
                    False,
                    nodev,
                )
            )
        else:
            flags, data = _tmpfs_mount(list(m["options"]))
            if m["read_only"]:
                flags |= linux.MS_RDONLY
            if nodev:
                flags |= linux.MS_NODEV  # even with the "dev" word: see above
            ops.append(("mount", "tmpfs", m["target"], "tmpfs", flags, data, False))
    return ops


def filesystem_ops(
    *,
    overlay: tuple[list[str], str, str] | None,
    privileged: bool,
    read_only: bool,
    mounts: list[dict],
    devices: list[dict],
    etc_binds: list[tuple[str, str]],
    masked: list[str] | None,
    readonly: list[str] | None,
    systempaths_unconfined: bool,
    host: HostFacts,
    workdir: str = "/",
    kcore: bool = True,
    console: str | None = None,
    host_devs: Sequence[tuple[str, int, int, int, int]] = (),
    cgroups: Sequence[tuple[str, str, str]] = (),
) -> list[tuple]:
    """The mount operations, in order, for one container (paths inside the container)."""
    host_mode = overlay is None
    mounts = check_mounts(list(mounts), host_mode)
    ops: list[tuple] = []
    if host_mode:
        writable_root = any(m["target"] == "/" and m["type"] == "bind" and not m["read_only"] for m in mounts)
        attrs = (0 if writable_root else linux.MOUNT_ATTR_RDONLY) | (0 if privileged else linux.MOUNT_ATTR_NODEV)
        if attrs:
            ops.append(("setattr", "/", attrs, True))
    if overlay is not None:
        lowers, upper, work = overlay
        try:
            cwd, options = overlay_options(lowers, upper, work)
        except ValueError as exc:
            raise InvalidParameter(str(exc)) from None
        if cwd != "/":
            ops.append(("chdir", cwd))  # many layers: lowerdir= relative to their directory
        ops.append(("mount", "overlay", "/", "overlay", 0 if privileged else linux.MS_NODEV, options, False))
    ops.append(("mount", "proc", "/proc", "proc", _NOSUID_NODEV_NOEXEC, "", False))
    ops += _dev_ops(privileged, devices, kcore, console, list(host_devs))
    # sysfs shows the network namespace of whoever mounts it: ours, joined before. Read-only
    # per mount, not per superblock: one sysfs superblock serves every mount in a network
    # namespace (the host's /sys in host networking), and asking it for MS_RDONLY is EBUSY.
    ops.append(("mount", "sysfs", "/sys", "sysfs", _NOSUID_NODEV_NOEXEC, "", False))
    ops += _cgroup_ops(cgroups, privileged)
    if not privileged:
        ops.append(("setattr", "/sys", linux.MOUNT_ATTR_RDONLY, False))
    if host_mode:
        user_targets = {m["target"] for m in mounts}
        ops += [
            ("mount", "tmpfs", d, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, opt, True)
            for d, opt in HOST_PRIVATE_DIRS
            if d not in user_targets
        ]
        ops += [("mask", p) for p in host.hide]
    # /etc/hosts, resolv.conf, hostname: in the host mode only where the file can be
    # (it exists, or lies in one of the private tmpfs: /etc/resolv.conf -> /run/...).
    ops += [("bind", src, dst, "file", False, False, 0, host_mode) for src, dst in etc_binds]
    ops += _user_ops(mounts, privileged)
    if not privileged and not systempaths_unconfined:
        ops += [("mask", p) for p in (MASKED_PATHS + host.extra_masked if masked is None else masked)]
        ops += [("ro", p) for p in (READONLY_PATHS if readonly is None else readonly)]
    if not host_mode and workdir != "/":
        ops.append(("dir", workdir))  # Docker creates a missing working directory
    if read_only and not host_mode:
        ops.append(("remount_ro", "/"))
    return ops


def plan(
    spec,
    binds: list[tuple[str, str]],
    host: HostFacts,
    cdir: str | None = None,
    console: str | None = None,
    cgroups: Sequence[tuple[str, str, str]] = (),
) -> dict:
    """Everything confine_apply needs, marshal-able: {"root", "ops", "caps", "last_cap",
    "nnp", "seccomp", "seccomp_flags"}. `binds` are the /etc files (source, target);
    `cdir` the container's directory holding the overlay's upper/work/merged dirs (for
    a spec with a rootfs)."""
    sec = parse_security_opts(spec.security_opt)
    capset = capability_set(spec.cap_add, spec.cap_drop, spec.privileged, host)
    prog = seccomp_program(sec.seccomp, spec.privileged, capset, host)
    nnp = sec.no_new_privileges if sec.no_new_privileges is not None else not spec.privileged
    overlay = root = None
    if spec.rootfs is not None:
        if cdir is None:
            raise ValueError("a rootfs container's plan needs its directory")
        root = os.path.join(cdir, files.MERGED)
        overlay = (spec.rootfs, os.path.join(cdir, files.UPPER), os.path.join(cdir, files.WORK))
    ops = filesystem_ops(
        overlay=overlay,
        privileged=spec.privileged,
        read_only=spec.read_only,
        mounts=spec.mounts,
        devices=spec.devices,
        etc_binds=binds,
        masked=spec.masked_paths,
        readonly=spec.readonly_paths,
        systempaths_unconfined=sec.systempaths_unconfined,
        host=host,
        workdir=spec.workdir,
        kcore=os.path.exists("/proc/kcore"),
        console=console,
        host_devs=host_devices() if spec.privileged else [],
        cgroups=cgroups,
    )
    return {
        "root": root,
        "ops": ops,
        "caps": capslib.mask(capset),
        "last_cap": host.last_cap,
        "nnp": nnp,
        "seccomp": prog[0] if prog else None,
        "seccomp_flags": prog[1] if prog else 0,
    }


def check(spec, host: HostFacts) -> None:
    """Everything plan() could refuse, before the runtime makes anything: capability
    names available here, the seccomp profile, --device paths, bind sources (a missing
    one is fine only when it will be created: Docker's -v does that)."""
    sec = parse_security_opts(spec.security_opt)
    capset = capability_set(spec.cap_add, spec.cap_drop, spec.privileged, host)
    seccomp_program(sec.seccomp, spec.privileged, capset, host)
    for d in spec.devices:
        if not os.path.exists(d["host"]):
            raise InvalidParameter(
                f"error gathering device information while adding custom device "
                f"{d['host']!r}: no such file or directory"
            )
    for m in spec.mounts:
        if m["type"] == "bind" and not m.get("create") and not os.path.exists(m["source"]):
            raise InvalidParameter(
                f'invalid mount config for type "bind": bind source path does not exist: {m["source"]}'
            )


def make_bind_sources(spec) -> None:
    """Create the missing source directories of -v binds on the host (Docker does)."""
    for m in spec.mounts:
        if m["type"] == "bind" and m.get("create") and not os.path.exists(m["source"]):
            os.makedirs(m["source"], mode=0o755, exist_ok=True)


def lock_plan(full: dict) -> dict:
    """The part of a plan an exec'd process needs (it joins the mount namespace)."""
    return {k: full[k] for k in ("caps", "last_cap", "nnp", "seccomp", "seccomp_flags")}
