"""The null IPAM (Docker's "null" driver): one catch-all pool, no addresses.

For networks whose driver needs no IP configuration (null, host): request_pool always
answers 0.0.0.0/0 (::/0 for IPv6) with a fixed pool id; nothing is stored.
"""

from __future__ import annotations

from collections.abc import Mapping

from cnm.errors import InvalidParameter, NotFound
from cnm.ipamapi import GLOBAL_DEFAULT, LOCAL_DEFAULT, Pool

ADDRESS_SPACE = "null"
POOL_V4, POOL_V6 = "0.0.0.0/0", "::/0"
POOL_ID_V4, POOL_ID_V6 = f"{ADDRESS_SPACE}/{POOL_V4}", f"{ADDRESS_SPACE}/{POOL_V6}"
# Callers that pass the usual default spaces are served too.
_SPACES = ("", ADDRESS_SPACE, LOCAL_DEFAULT, GLOBAL_DEFAULT)


class NullIpam:
    name = "null"

    def default_address_spaces(self) -> tuple[str, str]:
        """("null", "null"): the null IPAM has one address space."""
        return ADDRESS_SPACE, ADDRESS_SPACE

    def request_pool(
        self, address_space: str, pool: str | None, sub_pool: str | None, options: Mapping[str, str], v6: bool
    ) -> Pool:
        """The catch-all pool; a specific subnet or ip-range is refused. Idempotent."""
        if address_space not in _SPACES:
            raise InvalidParameter(f"unknown address space {address_space!r} for the null IPAM")
        default = POOL_V6 if v6 else POOL_V4
        if (pool and pool != default) or sub_pool:
            raise InvalidParameter(
                "the null IPAM does not handle specific subnets or ip-ranges; "
                "drop --subnet/--ip-range or use --ipam-driver default"
            )
        return Pool(POOL_ID_V6 if v6 else POOL_ID_V4, default, {})

    def release_pool(self, pool_id: str) -> None:
        """Nothing to free. Idempotent."""

    def request_address(self, pool_id: str, address: str | None, options: Mapping[str, str]) -> str:
        """Always refused: there is nothing to hand out."""
        if pool_id not in (POOL_ID_V4, POOL_ID_V6):
            raise NotFound(f"address pool {pool_id} not found in the null IPAM")
        raise InvalidParameter("the null IPAM hands out no addresses")

    def release_address(self, pool_id: str, address: str) -> None:
        """Nothing to free. Idempotent."""
