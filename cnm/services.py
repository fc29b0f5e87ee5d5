"""The daemon's core services wired together, from the leaves a caller provides.

`build_core` makes the event bus, service discovery, controller (and cluster member),
sandboxes, exit watcher and container service, each given its collaborators when it is
made. The daemon (cnm.daemon) passes real leaves — netlink, SQLite/etcd stores, the
runtime; unit tests pass fakes (tests/unit/fakehost.py) and get the very same wiring.
`core_routes` are the API routes served from these services alone.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cnm.container_images import ImageMounts
from cnm.containers import ContainerRuntime, ContainerService
from cnm.controller import Controller
from cnm.driverapi import DriverRegistry
from cnm.events import EventBus
from cnm.exits import ExitWatcher
from cnm.ipamapi import IpamRegistry
from cnm.model import Endpoint, Network
from cnm.naming import ServiceDiscovery
from cnm.ports import PortAllocator
from cnm.sandbox.sandbox import Sandboxes, SandboxKernel
from cnm.store import Store

if TYPE_CHECKING:
    from cnm.api.common import Route
    from cnm.cluster.sync import ClusterSync
    from cnm.store.etcd import EtcdStore


@dataclass(frozen=True)
class ClusterConfig:
    """This host in a cluster: the cluster store and the address others reach it at."""

    store: EtcdStore
    advertise: str


@dataclass
class Core:
    events: EventBus
    discovery: ServiceDiscovery
    controller: Controller
    sandboxes: Sandboxes
    exits: ExitWatcher
    containers: ContainerService
    cluster: ClusterSync | None     # with a cluster store


def docker_network_events(events: EventBus) -> tuple[Callable[[str, Network], None],
                                                      Callable[[str, Network, Endpoint], None]]:
    """Docker's network events from the controller's: create/destroy, connect/disconnect."""
    def network(event: str, net: Network) -> None:
        events.publish("network", "destroy" if event == "delete" else event, net.id,
                       {"name": net.name, "type": net.driver})

    def endpoint(event: str, net: Network, ep: Endpoint) -> None:
        if ep.container_id:
            events.publish("network", event, net.id, {"container": ep.container_id, "name": net.name,
                                                      "type": net.driver})
    return network, endpoint


def build_core(*, drivers: DriverRegistry, ipams: IpamRegistry, stores: Mapping[str, Store],
               runtime: ContainerRuntime, ports: PortAllocator, sandbox_os: SandboxKernel,
               host_resolv: Callable[[], str], host_hosts: Callable[[], str] | None = None,
               cluster: ClusterConfig | None = None, images: ImageMounts | None = None) -> Core:
    """The core services over `stores` ("local", and "global" with a cluster). Nothing
    is started: the caller restores networks, starts the cluster member, adopts
    containers and starts the exit watcher on its event loop."""
    events = EventBus()
    discovery = ServiceDiscovery()
    on_network, on_endpoint = docker_network_events(events)
    members: list[ClusterSync] = []

    def join_cluster(controller: Controller) -> ClusterSync:
        # The cluster member and the controller need each other: the controller hands
        # itself over while it is made (cnm.controller.GlobalNetworks).
        from cnm.cluster.sync import ClusterSync  # only with a cluster store
        assert cluster is not None
        members.append(ClusterSync(controller, cluster.store, cluster.advertise, discovery=discovery))
        return members[0]

    controller = Controller(drivers, ipams, stores,
                            cluster=join_cluster if cluster is not None else None,
                            network_listeners=[discovery.network_event, on_network],
                            endpoint_listeners=[on_endpoint])
    for net in controller.list_networks():
        discovery.network_event("create", net)
    member = members[0] if members else None
    sandboxes = Sandboxes(controller, sandbox_os, ports, stores["local"], host_resolv=host_resolv,
                          names=discovery, peers=member)
    exits = ExitWatcher(runtime.exit_fd)
    extra = {"host_hosts": host_hosts} if host_hosts is not None else {}
    containers = ContainerService(controller, sandboxes, runtime, stores["local"], exits=exits, events=events,
                                  host_resolv=host_resolv, images=images, **extra)
    return Core(events, discovery, controller, sandboxes, exits, containers, member)


def core_routes(core: Core) -> list[Route]:
    """Container and event routes (network routes come with cnm.api.server.make_app)."""
    from cnm.api import attach as attach_routes
    from cnm.api import containers as container_routes
    from cnm.api import events as event_routes
    from cnm.api import logs as log_routes
    return [*container_routes.routes(core.containers), *log_routes.routes(core.containers),
            *attach_routes.routes(core.containers), *event_routes.routes(core.events)]
