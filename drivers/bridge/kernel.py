"""What the bridge driver needs of netlink (HostNetlink: cnm.osl.netlink.Netlink; a
fake in unit tests) and its record of what it built: a network's bridge and endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from drivers.bridge.config import BridgeConfig
from drivers.bridge.hooks import BridgeNetworkInfo


class HostNetlink(Protocol):
    """The part of cnm.osl.netlink.Netlink the driver uses (the unit-test seam)."""

    def link_exists(self, name: str) -> bool: ...
    def link(self, name: str): ...  # -> object with .alias, .kind
    def links(self) -> list: ...
    def create_bridge(
        self, name: str, mtu: int = 1500, *, mac: str | None = None, alias: str | None = None, up: bool = True
    ) -> None: ...
    def create_veth(
        self,
        name: str,
        peer_name: str,
        mtu: int = 1500,
        *,
        peer_mac: str | None = None,
        alias: str | None = None,
        peer_netns: str | None = None,
        master: str | None = None,
        up: bool = False,
        ipv6_addresses: bool = True,
    ) -> None: ...
    def delete_link(self, name: str) -> bool: ...
    def retire_link(self, name: str, *, alias: str, group: int) -> bool: ...
    def delete_link_group(self, group: int) -> None: ...
    def sibling(self) -> HostNetlink: ...
    def set_link_up(self, name: str) -> None: ...
    def set_master(self, name: str, bridge: str | None) -> None: ...
    def add_address(self, name: str, cidr: str, *, exist_ok: bool = False) -> None: ...
    def bridge_port_count(self, bridge: str) -> int: ...
    def sysctl_write(self, key: str, value: str | int) -> None: ...


@dataclass
class BridgeEndpoint:
    id: str
    host_ifname: str
    peer_ifname: str
    mac: str
    address: str | None = None
    address_v6: str | None = None
    port_bindings: tuple[Mapping[str, object], ...] = ()


@dataclass
class BridgeNetwork:
    info: BridgeNetworkInfo
    endpoints: dict[str, BridgeEndpoint] = field(default_factory=dict)
    # Deleted endpoints whose veth the graveyard has not deleted yet: they still hold
    # a port of the bridge.
    retiring: set[str] = field(default_factory=set)

    @property
    def bridge(self) -> str:
        return self.info.bridge_name

    @property
    def config(self) -> BridgeConfig:
        return self.info.config
