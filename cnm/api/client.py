"""A synchronous client of the daemon's API, on the standard library only.

    client = APIClient("unix:///run/cnm/cnm.sock")
    net_id = client.network_create({"Name": "front", "Driver": "bridge"})

Non-2xx answers raise the error category the daemon answered with
(`cnm.errors.from_http`); an unreachable daemon raises `cnm.errors.Unavailable`.
"""

from __future__ import annotations

from cnm import jsonlite as json  # the json package's text, without its import cost
from cnm.api.transport import UnixSocketTransport
from cnm.errors import InvalidParameter, Unavailable, from_http

TYPE_CHECKING = False  # typing stays out of the CLI's start (~4 ms); type checkers see True
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, BinaryIO

    from cnm.api.transport import StreamResponse, Transport

DEFAULT_HOST = "unix:///run/cnm/cnm.sock"


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def quote(text: str, plus: bool = False) -> str:
    """Percent-encode all but RFC 3986's unreserved characters (urllib.parse's
    quote(text, safe="") and, with `plus`, quote_plus: urllib.parse costs the CLI
    ~5 ms of imports)."""
    data = text.encode()
    if all(b in _UNRESERVED for b in data):
        return text
    return "".join(chr(b) if b in _UNRESERVED else "+" if plus and b == 0x20 else f"%{b:02X}" for b in data)


def urlencode(query: dict[str, str] | list[tuple[str, str]]) -> str:
    """A query string as urllib.parse.urlencode writes it (pairs: a key may repeat)."""
    pairs = query.items() if isinstance(query, dict) else query
    return "&".join(f"{quote(str(k), True)}={quote(str(v), True)}" for k, v in pairs)


def socket_path(host: str) -> str:
    """The socket path of a `unix:///path` host (a bare absolute path is accepted too)."""
    if host.startswith("unix://"):
        path = host[len("unix://") :]
    elif host.startswith("/"):
        path = host
    else:
        raise InvalidParameter(f"unsupported host {host!r}: use unix:///path/to/cnm.sock")
    if not path.startswith("/"):
        raise InvalidParameter(f"invalid host {host!r}: the socket path must be absolute (unix:///path)")
    return path


def _error_message(status: int, data: bytes) -> str:
    text = data.decode(errors="replace").strip()
    try:
        body = json.loads(text)
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return body["message"]
    except ValueError:
        pass
    return text or f"the daemon answered HTTP {status}"


def _decode(headers: dict[str, str], data: bytes) -> Any:
    if not data:
        return None
    if headers.get("content-type", "").startswith("application/json"):
        return json.loads(data)
    return data.decode(errors="replace")


class APIClient:
    def __init__(self, host: str = DEFAULT_HOST, transport: Transport | None = None) -> None:
        self.host = host
        self.transport: Transport = transport if transport is not None else UnixSocketTransport(socket_path(host))

    # -- generic ------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        stream: bool = False,
        query: dict[str, str] | list[tuple[str, str]] | None = None,
    ) -> Any:
        """One API call. Returns the decoded body (JSON as Python, text as str, empty
        as None), or with `stream=True` the open response (read it, then close it).
        Raises the daemon's error category on a non-2xx answer."""
        if query:
            path = f"{path}?{urlencode(query)}"
        if stream:
            resp: StreamResponse = self.transport.stream(method, path, body)
            if resp.status >= 300:
                try:
                    data = resp.read()
                finally:
                    resp.close()
                raise from_http(resp.status, _error_message(resp.status, data))
            return resp
        status, headers, data = self.transport.request(method, path, body)
        if status >= 300:
            raise from_http(status, _error_message(status, data))
        try:
            return _decode(headers, data)
        except ValueError as exc:
            raise from_http(502, f"the daemon sent malformed JSON for {method} {path}: {exc}") from exc

    def hijack(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        query: dict[str, str] | list[tuple[str, str]] | None = None,
    ) -> tuple[Any, bytes]:
        """A call that takes the connection over (attach, exec start): (the socket, now a
        raw duplex stream and the caller's to close; bytes already read from it). Raises
        the daemon's error category when it refuses."""
        if query:
            path = f"{path}?{urlencode(query)}"
        hijack = getattr(self.transport, "hijack", None)
        if hijack is None:
            raise Unavailable("this connection to the daemon cannot carry an interactive stream")
        status, data, sock = hijack(method, path, body)
        if sock is None:
            if status < 300:
                raise from_http(502, f"the daemon answered {status} to {method} {path} instead of switching protocols")
            raise from_http(status, _error_message(status, data))
        return sock, data

    def upload(
        self,
        method: str,
        path: str,
        source: BinaryIO,
        query: dict[str, str] | list[tuple[str, str]] | None = None,
        content_type: str = "application/x-tar",
    ) -> StreamResponse:
        """Send a file's bytes as the body (streamed); returns the open response, or
        raises the daemon's error category."""
        if query:
            path = f"{path}?{urlencode(query)}"
        resp = self.transport.upload(method, path, source, content_type)
        if resp.status >= 300:
            try:
                data = resp.read()
            finally:
                resp.close()
            raise from_http(resp.status, _error_message(resp.status, data))
        return resp

    # -- system -------------------------------------------------------------------

    def ping(self) -> str:
        return self.request("GET", "/_ping")

    def version(self) -> dict:
        return self.request("GET", "/version")

    # -- networks -----------------------------------------------------------------

    def networks(self, filters: dict[str, list[str]] | None = None) -> list[dict]:
        query = {"filters": json.dumps(filters)} if filters else None
        return self.request("GET", "/networks", query=query)

    def network_create(self, body: dict) -> str:
        return self.request("POST", "/networks/create", body)["Id"]

    def network_inspect(self, ref: str) -> dict:
        return self.request("GET", f"/networks/{quote(ref)}")

    def network_remove(self, ref: str) -> None:
        self.request("DELETE", f"/networks/{quote(ref)}")

    def networks_prune(self) -> list[str]:
        return self.request("POST", "/networks/prune")["NetworksDeleted"] or []

    # -- containers ---------------------------------------------------------------

    def container_create(self, body: dict) -> str:
        """Create a container (it does not run until `container_start`); its id.
        A `Name` in the body is sent as Docker's ?name= query."""
        body = dict(body)
        name = body.pop("Name", None)
        return self.request("POST", "/containers/create", body, query={"name": name} if name else None)["Id"]

    def container_start(self, ref: str) -> None:
        self.request("POST", f"/containers/{quote(ref)}/start")

    def containers(self, all: bool = False, filters: dict[str, list[str]] | None = None) -> list[dict]:
        query = {"all": "1"} if all else {}
        if filters:
            query["filters"] = json.dumps(filters)
        return self.request("GET", "/containers/json", query=query or None)

    def containers_text(
        self,
        all: bool = False,
        filters: dict[str, list[str]] | None = None,
        no_trunc: bool = False,
        quiet: bool = False,
    ) -> str | list[dict]:
        """`net ps`'s output as the daemon renders it (`as=table`; `quiet`: -q's IDs),
        or the JSON entries from a daemon that renders none (Docker's)."""
        query = {"as": "table"}
        for key, wanted in (("all", all), ("no-trunc", no_trunc), ("quiet", quiet)):
            if wanted:
                query[key] = "1"
        if filters:
            query["filters"] = json.dumps(filters)
        answer: str | list[dict] | None = self.request("GET", "/containers/json", query=query)
        return "" if answer is None else answer  # (an empty body: -q of no container)

    def container_inspect(self, ref: str) -> dict:
        return self.request("GET", f"/containers/{quote(ref)}/json")

    def container_stop(self, ref: str, timeout: float | None = None) -> None:
        query = {"t": f"{timeout:g}"} if timeout is not None else None
        self.request("POST", f"/containers/{quote(ref)}/stop", query=query)

    def container_kill(self, ref: str, signal: str = "SIGKILL") -> None:
        self.request("POST", f"/containers/{quote(ref)}/kill", query={"signal": signal})

    def container_remove(self, ref: str, force: bool = False) -> None:
        self.request("DELETE", f"/containers/{quote(ref)}", query={"force": "1"} if force else None)

    def container_wait(self, ref: str) -> int:
        """Block until the container exits; its exit code."""
        return int(self.request("POST", f"/containers/{quote(ref)}/wait")["StatusCode"])

    def container_logs(
        self, ref: str, follow: bool = False, stdout: bool = True, stderr: bool = True
    ) -> Iterator[tuple[int, bytes]]:
        """(stream, bytes) pairs, stream 1 = stdout, 2 = stderr; with `follow`, until
        the container has exited and its output is drained. Close the iterator (or
        exhaust it) to release the connection."""
        query = {"stdout": "1" if stdout else "0", "stderr": "1" if stderr else "0"}
        if follow:
            query["follow"] = "1"
        resp = self.request("GET", f"/containers/{quote(ref)}/logs", stream=True, query=query)

        from cnm.api.rawstream import iter_frames  # (struct: only logs need it)

        def frames() -> Iterator[tuple[int, bytes]]:
            try:
                yield from iter_frames(resp.read)
            except ValueError as exc:
                raise from_http(502, f"the daemon sent a malformed log stream: {exc}") from exc
            except OSError as exc:
                raise Unavailable(f"lost the connection to the daemon while reading logs: {exc}") from exc
            finally:
                resp.close()

        return frames()

    def container_attach(self, ref: str, stdin: bool, detach_keys: str = "", logs: bool = False) -> tuple[Any, bytes]:
        query = {"stream": "1", "stdout": "1", "stderr": "1", "stdin": "1" if stdin else "0"}
        if logs:
            query["logs"] = "1"
        if detach_keys:
            query["detachKeys"] = detach_keys
        return self.hijack("POST", f"/containers/{quote(ref)}/attach", query=query)

    def container_resize(self, ref: str, rows: int, cols: int) -> None:
        self.request("POST", f"/containers/{quote(ref)}/resize", query={"h": str(rows), "w": str(cols)})

    def exec_create(self, ref: str, body: dict) -> str:
        return self.request("POST", f"/containers/{quote(ref)}/exec", body)["Id"]

    def exec_start(self, exec_id: str, tty: bool, detach: bool = False) -> tuple[Any, bytes] | None:
        """Start an exec: its hijacked stream, or None when detached."""
        body = {"Detach": detach, "Tty": tty}
        if detach:
            self.request("POST", f"/exec/{quote(exec_id)}/start", body)
            return None
        return self.hijack("POST", f"/exec/{quote(exec_id)}/start", body)

    def exec_resize(self, exec_id: str, rows: int, cols: int) -> None:
        self.request("POST", f"/exec/{quote(exec_id)}/resize", query={"h": str(rows), "w": str(cols)})

    def exec_inspect(self, exec_id: str) -> dict:
        return self.request("GET", f"/exec/{quote(exec_id)}/json")

    def network_connect(self, network: str, container: str, endpoint_config: dict | None = None) -> None:
        body = {"Container": container, "EndpointConfig": endpoint_config or {}}
        self.request("POST", f"/networks/{quote(network)}/connect", body)

    def network_disconnect(self, network: str, container: str, force: bool = False) -> None:
        body = {"Container": container, "Force": force}
        self.request("POST", f"/networks/{quote(network)}/disconnect", body)
