"""Runtime: start, watch, stop and remove containers, each under its own supervisor.

Supervisors are forked by a template process (cnm.runtime.template), started with the
first container (or by `prestart()`) and again whenever it is found dead; `close()`
ends it (running containers are not affected).

State lives on disk only (see cnm.runtime.files for the layout), so a restarted
daemon gets the same view back with `adopt()`; the Runtime object holds no per-container
memory. Processes are addressed through pidfds after checking their start time, so a
recycled pid is never signalled.

Exit notification: `exit_fd(id)` returns a pidfd of the container's shim. It becomes
readable when the shim exits, which is after it wrote exit.json; an asyncio daemon does
`loop.add_reader(fd, on_exit)`, then calls `state(id)` and closes the fd. No polling.
"""
from __future__ import annotations

import builtins
import json
import logging
import marshal
import os
import select
import shutil
import signal
import socket
import time

from cnm import errors
from cnm.errors import Conflict, InternalError, InvalidParameter, NotFound, Unavailable
from cnm.runtime import cgroups as cg
from cnm.runtime import confine, files, linux, shim
from cnm.runtime.spec import HOST, ID_PATTERN, ContainerSpec
from cnm.runtime.state import (
    CREATED,
    EXITED,
    RUNNING,
    ContainerState,
    DirFiles,
    derive,
    read_dir,
)
from cnm.runtime.template import Template

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0
# Under state_dir: cgroup hierarchies re-mounted when the daemon's mount namespace has
# none (a daemon started by `ip netns exec`); see cgroups.read_layout.
CGROUPFS = ".cgroupfs"


def nsenter_argv(pid: int, argv: list[str]) -> list[str]:
    """util-linux nsenter entering every namespace of `pid` plus its root and cwd."""
    return ["nsenter", f"--target={pid}", "--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup",
            "--root", "--wd", "--", *argv]


class Runtime:
    """Containers under `state_dir`, one directory each; cgroups under `cgroup_root`
    (default "cnm"; see cnm.runtime.cgroups). `hide`: paths a container on the host's
    filesystem must not see (the daemon's root and run directories and socket; the
    state directory always)."""

    def __init__(self, state_dir: str, cgroup_root: str | None = None, python: str | None = None,
                 hide: tuple[str, ...] = ()) -> None:
        from cnm.statedirs import private_subdir
        self.state_dir = os.path.abspath(state_dir)
        os.makedirs(os.path.dirname(self.state_dir), exist_ok=True)
        private_subdir(self.state_dir, 0o700)   # specs and logs hold containers' secrets
        self.cgroups = cg.Cgroups(cgroup_root or "cnm", mount_dir=os.path.join(self.state_dir, CGROUPFS))
        self.template = Template(python)
        self.boot_id = linux.boot_id()
        self.host = confine.HostFacts.probe(tuple(hide) + (self.state_dir,))

    def prestart(self) -> None:
        """Start the template process now rather than at the first container start."""
        self.template.ensure()

    def close(self) -> None:
        """End the template process. Containers and their supervisors keep running."""
        self.template.close()

    # --- paths and files ------------------------------------------------------------

    def _dir(self, cid: str) -> str:
        if not isinstance(cid, str) or not ID_PATTERN.match(cid):
            raise InvalidParameter(f"invalid container id {cid!r}")
        return os.path.join(self.state_dir, cid)

    def _require(self, cid: str) -> str:
        cdir = self._dir(cid)
        if not os.path.isfile(os.path.join(cdir, files.SPEC)):
            raise NotFound(f"no such container: {cid}")
        return cdir

    def spec(self, cid: str) -> ContainerSpec:
        with open(os.path.join(self._require(cid), files.SPEC)) as f:
            return ContainerSpec.from_json(f.read())

    def logs_paths(self, cid: str) -> tuple[str, str]:
        """(stdout log, stderr log) of the container; the files may not exist before start."""
        cdir = self._require(cid)
        return os.path.join(cdir, files.STDOUT), os.path.join(cdir, files.STDERR)

    # --- start ----------------------------------------------------------------------

    def start(self, spec: ContainerSpec) -> ContainerState:
        """Start the container and return once its process has exec'd. On any failure
        raise (InvalidParameter for a bad command, NotFound for a missing rootfs or
        netns, Conflict for a duplicate id) and leave nothing behind."""
        spec.validate()
        for lower in spec.rootfs or ():
            if not os.path.isdir(lower):
                raise NotFound(f"rootfs {lower} not found: it must be an existing directory")
        if spec.netns != HOST and not os.path.exists(spec.netns):
            raise NotFound(f"network namespace {spec.netns} not found")
        if _limited(spec):  # look at cgroups only when asked to: detection may mount
            cg.limit_writes(self.cgroups.layout, spec.memory, spec.cpus, spec.pids_limit)  # fail before mkdir
        confine.check(spec, self.host)
        cdir = self._dir(spec.id)
        try:
            os.mkdir(cdir, 0o700)
        except FileExistsError as exc:
            raise Conflict(f"container {spec.id} already exists: remove it first") from exc
        try:
            return self._start(spec, cdir)
        except BaseException:
            errs = self._discard(cdir)
            if errs:
                log.warning("cleanup after a failed start of %s: %s", spec.id, "; ".join(errs))
            raise

    def _start(self, spec: ContainerSpec, cdir: str) -> ContainerState:
        files.write_atomic(os.path.join(cdir, files.SPEC), spec.to_json())
        binds = []
        for name, target, content in ((files.HOSTS, "/etc/hosts", spec.hosts),
                                      (files.RESOLV_CONF, "/etc/resolv.conf", spec.resolv_conf),
                                      (files.HOSTNAME, "/etc/hostname", spec.hostname_file())):
            if content is not None:
                path = os.path.join(cdir, name)
                # 0644 whatever the daemon's umask: any user inside the container reads
                # them (the container directory, 0700, keeps them from the host's users).
                files.write_atomic(path, content, mode=0o644)
                binds.append((path, target))
        if spec.rootfs is not None:
            for sub in (files.UPPER, files.WORK, files.MERGED):
                os.mkdir(os.path.join(cdir, sub), 0o700)
            os.chmod(os.path.join(cdir, files.UPPER), 0o755)   # the container's "/": mode 0755 as usual
        # Record the cgroup paths before making them, so a crash in between still
        # leaves a list for remove() to clean.
        made: list[str] = []
        view: list[tuple[str, str, str]] = []
        if _limited(spec):
            by_controller = self.cgroups.dirs(spec.id, spec.memory, spec.cpus, spec.pids_limit)
            dirs = list(dict.fromkeys(by_controller.values()))
            files.write_atomic(os.path.join(cdir, files.CGROUPS), json.dumps(dirs))
            made = self.cgroups.create(spec.id, spec.memory, spec.cpus, spec.pids_limit)
            view = self.cgroups.view(list(by_controller))   # its /sys/fs/cgroup
        confine.make_bind_sources(spec)
        plan = confine.plan(spec, binds, self.host, cdir, cgroups=view)
        files.write_atomic(os.path.join(cdir, files.LOCK_PLAN), marshal.dumps(confine.lock_plan(plan)))
        cfg = {"dir": cdir, "argv": list(spec.argv), "env": spec.full_env(), "hostname": spec.hostname,
               "workdir": spec.workdir, "netns": None if spec.netns == HOST else spec.netns,
               "cgroups": made, "confine": plan, "user": spec.user}
        reply = self._spawn(cdir, cfg)
        kind, _, rest = reply.partition(" ")
        if kind == "ok":
            return self.state(spec.id)
        if kind == "err":
            name, _, message = rest.partition(" ")
            cls = getattr(errors, name, None)
            if not (isinstance(cls, type) and issubclass(cls, errors.CNMError)):
                cls = InternalError
            raise cls(message)
        raise InternalError(f"the container supervisor exited without starting {spec.id}: {_tail(cdir)}")

    def _spawn(self, cdir: str, cfg: dict) -> str:
        """Have the template fork the supervisor, hand it `cfg`, return its answer. If
        the template died with the request (EOF, no answer) and no supervisor claimed
        the directory, ask once more: a new template is started on the way."""
        dirfd = os.open(cdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for attempt in (1, 2):
                reply = self._ask(dirfd, cfg)
                if reply or os.path.lexists(os.path.join(cdir, files.SHIM_PID)):
                    return reply
                log.warning("container %s: the template process went away with the start request%s",
                            os.path.basename(cdir), "; asking a new one" if attempt == 1 else " again")
        finally:
            os.close(dirfd)
        raise Unavailable(f"container {os.path.basename(cdir)} was not started: the supervisor template process "
                          "went away twice while starting it (see the daemon's log); try again")

    def _ask(self, dirfd: int, cfg: dict) -> str:
        sock = self.template.request(shim.OP_START, dirfd)
        buf = b""
        with sock:
            try:
                sock.sendall(marshal.dumps(cfg))
                sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionError):
                return ""  # nobody holds the other end: the request died with the template
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not _readable(sock.fileno(), remaining):
                    # A template stuck with the request would fork it late: end it. The
                    # caller fences the directory, so a late supervisor cannot claim it.
                    self.template.kill()
                    raise Unavailable(f"container {cfg['dir'].rsplit('/', 1)[-1]} did not start within "
                                      f"{START_TIMEOUT:.0f}s")
                try:
                    chunk = sock.recv(4096)
                except ConnectionError:
                    chunk = b""
                if not chunk:
                    break
                buf += chunk
        return buf.decode(errors="replace").strip()

    # --- state ----------------------------------------------------------------------

    def _shim_ident(self, d: DirFiles) -> tuple[int, int] | None:
        if d.shim is not None:
            return d.shim[0], d.shim[1]
        started = d.started or {}
        if isinstance(started.get("shim_pid"), int) and isinstance(started.get("shim_start"), int):
            return started["shim_pid"], started["shim_start"]
        return None

    def _shim_alive(self, cdir: str, d: DirFiles) -> bool:
        """Is the supervisor recorded in `d` running? Checked by pid, start time, name
        and boot id (a state dir that survived a reboot names processes of another boot)."""
        if d.shim is not None and d.shim[2] is not None and d.shim[2] != self.boot_id:
            return False
        ident = self._shim_ident(d)
        return ident is not None and linux.is_alive(ident[0], ident[1], files.SHIM_COMM)

    def state(self, cid: str) -> ContainerState:
        """The container's state from its directory. A shim found dead without an
        exit status is settled here once: exit.json is written with code 137 and the
        container process, if it somehow still runs, is killed."""
        cdir = self._require(cid)
        d = read_dir(cdir)
        alive = self._shim_alive(cdir, d)
        if not alive and d.exited is None:
            d = read_dir(cdir)  # the shim may have written exit.json and exited meanwhile
            if d.started is not None and d.exited is None:
                self._settle_lost(cdir, d)
                d = read_dir(cdir)
        return derive(cid, d, alive)

    def _settle_lost(self, cdir: str, d: DirFiles) -> None:
        started = d.started or {}
        self._signal_pid(started.get("pid"), started.get("pid_start"), signal.SIGKILL)
        files.write_atomic(os.path.join(cdir, files.EXIT), files.dump_flat({
            "exit_code": files.LOST_EXIT_CODE, "finished_at": files.rfc3339(time.time()),
            "error": "supervisor died without recording the exit status"}))

    def list(self) -> builtins.list[ContainerState]:
        out = []
        for name in sorted(os.listdir(self.state_dir)):
            try:
                out.append(self.state(name))
            except (NotFound, InvalidParameter):
                continue  # not a container directory
        return out

    def adopt(self) -> builtins.list[ContainerState]:
        """Rebuild the view after a daemon restart: running shims (verified by pid, start
        time and command line) stay running; ended ones report their exit status; a shim
        that died without one is settled as exited 137; a start that crashed half-way
        (no state.json, no shim) is cleaned away. Returns the containers kept."""
        kept = []
        for st in self.list():
            if st.status == CREATED:
                cdir = self._dir(st.id)
                if not self._shim_alive(cdir, read_dir(cdir)):
                    log.warning("removing container %s: its start never completed", st.id)
                    self._discard(cdir)
                    continue
            kept.append(st)
        return kept

    # --- waiting and signals --------------------------------------------------------

    def exit_fd(self, cid: str) -> int | None:
        """A pidfd that becomes readable when the container's supervisor exits (after
        exit.json is written); None if it is not running. The caller closes it."""
        cdir = self._require(cid)
        d = read_dir(cdir)
        ident = self._shim_ident(d)
        if ident is None:
            return None
        try:
            fd = os.pidfd_open(ident[0])
        except ProcessLookupError:
            return None
        # Verify after opening: the fd now pins the process, so the check cannot race.
        if not self._shim_alive(cdir, d):
            os.close(fd)
            return None
        return fd

    def wait(self, cid: str, timeout: float | None = None) -> int:
        """Block until the container exits; return its exit code. Unavailable on timeout."""
        fd = self.exit_fd(cid)
        if fd is not None:
            try:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
                while True:
                    # poll() takes at most INT_MAX milliseconds (~24 days): wait in slices.
                    left = None if deadline is None else max(0.0, deadline - time.monotonic())
                    if poller.poll(None if left is None else min(int(left * 1000), 2 ** 31 - 1)):
                        break
                    if left is not None and left * 1000 < 2 ** 31 - 1:
                        raise Unavailable(f"timed out after {timeout}s waiting for container {cid} to exit")
            finally:
                os.close(fd)
        st = self.state(cid)
        if st.status != EXITED or st.exit_code is None:
            raise Conflict(f"container {cid} was never started")
        return st.exit_code

    @staticmethod
    def _signal_pid(pid: int | None, start: int | None, sig: int) -> bool:
        if not pid:
            return False
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        try:
            if not linux.is_alive(pid, start):
                return False
            signal.pidfd_send_signal(fd, sig)
            return True
        except ProcessLookupError:
            return False
        finally:
            os.close(fd)

    def kill(self, cid: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the container's PID 1. Note: PID 1 of a PID namespace ignores
        signals it has no handler for, except SIGKILL. Conflict if it is not running."""
        st = self.state(cid)
        if st.status != RUNNING:
            raise Conflict(f"container {cid} is not running")
        if not self._signal_pid(st.pid, st.pid_start, sig):
            raise Conflict(f"container {cid} is not running")

    def stop(self, cid: str, timeout: float | None = 10) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds; return the exit code.
        Idempotent: stopping a stopped container returns its exit code."""
        st = self.state(cid)
        if st.status != RUNNING:
            return st.exit_code
        pid_start = st.pid_start
        self._signal_pid(st.pid, pid_start, signal.SIGTERM)
        try:
            return self.wait(cid, timeout)
        except Unavailable:
            pass
        self._signal_pid(st.pid, pid_start, signal.SIGKILL)
        return self.wait(cid, 10)

    # --- remove ---------------------------------------------------------------------

    def remove(self, cid: str, force: bool = False) -> None:
        """Remove the container's directory (logs, overlay upper layer), cgroups and any
        mount left under it. Conflict while it runs unless `force` (then SIGKILL first).
        Idempotent: removing an absent container does nothing."""
        cdir = self._dir(cid)
        if not os.path.isdir(cdir):
            return
        if os.path.isfile(os.path.join(cdir, files.SPEC)):
            st = self.state(cid)
            d = read_dir(cdir)
            if self._shim_alive(cdir, d):
                if not force:
                    raise Conflict(f"cannot remove running container {cid}: stop the container before "
                                   "removing or force remove")
                if st.status == RUNNING:
                    self._signal_pid(st.pid, st.pid_start, signal.SIGKILL)
                elif ident := self._shim_ident(d):  # still starting: the child dies with it (pdeathsig)
                    self._signal_pid(ident[0], ident[1], signal.SIGKILL)
                try:
                    self.wait(cid, 10)
                except (Unavailable, Conflict):
                    pass
        errs = self._discard(cdir)
        if errs:
            raise InternalError(f"container {cid} removed incompletely: {'; '.join(errs)}")

    def _discard(self, cdir: str) -> builtins.list[str]:
        """Best-effort teardown of a container directory; returns what failed."""
        errs: builtins.list[str] = []
        # Fence first: once shim.pid exists, no supervisor can claim the directory any
        # more (a start abandoned on a timeout may still be forked late). If one claimed
        # it already, it is killed below.
        try:
            files.claim(os.path.join(cdir, files.SHIM_PID), "")
        except OSError:
            pass
        d = read_dir(cdir)
        ident = self._shim_ident(d)
        if ident and self._shim_alive(cdir, d):
            fd = None
            try:
                fd = os.pidfd_open(ident[0])
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                _readable(fd, 5)
            except ProcessLookupError:
                pass
            finally:
                if fd is not None:
                    os.close(fd)
        if d.started:
            self._signal_pid(d.started.get("pid"), d.started.get("pid_start"), signal.SIGKILL)
        try:
            with open(os.path.join(cdir, files.CGROUPS)) as f:
                dirs = json.load(f)
            if dirs:
                self.cgroups.layout  # noqa: B018 - detection re-mounts .cgroupfs in a fresh namespace
            errs += cg.remove(dirs)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            errs.append(f"cgroups list: {exc}")
        errs += _unmount_under(cdir)
        shutil.rmtree(cdir, onerror=lambda _fn, path, exc: errs.append(f"{path}: {exc[1]}"))
        return errs

    # --- exec -----------------------------------------------------------------------

    def exec_argv(self, cid: str, argv: builtins.list[str], interactive: bool = False) -> builtins.list[str]:
        """An argv (nsenter) that runs `argv` in the container's mount, UTS, IPC,
        network and PID namespaces, root and working directory. The caller execs it with
        `exec_env(cid)` as environment; with interactive=False it should give it
        /dev/null as stdin. The process does not join the container's cgroups."""
        if not argv:
            raise InvalidParameter("no command given to exec")
        st = self.state(cid)
        if st.status != RUNNING or st.pid is None:
            raise Conflict(f"container {cid} is not running")
        return nsenter_argv(st.pid, [*argv])

    def lock_plan_path(self, cid: str) -> str | None:
        """The file holding what an exec'd process of this container is confined with
        (cnm/nsexec.py --confine); None for a container started before it existed."""
        path = os.path.join(self._require(cid), files.LOCK_PLAN)
        return path if os.path.exists(path) else None

    def exec_env(self, cid: str) -> dict[str, str]:
        """The environment the container's process got (PATH, HOSTNAME defaulted)."""
        return self.spec(cid).full_env()


def _readable(fd: int, timeout: float) -> bool:
    """poll, not select: the daemon holds an fd per running container, and select()
    refuses any fd past 1,023."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def _limited(spec: ContainerSpec) -> bool:
    return any(v is not None for v in (spec.memory, spec.cpus, spec.pids_limit))


def _tail(cdir: str) -> str:
    try:
        with open(os.path.join(cdir, files.SHIM_LOG)) as f:
            lines = [ln for ln in f.read().splitlines() if ln.strip()]
        return lines[-1] if lines else "no output"
    except OSError:
        return "no output"


def _unmount_under(cdir: str) -> list[str]:
    """Detach any mount left under the container directory in *our* mount namespace.
    Normally there is none: the shim mounts only inside the container's namespace."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            text = f.read()
    except OSError:
        return []
    # The daemon's table holds a mount per sandbox (thousands): parse it only when the
    # directory's name is in it at all (as mountinfo escapes it).
    if _mangled(cdir).encode() not in text:
        return []
    points = [p for _, p, _, _ in cg.parse_mountinfo(text.decode(errors="surrogateescape"))
              if p == cdir or p.startswith(cdir + "/")]
    errs = []
    for p in sorted(points, key=len, reverse=True):
        try:
            linux.umount2(p, linux.MNT_DETACH)
        except OSError as exc:
            errs.append(f"umount {p}: {exc.strerror}")
    return errs


def _mangled(path: str) -> str:
    """`path` as /proc/*/mountinfo writes it: space, tab, newline and backslash as \\ooo."""
    return path.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")


def remove_all(state_dir: str) -> list[str]:
    """Force-remove every container under `state_dir` (for tests, demos and labs
    tearing down a host whose daemon is gone). Returns the ids removed. Idempotent."""
    if not os.path.isdir(state_dir):
        return []
    rt = Runtime(state_dir)
    removed = []
    for st in rt.list():
        try:
            rt.remove(st.id, force=True)
            removed.append(st.id)
        except errors.CNMError as exc:
            log.warning("could not remove container %s: %s", st.id, exc)
    return removed

