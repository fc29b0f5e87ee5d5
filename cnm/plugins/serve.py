"""Serve this project's drivers and default IPAM over Docker's plugin protocol, so a
Docker engine can use them (`docker network create -d NAME`).

    DriverPlugin(driver)   any cnm.driverapi.Driver as an SDK NetworkPlugin
    IpamAdapter(ipam)      any cnm.ipamapi.Ipam as an SDK IpamPlugin

The real drivers and IPAM are put together for `net plugin serve` in cnm.plugin_roots.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from cnm import labels
from cnm.driverapi import Driver, EndpointInterface, JoinResult, NetworkSpec
from cnm.errors import NotFound
from cnm.ipamapi import Ipam, Pool
from cnm.plugins.sdk import GENERIC, IpamPlugin, NetworkPlugin, ipam_data
from cnm.plugins.served_state import ServedState, iface_from, iface_record, spec_from
from cnm.reconcile.decide import ServedFate, served_endpoint_fate

log = logging.getLogger(__name__)

ENABLE_IPV6 = labels.ENABLE_IPV6
INTERNAL = labels.INTERNAL


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


class DriverPlugin(NetworkPlugin):
    """A cnm Driver behind the SDK: the wire is Docker's, the calls are the Driver's.

    With a ServedState, every network and endpoint made is recorded, and `restore()`
    rebuilds them in the driver after a plugin restart (Docker never replays them)."""

    def __init__(self, driver: Driver, state: ServedState | None = None) -> None:
        self.driver = driver
        self.state = state
        caps = driver.capabilities()
        self.scope, self.connectivity_scope = caps.data_scope, caps.connectivity_scope
        self._ids: dict[str, str] = {}  # Docker's network id -> the driver's (if they differ)
        self.after_restore: list[Callable[[], None]] = []  # e.g. the firewall rendered from what was restored

    def driver_id(self, network_id: str) -> str:
        return self._ids.get(network_id, network_id)

    def network_spec(self, body: Mapping[str, Any], generic: dict[str, str]) -> NetworkSpec:
        opts = body.get("Options") or {}
        internal = _flag(opts.get(INTERNAL, False))
        options = self.driver.validate_options(generic, internal)
        nid = body["NetworkID"]
        return NetworkSpec(
            id=nid,
            name=nid[:12],
            options=options,
            ipv4=tuple(ipam_data(body.get("IPv4Data"))),
            ipv6=tuple(ipam_data(body.get("IPv6Data"))),
            internal=internal,
            enable_ipv6=_flag(opts.get(ENABLE_IPV6, False)),
        )

    def on_create_network(self, body: Mapping[str, Any]) -> None:
        opts = body.get("Options") or {}
        generic = {str(k): str(v) for k, v in (opts.get(GENERIC) or {}).items()}
        spec = self.network_spec(body, generic)
        self._creating(body["NetworkID"], spec.id)
        try:
            self.driver.create_network(spec)
        except BaseException:
            self._not_created(body["NetworkID"])
            raise
        self._record_network(body["NetworkID"], spec, lambda: self.driver.delete_network(spec.id))

    def _creating(self, network_id: str, driver_id: str) -> None:
        """Before the driver makes anything: a crash before the record leaves the next
        start the network to delete (the engine never heard of it)."""
        if self.state is not None:
            self.state.creating(network_id, driver_id)

    def _not_created(self, network_id: str) -> None:
        if self.state is not None:
            quietly(lambda: self.state.not_created(network_id))  # type: ignore[union-attr]

    def _record_network(
        self, network_id: str, spec: NetworkSpec, undo: Callable[[], None], extra: Mapping[str, Any] | None = None
    ) -> None:
        if self.state is None:
            return
        try:
            self.state.save_network(network_id, spec, spec.id, extra)
        except BaseException:
            quietly(undo)
            self._not_created(network_id)
            raise

    def delete_network(self, network_id: str) -> None:
        self.driver.delete_network(self.driver_id(network_id))
        self._ids.pop(network_id, None)
        if self.state is not None:
            self.state.drop_network(network_id)

    def create_endpoint(
        self, network_id: str, endpoint_id: str, iface: EndpointInterface, options: dict[str, Any]
    ) -> EndpointInterface | None:
        got = self.driver.create_endpoint(self.driver_id(network_id), endpoint_id, iface, options)
        if self.state is not None:
            merged = EndpointInterface(
                iface.address or (got.address if got else None),
                iface.address_v6 or (got.address_v6 if got else None),
                iface.mac or (got.mac if got else None),
            )
            try:
                self.state.save_endpoint(network_id, endpoint_id, iface_record(merged, options))
            except BaseException:
                quietly(lambda: self.driver.delete_endpoint(self.driver_id(network_id), endpoint_id))
                raise
        return got

    def delete_endpoint(self, network_id: str, endpoint_id: str) -> None:
        self.driver.delete_endpoint(self.driver_id(network_id), endpoint_id)
        if self.state is not None:
            self.state.drop_endpoint(network_id, endpoint_id)

    def endpoint_info(self, network_id: str, endpoint_id: str) -> dict[str, Any]:
        return self.driver.endpoint_info(self.driver_id(network_id), endpoint_id)

    def join(self, network_id: str, endpoint_id: str, sandbox_key: str, options: dict[str, Any]) -> JoinResult:
        result = self.driver.join(self.driver_id(network_id), endpoint_id, sandbox_key, options)
        if self.state is not None:
            self.state.set_joined(network_id, endpoint_id, True)
        return result

    def leave(self, network_id: str, endpoint_id: str) -> None:
        self.driver.leave(self.driver_id(network_id), endpoint_id)
        if self.state is not None:
            self.state.set_joined(network_id, endpoint_id, False)

    def program_external_connectivity(self, network_id: str, endpoint_id: str, options: dict[str, Any]) -> None:
        self.driver.program_external_connectivity(self.driver_id(network_id), endpoint_id, options)

    def revoke_external_connectivity(self, network_id: str, endpoint_id: str) -> None:
        self.driver.revoke_external_connectivity(self.driver_id(network_id), endpoint_id)

    def discover_new(self, discovery_type: int, data: dict[str, Any]) -> None:
        if discovery_type == 1:
            self.driver.discover_new("node", data)

    def discover_delete(self, discovery_type: int, data: dict[str, Any]) -> None:
        if discovery_type == 1:
            self.driver.discover_delete("node", data)

    # -- after a restart ----------------------------------------------------------------------

    def restore(self) -> list[str]:
        """Rebuild every recorded network and endpoint in the driver. Returns one
        line per thing that could not be restored (also logged); the rest serves on."""
        problems: list[str] = []
        if self.state is None:
            return problems
        problems += self._roll_back_creations()
        for nid, rec in self.state.networks():
            try:
                spec = spec_from(rec["spec"])
            except (KeyError, TypeError, ValueError) as exc:
                problems.append(f"network {nid[:12]}: unreadable record ({exc!r})")
                continue
            self._ids[nid] = rec.get("driver_id") or spec.id
            try:
                self.restore_network(nid, spec, rec)
            except Exception as exc:  # one bad record must not stop the others being served
                problems.append(f"network {nid[:12]}: {exc}")
                continue
            for eid, ep in self.state.endpoints(nid):
                try:
                    self._restore_endpoint(nid, spec.id, eid, ep)
                except Exception as exc:
                    problems.append(f"endpoint {eid[:12]} of network {nid[:12]}: {exc}")
        for line in problems:
            log.warning("restore: %s", line)
        for step in self.after_restore:
            step()
        return problems

    def _roll_back_creations(self) -> list[str]:
        """Networks whose creation a crash interrupted: the engine was never told they
        exist, so whatever the driver made of them goes."""
        assert self.state is not None
        problems = []
        recorded = {nid for nid, _ in self.state.networks()}
        for nid, driver_id in self.state.interrupted():
            if nid not in recorded:
                try:
                    self.driver.delete_network(driver_id)
                except Exception as exc:
                    problems.append(f"network {nid[:12]}: rolling back its interrupted creation: {exc}")
                    continue
                log.warning(
                    "network %s: its creation was interrupted by a crash; what the driver made is gone", nid[:12]
                )
            self.state.not_created(nid)
        return problems

    def _restore_endpoint(self, network_id: str, driver_id: str, endpoint_id: str, rec: Mapping[str, Any]) -> None:
        """Re-learn one endpoint (cnm.reconcile.decide.served_endpoint_fate says how)."""
        iface, options = iface_from(rec), dict(rec.get("options") or {})
        try:
            self.driver.restore_endpoint(driver_id, endpoint_id, iface, options)
            restored = True
        except NotFound:
            restored = False
        fate = served_endpoint_fate(joined=bool(rec.get("joined")), restored=restored)
        if fate is ServedFate.KEEP:
            self.restored_endpoint(network_id, endpoint_id, rec)
        elif fate is ServedFate.UNPLUG:
            self.driver.leave(driver_id, endpoint_id)  # a Join a crash interrupted
            log.warning(
                "endpoint %s of network %s: a Join a crash cut short is undone (the engine never heard it succeed)",
                endpoint_id[:12],
                network_id[:12],
            )
        else:
            if fate is ServedFate.UNJOIN:
                assert self.state is not None
                self.state.set_joined(network_id, endpoint_id, False)
                log.warning(
                    "endpoint %s of network %s was joined but its interface is gone: recorded as "
                    "left (the engine's next Join makes it again)",
                    endpoint_id[:12],
                    network_id[:12],
                )
            self.driver.create_endpoint(driver_id, endpoint_id, iface, options)

    def restore_network(self, network_id: str, spec: NetworkSpec, rec: Mapping[str, Any]) -> None:
        self.driver.restore_network(spec)

    def restored_endpoint(self, network_id: str, endpoint_id: str, rec: Mapping[str, Any]) -> None:
        """Hook: an endpoint is back in the driver."""


def quietly(step: Callable[[], object]) -> None:
    """Run a rollback step; a failure is logged, not raised (the original error matters more)."""
    try:
        step()
    except Exception as exc:  # the original error matters more
        log.warning("rollback step failed: %s", exc)


class IpamAdapter(IpamPlugin):
    """A cnm Ipam behind the SDK (the signatures already match; this documents it)."""

    def __init__(self, ipam: Ipam) -> None:
        self.ipam = ipam
        self.requires_mac_address = bool(getattr(ipam, "requires_mac_address", False))

    def default_address_spaces(self) -> tuple[str, str]:
        return self.ipam.default_address_spaces()

    def request_pool(
        self, address_space: str, pool: str | None, sub_pool: str | None, options: Mapping[str, str], v6: bool
    ) -> Pool:
        return self.ipam.request_pool(address_space, pool, sub_pool, options, v6)

    def release_pool(self, pool_id: str) -> None:
        self.ipam.release_pool(pool_id)

    def request_address(self, pool_id: str, address: str | None, options: Mapping[str, str]) -> str:
        return self.ipam.request_address(pool_id, address, options)

    def release_address(self, pool_id: str, address: str) -> None:
        self.ipam.release_address(pool_id, address)
