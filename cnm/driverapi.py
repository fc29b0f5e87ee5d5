"""The network-driver contract (CNM verbs), and the registry the core finds drivers in.

Drivers answer with data (frozen dataclasses); the core applies it. A driver never
reaches into core objects. Built-in and remote drivers implement the same Protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from cnm.errors import InvalidParameter, NotFound

LOCAL = "local"
GLOBAL = "global"


@dataclass(frozen=True)
class Capability:
    data_scope: str = LOCAL  # where the network's state lives
    connectivity_scope: str = LOCAL  # whether its endpoints reach other hosts
    gateway_bridge: bool = False  # endpoints need a local gateway-bridge endpoint to leave the host
    names_interfaces: bool = False  # join creates the sandbox's end there, named as labels.ENDPOINT_IFNAME asks
    deferred_teardown: bool = False  # implements cnm.retiring.DeferredTeardown


@dataclass(frozen=True)
class IPAMData:
    """One pool of a network, as the driver sees it."""

    pool: str  # CIDR of the subnet
    gateway: str | None = None  # address with prefix, e.g. "172.18.0.1/16"
    aux_addresses: Mapping[str, str] = field(default_factory=dict)  # name -> address with prefix
    address_space: str = ""


@dataclass(frozen=True)
class NetworkSpec:
    id: str
    name: str
    options: Mapping[str, str]  # the -o KEY=VALUE options, validated at the edge
    ipv4: tuple[IPAMData, ...] = ()
    ipv6: tuple[IPAMData, ...] = ()
    internal: bool = False
    enable_ipv6: bool = False


@dataclass(frozen=True)
class EndpointInterface:
    """Addresses of an endpoint. The core fills them from IPAM; a driver may add a MAC."""

    address: str | None = None  # "172.18.0.2/16"
    address_v6: str | None = None
    mac: str | None = None


@dataclass(frozen=True)
class StaticRoute:
    destination: str  # CIDR
    route_type: int = 0  # 0 = via next hop, 1 = connected (on-link)
    next_hop: str | None = None


@dataclass(frozen=True)
class JoinResult:
    """What the core must do to plug the endpoint into the sandbox."""

    src_ifname: str  # interface in the host namespace to move into the sandbox
    dst_prefix: str = "eth"  # the core names it dst_prefix + index
    gateway: str | None = None
    gateway_v6: str | None = None
    static_routes: tuple[StaticRoute, ...] = ()
    disable_gateway_service: bool = False
    in_sandbox: bool = False  # the driver made src_ifname inside the sandbox already

    def gives_a_way_out(self) -> bool:
        """A gateway or a static default route: the container can leave the host."""
        return bool(self.gateway or self.gateway_v6) or any(
            r.destination in ("0.0.0.0/0", "::/0") for r in self.static_routes
        )


class Driver(Protocol):
    """A network driver. All methods may raise CNMError subclasses."""

    name: str

    def capabilities(self) -> Capability:
        """Scope and needs of this driver. Pure, cheap, idempotent."""

    def validate_options(self, options: Mapping[str, str], internal: bool) -> dict[str, str]:
        """Check the -o options before anything is allocated; return them normalised.
        Raises InvalidParameter for an unknown or malformed option. Pure."""

    def create_network(self, spec: NetworkSpec) -> None:
        """Create the network's kernel objects. On failure, leave nothing behind."""

    def delete_network(self, network_id: str) -> None:
        """Remove them. Idempotent: an already-missing network is success."""

    def restore_network(self, spec: NetworkSpec) -> None:
        """After a daemon restart: make sure the network's kernel objects exist. Idempotent."""

    def create_endpoint(
        self, network_id: str, endpoint_id: str, iface: EndpointInterface, options: Mapping[str, str]
    ) -> EndpointInterface:
        """Create the endpoint's kernel objects; return the interface with any field
        the driver chose (e.g. MAC). On failure, leave nothing behind."""

    def delete_endpoint(self, network_id: str, endpoint_id: str) -> None:
        """Idempotent."""

    def restore_endpoint(
        self, network_id: str, endpoint_id: str, iface: EndpointInterface, options: Mapping[str, object]
    ) -> None:
        """After a daemon restart: re-learn an endpoint whose kernel objects survived
        (options may carry its port bindings, as for program_external_connectivity).
        Idempotent."""

    def endpoint_info(self, network_id: str, endpoint_id: str) -> dict:
        """Driver-specific operational data for inspect. Pure read."""

    def join(self, network_id: str, endpoint_id: str, sandbox_key: str, options: Mapping[str, str]) -> JoinResult:
        """Prepare the endpoint to enter the sandbox at path `sandbox_key`."""

    def leave(self, network_id: str, endpoint_id: str) -> None:
        """Undo join. Idempotent."""

    def program_external_connectivity(self, network_id: str, endpoint_id: str, options: Mapping[str, object]) -> None:
        """Publish ports etc. for the endpoint (options carry port bindings)."""

    def revoke_external_connectivity(self, network_id: str, endpoint_id: str) -> None:
        """Idempotent."""

    def discover_new(self, kind: str, data: Mapping[str, object]) -> None:
        """Learn of a new node or peer (multi-host). Idempotent."""

    def discover_delete(self, kind: str, data: Mapping[str, object]) -> None:
        """Forget it. Idempotent."""


class DriverRegistry:
    """Name -> driver. Filled once by the composition root. `fallback` (optional) is
    asked for a name that is not registered (e.g. a remote plugin found on disk); what
    it returns is registered, None means "no such driver"."""

    def __init__(self, fallback: Callable[[str], Driver | None] | None = None) -> None:
        self._drivers: dict[str, Driver] = {}
        self._fallback = fallback

    def register(self, driver: Driver) -> None:
        if driver.name in self._drivers:
            raise InvalidParameter(f"driver {driver.name} is already registered")
        self._drivers[driver.name] = driver

    def get(self, name: str) -> Driver:
        try:
            return self._drivers[name]
        except KeyError:
            found = self._fallback(name) if self._fallback is not None else None
            if found is not None:
                return self._drivers.setdefault(name, found)
            raise NotFound(
                f"network driver {name!r} not found; available: {', '.join(sorted(self._drivers))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._drivers)
