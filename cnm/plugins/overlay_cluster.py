"""Cluster identity of an overlay network served to Docker engines (`net plugin serve
--driver overlay`).

Without swarm, each Docker engine creates a plugin network on its own and gives it an
ID of its own, and the plugin hears nothing but that ID, the -o options and the
subnets. So hosts agree on which overlay a network is by a KEY: the option
`cnm.overlay.name` when given, else the IPv4 subnets. Every engine that creates a
network with the same key joins the same VXLAN segment:

    plugin-overlay/<cluster id>                 {"key", "vni", "subnets"}
    plugin-overlay-members/<cluster id>/<vtep>  {}   one per host that has the network
    plugin-overlay-addrs/<cluster id>/<ip>      {"host", "endpoint"}   one per endpoint address

The cluster id is a hash of the key (64 hex digits, the shape of a Docker network ID),
and is what the overlay driver, peers and VNI records use. The record and its VNI
are freed when the last member leaves; member keys carry no lease, because the Docker
network outlives a plugin restart (a host that dies for good keeps its membership, as
a swarm node does until it is removed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from cnm.cluster import vni as vnis
from cnm.errors import Conflict, InvalidParameter
from cnm.store import Delete, Put, Store

NAME_OPTION = "cnm.overlay.name"
RECORDS, MEMBERS = "plugin-overlay/", "plugin-overlay-members/"
_ATTEMPTS = 16


def identity(options: Mapping[str, str], subnets: Iterable[str]) -> str:
    """The key every host derives alike. Pure."""
    name = str(options.get(NAME_OPTION, "")).strip()
    if name:
        if "/" in name or len(name) > 128:
            raise InvalidParameter(f"invalid {NAME_OPTION} {name!r}: no '/', at most 128 characters")
        return f"name:{name}"
    nets = sorted(subnets)
    if not nets:
        raise InvalidParameter(
            "a served overlay network needs --subnet (or -o cnm.overlay.name=NAME): "
            "it is how the hosts of the cluster know it is one network"
        )
    return "subnet:" + ",".join(nets)


def cluster_id(key: str) -> str:
    return hashlib.sha256(f"cnm-plugin-overlay/{key}".encode()).hexdigest()


def _record_key(cid: str) -> str:
    return f"{RECORDS}{cid}"


def _member_key(cid: str, member: str) -> str:
    return f"{MEMBERS}{cid}/{member}"


def join(store: Store, key: str, subnets: Iterable[str], member: str, vni: int | None = None) -> tuple[str, int]:
    """Join (or create) the overlay with this key; returns (cluster id, VNI). The
    record is rewritten with each join, so that a leave racing it sees a new revision
    and does not free the network under the joining host."""
    cid, nets = cluster_id(key), sorted(subnets)
    rkey, mkey = _record_key(cid), _member_key(cid, member)
    for _ in range(_ATTEMPTS):
        kv = store.get(rkey)
        if kv is not None:
            rec = kv.value
            if sorted(rec.get("subnets") or []) != nets:
                raise Conflict(
                    f"overlay {key.split(':', 1)[1]} exists in the cluster with subnets "
                    f"{', '.join(rec.get('subnets') or []) or 'none'}; create it here with the same "
                    "--subnet (or another cnm.overlay.name)"
                )
            if vni is not None and int(rec["vni"]) != vni:
                raise Conflict(f"overlay {key.split(':', 1)[1]} uses VXLAN id {rec['vni']} in the cluster, not {vni}")
            try:
                store.atomic([Put(mkey, {}), Put(rkey, rec)], expect={rkey: kv.revision})
                return cid, int(rec["vni"])
            except Conflict:
                continue
        taken, created = (vnis.allocate(store, cid), True) if vni is None else _pin(store, cid, vni)
        try:
            store.atomic([Put(rkey, {"key": key, "vni": taken, "subnets": nets}), Put(mkey, {})], expect={rkey: 0})
            return cid, taken
        except Conflict:
            # Another host created the record first: join theirs. Our VNI key goes,
            # unless their record uses it (they pinned the same VNI after we took it).
            theirs = store.get(rkey)
            if created and (theirs is None or int(theirs.value.get("vni", -1)) != taken):
                vnis.release(store, taken)
    raise Conflict(f"could not join overlay {key}: too many concurrent changes; retry")


def _pin(store: Store, cid: str, vni: int) -> tuple[int, bool]:
    """Take VNI `vni` for overlay `cid`; (vni, True if this call created its key)."""
    try:
        store.atomic([Put(f"{vnis.PREFIX}{vni}", {"network": cid})], expect={f"{vnis.PREFIX}{vni}": 0})
    except Conflict:
        held = store.get(f"{vnis.PREFIX}{vni}")
        if held is not None and held.value.get("network") == cid:
            return vni, False  # this overlay's already: another of its hosts pinned it first
        raise Conflict(f"VXLAN id {vni} is already used by another network of the cluster") from None
    return vni, True


def leave(store: Store, cid: str, member: str) -> bool:
    """Drop our membership; free the record and VNI if no host is left. True if freed."""
    store.delete(_member_key(cid, member))
    rkey = _record_key(cid)
    for _ in range(_ATTEMPTS):
        kv = store.get(rkey)
        if kv is None:
            return False
        if store.list(f"{MEMBERS}{cid}/"):
            return False
        try:
            store.atomic([Delete(rkey), Delete(f"{vnis.PREFIX}{kv.value['vni']}")], expect={rkey: kv.revision})
            return True
        except Conflict:
            continue  # someone joined meanwhile: look again
    return False


def members(store: Store, cid: str) -> list[str]:
    prefix = f"{MEMBERS}{cid}/"
    return [kv.key[len(prefix) :] for kv in store.list(prefix)]


def memberships(store: Store, member: str) -> list[str]:
    """Cluster ids of the overlays `member` belongs to."""
    out = []
    for kv in store.list(MEMBERS):
        cid, _, who = kv.key[len(MEMBERS) :].partition("/")
        if who == member:
            out.append(cid)
    return out


def forget_host(store: Store, member: str, ipam=None) -> list[str]:
    """Take a host that is gone for good out of every served overlay (and, given the
    cluster's SharedPoolIpam for that host, out of every shared pool), freeing what
    only it held. Refused while the host is alive (its node key is on a live lease).
    Returns one line per thing done."""
    if store.get(f"nodes/{member}") is not None:
        raise Conflict(
            f"host {member} is alive (its node key is on a live lease): stop its plugin "
            "first, or wait for its lease to expire"
        )
    done = []
    for cid in memberships(store, member):
        rec = store.get(_record_key(cid))
        name = rec.value.get("key", cid[:12]) if rec else cid[:12]
        freed = leave(store, cid, member)
        done.append(f"overlay {name}: left" + (", freed with its VXLAN id (no host left)" if freed else ""))
    if ipam is not None:
        for pool_id in ipam.pools_of_member():
            ipam.give_back(pool_id)
            done.append(f"pool {pool_id}: released by {member}")
    return done


# -- addresses: one endpoint per address in an overlay, across hosts ------------------------
# With Docker's default IPAM every engine hands out the same first addresses; these keys
# make the second endpoint with an address fail at CreateEndpoint, naming the holder.
ADDRS = "plugin-overlay-addrs/"


def _addr_key(cid: str, address: str) -> str:
    return f"{ADDRS}{cid}/{address.split('/')[0]}"


def claim_address(store: Store, cid: str, address: str, member: str, endpoint_id: str) -> None:
    key = _addr_key(cid, address)
    try:
        store.atomic([Put(key, {"host": member, "endpoint": endpoint_id})], expect={key: 0})
    except Conflict:
        held = store.get(key)
        if held is not None and held.value.get("endpoint") == endpoint_id:
            return  # ours already (a retried call)
        host = held.value.get("host", "?") if held else "?"
        raise Conflict(
            f"address {address.split('/')[0]} is already used on host {host} in this overlay: "
            "create the network with the plugin's IPAM (--ipam-driver) so that addresses "
            "are unique across hosts"
        ) from None


def release_address(store: Store, cid: str, address: str, endpoint_id: str) -> None:
    """Drop our claim (only ours: the key may have been taken again since)."""
    key = _addr_key(cid, address)
    held = store.get(key)
    if held is not None and held.value.get("endpoint") == endpoint_id:
        try:
            store.atomic([Delete(key)], expect={key: held.revision})
        except Conflict:
            pass


def claims_of(store: Store, member: str) -> list[tuple[str, str, str]]:
    """(cluster id, address, endpoint id) of every claim `member` holds."""
    out = []
    for kv in store.list(ADDRS):
        if kv.value.get("host") == member:
            cid, _, addr = kv.key[len(ADDRS) :].partition("/")
            out.append((cid, addr, kv.value.get("endpoint", "")))
    return out
