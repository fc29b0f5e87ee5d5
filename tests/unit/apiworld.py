"""A daemon's worth of real logic over fakes, behind the real API app on a unix socket:
the real controller, default IPAM and null/host/bridge drivers over the fake OS layer
(FakeNetlink) and a recording firewall. Used by the fuzz and bad-input tests."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
import threading
from typing import Any

import drivers
import ipam
from cnm.api.server import make_app, start_server
from cnm.controller import Controller
from cnm.driverapi import DriverRegistry
from cnm.firewall import Firewall
from cnm.ipamapi import IpamRegistry
from cnm.osl.fake import FakeNetlink
from cnm.store.memory import MemoryStore
from drivers.bridge.nftables import NftablesBridgeFirewall


class World:
    """One daemon's worth of real logic over fakes."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.nl = FakeNetlink()
        self.nl.add_foreign_link("eth0", kind=None)
        self.nl.add_address("eth0", "192.0.2.10/24")
        self.applied: list[str] = []
        self.firewall = Firewall(apply=self.applied.append, sysctl=lambda k, v: None, delete=lambda: None)
        registry = DriverRegistry()
        drivers.register_builtin(
            registry, netlink_factory=lambda: self.nl, firewall=NftablesBridgeFirewall(self.firewall)
        )
        ipams = IpamRegistry()
        ipam.register(
            ipams,
            stores={"LocalDefault": self.store, "GlobalDefault": self.store},
            excluded=lambda: self.nl.route_cidrs(),
        )
        self.controller = Controller(registry, ipams, {"local": self.store})
        self.controller.ensure_builtin_networks()

    def snapshot(self) -> Any:
        links = sorted((lk.name, repr(lk), tuple(self.nl.addresses(lk.name))) for lk in self.nl.links())
        return (
            {kv.key: json.dumps(kv.value, sort_keys=True) for kv in self.store.list("")},
            links,
            sorted(map(repr, self.nl.routes())),
            dict(self.nl.sysctls),
            repr(self.firewall.state),
        )


class Forward:
    """Stands for the current world's object; the app is built once."""

    def __init__(self, pick: Any) -> None:
        self._pick = pick

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pick(), name)


class Api:
    """The real app on a unix socket, its loop on a thread; raw HTTP/1.1 requests."""

    def __init__(self) -> None:
        self.world = World()
        self.dir = tempfile.mkdtemp(prefix="cnm-fuzz-", dir="/tmp")
        self.path = os.path.join(self.dir, "api.sock")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        app = make_app(Forward(lambda: self.world.controller))
        self.server = asyncio.run_coroutine_threadsafe(start_server(app, self.path), self.loop).result(10)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, str]:
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(self.path)
            s.sendall(head.encode() + b"\r\n" + (body or b""))
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head_bytes, _, payload = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        ctype = next((ln.split(":", 1)[1].strip() for ln in lines[1:] if ln.lower().startswith("content-type:")), "")
        if "transfer-encoding: chunked" in head_bytes.decode("latin-1").lower():
            payload = _unchunk(payload)
        return int(lines[0].split()[1]), payload, ctype

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out
