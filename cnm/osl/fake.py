"""An in-memory stand-in for `netlink.Netlink`, for unit tests at the OS-layer seam.

Same method names, arguments and errors as the real handle (Conflict for a taken
name, NotFound for a missing link, idempotent deletes), kernel behaviour that callers
rely on (a veth's peer dies with it, a bridge's ports are released when it goes,
moving a link into another namespace makes it disappear here), and no root needed.
Tests assert on its state (`links`, `addresses`, `sysctls`), not on call sequences.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field, replace

from cnm.errors import Conflict, InvalidParameter, NotFound
from cnm.osl.netlink import IFNAMSIZ, Link, Route


@dataclass
class FakeLink:
    name: str
    index: int
    kind: str | None = None
    mtu: int = 1500
    mac: str | None = None
    up: bool = False
    master: int | None = None
    alias: str | None = None
    group: int = 0
    peer: str | None = None
    peer_ns: FakeNetlink | None = None  # a veth peer in another namespace (None: this one)
    addresses: list[str] = field(default_factory=list)
    ipv6_addresses: bool = True  # False: addrgenmode none (the kernel makes no IPv6 address)


class FakeNetlink:
    def __init__(self, netns: str | None = None, namespaces: FakeNamespaces | None = None) -> None:
        self.netns = netns
        self._world = namespaces  # where links moved to another namespace arrive
        self._links: dict[str, FakeLink] = {}
        self._next = itertools.count(2)
        self._links["lo"] = FakeLink("lo", 1, mtu=65536)
        self.sysctls: dict[str, str] = {}
        self._routes: list[Route] = []
        self.moved: dict[str, tuple[str, str]] = {}  # old name -> (netns, new name)
        self.moved_links: dict[str, object] = {}  # old name -> the link as it left
        self.closed = False
        self.fail_next: dict[str, Exception] = {}  # method name -> error to raise once

    def _maybe_fail(self, method: str) -> None:
        exc = self.fail_next.pop(method, None)
        if exc is not None:
            raise exc

    def _get(self, name: str) -> FakeLink:
        try:
            return self._links[name]
        except KeyError:
            raise NotFound(f"no network interface named {name}") from None

    def _new(self, name: str, **kw) -> FakeLink:
        if not name or len(name) > IFNAMSIZ:
            raise InvalidParameter(f"invalid interface name {name!r}")
        if name in self._links:
            raise Conflict(f"cannot create {name}: File exists")
        link = FakeLink(name, next(self._next), **kw)
        self._links[name] = link
        return link

    @staticmethod
    def _public(link: FakeLink) -> Link:
        return Link(
            name=link.name,
            index=link.index,
            kind=link.kind,
            mtu=link.mtu,
            mac=link.mac,
            up=link.up,
            master=link.master,
            alias=link.alias,
        )

    # links
    def link_exists(self, name: str) -> bool:
        return name in self._links

    def link_index(self, name: str) -> int:
        return self._get(name).index

    def link_names(self) -> list[str]:
        return list(self._links)

    def link(self, name: str) -> Link:
        return self._public(self._get(name))

    def links(self) -> list[Link]:
        return [self._public(link) for link in self._links.values()]

    def add_foreign_link(self, name: str, kind: str | None = "bridge") -> None:
        """Test helper: a link someone else created (no alias)."""
        self._new(name, kind=kind)

    def add_ports(self, bridge: str, count: int) -> None:
        """Test helper: enslave `count` anonymous ports to `bridge`."""
        idx = self._get(bridge).index
        for i in range(count):
            self._new(f"p{idx}x{i}", kind="veth", master=idx)

    def create_bridge(
        self, name: str, mtu: int = 1500, *, mac: str | None = None, alias: str | None = None, up: bool = True
    ) -> None:
        self._maybe_fail("create_bridge")
        self._new(name, kind="bridge", mtu=mtu, mac=mac, alias=alias, up=up)

    def create_veth(
        self,
        name: str,
        peer_name: str,
        mtu: int = 1500,
        *,
        peer_mac: str | None = None,
        alias: str | None = None,
        peer_netns: str | None = None,
        master: str | None = None,
        up: bool = False,
        ipv6_addresses: bool = True,
    ) -> None:
        self._maybe_fail("create_veth")
        if peer_name in self._links:
            raise Conflict(f"cannot create {peer_name}: File exists")
        bridge = self._get(master).index if master else None
        if bridge is not None and sum(1 for link in self._links.values() if link.master == bridge) >= 1023:
            raise Conflict(f"cannot create veth pair {name}/{peer_name}: Exchange full")  # the kernel's EXFULL
        self._new(
            name, kind="veth", mtu=mtu, alias=alias, peer=peer_name, master=bridge, up=up, ipv6_addresses=ipv6_addresses
        )
        self._new(peer_name, kind="veth", mtu=mtu, mac=peer_mac, peer=name)
        if peer_netns:
            self.move_link_to_netns(peer_name, peer_netns)

    def park_link(self, name: str, new_name: str) -> bool:
        if name not in self._links:
            return False
        self._get(name).up = False
        self._routes = [r for r in self._routes if r.dev != name]  # the kernel drops them when it goes down
        self.rename_link(name, new_name)
        return True

    def retire_link(self, name: str, *, alias: str, group: int) -> bool:
        link = self._links.get(name)
        if link is None or link.alias != alias:
            return False
        link.up, link.group = False, group
        return True

    def delete_link_group(self, group: int) -> None:
        self._maybe_fail("delete_link_group")
        if group == 0:
            raise ValueError("refusing to delete link group 0")
        for name in [n for n, link in self._links.items() if link.group == group]:
            self.delete_link(name)

    def sibling(self) -> FakeNetlink:
        return self

    def delete_link(self, name: str) -> bool:
        link = self._links.pop(name, None)
        if link is None:
            return False
        if link.peer:  # a veth's peer dies with it, wherever it is
            owner = link.peer_ns or self
            peer = owner._links.pop(link.peer, None)
            if peer is not None and owner is not self:
                owner._routes = [r for r in owner._routes if r.dev != peer.name]
        for other in self._links.values():
            if other.master == link.index:
                other.master = None
        self._routes = [r for r in self._routes if r.dev != name]
        return True

    def set_link_up(self, name: str) -> None:
        self._maybe_fail("set_link_up")
        self._get(name).up = True

    def rename_link(self, name: str, new_name: str) -> None:
        if new_name in self._links:
            raise Conflict(f"cannot rename {name} to {new_name}: File exists")
        link = self._links.pop(self._get(name).name)
        link.name = new_name
        self._links[new_name] = link
        if link.peer:
            peer = (link.peer_ns or self)._links.get(link.peer)
            if peer is not None:
                peer.peer = new_name

    def set_master(self, name: str, bridge: str | None) -> None:
        self._maybe_fail("set_master")
        self._get(name).master = self._get(bridge).index if bridge else None

    def bridge_ports(self, bridge: str) -> list[str]:
        idx = self._get(bridge).index
        return [link.name for link in self._links.values() if link.master == idx]

    def bridge_port_count(self, bridge: str) -> int:
        return len(self.bridge_ports(bridge))

    def move_link_to_netns(self, name: str, netns: str, new_name: str | None = None) -> None:
        if self._world is not None:
            self._move_in_world(name, self._world.handle(netns), new_name or name)
            return
        link = self._links.pop(self._get(name).name)
        self.moved[name] = (netns, new_name or name)
        self.moved_links[name] = link
        if link.peer and link.peer in self._links:
            self._links[link.peer].peer = None

    def _move_in_world(self, name: str, target: FakeNetlink, new_name: str) -> None:
        """The link arrives in `target` (as the kernel moves it), keeping its veth peer."""
        link = self._get(name)
        if new_name in target._links:
            raise Conflict(f"cannot move {name} into {target.netns} as {new_name}: File exists")
        del self._links[name]
        self._routes = [r for r in self._routes if r.dev != name]
        self.moved[name] = (target.netns or "", new_name)
        link.name, link.index, link.up, link.master = new_name, next(target._next), False, None
        link.addresses = []  # the kernel flushes addresses on a namespace move
        if link.peer:
            owner = link.peer_ns or self
            peer = owner._links.get(link.peer)
            if peer is not None:
                peer.peer = new_name
                peer.peer_ns = None if owner is target else target
                link.peer_ns = None if owner is target else owner
        target._links[new_name] = link

    # addresses
    def add_address(self, name: str, cidr: str, *, exist_ok: bool = False) -> None:
        self._maybe_fail("add_address")
        iface = ipaddress.ip_interface(cidr)
        link = self._get(name)
        if str(iface) in link.addresses:
            if exist_ok:
                return
            raise Conflict(f"cannot add address {cidr} to {name}: File exists")
        link.addresses.append(str(iface))

    def del_address(self, name: str, cidr: str) -> bool:
        link = self._links.get(name)
        key = str(ipaddress.ip_interface(cidr))
        if link is None or key not in link.addresses:
            return False
        link.addresses.remove(key)
        return True

    def addresses(self, name: str, family: int | None = None) -> list[str]:
        return [a for a in self._get(name).addresses if family is None or ipaddress.ip_interface(a).version == family]

    def link_with_address(self, address: str) -> Link | None:
        for link in self._links.values():
            if any(ipaddress.ip_interface(a).ip == ipaddress.ip_address(address) for a in link.addresses):
                return self._public(link)
        return None

    # routes
    def add_route(
        self,
        destination: str,
        gateway: str | None = None,
        dev: str | None = None,
        *,
        scope: int | None = None,
        table: int = 254,
        exist_ok: bool = False,
    ) -> None:
        if destination == "default":
            destination = "::/0" if gateway and ":" in gateway else "0.0.0.0/0"
        net = ipaddress.ip_network(destination, strict=False)
        if dev is not None:
            self._get(dev)
        route = Route(str(net), gateway, dev, net.version, scope or 0, table)
        if any(r.destination == route.destination and r.table == table for r in self._routes):
            if exist_ok:
                return
            raise Conflict(f"cannot add route {destination}: File exists")
        self._routes.append(route)

    def add_default_route(self, gateway: str, dev: str | None = None) -> None:
        self.add_route("default", gateway, dev)

    def del_route(
        self, destination: str, gateway: str | None = None, dev: str | None = None, *, table: int = 254
    ) -> bool:
        if destination == "default":
            destination = "::/0" if gateway and ":" in gateway else "0.0.0.0/0"
        dst = str(ipaddress.ip_network(destination, strict=False))
        before = len(self._routes)
        self._routes = [r for r in self._routes if not (r.destination == dst and r.table == table)]
        return len(self._routes) < before

    def routes(self, family: int | None = None, table: int = 254) -> list[Route]:
        return [replace(r) for r in self._routes if r.table == table and (family is None or r.family == family)]

    def route_cidrs(self, family: int | None = 4) -> list[str]:
        return sorted({r.destination for r in self.routes(family) if not r.destination.endswith("/0")})

    # sysctls
    def sysctl_read(self, key: str) -> str:
        try:
            return self.sysctls[key]
        except KeyError:
            raise NotFound(f"cannot read sysctl {key}: No such file or directory") from None

    def sysctl_write(self, key: str, value: str | int) -> None:
        self.sysctls[key] = str(value)

    def run(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakeNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FakeNamespaces:
    """A fake machine: the host namespace plus bind-mounted network namespaces, each a
    FakeNetlink. Links moved between them arrive (veth pairs stay pairs across
    namespaces); deleting a namespace deletes its links, and their veth peers with
    them. Stands in for cnm.osl.namespaces.Namespaces, and `handle` for Netlink(path)."""

    def __init__(self) -> None:
        self.host = FakeNetlink(None, self)
        self.namespaces: dict[str, FakeNetlink] = {}

    def handle(self, path: str | None) -> FakeNetlink:
        if path is None:
            return self.host
        try:
            return self.namespaces[path]
        except KeyError:
            raise NotFound(f"no network namespace at {path}") from None

    def create(self, path: str) -> None:
        if path in self.namespaces:
            raise Conflict(f"a network namespace is already mounted at {path}")
        self.namespaces[path] = FakeNetlink(path, self)
        self.namespaces[path].set_link_up("lo")  # as Namespaces.create does

    def delete(self, path: str) -> None:
        ns = self.namespaces.pop(path, None)
        if ns is not None:
            for name in list(ns.link_names()):
                ns.delete_link(name)

    def exists(self, path: str) -> bool:
        return path in self.namespaces

    def entries(self, directory: str) -> list[str]:
        """Names of the namespaces mounted in `directory` (as os.listdir would list
        their mount points), sorted."""
        d = directory.rstrip("/")
        return sorted(p[len(d) + 1 :] for p in self.namespaces if p.rsplit("/", 1)[0] == d)

    def bind(self, source: str, path: str) -> None:
        if source not in self.namespaces:
            raise NotFound(f"no network namespace at {source}")
        if path in self.namespaces:
            raise Conflict(f"a network namespace is already mounted at {path}")
        self.namespaces[path] = self.namespaces[source]
