"""A server run in a subprocess that is out of file descriptors (EMFILE) once a few
connections are open: the API server's test (test_api_limits) and the plugin server's
(test_plugin_server_backoff) start theirs here — both back off with cnm.accept_backoff —
hold connections, watch it for a while and read what it logged."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]

# The server's script starts with this; once listening, it calls out_of_descriptors_soon().
_PRELUDE = """
import logging, os, resource, sys
sys.path.insert(0, {root!r})
logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="LOG %(message)s")

def out_of_descriptors_soon():
    # The descriptors in use now, plus room for a few connections: then EMFILE.
    n = len(os.listdir("/proc/self/fd")) + 4
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    print("ready", flush=True)
"""


def cpu_seconds(pid: int) -> float:
    """The process's CPU time (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runnable_seconds(pid: int) -> float:
    """Time the process's threads spent on a CPU or waiting for one (schedstat). Unlike
    CPU time, it does not depend on how loaded the machine is: a busy loop is runnable
    all the time, whatever share of a core it gets."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            run, wait, _ = open(f"/proc/{pid}/task/{tid}/schedstat").read().split()
        except (OSError, ValueError):
            continue
        total += int(run) + int(wait)
    return total / 1e9


@dataclass
class EmfileServer:
    proc: subprocess.Popen
    path: str  # its unix socket
    stderr: IO[str]
    clients: list[socket.socket] = field(default_factory=list)  # closed at the end

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(60)
        self.clients.append(s)
        s.connect(self.path)
        return s

    def watch(self, seconds: float, busy: Callable[[int], float]) -> tuple[float, float, list[str]]:
        """Leave it alone for `seconds`: how much of that `busy(pid)` counted, how long
        it really was, and the lines it logged about accepting a connection."""
        busy0, t0 = busy(self.proc.pid), time.monotonic()
        time.sleep(seconds)
        spent = busy(self.proc.pid) - busy0
        elapsed = time.monotonic() - t0
        self.stderr.seek(0)
        lines = [ln for ln in self.stderr.read().splitlines() if ln.startswith("LOG ")]
        return spent, elapsed, [ln for ln in lines if "accepting a connection" in ln]


@contextmanager
def emfile_server(script: str, stderr: Path) -> Iterator[EmfileServer]:
    """Run `script` (its {path} is the socket to listen on) after the prelude above; its
    stderr goes to `stderr`. Yields once it printed "ready"; kills it at the end."""
    sock_dir = tempfile.mkdtemp(prefix="cnm-emf-", dir="/tmp")  # a unix socket's path is short
    path = os.path.join(sock_dir, "s.sock")
    err = open(stderr, "w+")
    code = _PRELUDE.format(root=str(ROOT)) + textwrap.dedent(script).format(path=path)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=err, text=True)
    srv = EmfileServer(proc, path, err)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield srv
    finally:
        for s in srv.clients:
            s.close()
        proc.kill()
        proc.wait()
        err.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
