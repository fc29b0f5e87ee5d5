"""The bridge driver: a Linux bridge per network, a veth pair per endpoint.

All kernel work goes through one OS-layer handle (`cnm.osl.netlink.Netlink`, or
anything with the same methods — see `HostNetlink`) for the host namespace, opened
lazily from `netlink_factory` and kept. Kernel objects carry an alias naming the
network/endpoint they belong to, so the driver refuses to adopt or delete an
interface it did not create, and finds its own again after a restart.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace

from cnm import labels
from cnm.driverapi import LOCAL, Capability, EndpointInterface, IPAMData, JoinResult, NetworkSpec
from cnm.errors import CNMError, Conflict, InvalidParameter, NotFound
from cnm.osl.netlink import Netlink
from cnm.osl.sysctl import conf_key  # a pure key helper; no kernel access
from drivers.bridge import config as bconfig
from drivers.bridge import naming
from drivers.bridge.external import BridgeExternal
from drivers.bridge.graveyard import Graveyard
from drivers.bridge.hooks import BridgeFirewall, BridgeNetworkInfo, NoFirewall
from drivers.bridge.kernel import BridgeEndpoint, BridgeNetwork, HostNetlink

NAME = "bridge"
# Linux numbers bridge ports 1..1023 (BR_MAX_PORTS is 1024 and port 0 is reserved).
MAX_BRIDGE_PORTS = 1023
MAC_OPTION = labels.ENDPOINT_MAC
PORTMAP_OPTION = labels.PORTMAP
IFNAME_OPTION = labels.ENDPOINT_IFNAME


def _single(pools: tuple[IPAMData, ...], family: str) -> IPAMData | None:
    if len(pools) > 1:
        raise InvalidParameter(
            f"the bridge driver supports one {family} subnet per network, "
            f"got {len(pools)}; create one network per subnet"
        )
    return pools[0] if pools else None


def _network_info(spec: NetworkSpec) -> BridgeNetworkInfo:
    """Pure: spec -> what the network is. Raises InvalidParameter."""
    cfg = bconfig.parse(spec.options, spec.id, internal=spec.internal)
    v4 = _single(spec.ipv4, "IPv4")
    v6 = _single(spec.ipv6, "IPv6") if spec.enable_ipv6 or spec.ipv6 else None
    return BridgeNetworkInfo(
        network_id=spec.id,
        bridge_name=cfg.bridge_name,
        config=cfg,
        subnets_v4=(v4.pool,) if v4 else (),
        subnets_v6=(v6.pool,) if v6 else (),
        gateway_v4=v4.gateway if v4 else None,
        gateway_v6=v6.gateway if v6 else None,
    )


class BridgeDriver(BridgeExternal):
    """cnm.driverapi.Driver for Linux bridges. Thread-safe (one lock per driver)."""

    name = NAME

    def __init__(
        self,
        netlink_factory: Callable[[], HostNetlink],
        *,
        firewall: BridgeFirewall | None = None,
        peer_in_sandbox: bool = True,
    ) -> None:
        """peer_in_sandbox=False leaves the container end in the host namespace for the
        caller to move (Docker's protocol: the engine moves InterfaceName.SrcName)."""
        self._factory = netlink_factory
        self._peer_in_sandbox = peer_in_sandbox
        self._nl: HostNetlink | None = None
        self._firewall: BridgeFirewall = firewall or NoFirewall()
        self._networks: dict[str, BridgeNetwork] = {}
        self._lock = threading.RLock()
        self.graveyard = Graveyard(lambda: self.nl.sibling())
        self._collected = False

    @property
    def nl(self) -> HostNetlink:
        if self._nl is None:
            self._nl = self._factory()
        return self._nl

    def close(self) -> None:
        """Close the handle the factory gave (kernel objects stay). A composition root
        that shares its own handle with the driver closes that itself instead."""
        self.graveyard.close()
        if self._nl is not None and hasattr(self._nl, "close"):
            self._nl.close()
        self._nl = None

    # -- networks -------------------------------------------------------------------

    def capabilities(self) -> Capability:
        return Capability(
            data_scope=LOCAL, connectivity_scope=LOCAL, names_interfaces=self._peer_in_sandbox, deferred_teardown=True
        )

    def validate_options(self, options: Mapping[str, str], internal: bool) -> dict[str, str]:
        return bconfig.normalize(options)

    def network_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._networks)

    def bridge_name(self, network_id: str) -> str:
        return self._network(network_id).bridge

    def _network(self, network_id: str) -> BridgeNetwork:
        try:
            return self._networks[network_id]
        except KeyError:
            raise NotFound(f"network {network_id[:12]} is not known to the bridge driver") from None

    def _check_name_free(self, info: BridgeNetworkInfo) -> None:
        for other in self._networks.values():
            if other.bridge == info.bridge_name and other.info.network_id != info.network_id:
                raise Conflict(
                    f"bridge {info.bridge_name} is already used by network "
                    f"{other.info.network_id[:12]}; choose another "
                    f"{labels.BRIDGE_NAME}"
                )

    def _owner_of(self, ifname: str) -> str | None:
        """Our network id from the link's alias; None if not ours; NotFound if absent."""
        alias = self.nl.link(ifname).alias or ""
        return alias[len(naming.ALIAS_NETWORK) :] if alias.startswith(naming.ALIAS_NETWORK) else None

    def create_network(self, spec: NetworkSpec) -> None:
        info = _network_info(spec)
        with self._lock:
            if spec.id in self._networks:
                raise Conflict(f"network {spec.id[:12]} already exists in the bridge driver")
            self._check_name_free(info)
            if self.nl.link_exists(info.bridge_name):
                owner = self._owner_of(info.bridge_name)
                if owner == spec.id:  # ours, left by a crash before we recorded it
                    self._adopt(info, spec.enable_ipv6)
                    return
                raise Conflict(
                    f"a network interface named {info.bridge_name} already exists"
                    + (f" (bridge of network {owner[:12]})" if owner else " and was not created by cnm")
                    + f"; choose another {labels.BRIDGE_NAME}"
                )
            self.nl.create_bridge(
                info.bridge_name,
                info.config.mtu,
                mac=naming.random_mac(),
                alias=naming.network_alias(spec.id),
                up=False,
            )
            try:
                self._configure_bridge(info, spec.enable_ipv6)
                self._firewall.network_created(info)
            except BaseException:
                self._undo(lambda: self.nl.delete_link(info.bridge_name))
                raise
            self._networks[spec.id] = BridgeNetwork(info)

    def _configure_bridge(self, info: BridgeNetworkInfo, enable_ipv6: bool) -> None:
        """Addresses, IPv6 on/off, up, forwarding. Idempotent (used by restore too)."""
        br = info.bridge_name
        try:
            # Without IPv6 the bridge would still get a link-local address and send
            # router/neighbour solicitations into every container.
            self.nl.sysctl_write(conf_key(6, br, "disable_ipv6"), 0 if enable_ipv6 else 1)
            if enable_ipv6:
                # The gateway address is ours by IPAM: duplicate detection would only
                # keep it unusable ("tentative") for the first second.
                self.nl.sysctl_write(conf_key(6, br, "accept_dad"), 0)
        except NotFound:
            pass  # kernel without IPv6
        for gw in (info.gateway_v4, info.gateway_v6):
            if gw:
                self.nl.add_address(br, gw, exist_ok=True)
        self.nl.set_link_up(br)
        if not info.config.internal:
            if info.subnets_v4:
                self.nl.sysctl_write("net.ipv4.ip_forward", 1)
            if info.subnets_v6:
                self.nl.sysctl_write("net.ipv6.conf.all.forwarding", 1)

    @staticmethod
    def _undo(step: Callable[[], object]) -> None:
        try:
            step()
        except CNMError:
            pass  # best effort: the original error is the one to report

    def restore_network(self, spec: NetworkSpec) -> None:
        info = _network_info(spec)
        with self._lock:
            self._check_name_free(info)
            if self.nl.link_exists(info.bridge_name):
                owner = self._owner_of(info.bridge_name)
                if owner != spec.id:
                    raise Conflict(
                        f"cannot restore network {spec.name}: interface {info.bridge_name} "
                        + (f"belongs to network {owner[:12]}" if owner else "was not created by cnm")
                    )
                self._adopt(info, spec.enable_ipv6)
                return
            self._networks.pop(spec.id, None)
            self.create_network(spec)

    def _adopt(self, info: BridgeNetworkInfo, enable_ipv6: bool) -> None:
        """Take over an existing bridge carrying this network's mark."""
        self._configure_bridge(info, enable_ipv6)
        self._firewall.network_created(info)
        known = self._networks.get(info.network_id)
        self._networks[info.network_id] = BridgeNetwork(info, known.endpoints if known else {})

    def delete_network(self, network_id: str) -> None:
        with self._lock:
            net = self._networks.get(network_id)
            bridge = net.bridge if net else self._find_bridge(network_id)
            if bridge and self.nl.link_exists(bridge):
                try:
                    ours = self._owner_of(bridge) == network_id
                except NotFound:
                    ours = False
                if ours:
                    self.nl.delete_link(bridge)
            self._firewall.network_deleted(network_id)
            self._networks.pop(network_id, None)

    def _find_bridge(self, network_id: str) -> str | None:
        """After a restart without restore: find our bridge by its alias."""
        alias = naming.network_alias(network_id)
        for link in self.nl.links():
            if link.alias == alias:
                return link.name
        return None

    # -- endpoints ------------------------------------------------------------------------

    def create_endpoint(
        self, network_id: str, endpoint_id: str, iface: EndpointInterface, options: Mapping[str, str]
    ) -> EndpointInterface:
        """Records the endpoint and checks the bridge has room; the veth pair itself is
        made at join, with its container end born inside the sandbox (no move)."""
        with self._lock:
            net = self._network(network_id)
            if endpoint_id in net.endpoints:
                raise Conflict(f"endpoint {endpoint_id[:12]} already exists in network {network_id[:12]}")
            mac = (
                iface.mac
                or options.get(MAC_OPTION)
                or (naming.mac_from_ipv4(iface.address) if iface.address else naming.random_mac())
            )
            self._check_room(net)
            net.endpoints[endpoint_id] = BridgeEndpoint(
                endpoint_id,
                naming.host_ifname(endpoint_id),
                naming.peer_ifname(endpoint_id),
                mac,
                iface.address,
                iface.address_v6,
            )
            return replace(iface, mac=mac)

    def _check_room(self, net: BridgeNetwork) -> None:
        # Our own count decides: counting the kernel's ports means a dump of every port
        # of the bridge (~0.1 ms a port, each join near the limit). The kernel has the
        # last word: a bridge full of someone else's ports refuses the veth (EXFULL),
        # which join turns into the same refusal (_full).
        if len(net.endpoints) + len(net.retiring) < MAX_BRIDGE_PORTS:
            return
        if net.retiring:
            # Retired veths still hold ports: delete them now rather than refuse (their
            # owners hear of it from the graveyard, which finds them gone).
            for eid in list(net.retiring):
                self._delete_veth(eid)
        self._full(net)

    def _full(self, net: BridgeNetwork) -> None:
        """Conflict, naming the bridge, if the kernel says it has no port left."""
        ports = self.nl.bridge_port_count(net.bridge)
        if ports >= MAX_BRIDGE_PORTS:
            raise Conflict(f"bridge {net.bridge} has {ports} ports, the Linux maximum; create another network")

    def restore_endpoint(
        self, network_id: str, endpoint_id: str, iface: EndpointInterface, options: Mapping[str, object]
    ) -> None:
        """After a restart: re-learn an endpoint whose veth survived (found by its mark)
        and re-publish its ports. Idempotent."""
        with self._lock:
            net = self._network(network_id)
            host = naming.host_ifname(endpoint_id)
            try:
                ours = self.nl.link(host).alias == naming.endpoint_alias(endpoint_id)
            except NotFound:
                ours = False
            if not ours:
                raise NotFound(f"veth {host} of endpoint {endpoint_id[:12]} is gone from the host")
            # The bridge may have been re-created by restore_network: attach again.
            self.nl.set_master(host, net.bridge)
            self.nl.set_link_up(host)
            net.endpoints[endpoint_id] = BridgeEndpoint(
                endpoint_id, host, naming.peer_ifname(endpoint_id), iface.mac or "", iface.address, iface.address_v6
            )
        if options.get(PORTMAP_OPTION):
            self.program_external_connectivity(network_id, endpoint_id, options)

    def delete_endpoint(self, network_id: str, endpoint_id: str) -> None:
        with self._lock:
            self._delete_veth(endpoint_id)
            net = self._networks.get(network_id)
            if net:
                net.endpoints.pop(endpoint_id, None)

    def endpoint_info(self, network_id: str, endpoint_id: str) -> dict:
        with self._lock:
            net = self._networks.get(network_id)
            ep = net.endpoints.get(endpoint_id) if net else None
            if ep is None:
                return {}
            info: dict = {MAC_OPTION: ep.mac}
            if ep.port_bindings:
                info[PORTMAP_OPTION] = [dict(b) for b in ep.port_bindings]
            return info

    def join(self, network_id: str, endpoint_id: str, sandbox_key: str, options: Mapping[str, str]) -> JoinResult:
        """Makes the veth pair: host end on the bridge and up, container end created
        inside the sandbox — already with the name the core asks for in
        com.docker.network.endpoint.ifname, else a temporary one the core renames
        eth<N> — then the core sets addresses and, unless the network is internal,
        the default route via the bridge's gateway (internal networks keep the gateway
        address on the bridge but give no route out)."""
        with self._lock:
            net = self._network(network_id)
            ep = net.endpoints.get(endpoint_id)
            if ep is None:
                raise NotFound(f"endpoint {endpoint_id[:12]} is not known to the bridge driver")
            if self.nl.link_exists(ep.host_ifname):
                raise Conflict(f"endpoint {endpoint_id[:12]} is already joined to a sandbox")
            self._check_room(net)
            in_sandbox = self._peer_in_sandbox
            peer = (options.get(IFNAME_OPTION) if in_sandbox else None) or ep.peer_ifname
            try:
                self.nl.create_veth(
                    ep.host_ifname,
                    peer,
                    net.config.mtu,
                    peer_mac=ep.mac,
                    alias=naming.endpoint_alias(endpoint_id),
                    peer_netns=sandbox_key if in_sandbox else None,
                    master=net.bridge,
                    up=True,
                    # A bridge port needs no IPv6 address of its own, and each one's
                    # routes make every link going down on the host walk a longer IPv6
                    # table (rt6_disable_ip): O(containers) per removal at thousands.
                    ipv6_addresses=False,
                )
            except Conflict:
                self._full(net)  # EXFULL names no bridge: say which, and why
                raise
            internal = net.config.internal
            return JoinResult(
                src_ifname=peer,
                dst_prefix="eth",
                in_sandbox=in_sandbox,
                gateway=None if internal else naming.plain_address(net.info.gateway_v4),
                gateway_v6=None if internal else naming.plain_address(net.info.gateway_v6),
            )

    def leave(self, network_id: str, endpoint_id: str) -> None:
        """Deletes the veth pair (the sandbox end goes with it). Idempotent."""
        with self._lock:
            self._delete_veth(endpoint_id)

    def _delete_veth(self, endpoint_id: str) -> None:
        host = naming.host_ifname(endpoint_id)
        # Only delete what carries our mark: the name alone could be someone's.
        try:
            ours = self.nl.link(host).alias == naming.endpoint_alias(endpoint_id)
        except NotFound:
            ours = False
        if ours:
            self.nl.delete_link(host)  # the peer goes with it, wherever it is

    def discover_new(self, kind: str, data: Mapping[str, object]) -> None:
        """Single-host driver: nothing to learn."""

    def discover_delete(self, kind: str, data: Mapping[str, object]) -> None:
        """Single-host driver: nothing to forget."""


def register(
    registry, *, netlink_factory: Callable[[], HostNetlink] | None = None, firewall: BridgeFirewall | None = None
) -> BridgeDriver:
    """Register a BridgeDriver working in the daemon's own namespace (by default)."""
    if netlink_factory is None:
        netlink_factory = Netlink
    driver = BridgeDriver(netlink_factory, firewall=firewall)
    delay = os.environ.get("CNM_GRAVEYARD_DELAY")  # tests of a crash with deletions pending
    if delay:
        driver.graveyard.delay = float(delay)
    registry.register(driver)
    return driver
