"""Deleting veths off the request path, in batches.

Deleting a network device makes the kernel wait for a grace period (synchronize_net):
~20 ms a veth here, whatever the machine is doing. Nobody who disconnects or removes a
container needs to wait for it, so a retired veth only goes down and into a link group
of its own at once (a fraction of a millisecond: traffic stops, the bridge port is
disabled), and a thread deletes the whole group with one request — one wait for every
veth retired meanwhile — then tells each owner its veth is gone, so that what the
veth held (its addresses and MAC, its bridge port) is given back only then.

The group survives a crash of the daemon: the next start deletes it before anything
else (`collect`), so a veth that was retired is never found again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from cnm.errors import CNMError, NotFound

log = logging.getLogger(__name__)

# The link group retired veths wait in: "cnm" and 1. Group 0 is every link's default;
# a group number is a plain u32, so choose one nobody else is likely to use.
GRAVEYARD_GROUP = 0x636E6D01


class GraveyardNetlink(Protocol):
    """What the graveyard asks of the OS layer (cnm.osl.netlink.Netlink)."""

    def retire_link(self, name: str, *, alias: str, group: int) -> bool: ...
    def delete_link_group(self, group: int) -> None: ...
    def link(self, name: str): ...  # -> object with .alias; NotFound when gone
    def delete_link(self, name: str) -> bool: ...


Done = Callable[[], None]


class Graveyard:
    """Retired links, deleted by a background thread in batches. Thread-safe."""

    def __init__(
        self,
        netlink: Callable[[], GraveyardNetlink],
        group: int = GRAVEYARD_GROUP,
        *,
        background: bool = True,
        delay: float = 0.0,
    ) -> None:
        """`netlink` gives the handle the deleting thread uses: one of its own, so that
        requests on the daemon's handle do not queue behind a 20 ms delete.
        `background=False`: no thread; nothing is deleted until `flush()`, on the
        caller's thread (unit tests over fakes: deterministic and single-threaded).
        `delay`: seconds a retired link waits before the thread deletes it (and its
        batch with it); the daemon reads it from CNM_GRAVEYARD_DELAY, for tests of
        what a crash with deletions pending leaves."""
        self.background = background
        self.delay = delay
        self._netlink = netlink
        self._nl: GraveyardNetlink | None = None
        self.group = group
        self._cond = threading.Condition()
        self._queue: list[tuple[str, str, Done]] = []
        self._busy = False
        self._thread: threading.Thread | None = None
        self._closed = False

    def retire(self, nl: GraveyardNetlink, name: str, alias: str) -> bool:
        """Take the link `name` out of use now (down, into the group) if it carries
        our mark `alias`. Called by the driver with its own handle, on the request path."""
        try:
            return nl.retire_link(name, alias=alias, group=self.group)
        except CNMError as exc:
            log.warning("retiring %s: %s (it is deleted by name later)", name, exc)
            return False

    def bury(self, name: str, alias: str, done: Done) -> None:
        """Delete the link `name` (if it is ours) in the background, then call `done()`
        from the graveyard's thread. `done` is called even if the link is gone already."""
        with self._cond:
            if self._closed:
                raise CNMError("the bridge driver's graveyard is closed")
            self._queue.append((name, alias, done))
            if self._thread is None and self.background:
                self._thread = threading.Thread(target=self._run, name="cnm-graveyard", daemon=True)
                self._thread.start()
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + (1 if self._busy else 0)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything buried so far is deleted (tests, shutdown). True if so."""
        if not self.background:
            while True:
                with self._cond:
                    batch, self._queue = self._queue, []
                if not batch:
                    return True
                self._delete(batch)
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop the thread. Idempotent."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def collect(self, nl: GraveyardNetlink) -> None:
        """Delete the group now, on the caller's thread: at start-up, for what a
        previous life of the daemon retired and did not get to delete."""
        try:
            nl.delete_link_group(self.group)
        except CNMError as exc:
            log.warning("deleting retired veths: %s", exc)

    def _handle(self) -> GraveyardNetlink:
        if self._nl is None:
            self._nl = self._netlink()
        return self._nl

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return
                deadline = time.monotonic() + self.delay
                while not self._closed and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                batch, self._queue = self._queue, []
                self._busy = True
            try:
                self._delete(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _delete(self, batch: list[tuple[str, str, Done]]) -> None:
        """Everything retired before this call is in the group: one delete for all of
        them. A link whose retirement failed is deleted by name, if it is ours. Only
        a link known gone has its `done` called: one that cannot be deleted keeps what
        it holds (the next start of the daemon tries again)."""
        nl = self._handle()
        try:
            nl.delete_link_group(self.group)
        except CNMError as exc:
            log.error("deleting retired veths as a group: %s (one by one instead)", exc)
        for name, alias, done in batch:
            try:
                try:
                    ours = nl.link(name).alias == alias
                except NotFound:
                    ours = False
                if ours:
                    nl.delete_link(name)
            except CNMError as exc:
                log.error("cannot delete retired veth %s: %s; what it holds stays held", name, exc)
                continue
            try:
                done()
            except Exception:  # an owner's bookkeeping must not stop the others'
                log.exception("after deleting %s", name)
