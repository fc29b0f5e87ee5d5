"""A threading HTTP server on a unix socket (standard library), for plugin servers."""

from __future__ import annotations

import http.server
import logging
import os
import socket
import socketserver
import threading

from cnm.accept_backoff import AcceptBackoff, RateLimitedLog
from cnm.errors import Conflict

log = logging.getLogger("cnm.plugins")
ACCEPT_RETRY_MAX = 1.0  # as the API's (cnm.api.listener.Limits)
ERROR_LOG_INTERVAL = 60.0


def _listening(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


class UnixHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    address_family = socket.AF_UNIX
    daemon_threads = True

    def __init__(
        self,
        path: str,
        handler: type[http.server.BaseHTTPRequestHandler],
        *,
        accept_retry_max: float = ACCEPT_RETRY_MAX,
        error_log_interval: float = ERROR_LOG_INTERVAL,
    ) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if os.path.exists(path):
            if _listening(path):
                raise Conflict(f"a plugin already listens on {path}; stop it or choose another name")
            os.unlink(path)  # stale socket of a dead server
        self.path = path
        self._thread: threading.Thread | None = None
        # socketserver ignores a failed accept and selects again at once: out of
        # descriptors, the socket stays readable and the thread spun. Back off instead.
        self.backoff = AcceptBackoff(f"plugin {path}", accept_retry_max, RateLimitedLog(error_log_interval, log))
        self._closing = threading.Event()  # cuts a back-off pause short
        super().__init__(path, handler)  # type: ignore[arg-type]

    def get_request(self) -> tuple[socket.socket, object]:
        try:
            conn = super().get_request()
        except OSError as exc:
            self._closing.wait(self.backoff.failed(exc))
            raise  # socketserver drops the attempt
        self.backoff.succeeded()
        return conn

    def server_bind(self) -> None:
        # HTTPServer.server_bind expects (host, port); a unix socket has a path.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "localhost", 0

    def start(self) -> UnixHTTPServer:
        """Serve on a background thread; returns self."""
        self._thread = threading.Thread(
            target=self.serve_forever, args=(0.05,), name=f"plugin:{self.path}", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and remove the socket. Idempotent."""
        if self._thread is not None:
            self._closing.set()
            self.shutdown()
            self._thread.join(5)
            self._thread = None
        self.server_close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """Request handler for unix sockets: no client address, no stderr logging."""

    protocol_version = "HTTP/1.0"

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json_bytes(
        self, status: int, data: bytes, content_type: str = "application/vnd.docker.plugins.v1+json"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
