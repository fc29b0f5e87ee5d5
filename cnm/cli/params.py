"""click parameter types for the CLI: CIDRs, addresses, KEY=VALUE, address pools.

Bad values fail with ONE line ("Error: invalid value for '--subnet': …", exit 2),
not click's usage block: the user knows which flag they typed.
"""
from __future__ import annotations

import ipaddress
from typing import Any

import click


class BadValue(click.BadParameter):
    """A BadParameter printed as one line."""

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True, file=file)

    def format_message(self) -> str:
        hint = self.param.get_error_hint(self.ctx) if self.param is not None and self.ctx is not None else None
        return f"invalid value for {hint}: {self.message}" if hint else self.message


class _Type(click.ParamType):
    def fail(self, message: str, param: click.Parameter | None = None, ctx: click.Context | None = None):  # type: ignore[override]
        raise BadValue(message, ctx=ctx, param=param)


class CIDR(_Type):
    """A network in CIDR notation with zero host bits; returned in canonical form."""

    name = "CIDR"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            self.fail(f"{text!r} is not a CIDR (e.g. 172.20.0.0/16)", param, ctx)
        if "/" not in text:
            self.fail(f"{text!r} has no prefix length (e.g. {text}/24)", param, ctx)
        if ipaddress.ip_interface(text).ip != net.network_address:
            self.fail(f"{text!r} has host bits set: did you mean {net}?", param, ctx)
        return str(net)


class IP(_Type):
    """A plain IPv4 or IPv6 address; returned in canonical form."""

    name = "IP"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return str(ipaddress.ip_address(str(value)))
        except ValueError:
            self.fail(f"{value!r} is not an IP address", param, ctx)


class KeyValue(_Type):
    """KEY=VALUE, returned as a (key, value) pair. `value_type` checks the value;
    `bare_ok` accepts a lone KEY as (KEY, "") like Docker's --label."""

    name = "KEY=VALUE"

    def __init__(self, value_type: click.ParamType | None = None, bare_ok: bool = False) -> None:
        self.value_type = value_type
        self.bare_ok = bare_ok

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        key, sep, val = str(value).partition("=")
        if not key.strip() or not (sep or self.bare_ok):
            self.fail(f"{value!r} is not KEY=VALUE", param, ctx)
        if self.value_type is not None:
            val = self.value_type.convert(val, param, ctx)
        return key.strip(), val


class AddressPool(_Type):
    """Docker's `base=CIDR,size=N`; returned canonical, as "base=CIDR,size=N"."""

    name = "base=CIDR,size=N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        fields: dict[str, str] = {}
        for part in str(value).split(","):
            key, sep, val = part.partition("=")
            if not sep or key.strip() not in ("base", "size"):
                self.fail(f"{value!r}: expected base=CIDR,size=N", param, ctx)
            fields[key.strip()] = val.strip()
        if set(fields) != {"base", "size"}:
            self.fail(f"{value!r}: expected base=CIDR,size=N", param, ctx)
        base = CIDR().convert(fields["base"], param, ctx)
        try:
            size = int(fields["size"])
        except ValueError:
            self.fail(f"{value!r}: size must be a prefix length", param, ctx)
        net = ipaddress.ip_network(base)
        if not net.prefixlen <= size <= net.max_prefixlen:
            self.fail(f"{value!r}: size must be between {net.prefixlen} and {net.max_prefixlen}", param, ctx)
        return f"base={base},size={size}"
