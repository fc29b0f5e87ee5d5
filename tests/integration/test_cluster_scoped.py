"""Scoped cluster watching against real etcd: a host holds (and is sent) the peers of the
networks it has endpoints on, and nothing else — across joins, leaves, lease expiry,
restarts, compaction and resyncs.

Hosts are bench/simhost.SimHost: the real ClusterSync and EtcdStore, a controller that
only knows networks, the overlay driver's peer table without the kernel. etcd runs in
the test's throwaway namespace (on its loopback), the test thread inside it (`inside`).
"""

from __future__ import annotations

import time

import pytest

from bench.simhost import SimHost, create_network
from cnm.cluster.etcd_server import client_endpoints, make_members, start_cluster
from cnm.store.etcd import EtcdStore
from tests.integration.test_etcd_store import inside, single, wait_for

VTEP = {f"h{i}": f"198.18.0.{i}" for i in range(1, 8)}
MAC = "02:42:0a:{:02x}:00:{:02x}"


class Cluster:
    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints
        self.admin = EtcdStore(endpoints)
        self.hosts: list[SimHost] = []
        self.seen: dict[str, list[tuple[str, bool]]] = {}
        self.nets: dict[str, str] = {}
        self.vni = 256

    def network(self, name: str) -> str:
        self.vni += 1
        self.nets[name] = create_network(self.admin, name, self.vni)
        return self.nets[name]

    def host(self, name: str, ttl: int = 10, endpoints: list[str] | None = None) -> SimHost:
        log = self.seen.setdefault(name, [])
        h = SimHost(
            name, VTEP[name], endpoints or self.endpoints, ttl=ttl, on_seen=lambda eid, up: log.append((eid, up))
        )
        h.start()
        self.hosts.append(h)
        return h

    def close(self) -> None:
        for h in self.hosts:
            h.close()
        self.admin.close()


def attach(h: SimHost, net: str, eid: str, n: int) -> None:
    h.attach(net, eid, f"10.{n // 250}.{n % 250}.2", MAC.format(n // 256, n % 256), name=eid)


def held(h: SimHost) -> set[str]:
    return {rec["endpoint_id"] for rec in h.sync.held_peers()}


def watched(h: SimHost) -> set[str]:
    return {w.full_prefix[len(h.store.prefix) :] for w in h.store._watches}


@pytest.fixture
def cluster(host_ns, tmp_path):
    m = single(host_ns, tmp_path).start()
    try:
        with inside(host_ns):
            c = Cluster([m.client_url])
            try:
                yield c
            finally:
                c.close()
    finally:
        m.stop()


def test_hosts_hold_and_hear_of_their_networks_only(cluster):
    a, b, c = cluster.network("a"), cluster.network("b"), cluster.network("c")
    h1, h2, h3 = cluster.host("h1"), cluster.host("h2"), cluster.host("h3")
    attach(h1, a, "e1a", 1)
    attach(h2, a, "e2a", 2)
    attach(h2, b, "e2b", 3)
    attach(h3, b, "e3b", 4)
    assert wait_for(lambda: (held(h1), held(h2), held(h3)) == ({"e2a"}, {"e1a", "e3b"}, {"e2b"}), 15)
    assert h1.sync.subscriptions() == [a] and h2.sync.subscriptions() == sorted([a, b])
    assert watched(h1) == {"network/", f"peers/{a}/"} and watched(h3) == {"network/", f"peers/{b}/"}
    # Every host knows every network record; nobody holds the peers of c (no endpoints).
    assert all(set(h.ctl.networks) == {a, b, c} for h in (h1, h2, h3))
    # The hosts whose VXLAN each accepts are the hosts of its peers.
    assert h1.driver.nodes == {VTEP["h2"]} and h3.driver.nodes == {VTEP["h2"]}
    assert h2.driver.nodes == {VTEP["h1"], VTEP["h3"]} == set(h2.sync.vteps())

    # A host joining a network has its peers programmed before publish() returns...
    h4 = cluster.host("h4")
    calls: list[str] = []
    real_list, real_snapshot = h4.store.list, h4.store.snapshot
    h4.store.list = lambda p: calls.append(p) or real_list(p)  # type: ignore[method-assign]
    h4.store.snapshot = lambda p: calls.append(p) or real_snapshot(p)  # type: ignore[method-assign]
    attach(h4, a, "e4a", 5)
    assert held(h4) == {"e1a", "e2a"} and calls == [f"peers/{a}/"]  # one listing, of a only
    # ...and the change reaches the hosts of that network, and no other.
    assert wait_for(lambda: "e4a" in held(h1) and "e4a" in held(h2), 15)
    time.sleep(0.3)
    assert not any(eid == "e4a" for eid, _ in cluster.seen["h3"])
    assert held(h3) == {"e2b"}


def test_leaving_a_network_drops_its_peers_and_its_news(cluster):
    a, b = cluster.network("a"), cluster.network("b")
    h1, h2 = cluster.host("h1"), cluster.host("h2")
    attach(h1, a, "e1a", 1)
    attach(h1, b, "e1b", 2)
    attach(h2, a, "e2a", 3)
    attach(h2, a, "e2a2", 4)
    assert wait_for(lambda: held(h1) == {"e2a", "e2a2"} and held(h2) == {"e1a"}, 15)
    h2.detach("e2a")  # not its last endpoint on a: still subscribed
    assert wait_for(lambda: held(h1) == {"e2a2"}, 15) and h2.sync.subscriptions() == [a]
    h1.detach("e1a")  # its last endpoint on a
    assert h1.sync.subscriptions() == [b] and held(h1) == set()
    assert watched(h1) == {"network/", f"peers/{b}/"} and h1.driver.nodes == set()
    assert h1.driver.table.peers(a) == []
    assert wait_for(lambda: held(h2) == set(), 15)  # h2 heard that e1a left
    before = len(cluster.seen["h1"])
    attach(h2, a, "e2a3", 5)
    time.sleep(0.3)
    assert len(cluster.seen["h1"]) == before  # news of a no longer reaches h1
    attach(h1, a, "e1a-again", 6)  # and back: the listing brings a's peers
    assert held(h1) == {"e2a2", "e2a3"}


def test_a_host_that_stops_renewing_leaves_every_network_it_was_on(cluster):
    a, b = cluster.network("a"), cluster.network("b")
    h1, h2, h3 = cluster.host("h1"), cluster.host("h2", ttl=2), cluster.host("h3")
    attach(h1, a, "e1a", 1)
    attach(h2, a, "e2a", 2)
    attach(h2, b, "e2b", 3)
    attach(h3, b, "e3b", 4)
    assert wait_for(lambda: held(h1) == {"e2a"} and held(h3) == {"e2b"}, 15)
    t0 = time.monotonic()
    h2.close()  # stops renewing; its keys go when the lease expires
    assert time.monotonic() - t0 < 1.0  # no thread left asleep to finish its nap
    t0 = time.monotonic()
    assert wait_for(lambda: held(h1) == set() and held(h3) == set(), 15)
    assert time.monotonic() - t0 > 1.0  # by the lease, not by a withdrawal
    assert h1.driver.nodes == set() and h3.driver.nodes == set()
    assert cluster.seen["h1"][-1] == ("e2a", False)


def test_a_restarted_host_republishes_and_its_removed_endpoints_expire(cluster):
    a = cluster.network("a")
    h1, h2 = cluster.host("h1"), cluster.host("h2", ttl=2)
    attach(h1, a, "e1a", 1)
    attach(h2, a, "kept", 2)
    attach(h2, a, "removed-while-down", 3)
    assert wait_for(lambda: held(h1) == {"kept", "removed-while-down"}, 15)
    h2.close()  # the daemon stops; one container goes while it is down
    again = cluster.host("h2", ttl=2)
    attach(again, a, "kept", 2)  # what the restarted daemon finds running
    assert held(again) == {"e1a"}
    assert wait_for(lambda: held(h1) == {"kept"}, 15)  # the other went with the old lease
    time.sleep(2.5)  # and "kept", republished on the new lease, stays
    assert held(h1) == {"kept"}


def test_a_watch_that_lost_history_resyncs_its_network_only(host_ns, tmp_path):
    """h1 talks to one etcd member only. That member is down while the others change
    network a (and c, which h1 is not on) and compact the history; when it is back, each
    of h1's watches cannot resume (compacted) and relists its own prefix — never another
    network's, never all peers — and h1 ends exactly right."""
    members = make_members(
        [(f"e{i}", f"127.0.0.{i + 1}") for i in range(3)], tmp_path, netns={f"e{i}": host_ns for i in range(3)}
    )
    start_cluster(members)
    try:
        with inside(host_ns):
            everyone = client_endpoints(members)
            c = Cluster(everyone[1:])
            try:
                a, b, other = c.network("a"), c.network("b"), c.network("c")
                h1 = c.host("h1", ttl=30, endpoints=everyone[:1])
                h2, h3 = c.host("h2"), c.host("h3")
                attach(h1, a, "e1a", 1)
                attach(h1, b, "e1b", 2)
                attach(h2, a, "gone", 3)
                attach(h2, a, "changed", 4)
                attach(h3, b, "e3b", 5)
                attach(h3, other, "e3c", 7)
                assert wait_for(lambda: held(h1) == {"gone", "changed", "e3b"}, 15)
                listed: list[str] = []
                real_list = h1.store.list
                h1.store.list = lambda p: listed.append(p) or real_list(p)  # type: ignore[method-assign]

                members[0].stop()
                h2.detach("gone")
                attach(h2, a, "changed", 40)  # same endpoint, new address
                attach(h2, a, "new", 6)
                attach(h2, other, "e2c", 8)
                c.admin.compact(c.admin.revision())
                members[0].start()

                def right() -> bool:
                    ips = {r["endpoint_id"]: r["ip"] for r in h1.sync.held_peers(a)}
                    return ips == {"changed": "10.0.40.2", "new": "10.0.6.2"}

                assert wait_for(right, 30), h1.sync.held_peers(a)
                assert wait_for(lambda: len(listed) == 3, 15)
                assert sorted(listed) == sorted(["network/", f"peers/{a}/", f"peers/{b}/"])
                assert {r["endpoint_id"] for r in h1.sync.held_peers(b)} == {"e3b"}
                assert h1.driver.table.neighbour_for(a, "10.0.40.2") is not None
                assert h1.driver.table.neighbour_for(a, "10.0.3.2") is None  # "gone"'s entry went
            finally:
                c.close()
    finally:
        for m in members:
            m.stop()
