"""Predefined address pools: Docker's defaults, the `--default-address-pool` parser,
and the choice of the first free subnet among them. Pure functions, no state.

Candidates are never materialised: 10.0.0.0/8 split into /24s is 65,536 subnets, so
the search walks each base arithmetically and jumps over blocked ranges with a
binary search, costing O(log n) per blocked range met instead of one step per subnet.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from cnm.errors import InvalidParameter

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class PoolSpec:
    """One `--default-address-pool`: split `base` into subnets of prefix length `size`."""

    base: Network
    size: int

    @property
    def version(self) -> int:
        return self.base.version

    def count(self) -> int:
        return 1 << (self.size - self.base.prefixlen)

    def subnets(self) -> Iterator[Network]:
        """Every candidate, lazily, in address order."""
        step = 1 << (self.base.max_prefixlen - self.size)
        start = int(self.base.network_address)
        for i in range(self.count()):
            yield type(self.base)((start + i * step, self.size))


# Docker's defaults (libnetwork ipamutils): 31 local pools, 65,536 global ones.
LOCAL_DEFAULT_POOLS: tuple[tuple[str, int], ...] = tuple(
    [(f"172.{n}.0.0/16", 16) for n in range(17, 32)] + [("192.168.0.0/16", 20)]
)
GLOBAL_DEFAULT_POOLS: tuple[tuple[str, int], ...] = (("10.0.0.0/8", 24),)


def parse_network(text: str, what: str = "subnet") -> Network:
    """A CIDR with no host bits set, or InvalidParameter with the fix in the message."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        try:
            fixed = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise InvalidParameter(
                f"invalid {what} {text!r}: expected a CIDR such as 172.20.0.0/16 or fd00::/64"
            ) from exc
        raise InvalidParameter(f"invalid {what} {text}: host bits set; did you mean {fixed}?") from exc


def parse_default_address_pool(text: str) -> tuple[str, int]:
    """Parse Docker's `base=CIDR,size=N` into (base CIDR, size)."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or not value.strip():
            raise InvalidParameter(
                f"invalid default address pool {text!r}: field {part!r} must be key=value (expected base=CIDR,size=N)"
            )
        if key not in ("base", "size"):
            raise InvalidParameter(
                f"invalid default address pool {text!r}: unknown field {key!r} (expected base=CIDR,size=N)"
            )
        if key in fields:
            raise InvalidParameter(f"invalid default address pool {text!r}: {key} given twice")
        fields[key] = value.strip()
    missing = [k for k in ("base", "size") if k not in fields]
    if missing:
        raise InvalidParameter(
            f"invalid default address pool {text!r}: missing {' and '.join(missing)} (expected base=CIDR,size=N)"
        )
    base = parse_network(fields["base"], "default address pool base")
    try:
        size = int(fields["size"])
    except ValueError:
        raise InvalidParameter(
            f"invalid default address pool {text!r}: size {fields['size']!r} is not a number"
        ) from None
    if not base.prefixlen <= size <= base.max_prefixlen:
        raise InvalidParameter(
            f"invalid default address pool {text!r}: size {size} must be between the base's "
            f"prefix length {base.prefixlen} and {base.max_prefixlen}"
        )
    return str(base), size


def pool_specs(items: Iterable[str | tuple[str, int]]) -> list[PoolSpec]:
    """Specs from `base=CIDR,size=N` strings or (CIDR, size) pairs."""
    specs = []
    for item in items:
        base, size = parse_default_address_pool(item) if isinstance(item, str) else item
        net = parse_network(base, "default address pool base")
        if not net.prefixlen <= size <= net.max_prefixlen:
            raise InvalidParameter(
                f"invalid default address pool {base}: size {size} must be "
                f"between {net.prefixlen} and {net.max_prefixlen}"
            )
        specs.append(PoolSpec(net, size))
    return specs


def _merged(blocked: Iterable[Network], version: int) -> tuple[list[int], list[int]]:
    spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in blocked if n.version == version)
    starts: list[int] = []
    ends: list[int] = []
    for lo, hi in spans:
        if ends and lo <= ends[-1] + 1:
            ends[-1] = max(ends[-1], hi)
        else:
            starts.append(lo)
            ends.append(hi)
    return starts, ends


def choose_subnet(specs: Sequence[PoolSpec], blocked: Iterable[Network], version: int = 4) -> Network | None:
    """The first candidate subnet of `specs` (in order) of that IP version that
    overlaps nothing in `blocked`; None if every one does."""
    starts, ends = _merged(blocked, version)
    for spec in specs:
        if spec.version != version:
            continue
        step = 1 << (spec.base.max_prefixlen - spec.size)
        base = int(spec.base.network_address)
        top = int(spec.base.broadcast_address)
        cand = base
        while cand + step - 1 <= top:
            last = cand + step - 1
            i = bisect.bisect_right(starts, last) - 1  # the only range that can overlap
            if i >= 0 and ends[i] >= cand:
                cand = base + ((ends[i] - base) // step + 1) * step
                continue
            return type(spec.base)((cand, spec.size))  # not ip_network: small ints would read as IPv4
    return None
