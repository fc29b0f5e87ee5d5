"""The daemon's core services wired together, from the leaves a caller provides.

`build_core` makes the event bus, service discovery, controller (and cluster member),
sandboxes, exit watcher and container service, each given its collaborators when it is
made. The daemon (cnm.daemon) passes real leaves — netlink, SQLite/etcd stores, the
runtime; unit tests pass fakes (tests/unit/fakehost.py) and get the very same wiring.
`core_routes` are the API routes served from these services alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cnm.container_images import ImageMounts
from cnm.containers import ContainerRuntime, ContainerService
from cnm.controller import Controller
from cnm.driverapi import DriverRegistry
from cnm.errors import CNMError
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
    from cnm.reconcile.sweep import Services
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
    cluster: ClusterSync | None  # with a cluster store


def docker_network_events(
    events: EventBus,
) -> tuple[Callable[[str, Network], None], Callable[[str, Network, Endpoint], None]]:
    """Docker's network events from the controller's: create/destroy, connect/disconnect."""

    def network(event: str, net: Network) -> None:
        events.publish(
            "network", "destroy" if event == "delete" else event, net.id, {"name": net.name, "type": net.driver}
        )

    def endpoint(event: str, net: Network, ep: Endpoint) -> None:
        if ep.container_id:
            events.publish(
                "network", event, net.id, {"container": ep.container_id, "name": net.name, "type": net.driver}
            )

    return network, endpoint


def build_core(
    *,
    drivers: DriverRegistry,
    ipams: IpamRegistry,
    stores: Mapping[str, Store],
    runtime: ContainerRuntime,
    ports: PortAllocator,
    sandbox_os: SandboxKernel,
    host_resolv: Callable[[], str],
    host_hosts: Callable[[], str] | None = None,
    cluster: ClusterConfig | None = None,
    images: ImageMounts | None = None,
) -> Core:
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

    controller = Controller(
        drivers,
        ipams,
        stores,
        cluster=join_cluster if cluster is not None else None,
        network_listeners=[discovery.network_event, on_network],
        endpoint_listeners=[on_endpoint],
    )
    for net in controller.list_networks():
        discovery.network_event("create", net)
    member = members[0] if members else None
    sandboxes = Sandboxes(
        controller, sandbox_os, ports, stores["local"], host_resolv=host_resolv, names=discovery, peers=member
    )
    exits = ExitWatcher(runtime.exit_fd)
    extra = {"host_hosts": host_hosts} if host_hosts is not None else {}
    containers = ContainerService(
        controller,
        sandboxes,
        runtime,
        stores["local"],
        exits=exits,
        events=events,
        host_resolv=host_resolv,
        images=images,
        **extra,
    )
    # A network's name shows in its containers' listings: one that comes or goes
    # (another host's, too) changes them; so does an endpoint joining or leaving (the
    # service's own changes record it too; this also catches the controller's).
    controller.network_listeners.append(lambda event, net: containers.index.changed())
    controller.endpoint_listeners.append(
        lambda event, net, ep: containers.index.changed(ep.container_id) if ep.container_id else None
    )
    return Core(events, discovery, controller, sandboxes, exits, containers, member)


def start_up(core: Core, *, sweep: Callable[[], object] | None = None) -> None:
    """What a (re)started daemon does before it serves, in this order: finish the
    operations a crash interrupted (their intents), restore the networks (kernel
    objects, firewall), join the cluster (global networks and peers before the
    containers on them), adopt the containers (running ones keep their sandboxes,
    endpoints repaired or released; the rest are released), give back addresses
    nothing holds, then `sweep` what has no owner (cnm.reconcile). Restarts by
    restart policy wait until all that is done (they would race it)."""
    restarts = core.containers.restarts
    restarts.hold()
    try:
        core.controller.finish_intents()
        core.controller.ensure_builtin_networks()
        if core.cluster is not None:
            core.cluster.start()
        core.containers.adopt()
        core.controller.reconcile_ipam()
        if sweep is not None:
            sweep()
    finally:
        restarts.release()


def reconcile_services(
    core: Core,
    *,
    drivers: DriverRegistry,
    ipams: IpamRegistry,
    ports: PortAllocator,
    runtime: ContainerRuntime,
    supervisors: Callable[[], Iterable[int]] = lambda: (),
    after: Sequence[Callable[[set[str]], None]] = (),
) -> Services:
    """What the start-up sweep (cnm.reconcile.sweep) asks of these services.
    `supervisors`: pids of running containers' supervisors (their mount namespaces
    may be an earlier life's)."""
    from cnm.reconcile.sweep import Services

    ctl = core.controller

    def overlay_netns(network_id: str) -> str | None:
        net = ctl.network(network_id)
        path_of = getattr(drivers.get(net.driver), "netns_path", None) if net is not None else None
        try:
            return path_of(network_id) if path_of is not None else None
        except CNMError:
            return None

    def held_pools() -> list[str]:
        return [p.get("pool_id", "") for it in ctl.intents.pending() for p in it.data.get("pools") or ()]

    steps = list(after)
    overlay = drivers.get("overlay") if "overlay" in drivers.names() else None
    # Looked up on the class: a stand-in (drivers.unconfigured, no cluster store) answers
    # every attribute with a refusal, which would fail every start-up's sweep.
    overlay_filter = (
        getattr(overlay, "reconcile", None) if getattr(type(overlay), "reconcile", None) is not None else None
    )
    if overlay_filter is not None:
        steps.append(lambda _containers: overlay_filter())
    default_ipam = ipams.get("default")
    return Services(
        networks=ctl.list_networks,
        endpoints=ctl.all_endpoints,
        sandboxes=core.sandboxes.all,
        containers=lambda: [ct.id for ct in core.containers.list_containers()],
        overlay_netns=overlay_netns,
        remove_container=lambda cid: runtime.remove(cid, force=True),
        supervisors=supervisors,
        pools=getattr(default_ipam, "local_pools", lambda: []),
        release_pool=default_ipam.release_pool,
        held_pools=held_pools,
        port_owners=lambda: {owner for *_, owner in ports.allocations()},
        release_ports=ports.release_owner,
        after=steps,
    )


def core_routes(core: Core) -> list[Route]:
    """Container and event routes (network routes come with cnm.api.server.make_app)."""
    from cnm.api import attach as attach_routes
    from cnm.api import containers as container_routes
    from cnm.api import events as event_routes
    from cnm.api import logs as log_routes

    return [
        *container_routes.routes(core.containers),
        *log_routes.routes(core.containers),
        *attach_routes.routes(core.containers),
        *event_routes.routes(core.events),
    ]
