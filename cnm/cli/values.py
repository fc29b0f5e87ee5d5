"""Value converters for `option(value=…)` and `arg(value=…)`: plain `str -> value`
functions that raise ValueError with a short message when the text is bad. Pure.

The parser turns that message into one line ("Error: invalid value for '--subnet':
'10.0.0.7/24' has host bits set: did you mean 10.0.0.0/24?", exit 2), and click's help
shows each converter's `metavar`. ipaddress is imported inside the converters: it
costs a few milliseconds, and most commands never need it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing stays off the CLI's execution path; type checkers see True
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    F = TypeVar("F", bound=Callable[..., Any])


def metavar(name: str) -> Callable[[F], F]:
    """Name a converter's values in help ("CIDR", "IP", …)."""

    def mark(fn: F) -> F:
        fn.metavar = name  # type: ignore[attr-defined]
        return fn

    return mark


@metavar("CIDR")
def cidr(text: str) -> str:
    """A network in CIDR notation with zero host bits; returned in canonical form."""
    import ipaddress  # (CLI start-up: ipaddress ~4 ms, only for a flag that takes an address)

    if "%" in text:
        raise ValueError(f"{text!r}: a zone index (%…) names one link and has no place in a subnet")
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not a CIDR (e.g. 172.20.0.0/16)") from None
    if "/" not in text:
        raise ValueError(f"{text!r} has no prefix length (e.g. {text}/24)")
    if ipaddress.ip_interface(text).ip != net.network_address:
        raise ValueError(f"{text!r} has host bits set: did you mean {net}?")
    return str(net)


@metavar("IP")
def ip(text: str) -> str:
    """A plain IPv4 or IPv6 address; returned in canonical form."""
    import ipaddress  # (CLI start-up: ipaddress ~4 ms, only for a flag that takes an address)

    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


@metavar("KEY=VALUE")
def key_value(text: str) -> tuple[str, str]:
    """KEY=VALUE as a (key, value) pair."""
    key, sep, val = text.partition("=")
    if not key.strip() or not sep:
        raise ValueError(f"{text!r} is not KEY=VALUE")
    return key.strip(), val


@metavar("KEY[=VALUE]")
def label(text: str) -> tuple[str, str]:
    """KEY=VALUE, or a lone KEY as (KEY, "") like Docker's --label."""
    key, _, val = text.partition("=")
    if not key.strip():
        raise ValueError(f"{text!r} is not KEY=VALUE")
    return key.strip(), val


@metavar("NAME=IP")
def name_ip(text: str) -> tuple[str, str]:
    """NAME=IP (--aux-address); the address in canonical form."""
    key, val = key_value(text)
    return key, ip(val)


@metavar("base=CIDR,size=N")
def address_pool(text: str) -> str:
    """Docker's `base=CIDR,size=N`; returned canonical, as "base=CIDR,size=N"."""
    import ipaddress  # (CLI start-up: ipaddress ~4 ms, only for a flag that takes an address)

    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, val = part.partition("=")
        if not sep or key.strip() not in ("base", "size"):
            raise ValueError(f"{text!r}: expected base=CIDR,size=N")
        fields[key.strip()] = val.strip()
    if set(fields) != {"base", "size"}:
        raise ValueError(f"{text!r}: expected base=CIDR,size=N")
    base = cidr(fields["base"])
    size_text = fields["size"]
    if not (size_text.isascii() and size_text.isdigit() and len(size_text) <= 3):
        raise ValueError(f"{text!r}: size must be a prefix length")
    size = int(size_text)
    net = ipaddress.ip_network(base)
    if not net.prefixlen <= size <= net.max_prefixlen:
        raise ValueError(f"{text!r}: size must be between {net.prefixlen} and {net.max_prefixlen}")
    return f"base={base},size={size}"


@metavar("BYTES")
def byte_size(text: str) -> int:
    """Docker's memory sizes: 67108864, 64m, 1g, 512k (b, k, m, g, t; case-insensitive,
    an optional trailing "b" as in "64mb"). ASCII digits only; no "nan", "inf", "1e400"."""
    from cnm.strictnum import parse_bytes  # (CLI start-up: only for a flag that takes a size)

    return parse_bytes(text)


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An integer in ASCII digits (int() also takes "١٢", "1_0" and " 12 "), within
    [lo, hi] where given."""

    @metavar("INTEGER")
    def convert(text: str) -> int:
        from cnm.strictnum import parse_int  # (CLI start-up: only for a flag that takes a number)

        return parse_int(text, lo, hi)

    return convert


def float_range(lo: float | None = None, hi: float | None = None) -> Callable[[str], float]:
    """A decimal like 1.5 (no exponent, NaN or infinity), within [lo, hi] where given."""

    @metavar("FLOAT")
    def convert(text: str) -> float:
        from cnm.strictnum import parse_decimal  # (CLI start-up: only for a flag that takes a number)

        return parse_decimal(text, lo, hi)

    return convert
