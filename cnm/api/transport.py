"""How the API client reaches the daemon: a unix-socket transport on the standard
library (the CLI must start fast), and an in-memory one for tests.

A transport sends one request and answers with plain values; it raises
`cnm.errors.Unavailable` (or `Forbidden`) when the daemon cannot be reached, never a
bare OSError.
"""
from __future__ import annotations

import http.client
import io
import json
import socket
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Protocol

from cnm.errors import Forbidden, Unavailable

Headers = dict[str, str]
Answer = tuple[int, Headers, bytes]


class StreamResponse(Protocol):
    """A response whose body is read incrementally (logs -f, events)."""

    status: int

    def getheader(self, name: str, default: str | None = None) -> str | None:
        """One response header, case-insensitive."""

    def read(self, amt: int | None = None) -> bytes:
        """Up to `amt` bytes of the body (all of it when None); b"" at the end."""

    def readline(self) -> bytes:
        """One line of the body, with its newline; b"" at the end."""

    def close(self) -> None:
        """Release the connection. Idempotent."""


class Transport(Protocol):
    def request(self, method: str, path: str, body: dict | None = None) -> Answer:
        """Send one request (`path` includes the query string; `body` is sent as JSON)
        and return (status, headers with lower-case names, body bytes)."""

    def stream(self, method: str, path: str, body: dict | None = None) -> StreamResponse:
        """Like `request`, but return as soon as the status line and headers are in."""


def _encode(body: dict | None) -> tuple[bytes | None, Headers]:
    if body is None:
        return None, {}
    return json.dumps(body).encode(), {"Content-Type": "application/json"}


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _ClosingResponse:
    """An HTTPResponse that also closes its connection when closed."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._resp = resp
        self.status = resp.status

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self._resp.getheader(name, default)

    def read(self, amt: int | None = None) -> bytes:
        return self._resp.read(amt)

    def readline(self) -> bytes:
        return self._resp.readline()

    def __iter__(self):
        return iter(self.readline, b"")

    def close(self) -> None:
        self._resp.close()
        self._conn.close()

    def __enter__(self) -> "_ClosingResponse":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class UnixSocketTransport:
    """HTTP/1.1 over a unix socket; one connection per request (the CLI makes few)."""

    path: str
    timeout: float | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def _send(self, method: str, path: str, body: dict | None) -> tuple[_UnixConnection, http.client.HTTPResponse]:
        data, headers = _encode(body)
        conn = _UnixConnection(self.path, self.timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            return conn, conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            conn.close()
            raise Unavailable(f"cannot reach the cnm daemon at {self.url} — is it running? "
                              f"start it with: net daemon --socket {self.path}") from exc
        except PermissionError as exc:
            conn.close()
            raise Forbidden(f"permission denied on {self.url}: run as root or get write access to the socket") from exc
        except TimeoutError as exc:
            conn.close()
            raise Unavailable(f"the cnm daemon at {self.url} did not answer within {self.timeout}s") from exc
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise Unavailable(f"cannot talk to the cnm daemon at {self.url}: {exc or type(exc).__name__}") from exc

    def request(self, method: str, path: str, body: dict | None = None) -> Answer:
        conn, resp = self._send(method, path, body)
        try:
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        except (OSError, http.client.HTTPException) as exc:
            raise Unavailable(f"lost the connection to the cnm daemon at {self.url}: {exc}") from exc
        finally:
            conn.close()

    def stream(self, method: str, path: str, body: dict | None = None) -> StreamResponse:
        conn, resp = self._send(method, path, body)
        return _ClosingResponse(conn, resp)


Handler = Callable[[str, str, "dict | None"], Answer]


@dataclass
class _BytesResponse:
    status: int
    headers: Headers
    body: BinaryIO

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def read(self, amt: int | None = None) -> bytes:
        return self.body.read() if amt is None else self.body.read(amt)

    def readline(self) -> bytes:
        return self.body.readline()

    def __iter__(self):
        return iter(self.readline, b"")

    def close(self) -> None:
        self.body.close()


@dataclass
class InMemoryTransport:
    """Answers from a function `handler(method, path, body) -> (status, headers, bytes)`;
    records every request in `calls` for tests that need to see the wire."""

    handler: Handler
    calls: list[tuple[str, str, dict | None]] = field(default_factory=list)

    def request(self, method: str, path: str, body: dict | None = None) -> Answer:
        self.calls.append((method, path, body))
        status, headers, data = self.handler(method, path, body)
        return status, {k.lower(): v for k, v in headers.items()}, data

    def stream(self, method: str, path: str, body: dict | None = None) -> StreamResponse:
        status, headers, data = self.request(method, path, body)
        return _BytesResponse(status, headers, io.BytesIO(data))
