"""Template: the daemon's side of the template process that forks supervisors.

One template per Runtime object (so per daemon: a `net lab` of ten hosts runs ten, each
in its own daemon's namespaces). It is the Runtime's child, spoken to over an unnamed
SOCK_SEQPACKET socketpair: nothing on the filesystem to secure, find or clean up, and no
other process can reach it. Its lifetime follows the socket: when the daemon exits, by
SIGKILL too, the template reads EOF and exits. A restarted daemon just starts a new one
(in its own, possibly different, namespaces and code), lazily or with `ensure()`.

Requests (see cnm.runtime.template_main): `request(op, dirfd)` makes a stream
socketpair per request and sends one end (and the container directory's fd) with the
operation byte; the caller talks to the supervisor on the other end. Messages on a
SEQPACKET socket are atomic, so any number of threads may ask at once.

The template may die at any time (killed, crashed). A request that finds it dead
(EPIPE on send) starts a new one and is sent again; a request it took with it is seen
by the caller as EOF on its socket without an answer (see Runtime._spawn, which asks
again if no supervisor claimed the directory).
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

from cnm.errors import Unavailable
from cnm.runtime import shim, wire

# The project root (the directory holding the `cnm` package), put on the template's
# sys.path explicitly: it runs with -I -S (no site, no environment), for start-up speed.
_PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOOT = f"import sys; sys.path.insert(0, {_PROJECT!r}); from cnm.runtime.template_main import main; main()"
READY_TIMEOUT = 10.0


class Template:
    """`scratch`: a directory in which each template start makes a private one (0700)
    to warm up in (see template_main._warm_up), removed once it is ready; None: no
    warm-up (supervisors then cost ~150 kB more private memory each)."""

    def __init__(
        self, python: str | None = None, scratch: str | None = None, namespace_dirs: tuple[str, ...] = ()
    ) -> None:
        self.python = python or sys.executable
        self.scratch = scratch
        self.namespace_dirs = namespace_dirs  # see template_main: left out of containers' mounts
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._ctl: socket.socket | None = None
        self.starts = 0  # how many template processes this object has started

    @property
    def pid(self) -> int | None:
        """The live template's pid, or None."""
        with self._lock:
            live = self._live()
            return live[0].pid if live else None

    def _live(self) -> tuple[subprocess.Popen, socket.socket] | None:
        if self._proc is None or self._ctl is None or self._proc.poll() is not None:
            return None
        return self._proc, self._ctl

    def _stop(self) -> None:
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    def _start(self) -> tuple[subprocess.Popen, socket.socket]:
        self._stop()
        warm = tempfile.mkdtemp(prefix=".template-", dir=self.scratch) if self.scratch else None
        try:
            return self._spawn(warm)
        finally:
            if warm:
                shutil.rmtree(warm, ignore_errors=True)

    def _spawn(self, warm: str | None) -> tuple[subprocess.Popen, socket.socket]:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [self.python, "-I", "-S", "-c", BOOT, str(theirs.fileno()), warm or "-", *self.namespace_dirs],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",
                env={},
            )
        except OSError as exc:
            mine.close()
            raise Unavailable(f"cannot start the container template process: {exc.strerror or exc}") from exc
        finally:
            theirs.close()
        self._ctl = mine
        self.starts += 1
        poller = select.poll()  # not select(): the daemon's fds pass 1,023 with many containers
        poller.register(mine, select.POLLIN)
        if not poller.poll(int(READY_TIMEOUT * 1000)) or mine.recv(1) != b"R":
            self._stop()
            raise Unavailable("the container template process did not become ready (see the daemon's log)")
        return self._proc, mine

    def ensure(self) -> int:
        """Start the template if it is not running; its pid. Idempotent."""
        with self._lock:
            return (self._live() or self._start())[0].pid

    def request(self, op: bytes, dirfd: int | None = None) -> socket.socket:
        """Have the template fork a supervisor for `op`; return the socket to talk to it
        on (the caller closes it). Starts the template first if it is not running, and
        again if it is found dead on the way."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = [theirs.fileno()] + ([dirfd] if dirfd is not None else [])
        try:
            for attempt in (1, 2):
                with self._lock:
                    _, ctl = self._live() or self._start()
                    try:
                        socket.send_fds(ctl, [op], fds)
                        return mine
                    except (BrokenPipeError, ConnectionError):
                        if attempt == 2:
                            raise Unavailable(
                                "the container template process keeps dying (see the daemon's log)"
                            ) from None
                        self._stop()
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        raise AssertionError("not reached")

    def probe(self, timeout: float = 10.0) -> int:
        """Make a supervisor that answers at once and exits; its pid. For health checks
        and for measuring what making a supervisor costs."""
        sock = self.request(shim.OP_PROBE)
        with sock:
            sock.settimeout(timeout)
            reply = b""
            while chunk := sock.recv(256):
                reply += chunk
        frames = wire.OutDecoder().feed(reply)
        if not frames or frames[0][0] != wire.OK:
            raise Unavailable(f"the container template process did not answer a probe: {reply!r}")
        return int(frames[0][2])

    def kill(self) -> None:
        """Kill the template (it is started again when needed). Running supervisors and
        containers are not affected."""
        with self._lock:
            self._stop()

    close = kill
