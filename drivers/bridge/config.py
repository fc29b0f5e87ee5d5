"""Bridge network options (-o KEY=VALUE) parsed once, at the edge, into typed config.

Pure: no kernel, no I/O. Docker's labels (cnm.labels) with Docker's defaults.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from cnm import labels
from cnm.errors import InvalidParameter
from cnm.firewall import model as firewall_model
from cnm.optparse import MAX_MTU, MIN_MTU, parse_mtu  # noqa: F401  (re-exported)

DEFAULT_MTU = 1500
IFNAMSIZ = 15
DEFAULT_BRIDGE_NAME = "docker0"  # the default network's bridge, as in Docker
BRIDGE_PREFIX = "br-"

ACCEPTED = (
    labels.BRIDGE_NAME,
    labels.ENABLE_ICC,
    labels.ENABLE_IP_MASQUERADE,
    labels.HOST_BINDING_IPV4,
    labels.MTU,
    labels.DEFAULT_BRIDGE,
    labels.INTERNAL,
)

_TRUE = {"true", "1"}
_FALSE = {"false", "0"}


@dataclass(frozen=True)
class BridgeConfig:
    bridge_name: str
    mtu: int = DEFAULT_MTU
    enable_icc: bool = True
    enable_ip_masquerade: bool = True
    host_binding_ipv4: str = "0.0.0.0"
    internal: bool = False
    default_bridge: bool = False


def parse_bool(key: str, value: str) -> bool:
    v = str(value).strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise InvalidParameter(f"invalid value {value!r} for option {key}: want true/false (or 1/0)")


def check_ifname(name: str, key: str = labels.BRIDGE_NAME) -> str:
    """A name the kernel accepts for an interface: 1..15 characters, no '/', ':' or
    whitespace, not '.' or '..'."""
    if not name:
        raise InvalidParameter(f"option {key} must not be empty")
    if len(name) > IFNAMSIZ:
        raise InvalidParameter(f"invalid interface name {name!r} for option {key}: at most {IFNAMSIZ} characters")
    if name in (".", "..") or "/" in name or ":" in name or any(c.isspace() for c in name):
        raise InvalidParameter(
            f"invalid interface name {name!r} for option {key}: no '/', ':' or whitespace, and not '.' or '..'"
        )
    # The firewall quotes it into nft scripts and allows less than the kernel: refuse
    # such a name here, before the bridge exists, not after (the refusal changes nothing).
    return firewall_model.check_ifname(name)


def parse_ipv4(value: str, key: str = labels.HOST_BINDING_IPV4) -> str:
    try:
        return str(ipaddress.IPv4Address(str(value).strip()))
    except ValueError:
        raise InvalidParameter(f"invalid IPv4 address {value!r} for option {key}") from None


def default_bridge_name(network_id: str) -> str:
    return BRIDGE_PREFIX + network_id[:12]


def _check_known(options: Mapping[str, str]) -> None:
    for key in options:
        if key not in ACCEPTED:
            raise InvalidParameter(f"unknown option {key!r} for the bridge driver; accepted: {', '.join(ACCEPTED)}")


def normalize(options: Mapping[str, str]) -> dict[str, str]:
    """Validate the options and return them in canonical form (booleans "true"/"false",
    MTU as a decimal, the address compressed). Keys not given stay absent, so a
    default can still depend on the network id. Raises InvalidParameter."""
    _check_known(options)
    out: dict[str, str] = {}
    for key, value in options.items():
        if key in (labels.ENABLE_ICC, labels.ENABLE_IP_MASQUERADE, labels.DEFAULT_BRIDGE, labels.INTERNAL):
            out[key] = "true" if parse_bool(key, value) else "false"
        elif key == labels.MTU:
            out[key] = str(parse_mtu(value))
        elif key == labels.BRIDGE_NAME:
            out[key] = check_ifname(str(value))
        elif key == labels.HOST_BINDING_IPV4:
            out[key] = parse_ipv4(value)
    return out


def parse(options: Mapping[str, str], network_id: str = "", *, internal: bool = False) -> BridgeConfig:
    """Options -> BridgeConfig. `internal` (the --internal flag) or the
    com.docker.network.internal option make the network internal. The bridge name
    defaults to docker0 for the default bridge, else br-<network id[:12]>."""
    opts = normalize(options)
    default_bridge = opts.get(labels.DEFAULT_BRIDGE) == "true"
    name = opts.get(labels.BRIDGE_NAME)
    if name is None:
        if default_bridge:
            name = DEFAULT_BRIDGE_NAME
        elif network_id:
            name = default_bridge_name(network_id)
        else:
            raise InvalidParameter(f"a network id is needed to name the bridge (or give {labels.BRIDGE_NAME})")
    return BridgeConfig(
        bridge_name=name,
        mtu=int(opts.get(labels.MTU, DEFAULT_MTU)),
        enable_icc=opts.get(labels.ENABLE_ICC, "true") == "true",
        enable_ip_masquerade=opts.get(labels.ENABLE_IP_MASQUERADE, "true") == "true",
        host_binding_ipv4=opts.get(labels.HOST_BINDING_IPV4, "0.0.0.0"),
        internal=internal or opts.get(labels.INTERNAL) == "true",
        default_bridge=default_bridge,
    )
