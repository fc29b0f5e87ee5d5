"""The lab's side of the daemon template (cnm.lab.zygote_main): start it, have it fork
daemons into host namespaces, close it.

One template serves one `net lab up` (or one `net lab start`); it is the lab command's
child, spoken to over an unnamed SOCK_SEQPACKET socketpair (nothing on the filesystem),
and exits when that socket closes. The daemons it forked live on without it: they are
not its children, and the memory they share with each other stays shared.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from cnm.errors import Unavailable

_PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOOT = f"import sys; sys.path.insert(0, {_PROJECT!r}); from cnm.lab.zygote_main import main; main()"
READY_TIMEOUT = 60.0  # imports on a loaded machine
SPAWN_TIMEOUT = 30.0
# Spare room in the template's command line, which its daemons rewrite to show as
# `net daemon --root … --socket …` in ps (cnm.lab.zygote_main._set_cmdline).
CMDLINE_ROOM = 400


class DaemonZygote:
    """start() once, spawn() any number of daemons (from any thread), close()."""

    def __init__(self, python: str | None = None, log: Path | None = None) -> None:
        self.python = python or sys.executable
        self.log = log
        self._proc: subprocess.Popen | None = None
        self._ctl: socket.socket | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        out: Any = subprocess.DEVNULL
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log, "ab")
        try:
            # -I: no user site or PYTHON* variables; the environment is passed on to the
            # daemons as it is (PATH for nft, ip, busybox).
            self._proc = subprocess.Popen(
                [self.python, "-I", "-c", BOOT, str(theirs.fileno()), " " * CMDLINE_ROOM],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd="/",
            )
        except OSError as exc:
            mine.close()
            raise Unavailable(f"cannot start the daemon template process: {exc.strerror or exc}") from exc
        finally:
            theirs.close()
            if out is not subprocess.DEVNULL:
                out.close()
        self._ctl = mine
        if not select.select([mine], [], [], READY_TIMEOUT)[0] or mine.recv(1) != b"R":
            self.close()
            raise Unavailable(f"the daemon template process did not become ready within {READY_TIMEOUT:g}s")

    def spawn(self, config: dict, netns: str, log: Path, cmdline: str = "net daemon") -> int:
        """Fork a daemon running `config` (cnm.daemon.DaemonConfig's fields) inside the
        network namespace at `netns`, output appended to `log`. Returns its pid as soon
        as it exists (it is ready when its socket answers)."""
        if self._ctl is None:
            raise Unavailable("the daemon template process is not running")
        log.parent.mkdir(parents=True, exist_ok=True)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds: list[int] = []
        try:
            fds.append(os.open(netns, os.O_RDONLY | os.O_CLOEXEC))
            fds.append(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
            msg = json.dumps({**config, "cmdline": cmdline}).encode()
            with self._lock:
                try:
                    socket.send_fds(self._ctl, [msg], [theirs.fileno(), *fds])
                except OSError as exc:
                    raise Unavailable(f"the daemon template process is gone: {exc.strerror or exc}") from exc
            theirs.close()
            mine.settimeout(SPAWN_TIMEOUT)
            reply = b""
            try:
                while not reply.endswith(b"\n") and (chunk := mine.recv(256)):
                    reply += chunk
            except TimeoutError:
                raise Unavailable(f"the daemon template did not fork a daemon within {SPAWN_TIMEOUT:g}s") from None
        finally:
            theirs.close()
            mine.close()
            for fd in fds:
                os.close(fd)
        words = reply.decode(errors="replace").split()
        if words[:1] != ["pid"] or len(words) != 2 or not words[1].isdigit():
            raise Unavailable(f"the daemon template could not fork a daemon: {reply.decode(errors='replace').strip()}")
        return int(words[1])

    def close(self) -> None:
        """The template exits when its socket closes; the daemons stay. Idempotent."""
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        if self._proc is not None:
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> DaemonZygote:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ZygoteLauncher:
    """cnm.lab.realise.DaemonLauncher over a DaemonZygote: the template starts in the
    background at open() (its imports overlap the underlay and etcd phases), spawn()
    waits for it, answers() tells whether a daemon's socket takes connections."""

    def __init__(self, log: Path | None = None) -> None:
        self.zygote = DaemonZygote(log=log)
        self._starter: threading.Thread | None = None
        self._error: BaseException | None = None

    def open(self) -> None:
        def start() -> None:
            try:
                self.zygote.start()
            except BaseException as exc:
                self._error = exc

        self._starter = threading.Thread(target=start, name="lab-zygote", daemon=True)
        self._starter.start()

    def spawn(self, config: dict, netns: str, log: Path, cmdline: str) -> int:
        if self._starter is None:
            self.open()
        assert self._starter is not None
        self._starter.join()
        if self._error is not None:
            raise self._error
        return self.zygote.spawn(config, netns, log, cmdline)

    @staticmethod
    def answers(sock_path: str) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(1.0)
            s.connect(sock_path)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def close(self) -> None:
        if self._starter is not None:
            self._starter.join()
        self.zygote.close()
