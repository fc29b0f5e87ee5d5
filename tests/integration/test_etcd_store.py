"""EtcdStore, NodeLease and EtcdMember against real etcd members (Debian's
etcd-server), each test in its own throwaway network namespace.

etcd listens on loopback addresses INSIDE the test's namespace, so the test's own
thread moves into that namespace for the test (`inside`) and back afterwards: the
store's connections, watch and lease threads are then created there too. Nothing
listens or changes in the machine's root namespace.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from contextlib import contextmanager

import pytest

from cnm.cluster.etcd_server import EtcdMember, client_endpoints, etcd_binary, make_members, start_cluster
from cnm.cluster.lease import NodeLease
from cnm.errors import Conflict, Unavailable
from cnm.osl.netns import netns_path, setns_current_thread
from cnm.store import Delete, Put, WatchEvent, put_all
from cnm.store.etcd import EtcdStore
from tests.integration.conftest import ns_sh

try:
    etcd_binary()
except Unavailable as exc:  # pragma: no cover - depends on the machine
    pytest.skip(f"{exc}", allow_module_level=True)


@contextmanager
def inside(ns: str):
    """Run the calling thread (and threads it starts) in `ns`, then come back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns_current_thread(netns_path(ns))
        try:
            yield
        finally:
            setns_current_thread(f"/proc/self/fd/{home}")
    finally:
        os.close(home)


def single(ns: str, tmp_path, host: str = "127.0.0.1") -> EtcdMember:
    peer = f"http://{host}:2380"
    return EtcdMember("e0", tmp_path / "e0", f"http://{host}:2379", peer, {"e0": peer}, netns=ns)


@pytest.fixture
def etcd1(host_ns, tmp_path):
    """One running member in host_ns; the test thread is inside host_ns."""
    m = single(host_ns, tmp_path).start()
    try:
        with inside(host_ns):
            yield m
    finally:
        m.stop()


@pytest.fixture
def stores():
    """Factory for stores closed after the test."""
    made: list[EtcdStore] = []

    def make(endpoints, **kw) -> EtcdStore:
        s = EtcdStore(endpoints, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def wait_for(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


class Recorder:
    def __init__(self) -> None:
        self.events: list[WatchEvent] = []
        self.resyncs = 0
        self.lock = threading.Lock()

    def __call__(self, ev: WatchEvent) -> None:
        with self.lock:
            self.events.append(ev)

    def resync(self) -> None:
        self.resyncs += 1

    def seen(self) -> list[tuple[str, str, dict | None]]:
        with self.lock:
            return [(e.kind, e.key, e.value) for e in self.events]


# --- the Store contract --------------------------------------------------------------------


def test_store_contract(etcd1, stores):
    s = stores([etcd1.client_url])
    other = stores([etcd1.client_url], prefix="/other/")
    other.put("networks/x", {"foreign": True})

    assert s.get("networks/a") is None
    r1 = s.put("networks/a", {"name": "a", "ü": "ω"})
    kv = s.get("networks/a")
    assert kv is not None and kv.value == {"name": "a", "ü": "ω"} and kv.revision == r1
    r2 = s.put("networks/b", {"name": "b"})
    r3 = s.put("networks/a", {"name": "a2"})
    assert r1 < r2 < r3 and s.get("networks/a").revision == r3
    s.put("networksX", {})  # a sibling, not under "networks/"
    assert [k.key for k in s.list("networks/")] == ["networks/a", "networks/b"]
    assert [k.key for k in s.list("")] == ["networks/a", "networks/b", "networksX"]  # own prefix only

    # atomic: all or nothing; 0 = must not exist
    rev = s.atomic([Put("vni/4096", {"net": "a"}), Delete("networks/b")], expect={"vni/4096": 0, "networks/a": r3})
    assert rev > r3 and s.get("networks/b") is None and s.get("vni/4096").revision == rev
    before = {k.key: k for k in s.list("")}
    with pytest.raises(Conflict, match="vni/4096"):
        s.atomic([Put("vni/4096", {"net": "b"}), Put("networks/c", {})], expect={"vni/4096": 0})
    with pytest.raises(Conflict):
        s.atomic([Delete("networks/a")], expect={"networks/a": r1})  # stale revision
    assert {k.key: k for k in s.list("")} == before  # nothing changed
    assert s.revision() == rev

    assert s.delete("networks/a") is True and s.delete("networks/a") is False
    put_all(s, [(f"ep/{i}", {"i": i}) for i in range(5)])
    assert s.delete_prefix("ep/") == 5 and s.list("ep/") == [] and s.delete_prefix("ep/") == 0
    assert other.get("networks/x").value == {"foreign": True}  # other prefix untouched


def test_watch_in_order_survives_restart_and_compaction(etcd1, stores):
    s = stores([etcd1.client_url], timeout=2.0)
    rec = Recorder()
    cancel = s.watch("peers/", rec, resync=rec.resync)
    s.put("peers/a", {"v": 1})
    s.put("elsewhere", {"v": 0})
    s.atomic([Put("peers/b", {"v": 2}), Put("peers/c", {"v": 3})])
    s.delete("peers/a")
    expected = [
        ("put", "peers/a", {"v": 1}),
        ("put", "peers/b", {"v": 2}),
        ("put", "peers/c", {"v": 3}),
        ("delete", "peers/a", None),
    ]
    assert wait_for(lambda: len(rec.seen()) >= 4) and rec.seen() == expected

    # etcd goes away and comes back; the writes right after the restart land while the
    # watcher is still backing off, and must still arrive, once each, in order.
    etcd1.stop()
    time.sleep(1.0)
    etcd1.start()
    for i in range(5):
        s.put(f"peers/n{i}", {"i": i})
    s.delete("peers/b")
    expected += [("put", f"peers/n{i}", {"i": i}) for i in range(5)] + [("delete", "peers/b", None)]
    assert wait_for(lambda: len(rec.seen()) >= len(expected), 10), rec.seen()
    time.sleep(0.3)
    assert rec.seen() == expected and rec.resyncs == 0

    # A watcher asking for compacted history gets a resync, then live events.
    s.compact(s.revision())
    late = Recorder()
    cancel_late = s.watch("peers/", late, resync=late.resync, start_revision=2)
    assert wait_for(lambda: late.resyncs == 1)
    s.put("peers/z", {"z": 1})
    assert wait_for(lambda: late.seen() == [("put", "peers/z", {"z": 1})])

    t0 = time.monotonic()
    cancel_late()
    cancel()
    assert time.monotonic() - t0 < 1.0
    assert not [t for t in threading.enumerate() if t.name.startswith("etcd-watch")]
    s.put("peers/after-cancel", {})
    time.sleep(0.3)
    assert ("put", "peers/after-cancel", {}) not in rec.seen()


# --- leases --------------------------------------------------------------------------------


def test_leased_keys_expire_unless_kept_alive(etcd1, stores):
    s = stores([etcd1.client_url])
    dead = s.lease_grant(2)
    s.put("nodes/dead", {"h": 1}, lease=dead)
    kept = NodeLease(s, ttl=2)
    s.atomic([Put("nodes/alive", {"h": 2}), Put("nodes/alive-ep", {})], lease=kept.id)
    assert s.get("nodes/dead") is not None
    assert wait_for(lambda: s.get("nodes/dead") is None, 5), "unrenewed lease did not expire"
    time.sleep(1.0)  # > ttl since the grant: renewals are what keep it
    assert s.get("nodes/alive") is not None and kept.healthy
    kept.close()  # revoke: gone now, not after the ttl
    assert s.list("nodes/") == []


def test_node_lease_across_outages(host_ns, tmp_path, stores):
    m = single(host_ns, tmp_path).start()
    try:
        with inside(host_ns):
            s = stores([m.client_url], timeout=1.0)
            new_ids: list[int] = []
            lease = NodeLease(s, ttl=2, on_new_lease=new_ids.append)
            first = lease.id
            s.put("nodes/h1", {}, lease=first)

            # An outage longer than the ttl: etcd's new leader renews every lease, so the
            # node keeps its lease and its keys.
            m.stop()
            time.sleep(2.5)
            m.start()
            assert wait_for(lambda: lease.healthy, 5)
            assert lease.id == first and new_ids == [] and s.get("nodes/h1") is not None

            # The cluster comes back without its data: the lease is gone, a new one is
            # granted and the owner is told, so it can publish again.
            m.stop()
            shutil.rmtree(m.data_dir)
            m.start()
            assert wait_for(lambda: new_ids, 6), "no new lease after the store lost its data"
            assert new_ids[0] != first and lease.id == new_ids[0] and s.lease_keepalive(lease.id) > 0
            lease.close()
    finally:
        m.stop()


# --- faults --------------------------------------------------------------------------------


def test_unreachable_store_fails_fast_with_a_clear_message(etcd1, stores, host_ns):
    # A silent member: an address on a link whose peer never answers ARP.
    ns_sh(host_ns, "ip", "link", "add", "cnmq0", "type", "veth", "peer", "name", "cnmq1")
    ns_sh(host_ns, "ip", "addr", "add", "198.18.9.1/24", "dev", "cnmq0")
    ns_sh(host_ns, "ip", "link", "set", "cnmq0", "up")
    silent = "http://198.18.9.2:2379"

    s = stores([silent, etcd1.client_url], timeout=2.0)
    t0 = time.monotonic()
    s.put("k", {"v": 1})  # fails over past the silent member
    assert time.monotonic() - t0 < 2.0 and s.get("k").value == {"v": 1}

    etcd1.stop()
    for call in (
        lambda: s.get("k"),
        lambda: s.put("k", {}),
        lambda: s.atomic([Put("k", {})], {"k": 0}),
        lambda: s.list(""),
        lambda: s.lease_grant(5),
    ):
        t0 = time.monotonic()
        with pytest.raises(Unavailable) as info:
            call()
        assert time.monotonic() - t0 < 2.0 + 1.0
    msg = str(info.value)
    assert msg.startswith("cluster store etcd://198.18.9.2:2379,127.0.0.1:2379 unreachable")
    assert "global (overlay) operations need it" in msg and "\n" not in msg

    etcd1.start()  # and it resumes by itself
    assert s.get("k").value == {"v": 1}


def test_three_members_leader_killed(host_ns, tmp_path, stores):
    members = make_members(
        [(f"e{i}", f"127.0.0.{i + 1}") for i in range(3)], tmp_path, netns={f"e{i}": host_ns for i in range(3)}
    )
    start_cluster(members)
    try:
        with inside(host_ns):
            status = stores(client_endpoints(members)).status()
            assert all(st.reachable for st in status) and sum(st.leader for st in status) == 1
            leader = next(i for i, st in enumerate(status) if st.leader)
            # The leader first in the list: requests and the watch start there.
            order = [members[leader]] + [m for i, m in enumerate(members) if i != leader]
            s = stores(client_endpoints(order), timeout=3.0)
            rec = Recorder()
            s.watch("", rec)
            s.put("a", {"v": 1})
            assert wait_for(lambda: len(rec.seen()) == 1)

            order[0].kill()  # an election, and a dead first endpoint
            t0 = time.monotonic()
            r = s.put("b", {"v": 2})
            first_write = time.monotonic() - t0
            s.atomic([Put("c", {"v": 3})], expect={"c": 0, "b": r})
            assert [k.key for k in s.list("")] == ["a", "b", "c"]
            assert first_write < 3.0
            after = s.status()
            assert not after[0].reachable and sum(st.leader for st in after) == 1
            assert wait_for(lambda: len(rec.seen()) == 3, 8), rec.seen()  # the watch failed over too
            assert rec.seen()[1:] == [("put", "b", {"v": 2}), ("put", "c", {"v": 3})]
            print(f"first write after killing the leader: {first_write * 1000:.0f} ms")
    finally:
        for m in members:
            m.stop()


def test_watch_resyncs_when_the_store_was_reset(host_ns, tmp_path, stores, monkeypatch):
    """etcd back without its data (restored from an old backup, or wiped): the revision
    went back. A member merely behind is waited for; one that stays behind means a reset,
    and the owner relists."""
    import cnm.store.etcd_watch as etcd_watch

    monkeypatch.setattr(etcd_watch, "BEHIND_GRACE", 1.0)
    m = single(host_ns, tmp_path).start()
    try:
        with inside(host_ns):
            s = stores([m.client_url], timeout=1.0)
            rec = Recorder()
            s.watch("peers/", rec, resync=rec.resync)
            for i in range(8):
                s.put(f"peers/{i}", {"i": i})
            assert wait_for(lambda: len(rec.seen()) == 8)
            m.stop()
            shutil.rmtree(m.data_dir)
            m.start()
            assert wait_for(lambda: rec.resyncs == 1, 10), "no resync after the store went back"
            s.put("peers/after", {"v": 1})
            assert wait_for(lambda: rec.seen()[-1:] == [("put", "peers/after", {"v": 1})], 5), rec.seen()
    finally:
        m.stop()
