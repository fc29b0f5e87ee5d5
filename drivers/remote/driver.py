"""RemoteDriver: cnm.driverapi.Driver implemented by calls to a NetworkDriver plugin.

Request and answer fields follow Docker's protocol exactly (see
specs/plugin-protocol.md). Nothing is contacted until the first call that needs the
plugin: constructing the driver, restore_network and restore_endpoint make no call, so a
dead plugin never stalls daemon start-up; it fails the operations that use it, each
with an error naming the plugin.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from cnm import labels
from cnm.driverapi import GLOBAL, LOCAL, Capability, EndpointInterface, IPAMData, JoinResult, NetworkSpec, StaticRoute
from cnm.errors import CNMError, InternalError
from cnm.plugins import NETWORK_DRIVER
from cnm.plugins.client import DEFAULT_TIMEOUT, Fields, PluginClient
from cnm.plugins.discovery import Discovery, is_valid_name

log = logging.getLogger(__name__)

GENERIC = labels.GENERIC
ENABLE_IPV6 = labels.ENABLE_IPV6
INTERNAL = labels.INTERNAL
NODE_DISCOVERY = 1  # Docker's DiscoveryType for "a node joined/left"
_DISCOVERY_TYPES = {"node": NODE_DISCOVERY, "NodeDiscovery": NODE_DISCOVERY}
_IFACE_FIELDS = (("Address", "address"), ("AddressIPv6", "address_v6"), ("MacAddress", "mac"))


def ipam_data(d: IPAMData) -> dict[str, Any]:
    """Docker's IPAMData JSON: Gateway only when there is one (Go omits a nil gateway)."""
    out: dict[str, Any] = {"AddressSpace": d.address_space, "Pool": d.pool}
    if d.gateway:
        out["Gateway"] = d.gateway
    out["AuxAddresses"] = dict(d.aux_addresses)
    return out


def needs_gateway_bridge(result: JoinResult) -> bool:
    """Docker's rule: a join that gives no gateway and no default route leaves the
    container without a way out, so the core adds a gateway-bridge endpoint."""
    return not result.gives_a_way_out() and not result.disable_gateway_service


class RemoteDriver:
    """cnm.driverapi.Driver for one plugin. Thread-safe (the client is)."""

    def __init__(self, name: str, client: PluginClient) -> None:
        self.name = name
        self.client = client
        self._caps: Capability | None = None
        self._lock = threading.Lock()

    def _call(self, method: str, body: Any = None, **kw: Any) -> dict:
        self.client.require(NETWORK_DRIVER)
        return self.client.call(f"NetworkDriver.{method}", body, **kw)

    # -- networks -------------------------------------------------------------------

    def capabilities(self) -> Capability:
        """GetCapabilities, asked once and cached. An unknown scope refuses the driver."""
        with self._lock:
            if self._caps is None:
                f = Fields(self.name, "GetCapabilities", self._call("GetCapabilities"))
                scope = f.str("Scope", required=True)
                conn = f.str("ConnectivityScope") or scope
                for key, value in (("Scope", scope), ("ConnectivityScope", conn)):
                    if value not in (LOCAL, GLOBAL):
                        raise InternalError(
                            f"network plugin {self.name}: GetCapabilities field {key} "
                            f'must be "local" or "global", got {value!r}'
                        )
                self._caps = Capability(data_scope=scope, connectivity_scope=conn)
            return self._caps

    def validate_options(self, options: Mapping[str, str], internal: bool) -> dict[str, str]:
        """Passed through: the plugin validates them at CreateNetwork."""
        return dict(options)

    def create_network(self, spec: NetworkSpec) -> None:
        self._call(
            "CreateNetwork",
            {
                "NetworkID": spec.id,
                "Options": {GENERIC: dict(spec.options), ENABLE_IPV6: spec.enable_ipv6, INTERNAL: spec.internal},
                "IPv4Data": [ipam_data(d) for d in spec.ipv4],
                "IPv6Data": [ipam_data(d) for d in spec.ipv6],
            },
        )

    def delete_network(self, network_id: str) -> None:
        self._call("DeleteNetwork", {"NetworkID": network_id})

    def restore_network(self, spec: NetworkSpec) -> None:
        """No call: a plugin keeps its own state across our restarts (as with Docker),
        and a dead plugin must not stall start-up."""

    def allocate_network(self, spec: NetworkSpec, options: Mapping[str, str] | None = None) -> dict[str, str]:
        """Global scope, on the host that creates the network (Docker: swarm managers).
        A plugin without it (404) answers no options."""
        doc = self._call(
            "AllocateNetwork",
            {
                "NetworkID": spec.id,
                "Options": dict(options or spec.options),
                "IPv4Data": [ipam_data(d) for d in spec.ipv4],
                "IPv6Data": [ipam_data(d) for d in spec.ipv6],
            },
            missing_ok=True,
        )
        return Fields(self.name, "AllocateNetwork", doc).str_map("Options")

    def free_network(self, network_id: str) -> None:
        self._call("FreeNetwork", {"NetworkID": network_id}, missing_ok=True)

    # -- endpoints ------------------------------------------------------------------------

    def create_endpoint(
        self, network_id: str, endpoint_id: str, iface: EndpointInterface, options: Mapping[str, str]
    ) -> EndpointInterface:
        """CreateEndpoint. The plugin may fill only fields we left empty; setting one we
        set is an error (as in Docker), and the endpoint is deleted again."""
        doc = self._call(
            "CreateEndpoint",
            {
                "NetworkID": network_id,
                "EndpointID": endpoint_id,
                "Interface": {
                    "Address": iface.address or "",
                    "AddressIPv6": iface.address_v6 or "",
                    "MacAddress": iface.mac or "",
                },
                "Options": dict(options),
            },
        )
        try:
            return self._merge_interface(iface, doc)
        except CNMError:
            try:
                self.delete_endpoint(network_id, endpoint_id)
            except CNMError as exc:
                log.warning("rollback of endpoint %s on plugin %s: %s", endpoint_id[:12], self.name, exc)
            raise

    def _merge_interface(self, iface: EndpointInterface, doc: dict) -> EndpointInterface:
        f = Fields(self.name, "CreateEndpoint", doc).obj("Interface")
        if f is None:
            return iface
        changes: dict[str, str] = {}
        for wire, attr in _IFACE_FIELDS:
            value = f.cidr(wire) if wire != "MacAddress" else _mac(self.name, f.str(wire))
            if not value:
                continue
            if getattr(iface, attr):
                raise InternalError(
                    f"network plugin {self.name}: CreateEndpoint set Interface.{wire} to {value}, but it "
                    f"was already set to {getattr(iface, attr)} (a driver may only fill empty fields)"
                )
            changes[attr] = value
        return replace(iface, **changes)

    def delete_endpoint(self, network_id: str, endpoint_id: str) -> None:
        self._call("DeleteEndpoint", {"NetworkID": network_id, "EndpointID": endpoint_id})

    def restore_endpoint(
        self, network_id: str, endpoint_id: str, iface: EndpointInterface, options: Mapping[str, object]
    ) -> None:
        """No call: the protocol has no "restore", the plugin kept the endpoint."""

    def endpoint_info(self, network_id: str, endpoint_id: str) -> dict:
        doc = self._call("EndpointOperInfo", {"NetworkID": network_id, "EndpointID": endpoint_id})
        f = Fields(self.name, "EndpointOperInfo", doc)
        value = f.obj("Value")
        return dict(value.doc) if value is not None else {}

    # -- join / leave -------------------------------------------------------------------------

    def join(self, network_id: str, endpoint_id: str, sandbox_key: str, options: Mapping[str, str]) -> JoinResult:
        doc = self._call(
            "Join",
            {"NetworkID": network_id, "EndpointID": endpoint_id, "SandboxKey": sandbox_key, "Options": dict(options)},
        )
        return parse_join(self.name, doc)

    def leave(self, network_id: str, endpoint_id: str) -> None:
        self._call("Leave", {"NetworkID": network_id, "EndpointID": endpoint_id})

    def program_external_connectivity(self, network_id: str, endpoint_id: str, options: Mapping[str, object]) -> None:
        """A 404 means the plugin does not implement it: not an error."""
        self._call(
            "ProgramExternalConnectivity",
            {"NetworkID": network_id, "EndpointID": endpoint_id, "Options": dict(options)},
            missing_ok=True,
        )

    def revoke_external_connectivity(self, network_id: str, endpoint_id: str) -> None:
        self._call("RevokeExternalConnectivity", {"NetworkID": network_id, "EndpointID": endpoint_id}, missing_ok=True)

    def discover_new(self, kind: str, data: Mapping[str, object]) -> None:
        """Only node discovery is forwarded (DiscoveryType 1), as in Docker."""
        if kind in _DISCOVERY_TYPES:
            self._call("DiscoverNew", {"DiscoveryType": _DISCOVERY_TYPES[kind], "DiscoveryData": dict(data)})

    def discover_delete(self, kind: str, data: Mapping[str, object]) -> None:
        if kind in _DISCOVERY_TYPES:
            self._call("DiscoverDelete", {"DiscoveryType": _DISCOVERY_TYPES[kind], "DiscoveryData": dict(data)})


def _mac(plugin: str, value: str) -> str:
    if value:
        parts = value.split(":")
        if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts):
            raise InternalError(
                f"network plugin {plugin}: CreateEndpoint answer field "
                f"Interface.MacAddress must be a MAC address, got {value!r}"
            )
    return value.lower()


def parse_join(plugin: str, doc: Mapping[str, Any]) -> JoinResult:
    """Join's answer -> JoinResult. Pure. RouteType 0 = via NextHop, 1 = connected."""
    f = Fields(plugin, "Join", doc)
    names = f.obj("InterfaceName")
    src = names.str("SrcName") if names else ""
    prefix = (names.str("DstPrefix") if names else "") or "eth"
    routes = []
    for i, raw in enumerate(f.list("StaticRoutes")):
        if not isinstance(raw, dict):
            raise InternalError(f"network plugin {plugin}: Join answer field StaticRoutes[{i}] must be an object")
        r = Fields(plugin, "Join", raw, f"StaticRoutes[{i}].")
        dest = r.str("Destination", required=True)
        try:
            dest = str(ipaddress.ip_network(dest, strict=False))
        except ValueError:
            raise InternalError(
                f"network plugin {plugin}: Join answer field StaticRoutes[{i}].Destination must be a CIDR, got {dest!r}"
            ) from None
        kind = r.int("RouteType")
        if kind not in (0, 1):
            raise InternalError(
                f"network plugin {plugin}: Join answer field StaticRoutes[{i}].RouteType "
                f"must be 0 (next hop) or 1 (connected), got {kind}"
            )
        hop = r.ip("NextHop")
        if kind == 0 and not hop:
            raise InternalError(
                f"network plugin {plugin}: Join answer StaticRoutes[{i}] has RouteType 0 (next hop) but no NextHop"
            )
        routes.append(StaticRoute(dest, kind, hop if kind == 0 else None))
    return JoinResult(
        src_ifname=src,
        dst_prefix=prefix,
        gateway=f.ip("Gateway") or None,
        gateway_v6=f.ip("GatewayIPv6") or None,
        static_routes=tuple(routes),
        disable_gateway_service=f.bool("DisableGatewayService"),
    )


class _Resolver:
    def __init__(
        self, discovery: Discovery, make: Callable[[str, PluginClient], Any], timeout: float, activate_retry: float
    ) -> None:
        self.discovery, self.make = discovery, make
        self.timeout, self.activate_retry = timeout, activate_retry

    def __call__(self, name: str) -> Any:
        spec = self.discovery.find(name) if is_valid_name(name) else None
        if spec is None:
            return None
        return self.make(name, PluginClient(spec, timeout=self.timeout, activate_retry=self.activate_retry))


def resolver(
    discovery: Discovery, *, timeout: float = DEFAULT_TIMEOUT, activate_retry: float = 2.0
) -> Callable[[str], RemoteDriver | None]:
    """For DriverRegistry(fallback=...): a RemoteDriver for a plugin found by name, or
    None. Looks at files only; the plugin is contacted on the driver's first call."""
    return _Resolver(discovery, RemoteDriver, timeout, activate_retry)
