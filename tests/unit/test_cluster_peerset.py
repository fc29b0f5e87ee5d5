"""What a host holds of the cluster's peers (cnm.cluster.peerset), without etcd."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cnm.cluster.peerset import NodeDown, NodeUp, PeerDown, PeerSet, PeerUp

ME = "198.18.0.1"
NA, NB = "a" * 64, "b" * 64


def rec(eid: str, vtep: str, net: str = NA, ip: str = "10.0.0.2") -> dict:
    return {"network_id": net, "endpoint_id": eid, "ip": ip, "mac": "02:42:0a:00:00:02", "vtep": vtep}


def test_a_held_network_brings_its_peers_and_their_hosts_in_order():
    s = PeerSet(ME)
    s.open(NA)
    assert s.put(NA, rec("e1", "198.18.0.2")) == [NodeUp("198.18.0.2"), PeerUp(rec("e1", "198.18.0.2"))]
    assert s.put(NA, rec("e2", "198.18.0.2")) == [PeerUp(rec("e2", "198.18.0.2"))]  # host known already
    assert s.put(NA, rec("e2", "198.18.0.2")) == []  # a repeat: nothing
    assert s.delete(NA, "e1") == [PeerDown(rec("e1", "198.18.0.2"))]
    assert s.delete(NA, "e2") == [PeerDown(rec("e2", "198.18.0.2")), NodeDown("198.18.0.2")]
    assert s.delete(NA, "e2") == [] and s.vteps() == []


def test_networks_not_held_and_own_endpoints_are_ignored():
    s = PeerSet(ME)
    assert s.put(NA, rec("e1", "198.18.0.2")) == [] and len(s) == 0
    s.open(NA)
    assert s.put(NA, rec("mine", ME)) == []
    assert s.put(NA, {"vtep": "198.18.0.2"}) == []  # no endpoint id: not a peer


def test_a_peer_moving_host_brings_the_new_host_first_and_drops_the_old_last():
    s = PeerSet(ME)
    s.open(NA)
    s.put(NA, rec("e1", "198.18.0.2"))
    moved = rec("e1", "198.18.0.3")
    assert s.put(NA, moved) == [NodeUp("198.18.0.3"), PeerUp(moved), NodeDown("198.18.0.2")]


def test_reconcile_removes_first_then_adds_and_changes():
    s = PeerSet(ME)
    s.open(NA)
    s.put(NA, rec("gone", "198.18.0.2"))
    s.put(NA, rec("kept", "198.18.0.3"))
    changed = rec("kept", "198.18.0.3", ip="10.0.0.9")
    out = s.reconcile(NA, [changed, rec("new", "198.18.0.4"), rec("mine", ME)])
    assert out == [
        PeerDown(rec("gone", "198.18.0.2")),
        NodeDown("198.18.0.2"),
        PeerUp(changed),
        NodeUp("198.18.0.4"),
        PeerUp(rec("new", "198.18.0.4")),
    ]
    assert s.reconcile(NA, [changed, rec("new", "198.18.0.4")]) == []


def test_drop_takes_every_peer_and_only_hosts_no_other_network_needs():
    s = PeerSet(ME)
    s.open(NA)
    s.open(NB)
    s.put(NA, rec("a1", "198.18.0.2"))
    s.put(NA, rec("a2", "198.18.0.3"))
    s.put(NB, rec("b1", "198.18.0.3", net=NB))
    out = s.drop(NA)
    assert out == [PeerDown(rec("a1", "198.18.0.2")), NodeDown("198.18.0.2"), PeerDown(rec("a2", "198.18.0.3"))]
    assert s.vteps() == ["198.18.0.3"] and s.networks() == [NB]
    assert s.put(NA, rec("a3", "198.18.0.5")) == []  # no longer held


def test_repeated_strings_are_shared():
    s = PeerSet(ME)
    s.open(NA)
    s.put(NA, rec("e1", "".join(["198.18.", "0.2"])))
    s.put(NA, rec("e2", "".join(["198.18.", "0.2"])))
    a, b = s.peers(NA)
    assert a["vtep"] is b["vtep"] and a["network_id"] is b["network_id"]


step = st.one_of(
    st.tuples(st.just("put"), st.sampled_from([NA, NB]), st.integers(0, 5), st.integers(1, 4)),
    st.tuples(st.just("delete"), st.sampled_from([NA, NB]), st.integers(0, 5)),
    st.tuples(
        st.just("reconcile"),
        st.sampled_from([NA, NB]),
        st.lists(st.tuples(st.integers(0, 5), st.integers(1, 4)), max_size=5),
    ),
    st.tuples(st.just("open"), st.sampled_from([NA, NB])),
    st.tuples(st.just("drop"), st.sampled_from([NA, NB])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=40))
def test_effects_replayed_on_a_host_leave_it_exactly_as_held(steps):
    """A host that applies the effects in order ends with the peers held, the hosts of
    exactly those peers in its filter, and never a peer on a host not yet in its filter."""
    s = PeerSet(ME)
    peers: dict[tuple[str, str], dict] = {}
    nodes: set[str] = set()
    for op in steps:
        if op[0] == "put":
            out = s.put(op[1], rec(f"e{op[2]}", f"198.18.0.{op[3]}", net=op[1]))
        elif op[0] == "delete":
            out = s.delete(op[1], f"e{op[2]}")
        elif op[0] == "reconcile":
            out = s.reconcile(op[1], [rec(f"e{e}", f"198.18.0.{v}", net=op[1]) for e, v in op[2]])
        elif op[0] == "open":
            s.open(op[1])
            out = []
        else:
            out = s.drop(op[1])
        for e in out:
            if isinstance(e, NodeUp):
                assert e.vtep not in nodes
                nodes.add(e.vtep)
            elif isinstance(e, NodeDown):
                assert e.vtep in nodes and not any(p["vtep"] == e.vtep for p in peers.values())
                nodes.discard(e.vtep)
            elif isinstance(e, PeerUp):
                assert e.peer["vtep"] in nodes
                peers[e.peer["network_id"], e.peer["endpoint_id"]] = e.peer
            else:
                del peers[e.peer["network_id"], e.peer["endpoint_id"]]
        held = {(nid, p["endpoint_id"]): p for nid in s.networks() for p in s.peers(nid)}
        assert peers == held
        assert nodes == {p["vtep"] for p in held.values()} == set(s.vteps())
