"""A plugin server (`net plugin serve`, cnm.plugins.sdk) out of file descriptors: it
used to spin on accept() at 100% of a core (socketserver ignores the error and selects
again at once, the socket still readable). Now it backs off and logs once per interval,
with the API's code (cnm.accept_backoff), and serves again once descriptors are free."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

from tests.unit.test_api_limits import ROOT, read_all, request


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


PLUGIN_SERVER = textwrap.dedent("""
    import logging, os, resource, sys, threading
    sys.path.insert(0, {root!r})
    from cnm.plugins.server import QuietHandler, UnixHTTPServer
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="LOG %(message)s")

    class Handler(QuietHandler):
        def do_POST(self):
            self.read_body()
            self.send_json_bytes(200, b'{{"Implements": ["NetworkDriver"]}}')

    server = UnixHTTPServer({path!r}, Handler, accept_retry_max=0.2, error_log_interval=1.0).start()
    # The descriptors in use now, plus room for a few connections: then EMFILE.
    n = len(os.listdir("/proc/self/fd")) + 4
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    print("ready", flush=True)
    threading.Event().wait()
""")


def test_out_of_descriptors_backs_off_and_logs_once_per_interval(tmp_path):
    sock_dir = tempfile.mkdtemp(prefix="cnm-pemf-", dir="/tmp")
    path = os.path.join(sock_dir, "p.sock")
    err = open(tmp_path / "stderr", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-c", PLUGIN_SERVER.format(root=str(ROOT), path=path)],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
    clients: list[socket.socket] = []
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for i in range(9):  # 4 accepted (held by their handler threads until they send), 5 in the backlog
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(60)
            try:
                s.connect(path)
            except BlockingIOError:
                raise AssertionError(f"connect {i}") from None
            clients.append(s)
            time.sleep(0.1)  # the server accepts one per select: let it, until it cannot
        busy0, t0 = runnable_seconds(proc.pid), time.monotonic()
        time.sleep(3.2)
        busy = runnable_seconds(proc.pid) - busy0
        elapsed = time.monotonic() - t0
        err.seek(0)
        lines = [ln for ln in err.read().splitlines() if ln.startswith("LOG ")]
        accept_lines = [ln for ln in lines if "accepting a connection" in ln]
        assert 1 <= len(accept_lines) <= 5, lines  # 3.2 s at one line per second
        assert f"plugin {path}" in accept_lines[0] and "Too many open files" in accept_lines[0]
        assert busy < 0.3 * elapsed, f"runnable {busy:.2f}s of {elapsed:.1f}s: a busy loop"
        for s in clients[:4]:  # the accepted ones are answered and go: descriptors free up
            s.sendall(request("POST", "/Plugin.Activate", b"{}"))
            assert b"NetworkDriver" in read_all(s)
            s.close()
        waiting = clients[-1]
        waiting.sendall(request("POST", "/Plugin.Activate", b"{}"))
        assert b"NetworkDriver" in read_all(waiting)
    finally:
        for s in clients:
            s.close()
        proc.kill()
        proc.wait()
        err.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
