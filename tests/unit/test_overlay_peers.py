"""The overlay's peer table: indexed lookups give exactly the answers of a scan."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.overlay.peers import Peer, PeerTable

NET = "n" * 64


class ScanTable:
    """The reference: every lookup scans the network's peers for the newest claimant."""

    def __init__(self) -> None:
        self.peers: dict[str, tuple[int, Peer]] = {}
        self.clock = itertools.count()

    def add(self, p: Peer) -> None:
        self.peers[p.endpoint_id] = (next(self.clock), p)

    def remove(self, eid: str) -> None:
        self.peers.pop(eid, None)

    def newest(self, match) -> Peer | None:
        best = max((sp for sp in self.peers.values() if match(sp[1])), default=None, key=lambda sp: sp[0])
        return best[1] if best else None


def peer(eid: int, ip: int, mac: int, vtep: int, ip6: int | None = None) -> Peer:
    return Peer(
        NET,
        f"e{eid}",
        f"10.0.0.{ip}",
        f"02:42:0a:00:00:{mac:02x}",
        f"198.18.0.{vtep}",
        f"fd00::{ip6}" if ip6 is not None else None,
    )


def test_the_newest_claimant_wins_and_an_entry_goes_with_its_last_claimant():
    t = PeerTable()
    t.add(peer(1, ip=2, mac=2, vtep=1))
    t.add(peer(2, ip=2, mac=3, vtep=2))  # address reused before e1's delete arrived
    assert t.neighbour_for(NET, "10.0.0.2") == "02:42:0a:00:00:03"
    t.remove(NET, "e2")
    assert t.neighbour_for(NET, "10.0.0.2") == "02:42:0a:00:00:02"  # e1 still claims it
    assert t.fdb_for(NET, "02:42:0a:00:00:03") is None
    t.remove(NET, "e1")
    assert t.neighbour_for(NET, "10.0.0.2") is None and t.peers(NET) == []
    assert t._by_ip == {} and t._by_mac == {} and t._peers == {}  # nothing left behind


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.integers(0, 6),
            st.integers(1, 4),
            st.integers(1, 4),
            st.integers(1, 3),
            st.one_of(st.none(), st.integers(1, 3)),
        ),
        st.tuples(st.just("remove"), st.integers(0, 6)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_indexed_lookups_answer_as_a_scan(steps):
    t, ref = PeerTable(), ScanTable()
    for op in steps:
        if op[0] == "add":
            _, eid, ip, mac, vtep, ip6 = op
            p = peer(eid, ip, mac, vtep, ip6)
            t.add(p)
            ref.add(p)
        else:
            t.remove(NET, f"e{op[1]}")
            ref.remove(f"e{op[1]}")
        for ip in [f"10.0.0.{i}" for i in range(1, 5)] + [f"fd00::{i}" for i in range(1, 4)]:
            want = ref.newest(lambda p, ip=ip: ip in p.ips)
            assert t.neighbour_for(NET, ip) == (want.mac if want else None)
        for m in range(1, 5):
            mac = f"02:42:0a:00:00:{m:02x}"
            want = ref.newest(lambda p, mac=mac: p.mac == mac)
            assert t.fdb_for(NET, mac) == (want.vtep if want else None)
    assert [p.endpoint_id for p in t.peers(NET)] == [
        p.endpoint_id for _, p in sorted(ref.peers.values(), key=lambda sp: sp[0])
    ]
