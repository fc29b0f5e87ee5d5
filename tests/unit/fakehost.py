"""A whole host over fakes at the OS seam, for unit tests without root: the real
controller, default IPAM, bridge driver, port allocator, service discovery and
sandboxes, over an in-memory machine of network namespaces (cnm.osl.fake) and an
in-memory store. Tests assert the state that results: links in namespaces, routes,
published ports, records."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import ipam
from cnm.controller import Controller
from cnm.driverapi import DriverRegistry, JoinResult
from cnm.ipamapi import IpamRegistry
from cnm.naming import ServiceDiscovery
from cnm.osl.fake import FakeNamespaces, FakeNetlink
from cnm.ports import PortAllocator
from cnm.sandbox.osl import SandboxOS
from cnm.sandbox.sandbox import Sandboxes
from cnm.store.memory import MemoryStore
from drivers import register_builtin
from drivers.bridge.driver import BridgeDriver
from drivers.bridge.hooks import NoFirewall, PublishedEndpoint

HOST_RESOLV = "nameserver 192.0.2.53\nsearch example.test\n"
NETNS_DIR = "/run/cnm-test/netns"


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

    def join(self, network_id: str, endpoint_id: str, sandbox_key: str,
             options: Mapping[str, str]) -> JoinResult:
        return replace(super().join(network_id, endpoint_id, sandbox_key, options), gateway=None, gateway_v6=None)


@dataclass
class FakeHost:
    world: FakeNamespaces = field(default_factory=FakeNamespaces)
    store: MemoryStore = field(default_factory=MemoryStore)
    firewall: RecordingFirewall = field(default_factory=RecordingFirewall)
    free_port: bool = True          # what the host-port probe answers

    def __post_init__(self) -> None:
        self.drivers = DriverRegistry()
        register_builtin(self.drivers, netlink_factory=lambda: self.world.host, firewall=self.firewall)
        self.drivers.register(NoGatewayDriver(lambda: self.world.host, firewall=self.firewall))
        self.ipams = IpamRegistry()
        ipam.register(self.ipams, stores={"LocalDefault": self.store, "GlobalDefault": self.store})
        self.discovery = ServiceDiscovery()
        self.controller = Controller(self.drivers, self.ipams, {"local": self.store},
                                     network_listeners=[self.discovery.network_event])
        self.controller.ensure_builtin_networks()
        self.ports = PortAllocator(lambda: (32768, 32800), in_use=lambda proto, ip, port: not self.free_port)
        self.os = SandboxOS(self.world.host, NETNS_DIR, netlink_for=self.world.handle, namespaces=self.world)
        self.sandboxes = self.make_sandboxes()

    def make_sandboxes(self) -> Sandboxes:
        """A new Sandboxes over the same state (as after a daemon restart)."""
        return Sandboxes(self.controller, self.os, self.ports, self.store, host_resolv=lambda: HOST_RESOLV,
                         names=self.discovery)

    def ns(self, key: str) -> FakeNetlink:
        return self.world.handle(key)

    def default_routes(self, key: str) -> dict[str, tuple[str | None, str | None]]:
        """destination -> (device, gateway) of the sandbox's default routes."""
        return {r.destination: (r.dev, r.gateway) for r in self.ns(key).routes()
                if r.destination in ("0.0.0.0/0", "::/0")}

    def host_links(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self.world.host.link_names() if n.startswith(prefix))
