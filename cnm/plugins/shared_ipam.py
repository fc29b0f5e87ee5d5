"""The default IPAM shared by the Docker engines of a cluster (`net plugin serve
--driver overlay --ipam --cluster-store …`).

Each engine creates its copy of an overlay network and asks its IPAM for the pool and
the gateway. Docker's default IPAM would answer each engine alone and hand out the
same addresses on two hosts; this one keeps pools and addresses in etcd (DefaultIpam
on the cluster store: every address is taken in a transaction), and lets every host
that asks for the SAME subnet share its pool and its gateway address:

    plugin-pool/<space>/<escaped subnet>          {"pool_id", "gateway"}
    plugin-pool-members/<escaped pool id>/<host>  {}

A different but overlapping subnet is refused, as before. The pool and its addresses
are freed when the last host releases it.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Mapping
from urllib.parse import quote, unquote

from cnm import labels
from cnm.addresses import address_text
from cnm.errors import CNMError, Conflict, InvalidParameter
from cnm.ipamapi import GATEWAY_REQUEST, GATEWAY_TYPE, Pool
from cnm.store import Put, Store

log = logging.getLogger(__name__)
MAC_OPTION = labels.ENDPOINT_MAC
POOLS, MEMBERS = "plugin-pool/", "plugin-pool-members/"
_ATTEMPTS = 16


def _esc(text: str) -> str:
    return quote(text, safe="")


def _canonical(cidr: str, what: str) -> str:
    """One spelling per subnet ("fd00:0::/64" and "fd00::/64" are one pool)."""
    try:
        return str(ipaddress.ip_network(cidr.strip(), strict=False))
    except ValueError:
        raise InvalidParameter(f"invalid {what} {cidr!r}: want a CIDR such as 10.90.0.0/24") from None


class SharedPoolIpam:
    """An Ipam (cnm.ipamapi) over `inner` (a DefaultIpam on `store`), pools shared by subnet.

    Network-wide addresses are shared like the gateway: the aux addresses of
    `--aux-address`, which every host's copy of the network asks for alike. Docker
    sends them without the endpoint MAC that it adds to every container's request
    once an IPAM says RequiresMACAddress, which is how the two are told apart."""

    requires_mac_address = True

    def __init__(self, inner, store: Store, member: str) -> None:
        self.inner = inner
        self.store = store
        self.member = member
        self._lock = threading.Lock()
        self._keys: dict[str, str] = {}  # pool id -> its record's key (derived; a cache)

    def default_address_spaces(self) -> tuple[str, str]:
        return self.inner.default_address_spaces()

    def _rec_key(self, space: str, subnet: str) -> str:
        return f"{POOLS}{space}/{_esc(subnet)}"

    def _member_key(self, pool_id: str) -> str:
        return f"{MEMBERS}{_esc(pool_id)}/{self.member}"

    def _find(self, pool_id: str):
        """The pool's record: one read when this host made or joined it (every address
        release asks), a listing only the first time after a restart."""
        key = self._keys.get(pool_id)
        kv = self.store.get(key) if key else None
        if kv is not None and kv.value.get("pool_id") == pool_id:
            return kv
        for kv in self.store.list(POOLS):
            if kv.value.get("pool_id") == pool_id:
                self._keys[pool_id] = kv.key
                return kv
        return None

    def request_pool(
        self, address_space: str, pool: str | None, sub_pool: str | None, options: Mapping[str, str], v6: bool
    ) -> Pool:
        if not pool:
            raise InvalidParameter(
                "this IPAM is shared by the hosts of a cluster: pass --subnet, the same "
                "on every host (a pool picked here would differ from host to host)"
            )
        pool, sub_pool = _canonical(pool, "subnet"), _canonical(sub_pool, "ip-range") if sub_pool else None
        with self._lock:
            for attempt in range(_ATTEMPTS):
                rkey = self._rec_key(address_space, pool)
                kv = self.store.get(rkey)
                if kv is not None and kv.value.get("releasing"):
                    # Its last host was freeing it (and may have died doing so): finish.
                    self._finish_release(kv)
                    continue
                if kv is not None:
                    pid = kv.value["pool_id"]
                    if self.store.get(self._member_key(pid)) is not None:
                        # One share per host: a second network here on the same pool would
                        # free it under the first when either is removed.
                        raise Conflict(
                            f"this host already has a network on subnet {pool}; one network per subnet on each host"
                        )
                    if kv.value.get("sub_pool") != sub_pool:
                        raise Conflict(
                            f"subnet {pool} is used in the cluster with ip-range "
                            f"{kv.value.get('sub_pool') or 'none'}; pass the same --ip-range"
                        )
                    try:
                        self.store.atomic(
                            [Put(self._member_key(pid), {}), Put(rkey, kv.value)], expect={rkey: kv.revision}
                        )
                        self._keys[pid] = rkey
                        return Pool(pid, pool, {})
                    except Conflict:
                        continue
                try:
                    got = self.inner.request_pool(address_space, pool, sub_pool, options, v6)
                except Conflict:
                    # Another host may have reserved this very subnet a moment ago and
                    # not yet written its record: look again before giving up.
                    if attempt < 3 or self.store.get(rkey) is not None:
                        time.sleep(0.05)
                        continue
                    raise
                try:
                    self.store.atomic(
                        [
                            Put(rkey, {"pool_id": got.pool_id, "gateway": None, "sub_pool": sub_pool}),
                            Put(self._member_key(got.pool_id), {}),
                        ],
                        expect={rkey: 0},
                    )
                    self._keys[got.pool_id] = rkey
                    return got
                except Conflict:
                    self.inner.release_pool(got.pool_id)
            raise Conflict(f"could not reserve subnet {pool}: too many concurrent changes; retry")

    def release_pool(self, pool_id: str) -> None:
        """Drop this host's share; free the pool with the last one. A failure is logged,
        not answered: Docker never retries a ReleasePool, and start-up gives the share
        back (release_unused)."""
        try:
            self.give_back(pool_id)
        except CNMError as exc:
            log.warning("pool %s: share not given back yet (%s); retried when the plugin starts", pool_id, exc)

    def give_back(self, pool_id: str) -> None:
        """release_pool that raises (for start-up and forget-host, which report)."""
        with self._lock:
            self.store.delete(self._member_key(pool_id))
            for _ in range(_ATTEMPTS):
                kv = self._find(pool_id)
                if kv is None:
                    self.inner.release_pool(pool_id)  # not a shared pool (or already freed)
                    return
                if self.store.list(f"{MEMBERS}{_esc(pool_id)}/"):
                    return  # other hosts still use it
                if not kv.value.get("releasing"):
                    # Marked first (a join changes the revision, so none slips in), then
                    # freed, then the record goes: a crash in between leaves a marked
                    # record that the next request for the subnet finishes.
                    try:
                        self.store.atomic([Put(kv.key, {**kv.value, "releasing": True})], expect={kv.key: kv.revision})
                    except Conflict:
                        continue
                    kv = self.store.get(kv.key) or kv
                self._finish_release(kv)
                return

    def _finish_release(self, kv) -> None:
        self.inner.release_pool(kv.value["pool_id"])
        self.store.delete(kv.key)

    def release_unused(self, in_use: set[str]) -> list[str]:
        """Give back this host's share of every pool whose subnet no network here uses
        (a ReleasePool that failed: Docker never retries one). Call only while no
        request is in flight (at start). Returns the pool ids."""
        mine, out = set(self.pools_of_member()), []
        for kv in self.store.list(POOLS):
            pid = kv.value.get("pool_id")
            escaped = kv.key[len(POOLS) :].partition("/")[2]
            if pid in mine and unquote(escaped) not in in_use:
                self.give_back(pid)
                out.append(pid)
        return out

    def pools_of_member(self) -> list[str]:
        """The pool ids this member (host) holds a share of."""
        out = []
        for kv in self.store.list(MEMBERS):
            escaped, _, who = kv.key[len(MEMBERS) :].rpartition("/")
            if who == self.member:
                out.append(unquote(escaped))
        return out

    def request_address(self, pool_id: str, address: str | None, options: Mapping[str, str]) -> str:
        options = options or {}
        if options.get(GATEWAY_REQUEST) != GATEWAY_TYPE:
            if address and not options.get(MAC_OPTION):
                return self._shared_address(pool_id, address, options)  # --aux-address
            return self.inner.request_address(pool_id, address, options)
        with self._lock:
            for _ in range(_ATTEMPTS):
                kv = self._find(pool_id)
                if kv is None:
                    return self.inner.request_address(pool_id, address, options)
                gw = kv.value.get("gateway")
                if gw:
                    if address and address_text(address) != address_text(gw):
                        raise Conflict(
                            f"the gateway of this shared pool is {address_text(gw)}, not {address}: "
                            "pass the same --gateway on every host"
                        )
                    return gw  # every host's bridge holds the gateway
                got = self.inner.request_address(pool_id, address, options)
                try:
                    self.store.atomic([Put(kv.key, {**kv.value, "gateway": got})], expect={kv.key: kv.revision})
                    return got
                except Conflict:
                    self.inner.release_address(pool_id, got)
            raise Conflict("could not reserve the gateway: too many concurrent changes; retry")

    def _shared_address(self, pool_id: str, address: str, options: Mapping[str, str]) -> str:
        """An address every host's copy of the network reserves alike (aux): taken once,
        then handed to each host that asks; freed with the pool."""
        ip = address_text(address)
        with self._lock:
            for _ in range(_ATTEMPTS):
                kv = self._find(pool_id)
                if kv is None:
                    return self.inner.request_address(pool_id, address, options)
                held = dict(kv.value.get("aux") or {})
                if ip in held:
                    return held[ip]
                got = self.inner.request_address(pool_id, address, options)
                try:
                    self.store.atomic(
                        [Put(kv.key, {**kv.value, "aux": {**held, ip: got}})], expect={kv.key: kv.revision}
                    )
                    return got
                except Conflict:
                    self.inner.release_address(pool_id, got)
            raise Conflict(f"could not reserve {ip}: too many concurrent changes; retry")

    def release_address(self, pool_id: str, address: str) -> None:
        kv = self._find(pool_id)
        ip = address_text(address)
        gw = kv.value.get("gateway") if kv is not None else None
        if kv is not None and ((gw and address_text(gw) == ip) or ip in (kv.value.get("aux") or {})):
            return  # shared; freed with the pool
        self.inner.release_address(pool_id, address)
