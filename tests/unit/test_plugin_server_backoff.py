"""A plugin server (`net plugin serve`, cnm.plugins.sdk) out of file descriptors: it
used to spin on accept() at 100% of a core (socketserver ignores the error and selects
again at once, the socket still readable). Now it backs off and logs once per interval,
with the API's code (cnm.accept_backoff), and serves again once descriptors are free."""

from __future__ import annotations

import time

from tests.unit.emfile_server import emfile_server, runnable_seconds
from tests.unit.test_api_limits import read_all, request

PLUGIN_SERVER = """
    import threading
    from cnm.plugins.server import QuietHandler, UnixHTTPServer

    class Handler(QuietHandler):
        def do_POST(self):
            self.read_body()
            self.send_json_bytes(200, b'{{"Implements": ["NetworkDriver"]}}')

    server = UnixHTTPServer({path!r}, Handler, accept_retry_max=0.2, error_log_interval=1.0).start()
    out_of_descriptors_soon()
    threading.Event().wait()
"""


def test_out_of_descriptors_backs_off_and_logs_once_per_interval(tmp_path):
    with emfile_server(PLUGIN_SERVER, tmp_path / "stderr") as srv:
        for i in range(9):  # 4 accepted (held by their handler threads until they send), 5 in the backlog
            try:
                srv.connect()
            except BlockingIOError:
                raise AssertionError(f"connect {i}") from None
            time.sleep(0.1)  # the server accepts one per select: let it, until it cannot
        busy, elapsed, accept_lines = srv.watch(3.2, runnable_seconds)
        assert 1 <= len(accept_lines) <= 5, accept_lines  # 3.2 s at one line per second
        assert f"plugin {srv.path}" in accept_lines[0] and "Too many open files" in accept_lines[0]
        assert busy < 0.3 * elapsed, f"runnable {busy:.2f}s of {elapsed:.1f}s: a busy loop"
        for s in srv.clients[:4]:  # the accepted ones are answered and go: descriptors free up
            s.sendall(request("POST", "/Plugin.Activate", b"{}"))
            assert b"NetworkDriver" in read_all(s)
            s.close()
        waiting = srv.clients[-1]
        waiting.sendall(request("POST", "/Plugin.Activate", b"{}"))
        assert b"NetworkDriver" in read_all(waiting)
