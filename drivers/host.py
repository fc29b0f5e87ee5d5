"""The host driver (network "host"): the container shares the host's namespace.

No kernel objects. The core itself puts such containers in the host namespace
instead of creating a sandbox, so `join` is never part of that path: calling it is a
core bug or a misuse, answered with Forbidden.
"""

from __future__ import annotations

from collections.abc import Mapping

from cnm.driverapi import JoinResult
from cnm.errors import Forbidden
from drivers.null import NullDriver

NAME = "host"


class HostDriver(NullDriver):
    name = NAME

    def join(self, network_id: str, endpoint_id: str, sandbox_key: str, options: Mapping[str, str]) -> JoinResult:
        raise Forbidden(
            "the host network has no sandbox to join: containers on it use the host's network namespace directly"
        )


def register(registry) -> HostDriver:
    driver = HostDriver()
    registry.register(driver)
    return driver
