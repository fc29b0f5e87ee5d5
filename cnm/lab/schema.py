"""Lab file sections -> model objects (pure): hosts and the underlay, the cluster store,
networks, containers. Hosts and containers may be generated (`hosts: {count: 100,
prefix: h}`; a `group:` entry in `containers`) instead of listed one by one; checks
are in cnm.lab.checkspec."""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cnm.errors import InvalidParameter
from cnm.images import reference
from cnm.lab.fields import (
    DEFAULT_UNDERLAY,
    HOST_NAME,
    LINK_FIELDS,
    OBJ_NAME,
    PORT,
    RESERVED_HOSTS,
    UNDERLAY_RANGE,
    Ctx,
    kind_of,
    parse_link,
    scalar,
)
from cnm.lab.model import (
    DEFAULT_COMMAND,
    DEFAULT_ELECTION_MS,
    DEFAULT_HEARTBEAT_MS,
    ClusterStore,
    Container,
    Host,
    Link,
    Network,
    Underlay,
)
from cnm.runtime.caps import NAMES, normalize

MAX_HOSTS = 1000
MAX_PER_HOST = 64
HOST_HINT = "use [a-z][a-z0-9-]*, at most 12 characters"
OBJ_HINT = "use letters, digits, '_', '.', '-'"


# --- hosts and the underlay ----------------------------------------------------------------


def host_names(ctx: Ctx, value: Any) -> list[str]:
    """`hosts:` as a list of names, or generated: {count: N, prefix: h, start: 1} ->
    h1 … hN."""
    if isinstance(value, dict):
        gen = ctx.mapping(value, "hosts", ("count", "prefix", "start"), ("count",))
        count = ctx.integer(gen["count"], "hosts.count", 1, MAX_HOSTS)
        prefix = gen.get("prefix", "h")
        start = ctx.integer(gen.get("start", 1), "hosts.start", 0, 10**6)
        if not isinstance(prefix, str) or not HOST_NAME.match(f"{prefix}{start + count - 1}"):
            raise ctx.err(
                "hosts.prefix",
                f"{prefix!r} with {count} hosts gives names like '{prefix}{start + count - 1}': {HOST_HINT}",
            )
        names = [f"{prefix}{i}" for i in range(start, start + count)]
        where = "hosts"
    else:
        names = [ctx.name(h, f"hosts[{i}]", HOST_NAME, HOST_HINT) for i, h in enumerate(ctx.seq(value, "hosts"))]
        where = ""
    if not names:
        raise ctx.err("hosts", "a lab needs at least one host")
    ctx.unique(names, "hosts", "host")
    for i, n in enumerate(names):
        if n in RESERVED_HOSTS:
            raise ctx.err(where or f"hosts[{i}]", f"host name {n!r} is reserved for the underlay switch")
    return names


def hosts_and_underlay(ctx: Ctx, data: dict) -> tuple[tuple[Host, ...], Underlay]:
    names = host_names(ctx, data["hosts"])
    ul = ctx.mapping(data.get("underlay") or {}, "underlay", ("subnet", *LINK_FIELDS, "links"))
    subnet = ctx.subnet(ul.get("subnet", DEFAULT_UNDERLAY), "underlay.subnet")
    if not subnet.subnet_of(UNDERLAY_RANGE):
        raise ctx.err("underlay.subnet", f"{subnet} is outside {UNDERLAY_RANGE} (the benchmarking range labs use)")
    base = parse_link(ctx, ul, "underlay", Link())
    known = set(names)
    links = ul.get("links") or {}
    if not isinstance(links, dict):
        raise ctx.err("underlay.links", f"expected a mapping, got {kind_of(links)}")
    for key in links:
        if key not in known:
            raise ctx.err("underlay.links", f"unknown field {str(key)!r} (a host name: {_some(names)})")
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
    taken = set(given.values())
    pool = (a for a in subnet.hosts() if a not in taken)
    hosts = []
    for n in names:
        found = given.get(n) or next(pool, None)
        if found is None:
            raise ctx.err("underlay.subnet", f"{subnet} has too few addresses for {len(names)} hosts")
        raw = links.get(n) or {}
        hosts.append(Host(name=n, address=str(found), link=parse_link(ctx, raw, f"underlay.links.{n}", base)))
    return tuple(hosts), Underlay(subnet=str(subnet))


def _some(names: list[str], n: int = 6) -> str:
    return ", ".join(names) if len(names) <= n else ", ".join(names[:n]) + f", … ({len(names)} hosts)"


# --- the cluster store -----------------------------------------------------------------------


def cluster(ctx: Ctx, data: dict, hosts: list[str]) -> ClusterStore:
    raw = ctx.mapping(data.get("cluster_store") or {}, "cluster_store", ("etcd", "hosts", "heartbeat", "election"))
    count = ctx.integer(raw.get("etcd", 0), "cluster_store.etcd", 0, 7)
    if "hosts" in raw:
        on = [str(h) for h in ctx.seq(raw["hosts"], "cluster_store.hosts")]
        known = set(hosts)
        for i, h in enumerate(on):
            if h not in known:
                raise ctx.err(f"cluster_store.hosts[{i}]", f"unknown host {h!r} (known: {_some(hosts)})")
        ctx.unique(on, "cluster_store.hosts", "host (one etcd member per host)")
        if len(on) != count:
            raise ctx.err("cluster_store.hosts", f"lists {len(on)} hosts for {count} etcd members")
    else:
        if count > len(hosts):
            raise ctx.err(
                "cluster_store.etcd", f"{count} members need {count} hosts (one per host); the lab has {len(hosts)}"
            )
        on = hosts[:count]
    heartbeat = ctx.integer(raw.get("heartbeat", DEFAULT_HEARTBEAT_MS), "cluster_store.heartbeat", 10, 5000)
    election = ctx.integer(
        raw.get("election", max(DEFAULT_ELECTION_MS, 10 * heartbeat)), "cluster_store.election", 50, 50000
    )
    if election < 5 * heartbeat:
        # etcd refuses less than 5 heartbeats per election timeout (and warns below 10)
        raise ctx.err("cluster_store.election", f"{election} ms is less than 5 heartbeats ({heartbeat} ms each)")
    return ClusterStore(hosts=tuple(on), heartbeat_ms=heartbeat, election_ms=election)


# --- networks -----------------------------------------------------------------------------------


def networks(ctx: Ctx, data: dict, hosts: list[str], store: ClusterStore) -> tuple[Network, ...]:
    out = []
    known = set(hosts)
    for i, raw in enumerate(ctx.seq(data.get("networks") or [], "networks")):
        where = f"networks[{i}]"
        raw = ctx.mapping(raw, where, ("name", "driver", "subnet", "options", "internal", "hosts"), ("name",))
        name = ctx.name(raw["name"], f"{where}.name", OBJ_NAME, OBJ_HINT)
        if name in ("bridge", "host", "none"):
            raise ctx.err(f"{where}.name", f"{name!r} is a predefined network on every host; choose another name")
        driver = raw.get("driver", "bridge")
        if driver not in ("bridge", "overlay"):
            raise ctx.err(f"{where}.driver", f"unknown driver {driver!r} (use bridge or overlay)")
        subnet = str(ctx.subnet(raw["subnet"], f"{where}.subnet")) if "subnet" in raw else None
        if subnet and ipaddress.ip_network(subnet).overlaps(UNDERLAY_RANGE):
            raise ctx.err(f"{where}.subnet", f"{subnet} overlaps the underlay range {UNDERLAY_RANGE}")
        opts = ctx.mapping(
            raw.get("options") or {}, f"{where}.options", tuple(str(k) for k in (raw.get("options") or {}))
        )
        options = tuple((str(k), scalar(ctx, v, f"{where}.options.{k}")) for k, v in opts.items())
        internal = ctx.boolean(raw.get("internal", False), f"{where}.internal")
        if driver == "overlay":
            if "hosts" in raw:
                raise ctx.err(f"{where}.hosts", "an overlay network spans every host; remove 'hosts'")
            if not store.members:
                raise ctx.err(f"{where}.driver", "overlay needs a cluster store: set cluster_store.etcd to 1 or more")
            on = tuple(hosts)
        else:
            on_list = [str(h) for h in ctx.seq(raw.get("hosts", hosts), f"{where}.hosts")]
            for j, h in enumerate(on_list):
                if h not in known:
                    raise ctx.err(f"{where}.hosts[{j}]", f"unknown host {h!r} (known: {_some(hosts)})")
            ctx.unique(on_list, f"{where}.hosts", "host")
            on = tuple(on_list)
        out.append(Network(name=name, driver=driver, subnet=subnet, options=options, internal=internal, hosts=on))
    ctx.unique([n.name for n in out], "networks", "network")
    overlays = [n for n in out if n.is_overlay and n.subnet]
    for a_i, a in enumerate(overlays):
        for b in overlays[a_i + 1 :]:
            if ipaddress.ip_network(a.subnet).overlaps(ipaddress.ip_network(b.subnet)):  # type: ignore[arg-type]
                raise ctx.err("networks", f"overlay subnets of {a.name} and {b.name} overlap")
    return tuple(out)


# --- containers ---------------------------------------------------------------------------------

SINGLE_FIELDS = ("name", "host", "network", "networks", "command", "ip", "ports", "cap_add", "privileged", "image")
GROUP_FIELDS = (
    "group",
    "per_host",
    "hosts",
    "network",
    "networks",
    "command",
    "ports",
    "cap_add",
    "privileged",
    "image",
)


def group_member_names(group: str, hosts: list[str], per_host: int) -> Iterator[tuple[str, str]]:
    """(container name, host) of a group: <group>-<host>, or <group>-<host>-<i> when
    there are several per host."""
    for h in hosts:
        if per_host == 1:
            yield f"{group}-{h}", h
        else:
            for i in range(1, per_host + 1):
                yield f"{group}-{h}-{i}", h


def _entries(ctx: Ctx, data: dict, hosts: list[str]) -> Iterator[tuple[str, dict, str | None]]:
    """(where, a single container's fields, its group) for every container the file
    lists or generates; `where` names the entry in the file."""
    known = set(hosts)
    for i, raw in enumerate(ctx.seq(data.get("containers") or [], "containers")):
        where = f"containers[{i}]"
        if not (isinstance(raw, dict) and "group" in raw):
            yield where, ctx.mapping(raw, where, SINGLE_FIELDS, ("name", "host")), None
            continue
        raw = ctx.mapping(raw, where, GROUP_FIELDS, ("group",))
        group = ctx.name(raw["group"], f"{where}.group", OBJ_NAME, OBJ_HINT)
        per_host = ctx.integer(raw.get("per_host", 1), f"{where}.per_host", 1, MAX_PER_HOST)
        on = [str(h) for h in ctx.seq(raw.get("hosts", hosts), f"{where}.hosts")]
        for j, h in enumerate(on):
            if h not in known:
                raise ctx.err(f"{where}.hosts[{j}]", f"unknown host {h!r} (known: {_some(hosts)})")
        ctx.unique(on, f"{where}.hosts", "host")
        fields = {k: v for k, v in raw.items() if k not in ("group", "per_host", "hosts")}
        for name, host in group_member_names(group, on, per_host):
            ctx.name(name, f"{where}.group", OBJ_NAME, f"member names like {name!r} must be at most 63 characters")
            yield where, {**fields, "name": name, "host": host}, group


def containers(ctx: Ctx, data: dict, hosts: list[str], nets: tuple[Network, ...]) -> tuple[Container, ...]:
    by_name = {n.name: n for n in nets}
    known_hosts = set(hosts)
    out = []
    wheres = []
    for where, raw, group in _entries(ctx, data, hosts):
        name = ctx.name(raw["name"], f"{where}.name", OBJ_NAME, OBJ_HINT)
        host = raw["host"]
        if host not in known_hosts:
            raise ctx.err(f"{where}.host", f"unknown host {host!r} (known: {_some(hosts)})")
        if "network" in raw and "networks" in raw:
            raise ctx.err(where, "give 'network' or 'networks', not both")
        nets_of = (
            [raw["network"]] if "network" in raw else ctx.seq(raw.get("networks", ["bridge"]), f"{where}.networks")
        )
        if not nets_of:
            raise ctx.err(f"{where}.networks", "a container needs at least one network")
        for j, n in enumerate(nets_of):
            f = f"{where}.network" if "network" in raw else f"{where}.networks[{j}]"
            if n == "bridge":
                continue
            if n not in by_name:
                known = ", ".join(sorted(["bridge", *by_name]))
                raise ctx.err(f, f"unknown network {n!r} (known: {known})")
            if host not in by_name[n].hosts:
                raise ctx.err(
                    f, f"network {n!r} is not created on host {host} (its hosts: {_some(list(by_name[n].hosts))})"
                )
        ctx.unique([str(n) for n in nets_of], f"{where}.networks", "network")
        image = _image(ctx, raw.get("image"), f"{where}.image")
        command = _command(ctx, raw.get("command"), f"{where}.command", default=() if image else DEFAULT_COMMAND)
        ip = None
        if raw.get("ip") is not None:
            addr = ctx.ipv4(raw["ip"], f"{where}.ip")
            first = by_name.get(nets_of[0])
            if first is None or first.subnet is None:
                raise ctx.err(
                    f"{where}.ip", f"a fixed ip needs the first network ({nets_of[0]}) to have a subnet in this file"
                )
            if addr not in ipaddress.ip_network(first.subnet):
                raise ctx.err(f"{where}.ip", f"{addr} is not in {nets_of[0]}'s subnet {first.subnet}")
            ip = str(addr)
        ports = tuple(str(p) for p in ctx.seq(raw.get("ports") or [], f"{where}.ports"))
        for j, p in enumerate(ports):
            if not PORT.match(p):
                raise ctx.err(f"{where}.ports[{j}]", f"invalid port mapping {p!r} (use [IP:][HOSTPORT:]PORT[/tcp|udp])")
        cap_add = tuple(
            scalar(ctx, c, f"{where}.cap_add[{j}]")
            for j, c in enumerate(ctx.seq(raw.get("cap_add") or [], f"{where}.cap_add"))
        )
        try:
            normalize(list(cap_add), frozenset(NAMES), "cap_add")
        except InvalidParameter as exc:
            raise ctx.err(f"{where}.cap_add", exc.message.removeprefix("cap_add: ")) from None
        privileged = ctx.boolean(raw["privileged"], f"{where}.privileged") if "privileged" in raw else False
        out.append(
            Container(
                name=name,
                host=host,
                networks=tuple(nets_of),
                command=command,
                ip=ip,
                ports=ports,
                image=image,
                cap_add=cap_add,
                privileged=privileged,
                group=group,
            )
        )
        wheres.append(where)
    seen: dict[str, int] = {}
    for c, where in zip(out, wheres, strict=True):
        if c.name in seen:
            raise ctx.err(where, f"duplicate container {c.name!r}")
        seen[c.name] = 1
    groups = {c.group for c in out if c.group}
    for c, where in zip(out, wheres, strict=True):
        if c.group is None and c.name in groups:
            raise ctx.err(where, f"container name {c.name!r} is also a group's name")
    fixed: dict[tuple[str, str], str] = {}
    for c, where in zip(out, wheres, strict=True):
        if c.ip:
            net = by_name[c.networks[0]]
            # an overlay's addresses are cluster-wide; a bridge network's are per host
            key = (f"{c.networks[0]}@{'*' if net.is_overlay else c.host}", c.ip)
            if key in fixed:
                raise ctx.err(f"{where}.ip", f"{c.ip} is already given to {fixed[key]} on {c.networks[0]}")
            fixed[key] = c.name
    return tuple(out)


def _image(ctx: Ctx, value: Any, where: str) -> str:
    if value is None:
        return ""
    try:
        return reference.parse(str(value)).with_default_tag().familiar()
    except InvalidParameter as exc:
        raise ctx.err(where, exc.message) from None


def images(ctx: Ctx, data: dict, source: str) -> tuple[str, ...]:
    """Tarball paths, relative to the lab file's directory; checked to exist."""
    base = Path(source).parent if source != "<lab>" else Path.cwd()
    out = []
    for i, raw in enumerate(ctx.seq(data.get("images") or [], "images")):
        path = (base / str(raw)).resolve()
        if not path.is_file():
            raise ctx.err(
                f"images[{i}]",
                f"{path} is not a file (a docker-save tarball; build/images/busybox.tar comes from scripts/setup.sh)",
            )
        out.append(str(path))
    return tuple(out)


def _command(ctx: Ctx, value: Any, where: str, default: tuple[str, ...] = DEFAULT_COMMAND) -> tuple[str, ...]:
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
