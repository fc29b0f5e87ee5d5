"""The daemon template ("zygote"): a pre-imported interpreter that forks lab daemons.

Started by cnm.lab.zygote.DaemonZygote as

    python -I -c "<put the project on sys.path>; from cnm.lab.zygote_main import main; main()" <fd>

It imports everything a daemon imports on its way to serving (PRELOAD), freezes the
garbage collector's view of it (gc.freeze(): no collection in a child ever writes to,
and so copies, those objects), says "R" on the control socket (a SOCK_SEQPACKET
socketpair end) and serves requests until the lab's end closes.

Why: a daemon exec'd on its own spends ~0.4 s of CPU importing and holds ~47 MB of
its own (PSS); forked from here it starts in milliseconds and shares the imported
code and objects with every other daemon of the lab (~22 MB PSS each at 20 hosts,
bench/lab_scale.py). Each daemon is still a separate process in its own network
namespace, as `ip netns exec … net daemon` made it.

A request is one message: a JSON DaemonConfig with three descriptors attached
(SCM_RIGHTS): the reply socket, the host's network namespace and the daemon's log.
The template forks; the child calls setsid() and forks the daemon, then exits (the
template reaps it), so a daemon is never the template's child, shares no session
with it and outlives it. The daemon enters the namespace the way `ip netns exec`
does (setns, a private mount namespace with /sys mounted for that network
namespace), writes "pid N" on the reply socket and runs cnm.daemon.run_daemon.
"""

from __future__ import annotations

import _socket
import gc
import importlib
import json
import os
import sys

# What a daemon imports on its way to serving a lab, beyond cnm.daemon itself (most of
# it lazily, inside functions: start-up time of `net daemon` on its own). Anything
# left out still works; it is imported after the fork and costs each daemon its own
# copy. CNM_ZYGOTE_REPORT=DIR makes each daemon write what it imported after the
# fork to DIR/<pid>.modules when it exits (how this list was made).
PRELOAD = (
    "cnm.daemon",
    "drivers",
    "drivers.remote",
    "drivers.overlay",
    "drivers.overlay.filter",
    "drivers.bridge.nftables",
    "drivers.unconfigured",
    "drivers.host",
    "drivers.null",
    "ipam",
    "ipam.remote",
    "ipam.default.host_conflicts",
    "cnm.driverapi",
    "cnm.firewall",
    "cnm.images.service",
    "cnm.images.store",
    "cnm.ipamapi",
    "cnm.osl.sysctl",
    "cnm.osl.netlink",
    "cnm.osl.vxlan",
    "cnm.osl.netns",
    "cnm.plugins.discovery",
    "cnm.ports",
    "cnm.runtime",
    "cnm.runtime.seccomp_profile",
    "cnm.sandbox.osl",
    "cnm.services",
    "cnm.statedirs",
    "cnm.store.sqlite",
    "cnm.store.etcd",
    "cnm.store.etcd_watch",
    "cnm.cluster.sync",
    "cnm.cluster.lease",
    "cnm.cluster.peerset",
    "cnm.cluster.vni",
    "cnm.api.server",
    "cnm.api.images",
    "cnm.api.system",
    "cnm.api.execs",
    "cnm.api.diskusage",
    "cnm.api.stats",
    "cnm.api.top",
    "cnm.api.attach",
    "cnm.api.container_filters",
    "cnm.api.containers",
    "cnm.api.events",
    "cnm.api.wait",
    "cnm.execs",
    "cnm.render_container",
    "cnm.dns.resolvconf",
    "cnm.dns.server",
    "cnm.runtime.runtime",
    "cnm.runtime.template",
    "cnm.runtime.shim",
    "cnm.runtime.confine",
    "cnm.runtime.confine_apply",
    "cnm.runtime.confine_opts",
    "cnm.runtime.cgroups",
    "cnm.runtime.caps",
    "cnm.runtime.overlay",
    "cnm.runtime.users",
    "cnm.runtime.seccomp_bpf",
    "cnm.runtime.seccomp_default",
    "cnm.runtime.seccomp_syscalls",
    "glob",
    "pyroute2",
    "logging.handlers",
    "ctypes.util",
)
M_ARENA_MAX = -8
TRIM_SECONDS = 10.0

_ANC = _socket.CMSG_SPACE(3 * 4)
_MS_REC, _MS_SLAVE, _MNT_DETACH = 0x4000, 0x80000, 0x2


def preload(names: tuple[str, ...] = PRELOAD) -> list[str]:
    """Import what the daemons will need; the names that failed (left to the daemon)."""
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # an optional dependency: the daemon meets it as it would anyway
            failed.append(name)
    from cnm.osl import nft

    nft.preload()  # libnftables, relocated once for every daemon
    return failed


def warm_up() -> None:
    """Build once what every daemon builds the same way on first use: the default
    seccomp program of a container (compiled per daemon otherwise, ~150 kB each)."""
    try:
        from cnm.runtime import confine

        host = confine.HostFacts.probe()
        confine.seccomp_program("default", False, confine.capability_set([], [], False, host), host)
    except Exception:  # the daemon compiles it itself, as it would have
        pass


def _one_malloc_arena() -> None:
    """One malloc arena for all of a daemon's threads (glibc gives each thread one of
    its own, up to 8 per core, each keeping its freed memory): ~3 MB less per daemon
    with libnftables in the process (bench/lab_scale.py, 20 hosts). Inherited by the
    forked daemons; the GIL serialises their threads' allocations anyway."""
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1)
    except (OSError, AttributeError):
        pass


def _trim_heap_every(seconds: float) -> None:
    """Give freed heap pages back to the kernel now and then: a daemon frees what its
    start-up and each burst of requests allocated, but glibc keeps free chunks inside
    the heap, and those pages (copies of the template's, mostly) count in its PSS.
    malloc_trim(0) on a lab daemon: 0.8 MB less of ~23 MB private (2 overlays, 2
    containers); the call walks the free lists in well under a millisecond."""
    import ctypes
    import threading
    import time

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return  # not glibc

    def loop() -> None:
        while True:
            time.sleep(seconds)
            trim(0)

    threading.Thread(target=loop, name="malloc-trim", daemon=True).start()


def _fds(ancdata: list) -> list[int]:
    out: list[int] = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            out += [int.from_bytes(data[i : i + 4], sys.byteorder, signed=True) for i in range(0, usable, 4)]
    return out


def _enter(netns_fd: int) -> None:
    """Into the host: its network namespace, and a mount namespace of our own with
    /sys showing that network namespace (what `ip netns exec` does)."""
    from cnm.runtime import linux

    linux.setns(netns_fd, linux.CLONE_NEWNET)
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, _MS_SLAVE | _MS_REC)  # nothing we mount leaks back
    try:
        linux.umount2("/sys", _MNT_DETACH)
    except Exception:
        pass  # no /sys mounted: mount one anyway
    linux.mount("sysfs", "/sys", "sysfs", 0)


def _set_cmdline(text: str) -> None:
    """Show the daemon as `net daemon …` in ps rather than as the template's command
    line: rewrite the argument area in place (PR_SET_MM would need CAP_SYS_RESOURCE,
    which containers often lack). The template's own command line carries padding
    (cnm.lab.zygote.CMDLINE_ROOM) so that a long one fits; longer text is cut."""
    import ctypes

    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    arg_start, arg_end = int(fields[45]), int(fields[46])  # fields 48 and 49 of proc(5)
    room = arg_end - arg_start
    if room <= 1:
        return
    raw = text.encode()[: room - 1]
    ctypes.memmove(arg_start, raw.replace(b" ", b"\0") + b"\0" * (room - len(raw)), room)


def _daemon(config: dict, reply: int, netns_fd: int, log_fd: int) -> int:
    from cnm.daemon import DaemonConfig, run_daemon
    from cnm.runtime import linux

    _enter(netns_fd)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.closerange(3, reply)
    os.closerange(reply + 1, 1 << 16)
    linux.set_comm("net-daemon")
    _set_cmdline(str(config.pop("cmdline", "net daemon")))
    os.write(reply, f"pid {os.getpid()}\n".encode())
    os.close(reply)
    before = set(sys.modules)
    gc.enable()
    _trim_heap_every(TRIM_SECONDS)
    code = run_daemon(DaemonConfig(**config))
    report = os.environ.get("CNM_ZYGOTE_REPORT")
    if report:
        with open(os.path.join(report, f"{os.getpid()}.modules"), "w") as f:
            f.write("\n".join(sorted(set(sys.modules) - before)) + "\n")
    return code


def _fork_daemon(msg: bytes, fds: list[int]) -> None:
    reply = fds[0]
    try:
        config = json.loads(msg)
        if len(fds) != 3 or not isinstance(config, dict):
            raise ValueError("want a config and three descriptors")
        pid = os.fork()
    except (OSError, ValueError) as exc:
        os.write(reply, f"err {exc}\n".encode())
        return
    if pid == 0:
        code = 1
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            code = _daemon(config, *fds)
        except BaseException as exc:
            try:
                os.write(2, f"cnm daemon template: {exc!r}\n".encode())
            except OSError:
                pass
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.waitpid(pid, 0)  # the intermediate exits at once; the daemon is on its own


def main() -> None:
    ctl_fd = int(sys.argv[1])
    lab_command = os.getppid()  # it dies (killed mid-up): we fork nothing more
    os.chdir("/")
    gc.disable()  # no collections while importing: fewer holes to copy later
    _one_malloc_arena()
    preload()
    warm_up()
    gc.freeze()
    if os.getppid() != lab_command:
        os._exit(0)  # the lab command died while we imported
    ctl = _socket.socket(fileno=ctl_fd)
    ctl.send(b"R")
    while True:
        try:
            msg, anc, _flags, _addr = ctl.recvmsg(1 << 16, _ANC)
        except ConnectionError:
            break
        if not msg:
            break  # the lab's end closed: we are done (the daemons live on)
        fds = _fds(anc)
        try:
            if os.getppid() != lab_command:
                break  # a request its sender died after: a daemon now would outlive `down`
            if fds:
                _fork_daemon(msg, fds)
        finally:
            for fd in fds:
                os.close(fd)
    os._exit(0)
