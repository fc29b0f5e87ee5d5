"""Docker's `-p` syntax, parsed into plain tuples. Pure and light (no re, no
dataclasses): `net run -p` parses here, and so does cnm.ports (the daemon's side),
which wraps the tuples in PortBinding.

    parse("127.0.0.1:8080:80/udp") -> [("udp", 80, "127.0.0.1", 8080, None)]
    parse("8000-8001:80-81")       -> [("tcp", 80, None, 8000, None), ("tcp", 81, None, 8001, None)]

Each tuple is (proto, container_port, host_ip, host_port, host_port_end): host_ip None
means all addresses, host_port None an ephemeral port, host_port..host_port_end any free
port of that range.
"""

from __future__ import annotations

from cnm.errors import InvalidParameter

PROTOCOLS = ("tcp", "udp")
Binding = tuple  # (proto, container_port, host_ip, host_port, host_port_end)


def bad(spec: str, why: str) -> InvalidParameter:
    return InvalidParameter(f"invalid port spec {spec!r}: {why} (use [HOSTIP:][HOSTPORT:]CONTAINERPORT[/tcp|udp])")


def _port_digits(text: str) -> bool:
    return 0 < len(text) <= 5 and text.isascii() and text.isdigit()


def port_range(spec: str, text: str, what: str) -> tuple[int, int]:
    """ "80" or "8000-8010" as (low, high), each within 1-65535."""
    lo_text, dash, hi_text = text.partition("-")
    # ASCII digits only (isdecimal() also takes "٨٠"), at most 5 of them.
    if not _port_digits(lo_text) or (dash and not _port_digits(hi_text)):
        raise bad(spec, f"{what} {text!r} is not a number or a range like 8000-8010")
    lo = int(lo_text)
    hi = int(hi_text) if dash else lo
    for p in (lo, hi):
        if not 1 <= p <= 65535:
            raise bad(spec, f"{what} {p} is out of range 1-65535")
    if hi < lo:
        raise bad(spec, f"{what} range {text} ends before it starts")
    return lo, hi


def normalize_ip(text: str | None, spec: str = "") -> str | None:
    """None for all addresses (None, '', 0.0.0.0); otherwise the canonical address."""
    if text in (None, "", "0.0.0.0"):
        return None
    import ipaddress  # only when an address is given (a few ms otherwise saved)

    try:
        ip = ipaddress.ip_address(text)
    except ValueError as exc:
        raise bad(spec or str(text), f"host IP {text!r} is not an IP address") from exc
    if getattr(ip, "scope_id", None) is not None or ip.is_multicast:
        raise bad(spec or str(text), f"host IP {text!r} must be a unicast address without a zone index")
    return str(ip)


def _fields(spec: str, text: str) -> tuple[str | None, str | None, str]:
    """(host IP, host port, container port) of "[IP:][HOSTPORT:]PORT"; the IP may be
    an IPv6 address in brackets."""
    if text.startswith("[") and ":" in text[: text.find("]") + 1]:
        close = text.find("]")
        ip_text, rest = text[: close + 1], text[close + 1 :]
        parts = rest[1:].split(":") if rest.startswith(":") else []
        if len(parts) == 1 and parts[0]:
            return ip_text, None, parts[0]
        if len(parts) == 2 and parts[1]:
            return ip_text, parts[0], parts[1]
    parts = text.split(":")  # (a bracket that is not an IPv6 host address is a plain field)
    if not parts[-1] or len(parts) > 3:
        raise bad(spec, "too many ':' separators")
    if len(parts) == 3:
        ip_text = parts[0]
        bracketed = ip_text.startswith("[") and ip_text.endswith("]") and "]" not in ip_text[:-1]
        if not bracketed and ("[" in ip_text or "]" in ip_text):
            raise bad(spec, "too many ':' separators")
        return ip_text, parts[1], parts[2]
    return None, (parts[0] if len(parts) == 2 else None), parts[-1]


def parse(spec: str) -> list[Binding]:
    """One `-p` value as bindings (several for a range like 8000-8001:80-81). Raises
    InvalidParameter naming what is wrong."""
    text = spec.strip()
    if not text:
        raise bad(spec, "it is empty")
    proto = "tcp"
    if "/" in text:
        text, proto = text.rsplit("/", 1)
        proto = proto.lower()
        if proto not in PROTOCOLS:
            raise bad(spec, f"protocol {proto!r} is not tcp or udp")
    if text.count(":") > 2 and not text.startswith("["):
        raise bad(spec, "put an IPv6 host address in brackets, like [::1]:8080:80")
    ip_text, hport, cport = _fields(spec, text)
    if ip_text is not None and hport is None:
        hport, ip_text = ip_text, None  # "8080:80": the first field is the host port
    if ip_text is not None and ip_text.startswith("["):
        ip_text = ip_text[1:-1]
        if ":" not in ip_text:
            raise bad(spec, "brackets are only for IPv6 addresses")
    host_ip = normalize_ip(ip_text, spec)
    clo, chi = port_range(spec, cport, "container port")
    if not hport:
        return [(proto, p, host_ip, None, None) for p in range(clo, chi + 1)]
    hlo, hhi = port_range(spec, hport, "host port")
    if clo == chi:
        return [(proto, clo, host_ip, hlo, hhi if hhi != hlo else None)]
    if hhi - hlo != chi - clo:
        raise bad(spec, f"host range {hport} and container range {cport} differ in length")
    return [(proto, c, host_ip, hlo + i, None) for i, c in enumerate(range(clo, chi + 1))]
