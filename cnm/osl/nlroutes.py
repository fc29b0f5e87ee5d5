"""Netlink's addresses and routes: an interface's addresses added, removed and listed,
routes added (the default route too), removed and listed.

A mixin of cnm.osl.netlink.Netlink (kept apart: the handle is long enough), on its
request helpers.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from cnm.errors import InvalidParameter
from cnm.osl import rtnl
from cnm.osl.errors import is_gone, translate
from cnm.osl.nlvalues import Link, Route, _interface
from cnm.osl.rtnl import Rtnl

MAIN_TABLE = 254


T = TypeVar("T")


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


class NetlinkRoutes:
    _rt: Rtnl

    if TYPE_CHECKING:  # Netlink's own

        def _do(self, what: str, fn: Callable[..., T], *args: Any) -> T: ...
        def _index(self, ipr: Any, name: str) -> int: ...
        @staticmethod
        def _link_from(msg: Any) -> Link: ...
        def _lookup(self, name: str) -> rtnl.LinkInfo | None: ...
        def _raw_index(self, what: str, name: str) -> int: ...

    def add_address(self, name: str, cidr: str, *, exist_ok: bool = False) -> None:
        """Add "a.b.c.d/len" (or IPv6, without duplicate address detection: the address
        is ours by IPAM) to the link. Conflict if present, unless exist_ok."""
        iface = _interface(cidr)
        what = f"add address {cidr} to {name}"
        try:
            self._rt.do(rtnl.add_address(self._raw_index(what, name), str(iface)))
        except OSError as exc:
            if exist_ok and exc.errno == 17:
                return
            raise translate(exc, what) from exc

    def del_address(self, name: str, cidr: str) -> bool:
        """Remove an address. Idempotent: False when the link or address is gone."""
        iface = _interface(cidr)

        def delete(ipr: Any) -> bool:
            found = self._lookup(name)
            if found is None:
                return False
            try:
                ipr.addr("del", index=found.index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
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
            return [a for fam, a in sorted(out, key=lambda x: x[0]) if family is None or fam == _af(family)]

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

    def add_route(
        self,
        destination: str,
        gateway: str | None = None,
        dev: str | None = None,
        *,
        scope: int | None = None,
        table: int = MAIN_TABLE,
        exist_ok: bool = False,
    ) -> None:
        """Add a route. `destination` is a CIDR or "default" (family from gateway)."""
        if destination == "default":
            if gateway is None:
                raise InvalidParameter("a default route needs a gateway")
            destination = "0.0.0.0/0" if _family(gateway) == 4 else "::/0"
        net = ipaddress.ip_network(destination, strict=False)
        what = f"add route {destination}"
        oif = self._raw_index(what, dev) if dev else None
        try:
            self._rt.do(
                rtnl.add_route(
                    str(net),
                    gateway=gateway,
                    oif=oif,
                    table=table,
                    scope=scope if scope is not None else rtnl.RT_SCOPE_UNIVERSE,
                )
            )
        except OSError as exc:
            if exist_ok and exc.errno == 17:
                return
            raise translate(exc, what) from exc

    def add_default_route(self, gateway: str, dev: str | None = None) -> None:
        self.add_route("default", gateway, dev)

    def del_route(
        self, destination: str, gateway: str | None = None, dev: str | None = None, *, table: int = MAIN_TABLE
    ) -> bool:
        """Delete a route. Idempotent: False when it was not there."""
        if destination == "default":
            destination = "::/0" if gateway and _family(gateway) == 6 else "0.0.0.0/0"
        net = ipaddress.ip_network(destination, strict=False)

        def delete(ipr: Any) -> bool:
            spec = _route_spec(net, gateway, table)
            if dev:
                found = self._lookup(dev)
                if found is None:
                    return False
                spec["oif"] = found.index
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
            for fam in (family,) if family else (4, 6):
                for m in ipr.get_routes(family=_af(fam), table=table):
                    if (_attr(m, "RTA_TABLE") or m["table"]) != table:
                        continue
                    dst = _attr(m, "RTA_DST") or ("0.0.0.0" if fam == 4 else "::")
                    out.append(
                        Route(
                            destination=str(ipaddress.ip_network(f"{dst}/{m['dst_len']}", strict=False)),
                            gateway=_attr(m, "RTA_GATEWAY"),
                            dev=names.get(_attr(m, "RTA_OIF")),
                            family=fam,
                            scope=m["scope"],
                            table=table,
                        )
                    )
            return out

        return self._do("list routes", get)

    def route_cidrs(self, family: int | None = 4) -> list[str]:
        """Destinations of the main table's routes, default routes left out: what
        IPAM must not hand out a pool over (a VPN or LAN route on the host)."""
        return sorted({r.destination for r in self.routes(family) if not r.destination.endswith("/0")})
