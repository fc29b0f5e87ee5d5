"""The controller: owns Networks and Endpoints (sandboxes are cnm.sandbox's, containers cnm.containers').

Every multi-step operation is validate → apply → roll back on failure: each step that
changes IPAM, a driver or the store pushes its undo onto an `Undo` stack, which runs in
reverse if a later step fails. The controller is synchronous and serialises mutations
with one lock; the daemon calls it from worker threads.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable, Mapping, Sequence

from cnm import labels
from cnm.addresses import host_of, network, text, within
from cnm.controller_endpoints import EP_PREFIX, Endpoints
from cnm.controller_recovery import GLOBAL_CACHE, NAME_PREFIX, NET_PREFIX, GlobalNetworks, Recovery
from cnm.driverapi import GLOBAL, DriverRegistry, IPAMData, NetworkSpec
from cnm.errors import CNMError, Conflict, Forbidden, InvalidParameter, NotFound, Unavailable
from cnm.ids import check_name, new_id
from cnm.intents import NETWORK_CREATE, NETWORK_DELETE, Intents
from cnm.ipamapi import GATEWAY_REQUEST, GATEWAY_TYPE, Ipam, IpamRegistry
from cnm.model import Endpoint, Network, PoolConfig
from cnm.requests import IPAMConfigRequest, NetworkCreate
from cnm.retiring import Retirements
from cnm.store import Delete, Op, Put, Store
from cnm.undo import Undo

log = logging.getLogger(__name__)

# NET_PREFIX "network/"; NAME_PREFIX "netname/": global networks, one key per name, so names
# are unique cluster-wide; GLOBAL_CACHE: the local copy of global networks (all from
# cnm.controller_recovery, which tears networks down).
PORTMAP = labels.PORTMAP

# Networks that exist exactly once and can never be removed.
BUILTIN = {"none": "null", "host": "host", "bridge": "bridge"}
SINGLETON_DRIVERS = {"null": "none", "host": "host"}
DEFAULT_BRIDGE_IFNAME = "cnm0"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


NetworkListener = Callable[[str, Network], None]  # ("create" | "delete", network)
# ("connect" | "disconnect", network, endpoint): an endpoint joined or left a sandbox
EndpointListener = Callable[[str, Network, Endpoint], None]


class Controller(Recovery, Endpoints):
    def __init__(
        self,
        drivers: DriverRegistry,
        ipams: IpamRegistry,
        stores: Mapping[str, Store],
        *,
        cluster: Callable[[Controller], GlobalNetworks] | None = None,
        network_listeners: Sequence[NetworkListener] = (),
        endpoint_listeners: Sequence[EndpointListener] = (),
    ) -> None:
        """`cluster` (with a cluster store) makes this host's cluster member from the
        controller it serves: the two need each other, so the controller hands itself
        over rather than being wired to it later."""
        self.drivers = drivers
        self.ipams = ipams
        self.stores = dict(stores)  # scope ("local"/"global") -> store
        self.lock = threading.RLock()
        self._networks: dict[str, Network] = {}
        self._endpoints: dict[str, Endpoint] = {}
        self._by_network: dict[str, dict[str, Endpoint]] = {}  # network id -> its endpoints, by id
        self.network_listeners = list(network_listeners)
        self.endpoint_listeners = list(endpoint_listeners)
        self.cluster: GlobalNetworks | None = cluster(self) if cluster is not None else None
        self.intents = Intents(self.stores["local"])
        self._global_loaded = "global" not in self.stores  # global records read from the cluster store
        self._load()

    # ----------------------------------------------------------------- state
    def _load(self) -> None:
        """Local networks and all endpoints from the local store; global networks from
        the cluster store — or, while it is unreachable, from the local copy kept of
        them (so containers on overlays are re-adopted even with etcd down)."""
        local = self.stores["local"]
        for kv in local.list(NET_PREFIX):
            net = Network.from_record(kv.value)
            self._networks[net.id] = net
        for kv in local.list(EP_PREFIX):
            self._know_endpoint(Endpoint.from_record(kv.value))
        self.retirements = Retirements(local, self.lock, self._release_addresses)
        if "global" in self.stores:
            try:
                records = [kv.value for kv in self.stores["global"].list(NET_PREFIX)]
            except Unavailable as exc:
                log.warning("cluster store unreachable at start (%s); using the local copy of global networks", exc)
                records = [kv.value for kv in local.list(GLOBAL_CACHE)]
            else:
                self._global_loaded = True
                # Keep the local copy in step, so a restart with etcd down still knows them.
                cached = {kv.key[len(GLOBAL_CACHE) :] for kv in local.list(GLOBAL_CACHE)}
                listed = {rec["id"] for rec in records if "id" in rec}
                ops: list[Op] = [Put(GLOBAL_CACHE + rec["id"], rec) for rec in records if "id" in rec]
                ops += [Delete(GLOBAL_CACHE + nid) for nid in cached - listed]
                if ops:
                    local.atomic(ops)
            for rec in records:
                net = Network.from_record(rec)
                self._networks[net.id] = net

    def store_for(self, scope: str) -> Store:
        try:
            return self.stores[scope]
        except KeyError:
            raise InvalidParameter(
                f"{scope}-scope networks need a cluster store: start the daemon with "
                f"--cluster-store etcd://HOST:PORT --advertise IP"
            ) from None

    def _notify(self, event: str, net: Network) -> None:
        for listener in self.network_listeners:
            try:
                listener(event, net)
            except Exception:  # a listener must not break the operation that already happened
                log.exception("network listener failed on %s %s", event, net.name)

    def _notify_endpoint(self, event: str, net: Network, ep: Endpoint) -> None:
        for listener in self.endpoint_listeners:
            try:
                listener(event, net, ep)
            except Exception:  # a listener must not break the operation that already happened
                log.exception("endpoint listener failed on %s %s", event, ep.name)

    # -------------------------------------------------------------- queries
    def list_networks(self) -> list[Network]:
        with self.lock:
            return sorted(self._networks.values(), key=lambda n: (n.created, n.name))

    def get_network(self, ref: str) -> Network:
        """By exact name, full ID, or unique ID prefix (Docker's lookup order). A global
        network another host made a moment ago (our watch has not delivered it yet) is
        read from the cluster store, outside the lock: callers that hold the lock look
        their networks up before taking it."""
        with self.lock:
            net = self._find_network(ref)
        if net is not None:
            return net
        record = self.cluster.find_network(ref) if self.cluster is not None else None
        if record is not None:
            net = self.adopt_remote_network(record)
            if net is None:  # the watch delivered it meanwhile
                with self.lock:
                    net = self._find_network(ref)
            if net is not None:
                return net
        raise NotFound(f"network {ref} not found")

    def _find_network(self, ref: str) -> Network | None:
        if not ref:
            raise InvalidParameter("network name or ID must not be empty")
        for net in self._networks.values():
            if net.name == ref:
                return net
        if ref in self._networks:
            return self._networks[ref]
        matches = [n for n in self._networks.values() if n.id.startswith(ref.lower())]
        if len(matches) > 1:
            raise InvalidParameter(f"network ID prefix {ref} is ambiguous: {len(matches)} networks match")
        return matches[0] if matches else None

    def network(self, network_id: str) -> Network | None:
        """The network with this full ID, if this host knows it (no lookup elsewhere)."""
        with self.lock:
            return self._networks.get(network_id)

    def endpoints_of(self, network_id: str) -> list[Endpoint]:
        with self.lock:
            return list(self._by_network.get(network_id, {}).values())

    def _know_endpoint(self, ep: Endpoint) -> None:
        self._endpoints[ep.id] = ep
        self._by_network.setdefault(ep.network_id, {})[ep.id] = ep

    def _forget_endpoint(self, ep: Endpoint) -> None:
        self._endpoints.pop(ep.id, None)
        on_net = self._by_network.get(ep.network_id)
        if on_net is not None:
            on_net.pop(ep.id, None)
            if not on_net:
                del self._by_network[ep.network_id]

    def network_containers(self, network_id: str) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for ep in self.endpoints_of(network_id):
            if ep.container_id:
                out[ep.container_id] = {
                    "Name": ep.name,
                    "EndpointID": ep.id,
                    "MacAddress": ep.mac or "",
                    "IPv4Address": text(ep.address) or "",
                    "IPv6Address": text(ep.address_v6) or "",
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
                raise Forbidden(f'only one instance of "{SINGLETON_DRIVERS[req.driver]}" network is allowed')
            if req.name in BUILTIN and not builtin:
                raise Conflict(f"network with name {req.name} already exists")
            options = driver.validate_options(dict(req.options), req.internal)
            configs = [c.validate() for c in req.ipam_configs]
            if any(c.v6 for c in configs) and not req.enable_ipv6:
                raise InvalidParameter("an IPv6 subnet was given without --ipv6: add --ipv6 to enable it")
            caps = driver.capabilities()
            scope = caps.data_scope
            if req.scope and req.scope != scope:
                if req.scope == "local":
                    raise Forbidden(f"cannot downgrade network scope for {req.driver} networks")
                raise InvalidParameter(f"--scope {req.scope}: {req.driver} networks have {scope} scope")
            store = self.store_for(scope)
            ipam_driver = "null" if req.driver in SINGLETON_DRIVERS else req.ipam_driver
            ipam = self.ipams.get(ipam_driver)

            net = Network(
                id=network_id or new_id(),
                name=req.name,
                driver=req.driver,
                scope=scope,
                created=_now(),
                internal=req.internal,
                attachable=req.attachable,
                enable_ipv6=req.enable_ipv6,
                ipam_driver=ipam_driver,
                ipam_options=dict(req.ipam_options),
                options=options,
                labels=dict(req.labels),
                builtin=builtin,
            )
            # Written ahead of the first side effect (a pool reserved, a bridge made), and
            # kept up to date with what was reserved: a crash leaves the next start enough
            # to undo every step (finish_intents), and proof that the objects are ours.
            self.intents.write(NETWORK_CREATE, net.id, net.to_record())
            with Undo() as undo:
                undo.push(self.intents.done, NETWORK_CREATE, net.id)
                if ipam_driver != "null":
                    local_space, global_space = ipam.default_address_spaces()
                    space = global_space if scope == GLOBAL else local_space
                    v4 = [c for c in configs if not c.v6] or [IPAMConfigRequest()]
                    v6 = [c for c in configs if c.v6]
                    if req.enable_ipv6 and not v6:
                        raise InvalidParameter("--ipv6 needs an IPv6 --subnet (no default IPv6 pool is configured)")
                    for cfg in v4 + v6:
                        net.pools.append(self._reserve_pool(ipam, space, cfg, net, undo))
                        self.intents.write(NETWORK_CREATE, net.id, net.to_record())
                if scope == GLOBAL and self.cluster is not None:
                    extra = self.cluster.allocate_network(net)
                    undo.push(self.cluster.release_network, net)
                    net.options.update(extra)
                    self.intents.write(NETWORK_CREATE, net.id, net.to_record())
                driver.create_network(self.network_spec(net))
                undo.push(driver.delete_network, net.id)
                done = self.intents.done_op(NETWORK_CREATE, net.id)
                if scope == GLOBAL:
                    name_key = NAME_PREFIX + net.name
                    try:
                        store.atomic(
                            [Put(NET_PREFIX + net.id, net.to_record()), Put(name_key, {"id": net.id})],
                            expect={name_key: 0},
                        )
                    except Conflict:
                        raise Conflict(f"network with name {net.name} already exists (in the cluster)") from None
                    self.stores["local"].atomic([Put(GLOBAL_CACHE + net.id, net.to_record()), done])
                else:
                    store.atomic([Put(NET_PREFIX + net.id, net.to_record()), done])
                self._networks[net.id] = net
                undo.commit()
            self._notify("create", net)
            log.info("created network %s (%s, %s)", net.name, net.driver, net.id[:12])
            return net

    def _reserve_pool(self, ipam: Ipam, space: str, cfg: IPAMConfigRequest, net: Network, undo: Undo) -> PoolConfig:
        pool = ipam.request_pool(space, cfg.subnet, cfg.ip_range, net.ipam_options, cfg.v6)
        undo.push(ipam.release_pool, pool.pool_id)
        subnet = network(pool.subnet, f"subnet from IPAM driver {net.ipam_driver}")
        pc = PoolConfig(
            subnet=subnet,
            pool_id=pool.pool_id,
            v6=subnet.version == 6,
            ip_range=network(cfg.ip_range, "--ip-range") if cfg.ip_range else None,
        )
        # Docker gives every pool a gateway (the bridge's address); null/host have none.
        gw = ipam.request_address(pool.pool_id, cfg.gateway, {GATEWAY_REQUEST: GATEWAY_TYPE})
        undo.push(ipam.release_address, pool.pool_id, gw)
        pc.gateway = host_of(gw, f"gateway from IPAM driver {net.ipam_driver}")
        for name, addr in cfg.aux_addresses.items():
            got = ipam.request_address(pool.pool_id, addr, {})
            undo.push(ipam.release_address, pool.pool_id, got)
            pc.aux_addresses[name] = host_of(got, f"address from IPAM driver {net.ipam_driver}")
        return pc

    @staticmethod
    def network_spec(net: Network) -> NetworkSpec:
        def data(p: PoolConfig) -> IPAMData:
            # The driver protocol's shape: the gateway and aux addresses with the prefix.
            return IPAMData(
                pool=str(p.subnet),
                gateway=text(within(p.gateway, p.subnet)) if p.gateway else None,
                aux_addresses={k: str(within(v, p.subnet)) for k, v in p.aux_addresses.items()},
            )

        return NetworkSpec(
            id=net.id,
            name=net.name,
            options=dict(net.options),
            ipv4=tuple(data(p) for p in net.v4_pools()),
            ipv6=tuple(data(p) for p in net.v6_pools()),
            internal=net.internal,
            enable_ipv6=net.enable_ipv6,
        )

    # ------------------------------------------------------------- deletion
    def delete_network(self, ref: str, *, force_builtin: bool = False) -> None:
        net = self.get_network(ref)
        with self.lock:
            if self._networks.get(net.id) is not net:
                raise NotFound(f"network {ref} not found")
            if net.builtin and not force_builtin:
                raise Forbidden(f"{net.name} is a pre-defined network and cannot be removed")
            if self.endpoints_of(net.id):
                raise Forbidden(f"network {net.name} has active endpoints: disconnect its containers first")
            if net.scope == GLOBAL and self.cluster is not None:
                remote = self.cluster.remote_endpoints(net.id)
                if remote:
                    raise Forbidden(
                        f"network {net.name} has active endpoints on other hosts "
                        f"({', '.join(sorted(remote))}): disconnect them first"
                    )
            # Written ahead: a crash part-way is finished at the next start (the network
            # was on its way out), never left as a bridge without a record or pools
            # without a network. Kept when a step fails, so that start retries it.
            self.intents.write(NETWORK_DELETE, net.id, net.to_record())
            try:
                errors = self._teardown_network(net)
            except BaseException:
                self.intents.done(NETWORK_DELETE, net.id)  # refused before any change
                raise
            if not errors:
                self.intents.done(NETWORK_DELETE, net.id)
            del self._networks[net.id]
            if errors:
                log.warning(
                    "network %s removed, with errors (retried at the next start): %s", net.name, "; ".join(errors)
                )
            self._notify("delete", net)
            log.info("removed network %s", net.name)

    def prune_networks(self, select: Callable[[Network], bool] = lambda net: True) -> list[str]:
        """Remove every unused custom network that `select` accepts (the API's prune
        filters); returns the names removed."""
        with self.lock:
            removed = []
            for net in self.list_networks():
                if net.builtin or self.endpoints_of(net.id) or not select(net):
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
            # What a previous life deleted but did not finish deleting, before anything
            # can be handed its addresses again.
            finished = self.retirements.finish(
                self._networks,
                lambda n: self.drivers.get(n.driver),
                [self.drivers.get(name) for name in self.drivers.names()],
            )
            if finished:
                log.info("finished deleting %d endpoint(s) a previous run had retired", finished)
            present = {n.name for n in self._networks.values() if n.builtin}
            for name, driver in BUILTIN.items():
                if name in present:
                    continue
                options = (
                    {labels.BRIDGE_NAME: DEFAULT_BRIDGE_IFNAME, labels.DEFAULT_BRIDGE: "true"}
                    if driver == "bridge"
                    else {}
                )
                self.create_network(NetworkCreate(name=name, driver=driver, options=options), builtin=True)

    # ------------------------------------------------ networks made elsewhere
    def adopt_remote_network(self, record: dict) -> Network | None:
        """A global network another host created (seen through the cluster store's
        watch): build its local kernel objects and know it. Idempotent."""
        with self.lock:
            net = Network.from_record(record)
            if net.id in self._networks:
                return None
            driver = self.drivers.get(net.driver)
            spec = self.network_spec(net)
            try:
                # New to this host: the driver creates it here (a remote plugin gets its
                # CreateNetwork on every host); objects left from an earlier life are adopted.
                try:
                    driver.create_network(spec)
                except Conflict:
                    driver.restore_network(spec)
            except CNMError as exc:
                log.error("cannot build global network %s here: %s", net.name, exc)
                return None
            self._networks[net.id] = net
            self.stores["local"].put(GLOBAL_CACHE + net.id, net.to_record())
            log.info("learned global network %s (%s) from the cluster", net.name, net.id[:12])
        self._notify("create", net)
        return net

    def forget_remote_network(self, network_id: str) -> None:
        """A global network was removed elsewhere. Its local kernel objects go too
        (a network with local endpoints cannot have been removed: it is kept)."""
        with self.lock:
            net = self._networks.get(network_id)
            if net is None or net.scope != GLOBAL:
                return
            if self.endpoints_of(network_id):
                log.warning("global network %s was removed elsewhere but has local endpoints; keeping it", net.name)
                return
            try:
                self.drivers.get(net.driver).delete_network(net.id)
            except CNMError as exc:
                log.warning("removing global network %s here: %s", net.name, exc)
            del self._networks[network_id]
            self.stores["local"].delete(GLOBAL_CACHE + network_id)
            log.info("global network %s was removed in the cluster", net.name)
        self._notify("delete", net)
