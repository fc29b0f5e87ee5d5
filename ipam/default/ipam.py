"""DefaultIpam: Docker's built-in address manager, persisted in cnm Stores.

Every pool and every allocated address is written to the store before the request
returns (a SIGKILL right after loses nothing), and the constructor reloads it all, so
an address is never handed out twice across restarts. Keys:

    ipam/<space>/pools/<escaped pool_id>         {"pool", "sub_pool", "v6", "serial", "cursor"}
    ipam/<space>/addrs/<escaped pool_id>/<addr>  {}

New keys are created with `expect={key: 0}` so that, once a store is shared between
hosts (etcd), two hosts racing for the same address or pool are told apart: the loser
marks it taken and tries the next one.

Reserved addresses: the network address is never handed out, nor the IPv4 broadcast,
except where RFC 3021 (IPv4 /31) and RFC 6164 (IPv6 /127) make every address a host
address; a /32 or /128 pool holds its one address.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from cnm.addresses import subnet_of
from cnm.errors import Conflict, InvalidParameter, NotFound
from cnm.ipamapi import GATEWAY_REQUEST, GATEWAY_TYPE, GLOBAL_DEFAULT, LOCAL_DEFAULT, SERIAL_OPTION, Pool
from cnm.store import Delete, Put, Store
from ipam.default.allocator import Allocator
from ipam.default.pools import (
    GLOBAL_DEFAULT_POOLS,
    LOCAL_DEFAULT_POOLS,
    Network,
    PoolSpec,
    choose_subnet,
    parse_network,
    pool_specs,
)

log = logging.getLogger(__name__)

_RETRIES = 64  # store collisions tolerated per request (other hosts racing us)


def usable_bounds(net: Network) -> tuple[int, int]:
    """First and last offsets that may be handed out in `net`."""
    size = net.num_addresses
    if net.version == 4:
        return (1, size - 2) if net.prefixlen <= 30 else (0, size - 1)
    return (1, size - 1) if net.prefixlen <= 126 else (0, size - 1)


def _parse_bool(options: Mapping[str, str], key: str) -> bool:
    value = str(options.get(key, "false")).strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off", ""):
        return False
    raise InvalidParameter(f"invalid value {options[key]!r} for option {key}: use true or false")


def _esc(pool_id: str) -> str:
    return quote(pool_id, safe="")


@dataclass
class _PoolState:
    pool_id: str
    space: str
    net: Network
    sub: Network | None
    serial: bool
    alloc: Allocator

    @property
    def where(self) -> str:
        return f"{self.net}" + (f" (ip-range {self.sub})" if self.sub else "")

    def record(self) -> dict:
        return {
            "pool": str(self.net),
            "sub_pool": str(self.sub) if self.sub else None,
            "v6": self.net.version == 6,
            "serial": self.serial,
            "cursor": self.alloc.cursor,
        }

    def ip(self, off: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return self.net.network_address + off  # keeps the IP version, even for ::1


class DefaultIpam:
    """Docker's default IPAM: address spaces LocalDefault and GlobalDefault."""

    name = "default"

    def __init__(
        self,
        stores: Mapping[str, Store],
        local_pools: Sequence[str | tuple[str, int]] | None = None,
        global_pools: Sequence[str | tuple[str, int]] | None = None,
        excluded: Callable[[], Iterable[str]] = lambda: [],
    ) -> None:
        self._stores = dict(stores)
        self._predefined: dict[str, list[PoolSpec]] = {
            LOCAL_DEFAULT: pool_specs(LOCAL_DEFAULT_POOLS if local_pools is None else local_pools),
            GLOBAL_DEFAULT: pool_specs(GLOBAL_DEFAULT_POOLS if global_pools is None else global_pools),
        }
        self._excluded = excluded
        self._lock = threading.RLock()
        self._pools: dict[str, _PoolState] = {}
        self._foreign: dict[str, list[Network]] = {}  # pools the store says another writer holds
        # Spaces whose store other hosts write too (etcd): their state is re-read from
        # the store before each decision instead of trusted from memory.
        self._shared = {space for space, st in self._stores.items() if getattr(st, "scope", "local") == "global"}
        for space in self._stores:
            if space in self._shared:
                continue  # read lazily: the cluster store may be down while the daemon starts
            self._load(space)

    # -- Ipam protocol ---------------------------------------------------------------

    def default_address_spaces(self) -> tuple[str, str]:
        """(LocalDefault, GlobalDefault)."""
        return LOCAL_DEFAULT, GLOBAL_DEFAULT

    def request_pool(
        self, address_space: str, pool: str | None, sub_pool: str | None, options: Mapping[str, str], v6: bool
    ) -> Pool:
        """Reserve `pool` (or the first free predefined one); see cnm.ipamapi.Ipam."""
        options = options or {}
        serial = _parse_bool(options, SERIAL_OPTION)
        version = 6 if v6 else 4
        with self._lock:
            self._store(address_space)
            self._refresh(address_space)
            if not pool:
                if sub_pool:
                    raise InvalidParameter(f"ip-range {sub_pool} needs a subnet: pass --subnet too")
                return self._request_predefined(address_space, version, serial)
            net = parse_network(pool, "subnet")
            if net.version != version:
                raise InvalidParameter(
                    f"subnet {net} is not an IPv{version} subnet"
                    + (" (use --ipv6 for an IPv6 subnet)" if net.version == 6 else "")
                )
            sub = self._check_sub_pool(net, sub_pool)
            for other in self._space_pools(address_space):
                if other.net.overlaps(net):
                    raise Conflict(
                        f"subnet {net} overlaps with the subnet {other.net} of another network; choose another --subnet"
                    )
            state = self._new_state(address_space, net, sub, serial)
            if not self._persist_pool(state):
                raise Conflict(
                    f"subnet {net} is already reserved in the {address_space} store "
                    f"(by another host?); choose another --subnet"
                )
            return Pool(state.pool_id, str(net), {})

    def release_pool(self, pool_id: str) -> None:
        """Free the pool and all its addresses. Idempotent."""
        with self._lock:
            self._refresh(pool_id.split("/", 1)[0])
            state = self._pools.get(pool_id)
            if state is None:
                return
            store = self._store(state.space)
            ops: list = [Delete(kv.key) for kv in store.list(self._addr_prefix(state))]
            ops.append(Delete(self._pool_key(state.space, pool_id)))
            store.atomic(ops)  # one transaction: no orphan address keys after a crash
            del self._pools[pool_id]

    def request_address(self, pool_id: str, address: str | None, options: Mapping[str, str]) -> str:
        """Reserve `address` or the next free one; returns "a.b.c.d/prefix"."""
        options = options or {}
        with self._lock:
            self._refresh_pool(pool_id)
            state = self._get(pool_id)
            if address:
                off = self._offset(state, address)
                if not state.alloc.in_bounds(off):
                    kind = "network" if off == 0 else "broadcast"
                    raise InvalidParameter(
                        f"address {state.ip(off)} is the {kind} address of subnet {state.net} and cannot be assigned"
                    )
                if not state.alloc.take(off) or not self._persist_address(state, off):
                    raise Conflict(f"address {state.ip(off)} is already in use in subnet {state.net}")
                return f"{state.ip(off)}/{state.net.prefixlen}"
            gateway = options.get(GATEWAY_REQUEST) == GATEWAY_TYPE
            for _ in range(_RETRIES):
                free = state.alloc.allocate_lowest() if gateway else state.alloc.allocate()
                if free is None:
                    raise Conflict(
                        f"no available IPv{state.net.version} addresses in pool "
                        f"{state.where}; release some or use a larger subnet"
                    )
                if self._persist_address(state, free):
                    return f"{state.ip(free)}/{state.net.prefixlen}"
            raise Conflict(
                f"could not reserve an address in pool {state.where}: the store "
                f"reported {_RETRIES} collisions in a row; retry"
            )

    def release_address(self, pool_id: str, address: str) -> None:
        """Free one address. Idempotent (unknown pool or free address: nothing to do)."""
        with self._lock:
            self._refresh_pool(pool_id)
            state = self._pools.get(pool_id)
            if state is None:
                return
            off = self._offset(state, address)
            if off not in state.alloc:
                return
            self._store(state.space).delete(self._addr_key(state, off))
            state.alloc.release(off)

    # -- inspection ------------------------------------------------------------------

    def pools(self, space: str) -> list[tuple[str, str]]:
        """(pool_id, subnet) of every pool reserved in `space`, sorted by pool id."""
        with self._lock:
            return sorted((s.pool_id, str(s.net)) for s in self._space_pools(space))

    def local_pools(self) -> list[tuple[str, str]]:
        """(pool_id, subnet) of the pools of spaces whose store no other host writes:
        the only ones a start-up reconcile may judge orphaned."""
        with self._lock:
            return sorted((s.pool_id, str(s.net)) for s in self._pools.values() if s.space not in self._shared)

    def allocated(self, pool_id: str) -> list[str]:
        """Allocated addresses of a pool (no prefix), in address order."""
        with self._lock:
            state = self._get(pool_id)
            return [str(state.ip(off)) for off in state.alloc.taken()]

    # -- internals: pools ------------------------------------------------------------

    def _store(self, space: str) -> Store:
        try:
            return self._stores[space]
        except KeyError:
            raise InvalidParameter(
                f"unknown address space {space!r}; known: {', '.join(sorted(self._stores))}"
            ) from None

    def _space_pools(self, space: str) -> list[_PoolState]:
        return [s for s in self._pools.values() if s.space == space]

    def _get(self, pool_id: str) -> _PoolState:
        try:
            return self._pools[pool_id]
        except KeyError:
            raise NotFound(f"address pool {pool_id} not found") from None

    @staticmethod
    def _check_sub_pool(net: Network, sub_pool: str | None) -> Network | None:
        if not sub_pool:
            return None
        sub = parse_network(sub_pool, "ip-range")
        if not subnet_of(sub, net):
            raise InvalidParameter(f"ip-range {sub} is not inside subnet {net}")
        first, last = usable_bounds(net)
        base = int(net.network_address)
        if max(first, int(sub.network_address) - base) > min(last, int(sub.broadcast_address) - base):
            raise InvalidParameter(f"ip-range {sub} holds no usable address of subnet {net}")
        return sub

    @staticmethod
    def _new_state(
        space: str, net: Network, sub: Network | None, serial: bool, cursor: int | None = None
    ) -> _PoolState:
        pool_id = f"{space}/{net}" + (f"/{sub}" if sub else "")
        first, last = usable_bounds(net)
        lo, hi = first, last
        if sub is not None:
            base = int(net.network_address)
            lo = max(first, int(sub.network_address) - base)
            hi = min(last, int(sub.broadcast_address) - base)
        return _PoolState(
            pool_id, space, net, sub, serial, Allocator(first, last, lo, hi, serial=serial, cursor=cursor)
        )

    def _request_predefined(self, space: str, version: int, serial: bool) -> Pool:
        specs = [s for s in self._predefined.get(space, []) if s.version == version]
        if not specs:
            if version == 6:
                raise InvalidParameter("IPv6 needs an explicit --subnet (there are no IPv6 default address pools)")
            raise InvalidParameter(f"address space {space} has no default IPv4 pools; pass --subnet")
        excluded = []
        for text in self._excluded():
            try:
                excluded.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                log.warning("ignoring invalid excluded CIDR %r", text)
        for _ in range(_RETRIES):
            blocked = [s.net for s in self._space_pools(space)] + excluded + self._foreign.get(space, [])
            net = choose_subnet(specs, blocked, version)
            if net is None:
                raise Conflict(
                    f"could not find an available, non-overlapping IPv{version} address pool "
                    f"among the defaults to assign to the network; pass --subnet, remove unused "
                    f"networks, or configure more pools with --default-address-pool"
                )
            state = self._new_state(space, net, None, serial)
            if self._persist_pool(state):
                return Pool(state.pool_id, str(net), {})
            self._foreign.setdefault(space, []).append(net)
        raise Conflict(
            f"could not reserve a default pool in {space}: the store reported {_RETRIES} collisions in a row; retry"
        )

    # -- internals: persistence ------------------------------------------------------

    @staticmethod
    def _pool_key(space: str, pool_id: str) -> str:
        return f"ipam/{space}/pools/{_esc(pool_id)}"

    @staticmethod
    def _addr_prefix(state: _PoolState) -> str:
        return f"ipam/{state.space}/addrs/{_esc(state.pool_id)}/"

    def _addr_key(self, state: _PoolState, off: int) -> str:
        return self._addr_prefix(state) + str(state.ip(off))

    def _persist_pool(self, state: _PoolState) -> bool:
        """Create the pool's key; False if the store already holds it. Memory is updated
        only after the store accepted it."""
        key = self._pool_key(state.space, state.pool_id)
        try:
            self._store(state.space).atomic([Put(key, state.record())], expect={key: 0})
        except Conflict:
            return False
        self._pools[state.pool_id] = state
        return True

    def _persist_address(self, state: _PoolState, off: int) -> bool:
        """Write an address the allocator just took (and a serial pool's cursor).
        False if the store already had it: it stays taken in memory, as it is in use.
        Any other failure gives the address back before re-raising."""
        key = self._addr_key(state, off)
        ops: list = [Put(key, {})]
        if state.serial:
            ops.append(Put(self._pool_key(state.space, state.pool_id), state.record()))
        try:
            self._store(state.space).atomic(ops, expect={key: 0})
        except Conflict:
            return False
        except BaseException:
            state.alloc.release(off)
            raise
        return True

    def _offset(self, state: _PoolState, address: str) -> int:
        try:
            ip = ipaddress.ip_interface(address.strip()).ip
        except ValueError:
            raise InvalidParameter(f"invalid IP address {address!r}") from None
        if ip.version != state.net.version or ip not in state.net:
            raise InvalidParameter(f"address {ip} is not in subnet {state.net}")
        return int(ip) - int(state.net.network_address)

    def _refresh(self, space: str) -> None:
        """Re-read a shared space from its store (other hosts allocate there too)."""
        if space not in self._shared:
            return
        for pid in [pid for pid, st in self._pools.items() if st.space == space]:
            del self._pools[pid]
        self._load(space)

    def _refresh_pool(self, pool_id: str) -> None:
        """Re-read one pool of a shared space (an address request or release needs
        only its own pool: two reads, not a listing of the whole cluster's space)."""
        space = pool_id.split("/", 1)[0]
        if space not in self._shared:
            return
        self._pools.pop(pool_id, None)
        store = self._stores[space]
        kv = store.get(self._pool_key(space, pool_id))
        state = self._state_of(space, kv) if kv is not None else None
        if state is None:
            return
        self._pools[state.pool_id] = state
        prefix = self._addr_prefix(state)
        for akv in store.list(prefix):
            self._take_recorded(state, akv.key, akv.key[len(prefix) :])

    def _state_of(self, space: str, kv) -> _PoolState | None:
        try:
            v = kv.value
            net = ipaddress.ip_network(v["pool"])
            sub = ipaddress.ip_network(v["sub_pool"]) if v.get("sub_pool") else None
            return self._new_state(space, net, sub, bool(v.get("serial")), v.get("cursor"))
        except (KeyError, TypeError, ValueError) as exc:
            log.error("ignoring corrupt IPAM pool record %s: %s", kv.key, exc)
            return None

    def _take_recorded(self, state: _PoolState, key: str, addr: str) -> None:
        try:
            state.alloc.take(self._offset(state, addr))
        except (InvalidParameter, ValueError) as exc:
            log.error("ignoring corrupt IPAM address record %s: %s", key, exc)

    def _load(self, space: str) -> None:
        store = self._stores[space]
        by_esc: dict[str, _PoolState] = {}
        for kv in store.list(f"ipam/{space}/pools/"):
            state = self._state_of(space, kv)
            if state is None:
                continue
            self._pools[state.pool_id] = state
            by_esc[_esc(state.pool_id)] = state
        prefix = f"ipam/{space}/addrs/"
        for kv in store.list(prefix):
            esc, _, addr = kv.key[len(prefix) :].partition("/")
            state = by_esc.get(esc)
            if state is None:
                log.warning("ignoring IPAM address %s of an unknown pool", kv.key)
                continue
            self._take_recorded(state, kv.key, addr)
