"""Endpoints deleted whose kernel objects are still being deleted: cnm's deferred teardown.

A driver that can delete an endpoint's kernel objects off the request path
(cnm.driverapi.DeferredTeardown — the bridge driver: the kernel takes ~20 ms to delete a
veth) is handed the endpoint by `retire`: it is gone for every user at once, and its
record moves to retiring/ in the store until the driver reports its kernel objects
gone. What they held is given back only then: the IPAM addresses, and with them the
MAC the bridge derives from the IPv4 address (the driver keeps the bridge port counted
and the sandbox renamed its interface out of the way, so no name is taken either).

The driver is called after the request's store transaction has committed, so a crash
can leave the record without the kernel change (the next start deletes the objects by
name: `finish`), never the kernel change without the record.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Protocol

from cnm.addresses import IPAddress, host_of
from cnm.errors import CNMError
from cnm.model import Endpoint, Network
from cnm.store import Delete, Put, Store

log = logging.getLogger(__name__)

RETIRING_PREFIX = "retiring/"
EP_PREFIX = "endpoint/"


class DeferredTeardown(Protocol):
    """A driver that deletes endpoints' kernel objects in the background."""

    def delete_endpoint_later(self, network_id: str, endpoint_id: str, done: Callable[[], None]) -> None:
        """Take the endpoint's kernel objects out of use now; delete them in the
        background and call `done()` (from any thread) once they are gone."""

    def delete_endpoint(self, network_id: str, endpoint_id: str) -> None:
        """Delete them now (start-up, for what a crash left). Idempotent."""

    def collect_retired(self) -> None:
        """At start-up: delete at once whatever an earlier life took out of use."""


def defers_teardown(driver: object) -> bool:
    caps = getattr(driver, "capabilities", None)
    return bool(callable(caps) and getattr(caps(), "deferred_teardown", False))


class Retirements:
    """The retiring endpoints of one controller. Callers hold `lock` (the controller's)."""

    def __init__(self, store: Store, lock: threading.RLock, release: Callable[[Endpoint], object]) -> None:
        """`release(ep)`: give back the endpoint's IPAM addresses (best effort; what it returns is not used)."""
        self._store = store
        self._lock = lock
        self._release = release
        self._retiring: dict[str, Endpoint] = {}
        for kv in store.list(RETIRING_PREFIX):
            ep = Endpoint.from_record(kv.value)
            self._retiring[ep.id] = ep

    def __len__(self) -> int:
        return len(self._retiring)

    def ids(self) -> list[str]:
        """The retiring endpoints' IDs (their kernel objects may still exist)."""
        return list(self._retiring)

    def addresses(self, network_id: str) -> set[IPAddress]:
        """Addresses still held on `network_id`."""
        return {a.ip for ep in self._retiring.values() if ep.network_id == network_id for a in ep.addresses()}

    def retire(self, ep: Endpoint, net: Network, driver: DeferredTeardown) -> None:
        """The endpoint's record becomes a retiring one (in the caller's transaction);
        the driver is asked to delete its kernel objects once that is committed."""
        self._store.atomic([Delete(EP_PREFIX + ep.id), Put(RETIRING_PREFIX + ep.id, ep.to_record())])
        self._retiring[ep.id] = ep
        self._store.after_commit(lambda: driver.delete_endpoint_later(net.id, ep.id, lambda: self._gone(ep.id)))

    def _gone(self, endpoint_id: str) -> None:
        """The driver's word that the kernel objects are gone (any thread)."""
        with self._lock, self._store.transaction():
            ep = self._retiring.pop(endpoint_id, None)
            if ep is not None:
                self._release(ep)
                self._store.delete(RETIRING_PREFIX + endpoint_id)

    def expedite(self, net: Network, driver: object, address: str | None = None) -> bool:
        """Delete now, on the caller's thread, the kernel objects of the retiring
        endpoints of `net` (those holding `address`, when given) and give back what they
        held, rather than wait for the driver's background. True if there was any."""
        want = host_of(address) if address else None
        chosen = [
            ep
            for ep in self._retiring.values()
            if ep.network_id == net.id and (want is None or want in {a.ip for a in ep.addresses()})
        ]
        for ep in chosen:
            try:
                driver.delete_endpoint(net.id, ep.id)  # type: ignore[attr-defined]
            except CNMError as exc:
                log.warning("endpoint %s stays retiring: %s", ep.id[:12], exc)
                continue
            self._gone(ep.id)
        return bool(chosen)

    def finish(
        self, networks: Mapping[str, Network], driver_of: Callable[[Network], object], drivers: list[object]
    ) -> int:
        """At start-up, once the networks are restored: delete now what an earlier life
        of the daemon retired and did not get to delete, and give back what it held.
        One that cannot be deleted keeps it. Returns how many were finished."""
        for driver in drivers:
            if defers_teardown(driver):
                try:
                    driver.collect_retired()  # type: ignore[attr-defined]
                except CNMError as exc:
                    log.warning("deleting retired endpoints: %s", exc)
        done = 0
        with self._store.transaction():
            for ep in list(self._retiring.values()):
                net = networks.get(ep.network_id)
                if net is not None:
                    try:
                        driver_of(net).delete_endpoint(net.id, ep.id)  # type: ignore[attr-defined]
                    except CNMError as exc:
                        log.error("endpoint %s on %s stays retiring: %s", ep.id[:12], net.name, exc)
                        continue
                    self._release(ep)
                del self._retiring[ep.id]
                self._store.delete(RETIRING_PREFIX + ep.id)
                done += 1
        return done
