"""Cluster-wide VXLAN network identifiers, allocated with etcd transactions.

Each VNI in use is a key `vni/<n>`; taking one is a transaction that succeeds only if
the key does not exist, so two hosts creating networks at the same moment never get
the same VNI. Docker's overlay starts at 256."""

from __future__ import annotations

from cnm import labels
from cnm.errors import Conflict, InvalidParameter, Unavailable
from cnm.store import Put, Store
from cnm.strictnum import parse_int

FIRST_VNI = 256
LAST_VNI = (1 << 24) - 1
VNI_MIN, VNI_MAX = 1, LAST_VNI  # what a VXLAN header carries (0 is reserved here)
PREFIX = "vni/"
VNI_OPTION = labels.VXLANID_LIST


def parse_vni(value: object, key: str = VNI_OPTION) -> int:
    """ "256" (or Docker's one-element list "256") -> 256."""
    items = [s.strip() for s in str(value).split(",") if s.strip()]
    if len(items) != 1:
        raise InvalidParameter(
            f"option {key} must hold exactly one VXLAN id, got {value!r}: "
            "this driver carries all subnets of a network on one VXLAN segment"
        )
    try:
        vni = parse_int(items[0])  # ASCII digits only
    except ValueError:
        raise InvalidParameter(
            f"invalid VXLAN id {items[0]!r} in option {key}: want an integer {VNI_MIN}..{VNI_MAX}"
        ) from None
    if not VNI_MIN <= vni <= VNI_MAX:
        raise InvalidParameter(f"invalid VXLAN id {vni} in option {key}: must be {VNI_MIN}..{VNI_MAX}")
    return vni


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
        taken = {int(kv.key[len(PREFIX) :]) for kv in store.list(PREFIX) if kv.key[len(PREFIX) :].isdigit()}
        vni = first_free(taken)
        try:
            store.atomic([Put(f"{PREFIX}{vni}", {"network": network_id})], expect={f"{PREFIX}{vni}": 0})
            return vni
        except Conflict:
            continue  # another host took it between our list and our transaction
    raise Conflict("could not allocate a VXLAN id: too many concurrent network creations; retry")


def release(store: Store, vni: int) -> None:
    store.delete(f"{PREFIX}{vni}")
