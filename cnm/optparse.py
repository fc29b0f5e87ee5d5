"""Parsing of driver option values shared by the built-in drivers (pure)."""

from __future__ import annotations

from cnm import labels
from cnm.errors import InvalidParameter
from cnm.strictnum import parse_int

MIN_MTU, MAX_MTU = 68, 65535


def parse_mtu(value: object, key: str = labels.MTU) -> int:
    """`com.docker.network.driver.mtu` and friends: an integer 68..65535."""
    try:
        mtu = parse_int(str(value).strip())  # ASCII digits: int() also takes "١٥٠٠" and "1_500"
    except ValueError:
        raise InvalidParameter(
            f"invalid value {value!r} for option {key}: want an integer {MIN_MTU}..{MAX_MTU}"
        ) from None
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise InvalidParameter(f"invalid MTU {mtu} for option {key}: must be {MIN_MTU}..{MAX_MTU}")
    return mtu
