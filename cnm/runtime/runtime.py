"""Runtime: create, start, watch, stop, restart and remove containers, each under its
own supervisor; attach to them, exec in them, read their logs and resource usage.

    rt = Runtime(state_dir)
    rt.create(spec)                         # status "created": directory, cgroups, no process
    rt.start(cid)                           # running, once its process has exec'd; again after it exited
    st, session = rt.start_attached(cid, "ioe")   # the same, attached before the process runs
    rt.run(spec)                            # create + start; nothing left if either fails
    rt.attach(cid, "oe") -> Session         # live output, stdin, resize (cnm.runtime.session)
    rt.exec(cid, ExecSpec(...)) -> Session  # a process in its namespaces, cgroups, confinement
    rt.logs(cid, tail=…, since_ns=…)        # LogLine iterator (cnm.runtime.logs)
    rt.stats(cid) -> Stats; rt.pids(cid)    # from its cgroups (cnm.runtime.stats)
    rt.resize(cid, rows, cols); rt.kill(cid, sig); rt.stop(cid, t); rt.wait(cid); rt.remove(cid)

Supervisors are forked by a template process (cnm.runtime.template), started with the
first container (or by `prestart()`) and again whenever it is found dead; `close()`
ends it (running containers are not affected).

State lives on disk only (see cnm.runtime.files for the layout), so a restarted
daemon gets the same view back with `adopt()`; the Runtime object holds no per-container
memory, and no operation on one container reads another's directory (`list()` and
`adopt()` read them all). Processes are addressed through pidfds after checking their
start time, so a recycled pid is never signalled.

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

from cnm import errors
from cnm.errors import Conflict, InternalError, InvalidParameter, NotFound, Unavailable
from cnm.runtime import cgroups as cg
from cnm.runtime import confine, files, linux, session, shim, teardown
from cnm.runtime.runtime_io import START_TIMEOUT, RuntimeIO, nsenter_argv  # noqa: F401 - re-exported
from cnm.runtime.session import Session
from cnm.runtime.spec import HOST, ID_PATTERN, ContainerSpec
from cnm.runtime.state import (
    CREATED,
    ContainerState,
    derive,
    read_dir,
    supervisor_alive,
    supervisor_ident,
)
from cnm.runtime.stopping import RuntimeStop
from cnm.runtime.template import Template

log = logging.getLogger(__name__)

# Under state_dir: cgroup hierarchies re-mounted when the daemon's mount namespace has
# none (a daemon started by `ip netns exec`); see cgroups.read_layout.
CGROUPFS = ".cgroupfs"
# Per-run files: removed before a container starts again (logs, the writable layer and
# cgroups stay). shim.pid last: until it goes, no new supervisor can claim the directory.
_RUN_FILES = (files.STATE, files.STATE_NEW, files.EXIT, shim.ATTACH_SOCK, files.SHIM_PID)


class Runtime(RuntimeIO, RuntimeStop):
    """Containers under `state_dir`, one directory each; cgroups under `cgroup_root`
    (default "cnm"; see cnm.runtime.cgroups) for the controllers a limit needs, and with
    `accounting` for memory, CPU time and tasks too (`stats()` reads them; without, it
    reads /proc: the same figures, memory as the processes' RSS). Accounting costs ~10
    ms per start on cgroup v1 (see cnm.runtime.cgroups). `hide`: paths a container on
    the host's filesystem must not see (the daemon's root and run directories and
    socket; the state directory always). `namespace_dirs`: where the daemon bind-mounts
    namespace files (sandboxes', overlays'); containers' mount namespaces are made
    without them (see cnm.runtime.template_main), and each is made a mount point here."""

    def __init__(
        self,
        state_dir: str,
        cgroup_root: str | None = None,
        python: str | None = None,
        hide: tuple[str, ...] = (),
        accounting: bool = False,
        namespace_dirs: tuple[str, ...] = (),
    ) -> None:
        from cnm.statedirs import private_subdir

        self.state_dir = os.path.abspath(state_dir)
        os.makedirs(os.path.dirname(self.state_dir), exist_ok=True)
        private_subdir(self.state_dir, 0o700)  # specs and logs hold containers' secrets
        self.cgroups = cg.Cgroups(cgroup_root or "cnm", mount_dir=os.path.join(self.state_dir, CGROUPFS))
        self.accounting = accounting
        # The template warms up in a directory made (and removed) around its start here.
        dirs = tuple(own_mount_point(d) for d in namespace_dirs)
        self.template = Template(python, self.state_dir, dirs)
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

    # --- create and start -----------------------------------------------------------

    def _check(self, spec: ContainerSpec) -> None:
        spec.validate()
        for lower in spec.rootfs or ():
            if not os.path.isdir(lower):
                raise NotFound(f"rootfs {lower} not found: it must be an existing directory")
        if spec.netns != HOST and not os.path.exists(spec.netns):
            raise NotFound(f"network namespace {spec.netns} not found")
        confine.check(spec, self.host)

    def create(self, spec: ContainerSpec) -> ContainerState:
        """The container's directory, spec, writable layer and cgroups; no process yet
        (status "created"). Conflict for an id in use; on failure nothing is left."""
        self._check(spec)
        if self.accounting or _limited(spec):  # detection may mount: only when needed
            cg.limit_writes(self.cgroups.layout, spec.memory, spec.cpus, spec.pids_limit)  # fail before mkdir
        confine.check(spec, self.host)
        cdir = self._dir(spec.id)
        try:
            os.mkdir(cdir, 0o700)
        except FileExistsError as exc:
            raise Conflict(f"container {spec.id} already exists: remove it first") from exc
        try:
            files.write_atomic(os.path.join(cdir, files.SPEC), spec.to_json())
            if spec.rootfs is not None:
                for sub in (files.UPPER, files.WORK, files.MERGED):
                    os.mkdir(os.path.join(cdir, sub), 0o700)
                os.chmod(os.path.join(cdir, files.UPPER), 0o755)  # the container's "/": mode 0755 as usual
            if self.accounting or _limited(spec):
                # Record the paths before making them: a crash in between still leaves
                # a list for remove() to clean.
                dirs = self.cgroups.dirs(spec.id, spec.memory, spec.cpus, spec.pids_limit, self.accounting)
                files.write_atomic(os.path.join(cdir, files.CGROUPS), json.dumps(list(dict.fromkeys(dirs.values()))))
                self.cgroups.create(spec.id, spec.memory, spec.cpus, spec.pids_limit, self.accounting)
        except BaseException:
            self._discard_after_failure(cdir, "create")
            raise
        return self.state(spec.id)

    def start(self, cid: str | ContainerSpec, spec: ContainerSpec | None = None) -> ContainerState:
        """Start a created or exited container (again: same directory, logs and writable
        layer) and return once its process has exec'd. `spec`: replaces the stored one
        (same id) — the network namespace and /etc files are usually known only now.
        Raises InvalidParameter for a bad command, NotFound for a missing rootfs or
        netns, Conflict if it runs; the container stays as it was.
        (Given a ContainerSpec instead of an id: `run(spec)`, as before create existed.)"""
        if isinstance(cid, ContainerSpec):
            return self.run(cid)
        return self._start(cid, spec, "")[0]

    def start_attached(
        self, cid: str, streams: str, spec: ContainerSpec | None = None
    ) -> tuple[ContainerState, Session]:
        """`start`, with the returned session attached to `streams` ("i", "o", "e")
        from before the process runs: none of its output is missed (`docker run`
        attaches, then starts)."""
        st, sess = self._start(cid, spec, streams or "-")
        assert sess is not None
        return st, sess

    def run(self, spec: ContainerSpec, attach: str = "") -> ContainerState:
        """create + start; if the start fails the container is removed again."""
        self.create(spec)
        try:
            st, sess = self._start(spec.id, None, attach)
        except BaseException:
            self._discard_after_failure(self._dir(spec.id), "start")
            raise
        if sess is not None:
            sess.close()
        return st

    def _start(self, cid: str, spec: ContainerSpec | None, attach: str) -> tuple[ContainerState, Session | None]:
        cdir = self._require(cid)
        new_spec = spec is not None
        if spec is not None:
            if spec.id != cid:
                raise InvalidParameter(f"the spec is for container {spec.id}, not {cid}")
            self._check(spec)
        else:
            spec = self.spec(cid)
        d = read_dir(cdir)
        if supervisor_alive(d, self.boot_id):
            raise Conflict(f"container {cid} is already running")
        if d.fenced:
            raise Conflict(f"container {cid}: its last start never finished (timed out): remove it")
        teardown.remove_files(cdir, _RUN_FILES)  # a fresh run in the same directory
        if new_spec:
            files.write_atomic(os.path.join(cdir, files.SPEC), spec.to_json())
        cfg = self._config(spec, cdir)
        msg = (
            shim.OP_START
            + b" "
            + shim.options(
                spec.tty,
                spec.open_stdin,
                spec.stdin_once,
                spec.log_max_size,
                spec.log_max_files,
                attach.strip("-") or "",
            )
        )
        try:
            sess = self._spawn(cdir, msg, cfg)
        except Unavailable:
            teardown.fence_and_kill(cdir, self.boot_id)  # a late supervisor must find it taken
            raise
        except Conflict:
            raise  # another start's supervisor holds it
        except BaseException:
            self._reset_if_dead(cdir)
            raise
        if not attach:
            sess.close()
            return self.state(cid), None
        return self.state(cid), sess

    def _config(self, spec: ContainerSpec, cdir: str) -> dict:
        """What the container process needs (it reads it before exec; see shim)."""
        binds = []
        for name, target, content in (
            (files.HOSTS, "/etc/hosts", spec.hosts),
            (files.RESOLV_CONF, "/etc/resolv.conf", spec.resolv_conf),
            (files.HOSTNAME, "/etc/hostname", spec.hostname_file()),
        ):
            if content is not None:
                path = os.path.join(cdir, name)
                # 0644 whatever the daemon's umask: any user inside the container reads
                # them (the container directory, 0700, keeps them from the host's users).
                files.write_atomic(path, content, mode=0o644)
                binds.append((path, target))
        confine.make_bind_sources(spec)
        # Its /sys/fs/cgroup: the hierarchies in which it has a cgroup of its own.
        joined = (
            list(self.cgroups.dirs(spec.id, spec.memory, spec.cpus, spec.pids_limit, self.accounting))
            if self._cgroup_dirs(cdir)
            else []
        )
        plan = confine.plan(spec, binds, self.host, cdir, cgroups=self.cgroups.view(joined))
        # What an exec'd process is confined with (exec() reads it).
        files.write_atomic(os.path.join(cdir, files.LOCK_PLAN), marshal.dumps(confine.lock_plan(plan)))
        return {
            "dir": cdir,
            "argv": list(spec.argv),
            "env": spec.full_env(),
            "hostname": spec.hostname,
            "workdir": spec.workdir,
            "netns": None if spec.netns == HOST else spec.netns,
            "cgroups": self._cgroup_dirs(cdir),
            "confine": plan,
            "user": spec.user,
            "console_size": spec.console_size,
        }

    def _spawn(self, cdir: str, msg: bytes, cfg: dict) -> Session:
        """Have the template fork a supervisor for `msg` and `cfg`; its session once it
        answered OK. If the template died with the request (EOF, no answer) and no
        supervisor claimed the directory, ask once more: a new template is started on
        the way."""
        dirfd = os.open(cdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for attempt in (1, 2):
                sess = session.request(self.template, msg, dirfd, cfg, START_TIMEOUT)
                if sess is not None:
                    return sess
                if os.path.lexists(os.path.join(cdir, files.SHIM_PID)):
                    raise InternalError(
                        f"the supervisor of {os.path.basename(cdir)} exited without starting it: "
                        f"{teardown.last_line(cdir)}"
                    )
                log.warning(
                    "container %s: the template process went away with the start request%s",
                    os.path.basename(cdir),
                    "; asking a new one" if attempt == 1 else " again",
                )
        finally:
            os.close(dirfd)
        raise Unavailable(
            f"container {os.path.basename(cdir)} was not started: the supervisor template process "
            "went away twice while starting it (see the daemon's log); try again"
        )

    def _reset_if_dead(self, cdir: str) -> None:
        """After a start that failed with an answer: its supervisor is gone or going;
        once gone, the directory is "created" again."""
        d = read_dir(cdir)
        ident = supervisor_ident(d)
        if ident is not None:
            teardown.wait_gone(ident[0], ident[1], 5)
        if not supervisor_alive(read_dir(cdir), self.boot_id):
            teardown.remove_files(cdir, _RUN_FILES)

    def _discard_after_failure(self, cdir: str, what: str) -> None:
        errs = teardown.discard(cdir, self.cgroups, self.boot_id)
        if errs:
            log.warning("cleanup after a failed %s of %s: %s", what, os.path.basename(cdir), "; ".join(errs))

    # --- state ----------------------------------------------------------------------

    def state(self, cid: str) -> ContainerState:
        """The container's state from its directory. A shim found dead without an
        exit status is settled here once: exit.json is written with code 137 and the
        container process, if it somehow still runs, is killed."""
        cdir = self._require(cid)
        d = read_dir(cdir)
        alive = supervisor_alive(d, self.boot_id)
        if not alive and d.exited is None:
            d = read_dir(cdir)  # the shim may have written exit.json and exited meanwhile
            if d.started is not None and d.exited is None:
                teardown.settle_lost(cdir, d)
                d = read_dir(cdir)
        return derive(cid, d, alive)

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
        time, name and boot id) stay running; ended ones report their exit status; a
        shim that died without one is settled as exited 137; a start whose supervisor
        died before the process ran leaves the container "created" again. A fenced
        directory (a start that timed out) stays fenced. Returns every container."""
        out = []
        for st in self.list():
            if st.status == CREATED and st.shim_pid:
                self._reset_if_dead(self._dir(st.id))
                st = self.state(st.id)
            out.append(st)
        return out

    # --- waiting and signals --------------------------------------------------------

    def exit_fd(self, cid: str) -> int | None:
        """A pidfd that becomes readable when the container's supervisor exits (after
        exit.json is written); None if it is not running. The caller closes it."""
        cdir = self._require(cid)
        d = read_dir(cdir)
        ident = supervisor_ident(d)
        if ident is None:
            return None
        try:
            fd = os.pidfd_open(ident[0])
        except ProcessLookupError:
            return None
        # Verify after opening: the fd now pins the process, so the check cannot race.
        if not supervisor_alive(d, self.boot_id):
            os.close(fd)
            return None
        return fd

    # --- remove ---------------------------------------------------------------------


def own_mount_point(path: str) -> str:
    """Make `path` (a directory, made 0700 if missing) a mount point of its own, shared
    as `ip netns` makes /run/netns, unless it is one already; its real path. Then the
    template's namespace for containers, having dropped its copy, gets none of the
    mounts made under it later (a mount propagates to copies of its parent mount only).
    Not while something is mounted under it (a bind would hide those mounts, pinned
    for good): then each is left out when a template starts, and mounts made later may
    reach containers where the daemon's own mounts propagate (a shared /). Without the
    right to mount (not root), nothing is done."""
    path = os.path.realpath(path)
    os.makedirs(path, 0o700, exist_ok=True)
    try:
        mounts = linux.mount_points()
        if path in mounts:
            return path
        if any(m.startswith(path + "/") for m in mounts):
            log.warning(
                "%s has mounts under it but is no mount point: containers started before they are "
                "unmounted may copy mounts made there",
                path,
            )
            return path
        linux.mount(path, path, None, linux.MS_BIND)
        linux.mount(None, path, None, linux.MS_SHARED)
    except OSError as exc:
        log.debug("cannot make %s a mount point: %s", path, exc)
    return path


def _limited(spec: ContainerSpec) -> bool:
    return any(v is not None for v in (spec.memory, spec.cpus, spec.pids_limit))


def remove_all(state_dir: str) -> builtins.list[str]:
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
