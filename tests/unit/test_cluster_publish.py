"""ClusterSync's publishing of this host's own keys, without etcd: only what etcd may be
missing is put again, and a put racing a withdrawal does not bring the endpoint back."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cnm.cluster.sync import ClusterSync, Subscription
from cnm.errors import Unavailable
from cnm.store import KV

ME = "198.18.0.1"
NET = SimpleNamespace(id="n" * 64)


class FakeStore:
    def __init__(self) -> None:
        self.data: dict[str, dict] = {}
        self.puts: list[str] = []
        self.down = False
        self.during_put = None

    def put(self, key: str, value: dict, lease: int | None = None) -> int:
        if self.down:
            raise Unavailable("cluster store unreachable")
        if self.during_put is not None:
            hook, self.during_put = self.during_put, None
            hook()
        self.puts.append(key)
        self.data[key] = value
        return len(self.puts)

    def delete(self, key: str) -> bool:
        if self.down:
            raise Unavailable("cluster store unreachable")
        return self.data.pop(key, None) is not None


def ep(n: int) -> SimpleNamespace:
    return SimpleNamespace(
        id=f"e{n}",
        name=f"c{n}",
        address=f"10.0.0.{n}/24",
        address_v6=None,
        mac=f"02:42:0a:00:00:{n:02x}",
        aliases=(),
        container_id="",
    )


@pytest.fixture
def sync():
    s = ClusterSync(None, FakeStore(), ME)
    s.lease = SimpleNamespace(id=7, healthy=True)  # type: ignore[assignment]
    return s


def key(n: int) -> str:
    return f"peers/{NET.id}/e{n}"


def test_a_failed_put_is_retried_alone(sync):
    sync._flush()  # the node key
    for n in range(3):
        sync.publish(NET, ep(n))
    assert sync.store.puts == ["nodes/" + ME, key(0), key(1), key(2)] and sync._unconfirmed == set()
    sync.store.down = True
    sync.publish(NET, ep(3))
    assert sync._unconfirmed == {key(3)} and sync._wake.is_set()
    with pytest.raises(Unavailable):
        sync._flush()
    sync.store.down = False
    sync.store.puts.clear()
    sync._flush()
    assert sync.store.puts == [key(3)] and sync._unconfirmed == set()


def test_a_new_lease_puts_everything_of_ours_once(sync):
    for n in range(3):
        sync.publish(NET, ep(n))
    sync._flush()
    sync.store.puts.clear()
    sync._on_new_lease(8)
    sync._flush()
    assert sorted(sync.store.puts) == sorted(["nodes/" + ME, key(0), key(1), key(2)])
    sync.store.puts.clear()
    sync._flush()
    assert sync.store.puts == []  # nothing left to do: no republishing


def test_a_listing_missing_one_of_ours_puts_that_one_only(sync):
    sync._flush()  # the node key
    for n in range(3):
        sync.publish(NET, ep(n))
    listing = [
        KV(key(0), sync.store.data[key(0)], 1),
        KV(key(2), dict(sync.store.data[key(2)], ip="x"), 1),
        KV(key(9), {"endpoint_id": "e9", "vtep": ME}, 1),
    ]  # e9: ours, long gone
    sync._held.open(NET.id)
    sync._reconcile(Subscription(NET, None), listing)
    assert sync._unconfirmed == {key(1), key(2)} and sync._withdraw == {key(9)}
    sync.store.puts.clear()
    sync._flush()
    assert sorted(sync.store.puts) == [key(1), key(2)] and key(9) not in sync.store.data


def test_a_put_racing_a_withdrawal_is_taken_back(sync):
    sync.publish(NET, ep(1))
    sync._flush()  # the node key
    sync._unconfirmed.add(key(1))
    # The endpoint is withdrawn while the retry's put is on the wire.
    sync.store.during_put = lambda: sync.unpublish(ep(1))
    sync._flush()
    assert sync.store.puts[-1] == key(1)  # the put landed after the withdrawal...
    assert key(1) not in sync.store.data  # ...and was taken back
    assert sync._withdraw == set() and sync._unconfirmed == set()
