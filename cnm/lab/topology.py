"""Lab topology files: YAML -> frozen dataclasses, strictly validated (pure).

Every error is one line naming the file and the field, e.g.
`labs/x.yaml: containers[2].networks[0]: unknown network 'fronted' (known: back, front)`.

Schema (see README, "Labs (`net lab`)"):

    name: demo                          # lab name: [a-z][a-z0-9-]*, at most 24 characters
    hosts: [h1, h2]                     # host names: [a-z][a-z0-9-]*, at most 12 characters
    underlay:                           # optional
      subnet: 198.18.0.0/24             # inside 198.18.0.0/15 (default 198.18.0.0/24)
      mtu: 1500                         # default for every link
      rate: 100mbit                     # default rate limit for every link (tbf)
      loss: 0.5                         # default loss, percent, each direction (nftables)
      delay: 10                         # default delay, ms (needs the kernel's netem)
      links:                            # per-host overrides
        h2: {address: 198.18.0.20, mtu: 1400, rate: 10mbit, loss: 1, delay: 0}
    cluster_store:                      # optional; etcd: 0 (the default) = none
      etcd: 3
      hosts: [h1, h2, h3]               # default: the first `etcd` hosts
    networks:
      - name: ov
        driver: overlay                 # bridge (default) | overlay
        subnet: 10.10.0.0/24
        options: {com.docker.network.driver.mtu: "1400"}
        internal: false
        hosts: [h1]                     # bridge only: the hosts to create it on (default all)
    images: [../build/images/busybox.tar]   # docker-save tarballs loaded into every host's daemon
    containers:
      - name: c1
        host: h1
        networks: [ov]                  # or `network: ov`; default: the host's `bridge`
        command: busybox httpd -f -p 80 # string (split like a shell) or list; default busybox sleep 1d
        image: busybox:latest           # optional: run on this image (its tarball under `images:`);
                                        # without, on the host's filesystem (command found on PATH)
        ip: 10.10.0.10                  # on the first network
        ports: ["8080:80"]
        cap_add: [NET_ADMIN]            # beyond Docker's default 14 capabilities
        privileged: false               # every capability, no seccomp filter, the host's devices
    checks:
      - {from: c1, ping: c2}            # container, host name or IPv4 address
      - {from: c1, tcp: "c2:80", expect: fail, network: ov}
      - {from: c1, mtu: 1450}           # MTU of the container's eth0 (or `iface:`)
"""
from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnm.errors import InvalidParameter

UNDERLAY_RANGE = ipaddress.ip_network("198.18.0.0/15")
DEFAULT_UNDERLAY = "198.18.0.0/24"
DEFAULT_MTU = 1500
DEFAULT_COMMAND = ("busybox", "sleep", "1d")
DRIVERS = ("bridge", "overlay")

_LAB_NAME = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
_HOST_NAME = re.compile(r"^[a-z][a-z0-9-]{0,11}$")     # switch port "p-<host>" fits IFNAMSIZ
_OBJ_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")  # Docker's container/network names
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$")
_PORT = re.compile(r"^(?:(?:\d{1,3}\.){3}\d{1,3}:)?(?:\d{1,5}:)?\d{1,5}(?:/(?:tcp|udp|sctp))?$")
_RESERVED_HOSTS = ("sw",)    # lab-<lab>-sw is the switch namespace


# --- the model ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Link:
    """One host's underlay link: MTU and impairments (None = not impaired)."""

    mtu: int = DEFAULT_MTU
    rate: str | None = None       # tc rate, e.g. "10mbit"
    loss: float | None = None     # percent, each direction
    delay: float | None = None    # milliseconds


@dataclass(frozen=True)
class Host:
    name: str
    address: str                  # underlay IPv4 address
    link: Link


@dataclass(frozen=True)
class Underlay:
    subnet: str

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen


@dataclass(frozen=True)
class ClusterStore:
    """etcd members, one per listed host (hosts[i] runs member i). Empty = none."""

    hosts: tuple[str, ...] = ()

    @property
    def members(self) -> int:
        return len(self.hosts)


@dataclass(frozen=True)
class Network:
    name: str
    driver: str
    subnet: str | None
    options: tuple[tuple[str, str], ...]
    internal: bool
    hosts: tuple[str, ...]        # bridge: the hosts it is created on; overlay: all hosts

    @property
    def is_overlay(self) -> bool:
        return self.driver == "overlay"


@dataclass(frozen=True)
class Container:
    name: str
    host: str
    networks: tuple[str, ...]
    command: tuple[str, ...]      # with an image, () = the image's CMD
    ip: str | None
    ports: tuple[str, ...]
    image: str = ""               # "" = the host's filesystem
    cap_add: tuple[str, ...] = ()       # capabilities beyond Docker's default set
    privileged: bool = False


@dataclass(frozen=True)
class Check:
    """One probe from a container: ping TARGET, tcp TARGET:PORT, or mtu of an interface."""

    kind: str                     # ping | tcp | mtu
    source: str                   # container name
    target: str | None            # container, host name or IPv4 address (ping, tcp)
    port: int | None = None       # tcp
    mtu: int | None = None        # mtu
    iface: str = "eth0"           # mtu
    network: str | None = None    # which of the target container's addresses
    expect_pass: bool = True

    @property
    def label(self) -> str:
        if self.kind == "mtu":
            what = f"mtu {self.source}:{self.iface} == {self.mtu}"
        else:
            dest = f"{self.target}:{self.port}" if self.kind == "tcp" else self.target
            via = f" via {self.network}" if self.network else ""
            what = f"{self.kind} {self.source} -> {dest}{via}"
        return what + ("" if self.expect_pass else " (expect fail)")


@dataclass(frozen=True)
class Lab:
    name: str
    hosts: tuple[Host, ...]
    underlay: Underlay
    cluster: ClusterStore
    networks: tuple[Network, ...]
    containers: tuple[Container, ...]
    checks: tuple[Check, ...]
    source: str = "<lab>"
    images: tuple[str, ...] = ()  # absolute paths of docker-save tarballs for every daemon

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def network(self, name: str) -> Network:
        return next(n for n in self.networks if n.name == name)

    def container(self, name: str) -> Container:
        return next(c for c in self.containers if c.name == name)

    def namespace(self, host: str) -> str:
        return namespace(self.name, host)

    @property
    def switch_namespace(self) -> str:
        return namespace(self.name, "sw")


def namespace(lab: str, host: str) -> str:
    """The network namespace of a lab host (`sw` is the underlay switch)."""
    return f"lab-{lab}-{host}"


def switch_port(host: str) -> str:
    """The switch-side veth of a host's underlay link."""
    return f"p-{host}"


UNDERLAY_IFACE = "ul0"       # the host-side underlay link (containers use ethN)
SWITCH_BRIDGE = "br0"


# --- parsing -----------------------------------------------------------------------------

class _Ctx:
    """Carries the file name so every error says where it is."""

    def __init__(self, source: str) -> None:
        self.source = source

    def err(self, where: str, msg: str) -> InvalidParameter:
        return InvalidParameter(f"{self.source}: {where}: {msg}" if where else f"{self.source}: {msg}")

    def mapping(self, value: Any, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            raise self.err(where, f"expected a mapping, got {_kind(value)}")
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            raise self.err(where, f"unknown field {unknown[0]!r} (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in value:
                raise self.err(where, f"missing required field {key!r}")
        return value

    def seq(self, value: Any, where: str) -> list:
        if not isinstance(value, list):
            raise self.err(where, f"expected a list, got {_kind(value)}")
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


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(type(value), type(value).__name__)


def rate_bits(rate: str) -> int:
    """tc rate text -> bits per second ("10mbit" -> 10_000_000; "1mbps" is bytes)."""
    m = _RATE.match(rate)
    if not m:
        raise InvalidParameter(f"invalid rate {rate!r}: use a number and bit, kbit, mbit, gbit (or bps, kbps, mbps, gbps)")
    value, unit = float(m.group(1)), m.group(2)
    scale = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9,
             "bps": 8, "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9}[unit]
    return int(value * scale)


def parse_link(ctx: _Ctx, raw: dict, where: str, base: Link) -> Link:
    mtu = ctx.integer(raw["mtu"], f"{where}.mtu", 1280, 9000) if "mtu" in raw else base.mtu
    rate = base.rate
    if "rate" in raw:
        rate = None if raw["rate"] in (None, 0) else str(raw["rate"])
        if rate is not None:
            if not _RATE.match(rate):
                raise ctx.err(f"{where}.rate", f"invalid rate {rate!r}: use a number and bit, kbit, mbit, gbit "
                                               "(or bps, kbps, mbps, gbps)")
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


def _hosts_and_underlay(ctx: _Ctx, data: dict) -> tuple[tuple[Host, ...], Underlay]:
    names = [ctx.name(h, f"hosts[{i}]", _HOST_NAME, "use [a-z][a-z0-9-]*, at most 12 characters")
             for i, h in enumerate(ctx.seq(data["hosts"], "hosts"))]
    if not names:
        raise ctx.err("hosts", "a lab needs at least one host")
    ctx.unique(names, "hosts", "host")
    for i, n in enumerate(names):
        if n in _RESERVED_HOSTS:
            raise ctx.err(f"hosts[{i}]", f"host name {n!r} is reserved for the underlay switch")
    ul = ctx.mapping(data.get("underlay") or {}, "underlay", ("subnet", *LINK_FIELDS, "links"))
    subnet = ctx.subnet(ul.get("subnet", DEFAULT_UNDERLAY), "underlay.subnet")
    if not subnet.subnet_of(UNDERLAY_RANGE):
        raise ctx.err("underlay.subnet", f"{subnet} is outside {UNDERLAY_RANGE} (the benchmarking range labs use)")
    base = parse_link(ctx, ul, "underlay", Link())
    links = ctx.mapping(ul.get("links") or {}, "underlay.links", tuple(names))
    pool = (a for a in subnet.hosts())
    given: dict[str, ipaddress.IPv4Address] = {}
    for n in names:
        raw = ctx.mapping(links.get(n) or {}, f"underlay.links.{n}", ("address", *LINK_FIELDS))
        if "address" in raw:
            addr = ctx.ipv4(raw["address"], f"underlay.links.{n}.address")
            if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address):
                raise ctx.err(f"underlay.links.{n}.address", f"{addr} is not a host address of {subnet}")
            if addr in given.values():
                raise ctx.err(f"underlay.links.{n}.address", f"{addr} is already used by another host")
            given[n] = addr
    hosts = []
    for n in names:
        addr = given.get(n)
        if addr is None:
            addr = next((a for a in pool if a not in given.values()), None)
            if addr is None:
                raise ctx.err("underlay.subnet", f"{subnet} has too few addresses for {len(names)} hosts")
        raw = links.get(n) or {}
        hosts.append(Host(name=n, address=str(addr), link=parse_link(ctx, raw, f"underlay.links.{n}", base)))
    return tuple(hosts), Underlay(subnet=str(subnet))


def _cluster(ctx: _Ctx, data: dict, hosts: list[str]) -> ClusterStore:
    raw = ctx.mapping(data.get("cluster_store") or {}, "cluster_store", ("etcd", "hosts"))
    count = ctx.integer(raw.get("etcd", 0), "cluster_store.etcd", 0, 7)
    if "hosts" in raw:
        on = [str(h) for h in ctx.seq(raw["hosts"], "cluster_store.hosts")]
        for i, h in enumerate(on):
            if h not in hosts:
                raise ctx.err(f"cluster_store.hosts[{i}]", f"unknown host {h!r} (known: {', '.join(hosts)})")
        ctx.unique(on, "cluster_store.hosts", "host (one etcd member per host)")
        if len(on) != count:
            raise ctx.err("cluster_store.hosts", f"lists {len(on)} hosts for {count} etcd members")
    else:
        if count > len(hosts):
            raise ctx.err("cluster_store.etcd", f"{count} members need {count} hosts (one per host); the lab has {len(hosts)}")
        on = hosts[:count]
    return ClusterStore(hosts=tuple(on))


def _networks(ctx: _Ctx, data: dict, hosts: list[str], cluster: ClusterStore) -> tuple[Network, ...]:
    out = []
    for i, raw in enumerate(ctx.seq(data.get("networks") or [], "networks")):
        where = f"networks[{i}]"
        raw = ctx.mapping(raw, where, ("name", "driver", "subnet", "options", "internal", "hosts"), ("name",))
        name = ctx.name(raw["name"], f"{where}.name", _OBJ_NAME, "use letters, digits, '_', '.', '-'")
        if name in ("bridge", "host", "none"):
            raise ctx.err(f"{where}.name", f"{name!r} is a predefined network on every host; choose another name")
        driver = raw.get("driver", "bridge")
        if driver not in DRIVERS:
            raise ctx.err(f"{where}.driver", f"unknown driver {driver!r} (use {' or '.join(DRIVERS)})")
        subnet = str(ctx.subnet(raw["subnet"], f"{where}.subnet")) if "subnet" in raw else None
        if subnet and ipaddress.ip_network(subnet).overlaps(UNDERLAY_RANGE):
            raise ctx.err(f"{where}.subnet", f"{subnet} overlaps the underlay range {UNDERLAY_RANGE}")
        opts = ctx.mapping(raw.get("options") or {}, f"{where}.options", tuple(str(k) for k in (raw.get("options") or {})))
        options = tuple((str(k), _scalar(ctx, v, f"{where}.options.{k}")) for k, v in opts.items())
        internal = ctx.boolean(raw.get("internal", False), f"{where}.internal")
        if driver == "overlay":
            if "hosts" in raw:
                raise ctx.err(f"{where}.hosts", "an overlay network spans every host; remove 'hosts'")
            if not cluster.members:
                raise ctx.err(f"{where}.driver", "overlay needs a cluster store: set cluster_store.etcd to 1 or more")
            on = tuple(hosts)
        else:
            on_list = [str(h) for h in ctx.seq(raw.get("hosts", hosts), f"{where}.hosts")]
            for j, h in enumerate(on_list):
                if h not in hosts:
                    raise ctx.err(f"{where}.hosts[{j}]", f"unknown host {h!r} (known: {', '.join(hosts)})")
            ctx.unique(on_list, f"{where}.hosts", "host")
            on = tuple(on_list)
        out.append(Network(name=name, driver=driver, subnet=subnet, options=options, internal=internal, hosts=on))
    ctx.unique([n.name for n in out], "networks", "network")
    overlays = [n for n in out if n.is_overlay and n.subnet]
    for a_i, a in enumerate(overlays):
        for b in overlays[a_i + 1:]:
            if ipaddress.ip_network(a.subnet).overlaps(ipaddress.ip_network(b.subnet)):  # type: ignore[arg-type]
                raise ctx.err("networks", f"overlay subnets of {a.name} and {b.name} overlap")
    return tuple(out)


def _scalar(ctx: _Ctx, v: Any, where: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (str, int, float)):
        return str(v)
    raise ctx.err(where, f"expected a string or number, got {_kind(v)}")


def _containers(ctx: _Ctx, data: dict, hosts: list[str], networks: tuple[Network, ...]) -> tuple[Container, ...]:
    by_name = {n.name: n for n in networks}
    out = []
    for i, raw in enumerate(ctx.seq(data.get("containers") or [], "containers")):
        where = f"containers[{i}]"
        raw = ctx.mapping(raw, where, ("name", "host", "network", "networks", "command", "ip", "ports", "cap_add",
                                       "privileged", "image"), ("name", "host"))
        name = ctx.name(raw["name"], f"{where}.name", _OBJ_NAME, "use letters, digits, '_', '.', '-'")
        host = raw["host"]
        if host not in hosts:
            raise ctx.err(f"{where}.host", f"unknown host {host!r} (known: {', '.join(hosts)})")
        if "network" in raw and "networks" in raw:
            raise ctx.err(where, "give 'network' or 'networks', not both")
        nets = [raw["network"]] if "network" in raw else ctx.seq(raw.get("networks", ["bridge"]), f"{where}.networks")
        if not nets:
            raise ctx.err(f"{where}.networks", "a container needs at least one network")
        for j, n in enumerate(nets):
            f = f"{where}.network" if "network" in raw else f"{where}.networks[{j}]"
            if n == "bridge":
                continue
            if n not in by_name:
                known = ", ".join(sorted(["bridge", *by_name]))
                raise ctx.err(f, f"unknown network {n!r} (known: {known})")
            if host not in by_name[n].hosts:
                raise ctx.err(f, f"network {n!r} is not created on host {host} (its hosts: {', '.join(by_name[n].hosts)})")
        ctx.unique([str(n) for n in nets], f"{where}.networks", "network")
        image = _image(ctx, raw.get("image"), f"{where}.image")
        command = _command(ctx, raw.get("command"), f"{where}.command", default=() if image else DEFAULT_COMMAND)
        ip = None
        if raw.get("ip") is not None:
            addr = ctx.ipv4(raw["ip"], f"{where}.ip")
            first = by_name.get(nets[0])
            if first is None or first.subnet is None:
                raise ctx.err(f"{where}.ip", f"a fixed ip needs the first network ({nets[0]}) to have a subnet in this file")
            if addr not in ipaddress.ip_network(first.subnet):
                raise ctx.err(f"{where}.ip", f"{addr} is not in {nets[0]}'s subnet {first.subnet}")
            ip = str(addr)
        ports = tuple(str(p) for p in ctx.seq(raw.get("ports") or [], f"{where}.ports"))
        for j, p in enumerate(ports):
            if not _PORT.match(p):
                raise ctx.err(f"{where}.ports[{j}]", f"invalid port mapping {p!r} (use [IP:][HOSTPORT:]PORT[/tcp|udp])")
        cap_add = tuple(_scalar(ctx, c, f"{where}.cap_add[{j}]")
                        for j, c in enumerate(ctx.seq(raw.get("cap_add") or [], f"{where}.cap_add")))
        from cnm.runtime.caps import NAMES, normalize
        try:
            normalize(list(cap_add), frozenset(NAMES), "cap_add")
        except InvalidParameter as exc:
            raise ctx.err(f"{where}.cap_add", exc.message.removeprefix("cap_add: ")) from None
        privileged = ctx.boolean(raw["privileged"], f"{where}.privileged") if "privileged" in raw else False
        out.append(Container(name=name, host=host, networks=tuple(nets), command=command, ip=ip, ports=ports,
                             image=image, cap_add=cap_add, privileged=privileged))
    ctx.unique([c.name for c in out], "containers", "container")
    fixed: dict[tuple[str, str], str] = {}
    for i, c in enumerate(out):
        if c.ip:
            net = by_name[c.networks[0]]
            # an overlay's addresses are cluster-wide; a bridge network's are per host
            key = (f"{c.networks[0]}@{'*' if net.is_overlay else c.host}", c.ip)
            if key in fixed:
                raise ctx.err(f"containers[{i}].ip", f"{c.ip} is already given to {fixed[key]} on {c.networks[0]}")
            fixed[key] = c.name
    return tuple(out)


def _image(ctx: _Ctx, value: Any, where: str) -> str:
    if value is None:
        return ""
    from cnm.images import reference
    try:
        return reference.parse(str(value)).with_default_tag().familiar()
    except InvalidParameter as exc:
        raise ctx.err(where, exc.message) from None


def _images(ctx: _Ctx, data: dict, source: str) -> tuple[str, ...]:
    """Tarball paths, relative to the lab file's directory; checked to exist."""
    base = Path(source).parent if source != "<lab>" else Path.cwd()
    out = []
    for i, raw in enumerate(ctx.seq(data.get("images") or [], "images")):
        path = (base / str(raw)).resolve()
        if not path.is_file():
            raise ctx.err(f"images[{i}]", f"{path} is not a file (a docker-save tarball; "
                                          "build/images/busybox.tar comes from scripts/setup.sh)")
        out.append(str(path))
    return tuple(out)


def _command(ctx: _Ctx, value: Any, where: str, default: tuple[str, ...] = DEFAULT_COMMAND) -> tuple[str, ...]:
    if value is None:
        return default
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ctx.err(where, f"cannot split {value!r}: {exc}") from None
    elif isinstance(value, list) and all(isinstance(a, (str, int, float)) for a in value):
        argv = [str(a) for a in value]
    else:
        raise ctx.err(where, "expected a string or a list of strings")
    if not argv:
        raise ctx.err(where, "the command is empty")
    return tuple(argv)


def _checks(ctx: _Ctx, data: dict, lab_hosts: list[str], containers: tuple[Container, ...],
            networks: tuple[Network, ...]) -> tuple[Check, ...]:
    cnames = {c.name for c in containers}
    out = []
    for i, raw in enumerate(ctx.seq(data.get("checks") or [], "checks")):
        where = f"checks[{i}]"
        raw = ctx.mapping(raw, where, ("from", "ping", "tcp", "mtu", "iface", "network", "expect"), ("from",))
        kinds = [k for k in ("ping", "tcp", "mtu") if k in raw]
        if len(kinds) != 1:
            raise ctx.err(where, "give exactly one of 'ping', 'tcp' or 'mtu'")
        kind = kinds[0]
        source = raw["from"]
        if source not in cnames:
            raise ctx.err(f"{where}.from", f"unknown container {source!r}")
        expect = raw.get("expect", "pass")
        if expect not in ("pass", "fail"):
            raise ctx.err(f"{where}.expect", f"expected pass or fail, got {expect!r}")
        network = raw.get("network")
        if network is not None and network != "bridge" and network not in {n.name for n in networks}:
            raise ctx.err(f"{where}.network", f"unknown network {network!r}")
        if "iface" in raw and kind != "mtu":
            raise ctx.err(f"{where}.iface", "'iface' goes with an 'mtu' check")
        target = port = mtu = None
        if kind == "mtu":
            mtu = ctx.integer(raw["mtu"], f"{where}.mtu", 68, 65535)
            if network is not None:
                raise ctx.err(f"{where}.network", "'network' goes with a ping or tcp check")
        else:
            text = str(raw[kind])
            if kind == "tcp":
                target, _, port_text = text.rpartition(":")
                if not target or not port_text.isdigit() or not 0 < int(port_text) < 65536:
                    raise ctx.err(f"{where}.tcp", f"expected TARGET:PORT, got {text!r}")
                port = int(port_text)
            else:
                target = text
            if target not in cnames and target not in lab_hosts:
                try:
                    ipaddress.IPv4Address(target)
                except ValueError:
                    raise ctx.err(f"{where}.{kind}", f"unknown target {target!r}: a container, a host or an IPv4 address") from None
            if network is not None and target not in cnames:
                raise ctx.err(f"{where}.network", "'network' picks one of a target container's addresses")
        out.append(Check(kind=kind, source=source, target=target, port=port, mtu=mtu,
                         iface=str(raw.get("iface", "eth0")), network=network, expect_pass=expect == "pass"))
    return tuple(out)


TOP_FIELDS = ("name", "hosts", "underlay", "cluster_store", "networks", "images", "containers", "checks")


def parse(data: Any, source: str = "<lab>") -> Lab:
    """A parsed YAML document -> Lab, or InvalidParameter naming file and field."""
    ctx = _Ctx(source)
    data = ctx.mapping(data, "", TOP_FIELDS, ("name", "hosts"))
    name = ctx.name(data["name"], "name", _LAB_NAME, "use [a-z][a-z0-9-]*, at most 24 characters")
    hosts, underlay = _hosts_and_underlay(ctx, data)
    host_names = [h.name for h in hosts]
    cluster = _cluster(ctx, data, host_names)
    networks = _networks(ctx, data, host_names, cluster)
    containers = _containers(ctx, data, host_names, networks)
    checks = _checks(ctx, data, host_names, containers, networks)
    return Lab(name=name, hosts=hosts, underlay=underlay, cluster=cluster, networks=networks,
               containers=containers, checks=checks, source=source, images=_images(ctx, data, source))


def load_text(text: str, source: str = "<lab>") -> tuple[Lab, Any]:
    """YAML text -> (Lab, the raw document, kept in the lab's record)."""
    import yaml   # lazy: the CLI starts without it
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise InvalidParameter(f"{source}: not valid YAML: {first}") from None
    return parse(data, source), data


def load(path: str | Path) -> tuple[Lab, Any]:
    """A lab file -> (Lab, raw document)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise InvalidParameter(f"{path}: cannot read the lab file: {exc.strerror}") from None
    return load_text(text, str(path))


# --- the plan ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One unit of `up`: kind in STEP_KINDS, `host` where it runs, `name` what it makes."""

    kind: str
    name: str
    host: str | None = None

    @property
    def label(self) -> str:
        where = f" on {self.host}" if self.host and self.host != self.name else ""
        return f"{self.kind} {self.name}{where}"


STEP_KINDS = ("switch", "host", "impair", "etcd", "daemon", "network", "container")


def plan(lab: Lab) -> list[Step]:
    """The ordered steps of `up`: the underlay switch, each host and its link, link
    impairments, the etcd cluster, the daemons (which need etcd), networks (an overlay
    once, on the first host; a bridge network on each of its hosts), then containers."""
    steps = [Step("switch", "underlay")]
    steps += [Step("host", h.name, h.name) for h in lab.hosts]
    steps += [Step("impair", h.name, h.name) for h in lab.hosts
              if h.link.rate or h.link.loss or h.link.delay]
    if lab.cluster.members:
        steps.append(Step("etcd", f"{lab.cluster.members} member(s)", None))
    steps += [Step("daemon", h.name, h.name) for h in lab.hosts]
    for n in lab.networks:
        if n.is_overlay:
            steps.append(Step("network", n.name, lab.hosts[0].name))
        else:
            steps += [Step("network", n.name, h) for h in n.hosts]
    steps += [Step("container", c.name, c.host) for c in lab.containers]
    return steps


__all__ = ["Lab", "Host", "Link", "Underlay", "ClusterStore", "Network", "Container", "Check", "Step",
           "parse", "load", "load_text", "plan", "namespace", "switch_port", "rate_bits",
           "UNDERLAY_IFACE", "SWITCH_BRIDGE", "DEFAULT_COMMAND"]
