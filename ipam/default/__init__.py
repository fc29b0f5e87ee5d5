"""Docker's default IPAM: predefined pools, first-free/serial allocation, persisted."""

from __future__ import annotations

from ipam.default.allocator import Allocator
from ipam.default.host_conflicts import exclusions, nameservers_from_resolv_conf
from ipam.default.ipam import DefaultIpam
from ipam.default.pools import (
    GLOBAL_DEFAULT_POOLS,
    LOCAL_DEFAULT_POOLS,
    PoolSpec,
    choose_subnet,
    parse_default_address_pool,
    pool_specs,
)

__all__ = [
    "Allocator",
    "DefaultIpam",
    "PoolSpec",
    "LOCAL_DEFAULT_POOLS",
    "GLOBAL_DEFAULT_POOLS",
    "choose_subnet",
    "exclusions",
    "nameservers_from_resolv_conf",
    "parse_default_address_pool",
    "pool_specs",
]
