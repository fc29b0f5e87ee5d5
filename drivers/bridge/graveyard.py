"""Deleting veths off the request path, in batches.

Deleting a network device makes the kernel wait for a grace period (synchronize_net):
~20 ms a veth here, whatever the machine is doing. Nobody who disconnects or removes a
container needs to wait for it, so a retired veth only goes down and into a link group
of its own at once (a fraction of a millisecond: traffic stops, the bridge port is
disabled), and a thread deletes the whole group with one request — one wait for every
veth retired meanwhile — then tells each owner its veth is gone, so that what the
veth held (its addresses and MAC, its bridge port) is given back only then.

The thread lets a batch settle before it deletes it: a group delete holds the kernel's
RTNL lock for as long as it takes (longer with more veths on the host), and every
retirement meanwhile — the next removal's request — waits for it. So a retirement in
a stream of them (one within `settle` seconds of the previous: an `rm` of many
containers) waits until they pause (between two `rm` commands, say) or `max_wait`
after the first, whichever comes first. A lone one is deleted at once.

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
        settle: float = 0.05,
        max_wait: float = 1.0,
    ) -> None:
        """`netlink` gives the handle the deleting thread uses: one of its own, so that
        requests on the daemon's handle do not queue behind a 20 ms delete.
        `background=False`: no thread; nothing is deleted until `flush()`, on the
        caller's thread (unit tests over fakes: deterministic and single-threaded).
        `delay`: seconds a retired link waits before the thread deletes it (and its
        batch with it); the daemon reads it from CNM_GRAVEYARD_DELAY, for tests of
        what a crash with deletions pending leaves. `settle`, `max_wait`: see above."""
        self.background = background
        self.delay = delay
        self.settle = settle
        self.max_wait = max_wait
        self._last = -1e9  # when the newest link was buried (monotonic)
        self._streaming = False  # the queue's first link came within `settle` of the one before
        self._waiting = 0  # callers of flush() waiting
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
            now = time.monotonic()
            if not self._queue:
                self._streaming = now - self._last < self.settle
            self._queue.append((name, alias, done))
            self._last = now
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
            self._waiting += 1  # someone waits: no settling
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)
            finally:
                self._waiting -= 1

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
                first = time.monotonic()
                while not self._closed and (left := self._deadline(first) - time.monotonic()) > 0:
                    self._cond.wait(left)  # a bury() wakes it: the deadline moves
                batch, self._queue = self._queue, []
                self._busy = True
            try:
                self._delete(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _deadline(self, first: float) -> float:
        """When the batch whose first link was buried at `first` is deleted."""
        if self._waiting or (not self._streaming and len(self._queue) == 1):
            return first + self.delay
        return max(first + self.delay, min(self._last + self.settle, first + self.max_wait))

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
