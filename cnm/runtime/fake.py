"""An honest stand-in for `cnm.runtime.Runtime` in unit tests: plain child processes.

A container is `spec.argv` run with `spec.env` as a child of the test process — no
namespaces, cgroups or root filesystem — so output, exit codes, signals and exit
pidfds are real while nothing needs root. The network namespace, hosts and resolv.conf
the caller asked for are not applied; the spec is kept in `specs` so tests can check
what was asked. Output goes to per-container log files under `root`.
"""
from __future__ import annotations

import builtins
import datetime
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from cnm.errors import Conflict, InvalidParameter, NotFound
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

    def start(self, spec: ContainerSpec) -> ContainerState:
        spec.validate()
        with self._lock:
            if spec.id in self._procs:
                raise Conflict(f"container {spec.id} exists already")
        cdir = self.root / spec.id
        cdir.mkdir(parents=True)
        out, err = self.logs_paths(spec.id)
        with open(out, "wb") as fo, open(err, "wb") as fe:
            try:
                proc = subprocess.Popen(spec.argv, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                                        env={**os.environ, **spec.env}, start_new_session=True)
            except OSError as exc:
                shutil.rmtree(cdir, ignore_errors=True)
                raise InvalidParameter(f"cannot run {spec.argv[0]}: {exc.strerror}") from exc
        with self._lock:
            self._procs[spec.id] = proc
            self._started[spec.id] = _now()
            self.specs[spec.id] = spec
        return self.state(spec.id)

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
        return ContainerState(cid, EXITED, proc.pid, None, rc if rc >= 0 else 128 - rc,
                              self._started[cid], finished)

    def list(self) -> list[ContainerState]:
        with self._lock:
            ids = list(self._procs)
        return [self.state(cid) for cid in ids]

    def adopt(self) -> builtins.list[ContainerState]:
        """The same process keeps its children: everything is still known."""
        return self.list()

    def logs_paths(self, cid: str) -> tuple[str, str]:
        cdir = self.root / cid
        return str(cdir / "stdout.log"), str(cdir / "stderr.log")

    def exit_fd(self, cid: str) -> int | None:
        proc = self._proc(cid)
        if proc.poll() is not None:
            return None
        try:
            return os.pidfd_open(proc.pid)
        except ProcessLookupError:
            return None

    def kill(self, cid: str, sig: int = signal.SIGKILL) -> None:
        proc = self._proc(cid)
        if proc.poll() is not None:
            raise Conflict(f"container {cid} is not running")
        proc.send_signal(sig)

    def wait(self, cid: str, timeout: float | None = None) -> int:
        self._proc(cid).wait(timeout)
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
        if proc is None:
            return
        if proc.poll() is None:
            if not force:
                raise Conflict(f"cannot remove running container {cid}: stop it first or force remove")
            proc.kill()
            proc.wait()
        with self._lock:
            self._procs.pop(cid, None)
        shutil.rmtree(self.root / cid, ignore_errors=True)

    def kill_all(self) -> None:
        """Test teardown: end every process this runtime started (by its Popen)."""
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
