"""The part of Runtime that talks to running containers: attach, resize, exec, logs,
resource usage (see cnm.runtime.runtime for the whole API). A mixin: it uses the
Runtime's paths, state and template."""

from __future__ import annotations

import builtins
import json
import marshal
import os
from collections.abc import Iterator

from cnm.errors import Conflict, InvalidParameter, Unavailable
from cnm.runtime import cgroups as cg
from cnm.runtime import files, session, shim, wire
from cnm.runtime import logs as logfiles
from cnm.runtime import stats as usage
from cnm.runtime.logs import LogLine
from cnm.runtime.session import Session
from cnm.runtime.spec import ContainerSpec, ExecSpec
from cnm.runtime.state import RUNNING, ContainerState
from cnm.runtime.template import Template

START_TIMEOUT = 10.0


def nsenter_argv(pid: int, argv: list[str]) -> list[str]:
    """util-linux nsenter entering every namespace of `pid` plus its root and cwd."""
    return [
        "nsenter",
        f"--target={pid}",
        "--mount",
        "--uts",
        "--ipc",
        "--net",
        "--pid",
        "--cgroup",
        "--root",
        "--wd",
        "--",
        *argv,
    ]


class RuntimeIO:
    cgroups: cg.Cgroups
    template: Template

    def _require(self, cid: str) -> str:
        raise NotImplementedError

    def state(self, cid: str) -> ContainerState:
        raise NotImplementedError

    def spec(self, cid: str) -> ContainerSpec:
        raise NotImplementedError

    @staticmethod
    def _cgroup_dirs(cdir: str) -> builtins.list[str]:
        try:
            with open(os.path.join(cdir, files.CGROUPS)) as f:
                return [d for d in json.load(f) if os.path.isdir(d)]
        except FileNotFoundError:
            return []

    def attach(self, cid: str, streams: str = "oe") -> Session:
        """A session on the running container's supervisor: its output from now on
        ("o", "e"), its stdin ("i", with open_stdin), TTY resizes. `log_position`
        says where its log stood. Conflict if it is not running."""
        return session.connect(self._require(cid), streams)

    def resize(self, cid: str, rows: int, cols: int) -> None:
        """Resize the container's TTY (nothing without one). Conflict if not running."""
        with session.connect(self._require(cid), "") as s:
            s.resize(rows, cols)
            while (frame := s.read_frame(5)) is not None and frame[0] != wire.OK:
                pass  # applied once the supervisor says so: input after this sees the size

    def exec(self, cid: str, ex: ExecSpec) -> Session:
        """Run `ex` in the running container: its namespaces, root, cgroups and
        confinement (the container's capabilities, no_new_privs and seccomp filter; with
        `ex.privileged` every capability, the rest unchanged, as Docker's exec
        --privileged); the session carries the
        process's I/O (`ex.streams()`, stdin if `ex.stdin`) and ends with EXIT and its
        code (`session.exit_code`). `session.pid` is the process (host pid). Raises
        Conflict if the container is not running, InvalidParameter for a command that
        cannot be run (not found, bad user or workdir)."""
        ex.validate()
        cdir = self._require(cid)
        st = self.state(cid)
        if st.status != RUNNING or not st.pid or st.pid_start is None:
            raise Conflict(f"container {cid} is not running")
        spec = self.spec(cid)
        env = spec.full_env()
        env.update(ex.env)
        lock = self._lock_plan(cdir)
        cfg = {
            "target": [st.pid, st.pid_start],
            "cgroups": self._cgroup_dirs(cdir),
            "argv": list(ex.argv),
            "env": env,
            "user": ex.user or spec.user,
            "workdir": ex.workdir or spec.workdir,
            "tty": ex.tty,
            "stdin": ex.stdin,
            "attach": ex.streams(),
            "console_size": ex.console_size,
            "confine": lock,
            "privileged": ex.privileged,
        }
        dirfd = os.open(cdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            sess = session.request(self.template, shim.OP_EXEC, dirfd, cfg, START_TIMEOUT)
            if sess is None:  # the template died with it: nothing started; once more
                sess = session.request(self.template, shim.OP_EXEC, dirfd, cfg, START_TIMEOUT)
        finally:
            os.close(dirfd)
        if sess is None:
            raise Unavailable("the supervisor template process went away twice: try again")
        return sess

    @staticmethod
    def _lock_plan(cdir: str) -> dict | None:
        """The container's confinement, kept at its start, for its exec'd processes."""
        try:
            with open(os.path.join(cdir, files.LOCK_PLAN), "rb") as f:
                plan = marshal.load(f)
        except FileNotFoundError:
            return None  # started before plans were kept: unconfined, as before
        return plan if isinstance(plan, dict) else None

    def logs(self, cid: str, **kw: object) -> Iterator[LogLine]:
        """The container's log lines: cnm.runtime.logs.read_lines(dir, tail=, since_ns=,
        until_ns=, stdout=, stderr=, upto=)."""
        return logfiles.read_lines(self._require(cid), **kw)  # type: ignore[arg-type]

    def log_dir(self, cid: str) -> str:
        """Where the container's log files are (cnm.runtime.logs reads them)."""
        return self._require(cid)

    def _controllers(self, cid: str) -> dict[str, tuple[int, str]]:
        dirs = self.cgroups.dirs(cid, accounting=True)
        return {c: (self.cgroups.layout.controllers[c].version, d) for c, d in dirs.items() if os.path.isdir(d)}

    def stats(self, cid: str) -> usage.Stats:
        """One-shot usage: from the container's cgroups, and what they lack (no
        accounting) from its processes in /proc. An exited container's figures are
        those its cgroups still hold, else None."""
        self._require(cid)
        st = usage.read(self._controllers(cid))
        if None in (st.memory_usage, st.cpu_total_ns, st.pids_current) and self.state(cid).status == RUNNING:
            usage.fill_from_procs(st, self.pids(cid))
        return st

    def pids(self, cid: str) -> builtins.list[int]:
        """The container's processes (host pids): a cgroup's members if it has one that
        every process joins, else the members of its PID namespace (a scan of /proc)."""
        ctrls = self._controllers(cid)
        for c in ("pids", "memory", "cpuacct", "cpu"):
            if c in ctrls:
                return usage.pids(ctrls[c][1])
        st = self.state(cid)
        return usage.namespace_pids(st.pid) if st.status == RUNNING and st.pid else []

    def exec_argv(self, cid: str, argv: builtins.list[str], interactive: bool = False) -> builtins.list[str]:
        """An argv (nsenter) that runs `argv` in the container's mount, UTS, IPC,
        network and PID namespaces, root and working directory (kept for callers
        without the runtime: `exec()` is the confined way)."""
        if not argv:
            raise InvalidParameter("no command given to exec")
        st = self.state(cid)
        if st.status != RUNNING or st.pid is None:
            raise Conflict(f"container {cid} is not running")
        return nsenter_argv(st.pid, [*argv])

    def lock_plan_path(self, cid: str) -> str | None:
        """The file holding what an exec'd process of this container is confined with
        (exec() reads it); None for a container started before it existed."""
        path = os.path.join(self._require(cid), files.LOCK_PLAN)
        return path if os.path.exists(path) else None

    def exec_env(self, cid: str) -> dict[str, str]:
        """The environment the container's process got (PATH, HOSTNAME defaulted)."""
        return self.spec(cid).full_env()
