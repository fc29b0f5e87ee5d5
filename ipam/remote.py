"""RemoteIpam: cnm.ipamapi.Ipam implemented by calls to an IpamDriver plugin.

Errors travel in the field `Error` (network drivers use `Err`). Addresses go to the
plugin as plain IPs (Docker sends net.IP strings) and come back as CIDRs. Lazy like
the remote driver: nothing is contacted before the first call.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Mapping
from typing import Any

from cnm import labels
from cnm.addresses import host_of
from cnm.errors import CNMError, InternalError
from cnm.ipamapi import Pool
from cnm.plugins import IPAM_DRIVER
from cnm.plugins.client import DEFAULT_TIMEOUT, Fields, PluginClient
from cnm.plugins.discovery import Discovery, is_valid_name

MAC_OPTION = labels.ENDPOINT_MAC


def _plain(address: str) -> str:
    return str(host_of(address, "address")) if address else ""


class RemoteIpam:
    """cnm.ipamapi.Ipam for one plugin."""

    def __init__(self, name: str, client: PluginClient) -> None:
        self.name = name
        self.client = client
        self._caps: dict[str, bool] | None = None
        self._lock = threading.Lock()

    def _call(self, method: str, body: Any = None) -> dict:
        self.client.require(IPAM_DRIVER)
        return self.client.call(f"IpamDriver.{method}", body, err_field="Error")

    def capabilities(self) -> dict[str, bool]:
        """{"RequiresMACAddress", "RequiresRequestReplay"}; a failing call = no capabilities."""
        with self._lock:
            if self._caps is None:
                try:
                    f = Fields(self.name, "GetCapabilities", self._call("GetCapabilities"))
                    self._caps = {
                        "RequiresMACAddress": f.bool("RequiresMACAddress"),
                        "RequiresRequestReplay": f.bool("RequiresRequestReplay"),
                    }
                except CNMError:
                    self._caps = {"RequiresMACAddress": False, "RequiresRequestReplay": False}
            return dict(self._caps)

    def default_address_spaces(self) -> tuple[str, str]:
        f = Fields(self.name, "GetDefaultAddressSpaces", self._call("GetDefaultAddressSpaces"))
        return (f.str("LocalDefaultAddressSpace", required=True), f.str("GlobalDefaultAddressSpace", required=True))

    def request_pool(
        self, address_space: str, pool: str | None, sub_pool: str | None, options: Mapping[str, str], v6: bool
    ) -> Pool:
        doc = self._call(
            "RequestPool",
            {
                "AddressSpace": address_space,
                "Pool": pool or "",
                "SubPool": sub_pool or "",
                "Options": dict(options or {}),
                "V6": bool(v6),
            },
        )
        f = Fields(self.name, "RequestPool", doc)
        pool_id = f.str("PoolID", required=True)
        subnet = f.str("Pool", required=True)
        try:
            net = ipaddress.ip_network(subnet, strict=False)
        except ValueError:
            raise InternalError(
                f"network plugin {self.name}: RequestPool answer field Pool must be a CIDR, got {subnet!r}"
            ) from None
        if (net.version == 6) != bool(v6):
            raise InternalError(
                f"network plugin {self.name}: RequestPool answered {subnet} for an IPv{6 if v6 else 4} request"
            )
        return Pool(pool_id, subnet, f.str_map("Data"))

    def release_pool(self, pool_id: str) -> None:
        self._call("ReleasePool", {"PoolID": pool_id})

    def request_address(self, pool_id: str, address: str | None, options: Mapping[str, str]) -> str:
        doc = self._call(
            "RequestAddress", {"PoolID": pool_id, "Address": _plain(address or ""), "Options": dict(options or {})}
        )
        return Fields(self.name, "RequestAddress", doc).cidr("Address", required=True)

    def release_address(self, pool_id: str, address: str) -> None:
        self._call("ReleaseAddress", {"PoolID": pool_id, "Address": _plain(address)})


def resolver(
    discovery: Discovery, *, timeout: float = DEFAULT_TIMEOUT, activate_retry: float = 2.0
) -> Callable[[str], RemoteIpam | None]:
    """For IpamRegistry(fallback=...): a RemoteIpam for a plugin found by name, or None."""

    def resolve(name: str) -> RemoteIpam | None:
        spec = discovery.find(name) if is_valid_name(name) else None
        if spec is None:
            return None
        return RemoteIpam(name, PluginClient(spec, timeout=timeout, activate_retry=activate_retry))

    return resolve
