"""The IPAM contract (shaped like Docker's IpamDriver protocol), and its registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from cnm import labels
from cnm.errors import InvalidParameter, NotFound

LOCAL_DEFAULT = "LocalDefault"
GLOBAL_DEFAULT = "GlobalDefault"

# Option keys (Docker's names).
GATEWAY_REQUEST = "RequestAddressType"  # value GATEWAY_TYPE asks for the gateway
GATEWAY_TYPE = "com.docker.network.gateway"
SERIAL_OPTION = labels.IPAM_SERIAL  # "true": do not reuse freed addresses at once
AUX_PREFIX = "com.docker.network.aux."  # not used by Docker on the wire; internal


@dataclass(frozen=True)
class Pool:
    pool_id: str  # opaque, stable across restarts
    subnet: str  # CIDR
    data: Mapping[str, str] = field(default_factory=dict)


class Ipam(Protocol):
    """An address manager. All methods may raise CNMError subclasses."""

    name: str

    def default_address_spaces(self) -> tuple[str, str]:
        """(local, global) address-space names."""

    def request_pool(
        self, address_space: str, pool: str | None, sub_pool: str | None, options: Mapping[str, str], v6: bool
    ) -> Pool:
        """Reserve a subnet. `pool` None = choose a free predefined one (IPv4 only;
        refused for v6 unless the IPAM has v6 defaults). An explicit pool that overlaps
        another reserved pool of the space raises Conflict. `sub_pool` narrows where
        addresses come from (--ip-range) and must lie inside `pool`."""

    def release_pool(self, pool_id: str) -> None:
        """Free the subnet and every address in it. Idempotent."""

    def request_address(self, pool_id: str, address: str | None, options: Mapping[str, str]) -> str:
        """Reserve an address; returns it with the pool's prefix ("172.18.0.2/16").
        `address` given = that one or Conflict; None = next free (first-free, or
        serial when the pool's options say so). The returned address is persisted
        before this returns. Raises Conflict when the pool is exhausted."""

    def release_address(self, pool_id: str, address: str) -> None:
        """Free one address. Idempotent."""


class IpamRegistry:
    """Name -> IPAM. `fallback` as for cnm.driverapi.DriverRegistry (remote plugins)."""

    def __init__(self, fallback: Callable[[str], Ipam | None] | None = None) -> None:
        self._ipams: dict[str, Ipam] = {}
        self._fallback = fallback

    def register(self, ipam: Ipam) -> None:
        if ipam.name in self._ipams:
            raise InvalidParameter(f"IPAM driver {ipam.name} is already registered")
        self._ipams[ipam.name] = ipam

    def get(self, name: str) -> Ipam:
        try:
            return self._ipams[name]
        except KeyError:
            found = self._fallback(name) if self._fallback is not None else None
            if found is not None:
                return self._ipams.setdefault(name, found)
            raise NotFound(f"IPAM driver {name!r} not found; available: {', '.join(sorted(self._ipams))}") from None

    def names(self) -> list[str]:
        return sorted(self._ipams)
