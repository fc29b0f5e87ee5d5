"""The resolver's reply cache (cnm.dns.fastpath) against the slow path it stands in for.

The property that matters: whatever mix of queries, clients, listeners and table
changes, a resolver answering through its cache sends exactly the bytes the plain
handler would have sent in its place — round-robin order included."""

from __future__ import annotations

from dnslib import EDNS0, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from cnm.dns.fastpath import ReplyCache
from cnm.dns.handler import Forward, Local, decide, handle
from cnm.dns.records import NameTable
from cnm.dns.server import Resolver

NA, NB = "a" * 64, "b" * 64


def fill(t: NameTable) -> NameTable:
    t.add(NA, "neta", "ep-web", "1" * 64, "web", ["frontend", "svc"], "10.0.0.2/24", "fd00::2/64")
    t.add(NA, "neta", "ep-cli", "2" * 64, "client", ["svc"], "10.0.0.3/24", "fd00::3/64")
    t.add(NA, "neta", "ep-x", "4" * 64, "x", ["svc"], "10.0.0.4/24", None)
    t.add(NB, "netb", "ep-cli-b", "2" * 64, "client", [], "10.1.0.3/24", None)
    t.add(NB, "netb", "ep-db", "3" * 64, "db", ["svc"], "10.1.0.4/24", None)
    return t


def served(resolver: Resolver, data: bytes, client: str, listener: str):
    """What the UDP listener sends for `data` (cnm.dns.server._UdpSocket.drain)."""
    hit = resolver.cache.get(data, client, listener)
    if hit is not None:
        return bytes(hit)
    return resolver._decide(data, client, listener, tcp=False)


def query(name: str, qtype: str = "A", qid: int = 1, edns: bool = False) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = qid
    if edns:
        q.add_ar(EDNS0(udp_len=1232))
    return bytes(q.pack())


def test_a_repeat_is_answered_from_the_cache_with_its_own_id():
    t = fill(NameTable())
    r = Resolver(t, list)
    first = served(r, query("web", qid=1), "10.0.0.3", NA)
    assert r.cache.hits == 0 and len(r.cache) == 1
    again = served(r, query("web", qid=0xBEEF), "10.0.0.3", NA)
    assert r.cache.hits == 1
    assert again[:2] == b"\xbe\xef" and again[2:] == first[2:]
    assert again == handle(t, query("web", qid=0xBEEF), "10.0.0.3", NA)


def test_clients_with_another_view_do_not_share_answers():
    t = fill(NameTable())
    r = Resolver(t, list)
    # 10.0.0.2 (web) sees netA only; 10.0.0.3 (client) sees netA and netB.
    assert isinstance(served(r, query("db"), "10.0.0.2", NA), Forward)
    assert DNSRecord.parse(served(r, query("db"), "10.0.0.3", NA)).rr
    assert isinstance(served(r, query("db"), "10.0.0.2", NA), Forward)  # still not visible
    # Two addresses of one container share a view; an unknown address has its own.
    served(r, query("web"), "10.0.0.3", NA)
    served(r, query("web"), "10.0.0.4", NA)
    assert len(r.cache._views) == 2


def test_a_table_change_drops_what_was_cached():
    t = fill(NameTable())
    r = Resolver(t, list)
    served(r, query("web"), "10.0.0.3", NA)
    t.add(NA, "neta", "ep-web", "1" * 64, "web", [], "10.0.0.9/24", None)  # web moved
    out = DNSRecord.parse(served(r, query("web"), "10.0.0.3", NA))
    assert [str(rr.rdata) for rr in out.rr] == ["10.0.0.9"]
    t.remove("ep-web")
    assert isinstance(served(r, query("web"), "10.0.0.3", NA), Forward)


def test_a_reply_built_while_the_table_changed_is_not_kept():
    t = fill(NameTable())
    cache = ReplyCache(t)
    data = query("web")
    before = t.generation
    out = decide(t, data, "10.0.0.3", NA)
    assert isinstance(out, Local)
    t.add(NA, "neta", "ep-new", None, "new", [], "10.0.0.50", None)
    cache.put(data, "10.0.0.3", NA, out, before)
    assert len(cache) == 0 and cache.get(data, "10.0.0.3", NA) is None


def test_round_robin_keeps_its_order_through_the_cache():
    fast, slow = fill(NameTable()), fill(NameTable())
    r = Resolver(fast, list)
    for i in range(9):
        want = handle(slow, query("svc", qid=i), "10.0.0.3", NA)
        assert served(r, query("svc", qid=i), "10.0.0.3", NA) == want
    assert r.cache.hits == 8


def test_bounded():
    t = fill(NameTable())
    r = Resolver(t, list)
    r.cache.max_replies = 3
    for name in ("web", "client", "x", "frontend", "web.neta"):
        served(r, query(name), "10.0.0.3", NA)
    assert len(r.cache) <= 3


NAMES = [
    "web",
    "WEB",
    "client",
    "x",
    "db",
    "svc",
    "SvC.",
    "frontend.neta",
    "nobody",
    "example.org",
    "2.0.0.10.in-addr.arpa",
    "4.0.1.10.in-addr.arpa",
    "9.9.9.9.in-addr.arpa",
    "1" * 12,
]
CLIENTS = ["10.0.0.2", "10.0.0.3", "10.1.0.3", "10.1.0.4", "192.0.2.1"]

# Small pools, many steps: repeats (what the cache serves) are common, and so are the
# same query from clients with other views, and table changes between them.
a_query = st.tuples(st.sampled_from(NAMES), st.sampled_from(["A", "AAAA", "ANY", "MX", "PTR"]), st.booleans())
some_query = st.tuples(
    st.sampled_from(["web", "db", "svc", "client", "4.0.1.10.in-addr.arpa"]),
    st.sampled_from(["A", "ANY", "PTR"]),
    st.just(False),
)
ask_step = st.tuples(
    st.just("ask"), st.integers(0, 5), st.sampled_from(CLIENTS), st.sampled_from([NA, NB]), st.integers(0, 65535)
)
change_step = st.tuples(st.just("change"), st.sampled_from(["ep-web", "ep-x", "ep-db", "ep-new"]), st.booleans())


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(a_query, some_query), min_size=1, max_size=6),
    st.lists(st.one_of(ask_step, ask_step, ask_step, ask_step, change_step), min_size=1, max_size=80),
)
def test_the_cache_answers_byte_for_byte_as_the_handler(queries, steps):
    fast, slow = fill(NameTable()), fill(NameTable())
    r = Resolver(fast, list)
    for op in steps:
        if op[0] == "change":
            _, eid, add = op
            for t in (fast, slow):
                if add:
                    t.add(NA, "neta", eid, None, f"n-{eid}", ["svc"], f"10.0.0.{60 + len(eid)}", None)
                else:
                    t.remove(eid)
            continue
        _, pick, client, listener, qid = op
        name, qtype, edns = queries[pick % len(queries)]
        data = query(name, qtype, qid, edns)
        assert served(r, data, client, listener) == handle(slow, data, client, listener)


def test_a_long_random_walk_answers_byte_for_byte_as_the_handler():
    """Thousands of steps over small pools: every (query, client, listener) combination
    comes up many times, before and after table changes."""
    import random

    rng = random.Random(14)
    fast, slow = fill(NameTable()), fill(NameTable())
    r = Resolver(fast, list)
    queries = [
        (n, t)
        for n in ("web", "db", "svc", "client", "x", "nobody", "2.0.0.10.in-addr.arpa", "4.0.1.10.in-addr.arpa")
        for t in ("A", "AAAA", "ANY", "PTR")
    ]
    for _ in range(6000):
        if rng.random() < 0.004:
            eid = rng.choice(["ep-web", "ep-x", "ep-db", "ep-new"])
            add = rng.random() < 0.5
            for t in (fast, slow):
                if add:
                    t.add(NA, "neta", eid, None, f"n-{eid}", ["svc"], f"10.0.0.{60 + len(eid)}", None)
                else:
                    t.remove(eid)
            continue
        name, qtype = rng.choice(queries)
        data = query(name, qtype, rng.randrange(65536), rng.random() < 0.2)
        client, listener = rng.choice(CLIENTS), rng.choice([NA, NB])
        assert served(r, data, client, listener) == handle(slow, data, client, listener)
    assert r.cache.hits > 500, r.cache.hits
