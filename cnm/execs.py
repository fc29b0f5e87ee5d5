"""Exec instances (Docker's `docker exec`): a command run in a running container,
created, started once, inspected, resized.

    ex = execs.create(target, ExecConfig(argv=["sh"], tty=True, attach_stdin=True))
    run = await execs.start(ex.id, target)   # an ExecRun: its output queues, stdin, exit
    execs.inspect(ex.id)                     # Docker's /exec/{id}/json

The process is made by the container runtime's exec (cnm.runtime: an exec supervisor
forked from the template; the process joins the container's namespaces and cgroups and
is confined as the container is: capabilities, seccomp, no_new_privs). Its I/O and exit
code come over the supervisor's session (cnm.runtime.session), read by one task per run:
output goes to the attached client's queues (dropped when detached: the process never
waits on nobody), the EXIT frame gives the exit code. Records of finished instances are
kept a while (Docker keeps them until the container goes) so a client can read the exit
code after the stream ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cnm.errors import Conflict, InvalidParameter, NotFound
from cnm.ids import new_id
from cnm.runtime import wire

log = logging.getLogger(__name__)

KEPT = 256  # finished exec records kept (oldest dropped first)
QUEUED = 64  # output chunks held for a slow client before the process is held back
LOST = 126  # the exit code when the process could not run, or its supervisor died
NOT_FOUND = 127
SIZE_WAIT = 0.3  # seconds a TTY exec without a size waits for the client's first resize


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
    console_size: tuple[int, int] | None = None  # (height, width)

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
        return cls(
            argv=list(argv),
            env=list(env),
            tty=typed("Tty", bool, False),
            attach_stdin=typed("AttachStdin", bool, False),
            attach_stdout=typed("AttachStdout", bool, True),
            attach_stderr=typed("AttachStderr", bool, True),
            user=typed("User", str, ""),
            workdir=typed("WorkingDir", str, ""),
            privileged=typed("Privileged", bool, False),
            detach_keys=typed("DetachKeys", str, ""),
            console_size=(size[0], size[1]) if size else None,
        )


class ExecRun:
    """A started exec's process, as its supervisor's session shows it: output chunks
    on `outputs[STDOUT]` / `outputs[STDERR]` (b"" at the end) while a client takes
    them, stdin and resizes the other way, `exit_code` once it ended."""

    def __init__(self, session: Any, tty: bool) -> None:
        self.session = session
        self.pid: int = session.pid or 0
        self.tty = tty
        self.exit_code: int | None = None
        self.outputs: dict[int, asyncio.Queue[bytes]] | None = None
        self._send = asyncio.Lock()
        self.ended = asyncio.Event()

    def take_output(self) -> dict[int, asyncio.Queue[bytes]]:
        """Queues of the output from now on (one client at a time)."""
        self.outputs = {wire.STDOUT: asyncio.Queue(QUEUED), wire.STDERR: asyncio.Queue(QUEUED)}
        if self.ended.is_set():
            for q in self.outputs.values():
                q.put_nowait(b"")
        return self.outputs

    def drop_output(self) -> None:
        """Nobody takes the output any more (detached, or the client left): what is
        queued goes, so a reader blocked on a full queue moves on and drops the rest."""
        outputs, self.outputs = self.outputs, None
        for q in (outputs or {}).values():
            while not q.empty():
                q.get_nowait()

    async def read_all(self) -> int:
        """Read the session to its end (the run's one reader); the exit code."""
        loop = asyncio.get_running_loop()
        sock = self.session.sock
        sock.setblocking(False)
        frames = self.session.buffered()
        try:
            while True:
                for kind, _, payload in frames:
                    if kind == wire.EXIT:
                        self.exit_code = int(payload or b"-1")
                        return self.exit_code
                    outputs = self.outputs
                    if outputs is not None and kind in outputs and payload:
                        await outputs[kind].put(payload)
                try:
                    data = await loop.sock_recv(sock, 65536)
                except (ConnectionError, OSError):
                    data = b""
                if not data:
                    self.exit_code = LOST
                    return self.exit_code
                frames = self.session.feed(data)
        finally:
            self.ended.set()
            self.session.close()
            for kind in (wire.STDOUT, wire.STDERR):  # the end, for a client still taking output
                while self.outputs is not None:
                    try:
                        self.outputs[kind].put_nowait(b"")
                        break
                    except asyncio.QueueFull:
                        await asyncio.sleep(0.05)

    async def _frame(self, kind: int, payload: bytes = b"") -> None:
        if self.ended.is_set():
            return
        async with self._send:
            try:
                await asyncio.get_running_loop().sock_sendall(self.session.sock, wire.in_frame(kind, payload))
            except (ConnectionError, OSError):
                pass  # the process ended meanwhile

    async def send_stdin(self, data: bytes) -> None:
        for i in range(0, len(data), wire.MAX_PAYLOAD):
            await self._frame(wire.STDIN, data[i : i + wire.MAX_PAYLOAD])

    async def close_stdin(self) -> None:
        await self._frame(wire.CLOSE)

    async def resize(self, height: int, width: int) -> None:
        await self._frame(wire.RESIZE, b"%d %d" % (height, width))


# spawn(container id, config, env additions) -> the runtime's exec Session (awaitable:
# the daemon runs the runtime's blocking call in its thread pool).
Spawn = Callable[[str, "ExecConfig", dict[str, str]], Awaitable[Any]]


@dataclass
class ExecInstance:
    id: str
    container_id: str
    config: ExecConfig
    running: bool = False
    started: bool = False
    exit_code: int | None = None
    pid: int = 0
    run: ExecRun | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)  # set once the exit code is known
    sized: asyncio.Event = field(default_factory=asyncio.Event)  # a resize came before the process

    def inspect(self) -> dict:
        """Docker's ExecInspect."""
        cfg = self.config
        return {
            "ID": self.id,
            "Running": self.running,
            "ExitCode": self.exit_code,
            "ProcessConfig": {
                "tty": cfg.tty,
                "entrypoint": cfg.argv[0],
                "arguments": list(cfg.argv[1:]),
                "privileged": cfg.privileged,
                "user": cfg.user,
            },
            "OpenStdin": cfg.attach_stdin,
            "OpenStderr": cfg.attach_stderr,
            "OpenStdout": cfg.attach_stdout,
            "CanRemove": self.started and not self.running,
            "ContainerID": self.container_id,
            "DetachKeys": cfg.detach_keys,
            "Pid": self.pid,
        }


@dataclass
class Target:
    """The container an exec runs in, as the daemon sees it now."""

    id: str
    name: str
    pid: int | None  # its init's pid; None when it is not running

    @property
    def running(self) -> bool:
        return self.pid is not None


class ExecService:
    """Exec instances of one daemon; runs on the event loop (the caller looks the
    container up, which may block, and passes a `Target`). `publish(action,
    container_id, attrs)` sends an event: exec_create, exec_start, exec_die."""

    def __init__(self, spawn: Spawn, publish: Callable[[str, str, dict[str, str]], None] = lambda *a: None) -> None:
        self._publish = publish
        self._spawn = spawn
        self._execs: dict[str, ExecInstance] = {}
        self._tasks: set[asyncio.Task] = set()

    def create(self, target: Target, cfg: ExecConfig) -> ExecInstance:
        if not target.running:
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

    async def start(self, exec_id: str, target: Target, attached: bool) -> ExecRun:
        """Start it (once): Conflict if it runs or ran, or if its container stopped;
        the runtime's error (InvalidParameter for a command not found, …) if the
        process could not be made. `attached`: a client takes the output from the
        start (else it is dropped)."""
        ex = self.check_startable(exec_id)
        if not target.running:
            raise Conflict(f"container {target.name} is not running")
        env = {}
        for item in ex.config.env:
            k, _, v = item.partition("=")
            env[k] = v
        ex.started = ex.running = True
        size = ex.config.console_size
        try:
            session = await self._spawn(target.id, ex.config, env)
        except BaseException as exc:
            ex.running = False
            # Docker's codes for a process that could not start: 127 not found, else 126.
            ex.exit_code = NOT_FOUND if "not found" in str(getattr(exc, "message", exc)) else LOST
            ex.done.set()
            raise
        run = ExecRun(session, ex.config.tty)
        if attached:
            run.take_output()
        ex.run, ex.pid = run, run.pid
        if ex.config.console_size != size and ex.config.console_size is not None:
            await run.resize(*ex.config.console_size)  # a resize came while it was being made
        self._publish("exec_start: " + " ".join(ex.config.argv), ex.container_id, {"execID": ex.id})
        task = asyncio.get_running_loop().create_task(self._reap(ex, run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run

    async def _reap(self, ex: ExecInstance, run: ExecRun) -> None:
        try:
            code = await run.read_all()
        except Exception:
            log.exception("reading exec %s", ex.id[:12])
            code = LOST
        ex.exit_code = code
        ex.running = False
        ex.done.set()
        self._publish("exec_die", ex.container_id, {"execID": ex.id, "exitCode": str(code)})

    async def resize(self, exec_id: str, height: int, width: int) -> None:
        """Resize its TTY. Before its process runs, the size becomes its first one
        (Docker's CLI before API 1.42 sends no ConsoleSize: it resizes right after the
        start's answer, which `wait_for_size` waits for)."""
        ex = self.get(exec_id)
        if not ex.config.tty:
            raise InvalidParameter(f"exec {exec_id} has no TTY to resize")
        if ex.run is None and not ex.done.is_set():
            ex.config.console_size = (height, width)
            ex.sized.set()
            return
        if ex.run is None or not ex.running:
            raise Conflict(f"exec {exec_id} is not running")
        await ex.run.resize(height, width)

    async def wait_for_size(self, ex: ExecInstance, timeout: float = SIZE_WAIT) -> None:
        """A TTY exec without a size: wait a moment for the client's first resize, so
        the process starts with the client's terminal size (not 0x0)."""
        if ex.config.tty and ex.config.console_size is None:
            try:
                await asyncio.wait_for(ex.sized.wait(), timeout)
            except TimeoutError:
                pass

    def _trim(self) -> None:
        done = [i for i, e in self._execs.items() if e.started and not e.running]
        while len(self._execs) > KEPT and done:
            self._execs.pop(done.pop(0), None)
