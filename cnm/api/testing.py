"""Test helpers for the API: an in-memory controller and a server run in a thread.

    with ServerThread(make_app(FakeController()), tmp_path / "cnm.sock") as srv:
        APIClient(srv.host).networks()

Not used by the daemon itself.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from cnm.addresses import IPAddress, IPNetwork, address, network
from cnm.api.server import Server, start_server
from cnm.errors import Conflict, Forbidden, InvalidParameter, NotFound
from cnm.ids import new_id
from cnm.model import Network, PoolConfig
from cnm.requests import NetworkCreate


@dataclass
class FakeController:
    """Imitates the controller's network behaviour with no IPAM, driver or kernel.

    `fail` maps a method name to an exception that method raises (to test error paths);
    `containers` maps a network id to its endpoint data."""

    networks: dict[str, Network] = field(default_factory=dict)
    containers: dict[str, dict[str, dict]] = field(default_factory=dict)
    fail: dict[str, BaseException] = field(default_factory=dict)
    _next_pool: int = 18
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for name, driver in (("bridge", "bridge"), ("host", "host"), ("none", "null")):
            net = Network(id=new_id(), name=name, driver=driver, created="2024-01-01T00:00:00Z", builtin=True)
            if name == "bridge":
                net.pools = [PoolConfig(subnet=network("172.17.0.0/16"), pool_id="p0", gateway=address("172.17.0.1"))]
            self.networks[net.id] = net

    def _maybe_fail(self, method: str) -> None:
        if method in self.fail:
            raise self.fail[method]

    def create_network(self, req: NetworkCreate) -> Network:
        self._maybe_fail("create_network")
        with self._lock:
            if any(n.name == req.name for n in self.networks.values()):
                raise Conflict(f"network with name {req.name} already exists")
            pools = [
                PoolConfig(
                    subnet=network(c.subnet),
                    pool_id=new_id()[:8],
                    ip_range=network(c.ip_range) if c.ip_range else None,
                    gateway=address(c.gateway) if c.gateway else _first_host(network(c.subnet)),
                    aux_addresses={k: address(v) for k, v in c.aux_addresses.items()},
                    v6=c.v6,
                )
                for c in req.ipam_configs
                if c.subnet
            ]
            if not any(not p.v6 for p in pools):
                subnet = network(f"172.{self._next_pool}.0.0/16")
                self._next_pool += 1
                pools.insert(0, PoolConfig(subnet=subnet, pool_id=new_id()[:8], gateway=_first_host(subnet)))
            net = Network(
                id=new_id(),
                name=req.name,
                driver=req.driver,
                created="2024-01-02T03:04:05.123456789Z",
                internal=req.internal,
                attachable=req.attachable,
                enable_ipv6=req.enable_ipv6,
                ipam_driver=req.ipam_driver,
                ipam_options=dict(req.ipam_options),
                pools=pools,
                options=dict(req.options),
                labels=dict(req.labels),
            )
            self.networks[net.id] = net
            return net

    def list_networks(self) -> list[Network]:
        self._maybe_fail("list_networks")
        with self._lock:
            return list(self.networks.values())

    def get_network(self, ref: str) -> Network:
        self._maybe_fail("get_network")
        with self._lock:
            for net in self.networks.values():
                if ref in (net.id, net.name):
                    return net
            found = [n for n in self.networks.values() if n.id.startswith(ref)] if ref else []
            if len(found) > 1:
                raise InvalidParameter(
                    f"network id prefix {ref} is ambiguous ({len(found)} matches): give more of the id"
                )
            if not found:
                raise NotFound(f"network {ref} not found")
            return found[0]

    def delete_network(self, ref: str) -> None:
        self._maybe_fail("delete_network")
        net = self.get_network(ref)
        with self._lock:
            if net.builtin:
                raise Forbidden(f"{net.name} is a pre-defined network and cannot be removed")
            if self.containers.get(net.id):
                raise Conflict(f"network {net.name} has active endpoints")
            del self.networks[net.id]

    def prune_networks(self, select=lambda net: True) -> list[str]:
        self._maybe_fail("prune_networks")
        with self._lock:
            gone = [n for n in self.networks.values() if not n.builtin and not self.containers.get(n.id) and select(n)]
            for net in gone:
                del self.networks[net.id]
            return [n.name for n in gone]

    def network_containers(self, network_id: str) -> dict[str, dict]:
        with self._lock:
            return dict(self.containers.get(network_id, {}))


def _first_host(subnet: IPNetwork) -> IPAddress:
    return address(str(next(iter(subnet.hosts()))))


class ServerThread:
    """Runs an aiohttp app on a unix socket in a background thread with its own loop."""

    def __init__(self, app: web.Application, socket_path: str | Path) -> None:
        self.app = app
        self.path = Path(socket_path)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cnm-api-test", daemon=True)
        self._server: Server | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The server's event loop (runs in the thread)."""
        return self._loop

    def start(self) -> ServerThread:
        self._thread.start()
        try:
            self._server = asyncio.run_coroutine_threadsafe(start_server(self.app, self.path), self._loop).result(10)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.close(), self._loop).result(10)
            self._server = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
