"""VXLAN devices, their forwarding database (FDB) and neighbour (ARP) entries.

The only module that makes these calls; it reuses `Netlink`'s namespace worker, raw
socket and error translation by subclassing it, so one `VxlanNetlink` handle serves
both the plain link/address calls and the VXLAN ones. Devices go through pyroute2;
FDB and neighbour entries (one of each per remote endpoint) are packed by
cnm.osl.rtnl and sent from the calling thread.

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

import errno
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cnm.errors import InvalidParameter, NotFound
from cnm.osl import rtnl
from cnm.osl.errors import is_gone, translate
from cnm.osl.netlink import Netlink, _check_ifname
from cnm.osl.rtnl import Rtnl

DEFAULT_PORT = 4789  # IANA VXLAN port
VNI_MIN, VNI_MAX = 1, (1 << 24) - 1


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


def _mac(value: str) -> str:
    parts = str(value).lower().split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        raise InvalidParameter(f"invalid MAC address {value!r}: want six hex pairs, e.g. 02:42:0a:00:00:02")
    return ":".join(parts)


class VxlanNetlink(Netlink):
    """A `Netlink` handle that also manages VXLAN devices, FDB and neighbour entries."""

    def __init__(self, netns: str | None = None, *, rt: Rtnl | None = None) -> None:
        super().__init__(netns, rt=rt)
        self._indexes: dict[str, int] = {}  # VXLAN device name -> ifindex

    def create_vxlan(
        self,
        name: str,
        vni: int,
        *,
        local: str,
        port: int = DEFAULT_PORT,
        mtu: int = 1450,
        learning: bool = False,
        proxy: bool = True,
        alias: str | None = None,
    ) -> None:
        """A VXLAN device, down, with no multicast group and no default destination
        (frames for MACs without an FDB entry are dropped). Conflict if the name is
        taken or another device already uses this VNI on this port and address."""
        _check_ifname(name)
        check_vni(vni)
        local = _ipv4(local, "VTEP address")
        if not 1 <= port <= 65535:
            raise InvalidParameter(f"invalid VXLAN UDP port {port}: want 1..65535")

        def create(ipr: Any) -> None:
            self._create_marked(
                ipr,
                name,
                alias,
                lambda made: ipr.link(
                    "add",
                    ifname=made,
                    kind="vxlan",
                    mtu=mtu,
                    vxlan_id=vni,
                    vxlan_local=local,
                    vxlan_port=port,
                    vxlan_udp_csum=0,
                    vxlan_learning=1 if learning else 0,
                    vxlan_proxy=1 if proxy else 0,
                ),
            )

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
                name=name,
                vni=data.get_attr("IFLA_VXLAN_ID"),
                port=data.get_attr("IFLA_VXLAN_PORT") or DEFAULT_PORT,
                local=data.get_attr("IFLA_VXLAN_LOCAL"),
                learning=bool(data.get_attr("IFLA_VXLAN_LEARNING")),
                proxy=bool(data.get_attr("IFLA_VXLAN_PROXY")),
            )

        return self._do(f"read VXLAN device {name}", get)

    # -- FDB and neighbour entries: raw requests from the calling thread ----------------
    # One remote endpoint = one FDB entry + one neighbour entry, on every host of its
    # network: ~20,000 in a 100-host lab with 2 overlays. Through pyroute2 each cost a
    # hand-off to the namespace thread and a name lookup (~1.3 ms CPU for the pair);
    # packed (cnm.osl.rtnl) they are one request each, the device's index cached.

    def _vxlan_index(self, dev: str) -> int | None:
        """The device's ifindex (cached: every entry of a network goes to one device)."""
        index = self._indexes.get(dev)
        if index is None:
            found = self._lookup(dev)
            if found is None:
                return None
            index = self._indexes[dev] = found.index
        return index

    def _entry(self, what: str, dev: str, build: Callable[[int], rtnl.Message], *, delete: bool) -> bool:
        """Send build(ifindex of dev). A stale cached index (the device was made again
        under its name) is looked up once more. Deletes: False when device or entry is
        gone; others: NotFound when the device is."""
        for attempt in (1, 2):
            index = self._vxlan_index(dev)
            if index is None:
                if delete:
                    return False
                raise NotFound(f"cannot {what}: no network interface named {dev}")
            try:
                self._rt.do(build(index))
                return True
            except OSError as exc:
                if exc.errno == errno.ENODEV and attempt == 1:
                    self._indexes.pop(dev, None)
                    continue
                if delete and is_gone(exc):
                    return False
                raise translate(exc, what) from exc
        return False

    def fdb_replace(self, dev: str, mac: str, dst: str) -> None:
        """Permanent `self` entry on the VXLAN device: frames for `mac` go to VTEP `dst`.
        Idempotent (replaces an entry for the same MAC)."""
        mac, dst = _mac(mac), _ipv4(dst, "VTEP address")
        self._entry(
            f"add FDB entry {mac} -> {dst} on {dev}", dev, lambda index: rtnl.fdb(index, mac, dst), delete=False
        )

    def fdb_delete(self, dev: str, mac: str, dst: str | None = None) -> bool:
        """Remove the device's entry for `mac` (only the one to `dst`, if given).
        Idempotent: False when the device or entry is gone."""
        mac = _mac(mac)
        vtep = _ipv4(dst, "VTEP address") if dst else None
        return self._entry(
            f"delete FDB entry {mac} on {dev}", dev, lambda index: rtnl.delete_fdb(index, mac, vtep), delete=True
        )

    # -- neighbours: IP -> MAC -------------------------------------------------------------

    def neigh_replace(self, dev: str, ip: str, mac: str) -> None:
        """Permanent neighbour entry on `dev` (what the VXLAN proxy answers ARP with).
        Idempotent."""
        addr, mac = str(ipaddress.ip_address(ip)), _mac(mac)
        self._entry(
            f"add neighbour {addr} -> {mac} on {dev}", dev, lambda index: rtnl.neighbour(index, addr, mac), delete=False
        )

    def neigh_delete(self, dev: str, ip: str) -> bool:
        """Idempotent: False when the device or entry is gone."""
        addr = str(ipaddress.ip_address(ip))
        return self._entry(
            f"delete neighbour {addr} on {dev}", dev, lambda index: rtnl.delete_neighbour(index, addr), delete=True
        )
