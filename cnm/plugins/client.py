"""PluginClient: one plugin's HTTP endpoint (unix socket or TCP), standard library only.

Every call is `POST /<Interface>.<Method>` with a JSON body and a bounded timeout
(default 10 s; Docker has none for v1 plugins and users complain a dead plugin stalls
the daemon). Only activation retries, and only connection errors, for at most
`activate_retry` seconds. Errors keep a category and name the plugin:

    not listening, timed out, connection dropped     Unavailable
    status 400/403/404/409/503 with Err or Error      InvalidParameter/Forbidden/NotFound/Conflict/Unavailable
    any other error status, Err on a 200              InternalError
    body not JSON, a field of the wrong type          InternalError naming the field
"""

from __future__ import annotations

import builtins
import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cnm.errors import CNMError, Conflict, Forbidden, InternalError, InvalidParameter, NotFound, Unavailable
from cnm.plugins import CONTENT_TYPE
from cnm.plugins.discovery import PluginSpec

DEFAULT_TIMEOUT = 10.0
DEFAULT_ACTIVATE_RETRY = 2.0
_BY_STATUS: dict[int, type[CNMError]] = {
    400: InvalidParameter,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    503: Unavailable,
}
_CONNECT_ERRORS = (ConnectionRefusedError, FileNotFoundError)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


# (path, body, timeout) -> Response; raises OSError / http.client.HTTPException.
Transport = Callable[[str, bytes, float], Response]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class HTTPTransport:
    """One connection per call (plugins are often simple servers that close it)."""

    def __init__(self, spec: PluginSpec) -> None:
        self.spec = spec

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        addr = self.spec.address
        if addr.startswith("unix://"):
            return _UnixConnection(addr[len("unix://") :], timeout)
        scheme, _, hostport = addr.partition("://")
        hostport = hostport.rstrip("/")
        tls = self.spec.tls
        if scheme == "https" or (tls is not None and (tls.ca_file or tls.cert_file)):
            ctx = ssl.create_default_context(cafile=tls.ca_file or None) if tls else ssl.create_default_context()
            if tls and tls.cert_file:
                ctx.load_cert_chain(tls.cert_file, tls.key_file or None)
            if tls and tls.insecure_skip_verify:
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            return http.client.HTTPSConnection(hostport, timeout=timeout, context=ctx)
        return http.client.HTTPConnection(hostport, timeout=timeout)

    def __call__(self, path: str, body: bytes, timeout: float) -> Response:
        conn = self._connection(timeout)
        try:
            conn.request("POST", path, body=body, headers={"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE})
            resp = conn.getresponse()
            return Response(resp.status, resp.read())
        finally:
            conn.close()


def _fail(plugin: str, message: str) -> InternalError:
    return InternalError(f"network plugin {plugin}: {message}")


class PluginClient:
    """Talks to one plugin. Thread-safe; activation is lazy and cached."""

    def __init__(
        self,
        spec: PluginSpec,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        activate_retry: float = DEFAULT_ACTIVATE_RETRY,
        transport: Transport | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.timeout = timeout
        self.activate_retry = activate_retry
        self._transport: Transport = transport or HTTPTransport(spec)
        self._implements: tuple[str, ...] | None = None
        self._lock = threading.Lock()

    # -- raw ------------------------------------------------------------------------

    def raw(self, method: str, body: Any = None, *, timeout: float | None = None) -> Response:
        """POST /method; the plugin's answer whatever its status. Raises Unavailable."""
        data = b"" if body is None else json.dumps(body).encode()
        limit = self.timeout if timeout is None else timeout
        try:
            return self._transport(f"/{method}", data, limit)
        except TimeoutError as exc:
            raise Unavailable(f"network plugin {self.name}: {method} timed out after {limit:g}s") from exc
        except FileNotFoundError as exc:
            raise Unavailable(
                f"network plugin {self.name}: socket {self.spec.address} does not exist (is the plugin running?)"
            ) from exc
        except ConnectionRefusedError as exc:
            raise Unavailable(
                f"network plugin {self.name}: nothing listens on {self.spec.address} (is the plugin running?)"
            ) from exc
        except (http.client.HTTPException, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise Unavailable(f"network plugin {self.name}: connection lost during {method}: {reason}") from exc

    def call(
        self,
        method: str,
        body: Any = None,
        *,
        err_field: str = "Err",
        missing_ok: bool = False,
        timeout: float | None = None,
    ) -> dict:
        """POST /method and return the JSON object answered. `missing_ok`: a 404 is
        "not implemented" and answers {} (ProgramExternalConnectivity and friends)."""
        resp = self.raw(method, body, timeout=timeout)
        if resp.status == 404 and missing_ok:
            return {}
        doc = self._decode(method, resp, err_field)
        if resp.status != 200:
            cls = _BY_STATUS.get(resp.status, InternalError)
            raise cls(f"network plugin {self.name}: {self._message(resp, doc, method)}")
        if not isinstance(doc, dict):
            raise _fail(self.name, f"{method} answered {type(doc).__name__} JSON, expected an object")
        err = doc.get(err_field) or doc.get("Err") or doc.get("Error")
        if err:
            raise _fail(self.name, str(err))
        return doc

    def _decode(self, method: str, resp: Response, err_field: str) -> Any:
        if not resp.body.strip():
            return {}
        try:
            return json.loads(resp.body)
        except ValueError:
            if resp.status != 200:
                return None  # the error message is the raw body
            raise _fail(self.name, f"{method} answered a body that is not JSON: {resp.body[:80]!r}") from None

    @staticmethod
    def _message(resp: Response, doc: Any, method: str) -> str:
        if isinstance(doc, dict):
            for key in ("Err", "Error"):
                if isinstance(doc.get(key), str) and doc[key]:
                    return doc[key]
        text = resp.body.decode("utf-8", "replace").strip()
        return text or f"{method} failed with HTTP {resp.status}"

    # -- activation -----------------------------------------------------------------------

    def activate(self) -> tuple[str, ...]:
        """POST /Plugin.Activate once (cached): what the plugin implements. Retries a
        refused or missing socket briefly (a plugin starting up), nothing else."""
        with self._lock:
            if self._implements is not None:
                return self._implements
            deadline = time.monotonic() + self.activate_retry
            delay = 0.05
            while True:
                try:
                    doc = self.call("Plugin.Activate")
                    break
                except Unavailable as exc:
                    if not isinstance(exc.__cause__, _CONNECT_ERRORS) or time.monotonic() + delay > deadline:
                        raise
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
            impl = doc.get("Implements")
            if not isinstance(impl, list) or not all(isinstance(i, str) for i in impl):
                raise _fail(self.name, "Plugin.Activate field Implements must be a list of strings")
            self._implements = tuple(impl)
            return self._implements

    def require(self, kind: str) -> None:
        if kind not in self.activate():
            raise InvalidParameter(
                f"plugin {self.name} does not implement {kind} "
                f"(it implements {', '.join(self._implements or ()) or 'nothing'})"
            )


class Fields:
    """Typed reads of a plugin's answer: a wrong type is an InternalError naming the field.
    (The methods are named after the types they read, so annotations say builtins.str.)"""

    def __init__(self, plugin: str, method: str, doc: Mapping[str, Any], prefix: str = "") -> None:
        self.plugin, self.method, self.doc, self.prefix = plugin, method, doc, prefix

    def _get(self, key: str, kinds: tuple[type, ...], what: str, required: bool) -> Any:
        value = self.doc.get(key)
        if value is None or (required and value == ""):
            if required:
                raise _fail(self.plugin, f"{self.method} answer lacks field {self.prefix}{key}")
            return None
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            raise _fail(
                self.plugin,
                f"{self.method} answer field {self.prefix}{key} must be {what}, "
                f"got {type(value).__name__} {value!r:.60}",
            )
        return value

    def str(self, key: builtins.str, required: builtins.bool = False) -> builtins.str:
        return self._get(key, (str,), "a string", required) or ""

    def bool(self, key: builtins.str) -> builtins.bool:
        return bool(self._get(key, (bool,), "a boolean", False))

    def int(self, key: builtins.str, required: builtins.bool = False) -> builtins.int:
        value = self._get(key, (int,), "an integer", required)
        return 0 if value is None else value

    def obj(self, key: builtins.str, required: builtins.bool = False) -> Fields | None:
        value = self._get(key, (dict,), "an object", required)
        return None if value is None else Fields(self.plugin, self.method, value, f"{self.prefix}{key}.")

    def list(self, key: builtins.str) -> builtins.list:
        return self._get(key, (list,), "a list", False) or []

    def str_map(self, key: builtins.str) -> dict[builtins.str, builtins.str]:
        value = self._get(key, (dict,), "an object", False) or {}
        for k, v in value.items():
            if not isinstance(v, str):
                raise _fail(
                    self.plugin,
                    f"{self.method} answer field {self.prefix}{key}.{k} must be a string, got {type(v).__name__}",
                )
        return dict(value)

    def cidr(self, key: builtins.str, required: builtins.bool = False) -> builtins.str:
        value = self.str(key, required)
        if value:
            try:
                ipaddress.ip_interface(value)
                if "/" not in value:
                    raise ValueError
            except ValueError:
                raise _fail(
                    self.plugin,
                    f"{self.method} answer field {self.prefix}{key} must be an "
                    f"address with prefix length (CIDR), got {value!r}",
                ) from None
        return value

    def ip(self, key: builtins.str, required: builtins.bool = False) -> builtins.str:
        value = self.str(key, required)
        if value:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise _fail(
                    self.plugin, f"{self.method} answer field {self.prefix}{key} must be an IP address, got {value!r}"
                ) from None
        return value
