"""An honest stand-in for `cnm.runtime.Runtime` in unit tests: plain child processes.

A container is `spec.argv` run with `spec.env` as a child of the test process — no
namespaces, cgroups or root filesystem — so output, exit codes, signals and exit
pidfds are real while nothing needs root. The network namespace, hosts and resolv.conf
the caller asked for are not applied; the spec is kept in `specs` so tests can check
what was asked. Output is read by a thread per stream and written to the container's
log in the runtime's own format (cnm.runtime.logs reads it) and to attached sessions
(cnm.runtime.session.Session over a socketpair, with HELLO and EXIT as a supervisor
sends them); the exit fd becomes readable once the output is all logged, as the real
supervisor's does.
"""

from __future__ import annotations

import builtins
import datetime
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from cnm.errors import Conflict, InvalidParameter, NotFound
from cnm.runtime import logs, wire
from cnm.runtime.relay import LogWriter
from cnm.runtime.session import Session
from cnm.runtime.spec import ContainerSpec
from cnm.runtime.state import EXITED, RUNNING, ContainerState


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


class FakeRuntime:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.specs: dict[str, ContainerSpec] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._started: dict[str, str] = {}
        self._finished: dict[str, str] = {}
        self._lock = threading.Lock()
        self._logs: dict[str, LogWriter] = {}
        self._attached: dict[str, list[tuple[socket.socket, str]]] = {}
        self._readers: dict[str, list[threading.Thread]] = {}
        self._done: dict[str, tuple[int, int]] = {}  # a pipe closed once the output is logged
        self._watchers: dict[str, threading.Thread] = {}

    def start(self, cid: str | ContainerSpec, spec: ContainerSpec | None = None) -> ContainerState:
        """As Runtime.start: a spec runs a new container; an id starts an exited one
        again in the same directory (its log goes on), with `spec` if given."""
        if isinstance(cid, ContainerSpec):
            spec, new = cid, True
        else:
            with self._lock:
                old = self._procs.get(cid)
                if old is None:
                    raise NotFound(f"no such container: {cid}")
                if old.poll() is None:
                    raise Conflict(f"container {cid} is already running")
                spec = spec or self.specs[cid]
            for t in [*self._readers.get(cid, []), *filter(None, [self._watchers.get(cid)])]:
                t.join(5)  # the last run is wholly over: output logged, exit pipe closed
            new = False
        spec.validate()
        with self._lock:
            if new and spec.id in self._procs:
                raise Conflict(f"container {spec.id} exists already")
        cdir = self.root / spec.id
        cdir.mkdir(parents=True, exist_ok=not new)
        try:
            proc = subprocess.Popen(
                spec.argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **spec.env},
                start_new_session=True,
            )
        except OSError as exc:
            if new:
                shutil.rmtree(cdir, ignore_errors=True)
            raise InvalidParameter(f"cannot run {spec.argv[0]}: {exc.strerror}") from exc
        with self._lock:
            self._procs[spec.id] = proc
            self._started[spec.id] = _now()
            self._finished.pop(spec.id, None)
            self.specs[spec.id] = spec
            if new:
                self._logs[spec.id] = LogWriter(os.open(cdir, os.O_RDONLY | os.O_DIRECTORY), 1 << 24, 2)
            else:
                os.close(self._done[spec.id][0])
            self._attached[spec.id] = []
            done = self._done[spec.id] = os.pipe()
            self._readers[spec.id] = [
                threading.Thread(target=self._pump, args=(spec.id, pipe, kind), daemon=True)
                for pipe, kind in ((proc.stdout, wire.STDOUT), (proc.stderr, wire.STDERR))
            ]
        for t in self._readers[spec.id]:
            t.start()
        watcher = threading.Thread(target=self._watch, args=(spec.id, proc, done[1]), daemon=True)
        self._watchers[spec.id] = watcher
        watcher.start()
        return self.state(spec.id)

    def _pump(self, cid: str, pipe: IO[bytes], kind: int) -> None:
        while data := pipe.read1(65536):  # type: ignore[attr-defined]
            header = wire.OUT_HEADER.pack(kind, len(data), time.time_ns())
            with self._lock:
                self._logs[cid].write(header, data)
                for sock, streams in self._attached.get(cid, []):
                    if ("o" if kind == wire.STDOUT else "e") in streams:
                        try:
                            sock.sendall(header + data)
                        except OSError:
                            pass
        pipe.close()

    def _watch(self, cid: str, proc: subprocess.Popen[bytes], done: int) -> None:
        try:  # exited, not yet reaped (its pid stays ours): end the rest of its group, as the
            # kernel ends a PID namespace with its PID 1 (a `sh -c` child kept the output open)
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ChildProcessError, ProcessLookupError, PermissionError):
            pass  # reaped by a waiter meanwhile, or nothing left of the group
        proc.wait()
        for t in self._readers.get(cid, []):
            t.join()
        rc = proc.returncode
        code = rc if rc >= 0 else 128 - rc
        with self._lock:
            self._finished.setdefault(cid, _now())
            os.close(done)
            for sock, _ in self._attached.pop(cid, []):
                try:
                    sock.sendall(wire.out_frame(wire.EXIT, b"%d" % code, time.time_ns()))
                except OSError:
                    pass
                sock.close()

    def _proc(self, cid: str) -> subprocess.Popen[bytes]:
        with self._lock:
            proc = self._procs.get(cid)
        if proc is None:
            raise NotFound(f"no such container: {cid}")
        return proc

    def state(self, cid: str) -> ContainerState:
        proc = self._proc(cid)
        rc = proc.poll()
        if rc is None:
            return ContainerState(cid, RUNNING, proc.pid, None, None, self._started[cid])
        with self._lock:
            finished = self._finished.setdefault(cid, _now())
        return ContainerState(cid, EXITED, proc.pid, None, rc if rc >= 0 else 128 - rc, self._started[cid], finished)

    def list(self) -> list[ContainerState]:
        with self._lock:
            ids = list(self._procs)
        return [self.state(cid) for cid in ids]

    def adopt(self) -> builtins.list[ContainerState]:
        """The same process keeps its children: everything is still known."""
        return self.list()

    def logs(self, cid: str, **kw: Any) -> Iterator[logs.LogLine]:
        self._proc(cid)
        return logs.read_lines(str(self.root / cid), **kw)

    def attach(self, cid: str, streams: str = "oe") -> Session:
        proc = self._proc(cid)
        mine, theirs = socket.socketpair()
        with self._lock:
            if proc.poll() is not None or cid not in self._attached:
                mine.close()
                theirs.close()
                raise Conflict(f"container {cid} is not running")
            pos = self._logs[cid].position()
            self._attached[cid].append((theirs, streams))
            theirs.sendall(wire.out_frame(wire.HELLO, b"0 " + pos, time.time_ns()))
        inode, offset = (int(x) for x in pos.split())
        return Session(mine, log_position=(inode, offset))

    def exit_fd(self, cid: str) -> int | None:
        """Readable once the process ended and its output is logged; None after."""
        self._proc(cid)
        with self._lock:
            read_end = self._done[cid][0]
            if select.select([read_end], [], [], 0)[0]:
                return None
            return os.dup(read_end)

    def kill(self, cid: str, sig: int = signal.SIGKILL) -> None:
        proc = self._proc(cid)
        if proc.poll() is not None:
            raise Conflict(f"container {cid} is not running")
        proc.send_signal(sig)

    def wait(self, cid: str, timeout: float | None = None) -> int:
        self._proc(cid).wait(timeout)
        for t in self._readers.get(cid, []):  # its output is all logged, as the runtime's is
            t.join(timeout)
        code = self.state(cid).exit_code
        return code if code is not None else -1

    def stop(self, cid: str, timeout: float | None = 10) -> int | None:
        proc = self._proc(cid)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return self.state(cid).exit_code

    def remove(self, cid: str, force: bool = False) -> None:
        with self._lock:
            proc = self._procs.get(cid)
        if proc is None:  # as the real runtime: a directory alone goes too
            shutil.rmtree(self.root / cid, ignore_errors=True)
            return
        if proc.poll() is None:
            if not force:
                raise Conflict(f"cannot remove running container {cid}: stop it first or force remove")
            proc.kill()
            proc.wait()
        for t in [*self._readers.get(cid, []), *filter(None, [self._watchers.get(cid)])]:
            t.join(5)  # its watcher closes the exit pipe: wait for it before taking it away
        with self._lock:
            self._procs.pop(cid, None)
            log = self._logs.pop(cid, None)
            done = self._done.pop(cid, None)
            self._watchers.pop(cid, None)
        if log is not None:
            os.close(log.fd)
            os.close(log.dirfd)
        if done is not None:
            os.close(done[0])
        shutil.rmtree(self.root / cid, ignore_errors=True)

    def kill_all(self) -> None:
        """Test teardown: end every process this runtime started (by its Popen)."""
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
