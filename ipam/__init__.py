"""Built-in IPAMs: `default` (Docker's allocator, persisted) and `null`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from cnm.ipamapi import IpamRegistry
from cnm.store import Store
from ipam.default import DefaultIpam
from ipam.null import NullIpam


def register(
    registry: IpamRegistry,
    *,
    stores: Mapping[str, Store],
    local_pools: Sequence[str | tuple[str, int]] | None = None,
    global_pools: Sequence[str | tuple[str, int]] | None = None,
    excluded: Callable[[], Iterable[str]] = lambda: [],
) -> DefaultIpam:
    """Register `default` and `null` in `registry`; returns the DefaultIpam.
    `stores` maps address space (LocalDefault, GlobalDefault) to its Store; pools are
    `base=CIDR,size=N` strings or (CIDR, size) pairs; `excluded()` lists CIDRs that
    automatic pool choice must skip (host routes, nameservers)."""
    default = DefaultIpam(stores, local_pools=local_pools, global_pools=global_pools, excluded=excluded)
    registry.register(default)
    registry.register(NullIpam())
    return default


__all__ = ["DefaultIpam", "NullIpam", "register", "register_builtin"]
