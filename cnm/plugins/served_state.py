"""What a served driver was told by the Docker engine, kept across plugin restarts.

A Docker engine never replays CreateNetwork or CreateEndpoint to a plugin that
restarted: it goes on calling Join and DeleteEndpoint for networks the plugin must
still know. So `net plugin serve` records each network and endpoint it made (in its
--root SQLite database) and restores them into the driver when it starts again.

Keys:
    served/net/<docker network id>              {"spec": …, "driver_id": …, "extra": {…}}
    served/ep/<docker network id>/<endpoint id> {"address", "address_v6", "mac", "options", "joined"}
    intent/network-create/<docker network id>   {"kind", "id", "data": {"driver_id"}}: written before
                                                the driver makes anything, gone with the record
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from cnm.driverapi import EndpointInterface, IPAMData, NetworkSpec
from cnm.intents import NETWORK_CREATE, Intents
from cnm.store import Delete, Put, Store

NET, EP = "served/net/", "served/ep/"


# -- records (pure) --------------------------------------------------------------------------


def _pool_record(p: IPAMData) -> dict:
    return {"pool": p.pool, "gateway": p.gateway, "aux": dict(p.aux_addresses), "space": p.address_space}


def _pool_from(rec: Mapping[str, Any]) -> IPAMData:
    return IPAMData(
        pool=rec["pool"],
        gateway=rec.get("gateway"),
        aux_addresses=dict(rec.get("aux") or {}),
        address_space=rec.get("space", ""),
    )


def spec_record(spec: NetworkSpec) -> dict:
    return {
        "id": spec.id,
        "name": spec.name,
        "options": dict(spec.options),
        "ipv4": [_pool_record(p) for p in spec.ipv4],
        "ipv6": [_pool_record(p) for p in spec.ipv6],
        "internal": spec.internal,
        "enable_ipv6": spec.enable_ipv6,
    }


def spec_from(rec: Mapping[str, Any]) -> NetworkSpec:
    return NetworkSpec(
        id=rec["id"],
        name=rec.get("name", ""),
        options=dict(rec.get("options") or {}),
        ipv4=tuple(_pool_from(p) for p in rec.get("ipv4") or ()),
        ipv6=tuple(_pool_from(p) for p in rec.get("ipv6") or ()),
        internal=bool(rec.get("internal")),
        enable_ipv6=bool(rec.get("enable_ipv6")),
    )


def iface_record(iface: EndpointInterface, options: Mapping[str, Any]) -> dict:
    return {
        "address": iface.address,
        "address_v6": iface.address_v6,
        "mac": iface.mac,
        "options": {str(k): v for k, v in options.items() if isinstance(v, (str, int, float, bool))},
        "joined": False,
    }


def iface_from(rec: Mapping[str, Any]) -> EndpointInterface:
    return EndpointInterface(rec.get("address"), rec.get("address_v6"), rec.get("mac"))


# -- the store ---------------------------------------------------------------------------------


class ServedState:
    """Networks and endpoints a served driver holds, by Docker's ids."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def networks(self) -> list[tuple[str, dict]]:
        return [(kv.key[len(NET) :], kv.value) for kv in self.store.list(NET)]

    def save_network(
        self, network_id: str, spec: NetworkSpec, driver_id: str | None = None, extra: Mapping[str, Any] | None = None
    ) -> None:
        """The network's record; its creation's intent (if any) goes in the same transaction."""
        self.store.atomic(
            [
                Put(
                    f"{NET}{network_id}",
                    {"spec": spec_record(spec), "driver_id": driver_id or spec.id, "extra": dict(extra or {})},
                ),
                Intents.done_op(NETWORK_CREATE, network_id),
            ]
        )

    def creating(self, network_id: str, driver_id: str) -> None:
        """Written before the driver makes the network's objects: a crash before the
        record is saved leaves the next start what to delete (cnm.intents)."""
        Intents(self.store).write(NETWORK_CREATE, network_id, {"driver_id": driver_id})

    def not_created(self, network_id: str) -> None:
        """The creation failed and was undone: its intent goes."""
        Intents(self.store).done(NETWORK_CREATE, network_id)

    def interrupted(self) -> list[tuple[str, str]]:
        """(Docker network id, driver id) of creations a crash interrupted."""
        return [(i.id, str(i.data.get("driver_id") or i.id)) for i in Intents(self.store).pending(NETWORK_CREATE)]

    def pools_in_use(self) -> set[str]:
        """The canonical subnet of every pool the recorded networks use."""
        out = set()
        for _, rec in self.networks():
            for pool in list(rec["spec"].get("ipv4") or []) + list(rec["spec"].get("ipv6") or []):
                try:
                    out.add(str(ipaddress.ip_network(pool["pool"], strict=False)))
                except (KeyError, ValueError):
                    continue
        return out

    def drop_network(self, network_id: str) -> None:
        """The network and every endpoint record under it, in one transaction."""
        ops: list = [Delete(kv.key) for kv in self.store.list(f"{EP}{network_id}/")]
        ops.append(Delete(f"{NET}{network_id}"))
        self.store.atomic(ops)

    def endpoints(self, network_id: str) -> list[tuple[str, dict]]:
        prefix = f"{EP}{network_id}/"
        return [(kv.key[len(prefix) :], kv.value) for kv in self.store.list(prefix)]

    def endpoint(self, network_id: str, endpoint_id: str) -> dict | None:
        kv = self.store.get(f"{EP}{network_id}/{endpoint_id}")
        return kv.value if kv else None

    def save_endpoint(self, network_id: str, endpoint_id: str, rec: Mapping[str, Any]) -> None:
        self.store.atomic([Put(f"{EP}{network_id}/{endpoint_id}", dict(rec))])

    def set_joined(self, network_id: str, endpoint_id: str, joined: bool) -> None:
        rec = self.endpoint(network_id, endpoint_id)
        if rec is not None and rec.get("joined") != joined:
            self.save_endpoint(network_id, endpoint_id, {**rec, "joined": joined})

    def drop_endpoint(self, network_id: str, endpoint_id: str) -> None:
        self.store.delete(f"{EP}{network_id}/{endpoint_id}")
