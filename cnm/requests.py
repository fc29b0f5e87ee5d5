"""Requests the API accepts, parsed and validated at the edge.

`NetworkCreate.from_docker_json()` reads the body of Docker's `POST /networks/create`
strictly (wrong JSON types are refused, unknown keys ignored like Docker's decoder) and
checks the address syntax with `ipaddress`, so that bad input is refused before any
IPAM, driver or kernel work starts. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from cnm.errors import InvalidParameter, Unavailable
from cnm.ids import check_name

# Docker's answer to a swarm-scoped request on a node outside a swarm (we have no swarm).
NOT_A_SWARM_MANAGER = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" '
    "to connect this node to swarm and try again."
)
SCOPES = ("local", "global", "swarm")

# Bounds on one request's work. Docker has none; a real network has a subnet or two per
# family and a few reserved addresses, and each costs IPAM and kernel work under the
# controller's lock.
MAX_IPAM_CONFIGS = 64
MAX_AUX_ADDRESSES = 256

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass
class IPAMConfigRequest:
    """One entry of `IPAM.Config`: a subnet and what to reserve in it.

    Strings are canonical after validation: CIDRs as `ipaddress` prints them, the
    gateway and aux addresses as plain addresses without a prefix."""

    subnet: str | None = None
    ip_range: str | None = None
    gateway: str | None = None
    aux_addresses: dict[str, str] = field(default_factory=dict)

    @property
    def v6(self) -> bool:
        return self.subnet is not None and ipaddress.ip_network(self.subnet).version == 6

    def validate(self) -> IPAMConfigRequest:
        """Check syntax and containment; returns a canonical copy."""
        if self.subnet is None:
            given = [
                what
                for what, v in (
                    ("ip-range", self.ip_range),
                    ("gateway", self.gateway),
                    ("aux-address", self.aux_addresses),
                )
                if v
            ]
            if given:
                raise InvalidParameter(f"{given[0]} given without a subnet: add a subnet to this IPAM config")
            return IPAMConfigRequest()
        subnet = parse_subnet(self.subnet)
        ip_range = None
        if self.ip_range is not None:
            rng = parse_cidr(self.ip_range, "ip-range")
            if rng.version != subnet.version or not rng.subnet_of(subnet):  # type: ignore[arg-type]
                raise InvalidParameter(f"ip-range {rng} is not within subnet {subnet}")
            ip_range = str(rng)
        gateway = None
        if self.gateway is not None:
            gw = parse_ip(self.gateway, "gateway")
            if gw not in subnet:
                raise InvalidParameter(f"gateway {gw} is not within subnet {subnet}")
            gateway = str(gw)
        aux: dict[str, str] = {}
        for name, addr in self.aux_addresses.items():
            ip = parse_ip(addr, f"aux-address {name}")
            if ip not in subnet:
                raise InvalidParameter(f"aux-address {name}={ip} is not within subnet {subnet}")
            aux[name] = str(ip)
        return IPAMConfigRequest(subnet=str(subnet), ip_range=ip_range, gateway=gateway, aux_addresses=aux)


@dataclass
class NetworkCreate:
    """A validated request to create a network (Docker's NetworkCreateRequest)."""

    name: str
    driver: str = "bridge"
    ipam_configs: list[IPAMConfigRequest] = field(default_factory=list)
    enable_ipv6: bool = False
    internal: bool = False
    attachable: bool = False
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    ipam_driver: str = "default"
    ipam_options: dict[str, str] = field(default_factory=dict)
    check_duplicate: bool = True
    scope: str | None = None  # as asked (--scope); None = the driver's

    @property
    def subnets(self) -> list[IPAMConfigRequest]:
        """Alias of `ipam_configs` (the brief's other name for the same list)."""
        return self.ipam_configs

    def validate(self) -> NetworkCreate:
        """Check the name and every IPAM config; refuse overlapping subnets. Returns self
        with canonical IPAM configs."""
        check_name(self.name)
        if not self.driver:
            raise InvalidParameter("network driver must not be empty")
        if len(self.ipam_configs) > MAX_IPAM_CONFIGS:
            raise InvalidParameter(
                f"{len(self.ipam_configs)} IPAM configs given: a network takes at most {MAX_IPAM_CONFIGS}"
            )
        self.ipam_configs = [c.validate() for c in self.ipam_configs]
        pair = first_overlap([ipaddress.ip_network(c.subnet) for c in self.ipam_configs if c.subnet])
        if pair is not None:
            raise InvalidParameter(f"subnets {pair[0]} and {pair[1]} overlap: give each IPAM config its own subnet")
        return self

    @classmethod
    def from_docker_json(cls, body: Any) -> NetworkCreate:
        """Parse and validate the JSON body of `POST /networks/create`."""
        if not isinstance(body, dict):
            raise InvalidParameter(f"request body must be a JSON object, not {_json_type(body)}")
        if "Name" not in body or body["Name"] is None:
            raise InvalidParameter("missing field Name: a network needs a name")
        name = _typed(body, "Name", str)
        scope = _swarm_free_scope(body)
        ipam = _typed(body, "IPAM", dict, default={}) or {}
        configs_raw = _typed(ipam, "Config", list, default=[], where="IPAM.") or []
        if len(configs_raw) > MAX_IPAM_CONFIGS:  # before parsing them: bounded work
            raise InvalidParameter(f"{len(configs_raw)} IPAM configs given: a network takes at most {MAX_IPAM_CONFIGS}")
        configs = [_ipam_config(c, i) for i, c in enumerate(configs_raw)]
        req = cls(
            name=name,
            driver=_typed(body, "Driver", str, default="") or "bridge",
            ipam_configs=configs,
            enable_ipv6=_typed(body, "EnableIPv6", bool, default=False),
            internal=_typed(body, "Internal", bool, default=False),
            attachable=_typed(body, "Attachable", bool, default=False),
            options=_str_map(body, "Options"),
            labels=_str_map(body, "Labels"),
            ipam_driver=_typed(ipam, "Driver", str, default="", where="IPAM.") or "default",
            ipam_options=_str_map(ipam, "Options", where="IPAM."),
            check_duplicate=_typed(body, "CheckDuplicate", bool, default=True),
            scope=scope,
        )
        return req.validate()


def _swarm_free_scope(body: dict) -> str | None:
    """The `Scope` asked for; refuses what needs a swarm or config-only networks with
    Docker's words or one line naming the option, instead of quietly making a plain
    local network of it."""
    scope = _typed(body, "Scope", str, default="") or None
    if scope is not None and scope not in SCOPES:
        raise InvalidParameter(f"invalid scope {scope!r}: use local, global or swarm")
    if scope == "swarm" or _typed(body, "Ingress", bool, default=False):
        raise Unavailable(NOT_A_SWARM_MANAGER)
    if _typed(body, "ConfigOnly", bool, default=False):
        raise InvalidParameter(
            "config-only networks (--config-only) are not supported: give the subnet and options to the network itself"
        )
    config_from = _typed(body, "ConfigFrom", dict, default={}) or {}
    if _typed(config_from, "Network", str, default="", where="ConfigFrom."):
        raise InvalidParameter(
            "--config-from is not supported (no config-only networks): give the "
            "subnet and options to the network itself"
        )
    return scope


def first_overlap(nets: list[IPNetwork]) -> tuple[IPNetwork, IPNetwork] | None:
    """Two overlapping networks of `nets`, if any, in O(N log N). CIDR blocks are nested
    or disjoint: sorted by family, first address and prefix length, a block overlaps an
    earlier one exactly when it starts within the furthest-reaching earlier block."""
    ordered = sorted(nets, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    reach: IPNetwork | None = None
    for net in ordered:
        if reach is not None and reach.version == net.version:
            if int(net.network_address) <= int(reach.broadcast_address):
                return reach, net
            if int(net.broadcast_address) <= int(reach.broadcast_address):
                continue
        reach = net
    return None


# Ranges no network of containers can use: the kernel refuses them on an interface or
# gives them another meaning. (IPv4 and IPv6 link-local stay allowed, as in Docker.)
_RESERVED = [
    (ipaddress.ip_network(n), what)
    for n, what in (
        ("0.0.0.0/8", "'this network' (0.0.0.0/8)"),
        ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
        ("224.0.0.0/4", "multicast (224.0.0.0/4)"),
        ("255.255.255.255/32", "the broadcast address"),
        ("::/128", "the unspecified address (::)"),
        ("::1/128", "loopback (::1)"),
        ("ff00::/8", "multicast (ff00::/8)"),
    )
]


def _no_zone(text: str, what: str) -> None:
    """fe80::1%eth0 names an address on one link: meaningless in a network's config (and
    ipaddress would keep the zone, comparing unequal to the same address without it)."""
    if "%" in text:
        addr, _, rest = text.partition("%")
        plen = text.partition("/")[2]
        hint = f"{addr}/{plen}" if plen else addr
        raise InvalidParameter(
            f"invalid {what} {text!r}: a zone index (%{rest.partition('/')[0]}) names one "
            f"link and has no place here; give {hint}"
        )


def parse_subnet(text: str) -> IPNetwork:
    """A subnet CIDR whose host bits are zero ("10.0.0.0/24", not "10.0.0.1/24"), not all
    of an address family, and clear of loopback, multicast and unspecified ranges."""
    _no_zone(text, "subnet")
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidParameter(f"invalid subnet {text}") from None
    if "/" not in text:
        raise InvalidParameter(f"invalid subnet {text}: give a prefix length, e.g. {net.network_address}/24")
    if ipaddress.ip_interface(text).ip != net.network_address:
        raise InvalidParameter(f"invalid subnet {text}: it should be {net}")
    if net.prefixlen == 0:
        raise InvalidParameter(
            f"invalid subnet {net}: it spans every IPv{net.version} address; give a subnet of the network's own"
        )
    for reserved, what in _RESERVED:
        if reserved.version == net.version and net.overlaps(reserved):
            raise InvalidParameter(f"invalid subnet {net}: it overlaps {what}, which containers cannot use")
    return net


def parse_cidr(text: str, what: str) -> IPNetwork:
    """A CIDR with zero host bits, named `what` in errors."""
    _no_zone(text, what)
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise InvalidParameter(f"invalid {what} {text}") from None
    if "/" not in text:
        raise InvalidParameter(f"invalid {what} {text}: give a prefix length")
    return net


def parse_ip(text: str, what: str) -> IPAddress:
    """A plain address; a trailing "/prefix" is tolerated and dropped."""
    _no_zone(text, f"{what} address")
    try:
        return ipaddress.ip_interface(text).ip if "/" in text else ipaddress.ip_address(text)
    except ValueError:
        raise InvalidParameter(f"invalid {what} address {text}") from None


_MISSING = object()


def _json_type(value: Any) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _typed(obj: dict, key: str, typ: type, default: Any = _MISSING, where: str = "") -> Any:
    value = obj.get(key, _MISSING)
    if value is _MISSING or value is None:
        if default is _MISSING:
            raise InvalidParameter(f"missing field {where}{key}")
        return default
    # bool is a subclass of int in Python, JSON is stricter.
    if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool)):
        names = {str: "a string", bool: "a boolean", dict: "an object", list: "an array"}
        raise InvalidParameter(f"field {where}{key} must be {names.get(typ, typ.__name__)}, not {_json_type(value)}")
    return value


def _str_map(obj: dict, key: str, where: str = "") -> dict[str, str]:
    value = _typed(obj, key, dict, default={}, where=where) or {}
    for k, v in value.items():
        if not isinstance(v, str):
            raise InvalidParameter(f"field {where}{key}.{k} must be a string, not {_json_type(v)}")
    return dict(value)


def _ipam_config(raw: Any, index: int) -> IPAMConfigRequest:
    where = f"IPAM.Config[{index}]."
    if not isinstance(raw, dict):
        raise InvalidParameter(f"field IPAM.Config[{index}] must be an object, not {_json_type(raw)}")

    def opt_str(key: str) -> str | None:
        return _typed(raw, key, str, default="", where=where) or None

    aux = _str_map(raw, "AuxiliaryAddresses", where=where)
    if len(aux) > MAX_AUX_ADDRESSES:
        raise InvalidParameter(
            f"{len(aux)} auxiliary addresses in IPAM.Config[{index}]: at most {MAX_AUX_ADDRESSES} per subnet"
        )
    return IPAMConfigRequest(
        subnet=opt_str("Subnet"),
        ip_range=opt_str("IPRange"),
        gateway=opt_str("Gateway"),
        aux_addresses=aux,
    )
