"""Cluster-wide VXLAN network identifiers, allocated with etcd transactions.

Each VNI in use is a key `vni/<n>`; taking one is a transaction that succeeds only if
the key does not exist, so two hosts creating networks at the same moment never get
the same VNI. Docker's overlay starts at 256."""
from __future__ import annotations

from cnm import labels
from cnm.errors import Conflict, Unavailable
from cnm.store import Put, Store

FIRST_VNI = 256
LAST_VNI = (1 << 24) - 1
PREFIX = "vni/"
VNI_OPTION = labels.VXLANID_LIST


def first_free(taken: set[int]) -> int:
    """The lowest VNI from FIRST_VNI that is not taken. Pure."""
    vni = FIRST_VNI
    while vni in taken:
        vni += 1
    if vni > LAST_VNI:
        raise Unavailable("no free VXLAN network identifier left")
    return vni


def allocate(store: Store, network_id: str, attempts: int = 16) -> int:
    for _ in range(attempts):
        taken = {int(kv.key[len(PREFIX):]) for kv in store.list(PREFIX) if kv.key[len(PREFIX):].isdigit()}
        vni = first_free(taken)
        try:
            store.atomic([Put(f"{PREFIX}{vni}", {"network": network_id})], expect={f"{PREFIX}{vni}": 0})
            return vni
        except Conflict:
            continue   # another host took it between our list and our transaction
    raise Conflict("could not allocate a VXLAN id: too many concurrent network creations; retry")


def release(store: Store, vni: int) -> None:
    store.delete(f"{PREFIX}{vni}")
