"""A daemon's node lease: the etcd lease its node-owned keys hang on.

Semantics:
  * The constructor tries once to grant a lease of `ttl` seconds. If etcd answers,
    `.id` is set and the owner publishes its keys with it (store.put(..., lease=id)).
    If etcd is down, `.id` is None and the background thread keeps trying.
  * A daemon thread renews the lease every ttl/3 seconds (while etcd does not answer:
    after 0.5 s, then backing off with jitter up to ttl/3). A node that stops renewing — crashed, killed, cut off — loses the
    lease after `ttl`, and etcd deletes its keys: other hosts see the deletes.
  * An etcd outage alone does not end the lease: a newly elected etcd leader renews
    every lease for a full TTL, so the first renewal after the outage usually
    succeeds and `.id` stays the same.
  * When a renewal says the lease is gone (it expired while this node was cut off,
    or the cluster lost its data), a new lease is granted at once and
    `on_new_lease(new_id)` is called from the lease thread: the owner must publish
    its node-owned keys again under the new id. It is also called when the first
    grant happens in the background (etcd was down at construction).
  * `close()` stops renewing and revokes the lease, so the node's keys vanish now
    rather than after `ttl`. Idempotent.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Protocol

from cnm.errors import CNMError, Unavailable

log = logging.getLogger(__name__)

OUTAGE_RETRY = 0.5  # seconds between renewal attempts while etcd does not answer


class LeaseStore(Protocol):
    """The part of EtcdStore a NodeLease needs."""

    def lease_grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds; its id."""

    def lease_keepalive(self, lease: int) -> int:
        """Renew; the remaining TTL, 0 when the lease is gone."""

    def lease_revoke(self, lease: int) -> bool:
        """Revoke now; False if already gone."""


class NodeLease:
    def __init__(self, store: LeaseStore, ttl: int = 10, on_new_lease: Callable[[int], None] | None = None) -> None:
        if ttl < 2:
            raise ValueError("lease ttl must be at least 2 seconds")
        self.store = store
        self.ttl = int(ttl)
        self.on_new_lease = on_new_lease
        self._id: int | None = None
        self._last_ok = 0.0
        self._changed = threading.Condition()
        self._stopped = threading.Event()
        try:
            self._set(store.lease_grant(self.ttl))
        except Unavailable as exc:
            log.warning("node lease: %s; will keep trying", exc)
        self._thread = threading.Thread(target=self._run, name="etcd-node-lease", daemon=True)
        self._thread.start()

    @property
    def id(self) -> int | None:
        """The current lease id, or None while no lease could be granted."""
        return self._id

    @property
    def healthy(self) -> bool:
        """True if the lease was renewed within its TTL (keys are surely still there)."""
        return self._id is not None and time.monotonic() - self._last_ok < self.ttl

    def wait(self, timeout: float) -> int:
        """The lease id, waiting up to `timeout` seconds for a first grant."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._id is not None or self._stopped.is_set(), timeout):
                raise Unavailable(f"no etcd lease after {timeout:g}s: the cluster store does not answer")
            if self._id is None:
                raise Unavailable("node lease is closed")
            return self._id

    def _set(self, lease: int | None) -> None:
        with self._changed:
            self._id = lease
            if lease is not None:
                self._last_ok = time.monotonic()
            self._changed.notify_all()

    def _run(self) -> None:
        interval = self.ttl / 3
        delay = interval
        failures = 0
        while not self._stopped.wait(delay):
            try:
                self._tick()
                delay, failures = interval, 0
            except Exception as exc:
                if isinstance(exc, CNMError):
                    log.info("node lease %s: %s", self._hex(), exc)
                else:
                    log.exception("node lease %s: renewal failed", self._hex())
                # Sooner than the renewal interval, but backing off with jitter: a
                # thousand hosts whose etcd is slow must not retry it in step.
                failures += 1
                delay = min(OUTAGE_RETRY * 2 ** (failures - 1), interval) * random.uniform(0.5, 1.0)

    def _tick(self) -> None:
        if self._id is not None:
            if self.store.lease_keepalive(self._id) > 0:
                self._last_ok = time.monotonic()
                return
            log.warning("node lease %s expired; granting a new one", self._hex())
            self._set(None)
        new = self.store.lease_grant(self.ttl)
        if self._stopped.is_set():  # closed while granting: do not leak it
            self.store.lease_revoke(new)
            return
        self._set(new)
        log.info("node lease %x granted", new)
        if self.on_new_lease is not None:
            try:
                self.on_new_lease(new)
            except Exception:
                log.exception("node lease: on_new_lease(%x) failed", new)

    def _hex(self) -> str:
        return f"{self._id:x}" if self._id is not None else "(none)"

    def close(self, revoke: bool = True) -> None:
        """Stop renewing and (unless revoke=False) revoke the lease, best effort.
        Without revoking, the keys on it live until the lease expires. Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        with self._changed:
            self._changed.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(10)
        lease, self._id = self._id, None
        if lease is not None and revoke:
            try:
                self.store.lease_revoke(lease)
            except CNMError as exc:
                log.info("node lease %x not revoked (%s); it expires in %ds", lease, exc, self.ttl)
