"""The controller: owns Networks (and, through cnm.containers, Endpoints and Sandboxes).

Every multi-step operation is validate → apply → roll back on failure: each step that
changes IPAM, a driver or the store pushes its undo onto an `Undo` stack, which runs in
reverse if a later step fails. The controller is synchronous and serialises mutations
with one lock; the daemon calls it from worker threads.
"""
from __future__ import annotations

import datetime
import logging
import threading
from typing import Callable, Iterator

from cnm import labels
from cnm.driverapi import GLOBAL, DriverRegistry, IPAMData, NetworkSpec
from cnm.errors import CNMError, Conflict, Forbidden, InvalidParameter, NotFound
from cnm.ids import check_name, new_id
from cnm.ipamapi import GATEWAY_REQUEST, GATEWAY_TYPE, IpamRegistry
from cnm.model import Endpoint, Network, PoolConfig
from cnm.requests import IPAMConfigRequest, NetworkCreate
from cnm.store import Store
from cnm.undo import Undo

log = logging.getLogger(__name__)

NET_PREFIX = "network/"
EP_PREFIX = "endpoint/"

# Networks that exist exactly once and can never be removed.
BUILTIN = {"none": "null", "host": "host", "bridge": "bridge"}
SINGLETON_DRIVERS = {"null": "none", "host": "host"}
DEFAULT_BRIDGE_IFNAME = "cnm0"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _plain(address_with_prefix: str) -> str:
    return address_with_prefix.split("/")[0]


class Controller:
    def __init__(self, drivers: DriverRegistry, ipams: IpamRegistry, stores: dict[str, Store]) -> None:
        self.drivers = drivers
        self.ipams = ipams
        self.stores = stores                   # scope ("local"/"global") -> store
        self.lock = threading.RLock()
        self._networks: dict[str, Network] = {}
        self._endpoints: dict[str, Endpoint] = {}
        self.network_listeners: list[Callable[[str, Network], None]] = []  # (event, network)
        self._load()

    # ----------------------------------------------------------------- state
    def _load(self) -> None:
        for store in self._distinct_stores():
            for kv in store.list(NET_PREFIX):
                net = Network.from_record(kv.value)
                self._networks[net.id] = net
            for kv in store.list(EP_PREFIX):
                ep = Endpoint.from_record(kv.value)
                self._endpoints[ep.id] = ep

    def _distinct_stores(self) -> Iterator[Store]:
        seen: set[int] = set()
        for store in self.stores.values():
            if id(store) not in seen:
                seen.add(id(store))
                yield store

    def store_for(self, scope: str) -> Store:
        try:
            return self.stores[scope]
        except KeyError:
            raise InvalidParameter(
                f"{scope}-scope networks need a cluster store: start the daemon with "
                f"--cluster-store etcd://HOST:PORT --advertise IP") from None

    def _notify(self, event: str, net: Network) -> None:
        for listener in self.network_listeners:
            try:
                listener(event, net)
            except Exception:  # a listener must not break the operation that already happened
                log.exception("network listener failed on %s %s", event, net.name)

    # -------------------------------------------------------------- queries
    def list_networks(self) -> list[Network]:
        with self.lock:
            return sorted(self._networks.values(), key=lambda n: (n.created, n.name))

    def get_network(self, ref: str) -> Network:
        """By exact name, full ID, or unique ID prefix (Docker's lookup order)."""
        with self.lock:
            if not ref:
                raise InvalidParameter("network name or ID must not be empty")
            for net in self._networks.values():
                if net.name == ref:
                    return net
            if ref in self._networks:
                return self._networks[ref]
            matches = [n for n in self._networks.values() if n.id.startswith(ref.lower())]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise InvalidParameter(f"network ID prefix {ref} is ambiguous: {len(matches)} networks match")
            raise NotFound(f"network {ref} not found")

    def endpoints_of(self, network_id: str) -> list[Endpoint]:
        with self.lock:
            return [ep for ep in self._endpoints.values() if ep.network_id == network_id]

    def network_containers(self, network_id: str) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for ep in self.endpoints_of(network_id):
            if ep.container_id:
                out[ep.container_id] = {
                    "Name": ep.name,
                    "EndpointID": ep.id,
                    "MacAddress": ep.mac or "",
                    "IPv4Address": ep.address or "",
                    "IPv6Address": ep.address_v6 or "",
                }
        return out

    # ------------------------------------------------------------- creation
    def create_network(self, req: NetworkCreate, *, builtin: bool = False, network_id: str | None = None) -> Network:
        with self.lock:
            check_name(req.name, "network")
            if any(n.name == req.name for n in self._networks.values()):
                raise Conflict(f"network with name {req.name} already exists")
            driver = self.drivers.get(req.driver)
            if req.driver in SINGLETON_DRIVERS and not builtin:
                raise Forbidden(f"only one instance of \"{SINGLETON_DRIVERS[req.driver]}\" network is allowed")
            if req.name in BUILTIN and not builtin:
                raise Conflict(f"network with name {req.name} already exists")
            options = driver.validate_options(dict(req.options), req.internal)
            configs = [c.validate() for c in req.ipam_configs]
            if any(c.v6 for c in configs) and not req.enable_ipv6:
                raise InvalidParameter("an IPv6 subnet was given without --ipv6: add --ipv6 to enable it")
            caps = driver.capabilities()
            scope = caps.data_scope
            store = self.store_for(scope)
            ipam_driver = "null" if req.driver in SINGLETON_DRIVERS else req.ipam_driver
            ipam = self.ipams.get(ipam_driver)

            net = Network(
                id=network_id or new_id(), name=req.name, driver=req.driver, scope=scope, created=_now(),
                internal=req.internal, attachable=req.attachable, enable_ipv6=req.enable_ipv6,
                ipam_driver=ipam_driver, ipam_options=dict(req.ipam_options), options=options,
                labels=dict(req.labels), builtin=builtin,
            )
            with Undo() as undo:
                if ipam_driver != "null":
                    local_space, global_space = ipam.default_address_spaces()
                    space = global_space if scope == GLOBAL else local_space
                    v4 = [c for c in configs if not c.v6] or [IPAMConfigRequest()]
                    v6 = [c for c in configs if c.v6]
                    if req.enable_ipv6 and not v6:
                        raise InvalidParameter("--ipv6 needs an IPv6 --subnet (no default IPv6 pool is configured)")
                    for cfg in v4 + v6:
                        net.pools.append(self._reserve_pool(ipam, space, cfg, net, undo))
                driver.create_network(self.network_spec(net))
                undo.push(driver.delete_network, net.id)
                store.put(NET_PREFIX + net.id, net.to_record())
                self._networks[net.id] = net
                undo.commit()
            self._notify("create", net)
            log.info("created network %s (%s, %s)", net.name, net.driver, net.id[:12])
            return net

    def _reserve_pool(self, ipam, space: str, cfg: IPAMConfigRequest, net: Network, undo: Undo) -> PoolConfig:
        pool = ipam.request_pool(space, cfg.subnet, cfg.ip_range, net.ipam_options, cfg.v6)
        undo.push(ipam.release_pool, pool.pool_id)
        v6 = ":" in pool.subnet
        pc = PoolConfig(subnet=pool.subnet, pool_id=pool.pool_id, ip_range=cfg.ip_range, v6=v6)
        # Docker gives every pool a gateway (the bridge's address); null/host have none.
        gw = ipam.request_address(pool.pool_id, cfg.gateway, {GATEWAY_REQUEST: GATEWAY_TYPE})
        undo.push(ipam.release_address, pool.pool_id, gw)
        pc.gateway = _plain(gw)
        for name, addr in cfg.aux_addresses.items():
            got = ipam.request_address(pool.pool_id, addr, {})
            undo.push(ipam.release_address, pool.pool_id, got)
            pc.aux_addresses[name] = _plain(got)
        return pc

    @staticmethod
    def network_spec(net: Network) -> NetworkSpec:
        def data(p: PoolConfig) -> IPAMData:
            plen = p.subnet.split("/")[1]
            return IPAMData(pool=p.subnet, gateway=f"{p.gateway}/{plen}" if p.gateway else None,
                            aux_addresses={k: f"{v}/{plen}" for k, v in p.aux_addresses.items()})
        return NetworkSpec(id=net.id, name=net.name, options=dict(net.options),
                           ipv4=tuple(data(p) for p in net.v4_pools()),
                           ipv6=tuple(data(p) for p in net.v6_pools()),
                           internal=net.internal, enable_ipv6=net.enable_ipv6)

    # ------------------------------------------------------------- deletion
    def delete_network(self, ref: str, *, force_builtin: bool = False) -> None:
        with self.lock:
            net = self.get_network(ref)
            if net.builtin and not force_builtin:
                raise Forbidden(f"{net.name} is a pre-defined network and cannot be removed")
            if self.endpoints_of(net.id):
                raise Forbidden(f"network {net.name} has active endpoints: disconnect its containers first")
            self.drivers.get(net.driver).delete_network(net.id)
            errors: list[str] = []
            if net.ipam_driver != "null":
                ipam = self.ipams.get(net.ipam_driver)
                for pool in net.pools:
                    try:
                        ipam.release_pool(pool.pool_id)
                    except CNMError as exc:  # best effort: the network is gone from the kernel
                        errors.append(str(exc))
            self.store_for(net.scope).delete(NET_PREFIX + net.id)
            del self._networks[net.id]
            if errors:
                log.warning("network %s removed, but IPAM said: %s", net.name, "; ".join(errors))
            self._notify("delete", net)
            log.info("removed network %s", net.name)

    def prune_networks(self) -> list[str]:
        with self.lock:
            removed = []
            for net in self.list_networks():
                if net.builtin or self.endpoints_of(net.id):
                    continue
                try:
                    self.delete_network(net.id)
                    removed.append(net.name)
                except CNMError as exc:
                    log.warning("prune: could not remove %s: %s", net.name, exc)
            return removed

    # ------------------------------------------------------------ start-up
    def ensure_builtin_networks(self) -> None:
        """Create none, host and the default bridge at first start; re-create the
        kernel objects of every known network after a restart."""
        with self.lock:
            for net in list(self._networks.values()):
                try:
                    self.drivers.get(net.driver).restore_network(self.network_spec(net))
                except CNMError as exc:
                    log.error("could not restore network %s: %s", net.name, exc)
            present = {n.name for n in self._networks.values() if n.builtin}
            for name, driver in BUILTIN.items():
                if name in present:
                    continue
                options = {labels.BRIDGE_NAME: DEFAULT_BRIDGE_IFNAME, labels.DEFAULT_BRIDGE: "true"} \
                    if driver == "bridge" else {}
                self.create_network(NetworkCreate(name=name, driver=driver, options=options), builtin=True)
