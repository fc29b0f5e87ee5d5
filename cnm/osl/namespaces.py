"""Bind-mounted network namespaces as one object, with netlink handles inside them: the
seam the sandbox's OS side takes (cnm.sandbox.osl; cnm.osl.fake.FakeNamespaces in unit
tests). Above both cnm.osl.netns (namespaces) and cnm.osl.netlink (handles)."""

from __future__ import annotations

import threading

from cnm.osl.netlink import Netlink
from cnm.osl.netns import bind_existing, create_netns, delete_netns, is_netns
from cnm.osl.rtnl import Rtnl


class Namespaces:
    """Bind-mounted network namespaces as an object: the seam the sandbox's OS side
    takes (cnm.osl.fake.FakeNamespaces stands in for it in unit tests). `create`
    brings `lo` up; `handle(path)` is a netlink handle inside (the first one after
    `create` reuses the socket made with the namespace)."""

    def __init__(self, *, ipv6_off_by_default: bool = False) -> None:
        self._fresh: dict[str, Rtnl] = {}
        self._lock = threading.Lock()
        self._ipv6_off = ipv6_off_by_default  # see cnm.osl.netns.create_netns

    def create(self, path: str) -> None:
        sock = create_netns(path, lo_up=True, ipv6_off_by_default=self._ipv6_off)
        if sock is not None:
            with self._lock:
                old = self._fresh.pop(path, None)
                self._fresh[path] = sock
            if old is not None:
                old.close()

    def handle(self, path: str) -> Netlink:
        """A cnm.osl.netlink.Netlink inside the namespace at `path`; the caller closes it."""
        with self._lock:
            sock = self._fresh.pop(path, None)
        return Netlink(path, rt=sock)

    def delete(self, path: str) -> None:
        with self._lock:
            sock = self._fresh.pop(path, None)
        if sock is not None:
            sock.close()  # it holds the namespace alive
        delete_netns(path)

    def exists(self, path: str) -> bool:
        return is_netns(path)

    def bind(self, source: str, path: str) -> None:
        bind_existing(source, path)
