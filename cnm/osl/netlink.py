"""Netlink (rtnetlink) through pyroute2: one handle per network namespace.

`Netlink()` works in the namespace of the thread that creates it; `Netlink(path)`
in the namespace bind-mounted at `path` (an `ip netns` name is accepted too). The
pyroute2 socket is opened once, on a worker thread that lives inside that namespace
(`netns.NetnsThread`), and every call runs there: the caller's thread never changes
namespace, no process is forked, and one handle can be shared between threads.

Any thread may call it, a coroutine included (pyroute2's own event loop runs on the
handle's thread, never the caller's); each call blocks until the kernel answers, so
long batches from a coroutine belong in `asyncio.to_thread`.

Values in and out are plain: interface names, "a.b.c.d/len" strings, ints. Kernel
errors come out as cnm.errors (see osl.errors); deletes are idempotent.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from cnm.errors import InvalidParameter, NotFound
from cnm.osl import sysctl
from cnm.osl.errors import is_gone, translate
from cnm.osl.netns import NetnsThread, netns_path

T = TypeVar("T")

IFF_UP = 0x1
MAIN_TABLE = 254
IFNAMSIZ = 15          # usable characters in a Linux interface name


@dataclass(frozen=True)
class Link:
    name: str
    index: int
    kind: str | None          # "bridge", "veth", None for lo/physical
    mtu: int
    mac: str | None
    up: bool                  # administratively up (IFF_UP)
    master: int | None        # ifindex of the bridge this link is a port of
    alias: str | None         # IFLA_IFALIAS: our ownership mark


@dataclass(frozen=True)
class Route:
    destination: str          # CIDR; default routes are "0.0.0.0/0" / "::/0"
    gateway: str | None
    dev: str | None
    family: int               # 4 or 6
    scope: int
    table: int


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


def _family(addr: str) -> int:
    return ipaddress.ip_address(addr.split("/")[0]).version


def _af(family: int) -> int:
    return socket.AF_INET if family == 4 else socket.AF_INET6


def _route_spec(net: Any, gateway: str | None, table: int) -> dict[str, Any]:
    """pyroute2 arguments naming one route (add and delete alike)."""
    spec: dict[str, Any] = dict(family=_af(net.version), dst_len=net.prefixlen, table=table)
    if net.prefixlen:
        spec["dst"] = str(net.network_address)
    if gateway:
        spec["gateway"] = gateway
    return spec


class Netlink:
    """A netlink handle bound to one network namespace. Close it (or use `with`)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns_path(netns) if netns is not None else None
        self._worker = NetnsThread(self.netns, name=f"cnm-nl:{self.netns or 'self'}")
        try:
            self._ipr = self._worker.call(self._open)
        except BaseException:
            self._worker.close()
            raise

    @staticmethod
    def _open() -> Any:
        from pyroute2 import IPRoute    # heavy import: only where the kernel is touched
        try:
            return IPRoute()
        except OSError as exc:
            raise translate(exc, "open a netlink socket") from exc

    # -- plumbing ---------------------------------------------------------------

    def _do(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(ipr, *args) on the namespace thread, translating kernel errors."""
        def run() -> T:
            try:
                return fn(self._ipr, *args)
            except Exception as exc:
                raise translate(exc, what) from exc
        return self._worker.call(run)

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a plain function inside this handle's namespace (e.g. sysctl.write)."""
        return self._worker.call(fn, *args, **kwargs)

    def close(self) -> None:
        """Close the socket and stop the worker. Idempotent."""
        if getattr(self, "_ipr", None) is not None:
            ipr, self._ipr = self._ipr, None
            try:
                self._worker.call(ipr.close)
            except Exception:
                pass
        self._worker.close()

    def __enter__(self) -> "Netlink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _index(ipr: Any, name: str) -> int:
        found = ipr.link_lookup(ifname=name)
        if not found:
            raise NotFound(f"no network interface named {name}")
        return found[0]

    # -- links --------------------------------------------------------------------

    def link_exists(self, name: str) -> bool:
        return bool(self._do(f"look up {name}", lambda ipr: ipr.link_lookup(ifname=name)))

    def link_index(self, name: str) -> int:
        return self._do(f"look up {name}", self._index, name)

    def link_names(self) -> list[str]:
        return self._do("list links", lambda ipr: [_attr(m, "IFLA_IFNAME") for m in ipr.get_links()])

    @staticmethod
    def _link_from(msg: Any) -> Link:
        info = _attr(msg, "IFLA_LINKINFO")
        return Link(
            name=_attr(msg, "IFLA_IFNAME"),
            index=msg["index"],
            kind=info.get_attr("IFLA_INFO_KIND") if info is not None else None,
            mtu=_attr(msg, "IFLA_MTU"),
            mac=_attr(msg, "IFLA_ADDRESS"),
            up=bool(msg["flags"] & IFF_UP),
            master=_attr(msg, "IFLA_MASTER"),
            alias=_attr(msg, "IFLA_IFALIAS"),
        )

    def link(self, name: str) -> Link:
        """The link's current state; NotFound if it does not exist."""
        def get(ipr: Any) -> Link:
            return self._link_from(ipr.get_links(self._index(ipr, name))[0])
        return self._do(f"read link {name}", get)

    def links(self) -> list[Link]:
        return self._do("list links", lambda ipr: [self._link_from(m) for m in ipr.get_links()])

    def create_bridge(self, name: str, mtu: int = 1500, *, mac: str | None = None,
                      alias: str | None = None, up: bool = True) -> None:
        """A Linux bridge with STP off and forward delay 0 (ports forward at once).
        `mac` set explicitly keeps the bridge's MAC from following its ports (the
        kernel otherwise adopts the lowest port MAC). Conflict if the name is taken."""
        _check_ifname(name)

        def create(ipr: Any) -> None:
            spec: dict[str, Any] = dict(ifname=name, kind="bridge", mtu=mtu,
                                        br_stp_state=0, br_forward_delay=0)
            if mac:
                spec["address"] = mac
            ipr.link("add", **spec)
            idx = self._index(ipr, name)
            if alias:
                ipr.link("set", index=idx, ifalias=alias)
            if up:
                ipr.link("set", index=idx, state="up")
        self._do(f"create bridge {name}", create)

    def create_veth(self, name: str, peer_name: str, mtu: int = 1500, *,
                    peer_mac: str | None = None, alias: str | None = None,
                    peer_netns: str | None = None) -> None:
        """A veth pair, both ends down. Conflict if either name is taken. With
        `peer_netns` the peer is born inside that namespace: ~10x faster than creating
        it here and moving it (a move waits for the kernel to unregister the device)."""
        _check_ifname(name)
        _check_ifname(peer_name)

        def create(ipr: Any) -> None:
            peer: dict[str, Any] = {"ifname": peer_name, "mtu": mtu}
            if peer_mac:
                peer["address"] = peer_mac
            fd = os.open(netns_path(peer_netns), os.O_RDONLY | os.O_CLOEXEC) if peer_netns else None
            try:
                if fd is not None:
                    peer["net_ns_fd"] = fd
                ipr.link("add", ifname=name, kind="veth", mtu=mtu, peer=peer)
            finally:
                if fd is not None:
                    os.close(fd)
            if alias:
                ipr.link("set", index=self._index(ipr, name), ifalias=alias)
        self._do(f"create veth pair {name}/{peer_name}", create)

    def delete_link(self, name: str) -> bool:
        """Delete a link. Idempotent: returns False when it was already gone."""
        def delete(ipr: Any) -> bool:
            found = ipr.link_lookup(ifname=name)
            if not found:
                return False
            try:
                ipr.link("del", index=found[0])
            except Exception as exc:
                if is_gone(exc):        # raced with someone else's delete
                    return False
                raise
            return True
        return self._do(f"delete link {name}", delete)

    def _set(self, name: str, what: str, **spec: Any) -> None:
        self._do(f"{what} on {name}", lambda ipr: ipr.link("set", index=self._index(ipr, name), **spec))

    def set_link_up(self, name: str) -> None:
        self._set(name, "set link up", state="up")

    def rename_link(self, name: str, new_name: str) -> None:
        """Rename (the link must be down)."""
        _check_ifname(new_name)
        self._set(name, f"rename to {new_name}", ifname=new_name)

    def set_master(self, name: str, bridge: str | None) -> None:
        """Enslave `name` to `bridge` (None = release it)."""
        def enslave(ipr: Any) -> None:
            master = self._index(ipr, bridge) if bridge else 0
            ipr.link("set", index=self._index(ipr, name), master=master)
        self._do(f"attach {name} to {bridge}" if bridge else f"detach {name}", enslave)

    def bridge_ports(self, bridge: str) -> list[str]:
        """Names of the links enslaved to `bridge`."""
        def ports(ipr: Any) -> list[str]:
            idx = self._index(ipr, bridge)
            # Filtered by the kernel: a full dump grows with every container on the host.
            return [_attr(m, "IFLA_IFNAME") for m in ipr.link("dump", master=idx)
                    if _attr(m, "IFLA_MASTER") == idx]
        return self._do(f"list ports of {bridge}", ports)

    def bridge_port_count(self, bridge: str) -> int:
        return len(self.bridge_ports(bridge))

    def move_link_to_netns(self, name: str, netns: str, new_name: str | None = None) -> None:
        """Move a link into the namespace at `netns` (path or `ip netns` name),
        renaming it there in the same request when `new_name` is given. The link
        arrives down."""
        path = netns_path(netns)
        if new_name:
            _check_ifname(new_name)

        def move(ipr: Any) -> None:
            idx = self._index(ipr, name)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                spec: dict[str, Any] = {"net_ns_fd": fd}
                if new_name:
                    spec["ifname"] = new_name
                ipr.link("set", index=idx, **spec)
            finally:
                os.close(fd)
        self._do(f"move {name} into {path}", move)

    # -- addresses ------------------------------------------------------------------

    def add_address(self, name: str, cidr: str, *, exist_ok: bool = False) -> None:
        """Add "a.b.c.d/len" (or IPv6) to the link. Conflict if present, unless exist_ok."""
        iface = _interface(cidr)

        def add(ipr: Any) -> None:
            idx = self._index(ipr, name)
            spec: dict[str, Any] = dict(index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            if iface.version == 4 and iface.network.prefixlen < 31:
                spec["broadcast"] = str(iface.network.broadcast_address)
            try:
                ipr.addr("add", **spec)
            except Exception as exc:
                if exist_ok and getattr(exc, "code", None) == 17:
                    return
                raise
        self._do(f"add address {cidr} to {name}", add)

    def del_address(self, name: str, cidr: str) -> bool:
        """Remove an address. Idempotent: False when the link or address is gone."""
        iface = _interface(cidr)

        def delete(ipr: Any) -> bool:
            found = ipr.link_lookup(ifname=name)
            if not found:
                return False
            try:
                ipr.addr("del", index=found[0], address=str(iface.ip), prefixlen=iface.network.prefixlen)
            except Exception as exc:
                if is_gone(exc):
                    return False
                raise
            return True
        return self._do(f"delete address {cidr} from {name}", delete)

    def addresses(self, name: str, family: int | None = None) -> list[str]:
        """The link's addresses as "addr/len", IPv4 first. `family` 4 or 6 filters."""
        def get(ipr: Any) -> list[str]:
            idx = self._index(ipr, name)
            out = []
            for m in ipr.get_addr(index=idx):
                addr = _attr(m, "IFA_LOCAL") or _attr(m, "IFA_ADDRESS")
                out.append((m["family"], f"{addr}/{m['prefixlen']}"))
            return [a for fam, a in sorted(out, key=lambda x: x[0])
                    if family is None or fam == _af(family)]
        return self._do(f"list addresses of {name}", get)

    def link_with_address(self, address: str) -> Link | None:
        """The link holding `address` (plain IP), or None: one address dump, not one
        per link."""
        ip = ipaddress.ip_address(address)

        def get(ipr: Any) -> Link | None:
            for m in ipr.get_addr(family=_af(ip.version)):
                if (_attr(m, "IFA_LOCAL") or _attr(m, "IFA_ADDRESS")) == str(ip):
                    found = ipr.get_links(m["index"])
                    return self._link_from(found[0]) if found else None
            return None
        return self._do(f"find the link holding {ip}", get)

    # -- routes ---------------------------------------------------------------------

    def add_route(self, destination: str, gateway: str | None = None, dev: str | None = None,
                  *, scope: int | None = None, table: int = MAIN_TABLE, exist_ok: bool = False) -> None:
        """Add a route. `destination` is a CIDR or "default" (family from gateway)."""
        if destination == "default":
            if gateway is None:
                raise InvalidParameter("a default route needs a gateway")
            destination = "0.0.0.0/0" if _family(gateway) == 4 else "::/0"
        net = ipaddress.ip_network(destination, strict=False)

        def add(ipr: Any) -> None:
            spec = _route_spec(net, gateway, table)
            if dev:
                spec["oif"] = self._index(ipr, dev)
            if scope is not None:
                spec["scope"] = scope
            try:
                ipr.route("add", **spec)
            except Exception as exc:
                if exist_ok and getattr(exc, "code", None) == 17:
                    return
                raise
        self._do(f"add route {destination}", add)

    def add_default_route(self, gateway: str, dev: str | None = None) -> None:
        self.add_route("default", gateway, dev)

    def del_route(self, destination: str, gateway: str | None = None, dev: str | None = None,
                  *, table: int = MAIN_TABLE) -> bool:
        """Delete a route. Idempotent: False when it was not there."""
        if destination == "default":
            destination = "::/0" if gateway and _family(gateway) == 6 else "0.0.0.0/0"
        net = ipaddress.ip_network(destination, strict=False)

        def delete(ipr: Any) -> bool:
            spec = _route_spec(net, gateway, table)
            if dev:
                found = ipr.link_lookup(ifname=dev)
                if not found:
                    return False
                spec["oif"] = found[0]
            try:
                ipr.route("del", **spec)
            except Exception as exc:
                if is_gone(exc):
                    return False
                raise
            return True
        return self._do(f"delete route {destination}", delete)

    def routes(self, family: int | None = None, table: int = MAIN_TABLE) -> list[Route]:
        """Routes of one table (main by default), IPv4 and/or IPv6."""
        def get(ipr: Any) -> list[Route]:
            names = {m["index"]: _attr(m, "IFLA_IFNAME") for m in ipr.get_links()}
            out: list[Route] = []
            for fam in ((family,) if family else (4, 6)):
                for m in ipr.get_routes(family=_af(fam), table=table):
                    if (_attr(m, "RTA_TABLE") or m["table"]) != table:
                        continue
                    dst = _attr(m, "RTA_DST") or ("0.0.0.0" if fam == 4 else "::")
                    out.append(Route(
                        destination=str(ipaddress.ip_network(f"{dst}/{m['dst_len']}", strict=False)),
                        gateway=_attr(m, "RTA_GATEWAY"),
                        dev=names.get(_attr(m, "RTA_OIF")),
                        family=fam, scope=m["scope"], table=table))
            return out
        return self._do("list routes", get)

    def route_cidrs(self, family: int | None = 4) -> list[str]:
        """Destinations of the main table's routes, default routes left out: what
        IPAM must not hand out a pool over (a VPN or LAN route on the host)."""
        return sorted({r.destination for r in self.routes(family)
                       if not r.destination.endswith("/0")})

    # -- sysctls in this namespace --------------------------------------------------------

    def sysctl_read(self, key: str) -> str:
        return self.run(sysctl.read, key)

    def sysctl_write(self, key: str, value: str | int) -> None:
        self.run(sysctl.write, key, value)


def _interface(cidr: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        if "/" not in cidr:
            raise ValueError("no prefix length")
        return ipaddress.ip_interface(cidr)
    except ValueError as exc:
        raise InvalidParameter(f"invalid address {cidr!r}: want address/prefix-length") from exc


def _check_ifname(name: str) -> None:
    if not name or len(name) > IFNAMSIZ or "/" in name or ":" in name \
            or any(c.isspace() for c in name) or name in (".", ".."):
        raise InvalidParameter(f"invalid interface name {name!r}: 1-{IFNAMSIZ} characters, "
                               "no '/', ':' or whitespace")
