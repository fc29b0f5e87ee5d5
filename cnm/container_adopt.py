"""Containers after a daemon restart: the running ones adopted again (watched, their sandboxes restored), removals a crash interrupted finished, restarts by policy resumed.

A mixin of cnm.containers.ContainerService (kept apart: the service is long enough), on
its records, runtime, sandboxes and lock.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from cnm import container_images
from cnm.container_deps import ContainerRuntime, NetworkLookup
from cnm.container_images import ImageMounts
from cnm.container_index import ContainerIndex
from cnm.container_record import (
    Container,
)
from cnm.errors import CNMError, NotFound
from cnm.intents import CONTAINER_REMOVE, Intents
from cnm.restarts import Restarts
from cnm.runtime.state import ContainerState
from cnm.sandbox.sandbox import Sandbox, Sandboxes
from cnm.store import Store

log = logging.getLogger("cnm.containers")


class ContainerAdoption:
    ctl: NetworkLookup
    sandboxes: Sandboxes
    runtime: ContainerRuntime
    store: Store
    lock: threading.RLock
    images: ImageMounts | None
    restarts: Restarts
    _containers: dict[str, Container]
    _index: ContainerIndex
    _intents: Intents

    if TYPE_CHECKING:  # the service's own (and ContainerNetworking's)

        def sandbox(self, ct: Container) -> Sandbox | None: ...
        def _watch(self, ct: Container) -> None: ...
        def _save(self, ct: Container) -> None: ...
        def _remove(self, ct: Container) -> None: ...
        def _settle(self, ct: Container, sb: Sandbox) -> None: ...
        def _release_network(self, ct: Container) -> None: ...

    def _adopt_one(self, ct: Container) -> None:
        if not ct.started and ct.released:
            return  # created, never run: nothing to adopt
        try:
            st: ContainerState | None = self.runtime.state(ct.id)
        except NotFound:
            st = None
        if st is None or st.status != "running" or st.pid is None:
            # Ended, or its first start was cut short by a crash (its network was
            # taken, its process never ran: it stays "created").
            if not ct.started and st is not None and st.status == "exited":
                ct.started = True  # it ran and ended: a crash cut the record's update
                self._save(ct)
            self._release_network(ct)
            if ct.auto_remove and ct.started:
                self._remove(ct)
            elif ct.started and self.restarts.after_exit(ct, st, fresh=True):  # Docker's restart at daemon start
                self._save(ct)
            return
        if not ct.started:  # a crash between the process's start and the record's
            ct.started = True
            self._save(ct)
        sb = self.sandbox(ct)
        if sb is not None:
            sb.restore(st.pid, wanted={a.network for a in ct.attachments()})
            ct.sandbox_key = sb.key
            self._settle(ct, sb)
        self._watch(ct)

    def _finish_removals(self) -> None:
        """Removals a crash interrupted (their intent is left): finished, as asked."""
        for intent in self._intents.pending(CONTAINER_REMOVE):
            ct = self._containers.get(intent.id)
            if ct is None:
                self._intents.done(CONTAINER_REMOVE, intent.id)
                continue
            log.warning("finishing the removal of container %s that a crash interrupted", ct.name)
            try:
                self._remove(ct)
            except CNMError as exc:
                log.error("container %s: finishing its removal failed (retried at the next start): %s", ct.name, exc)

    def adopt(self) -> None:
        """After a daemon restart: running containers keep their sandboxes, endpoints
        and ports (re-learned); ended ones are cleaned up; orphans are released."""
        with self.lock:
            for st in self.runtime.adopt():
                self._index.set_state(st.id, st)
            # Before the block below: each removal commits its intent before its runtime
            # directory goes (inside one open transaction it could not).
            self._finish_removals()
        with self.lock, self.store.transaction():
            for ct in list(self._containers.values()):
                try:
                    self._adopt_one(ct)
                except CNMError as exc:  # one broken container must not keep the daemon down
                    log.error("re-adopting container %s: %s", ct.name, exc)
            container_images.reconcile(self.images, set(self._containers))
            used = {ct.sandbox_id for ct in self._containers.values() if ct.sandbox_id}
            for sb in self.sandboxes.all():
                if sb.id not in used:
                    log.info("releasing orphaned sandbox %s", sb.id[:12])
                    sb.release()
            owned = {eid for sb in self.sandboxes.all() for eid in sb.record.endpoint_ids}
            for ep in self.ctl.all_endpoints():
                if ep.id not in owned:
                    log.info("releasing orphaned endpoint %s on network %s", ep.name, ep.network_id[:12])
                    self.ctl.leave(ep)
                    self.ctl.delete_endpoint(ep)
