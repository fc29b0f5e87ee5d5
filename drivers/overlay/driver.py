"""The overlay driver: one network namespace per overlay network on each host, holding
a bridge and a VXLAN device; container veths attach to that bridge.

    host (underlay) namespace                overlay namespace <run_dir>/overlay/<vni>-<nid12>
    ─────────────────────────                ─────────────────────────────────────────────────
    UDP socket *:4789  <──── vx-<vni>-<nid5> ──┐
    nft table inet cnm-overlay                 ├── bridge ov-<vni>-<nid5> (gateway addresses)
    ovc<eid7> ──(veth)──────────── ovb<eid7> ──┘
      └─ moved into the sandbox by the core

The namespace, bridge and VXLAN device are built EAGERLY, in create_network (Docker
builds them lazily, on the first local join): peers can then be programmed the
moment they are learnt, a VNI clash on this host shows up when the network is
created rather than when a container starts, and restore has one shape to check.
The cost is one idle namespace per overlay network on a host without its containers.

Peers (remote endpoints) and nodes (cluster hosts) come from the core's discovery
events; the driver keeps them in memory (the store is the truth; the core replays
events after a restart). Peers of a network that does not exist here yet are kept
and programmed when it is created.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace

from cnm import labels
from cnm.driverapi import GLOBAL, Capability, DriverRegistry, EndpointInterface, JoinResult, NetworkSpec
from cnm.errors import CNMError, Conflict, InternalError, InvalidParameter, NotFound
from cnm.osl.vxlan import VxlanNetlink
from drivers.bridge.naming import mac_from_ipv4, random_mac
from drivers.overlay import config as oconfig
from drivers.overlay import naming
from drivers.overlay.config import OverlayConfig
from drivers.overlay.filter import FilterState, NftVxlanFilter, VxlanFilter
from drivers.overlay.kernel import (
    DEFAULT_VXLAN_PORT,
    LocalEndpoint,
    LocalNetwork,
    Namespaces,
    OslNamespaces,
    OverlayNetlink,
    underlay_mtu_of,
)
from drivers.overlay.peering import OverlayPeers
from drivers.overlay.peers import PeerTable, parse_ipv4

log = logging.getLogger(__name__)

NAME = "overlay"
MAC_OPTION = labels.ENDPOINT_MAC


class OverlayDriver(OverlayPeers):
    """cnm.driverapi.Driver for multi-host VXLAN networks. Thread-safe (one lock)."""

    name = NAME

    def __init__(
        self,
        netlink_factory: Callable[[str | None], OverlayNetlink],
        *,
        run_dir: str,
        advertise_addr: str,
        underlay_mtu: Callable[[], int] | int | None,
        firewall: VxlanFilter,
        vxlan_port: int = DEFAULT_VXLAN_PORT,
        namespaces: Namespaces | None = None,
    ) -> None:
        """netlink_factory(None) opens a handle in the host (underlay) namespace,
        netlink_factory(path) one inside the namespace at `path`. `underlay_mtu`: an
        int, a callable read at each network creation, or None = the MTU of the host
        interface holding advertise_addr. `firewall` is the VXLAN source filter
        (filter.NftVxlanFilter in production; required, so that leaving it out is a
        decision). `vxlan_port` must be the same on every host of the cluster."""
        self._factory = netlink_factory
        self.run_dir = run_dir
        self.advertise_addr = parse_ipv4(str(advertise_addr), "overlay advertise address")
        self._underlay_mtu = underlay_mtu
        self._filter = firewall
        if not 1 <= int(vxlan_port) <= 65535:
            raise InvalidParameter(f"invalid VXLAN port {vxlan_port}: want 1..65535")
        self.vxlan_port = int(vxlan_port)
        self._ns = namespaces or OslNamespaces()
        self._host: OverlayNetlink | None = None
        self._networks: dict[str, LocalNetwork] = {}
        self._peers = PeerTable()
        self._nodes: set[str] = set()
        self._lock = threading.RLock()

    @property
    def host(self) -> OverlayNetlink:
        if self._host is None:
            self._host = self._factory(None)
        return self._host

    def close(self) -> None:
        """Close every handle at shutdown (kernel objects stay; the driver is done)."""
        with self._lock:
            for net in self._networks.values():
                net.nl.close()
            if self._host is not None:
                self._host.close()
            self._host = None

    # -- state for the core and tests ---------------------------------------------------

    def network_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._networks)

    def netns_path(self, network_id: str) -> str:
        return self._network(network_id).path

    def vxlan_name(self, network_id: str) -> str:
        return self._network(network_id).vxlan

    def bridge_name(self, network_id: str) -> str:
        return self._network(network_id).bridge

    def nodes(self) -> list[str]:
        with self._lock:
            return sorted(self._nodes)

    def filter_state(self) -> FilterState:
        with self._lock:
            return FilterState(port=self.vxlan_port, vteps=frozenset(self._nodes))

    def _network(self, network_id: str) -> LocalNetwork:
        try:
            return self._networks[network_id]
        except KeyError:
            raise NotFound(f"network {network_id[:12]} is not known to the overlay driver") from None

    def _mtu_of_underlay(self) -> int:
        if self._underlay_mtu is None:
            return underlay_mtu_of(self.host, self.advertise_addr)
        return self._underlay_mtu() if callable(self._underlay_mtu) else int(self._underlay_mtu)

    # -- networks -----------------------------------------------------------------------------

    def capabilities(self) -> Capability:
        return Capability(data_scope=GLOBAL, connectivity_scope=GLOBAL, gateway_bridge=True)

    def validate_options(self, options: Mapping[str, str], internal: bool) -> dict[str, str]:
        return oconfig.normalize(options)

    def _parse(self, spec: NetworkSpec) -> OverlayConfig:
        opts = oconfig.normalize(spec.options)
        # Only ask for the underlay MTU when it matters (it may read the kernel).
        underlay = 0 if labels.MTU in opts else self._mtu_of_underlay()
        return oconfig.parse(spec, underlay)

    def _check_vni_free(self, cfg: OverlayConfig) -> None:
        for other in self._networks.values():
            if other.config.vni == cfg.vni and other.id != cfg.network_id:
                raise Conflict(f"VXLAN id {cfg.vni} is already used by overlay network {other.id[:12]} on this host")

    def create_network(self, spec: NetworkSpec) -> None:
        """Build the namespace, bridge and VXLAN device, program known peers. A
        namespace left by a crash for this same network is adopted."""
        cfg = self._parse(spec)
        with self._lock:
            if spec.id in self._networks:
                raise Conflict(f"network {spec.id[:12]} already exists in the overlay driver")
            self._build(cfg, endpoints={})

    def restore_network(self, spec: NetworkSpec) -> None:
        """Make sure the namespace, bridge, VXLAN device and peer entries exist. Idempotent."""
        cfg = self._parse(spec)
        with self._lock:
            known = self._networks.pop(spec.id, None)
            if known is not None:
                known.nl.close()
            self._build(cfg, endpoints=known.endpoints if known else {})

    def _build(self, cfg: OverlayConfig, endpoints: dict[str, LocalEndpoint]) -> None:
        self._check_vni_free(cfg)
        path = naming.netns_path(self.run_dir, cfg.vni, cfg.network_id)
        # The filter goes up before the VXLAN socket opens: no unfiltered window.
        self._sync_filter(extra=True)
        created_ns = False
        nl: OverlayNetlink | None = None
        vx = naming.vxlan_name(cfg.vni, cfg.network_id)
        try:
            if not self._ns.exists(path):
                self._ns.create(path)
                created_ns = True
            nl = self._factory(path)
            net = LocalNetwork(cfg, path, nl, endpoints)
            self._configure(net)
            self._networks[cfg.network_id] = net
            self._program_all_peers(net)
        except BaseException:
            self._networks.pop(cfg.network_id, None)
            if nl is not None:
                if created_ns:
                    self._undo(lambda: nl.delete_link(vx))
                nl.close()
            self._undo(lambda: self._delete_host_vxlan(vx, cfg.network_id))
            if created_ns:
                self._undo(lambda: self._ns.delete(path))
            self._undo(lambda: self._sync_filter())
            raise

    def _configure(self, net: LocalNetwork) -> None:
        """Bridge with the gateways, VXLAN device on it, all up. Idempotent."""
        cfg, nl = net.config, net.nl
        if not cfg.ipv6:
            try:
                # No IPv6 inside: the bridge and VXLAN device would send MLD and router
                # solicitations across the overlay for nothing.
                nl.sysctl_write("net.ipv6.conf.all.disable_ipv6", 1)
                nl.sysctl_write("net.ipv6.conf.default.disable_ipv6", 1)
            except NotFound:
                pass  # kernel without IPv6
        alias = naming.network_alias(net.id)
        if nl.link_exists(net.bridge):
            if nl.link(net.bridge).alias != alias:
                raise Conflict(f"{net.path} holds a bridge {net.bridge} that is not this network's")
        else:
            nl.create_bridge(net.bridge, cfg.mtu, mac=random_mac(), alias=alias, up=False)
        for gw in cfg.gateways:
            nl.add_address(net.bridge, gw, exist_ok=True)
        nl.set_link_up(net.bridge)
        if not self._vxlan_ok(net):
            nl.delete_link(net.vxlan)
            self._delete_host_vxlan(net.vxlan, net.id)
            # Created in the host namespace so its UDP socket lives there (on the
            # underlay), then moved next to the bridge.
            self.host.create_vxlan(
                net.vxlan,
                cfg.vni,
                local=self.advertise_addr,
                port=self.vxlan_port,
                mtu=cfg.mtu,
                learning=False,
                proxy=True,
                alias=alias,
            )
            try:
                self.host.move_link_to_netns(net.vxlan, net.path)
            except BaseException:
                self._undo(lambda: self.host.delete_link(net.vxlan))
                raise
        nl.set_master(net.vxlan, net.bridge)
        nl.set_link_up(net.vxlan)

    def _vxlan_ok(self, net: LocalNetwork) -> bool:
        """Our VXLAN device is in the namespace with the right VNI, port and VTEP."""
        try:
            if net.nl.link(net.vxlan).alias != naming.network_alias(net.id):
                return False
            info = net.nl.vxlan_info(net.vxlan)
        except (NotFound, InvalidParameter):
            return False
        return (info.vni, info.port, info.local) == (net.config.vni, self.vxlan_port, self.advertise_addr)

    def _delete_host_vxlan(self, name: str, network_id: str) -> None:
        """A VXLAN device of ours still in the host namespace (a crash between create
        and move). Anything else with that name is left alone."""
        try:
            if self.host.link(name).alias == naming.network_alias(network_id):
                self.host.delete_link(name)
        except NotFound:
            pass

    @staticmethod
    def _undo(step: Callable[[], object]) -> None:
        try:
            step()
        except CNMError as exc:
            log.warning("overlay rollback step failed: %s", exc)  # the original error matters more

    def delete_network(self, network_id: str) -> None:
        """Delete the VXLAN device (its socket closes at once; the namespace itself may
        die later), then the namespace with the bridge and any endpoint veths.
        Idempotent; finds the namespace by name after a restart. Peers learnt for the
        network are kept: they stay valid if the network is created here again."""
        errors: list[str] = []
        with self._lock:
            net = self._networks.pop(network_id, None)
            targets = (
                [(net.path, net.vxlan, net.nl)]
                if net
                else [(path, naming.vxlan_name(vni, network_id), None) for path, vni in self._find_netns(network_id)]
            )
            for path, vx, nl in targets:
                try:
                    if nl is None and self._ns.exists(path):
                        nl = self._factory(path)
                    if nl is not None:
                        try:
                            if nl.link_exists(vx) and nl.link(vx).alias == naming.network_alias(network_id):
                                nl.delete_link(vx)
                        finally:
                            nl.close()
                    self._delete_host_vxlan(vx, network_id)
                    self._ns.delete(path)
                except CNMError as exc:
                    errors.append(str(exc))
            try:
                self._sync_filter()
            except CNMError as exc:
                errors.append(str(exc))
        if errors:
            raise InternalError(f"overlay network {network_id[:12]} removed with errors: " + "; ".join(errors))

    def _find_netns(self, network_id: str) -> list[tuple[str, int]]:
        try:
            names = os.listdir(naming.netns_dir(self.run_dir))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            parsed = naming.network_of_netns(name)
            if parsed and parsed[1] == network_id[:12]:
                out.append((os.path.join(naming.netns_dir(self.run_dir), name), parsed[0]))
        return out

    # -- the VXLAN source filter -----------------------------------------------------------

    def _sync_filter(self, extra: bool = False) -> None:
        """Filter up while any overlay network exists here (or one is being built),
        down otherwise: without a VXLAN device the port is not ours to police."""
        if self._networks or extra:
            self._filter.apply(self.filter_state())
        else:
            self._filter.clear()  # also a table left by an earlier run

    # -- endpoints --------------------------------------------------------------------------

    def create_endpoint(
        self, network_id: str, endpoint_id: str, iface: EndpointInterface, options: Mapping[str, str]
    ) -> EndpointInterface:
        with self._lock:
            net = self._network(network_id)
            if endpoint_id in net.endpoints:
                raise Conflict(f"endpoint {endpoint_id[:12]} already exists in network {network_id[:12]}")
            mac = (
                iface.mac
                or options.get(MAC_OPTION)
                or (mac_from_ipv4(iface.address) if iface.address else random_mac())
            )
            br_end, c_end = naming.bridge_end(endpoint_id), naming.container_end(endpoint_id)
            self.host.create_veth(br_end, c_end, net.config.mtu, peer_mac=mac, alias=naming.endpoint_alias(endpoint_id))
            try:
                self.host.move_link_to_netns(br_end, net.path)
                net.nl.set_master(br_end, net.bridge)
                net.nl.set_link_up(br_end)
            except BaseException:
                self._undo(lambda: self.host.delete_link(br_end))
                self._undo(lambda: net.nl.delete_link(br_end))
                raise
            net.endpoints[endpoint_id] = LocalEndpoint(endpoint_id, mac, iface.address, iface.address_v6)
            return replace(iface, mac=mac)

    def _owns_bridge_end(self, net: LocalNetwork, endpoint_id: str) -> bool:
        try:
            return net.nl.link(naming.bridge_end(endpoint_id)).alias == naming.endpoint_alias(endpoint_id)
        except NotFound:
            return False

    def restore_endpoint(
        self, network_id: str, endpoint_id: str, iface: EndpointInterface, options: Mapping[str, object]
    ) -> None:
        """Re-learn an endpoint whose veth survived (found by its mark). Idempotent."""
        with self._lock:
            net = self._network(network_id)
            if not self._owns_bridge_end(net, endpoint_id):
                raise NotFound(
                    f"veth {naming.bridge_end(endpoint_id)} of endpoint {endpoint_id[:12]} "
                    f"is gone from overlay namespace {net.path}"
                )
            net.endpoints[endpoint_id] = LocalEndpoint(endpoint_id, iface.mac or "", iface.address, iface.address_v6)

    def delete_endpoint(self, network_id: str, endpoint_id: str) -> None:
        """Delete the veth (both ends go; wherever the container end is). Idempotent."""
        with self._lock:
            net = self._networks.get(network_id)
            if net is None:
                return  # the namespace went with the network, and the veths in it
            if self._owns_bridge_end(net, endpoint_id):
                net.nl.delete_link(naming.bridge_end(endpoint_id))
            else:
                # Crash between create and move: the pair may still be in the host.
                try:
                    if self.host.link(naming.bridge_end(endpoint_id)).alias == naming.endpoint_alias(endpoint_id):
                        self.host.delete_link(naming.bridge_end(endpoint_id))
                except NotFound:
                    pass
            net.endpoints.pop(endpoint_id, None)

    def endpoint_info(self, network_id: str, endpoint_id: str) -> dict:
        with self._lock:
            net = self._networks.get(network_id)
            ep = net.endpoints.get(endpoint_id) if net else None
            if net is None or ep is None:
                return {}
            return {MAC_OPTION: ep.mac, "vtep": self.advertise_addr, "vni": net.config.vni}

    def join(self, network_id: str, endpoint_id: str, sandbox_key: str, options: Mapping[str, str]) -> JoinResult:
        """The core moves the container end into the sandbox as eth<N> and addresses
        it. No gateway: traffic leaving the host goes through the gateway-bridge
        endpoint the core adds (capability gateway_bridge)."""
        with self._lock:
            self._network(network_id)
            c_end = naming.container_end(endpoint_id)
            if not self.host.link_exists(c_end):
                raise NotFound(
                    f"veth {c_end} of endpoint {endpoint_id[:12]} is missing from the host "
                    "(already joined, or deleted); remove and recreate the endpoint"
                )
            return JoinResult(src_ifname=c_end, dst_prefix="eth", gateway=None, gateway_v6=None)

    def leave(self, network_id: str, endpoint_id: str) -> None:
        """Nothing to undo on the host."""

    def program_external_connectivity(self, network_id: str, endpoint_id: str, options: Mapping[str, object]) -> None:
        """Nothing: published ports belong to the gateway-bridge endpoint."""

    def revoke_external_connectivity(self, network_id: str, endpoint_id: str) -> None:
        """Nothing (see program_external_connectivity)."""

    # -- discovery: peers and nodes ---------------------------------------------------------------

    def reconcile(self) -> None:
        """At start-up, once networks are restored: the VXLAN filter as the networks
        here need it (cleared when a crash left it up with none left)."""
        with self._lock:
            self._sync_filter()


def register(
    registry: DriverRegistry,
    *,
    advertise_addr: str,
    run_dir: str,
    netlink_factory: Callable[[str | None], OverlayNetlink] | None = None,
    underlay_mtu: Callable[[], int] | int | None = None,
    firewall: VxlanFilter | None = None,
    vxlan_port: int = DEFAULT_VXLAN_PORT,
) -> OverlayDriver:
    """Register an OverlayDriver working in the daemon's own namespace (by default):
    VxlanNetlink handles, the nftables VXLAN filter, the underlay MTU read from the
    interface holding advertise_addr."""
    if netlink_factory is None:
        netlink_factory = VxlanNetlink
    if firewall is None:
        firewall = NftVxlanFilter()
    driver = OverlayDriver(
        netlink_factory,
        run_dir=run_dir,
        advertise_addr=advertise_addr,
        underlay_mtu=underlay_mtu,
        firewall=firewall,
        vxlan_port=vxlan_port,
    )
    registry.register(driver)
    return driver
