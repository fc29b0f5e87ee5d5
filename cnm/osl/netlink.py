"""Netlink (rtnetlink) through pyroute2: one handle per network namespace.

`Netlink()` works in the namespace of the thread that creates it; `Netlink(path)`
in the namespace bind-mounted at `path` (an `ip netns` name is accepted too). The
pyroute2 socket is opened once, on a worker thread that lives inside that namespace
(`netns.NetnsThread`), and every call runs there: the caller's thread never changes
namespace, no process is forked, and one handle can be shared between threads.

Any thread may call it, a coroutine included (pyroute2's own event loop runs on the
handle's thread, never the caller's); each call blocks until the kernel answers, so
long batches from a coroutine belong in `asyncio.to_thread`.

A container's own requests (link lookups, veth pairs, links up/down/renamed/enslaved,
addresses, routes, deletes) skip pyroute2 and the hand-off: cnm.osl.rtnl packs them
and sends them on a raw socket of the same namespace from the calling thread. A handle
on a sandbox starts its pyroute2 thread only when a call needs one.

Values in and out are plain: interface names, "a.b.c.d/len" strings, ints. Kernel
errors come out as cnm.errors (see osl.errors); deletes are idempotent.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from cnm import marks
from cnm.errors import CNMError, NotFound
from cnm.osl import procsys, rtnl, sysctl
from cnm.osl.errors import is_gone, translate
from cnm.osl.netns import NetnsThread, netns_path, run_in_netns
from cnm.osl.nlroutes import NetlinkRoutes, _attr
from cnm.osl.nlvalues import IFNAMSIZ, Link, Route, _check_ifname, _interface  # noqa: F401 - re-exported
from cnm.osl.rtnl import Rtnl

T = TypeVar("T")
log = logging.getLogger(__name__)

IFF_UP = 0x1
MAIN_TABLE = 254


class Netlink(NetlinkRoutes):
    """A netlink handle bound to one network namespace. Close it (or use `with`)."""

    def __init__(self, netns: str | None = None, *, rt: Rtnl | None = None) -> None:
        """`rt`: a raw socket already open in that namespace (made along with it, by
        cnm.osl.netns.create_netns); the handle owns it from now on."""
        self.netns = netns_path(netns) if netns is not None else None
        self._worker: NetnsThread | None = None
        self._ipr: Any = None
        self._start_lock = threading.Lock()
        if self.netns is None:
            # "The namespace of the constructing thread" can only be known now.
            worker = self._start_worker()
            self._rt = rt or worker.call(Rtnl.open)
        elif rt is not None:
            self._rt = rt
        else:
            try:
                # made on a throwaway thread that enters the namespace
                self._rt = run_in_netns(self.netns, Rtnl.open)
            except OSError as exc:
                raise translate(exc, f"open a netlink socket in {self.netns}") from exc

    def _start_worker(self) -> NetnsThread:
        with self._start_lock:
            if self._worker is None:
                worker = NetnsThread(self.netns, name=f"cnm-nl:{self.netns or 'self'}")
                try:
                    self._ipr = worker.call(self._open)
                except BaseException:
                    worker.close()
                    raise
                self._worker = worker
            return self._worker

    @staticmethod
    def _open() -> Any:
        from pyroute2 import IPRoute  # heavy import: only where the kernel is touched

        try:
            return IPRoute()
        except OSError as exc:
            raise translate(exc, "open a netlink socket") from exc

    # -- plumbing ---------------------------------------------------------------

    def _do(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(ipr, *args) on the namespace thread, translating kernel errors."""
        worker = self._start_worker()

        def run() -> T:
            try:
                return fn(self._ipr, *args)
            except Exception as exc:
                raise translate(exc, what) from exc

        return worker.call(run)

    def _raw(self, what: str, msg: rtnl.Message) -> None:
        """One raw request from the calling thread, kernel errors translated."""
        try:
            self._rt.do(msg)
        except OSError as exc:
            raise translate(exc, what) from exc

    def _lookup(self, name: str) -> rtnl.LinkInfo | None:
        try:
            return self._rt.link(name)
        except OSError as exc:
            raise translate(exc, f"look up {name}") from exc

    def _raw_index(self, what: str, name: str) -> int:
        found = self._lookup(name)
        if found is None:
            raise NotFound(f"cannot {what}: no network interface named {name}")
        return found.index

    def sibling(self) -> Netlink:
        """Another handle on the same namespace with sockets of its own, for a thread
        that must not queue behind this handle's requests (or they behind its)."""
        if self.netns is None:
            return self.run(Netlink)  # made on our worker: a new thread starts in its namespace
        return Netlink(self.netns)

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a plain function inside this handle's namespace (e.g. sysctl.write)."""
        return self._start_worker().call(fn, *args, **kwargs)

    def close(self) -> None:
        """Close the sockets and stop the worker. Idempotent."""
        self._rt.close()
        with self._start_lock:
            worker, self._worker = self._worker, None
            ipr, self._ipr = self._ipr, None
        if worker is None:
            return
        if ipr is not None:
            try:
                worker.call(ipr.close)
            except Exception:
                pass
        worker.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _index(self, ipr: Any, name: str) -> int:
        # By name in the kernel: pyroute2's link_lookup dumps every link of the host.
        found = self._lookup(name)
        if found is None:
            raise NotFound(f"no network interface named {name}")
        return found.index

    # -- links --------------------------------------------------------------------

    def link_exists(self, name: str) -> bool:
        return self._lookup(name) is not None

    def link_index(self, name: str) -> int:
        return self._raw_index(f"look up {name}", name)

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
        found = self._lookup(name)
        if found is None:
            raise NotFound(f"no network interface named {name}")
        return Link(
            name=found.name,
            index=found.index,
            kind=found.kind,
            mtu=found.mtu,
            mac=found.mac,
            up=found.up,
            master=found.master,
            alias=found.alias,
        )

    def links(self) -> list[Link]:
        return self._do("list links", lambda ipr: [self._link_from(m) for m in ipr.get_links()])

    def create_bridge(
        self, name: str, mtu: int = 1500, *, mac: str | None = None, alias: str | None = None, up: bool = True
    ) -> None:
        """A Linux bridge with STP off and forward delay 0 (ports forward at once).
        `mac` set explicitly keeps the bridge's MAC from following its ports (the
        kernel otherwise adopts the lowest port MAC). Conflict if the name is taken."""
        _check_ifname(name)

        def create(ipr: Any) -> None:
            def add(made: str) -> None:
                spec: dict[str, Any] = dict(ifname=made, kind="bridge", mtu=mtu, br_stp_state=0, br_forward_delay=0)
                if mac:
                    spec["address"] = mac
                ipr.link("add", **spec)

            idx = self._create_marked(ipr, name, alias, add)
            if up:
                ipr.link("set", index=idx, state="up")

        self._do(f"create bridge {name}", create)

    def _ipv6_off(self, ifname: str) -> None:
        """IPv6 off on a link not yet up (a bridge port: it needs none). Besides its
        address (addrgenmode none does that), a port with IPv6 holds an ff00::/8
        route, and every link event on the host walks the whole IPv6 table: with
        2,000 ports each start and removal paid for 2,000 routes. Best effort: the
        port works either way."""
        key = f"ipv6/conf/{ifname}/disable_ipv6"
        try:
            self.run(procsys.write_net, key, "1")  # on the handle's thread: in its namespace
        except (OSError, CNMError) as exc:  # a timeout or closed handle too: the port works
            log.debug("IPv6 stays on for %s: %s", ifname, exc)

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
        """A veth pair. Conflict if either name is taken. With `peer_netns` the peer is
        born inside that namespace: ~10x faster than creating it here and moving it (a
        move waits for the kernel to unregister the device). `master`: the bridge the
        host end joins; `up`: the host end up; both in the creating request.
        `ipv6_addresses=False` (with `alias`): the host end gets no IPv6 address
        (addrgenmode none; the kernel takes it only for an existing link)."""
        _check_ifname(name)
        _check_ifname(peer_name)
        what = f"create veth pair {name}/{peer_name}"
        bridge = self._raw_index(what, master) if master else None
        # With a mark: made under its provisional name, then named, marked, enslaved and
        # set up in one request (cnm.marks.provisional_name: never unmarked and unnamed).
        made = marks.provisional_name(alias) if alias else name
        if alias:
            self._drop_leftover(made)
        fd = None
        try:
            if peer_netns:
                try:
                    fd = os.open(netns_path(peer_netns), os.O_RDONLY | os.O_CLOEXEC)
                except OSError as exc:
                    raise translate(exc, what) from exc
            self._raw(
                what,
                rtnl.create_veth(
                    made,
                    peer_name,
                    mtu=mtu,
                    peer_mac=peer_mac,
                    peer_netns_fd=fd,
                    master=None if alias else bridge,
                    up=False if alias else up,
                ),
            )
        finally:
            if fd is not None:
                os.close(fd)
        if alias:
            index = self._raw_index(what, made)
            if not ipv6_addresses:
                self._ipv6_off(made)
            try:
                self._raw(
                    what,
                    rtnl.set_link(
                        index, new_name=name, alias=alias, master=bridge, up=up or None, ipv6_addresses=ipv6_addresses
                    ),
                )
            except BaseException:
                # By index: the kernel applies a request's attributes in turn, so a
                # refused master (EXFULL) leaves the link already renamed. The peer goes too.
                self._delete_index(index, what)
                raise

    def _create_marked(self, ipr: Any, name: str, alias: str | None, add: Callable[[str], object]) -> int:
        """Create a link by `add(made_name)` on the worker; with a mark, under its
        provisional name (cnm.marks.provisional_name), then named and marked in one
        request: at no instant is a link of ours without both its mark and a name
        saying whose it is. Returns its index."""
        if not alias:
            add(name)
            return self._index(ipr, name)
        made = marks.provisional_name(alias)
        self._drop_leftover(made)
        add(made)
        idx = self._index(ipr, made)
        try:
            ipr.link("set", index=idx, ifname=name, ifalias=alias)
        except BaseException:
            try:
                ipr.link("del", index=idx)
            except Exception:  # the original error is the one to report
                pass
            raise
        return idx

    def _drop_leftover(self, provisional: str) -> None:
        """A link under a provisional name is what a crash left of an interrupted
        creation of the very link about to be made: it goes first."""
        found = self._lookup(provisional)
        if found is not None and not found.alias:
            self.delete_link(provisional)

    def delete_link(self, name: str) -> bool:
        """Delete a link. Idempotent: returns False when it was already gone."""
        found = self._lookup(name)
        if found is None:
            return False
        return self._delete_index(found.index, f"delete link {name}")

    def _delete_index(self, index: int, what: str) -> bool:
        try:
            self._rt.do(rtnl.delete_link(index))
        except OSError as exc:
            if is_gone(exc):  # raced with someone else's delete
                return False
            raise translate(exc, what) from exc
        return True

    def set_link_up(self, name: str) -> None:
        self._raw(f"set link up on {name}", rtnl.set_link(name=name, up=True))

    def rename_link(self, name: str, new_name: str) -> None:
        """Rename (older kernels want the link down)."""
        _check_ifname(new_name)
        what = f"rename {name} to {new_name}"
        self._raw(what, rtnl.set_link(self._raw_index(what, name), new_name=new_name))

    def set_master(self, name: str, bridge: str | None) -> None:
        """Enslave `name` to `bridge` (None = release it)."""
        what = f"attach {name} to {bridge}" if bridge else f"detach {name}"
        master = self._raw_index(what, bridge) if bridge else 0
        self._raw(what, rtnl.set_link(name=name, master=master))

    def park_link(self, name: str, new_name: str) -> bool:
        """Take a link out of use at once - down, then renamed out of the way of a new
        one with its name - for it to be deleted later. False if it is gone."""
        _check_ifname(new_name)
        found = self._lookup(name)
        if found is None:
            return False
        what = f"put {name} out of use"
        self._raw(what, rtnl.set_link(found.index, up=False))
        self._raw(what, rtnl.set_link(found.index, new_name=new_name))
        return True

    def retire_link(self, name: str, *, alias: str, group: int) -> bool:
        """If the link carries our mark `alias`: set it down and into `group`, to be
        deleted with the rest of that group by delete_link_group. False when it is
        gone or not ours."""
        found = self._lookup(name)
        if found is None or found.alias != alias:
            return False
        self._raw(f"retire {name}", rtnl.set_link(found.index, up=False, group=group))
        return True

    def delete_link_group(self, group: int) -> None:
        """Delete every link of `group` (a veth takes its peer along, wherever it is):
        one wait for the kernel's grace period for all of them. Idempotent."""
        try:
            self._rt.do(rtnl.delete_link(group=group))
        except OSError as exc:
            if not is_gone(exc):  # ENODEV: the group is empty
                raise translate(exc, f"delete link group {group}") from exc

    def bridge_ports(self, bridge: str) -> list[str]:
        """Names of the links enslaved to `bridge`."""

        def ports(ipr: Any) -> list[str]:
            idx = self._index(ipr, bridge)
            # Filtered by the kernel: a full dump grows with every container on the host.
            return [_attr(m, "IFLA_IFNAME") for m in ipr.link("dump", master=idx) if _attr(m, "IFLA_MASTER") == idx]

        return self._do(f"list ports of {bridge}", ports)

    def bridge_port_count(self, bridge: str) -> int:
        what = f"count the ports of {bridge}"
        master = self._raw_index(what, bridge)
        try:
            return self._rt.count_links(master)
        except OSError as exc:
            raise translate(exc, what) from exc

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

    # -- routes ---------------------------------------------------------------------

    # -- sysctls in this namespace --------------------------------------------------------

    def sysctl_read(self, key: str) -> str:
        return self.run(sysctl.read, key)

    def sysctl_write(self, key: str, value: str | int) -> None:
        self.run(sysctl.write, key, value)
