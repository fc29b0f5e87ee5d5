"""Serve this project's drivers and default IPAM over Docker's plugin protocol, so a
Docker engine can use them (`docker network create -d NAME`).

    DriverPlugin(driver)   any cnm.driverapi.Driver as an SDK NetworkPlugin
    IpamAdapter(ipam)      any cnm.ipamapi.Ipam as an SDK IpamPlugin
    build(...)             the real bridge driver / default IPAM, for `net plugin serve`
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from cnm.driverapi import Driver, EndpointInterface, IPAMData, JoinResult, NetworkSpec
from cnm.errors import InvalidParameter, Unavailable
from cnm.ipamapi import Ipam, Pool
from cnm.plugins.sdk import GENERIC, IpamPlugin, NetworkPlugin

ENABLE_IPV6 = "com.docker.network.enable_ipv6"
INTERNAL = "com.docker.network.internal"


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


class DriverPlugin(NetworkPlugin):
    """A cnm Driver behind the SDK: the wire is Docker's, the calls are the Driver's."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        caps = driver.capabilities()
        self.scope, self.connectivity_scope = caps.data_scope, caps.connectivity_scope

    def on_create_network(self, body: Mapping[str, Any]) -> None:
        opts = body.get("Options") or {}
        internal = _flag(opts.get(INTERNAL, False))
        generic = {str(k): str(v) for k, v in (opts.get(GENERIC) or {}).items()}
        options = self.driver.validate_options(generic, internal)

        def pools(raw: Any) -> tuple[IPAMData, ...]:
            return tuple(IPAMData(pool=d["Pool"], gateway=d.get("Gateway") or None,
                                  aux_addresses=dict(d.get("AuxAddresses") or {}),
                                  address_space=d.get("AddressSpace", "")) for d in raw or [])
        nid = body["NetworkID"]
        self.driver.create_network(NetworkSpec(
            id=nid, name=nid[:12], options=options, ipv4=pools(body.get("IPv4Data")),
            ipv6=pools(body.get("IPv6Data")), internal=internal, enable_ipv6=_flag(opts.get(ENABLE_IPV6, False))))

    def delete_network(self, network_id: str) -> None:
        self.driver.delete_network(network_id)

    def create_endpoint(self, network_id: str, endpoint_id: str, iface: EndpointInterface,
                        options: dict[str, Any]) -> EndpointInterface | None:
        return self.driver.create_endpoint(network_id, endpoint_id, iface, options)

    def delete_endpoint(self, network_id: str, endpoint_id: str) -> None:
        self.driver.delete_endpoint(network_id, endpoint_id)

    def endpoint_info(self, network_id: str, endpoint_id: str) -> dict[str, Any]:
        return self.driver.endpoint_info(network_id, endpoint_id)

    def join(self, network_id: str, endpoint_id: str, sandbox_key: str,
             options: dict[str, Any]) -> JoinResult:
        return self.driver.join(network_id, endpoint_id, sandbox_key, options)

    def leave(self, network_id: str, endpoint_id: str) -> None:
        self.driver.leave(network_id, endpoint_id)

    def program_external_connectivity(self, network_id: str, endpoint_id: str,
                                      options: dict[str, Any]) -> None:
        self.driver.program_external_connectivity(network_id, endpoint_id, options)

    def revoke_external_connectivity(self, network_id: str, endpoint_id: str) -> None:
        self.driver.revoke_external_connectivity(network_id, endpoint_id)

    def discover_new(self, discovery_type: int, data: dict[str, Any]) -> None:
        if discovery_type == 1:
            self.driver.discover_new("node", data)

    def discover_delete(self, discovery_type: int, data: dict[str, Any]) -> None:
        if discovery_type == 1:
            self.driver.discover_delete("node", data)


class IpamAdapter(IpamPlugin):
    """A cnm Ipam behind the SDK (the signatures already match; this documents it)."""

    def __init__(self, ipam: Ipam) -> None:
        self.ipam = ipam

    def default_address_spaces(self) -> tuple[str, str]:
        return self.ipam.default_address_spaces()

    def request_pool(self, address_space: str, pool: str | None, sub_pool: str | None,
                     options: Mapping[str, str], v6: bool) -> Pool:
        return self.ipam.request_pool(address_space, pool, sub_pool, options, v6)

    def release_pool(self, pool_id: str) -> None:
        self.ipam.release_pool(pool_id)

    def request_address(self, pool_id: str, address: str | None, options: Mapping[str, str]) -> str:
        return self.ipam.request_address(pool_id, address, options)

    def release_address(self, pool_id: str, address: str) -> None:
        self.ipam.release_address(pool_id, address)


@dataclass
class Served:
    network: NetworkPlugin | None
    ipam: IpamPlugin | None
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception:
                pass


def build(driver: str, *, root: str, ipam: bool = False, firewall: bool = True,
          cluster_store: str | None = None, advertise: str | None = None) -> Served:
    """The real driver in the current network namespace, and (with `ipam`) the default
    IPAM persisted in <root>/plugin-ipam.db. Raises Unavailable for overlay."""
    if driver == "overlay":
        if not cluster_store or not advertise:
            raise InvalidParameter("serving the overlay driver needs --cluster-store etcd://HOST:PORT "
                                   "and --advertise ADDR")
        raise Unavailable("serving the overlay driver as a plugin is not available yet: its peer "
                          "distribution over the cluster store is wired only inside `net daemon`; "
                          "serve --driver bridge, or run the cnm daemon for overlay networks")
    if driver != "bridge":
        raise InvalidParameter(f"unknown driver {driver!r}: serve bridge or overlay")
    from cnm.osl.netlink import Netlink
    from drivers.bridge import BridgeDriver

    served = Served(None, None)
    nl = Netlink()
    served.closers.append(nl.close)
    fw = None
    if firewall:
        from cnm.firewall import Firewall
        from drivers.bridge.nftables import NftablesBridgeFirewall
        fw = NftablesBridgeFirewall(Firewall())
    served.network = DriverPlugin(BridgeDriver(lambda: nl, firewall=fw, peer_in_sandbox=False))
    if ipam:
        from cnm.store.sqlite import SQLiteStore
        from ipam.default import DefaultIpam
        os.makedirs(root, mode=0o711, exist_ok=True)
        store = SQLiteStore(os.path.join(root, "plugin-ipam.db"))
        served.closers.append(store.close)
        served.ipam = IpamAdapter(DefaultIpam({"LocalDefault": store, "GlobalDefault": store}))
    return served
