"""A cluster host without a kernel: the real ClusterSync and etcd store, a controller that
only knows networks, and an overlay driver's daemon-side state (the real PeerTable and
node set) with every netlink call left out. What bench/cluster_sim.py runs a thousand
of, and tests/integration/test_cluster_scoped.py a few.

A host can be told when it sees an endpoint (`on_seen(endpoint_id, added)`), which is
how the simulation measures convergence, and can say how much memory its cluster state
holds (`state_bytes`).
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cnm.cluster.sync import NETWORKS, ClusterSync
from cnm.errors import NotFound
from cnm.store import Put
from cnm.store.etcd import EtcdStore, WatchHub
from drivers.overlay.peers import PeerTable, parse_node, parse_peer, parse_peer_key


@dataclass
class SimNetwork:
    id: str
    name: str
    driver: str = "overlay"
    scope: str = "global"
    builtin: bool = False
    options: dict = field(default_factory=dict)


@dataclass
class SimEndpoint:
    id: str
    name: str
    address: str
    mac: str
    address_v6: str | None = None
    aliases: tuple[str, ...] = ()
    container_id: str = ""


class SimOverlay:
    """The overlay driver's bookkeeping of peers and nodes, no kernel: each peer is
    parsed and tabled as the driver does, and its FDB and neighbour entries looked up
    (the work before the netlink calls)."""

    name = "overlay"

    def __init__(self, advertise: str, on_seen: Callable[[str, bool], None] | None = None) -> None:
        self.advertise = advertise
        self.table = PeerTable()
        self.nodes: set[str] = set()
        self.on_seen = on_seen

    def discover_new(self, kind: str, data: Mapping[str, object]) -> None:
        if kind == "peer":
            peer = parse_peer(data)
            self.table.add(peer)
            self.table.fdb_for(peer.network_id, peer.mac)
            self.table.neighbour_for(peer.network_id, peer.ip)
            if self.on_seen is not None:
                self.on_seen(peer.endpoint_id, True)
        elif kind == "node":
            self.nodes.add(parse_node(data))

    def discover_delete(self, kind: str, data: Mapping[str, object]) -> None:
        if kind == "peer":
            network_id, endpoint_id = parse_peer_key(data)
            if self.table.remove(network_id, endpoint_id) is not None and self.on_seen is not None:
                self.on_seen(endpoint_id, False)
        elif kind == "node":
            self.nodes.discard(parse_node(data))


class _Drivers:
    def __init__(self, driver: SimOverlay) -> None:
        self.driver = driver

    def get(self, name: str) -> SimOverlay:
        if name != "overlay":
            raise NotFound(f"network driver {name!r} not found")
        return self.driver


class SimController:
    """What ClusterSync asks of a controller: the global networks this host knows."""

    def __init__(self, driver: SimOverlay) -> None:
        self.drivers = _Drivers(driver)
        self.networks: dict[str, SimNetwork] = {}

    def list_networks(self) -> list[SimNetwork]:
        return list(self.networks.values())

    def get_network(self, ref: str) -> SimNetwork:
        try:
            return self.networks[ref]
        except KeyError:
            raise NotFound(f"network {ref} not found") from None

    def adopt_remote_network(self, rec: Mapping[str, Any]) -> SimNetwork | None:
        if rec["id"] in self.networks:
            return None
        net = self.networks[rec["id"]] = SimNetwork(sys.intern(rec["id"]), rec["name"])
        return net

    def forget_remote_network(self, network_id: str) -> None:
        self.networks.pop(network_id, None)


def network_id(name: str) -> str:
    return hashlib.sha256(f"sim-net/{name}".encode()).hexdigest()


def create_network(store: EtcdStore, name: str, vni: int) -> str:
    """Write a global network's records as the controller does (network/, netname/, vni/)."""
    nid = network_id(name)
    rec = {
        "id": nid,
        "name": name,
        "driver": "overlay",
        "scope": "global",
        "options": {"com.docker.network.driver.overlay.vxlanid_list": str(vni)},
    }
    store.atomic(
        [Put(f"{NETWORKS}{nid}", rec), Put(f"netname/{name}", {"id": nid}), Put(f"vni/{vni}", {"network": nid})]
    )
    return nid


class SimHost:
    def __init__(
        self,
        name: str,
        vtep: str,
        endpoints: list[str],
        *,
        prefix: str = "/cnm/",
        hub: WatchHub | None = None,
        ttl: int = 10,
        timeout: float = 5.0,
        on_seen: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.name = name
        self.vtep = vtep
        self.store = EtcdStore(endpoints, prefix=prefix, watch_hub=hub, timeout=timeout)
        self.driver = SimOverlay(vtep, on_seen)
        self.ctl = SimController(self.driver)
        self.sync = ClusterSync(self.ctl, self.store, vtep, ttl=ttl)
        self.endpoints: dict[str, tuple[SimEndpoint, str]] = {}  # endpoint id -> (endpoint, network id)

    def start(self) -> None:
        self.sync.start()

    def close(self, crash: bool = False) -> None:
        """Stop (the peers stay published until the lease expires, as a daemon's do);
        crash=True also skips waiting for anything."""
        self.sync.close()
        self.store.close()

    def attach(self, network_id: str, endpoint_id: str, address: str, mac: str, name: str = "") -> float:
        """Publish an endpoint on `network_id`; returns the monotonic time just before."""
        ep = SimEndpoint(endpoint_id, name or endpoint_id[:12], address, mac)
        net = self.ctl.networks.get(network_id) or SimNetwork(network_id, network_id[:12])
        self.endpoints[endpoint_id] = (ep, network_id)
        t0 = time.monotonic()
        self.sync.publish(net, ep)  # type: ignore[arg-type]
        return t0

    def detach(self, endpoint_id: str) -> float:
        ep, _ = self.endpoints.pop(endpoint_id)
        t0 = time.monotonic()
        self.sync.unpublish(ep)  # type: ignore[arg-type]
        return t0

    def networks_on(self) -> set[str]:
        return {nid for _, nid in self.endpoints.values()}

    def state_bytes(self) -> int:
        """Bytes of the cluster state this host holds: peers (ClusterSync's and the
        driver's tables), nodes, its own published records, known networks."""
        roots = (
            self.sync._held,
            self.sync._published,
            self.sync._subs,
            self.driver.table,
            self.driver.nodes,
            self.ctl.networks,
        )
        return deep_size(roots)


_SHARED = (EtcdStore, WatchHub, ClusterSync, SimController, SimOverlay)


def deep_size(obj: object, seen: set[int] | None = None) -> int:
    """sys.getsizeof over everything reachable through containers and instance fields,
    each object once; stops at the store, hub and other hosts' machinery."""
    seen = set() if seen is None else seen
    total = 0
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, _SHARED) or callable(o):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list | tuple | set | frozenset):
            stack.extend(o)
        elif hasattr(o, "__dict__") and not isinstance(o, type):
            stack.append(vars(o))
        elif hasattr(o, "__slots__"):
            stack.extend(getattr(o, s) for s in o.__slots__ if hasattr(o, s))
    return total
