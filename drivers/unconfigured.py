"""A stand-in for a driver this daemon cannot run as configured (overlay without a
cluster store): every use answers with what to configure, instead of "not found"."""

from __future__ import annotations

from collections.abc import Mapping

from cnm.driverapi import GLOBAL, Capability
from cnm.errors import InvalidParameter


class Unconfigured:
    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self.message = message

    def capabilities(self) -> Capability:
        return Capability(GLOBAL, GLOBAL)

    def validate_options(self, options: Mapping[str, str], internal: bool) -> dict[str, str]:
        raise InvalidParameter(self.message)

    def __getattr__(self, verb: str):
        def refuse(*_args, **_kwargs):
            raise InvalidParameter(self.message)

        return refuse
