"""Wire-level decisions of the resolver on dnslib-built packets (no sockets)."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest
from dnslib import EDNS0, OPCODE, QTYPE, RCODE, DNSHeader, DNSQuestion, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from cnm.dns.handler import MAX_QUERY, TTL, Forward, handle, servfail
from cnm.dns.records import NameTable
from cnm.dns.resolvconf import embedded_resolv_conf, upstreams_from_resolv_conf
from cnm.dns.server import Resolver, parse_upstream
from cnm.errors import InvalidParameter

NA, NB = "a" * 64, "b" * 64
CLIENT = "10.0.0.3"


@pytest.fixture
def table() -> NameTable:
    t = NameTable()
    t.add(NA, "neta", "ep-web", "1" * 64, "web", ["frontend"], "10.0.0.2/24", "fd00::2/64")
    t.add(NA, "neta", "ep-cli", "2" * 64, "client", [], "10.0.0.3/24", None)
    t.add(NB, "netb", "ep-db", "3" * 64, "db", [], "10.1.0.4/24", None)
    return t


def ask(table, qname, qtype="A", client=CLIENT, net=NA, **kw):
    q = DNSRecord.question(qname, qtype)
    out = handle(table, q.pack(), client, net, **kw)
    return q, out


def test_answer_is_authoritative_with_ttl(table):
    q, out = ask(table, "web")
    r = DNSRecord.parse(out)
    assert r.header.id == q.header.id and r.header.qr == 1 and r.header.aa == 1 and r.header.ra == 1
    assert r.header.rcode == RCODE.NOERROR
    assert [(str(rr.rdata), rr.ttl, rr.rtype) for rr in r.rr] == [("10.0.0.2", TTL, QTYPE.A)]
    assert str(r.q.qname) == "web."


def test_aaaa_and_case_preserved_in_question(table):
    _, out = ask(table, "WeB.NetA.", "AAAA")
    r = DNSRecord.parse(out)
    assert [str(rr.rdata) for rr in r.rr] == ["fd00::2"]
    assert str(r.rr[0].rname) == "WeB.NetA."


def test_nodata_not_forwarded(table):
    _, out = ask(table, "client", "AAAA")
    r = DNSRecord.parse(out)
    assert r.header.rcode == RCODE.NOERROR and r.rr == [] and r.header.aa == 1


def test_foreign_and_invisible_names_are_forwarded(table):
    q, out = ask(table, "example.org")
    assert isinstance(out, Forward) and out.query == q.pack() and out.qid == q.header.id
    _, out = ask(table, "db")  # on netB, which the client does not share
    assert isinstance(out, Forward)


def test_ptr(table):
    _, out = ask(table, "2.0.0.10.in-addr.arpa", "PTR")
    r = DNSRecord.parse(out)
    assert [str(rr.rdata) for rr in r.rr] == ["web.neta."]
    _, out = ask(table, "9.9.9.10.in-addr.arpa", "PTR")
    assert isinstance(out, Forward)


def test_round_robin_on_the_wire():
    t = NameTable()
    for i in range(2):
        t.add(NA, "neta", f"e{i}", f"{i}" * 64, f"app{i}", ["svc"], f"10.0.0.{10 + i}", None)
    firsts = []
    for _ in range(4):
        _, out = ask(t, "svc", client="10.0.0.10")
        r = DNSRecord.parse(out)
        assert len(r.rr) == 2
        firsts.append(str(r.rr[0].rdata))
    assert firsts == ["10.0.0.10", "10.0.0.11"] * 2


def test_large_answer_truncated_over_udp_full_over_tcp():
    t = NameTable()
    for i in range(100):
        t.add(NA, "neta", f"e{i}", None, f"n{i}", ["many"], f"10.0.{i // 200}.{i % 200 + 1}", None)
    _, out = ask(t, "many", client="10.0.0.1")
    r = DNSRecord.parse(out)
    assert len(out) <= 512 and r.header.tc == 1 and 0 < len(r.rr) < 100
    assert len(out) + 16 > 512  # as many as fit: one more A record (16 bytes) would not
    # EDNS raises the UDP limit (capped at 1232).
    q = DNSRecord.question("many")
    q.add_ar(EDNS0(udp_len=4096))
    out = handle(t, q.pack(), "10.0.0.1", NA)
    r = DNSRecord.parse(out)
    assert 512 < len(out) <= 1232 and r.header.tc == 1
    assert any(rr.rtype == QTYPE.OPT for rr in r.ar)
    _, out = ask(t, "many", client="10.0.0.1", tcp=True)
    r = DNSRecord.parse(out)
    assert r.header.tc == 0 and len(r.rr) == 100


def header(qid=0x1234, qd=1, qr=0, opcode=0) -> bytes:
    return struct.pack("!HHHHHH", qid, (qr << 15) | (opcode << 11) | 0x0100, qd, 0, 0, 0)


def rcode_of(out) -> int:
    return DNSRecord.parse(out).header.rcode


@pytest.mark.parametrize("data", [b"", b"\x12\x34\x01", b"\x00" * 11])
def test_no_header_dropped(table, data):
    assert handle(table, data, CLIENT, NA) is None


def test_responses_are_never_answered(table):
    reply = DNSRecord.question("web").reply().pack()
    assert handle(table, reply, CLIENT, NA) is None
    assert handle(table, header(qr=1) + os.urandom(40), CLIENT, NA) is None


@pytest.mark.parametrize(
    "body",
    [
        b"\x3fabc\x00\x00\x01\x00\x01",  # label longer than the packet
        b"\xc0\x0c\x00\x01\x00\x01",  # compression pointer to itself
        b"\xc0\xff\x00\x01\x00\x01",  # forward pointer
        b"\x03web",  # truncated question
        b"\x03w\xffb\x00\x00\x01\x00\x01",  # non-UTF-8 label
    ],
)
def test_malformed_question_formerr(table, body):
    out = handle(table, header() + body, CLIENT, NA)
    r = DNSRecord.parse(out)
    assert r.header.id == 0x1234 and r.header.qr == 1 and r.header.rcode == RCODE.FORMERR


def test_no_question_formerr(table):
    assert rcode_of(handle(table, header(qd=0), CLIENT, NA)) == RCODE.FORMERR


def test_two_questions_formerr(table):
    q = DNSRecord(DNSHeader(id=7), questions=[DNSQuestion("web"), DNSQuestion("db")])
    assert rcode_of(handle(table, q.pack(), CLIENT, NA)) == RCODE.FORMERR


def test_oversized_formerr(table):
    out = handle(table, header() + b"\x00" * MAX_QUERY, CLIENT, NA)
    assert rcode_of(out) == RCODE.FORMERR


def test_other_opcode_notimp(table):
    q = DNSRecord.question("web")
    q.header.opcode = OPCODE.UPDATE
    assert rcode_of(handle(table, q.pack(), CLIENT, NA)) == RCODE.NOTIMP


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=600), st.binary(max_size=300).map(lambda b: header() + b)))
def test_fuzz_never_raises(data):
    t = NameTable()
    t.add(NA, "neta", "e", None, "web", [], "10.0.0.2", None)
    out = handle(t, data, CLIENT, NA)
    assert out is None or isinstance(out, (bytes, Forward))
    if isinstance(out, bytes):
        assert DNSRecord.parse(out).header.qr == 1


def test_servfail_keeps_question():
    q = DNSRecord.question("example.org")
    r = DNSRecord.parse(servfail(q.pack()))
    assert r.header.rcode == RCODE.SERVFAIL and str(r.q.qname) == "example.org." and r.header.id == q.header.id


# -- upstreams, forwarding order, resolv.conf -----------------------------------------


@pytest.mark.parametrize(
    "text,want",
    [
        ("192.0.2.1", ("192.0.2.1", 53)),
        ("192.0.2.1:5353", ("192.0.2.1", 5353)),
        ("2001:db8::1", ("2001:db8::1", 53)),
        ("[2001:db8::1]:5353", ("2001:db8::1", 5353)),
    ],
)
def test_parse_upstream(text, want):
    assert parse_upstream(text) == want


@pytest.mark.parametrize("text", ["dns.example", "192.0.2.1:0", "[::1]:99999"])
def test_parse_upstream_refuses(text):
    with pytest.raises(InvalidParameter):
        parse_upstream(text)


def test_forward_tries_upstreams_in_order_then_servfails():
    resolver = Resolver(NameTable(), lambda: ["192.0.2.1", "bogus", "192.0.2.2:5353"], upstream_timeout=0.2)
    tried: list[tuple[str, int]] = []
    q = DNSRecord.question("example.org")
    good = q.reply()

    async def exchange(host, port, fwd):
        tried.append((host, port))
        if host == "192.0.2.1":
            raise ConnectionRefusedError
        return good.pack()

    resolver._exchange_udp = exchange
    fwd = Forward(q.pack(), q.header.id, "example.org.", QTYPE.A)
    assert asyncio.run(resolver.forward(fwd, tcp=False)) == good.pack()
    assert tried == [("192.0.2.1", 53), ("192.0.2.2", 5353)]

    async def silent(host, port, fwd):
        await asyncio.sleep(5)

    resolver._exchange_udp = silent
    out = asyncio.run(resolver.forward(fwd, tcp=False))
    assert DNSRecord.parse(out).header.rcode == RCODE.SERVFAIL


def test_own_listeners_are_not_upstreams():
    resolver = Resolver(NameTable(), lambda: ["10.0.0.1", "10.0.0.9"])
    resolver._listeners[(NA, "10.0.0.1")] = object()  # type: ignore[assignment]
    assert resolver.upstream_servers() == [("10.0.0.9", 53)]


def test_threadsafe_wrappers_refuse_the_loop_thread():
    async def main():
        resolver = Resolver(NameTable(), list, asyncio.get_running_loop())
        with pytest.raises(RuntimeError):
            resolver.remove_listener_threadsafe(NA)

    asyncio.run(main())


def test_resolv_conf_texts():
    host = "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.1 # x\nnameserver bad\nsearch corp.example\noptions edns0\n"
    assert upstreams_from_resolv_conf(host) == ["127.0.0.53", "192.0.2.1"]
    text = embedded_resolv_conf(["10.0.0.1/24", "10.1.0.1", "10.0.0.1", "10.2.0.1", "10.3.0.1"], host)
    assert text.splitlines() == [
        "nameserver 10.0.0.1",
        "nameserver 10.1.0.1",
        "nameserver 10.2.0.1",
        "search corp.example",
        "options ndots:0",
    ]
