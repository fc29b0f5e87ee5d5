"""How the API client reaches the daemon: a unix-socket transport on the standard
library (the CLI must start fast), and an in-memory one for tests.

A transport sends one request and answers with plain values; it raises
`cnm.errors.Unavailable` (or `Forbidden`) when the daemon cannot be reached, never a
bare OSError.
"""

from __future__ import annotations

import _socket  # socket.py's own imports (enum, selectors) cost the CLI ~9 ms; the C module does all we need
import io

from cnm import jsonlite as json  # the json package's text, without its import cost
from cnm.errors import Forbidden, Unavailable

Headers = dict[str, str]
Answer = tuple[int, Headers, bytes]

TYPE_CHECKING = False  # typing stays out of the CLI's start (~4 ms); type checkers see True
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO, Protocol

    Handler = Callable[[str, str, "dict | None"], Answer]

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

        def upload(self, method: str, path: str, source: BinaryIO, content_type: str) -> StreamResponse:
            """Send the bytes of `source` as the body (chunked: the length need not be
            known; `docker load`, `docker import`), then answer like `stream`."""


def _encode(body: dict | None) -> tuple[bytes | None, Headers]:
    if body is None:
        return None, {}
    return json.dumps(body).encode(), {"Content-Type": "application/json"}


class _ProtocolError(Exception):
    """The daemon's answer is not HTTP/1.x as expected."""


class _SocketReader:
    """Buffered reads from a connected socket: what `socket.makefile("rb")` gives, for a
    plain `_socket.socket` (its reads honour the socket's timeout)."""

    CHUNK = 65536

    def __init__(self, sock: _socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._pos = 0

    def _fill(self) -> bool:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        data = self._sock.recv(self.CHUNK)
        self._buf += data
        return bool(data)

    def _take(self, n: int) -> bytes:
        out = bytes(self._buf[self._pos : self._pos + n])
        self._pos += len(out)
        return out

    def readline(self, limit: int = -1) -> bytes:
        """Up to and including the next newline; at most `limit` bytes when limit >= 0;
        what is left (maybe b"") at the end of the stream."""
        seen = 0  # bytes after _pos already searched
        while True:
            end = self._buf.find(b"\n", self._pos + seen)
            available = len(self._buf) - self._pos
            if end >= 0:
                n = end + 1 - self._pos
                break
            if 0 <= limit <= available:
                n = available
                break
            seen = available
            if not self._fill():
                n = available
                break
        return self._take(n if limit < 0 else min(n, limit))

    def read(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n and self._fill():
            pass
        return self._take(n)

    def take_rest(self) -> bytes:
        out = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = 0
        return out

    def read1(self, n: int) -> bytes:
        if self._pos >= len(self._buf):
            self._fill()
        return self._take(n)

    def close(self) -> None:
        self._buf.clear()
        self._pos = 0


class _RawResponse:
    """A minimal HTTP/1.1 response reader on a socket: status line, headers, then a body
    framed by Content-Length, chunked encoding, or the end of the connection.

    Written out (instead of http.client) because importing http.client pulls in the
    email package and ssl: ~40 ms on every CLI call."""

    def __init__(self, sock: _socket.socket) -> None:
        self._sock: _socket.socket | None = sock
        self._file = _SocketReader(sock)
        line = self._file.readline(65537)
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise _ProtocolError(f"bad status line {line[:60]!r}")
        self.status = int(parts[1])
        self.headers: Headers = {}
        while True:
            h = self._file.readline(65537)
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        self._left: int | None = int(length) if length is not None and not self._chunked else None
        self._chunk_left = 0
        self._eof = self.status in (204, 304) or self._left == 0

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def take_buffered(self) -> bytes:
        """Bytes read past the headers and not yet returned (a hijacked stream's first)."""
        return self._file.take_rest()

    def detach(self) -> _socket.socket:
        """The socket, no longer this response's (it will not close it)."""
        sock, self._sock = self._sock, None
        assert sock is not None
        return sock

    def getheaders(self) -> list[tuple[str, str]]:
        return list(self.headers.items())

    def _next_chunk(self) -> bool:
        if self._chunk_left == 0:
            size_line = self._file.readline(1024)
            if not size_line:
                raise _ProtocolError("connection closed inside a chunked body")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self._file.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                self._eof = True
                return False
            self._chunk_left = size
        return True

    def read(self, amt: int | None = None) -> bytes:
        if amt is None:
            out = []
            while not self._eof:
                data = self.read(65536)
                if not data:
                    break
                out.append(data)
            return b"".join(out)
        if self._eof or amt <= 0:
            return b""
        if self._chunked:
            if not self._next_chunk():
                return b""
            data = self._file.read(min(amt, self._chunk_left))
            self._chunk_left -= len(data)
            if self._chunk_left == 0:
                self._file.readline(3)  # the CRLF after each chunk
            if not data:
                self._eof = True
            return data
        if self._left is not None:
            data = self._file.read(min(amt, self._left))
            self._left -= len(data)
            if self._left == 0 or not data:
                self._eof = True
            return data
        data = self._file.read1(amt)
        if not data:
            self._eof = True
        return data

    def readline(self) -> bytes:
        out = bytearray()
        while not out.endswith(b"\n"):
            if self._chunked:
                if self._eof or not self._next_chunk():
                    break
                piece = self._file.readline(self._chunk_left)
                self._chunk_left -= len(piece)
                if self._chunk_left == 0:
                    self._file.readline(3)
            elif self._left is not None:
                if self._eof:
                    break
                piece = self._file.readline(self._left)
                self._left -= len(piece)
                if self._left == 0:
                    self._eof = True
            else:
                piece = self._file.readline()
                if not piece:
                    self._eof = True
            if not piece:
                break
            out += piece
        return bytes(out)

    def __iter__(self):
        return iter(self.readline, b"")

    def close(self) -> None:
        self._file.close()
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> _RawResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class UnixSocketTransport:
    """HTTP/1.1 over a unix socket; one connection per request (the CLI makes few)."""

    def __init__(self, path: str, timeout: float | None = None) -> None:
        self.path = path
        self.timeout = timeout

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def _send(self, method: str, path: str, body: dict | None, upgrade: bool = False) -> _RawResponse:
        data, headers = _encode(body)
        connection = ["Connection: Upgrade", "Upgrade: tcp"] if upgrade else ["Connection: close"]
        head = [
            f"{method} {path} HTTP/1.1",
            "Host: localhost",
            *connection,
            f"Content-Length: {len(data) if data else 0}",
        ]
        head += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (data or b"")
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
            sock.sendall(request)
            return _RawResponse(sock)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise Unavailable(
                f"cannot reach the cnm daemon at {self.url} — is it running? "
                f"start it with: net daemon --socket {self.path}"
            ) from exc
        except PermissionError as exc:
            sock.close()
            raise Forbidden(f"permission denied on {self.url}: run as root or get write access to the socket") from exc
        except TimeoutError as exc:
            sock.close()
            raise Unavailable(f"the cnm daemon at {self.url} did not answer within {self.timeout}s") from exc
        except (OSError, _ProtocolError, ValueError) as exc:
            sock.close()
            raise Unavailable(f"cannot talk to the cnm daemon at {self.url}: {exc or type(exc).__name__}") from exc

    def request(self, method: str, path: str, body: dict | None = None) -> Answer:
        resp = self._send(method, path, body)
        try:
            data = resp.read()
            return resp.status, dict(resp.headers), data
        except (OSError, _ProtocolError, ValueError) as exc:
            raise Unavailable(f"lost the connection to the cnm daemon at {self.url}: {exc}") from exc
        finally:
            resp.close()

    def stream(self, method: str, path: str, body: dict | None = None) -> StreamResponse:
        return self._send(method, path, body)

    def hijack(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes, _socket.socket | None]:
        """Docker's hijacked connection (attach, exec start): the request with
        `Upgrade: tcp`; on 101, (101, bytes that came after the headers, the socket: a
        raw duplex stream now, the caller's to close); else (status, body, None)."""
        resp = self._send(method, path, body, upgrade=True)
        if resp.status != 101:
            try:
                return resp.status, resp.read(), None
            except (OSError, _ProtocolError, ValueError) as exc:
                raise Unavailable(f"lost the connection to the cnm daemon at {self.url}: {exc}") from exc
            finally:
                resp.close()
        early = resp.take_buffered()
        return 101, early, resp.detach()

    def upload(self, method: str, path: str, source: BinaryIO, content_type: str) -> StreamResponse:
        head = [
            f"{method} {path} HTTP/1.1",
            "Host: localhost",
            "Connection: close",
            "Transfer-Encoding: chunked",
            f"Content-Type: {content_type}",
        ]
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            sock.close()
            raise Unavailable(
                f"cannot reach the cnm daemon at {self.url} — is it running? "
                f"start it with: net daemon --socket {self.path}"
            ) from exc
        except OSError as exc:
            sock.close()
            raise Unavailable(f"cannot talk to the cnm daemon at {self.url}: {exc}") from exc
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            while True:
                chunk = source.read(1 << 20)
                if not chunk:
                    break
                sock.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon answered before reading it all (an early refusal): read that answer
        except OSError as exc:
            sock.close()
            raise Unavailable(f"lost the connection to the cnm daemon at {self.url}: {exc}") from exc
        try:
            return _RawResponse(sock)
        except (OSError, _ProtocolError, ValueError) as exc:
            sock.close()
            raise Unavailable(f"lost the connection to the cnm daemon at {self.url}: {exc}") from exc


class _BytesResponse:
    def __init__(self, status: int, headers: Headers, body: BinaryIO) -> None:
        self.status, self.headers, self.body = status, headers, body

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


class InMemoryTransport:
    """Answers from a function `handler(method, path, body) -> (status, headers, bytes)`;
    records every request in `calls` for tests that need to see the wire."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.calls: list[tuple[str, str, dict | None]] = []

    def request(self, method: str, path: str, body: dict | None = None) -> Answer:
        self.calls.append((method, path, body))
        status, headers, data = self.handler(method, path, body)
        return status, {k.lower(): v for k, v in headers.items()}, data

    def stream(self, method: str, path: str, body: dict | None = None) -> StreamResponse:
        status, headers, data = self.request(method, path, body)
        return _BytesResponse(status, headers, io.BytesIO(data))

    def upload(self, method: str, path: str, source: BinaryIO, content_type: str) -> StreamResponse:
        """The handler gets the uploaded bytes as `body` (not a dict)."""
        status, headers, data = self.request(method, path, source.read())  # type: ignore[arg-type]
        return _BytesResponse(status, headers, io.BytesIO(data))
