"""The sandbox's OS side: its network namespace and the interfaces moved into it.

Drivers answer `join` with a JoinResult; `SandboxOS.plug` applies it (move the
interface in, name it, address it, route it). Only OS-layer calls: which interface
gets which name or the default route is decided by cnm.sandbox.rules.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Protocol

from cnm.addresses import IPAddress, IPInterface, text
from cnm.driverapi import JoinResult
from cnm.errors import CNMError
from cnm.osl.namespaces import Namespaces
from cnm.osl.netlink import Route
from cnm.osl.sysctl import conf_key

log = logging.getLogger(__name__)

RT_SCOPE_LINK = 253
DEFAULT_DESTINATIONS = ("0.0.0.0/0", "::/0")


class NamespaceOps(Protocol):
    """Bind-mounted network namespaces (cnm.osl.namespaces.Namespaces; a fake in unit tests)."""

    def create(self, path: str) -> None:
        """A new namespace at `path`, its `lo` up."""

    def delete(self, path: str) -> None: ...
    def exists(self, path: str) -> bool: ...
    def bind(self, source: str, path: str) -> None: ...

    def handle(self, path: str) -> SandboxNetlink:
        """A netlink handle inside the namespace at `path`; the caller closes it."""


class SandboxNetlink(Protocol):
    """What the sandbox's OS side uses of a netlink handle (cnm.osl.netlink.Netlink)."""

    def link_names(self) -> list[str]: ...
    def set_link_up(self, name: str) -> None: ...
    def rename_link(self, name: str, new_name: str) -> None: ...
    def move_link_to_netns(self, name: str, netns: str, new_name: str | None = None) -> None: ...
    def delete_link(self, name: str) -> bool: ...
    def park_link(self, name: str, new_name: str) -> bool: ...
    def add_address(self, name: str, cidr: str, *, exist_ok: bool = False) -> None: ...
    def add_route(
        self,
        destination: str,
        gateway: str | None = None,
        dev: str | None = None,
        *,
        scope: int | None = None,
        table: int = 254,
        exist_ok: bool = False,
    ) -> None: ...
    def del_route(
        self, destination: str, gateway: str | None = None, dev: str | None = None, *, table: int = 254
    ) -> bool: ...
    def routes(self, family: int | None = None, table: int = 254) -> list[Route]: ...
    def sysctl_write(self, key: str, value: str | int) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> SandboxNetlink: ...
    def __exit__(self, *exc: object) -> None: ...


class SandboxOS:
    """Creates, plugs and destroys sandbox namespaces under `netns_dir`. `host` is the
    daemon's own namespace (where drivers leave interfaces to be moved in). A netlink
    handle inside each sandbox is opened once and kept until the sandbox is destroyed
    (as libnetwork keeps one per namespace): opening one costs more than the requests
    a join makes. Callers serialise calls (the controller's lock)."""

    def __init__(
        self,
        host: SandboxNetlink,
        netns_dir: str,
        netlink_for: Callable[[str], SandboxNetlink] | None = None,
        namespaces: NamespaceOps | None = None,
    ) -> None:
        self.host = host
        self.netns_dir = netns_dir
        # A container's interface has IPv6 only when it has an IPv6 address (Docker
        # since 26.0.2, CVE-2024-32473: no link-local, no SLAAC from a stray router
        # advertisement on an IPv4-only network). It also keeps the link-local
        # chatter of each new container (DAD, router solicitations, MLD: ~14 frames)
        # from being flooded to every port of its bridge: 2,800 frames delivered into
        # other containers per new one at 200 ports.
        self._ns: NamespaceOps = namespaces or Namespaces(ipv6_off_by_default=True)
        self._netlink_for = netlink_for or self._ns.handle
        self._handles: dict[str, SandboxNetlink] = {}

    def key_for(self, sandbox_id: str) -> str:
        return os.path.join(self.netns_dir, sandbox_id[:12])

    def _nl(self, key: str) -> SandboxNetlink:
        nl = self._handles.get(key)
        if nl is None:
            nl = self._handles[key] = self._netlink_for(key)
        return nl

    def _drop_handle(self, key: str) -> None:
        nl = self._handles.pop(key, None)
        if nl is not None:
            nl.close()  # a socket inside holds the namespace alive

    def create(self, sandbox_id: str) -> str:
        """A new namespace with `lo` up; returns its path (the SandboxKey)."""
        key = self.key_for(sandbox_id)
        self._ns.create(key)
        try:
            self._nl(key)
        except BaseException:
            self._drop_handle(key)
            self._ns.delete(key)
            raise
        return key

    def adopt(self, sandbox_id: str, pid: int) -> str:
        """After a daemon restart the old bind mount may live only in the dead daemon's
        mount namespace: bind the running container's namespace at the key again."""
        key = self.key_for(sandbox_id)
        if self._ns.exists(key):
            return key
        self._ns.bind(f"/proc/{pid}/ns/net", key)
        return key

    def destroy(self, key: str) -> None:
        """Idempotent. Interfaces still inside die with the namespace (veth peers too):
        the kernel deletes them on its own time, once nothing holds the namespace."""
        self._drop_handle(key)
        self._ns.delete(key)

    def plug(
        self,
        key: str,
        join: JoinResult,
        ifname: str,
        address: IPInterface | None,
        address_v6: IPInterface | None,
        default_gateway: bool,
    ) -> None:
        """Move the driver's interface into the sandbox as `ifname`, address it, bring it
        up, add the driver's static routes and (if asked) the default routes."""
        if not join.src_ifname:
            return
        if not join.in_sandbox:
            self.host.move_link_to_netns(join.src_ifname, key, new_name=ifname)
        try:
            nl = self._nl(key)
            if join.in_sandbox and join.src_ifname != ifname:
                nl.rename_link(join.src_ifname, ifname)
            if address_v6:
                nl.sysctl_write(conf_key(6, ifname, "disable_ipv6"), 0)  # off by default here
            for addr in (address, address_v6):
                if addr:
                    nl.add_address(ifname, str(addr))  # IPv6 without DAD: the address is ours by IPAM
            nl.set_link_up(ifname)
            for route in join.static_routes:
                if route.route_type == 1:
                    nl.add_route(route.destination, dev=ifname, scope=RT_SCOPE_LINK)
                else:
                    nl.add_route(route.destination, route.next_hop, dev=ifname)
            if default_gateway:
                self._set_default(nl, ifname, join.gateway, join.gateway_v6)
        except BaseException:
            self.unplug(key, ifname)
            raise

    @staticmethod
    def _set_default(nl: SandboxNetlink, ifname: str, gw4: str | None, gw6: str | None) -> None:
        if gw4:
            nl.add_route("0.0.0.0/0", gw4, dev=ifname, exist_ok=True)
        if gw6:
            nl.add_route("::/0", gw6, dev=ifname, exist_ok=True)

    def interfaces(self, key: str) -> set[str]:
        """Names of the links inside the sandbox (empty when its namespace is gone)."""
        if not self._ns.exists(key):
            return set()
        with self._netlink_for(key) as nl:
            return set(nl.link_names())

    def default_routes(self, key: str) -> list[str]:
        """The sandbox's default routes' devices (empty: no way out)."""
        return [r.dev or "" for r in self._nl(key).routes() if r.destination in DEFAULT_DESTINATIONS]

    def set_default_route(self, key: str, ifname: str, gw4: IPAddress | None, gw6: IPAddress | None) -> None:
        """Replace the sandbox's default routes with ones via `ifname`."""
        nl = self._nl(key)
        for dst in DEFAULT_DESTINATIONS:
            nl.del_route(dst)
        self._set_default(nl, ifname, text(gw4), text(gw6))

    def unplug(self, key: str, ifname: str) -> None:
        """Remove the interface from the sandbox (deleting one veth end deletes both).
        Idempotent; a vanished sandbox is success."""
        if not self._ns.exists(key):
            self._drop_handle(key)
            return
        try:
            self._nl(key).delete_link(ifname)
        except CNMError as exc:
            log.warning("unplug %s from %s: %s", ifname, key, exc)

    def park(self, key: str, ifname: str, new_name: str) -> None:
        """Take the interface out of use at once (down) and out of the way (renamed
        `new_name`), for its driver to delete later: its name is free for the next
        interface. Best effort; a vanished sandbox or interface is success."""
        if not self._ns.exists(key):
            self._drop_handle(key)
            return
        try:
            self._nl(key).park_link(ifname, new_name)
        except CNMError as exc:
            log.warning("taking %s in %s out of use: %s", ifname, key, exc)
