"""Fakes at the driver seam for controller tests: a driver that records the kernel
objects it "made" and can be told to fail at any verb."""

from __future__ import annotations

from collections.abc import Mapping

from cnm.driverapi import Capability, EndpointInterface, JoinResult, NetworkSpec
from cnm.errors import InternalError, InvalidParameter


class FakeDriver:
    def __init__(self, name: str = "fake", scope: str = "local") -> None:
        self.name = name
        self.scope = scope
        self.networks: dict[str, NetworkSpec] = {}
        self.endpoints: dict[str, EndpointInterface] = {}
        self.joined: set[str] = set()
        self.fail_on: set[str] = set()

    def _maybe_fail(self, verb: str) -> None:
        if verb in self.fail_on:
            raise InternalError(f"{self.name}: injected failure in {verb}")

    def capabilities(self) -> Capability:
        return Capability(self.scope, self.scope)

    def validate_options(self, options: Mapping[str, str], internal: bool) -> dict[str, str]:
        bad = [k for k in options if not k.startswith(("fake.", "com.docker."))]
        if bad:
            raise InvalidParameter(f"{self.name}: unknown option {bad[0]}")
        return dict(options)

    def create_network(self, spec: NetworkSpec) -> None:
        self._maybe_fail("create_network")
        self.networks[spec.id] = spec

    def restore_network(self, spec: NetworkSpec) -> None:
        self.networks[spec.id] = spec

    def delete_network(self, network_id: str) -> None:
        self._maybe_fail("delete_network")
        self.networks.pop(network_id, None)

    def create_endpoint(self, network_id, endpoint_id, iface, options) -> EndpointInterface:
        self._maybe_fail("create_endpoint")
        out = EndpointInterface(iface.address, iface.address_v6, iface.mac or "02:42:00:00:00:01")
        self.endpoints[endpoint_id] = out
        return out

    def delete_endpoint(self, network_id, endpoint_id) -> None:
        self._maybe_fail("delete_endpoint")
        self.endpoints.pop(endpoint_id, None)

    def restore_endpoint(self, network_id, endpoint_id, iface, options) -> None:
        self.endpoints[endpoint_id] = iface

    def endpoint_info(self, network_id, endpoint_id) -> dict:
        return {}

    def join(self, network_id, endpoint_id, sandbox_key, options) -> JoinResult:
        self._maybe_fail("join")
        self.joined.add(endpoint_id)
        return JoinResult(src_ifname="")

    def leave(self, network_id, endpoint_id) -> None:
        self.joined.discard(endpoint_id)

    def program_external_connectivity(self, network_id, endpoint_id, options) -> None:
        self._maybe_fail("program_external_connectivity")

    def revoke_external_connectivity(self, network_id, endpoint_id) -> None:
        pass

    def discover_new(self, kind, data) -> None:
        pass

    def discover_delete(self, kind, data) -> None:
        pass
