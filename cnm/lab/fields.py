"""Field readers for lab files (pure): every error is one line naming the file and the
field, e.g. `labs/x.yaml: containers[2].networks[0]: unknown network 'fronted'`."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from cnm.errors import InvalidParameter
from cnm.lab.model import Link

UNDERLAY_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
DEFAULT_UNDERLAY = "198.18.0.0/24"

LAB_NAME = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
HOST_NAME = re.compile(r"^[a-z][a-z0-9-]{0,11}$")  # switch port "p-<host>" fits IFNAMSIZ
OBJ_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # Docker's container/network names
RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$")
PORT = re.compile(r"^(?:(?:\d{1,3}\.){3}\d{1,3}:)?(?:\d{1,5}:)?\d{1,5}(?:/(?:tcp|udp|sctp))?$")
RESERVED_HOSTS = ("sw",)  # lab-<lab>-sw is the switch namespace


class Ctx:
    """Carries the file name so every error says where it is."""

    def __init__(self, source: str) -> None:
        self.source = source

    def err(self, where: str, msg: str) -> InvalidParameter:
        return InvalidParameter(f"{self.source}: {where}: {msg}" if where else f"{self.source}: {msg}")

    def mapping(self, value: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            raise self.err(where, f"expected a mapping, got {kind_of(value)}")
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            raise self.err(where, f"unknown field {unknown[0]!r} (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in value:
                raise self.err(where, f"missing required field {key!r}")
        return value

    def seq(self, value: Any, where: str) -> list:
        if not isinstance(value, list):
            raise self.err(where, f"expected a list, got {kind_of(value)}")
        return value

    def name(self, value: Any, where: str, pattern: re.Pattern[str], hint: str) -> str:
        if not isinstance(value, str) or not pattern.match(value):
            raise self.err(where, f"invalid name {value!r}: {hint}")
        return value

    def integer(self, value: Any, where: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.err(where, f"expected an integer from {lo} to {hi}, got {value!r}")
        return value

    def number(self, value: Any, where: str, lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise self.err(where, f"expected a number from {lo:g} to {hi:g}, got {value!r}")
        return float(value)

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.err(where, f"expected true or false, got {value!r}")
        return value

    def ipv4(self, value: Any, where: str) -> ipaddress.IPv4Address:
        try:
            return ipaddress.IPv4Address(value)
        except (ValueError, TypeError):
            raise self.err(where, f"invalid IPv4 address {value!r}") from None

    def subnet(self, value: Any, where: str) -> ipaddress.IPv4Network:
        try:
            return ipaddress.IPv4Network(value, strict=True)
        except (ValueError, TypeError) as exc:
            raise self.err(where, f"invalid IPv4 subnet {value!r} ({exc})") from None

    def unique(self, names: list[str], where: str, what: str) -> None:
        seen: set[str] = set()
        for i, n in enumerate(names):
            if n in seen:
                raise self.err(f"{where}[{i}]", f"duplicate {what} {n!r}")
            seen.add(n)


def kind_of(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def rate_bits(rate: str) -> int:
    """tc rate text -> bits per second ("10mbit" -> 10_000_000; "1mbps" is bytes)."""
    m = RATE.match(rate)
    if not m:
        raise InvalidParameter(
            f"invalid rate {rate!r}: use a number and bit, kbit, mbit, gbit (or bps, kbps, mbps, gbps)"
        )
    value, unit = float(m.group(1)), m.group(2)
    scale = {
        "bit": 1,
        "kbit": 10**3,
        "mbit": 10**6,
        "gbit": 10**9,
        "bps": 8,
        "kbps": 8 * 10**3,
        "mbps": 8 * 10**6,
        "gbps": 8 * 10**9,
    }[unit]
    return int(value * scale)


def parse_link(ctx: Ctx, raw: dict, where: str, base: Link) -> Link:
    mtu = ctx.integer(raw["mtu"], f"{where}.mtu", 1280, 9000) if "mtu" in raw else base.mtu
    rate = base.rate
    if "rate" in raw:
        rate = None if raw["rate"] in (None, 0) else str(raw["rate"])
        if rate is not None:
            if not RATE.match(rate):
                raise ctx.err(
                    f"{where}.rate",
                    f"invalid rate {rate!r}: use a number and bit, kbit, mbit, gbit (or bps, kbps, mbps, gbps)",
                )
            if rate_bits(rate) < 8000:
                raise ctx.err(f"{where}.rate", f"rate {rate!r} is too low (at least 8kbit)")
    loss = base.loss
    if "loss" in raw:
        loss = ctx.number(raw["loss"], f"{where}.loss", 0, 100) or None
    delay = base.delay
    if "delay" in raw:
        delay = ctx.number(raw["delay"], f"{where}.delay", 0, 60_000) or None
    return Link(mtu=mtu, rate=rate, loss=loss, delay=delay)


LINK_FIELDS = ("mtu", "rate", "loss", "delay")


def scalar(ctx: Ctx, v: Any, where: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (str, int, float)):
        return str(v)
    raise ctx.err(where, f"expected a string or number, got {kind_of(v)}")
