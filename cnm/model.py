"""The three CNM objects — Network, Endpoint, Sandbox — as plain data.

They serialise to the store with `to_record()`/`from_record()`; the Docker-shaped
JSON of `inspect` is rendered in `cnm.render`, not here. Addresses are typed
(cnm.addresses: a subnet, an address, an address with its prefix); text given to the
constructors (a record, a test) is parsed once, there.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from cnm.addresses import IPAddress, IPInterface, IPNetwork, address, interface, network, text

T = TypeVar("T")


def _from(cls, record: dict):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in record.items() if k in names})


def _plain(value: object) -> object:
    """A record's value copied all the way down, as dataclasses.asdict copies it."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def record_of(obj: object, names: tuple[str, ...]) -> dict:
    """asdict for a dataclass whose fields hold no dataclasses: ~10x faster (a record is
    written at every step of a container's life)."""
    return {name: _plain(getattr(obj, name)) for name in names}


def _parsed(value: Any, parse: Callable[[str], T]) -> T | None:
    """`value` typed: text parsed, None and typed values as they are."""
    return parse(value) if isinstance(value, str) else value


@dataclass
class PoolConfig:
    """One IPAM config entry of a network (one subnet)."""

    subnet: IPNetwork
    pool_id: str
    ip_range: IPNetwork | None = None
    gateway: IPAddress | None = None
    aux_addresses: dict[str, IPAddress] = field(default_factory=dict)  # name -> address
    v6: bool = False

    def __post_init__(self) -> None:
        self.subnet = _parsed(self.subnet, network) or self.subnet
        self.ip_range = _parsed(self.ip_range, network)
        self.gateway = _parsed(self.gateway, address)
        self.aux_addresses = {k: _parsed(v, address) or v for k, v in self.aux_addresses.items()}

    def to_record(self) -> dict:
        return {
            "subnet": str(self.subnet),
            "pool_id": self.pool_id,
            "ip_range": text(self.ip_range),
            "gateway": text(self.gateway),
            "aux_addresses": {k: str(v) for k, v in self.aux_addresses.items()},
            "v6": self.v6,
        }


@dataclass
class Network:
    id: str
    name: str
    driver: str
    scope: str = "local"
    created: str = ""  # RFC 3339
    internal: bool = False
    attachable: bool = False
    enable_ipv6: bool = False
    ipam_driver: str = "default"
    ipam_options: dict[str, str] = field(default_factory=dict)
    pools: list[PoolConfig] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    builtin: bool = False  # none/host/default bridge: cannot be removed

    def to_record(self) -> dict:
        rec = asdict(self)
        rec["pools"] = [p.to_record() for p in self.pools]
        return rec

    @classmethod
    def from_record(cls, record: dict) -> Network:
        net = _from(cls, record)
        net.pools = [_from(PoolConfig, p) for p in record.get("pools", [])]
        return net

    def v4_pools(self) -> list[PoolConfig]:
        return [p for p in self.pools if not p.v6]

    def v6_pools(self) -> list[PoolConfig]:
        return [p for p in self.pools if p.v6]


class EndpointState(enum.StrEnum):
    CREATED = "created"  # addresses and driver objects exist, not in a sandbox
    JOINED = "joined"  # inside a sandbox


@dataclass
class Endpoint:
    id: str
    name: str
    network_id: str
    address: IPInterface | None = None  # 172.18.0.2/16
    address_v6: IPInterface | None = None
    pool_id: str | None = None
    pool_id_v6: str | None = None
    mac: str | None = None
    state: str = EndpointState.CREATED.value
    sandbox_id: str | None = None
    container_id: str | None = None
    ifname: str | None = None  # name inside the sandbox (eth0, …)
    aliases: list[str] = field(default_factory=list)
    gateway: IPAddress | None = None  # from the driver's join (None: it gives none)
    gateway_v6: IPAddress | None = None
    static_default_route: bool = False  # the join gave a static route to 0/0 or ::/0
    disable_gateway_service: bool = False  # the join opted out of the gateway bridge
    port_bindings: list[dict] = field(default_factory=list)  # Docker's wire shape, as programmed

    def __post_init__(self) -> None:
        self.address = _parsed(self.address, interface)
        self.address_v6 = _parsed(self.address_v6, interface)
        self.gateway = _parsed(self.gateway, address)
        self.gateway_v6 = _parsed(self.gateway_v6, address)

    def addresses(self) -> list[IPInterface]:
        """Its addresses, IPv4 first."""
        return [a for a in (self.address, self.address_v6) if a is not None]

    def to_record(self) -> dict:
        rec = record_of(self, _ENDPOINT_FIELDS)
        for name in ("address", "address_v6", "gateway", "gateway_v6"):
            rec[name] = text(rec[name])
        return rec

    @classmethod
    def from_record(cls, record: dict) -> Endpoint:
        return _from(cls, record)


@dataclass
class Sandbox:
    """The stored state of a sandbox (behaviour: cnm.sandbox.Sandbox)."""

    id: str
    container_id: str
    key: str  # path of the bind-mounted netns
    endpoint_ids: list[str] = field(default_factory=list)  # attach order (eth0, eth1, … as joined)
    hostname: str = ""
    name: str = ""  # the container's name; its endpoints carry it
    port_requests: list[dict] = field(default_factory=list)  # PortBinding records, as asked
    ports: list[dict] = field(default_factory=list)  # PortBinding records, host ports allocated

    def to_record(self) -> dict:
        return record_of(self, _SANDBOX_FIELDS)

    @classmethod
    def from_record(cls, record: dict) -> Sandbox:
        return _from(cls, record)


_ENDPOINT_FIELDS = tuple(f.name for f in fields(Endpoint))
_SANDBOX_FIELDS = tuple(f.name for f in fields(Sandbox))
