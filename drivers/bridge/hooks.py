"""The seam between the bridge driver and the firewall (cnm/firewall).

The driver builds bridges and veths; it does not write nftables rules. It tells a
`BridgeFirewall` what exists, in plain data, and the firewall renders its ruleset
from that (masquerade, ICC, isolation, internal, port DNAT). The composition root
(daemon start-up) passes a real one; tests and firewall-less setups use NoFirewall.
A hook that raises makes the driver roll back the operation it was part of.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from drivers.bridge.config import BridgeConfig


@dataclass(frozen=True)
class BridgeNetworkInfo:
    network_id: str
    bridge_name: str
    config: BridgeConfig
    subnets_v4: tuple[str, ...] = ()
    subnets_v6: tuple[str, ...] = ()
    gateway_v4: str | None = None  # the bridge's address, with the subnet's prefix (172.18.0.1/16)
    gateway_v6: str | None = None


@dataclass(frozen=True)
class PublishedEndpoint:
    network_id: str
    endpoint_id: str
    bridge_name: str
    address: str | None  # plain container IPv4 address
    address_v6: str | None
    host_binding_ipv4: str  # default host address for bindings without one
    port_bindings: tuple[Mapping[str, Any], ...]  # Docker's wire shape = field(default_factory=tuple)


class BridgeFirewall(Protocol):
    def network_created(self, info: BridgeNetworkInfo) -> None:
        """A bridge network exists (also called on restore). Idempotent."""

    def network_deleted(self, network_id: str) -> None:
        """Forget its rules. Idempotent."""

    def ports_published(self, endpoint: PublishedEndpoint) -> None:
        """Install the endpoint's port bindings (replacing any it had). Idempotent."""

    def ports_revoked(self, network_id: str, endpoint_id: str) -> None:
        """Remove them. Idempotent."""


class NoFirewall:
    """Does nothing: networks still work inside the host; nothing is NATed."""

    def network_created(self, info: BridgeNetworkInfo) -> None:
        pass

    def network_deleted(self, network_id: str) -> None:
        pass

    def ports_published(self, endpoint: PublishedEndpoint) -> None:
        pass

    def ports_revoked(self, network_id: str, endpoint_id: str) -> None:
        pass
