"""VXLAN devices, their forwarding database (FDB) and neighbour (ARP) entries.

The only module that makes the pyroute2 calls for these; it reuses `Netlink`'s
namespace worker and error translation by subclassing it, so one `VxlanNetlink`
handle serves both the plain link/address calls and the VXLAN ones.

Kernel facts this relies on:
- A VXLAN device's UDP socket is opened when the device goes UP, in the namespace
  the device was CREATED in (vxlan->net), even after the device has been moved to
  another namespace. So: create it in the underlay namespace, move it into the
  overlay namespace, bring it up there (Docker's overlay does the same).
- `learning off`: the device never learns MAC -> VTEP from received frames; every
  remote MAC needs a static FDB entry (`bridge fdb ... dst VTEP self permanent`).
- `proxy on`: the device answers ARP requests itself from its neighbour table, so a
  broadcast ARP never has to leave the host (there is no flood destination).
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from cnm.errors import InvalidParameter
from cnm.osl.errors import is_gone
from cnm.osl.netlink import Netlink, _check_ifname

DEFAULT_PORT = 4789            # IANA VXLAN port
VNI_MIN, VNI_MAX = 1, (1 << 24) - 1

NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02


@dataclass(frozen=True)
class VxlanInfo:
    """What the kernel reports for a VXLAN device (`ip -d link show`)."""

    name: str
    vni: int
    port: int
    local: str | None
    learning: bool
    proxy: bool


def check_vni(vni: int) -> int:
    if not isinstance(vni, int) or isinstance(vni, bool) or not VNI_MIN <= vni <= VNI_MAX:
        raise InvalidParameter(f"invalid VXLAN id {vni!r}: want an integer {VNI_MIN}..{VNI_MAX}")
    return vni


def _ipv4(value: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise InvalidParameter(f"invalid {what} {value!r}: want an IPv4 address") from None


def _family(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    return socket.AF_INET6 if addr.version == 6 else socket.AF_INET


def _mac(value: str) -> str:
    parts = str(value).lower().split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        raise InvalidParameter(f"invalid MAC address {value!r}: want six hex pairs, e.g. 02:42:0a:00:00:02")
    return ":".join(parts)


class VxlanNetlink(Netlink):
    """A `Netlink` handle that also manages VXLAN devices, FDB and neighbour entries."""

    def create_vxlan(self, name: str, vni: int, *, local: str, port: int = DEFAULT_PORT,
                     mtu: int = 1450, learning: bool = False, proxy: bool = True,
                     alias: str | None = None) -> None:
        """A VXLAN device, down, with no multicast group and no default destination
        (frames for MACs without an FDB entry are dropped). Conflict if the name is
        taken or another device already uses this VNI on this port and address."""
        _check_ifname(name)
        check_vni(vni)
        local = _ipv4(local, "VTEP address")
        if not 1 <= port <= 65535:
            raise InvalidParameter(f"invalid VXLAN UDP port {port}: want 1..65535")

        def create(ipr: Any) -> None:
            ipr.link("add", ifname=name, kind="vxlan", mtu=mtu, vxlan_id=vni,
                     vxlan_local=local, vxlan_port=port, vxlan_udp_csum=0,
                     vxlan_learning=1 if learning else 0, vxlan_proxy=1 if proxy else 0)
            if alias:
                ipr.link("set", index=self._index(ipr, name), ifalias=alias)
        self._do(f"create VXLAN device {name} (VNI {vni}, port {port})", create)

    def vxlan_info(self, name: str) -> VxlanInfo:
        """The device's VXLAN parameters. NotFound if absent; InvalidParameter if it
        is not a VXLAN device."""
        def get(ipr: Any) -> VxlanInfo:
            msg = ipr.get_links(self._index(ipr, name))[0]
            info = msg.get_attr("IFLA_LINKINFO")
            if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
                raise InvalidParameter(f"{name} is not a VXLAN device")
            data = info.get_attr("IFLA_INFO_DATA")
            return VxlanInfo(
                name=name, vni=data.get_attr("IFLA_VXLAN_ID"),
                port=data.get_attr("IFLA_VXLAN_PORT") or DEFAULT_PORT,
                local=data.get_attr("IFLA_VXLAN_LOCAL"),
                learning=bool(data.get_attr("IFLA_VXLAN_LEARNING")),
                proxy=bool(data.get_attr("IFLA_VXLAN_PROXY")))
        return self._do(f"read VXLAN device {name}", get)

    # -- FDB: MAC -> remote VTEP ---------------------------------------------------------

    def fdb_replace(self, dev: str, mac: str, dst: str) -> None:
        """Permanent `self` entry on the VXLAN device: frames for `mac` go to VTEP `dst`.
        Idempotent (replaces an entry for the same MAC)."""
        mac, dst = _mac(mac), _ipv4(dst, "VTEP address")
        self._do(f"add FDB entry {mac} -> {dst} on {dev}", lambda ipr: ipr.fdb(
            "replace", ifindex=self._index(ipr, dev), lladdr=mac, dst=dst,
            state=NUD_PERMANENT | NUD_NOARP, flags=NTF_SELF))

    def fdb_delete(self, dev: str, mac: str, dst: str | None = None) -> bool:
        """Remove the device's entry for `mac` (only the one to `dst`, if given).
        Idempotent: False when the device or entry is gone."""
        mac = _mac(mac)

        def delete(ipr: Any) -> bool:
            found = ipr.link_lookup(ifname=dev)
            if not found:
                return False
            spec: dict[str, Any] = dict(ifindex=found[0], lladdr=mac,
                                        state=NUD_PERMANENT | NUD_NOARP, flags=NTF_SELF)
            if dst:
                spec["dst"] = _ipv4(dst, "VTEP address")
            try:
                ipr.fdb("del", **spec)
            except Exception as exc:
                if is_gone(exc):
                    return False
                raise
            return True
        return self._do(f"delete FDB entry {mac} on {dev}", delete)

    # -- neighbours: IP -> MAC -------------------------------------------------------------

    def neigh_replace(self, dev: str, ip: str, mac: str) -> None:
        """Permanent neighbour entry on `dev` (what the VXLAN proxy answers ARP with).
        Idempotent."""
        parsed, mac = ipaddress.ip_address(ip), _mac(mac)
        addr, family = str(parsed), _family(parsed)
        self._do(f"add neighbour {addr} -> {mac} on {dev}", lambda ipr: ipr.neigh(
            "replace", ifindex=self._index(ipr, dev), dst=addr, lladdr=mac, state=NUD_PERMANENT, family=family))

    def neigh_delete(self, dev: str, ip: str) -> bool:
        """Idempotent: False when the device or entry is gone."""
        parsed = ipaddress.ip_address(ip)
        addr, family = str(parsed), _family(parsed)

        def delete(ipr: Any) -> bool:
            found = ipr.link_lookup(ifname=dev)
            if not found:
                return False
            try:
                ipr.neigh("del", ifindex=found[0], dst=addr, family=family)
            except Exception as exc:
                if is_gone(exc):
                    return False
                raise
            return True
        return self._do(f"delete neighbour {addr} on {dev}", delete)
