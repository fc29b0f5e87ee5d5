"""A whole host over fakes, for unit tests without root: the daemon's own core services
(cnm.services.build_core: controller, default IPAM, bridge driver, port allocator, service
discovery, sandboxes, container service, event bus) over an in-memory machine of
network namespaces (cnm.osl.fake), an in-memory store and a runtime of plain child
processes (cnm.runtime.fake). `FakeHost.app()` is the API over it.

    host = FakeHost()
    with ServerThread(host.app(), sock) as srv:
        host.start_watching(srv.loop)
        ...
    host.close()

Tests assert the state that results: links and routes in namespaces, published ports,
records, processes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import web

import ipam
from cnm.api.server import make_app
from cnm.driverapi import DriverRegistry, JoinResult
from cnm.ipamapi import IpamRegistry
from cnm.osl.fake import FakeNamespaces, FakeNetlink
from cnm.ports import PortAllocator
from cnm.reconcile.sweep import Reconciler, Report
from cnm.runtime.fake import FakeRuntime
from cnm.runtime.spec import ID_PATTERN
from cnm.sandbox.osl import SandboxOS
from cnm.sandbox.sandbox import Sandboxes
from cnm.services import Core, build_core, core_routes, reconcile_services, start_up
from cnm.store.memory import MemoryStore
from drivers import register_builtin
from drivers.bridge.driver import BridgeDriver
from drivers.bridge.graveyard import Graveyard
from drivers.bridge.hooks import NoFirewall, PublishedEndpoint

HOST_RESOLV = "nameserver 192.0.2.53\nsearch example.test\n"
HOST_HOSTS = "127.0.0.1\tlocalhost\n192.0.2.10\tthe-host\n"
NETNS_DIR = "/run/cnm-test/netns"
PORT_RANGE = (32768, 32800)


class RecordingFirewall(NoFirewall):
    """The bridge driver's firewall seam, remembering which endpoint publishes what."""

    def __init__(self) -> None:
        self.published: dict[str, tuple[Mapping[str, object], ...]] = {}

    def ports_published(self, endpoint: PublishedEndpoint) -> None:
        self.published[endpoint.endpoint_id] = endpoint.port_bindings

    def ports_revoked(self, network_id: str, endpoint_id: str) -> None:
        self.published.pop(endpoint_id, None)


class NoGatewayDriver(BridgeDriver):
    """A bridge whose join names no gateway, as overlay and some plugins answer: the
    container's way out must come from the gateway bridge."""

    name = "nogw"

    def join(self, network_id: str, endpoint_id: str, sandbox_key: str, options: Mapping[str, str]) -> JoinResult:
        return replace(super().join(network_id, endpoint_id, sandbox_key, options), gateway=None, gateway_v6=None)


@dataclass
class FakeHost:
    root: Path | None = None  # for the runtime's logs; a temporary directory if None
    world: FakeNamespaces = field(default_factory=FakeNamespaces)
    store: MemoryStore = field(default_factory=MemoryStore)
    firewall: RecordingFirewall = field(default_factory=RecordingFirewall)
    free_port: bool = True  # what the host-port probe answers
    runtime: FakeRuntime | None = None  # its own, unless a restarted host keeps the old one's
    images: Any = None  # an ImageStore (cnm.images.store) for containers from images

    def __post_init__(self) -> None:
        self._own_root = self.root is None
        self.root = Path(tempfile.mkdtemp(prefix="cnm-fakehost-")) if self.root is None else self.root
        self.drivers = DriverRegistry()
        register_builtin(self.drivers, netlink_factory=lambda: self.world.host, firewall=self.firewall)
        self.drivers.register(NoGatewayDriver(lambda: self.world.host, firewall=self.firewall))
        for name in ("bridge", "nogw"):
            # Veths retired by a disconnect or removal are deleted when a test says so
            # (settle): deterministic, and the state in between can be looked at.
            self.graveyard(name).background = False
        self.ipams = IpamRegistry()
        ipam.register(self.ipams, stores={"LocalDefault": self.store, "GlobalDefault": self.store})
        self.ports = PortAllocator(lambda: PORT_RANGE, in_use=lambda proto, ip, port: not self.free_port)
        self.os = SandboxOS(self.world.host, NETNS_DIR, netlink_for=self.world.handle, namespaces=self.world)
        if self.runtime is None:
            self.runtime = FakeRuntime(self.root / "rt")
        self.core: Core = build_core(
            drivers=self.drivers,
            ipams=self.ipams,
            stores={"local": self.store},
            runtime=self.runtime,
            ports=self.ports,
            sandbox_os=self.os,
            host_resolv=lambda: HOST_RESOLV,
            host_hosts=lambda: HOST_HOSTS,
            images=self.images,
        )
        self.controller = self.core.controller
        self.discovery = self.core.discovery
        self.sandboxes = self.core.sandboxes
        self.containers = self.core.containers
        self.events = self.core.events
        # As the daemon starts: ids remembered before anything changes, then start-up
        # in its order (a fresh host only gets its built-in networks).
        self.reconciler = Reconciler(
            self.store,
            run_dir=os.path.dirname(NETNS_DIR),
            containers_dir=str(self.runtime.root),
            host=self.world.host,
            netlink_for=self.world.handle,
            is_netns=self.world.exists,
            delete_netns=self.world.delete,
            unmount_in=lambda pid, path: None,
            is_container_id=lambda name: bool(ID_PATTERN.match(name)),
            extra_known=[n.id for n in self.controller.list_networks()],
            ns_entries=self.world.entries,
        )
        self.last_sweep: Report | None = None
        start_up(self.core, sweep=self.sweep)

    def sweep(self) -> Report:
        """The start-up sweep over this host (cnm.reconcile)."""
        self.last_sweep = self.reconciler.sweep(
            reconcile_services(
                self.core, drivers=self.drivers, ipams=self.ipams, ports=self.ports, runtime=self.runtime
            )
        )
        return self.last_sweep

    def graveyard(self, driver: str = "bridge") -> Graveyard:
        found = self.drivers.get(driver)
        assert isinstance(found, BridgeDriver)
        return found.graveyard

    def settle(self) -> None:
        """Let the kernel's deferred teardown finish: retired veths deleted, what they
        held given back (as the daemon's graveyard threads do on their own)."""
        for name in ("bridge", "nogw"):
            self.graveyard(name).flush()

    def app(self) -> web.Application:
        """The daemon's API (networks, containers, events) over this host."""
        return make_app(self.controller, extra_routes=core_routes(self.core))

    def start_watching(self, loop: asyncio.AbstractEventLoop) -> None:
        """Container exits noticed on `loop` (the API server's), as the daemon does."""
        loop.call_soon_threadsafe(self.core.exits.start, loop)

    def restarted(self) -> FakeHost:
        """The same machine after a daemon restart: kernel state, store and processes
        stay; drivers, allocators and services are new, and start up as the daemon
        does (cnm.services.start_up): intents finished, networks restored, containers
        adopted, what has no owner swept."""
        # A new firewall: the daemon's is rebuilt from what start-up restores (its first
        # change renders the whole table again), so nothing stale survives a restart.
        again = FakeHost(root=self.root, world=self.world, store=self.store, runtime=self.runtime, images=self.images)
        again._own_root = False
        return again

    def make_sandboxes(self) -> Sandboxes:
        """A new Sandboxes over the same state (as after a daemon restart)."""
        return Sandboxes(
            self.controller, self.os, self.ports, self.store, host_resolv=lambda: HOST_RESOLV, names=self.discovery
        )

    def close(self) -> None:
        self.containers.restarts.close()
        if self.runtime is not None:
            self.runtime.kill_all()
        if self._own_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def ns(self, key: str) -> FakeNetlink:
        return self.world.handle(key)

    def default_routes(self, key: str) -> dict[str, tuple[str | None, str | None]]:
        """destination -> (device, gateway) of the sandbox's default routes."""
        return {
            r.destination: (r.dev, r.gateway) for r in self.ns(key).routes() if r.destination in ("0.0.0.0/0", "::/0")
        }

    def host_links(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self.world.host.link_names() if n.startswith(prefix))
