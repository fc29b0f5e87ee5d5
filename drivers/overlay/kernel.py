"""What the overlay driver builds on this host and the kernel seams it builds through.

OverlayNetlink   the netlink calls the driver makes (cnm.osl.vxlan.VxlanNetlink;
                 a fake in unit tests)
Namespaces       bind-mounted network namespaces (OslNamespaces: cnm.osl.netns)
LocalNetwork     one overlay network's namespace, bridge, VXLAN device, endpoints
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from cnm.errors import NotFound
from cnm.osl import netns
from drivers.overlay import naming
from drivers.overlay.config import OverlayConfig

DEFAULT_VXLAN_PORT = 4789


class OverlayNetlink(Protocol):
    """What the driver uses of cnm.osl.vxlan.VxlanNetlink (the unit-test seam)."""

    def link_exists(self, name: str) -> bool: ...
    def link(self, name: str): ...  # -> object with .alias, .mtu
    def link_with_address(self, address: str): ...  # -> object with .mtu, or None
    def create_bridge(
        self, name: str, mtu: int = 1500, *, mac: str | None = None, alias: str | None = None, up: bool = True
    ) -> None: ...
    def create_veth(
        self, name: str, peer_name: str, mtu: int = 1500, *, peer_mac: str | None = None, alias: str | None = None
    ) -> None: ...
    def create_vxlan(
        self,
        name: str,
        vni: int,
        *,
        local: str,
        port: int = DEFAULT_VXLAN_PORT,
        mtu: int = 1450,
        learning: bool = False,
        proxy: bool = True,
        alias: str | None = None,
    ) -> None: ...
    def vxlan_info(self, name: str): ...  # -> object with .vni, .port, .local
    def move_link_to_netns(self, name: str, netns: str, new_name: str | None = None) -> None: ...
    def delete_link(self, name: str) -> bool: ...
    def set_link_up(self, name: str) -> None: ...
    def set_master(self, name: str, bridge: str | None) -> None: ...
    def add_address(self, name: str, cidr: str, *, exist_ok: bool = False) -> None: ...
    def sysctl_write(self, key: str, value: str | int) -> None: ...
    def fdb_replace(self, dev: str, mac: str, dst: str) -> None: ...
    def fdb_delete(self, dev: str, mac: str, dst: str | None = None) -> bool: ...
    def neigh_replace(self, dev: str, ip: str, mac: str) -> None: ...
    def neigh_delete(self, dev: str, ip: str) -> bool: ...
    def close(self) -> None: ...


class Namespaces(Protocol):
    """Bind-mounted network namespaces (cnm.osl.netns; a fake in unit tests)."""

    def create(self, path: str) -> None: ...
    def delete(self, path: str) -> None: ...
    def exists(self, path: str) -> bool: ...


class OslNamespaces:
    """Namespaces through cnm.osl.netns (the driver's default)."""

    def create(self, path: str) -> None:
        netns.create_netns(path)

    def delete(self, path: str) -> None:
        netns.delete_netns(path)

    def exists(self, path: str) -> bool:
        return netns.is_netns(path)


@dataclass
class LocalEndpoint:
    """An endpoint of this host on an overlay network (its veth's bridge end is in the
    network's namespace)."""

    id: str
    mac: str
    address: str | None = None
    address_v6: str | None = None


@dataclass
class LocalNetwork:
    """This host's part of an overlay network: its namespace, bridge, VXLAN device and
    local endpoints."""

    config: OverlayConfig
    path: str
    nl: OverlayNetlink  # handle inside the overlay namespace
    endpoints: dict[str, LocalEndpoint] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.config.network_id

    @property
    def bridge(self) -> str:
        return naming.bridge_name(self.config.vni, self.id)

    @property
    def vxlan(self) -> str:
        return naming.vxlan_name(self.config.vni, self.id)


def underlay_mtu_of(nl: OverlayNetlink, address: str) -> int:
    """MTU of the host interface that carries `address` (the VTEP)."""
    link = nl.link_with_address(address)
    if link is not None:
        return link.mtu
    raise NotFound(
        f"no interface on this host has the overlay advertise address {address}; "
        "configure it or pass another --advertise-addr"
    )
