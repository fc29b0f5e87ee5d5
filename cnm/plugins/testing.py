"""A scriptable plugin server for tests (standard library only, independent of the SDK).

It records every request (path and decoded body, in order) and answers like a
well-behaved NetworkDriver + IpamDriver unless a test scripts a fault for a method:

    fake = FakePlugin(tmp_path / "p.sock").start()
    fake.script("NetworkDriver.Join", status=500, body={"Err": "boom"})
    fake.script("NetworkDriver.CreateNetwork", delay=2.0)      # slower than the timeout
    fake.script("NetworkDriver.DeleteNetwork", drop=True)      # close without answering
    fake.script("IpamDriver.RequestPool", raw=b"<html>")       # not JSON
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cnm.plugins.server import QuietHandler, UnixHTTPServer


@dataclass
class Script:
    status: int = 200
    body: Any = None  # dict -> JSON; None -> the default answer
    raw: bytes | None = None  # sent as is
    delay: float = 0.0
    drop: bool = False
    once: bool = False


class FakePlugin:
    def __init__(self, path: str, implements: tuple[str, ...] = ("NetworkDriver", "IpamDriver")) -> None:
        self.path = str(path)
        self.implements = list(implements)
        self.requests: list[tuple[str, Any]] = []
        self.scripts: dict[str, Script] = {}
        self._lock = threading.Lock()
        self._next_addr = 2
        self._server: UnixHTTPServer | None = None

    # -- test API ---------------------------------------------------------------------

    def script(self, method: str, **kw: Any) -> None:
        self.scripts[method] = Script(**kw)

    def calls(self, prefix: str = "") -> list[str]:
        return [p for p, _ in self.requests if p.startswith(prefix)]

    def body(self, method: str, index: int = -1) -> Any:
        return [b for p, b in self.requests if p == method][index]

    def start(self) -> FakePlugin:
        fake = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                fake._serve(self)

        self._server = UnixHTTPServer(self.path, Handler).start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> FakePlugin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- serving --------------------------------------------------------------------------

    def _serve(self, h: QuietHandler) -> None:
        method = h.path.lstrip("/")
        raw = h.read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        with self._lock:
            self.requests.append((method, body))
            script = self.scripts.get(method, Script())
            if script.once:
                self.scripts.pop(method, None)
        if script.delay:
            time.sleep(script.delay)
        if script.drop:
            h.close_connection = True
            return  # no answer: the client sees the connection drop
        if script.raw is not None:
            data = script.raw
        else:
            doc = script.body if script.body is not None else self._default(method, body or {})
            data = json.dumps(doc).encode()
        try:
            h.send_json_bytes(script.status, data)
        except OSError:
            pass  # the client gave up (timeout tests)

    def _default(self, method: str, body: dict) -> dict:
        answers: dict[str, Callable[[], dict]] = {
            "Plugin.Activate": lambda: {"Implements": self.implements},
            "NetworkDriver.GetCapabilities": lambda: {"Scope": "local", "ConnectivityScope": "local"},
            "NetworkDriver.EndpointOperInfo": lambda: {"Value": {"fake": True}},
            "NetworkDriver.Join": lambda: {
                "InterfaceName": {"SrcName": "fake0", "DstPrefix": "eth"},
                "Gateway": "10.99.0.1",
                "GatewayIPv6": "",
                "DisableGatewayService": False,
                "StaticRoutes": [
                    {"Destination": "169.254.1.1/32", "RouteType": 1, "NextHop": ""},
                    {"Destination": "10.200.0.0/16", "RouteType": 0, "NextHop": "10.99.0.254"},
                ],
            },
            "IpamDriver.GetCapabilities": lambda: {"RequiresMACAddress": False, "RequiresRequestReplay": False},
            "IpamDriver.GetDefaultAddressSpaces": lambda: {
                "LocalDefaultAddressSpace": "FakeLocal",
                "GlobalDefaultAddressSpace": "FakeGlobal",
            },
            "IpamDriver.RequestPool": lambda: {
                "PoolID": "fake/" + (body.get("Pool") or "10.99.0.0/24"),
                "Pool": body.get("Pool") or "10.99.0.0/24",
                "Data": {},
            },
            "IpamDriver.RequestAddress": lambda: {"Address": self._address(body), "Data": {}},
        }
        answer = answers.get(method)
        return answer() if answer else {}

    def _address(self, body: dict) -> str:
        if body.get("Address"):
            return f"{body['Address']}/24"
        if (body.get("Options") or {}).get("RequestAddressType") == "com.docker.network.gateway":
            return "10.99.0.1/24"
        with self._lock:
            n, self._next_addr = self._next_addr, self._next_addr + 1
        return f"10.99.0.{n}/24"
