"""Exec instances (Docker's `docker exec`): a command run in a running container's
namespaces, created, started once, inspected, resized.

    ex = execs.create(target, ExecConfig(argv=["sh"], tty=True, attach_stdin=True))
    proc = await execs.start(ex.id, target)  # an ExecProcess: its stdin, output, exit
    execs.inspect(ex.id)                     # Docker's /exec/{id}/json

The process is started by a `spawn` function (by default `spawn_nsenter`: cnm/nsexec.py
joins the container's namespaces, root and working directory and forks the command as a
session leader inside its PID namespace; a child of the daemon). Records of finished instances are kept a while (Docker keeps them
until the container goes) so a client can read the exit code after the stream ended.
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import stat
import struct
import sys
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cnm.errors import Conflict, InvalidParameter, NotFound
from cnm.ids import new_id

log = logging.getLogger(__name__)

KEPT = 256          # finished exec records kept (oldest dropped first)


@dataclass
class ExecConfig:
    """Docker's ExecConfig (POST /containers/{id}/exec), checked."""

    argv: list[str]
    env: list[str] = field(default_factory=list)
    tty: bool = False
    attach_stdin: bool = False
    attach_stdout: bool = True
    attach_stderr: bool = True
    user: str = ""
    workdir: str = ""
    privileged: bool = False
    detach_keys: str = ""
    console_size: tuple[int, int] | None = None     # (height, width)

    @classmethod
    def from_docker_json(cls, body: dict) -> ExecConfig:
        def typed(key: str, kind: type, default: Any) -> Any:
            value = body.get(key)
            if value is None:
                return default
            if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                raise InvalidParameter(f"field {key} has the wrong type ({type(value).__name__})")
            return value

        argv = typed("Cmd", list, [])
        if isinstance(body.get("Cmd"), str):
            argv = [body["Cmd"]]
        if not argv or not all(isinstance(a, str) for a in argv) or not argv[0]:
            raise InvalidParameter("No exec command specified")
        env = typed("Env", list, [])
        for item in env:
            if not isinstance(item, str) or "=" not in item or item.startswith("="):
                raise InvalidParameter(f"invalid environment variable {item!r}: use KEY=VALUE")
        size = typed("ConsoleSize", list, None)
        if size is not None and (len(size) != 2 or not all(isinstance(n, int) and n >= 0 for n in size)):
            raise InvalidParameter("ConsoleSize must be [height, width]")
        return cls(argv=list(argv), env=list(env), tty=typed("Tty", bool, False),
                   attach_stdin=typed("AttachStdin", bool, False), attach_stdout=typed("AttachStdout", bool, True),
                   attach_stderr=typed("AttachStderr", bool, True), user=typed("User", str, ""),
                   workdir=typed("WorkingDir", str, ""), privileged=typed("Privileged", bool, False),
                   detach_keys=typed("DetachKeys", str, ""),
                   console_size=(size[0], size[1]) if size else None)


class ExecProcess:
    """A started exec's process. With a TTY, `master` is the pty's master fd (stdin and
    output both); without, the three pipes."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int | None = None) -> None:
        self.proc = proc
        self.master = master

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait(self) -> int:
        return await self.proc.wait()

    def resize(self, height: int, width: int) -> None:
        if self.master is not None:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def close(self) -> None:
        if self.master is not None:
            try:
                os.close(self.master)
            except OSError:
                pass
            self.master = None


# spawn(pid, config, env, confine): `confine` is the container's lock-plan file (its
# capabilities, no_new_privs, seccomp: cnm.runtime.confine), None to run unconfined.
Spawn = Callable[[int, "ExecConfig", dict[str, str], "str | None"], Awaitable[ExecProcess]]


HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nsexec.py")


def helper_argv(pid: int, cfg: ExecConfig, confine: str | None = None) -> list[str]:
    """The exec helper's command line (cnm/nsexec.py, run by this interpreter)."""
    argv = [sys.executable, "-I", "-S", HELPER, str(pid)]
    if confine:
        argv += ["--confine", confine]
        if cfg.privileged:
            argv.append("--privileged")
    if cfg.tty:
        argv.append("--tty")
    if cfg.user:
        argv += ["--user", cfg.user]
    if cfg.workdir:
        argv += ["--workdir", cfg.workdir]
    return argv + ["--", *cfg.argv]


TIOCSPTLCK = 0x40045431   # _IOW('T', 0x31, int): lock/unlock a pty
TIOCGPTPEER = 0x5441      # open the slave of a master without a path lookup (Linux 4.13)


def _open_container_ptmx(pid: int) -> int | None:
    """The container's /dev/ptmx, opened by the daemon without trusting the container's
    names: /dev is the container's to change, and a plain open of /proc/PID/root/dev/ptmx
    follows a symlink planted there ("/dev/ptmx -> /dev/watchdog", an absolute target)
    out into the host's root, opening a host device or FIFO read-write as root. So the
    path is resolved inside the container's root (openat2 RESOLVE_IN_ROOT), and only a
    pty multiplexer (character device 5:2) is opened for real."""
    from cnm.runtime import linux  # ctypes: only on a TTY exec
    try:
        root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        found = linux.openat2(root, "dev/ptmx", os.O_PATH, linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS)
    except OSError:
        return None
    finally:
        os.close(root)
    try:
        st = os.fstat(found)
        if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (5, 2):
            return None
        return os.open(linux.fd_path(found), os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)  # that very node
    except OSError:
        return None
    finally:
        os.close(found)


def container_pty(pid: int) -> tuple[int, int]:
    """(master, slave) of a new pty of the container's own devpts instance, as runc
    makes them: opened through /proc/PID/root, so that inside the container the slave is
    /dev/pts/N of its /dev (a pty of the host's devpts has no name there: `tty` says "not
    a tty", ttyname() fails). Falls back to a host pty where the container has none."""
    master = _open_container_ptmx(pid)
    if master is None:
        return os.openpty()
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        os.close(master)
        return os.openpty()
    return master, slave


async def spawn_nsenter(pid: int, cfg: ExecConfig, env: dict[str, str], confine: str | None = None) -> ExecProcess:
    """Run `cfg.argv` in the namespaces, root and working directory of `pid` (the
    container's init) through cnm/nsexec.py; with a TTY, on a fresh pty that becomes the
    command's controlling terminal."""
    argv = helper_argv(pid, cfg, confine)
    if cfg.tty:
        master, slave = container_pty(pid)
        if cfg.console_size:
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", *cfg.console_size, 0, 0))
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stdin=slave, stdout=slave, stderr=slave,
                                                        env=env, close_fds=True, start_new_session=True)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        return ExecProcess(proc, master)
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, start_new_session=True,
        stdin=asyncio.subprocess.PIPE if cfg.attach_stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE if cfg.attach_stdout else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE if cfg.attach_stderr else asyncio.subprocess.DEVNULL)
    return ExecProcess(proc)


@dataclass
class ExecInstance:
    id: str
    container_id: str
    config: ExecConfig
    running: bool = False
    started: bool = False
    exit_code: int | None = None
    pid: int = 0
    process: ExecProcess | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)     # set once the exit code is known

    def inspect(self) -> dict:
        """Docker's ExecInspect."""
        cfg = self.config
        return {
            "ID": self.id, "Running": self.running, "ExitCode": self.exit_code, "ProcessConfig": {
                "tty": cfg.tty, "entrypoint": cfg.argv[0], "arguments": list(cfg.argv[1:]),
                "privileged": cfg.privileged, "user": cfg.user},
            "OpenStdin": cfg.attach_stdin, "OpenStderr": cfg.attach_stderr, "OpenStdout": cfg.attach_stdout,
            "CanRemove": self.started and not self.running, "ContainerID": self.container_id,
            "DetachKeys": cfg.detach_keys, "Pid": self.pid,
        }


@dataclass
class Target:
    """The container an exec runs in, as the daemon sees it now."""

    id: str
    name: str
    pid: int | None                  # its init's pid; None when it is not running
    env: dict[str, str] = field(default_factory=dict)
    confine: str | None = None       # its lock-plan file: an exec'd process is confined as the container


class ExecService:
    """Exec instances of one daemon; runs on the event loop (the caller looks the
    container up, which may block, and passes a `Target`). `publish(action,
    container_id, attrs)` sends an event: exec_create, exec_start, exec_die."""

    def __init__(self, publish: Callable[[str, str, dict[str, str]], None] = lambda *a: None,
                 spawn: Spawn = spawn_nsenter) -> None:
        self._publish = publish
        self._spawn = spawn
        self._execs: dict[str, ExecInstance] = {}

    def create(self, target: Target, cfg: ExecConfig) -> ExecInstance:
        if target.pid is None:
            raise Conflict(f"container {target.name} is not running")
        ex = ExecInstance(id=new_id(), container_id=target.id, config=cfg)
        self._execs[ex.id] = ex
        self._trim()
        self._publish("exec_create: " + " ".join(cfg.argv), target.id, {"execID": ex.id})
        return ex

    def get(self, exec_id: str) -> ExecInstance:
        ex = self._execs.get(exec_id)
        if ex is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return ex

    def check_startable(self, exec_id: str) -> ExecInstance:
        ex = self.get(exec_id)
        if ex.running:
            raise Conflict(f"Error: Exec command {exec_id} is already running")
        if ex.started:
            raise Conflict(f"Error: Exec command {exec_id} has already run")
        return ex

    async def start(self, exec_id: str, target: Target) -> ExecProcess:
        """Start it (once): Conflict if it runs or ran, or if its container stopped."""
        ex = self.check_startable(exec_id)
        if target.pid is None:
            raise Conflict(f"container {target.name} is not running")
        full_env = dict(target.env)
        for item in ex.config.env:
            k, _, v = item.partition("=")
            full_env[k] = v
        ex.started = ex.running = True
        try:
            proc = await self._spawn(target.pid, ex.config, full_env, target.confine)
        except BaseException:
            ex.running = False
            ex.exit_code = 126
            ex.done.set()
            raise
        ex.process, ex.pid = proc, proc.pid
        self._publish("exec_start: " + " ".join(ex.config.argv), ex.container_id, {"execID": ex.id})
        asyncio.get_running_loop().create_task(self._reap(ex, proc))
        return proc

    async def _reap(self, ex: ExecInstance, proc: ExecProcess) -> None:
        code = await proc.wait()
        ex.exit_code = code if code >= 0 else 128 - code     # killed by a signal: 128+N, as a shell says
        ex.running = False
        ex.done.set()
        proc.close()
        self._publish("exec_die", ex.container_id, {"execID": ex.id, "exitCode": str(ex.exit_code)})

    def resize(self, exec_id: str, height: int, width: int) -> None:
        ex = self.get(exec_id)
        if ex.process is None or not ex.running:
            raise Conflict(f"exec {exec_id} is not running")
        ex.process.resize(height, width)

    def _trim(self) -> None:
        done = [i for i, e in self._execs.items() if e.started and not e.running]
        while len(self._execs) > KEPT and done:
            self._execs.pop(done.pop(0), None)
