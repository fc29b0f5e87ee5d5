"""A synchronous client of the daemon's API, on the standard library only.

    client = APIClient("unix:///run/cnm/cnm.sock")
    net_id = client.network_create({"Name": "front", "Driver": "bridge"})

Non-2xx answers raise the error category the daemon answered with
(`cnm.errors.from_http`); an unreachable daemon raises `cnm.errors.Unavailable`.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from cnm.api.transport import StreamResponse, Transport, UnixSocketTransport
from cnm.errors import InvalidParameter, from_http

DEFAULT_HOST = "unix:///run/cnm/cnm.sock"


def socket_path(host: str) -> str:
    """The socket path of a `unix:///path` host (a bare absolute path is accepted too)."""
    if host.startswith("unix://"):
        path = host[len("unix://"):]
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

    def request(self, method: str, path: str, body: dict | None = None, stream: bool = False,
                query: dict[str, str] | None = None) -> Any:
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
        return self.request("GET", f"/networks/{quote(ref, safe='')}")

    def network_remove(self, ref: str) -> None:
        self.request("DELETE", f"/networks/{quote(ref, safe='')}")

    def networks_prune(self) -> list[str]:
        return self.request("POST", "/networks/prune")["NetworksDeleted"] or []
