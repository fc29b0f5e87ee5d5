"""NodeLease against a fake lease store: renewal, outage, expiry -> new lease and
callback, revoke on close. Short TTLs; each test runs in about a second."""

from __future__ import annotations

import threading
import time

import pytest

from cnm.cluster.lease import NodeLease
from cnm.errors import Unavailable


class FakeLeases:
    """Leases that expire by the wall clock, and a switch to play 'etcd is down'."""

    def __init__(self) -> None:
        self.down = False
        self.next_id = 100
        self.expiry: dict[int, float] = {}
        self.ttls: dict[int, int] = {}
        self.keepalives = 0
        self.lock = threading.Lock()

    def _check(self) -> None:
        if self.down:
            raise Unavailable("cluster store etcd://fake unreachable: connection refused")

    def lease_grant(self, ttl: int) -> int:
        self._check()
        with self.lock:
            self.next_id += 1
            self.expiry[self.next_id] = time.monotonic() + ttl
            self.ttls[self.next_id] = ttl
            return self.next_id

    def lease_keepalive(self, lease: int) -> int:
        self._check()
        with self.lock:
            self.keepalives += 1
            if self.expiry.get(lease, 0) <= time.monotonic():
                self.expiry.pop(lease, None)
                return 0
            self.expiry[lease] = time.monotonic() + self.ttls[lease]
            return self.ttls[lease]

    def lease_revoke(self, lease: int) -> bool:
        self._check()
        with self.lock:
            return self.expiry.pop(lease, None) is not None

    def alive(self, lease: int | None) -> bool:
        return lease is not None and self.expiry.get(lease, 0) > time.monotonic()


def wait_for(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_keeps_lease_alive_beyond_its_ttl_and_revokes_on_close():
    store = FakeLeases()
    lease = NodeLease(store, ttl=2)
    first = lease.id
    assert first is not None
    time.sleep(2.5)
    assert lease.id == first and store.alive(first) and lease.healthy
    assert store.keepalives >= 2
    lease.close()
    assert not store.alive(first) and lease.id is None
    lease.close()  # idempotent


def test_regrants_after_expiry_during_an_outage_and_tells_the_owner():
    store = FakeLeases()
    new_ids: list[int] = []
    lease = NodeLease(store, ttl=2, on_new_lease=new_ids.append)
    old = lease.id
    store.down = True
    time.sleep(2.3)  # lease expires while etcd "is down"
    assert not lease.healthy
    store.down = False
    assert wait_for(lambda: new_ids), "no new lease after the outage"
    assert new_ids[0] != old and lease.id == new_ids[0] and store.alive(lease.id)
    lease.close()


def test_short_outage_keeps_the_same_lease():
    store = FakeLeases()
    calls: list[int] = []
    lease = NodeLease(store, ttl=3, on_new_lease=calls.append)
    first = lease.id
    store.down = True
    time.sleep(1.2)
    store.down = False
    assert wait_for(lambda: store.keepalives > 0 and lease.healthy)
    time.sleep(1.2)
    assert lease.id == first and calls == []
    lease.close()


def test_etcd_down_at_start_grants_in_background():
    store = FakeLeases()
    store.down = True
    got: list[int] = []
    lease = NodeLease(store, ttl=2, on_new_lease=got.append)
    assert lease.id is None
    with pytest.raises(Unavailable, match="no etcd lease"):
        lease.wait(0.3)
    store.down = False
    lid = lease.wait(3)
    assert got == [lid] and store.alive(lid)
    lease.close()
