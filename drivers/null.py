"""The null driver (network "none"): the sandbox keeps only its loopback.

No kernel objects. Join returns `JoinResult(src_ifname="")`: by convention an empty
src_ifname means "nothing to move into the sandbox" and the core must skip the
move/rename/address/route steps for this endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping

from cnm.driverapi import LOCAL, Capability, EndpointInterface, JoinResult, NetworkSpec
from cnm.errors import InvalidParameter

NAME = "null"


def refuse_options(driver: str, options: Mapping[str, str]) -> dict[str, str]:
    if options:
        raise InvalidParameter(f"the {driver} driver takes no options; got {', '.join(sorted(options))}")
    return {}


class NullDriver:
    name = NAME

    def capabilities(self) -> Capability:
        return Capability(data_scope=LOCAL, connectivity_scope=LOCAL)

    def validate_options(self, options: Mapping[str, str], internal: bool) -> dict[str, str]:
        return refuse_options(self.name, options)

    def create_network(self, spec: NetworkSpec) -> None:
        pass

    def delete_network(self, network_id: str) -> None:
        pass

    def restore_network(self, spec: NetworkSpec) -> None:
        pass

    def create_endpoint(
        self, network_id: str, endpoint_id: str, iface: EndpointInterface, options: Mapping[str, str]
    ) -> EndpointInterface:
        return iface

    def restore_endpoint(
        self, network_id: str, endpoint_id: str, iface: EndpointInterface, options: Mapping[str, object]
    ) -> None:
        """Nothing in the kernel to re-learn."""

    def delete_endpoint(self, network_id: str, endpoint_id: str) -> None:
        pass

    def endpoint_info(self, network_id: str, endpoint_id: str) -> dict:
        return {}

    def join(self, network_id: str, endpoint_id: str, sandbox_key: str, options: Mapping[str, str]) -> JoinResult:
        return JoinResult(src_ifname="")  # "" = nothing to move; the sandbox keeps lo only

    def leave(self, network_id: str, endpoint_id: str) -> None:
        pass

    def program_external_connectivity(self, network_id: str, endpoint_id: str, options: Mapping[str, object]) -> None:
        pass

    def revoke_external_connectivity(self, network_id: str, endpoint_id: str) -> None:
        pass

    def discover_new(self, kind: str, data: Mapping[str, object]) -> None:
        pass

    def discover_delete(self, kind: str, data: Mapping[str, object]) -> None:
        pass


def register(registry) -> NullDriver:
    driver = NullDriver()
    registry.register(driver)
    return driver
