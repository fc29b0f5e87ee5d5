"""One DNS query in, one decision out: a reply to send, a query to forward, or nothing.

No sockets and no event loop, so every wire-level rule is unit-testable with
dnslib-built packets. dnslib does all parsing and packing; this module only decides.

Rules:
- fewer than 12 bytes (no header to answer to), or a response (QR set: never answer
  answers, that is how reflection loops start) -> dropped;
- larger than MAX_QUERY, unparsable, or not exactly one question -> FORMERR;
- opcode other than QUERY -> NOTIMP;
- a name of ours -> authoritative answer (AA), TTL 600 as Docker; NODATA (NOERROR, no
  answers) when the name is ours but has no record of the asked type;
- anything else -> Forward (relayed unchanged to the upstream resolvers).
Replies over UDP are cut to the client's size (512, or its EDNS size up to 1232) with
TC set, so the client retries over TCP, where the full answer fits.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnslib import AAAA, EDNS0, OPCODE, PTR, QTYPE, RCODE, RR, A, DNSHeader, DNSRecord
from dnslib.buffer import Buffer

from cnm.dns.records import NameTable, reverse_name_to_ip

TTL = 600
CLASS_IN, CLASS_ANY = 1, 255  # dnslib names ANY '*', so spell the numbers
MAX_QUERY = 4096  # a DNS query is a few dozen bytes; anything this big is abuse
UDP_DEFAULT = 512
UDP_CEILING = 1232  # the DNS flag day 2020 size: no IP fragmentation in practice
TCP_MAX = 65535

_RDATA = {"A": (QTYPE.A, A), "AAAA": (QTYPE.AAAA, AAAA), "PTR": (QTYPE.PTR, PTR)}


@dataclass(frozen=True)
class Local:
    """Our own answer to a well-formed query: `reply`, plus what a cache of replies
    needs to reuse it for the same query bytes (cnm.dns.fastpath): the normalised
    name and type asked."""

    reply: bytes
    qname: str
    qtype: str


@dataclass(frozen=True)
class Forward:
    """Not ours: relay `query` (the client's bytes, unchanged) upstream."""

    query: bytes
    qid: int
    qname: str
    qtype: int


def error_reply(data: bytes, rcode: int) -> bytes | None:
    """A header-only reply carrying the query's ID and opcode; None if there is no
    header or the packet is itself a response."""
    try:
        header = DNSHeader.parse(Buffer(data[:12]))
    except Exception:
        return None
    if header.qr:
        return None
    reply = DNSHeader(id=header.id, qr=1, opcode=header.opcode, rd=header.rd, ra=1, rcode=rcode)
    return bytes(DNSRecord(reply).pack())


def servfail(data: bytes) -> bytes | None:
    """SERVFAIL for a query we could not forward; keeps the question when it parses."""
    try:
        query = DNSRecord.parse(data)
        reply = query.reply(aa=0)
        reply.header.rcode = RCODE.SERVFAIL
        return bytes(reply.pack())
    except Exception:
        return error_reply(data, RCODE.SERVFAIL)


def udp_limit(query: DNSRecord) -> int:
    for rr in query.ar:
        if rr.rtype == QTYPE.OPT:
            return max(UDP_DEFAULT, min(rr.rclass, UDP_CEILING))
    return UDP_DEFAULT


def handle(
    table: NameTable, data: bytes, client_ip: str, listener_network_id: str | None, *, tcp: bool = False
) -> bytes | Forward | None:
    """Decide what to do with one query (see the module docstring)."""
    out = decide(table, data, client_ip, listener_network_id, tcp=tcp)
    return out.reply if isinstance(out, Local) else out


def decide(
    table: NameTable,
    data: bytes,
    client_ip: str,
    listener_network_id: str | None,
    *,
    tcp: bool = False,
    turn: int | None = None,
) -> bytes | Local | Forward | None:
    """handle(), telling our own answers (Local) apart from error replies (bytes);
    `turn` builds the answer for that round-robin position (NameTable.lookup)."""
    if len(data) < 12:
        return None
    if len(data) > MAX_QUERY:
        return error_reply(data, RCODE.FORMERR)
    try:
        query = DNSRecord.parse(data)
    except Exception:  # dnslib raises DNSError, but a hostile packet may find others
        return error_reply(data, RCODE.FORMERR)
    if query.header.qr:
        return None
    if query.header.opcode != OPCODE.QUERY:
        return error_reply(data, RCODE.NOTIMP)
    if len(query.questions) != 1:
        return error_reply(data, RCODE.FORMERR)
    q = query.questions[0]
    qname = str(q.qname)
    qtype = QTYPE.get(q.qtype, str(q.qtype))
    if q.qclass not in (CLASS_IN, CLASS_ANY):
        return Forward(data, query.header.id, qname, q.qtype)
    if q.qtype == QTYPE.PTR and reverse_name_to_ip(qname) is not None:
        answers = table.ptr(client_ip, listener_network_id, qname)
    else:
        answers = table.lookup(client_ip, listener_network_id, qname, qtype, turn=turn)
    if answers is None:
        return Forward(data, query.header.id, qname, q.qtype)
    limit = TCP_MAX if tcp else udp_limit(query)
    # Never build more records than could fit (16 bytes is the smallest, an A record
    # behind a name pointer): a 1,000-member alias must not cost 1,000 objects per query.
    cap = limit // 16 + 1
    rrs = []
    for ans in answers[:cap]:
        code, rdata = _RDATA[ans.rtype]
        rrs.append(RR(q.qname, code, rdata=rdata(ans.value), ttl=TTL))
    opt = [EDNS0(udp_len=UDP_CEILING)] if any(rr.rtype == QTYPE.OPT for rr in query.ar) else []
    header = DNSHeader(id=query.header.id, bitmap=query.header.bitmap, qr=1, aa=1, ra=1, tc=0, rcode=0)
    reply = DNSRecord(header, questions=list(query.questions), rr=rrs, ar=opt)
    return Local(_fit(reply, limit, dropped=len(answers) > cap), qname, str(qtype))


def _fit(reply: DNSRecord, limit: int, *, dropped: bool = False) -> bytes:
    """Pack, keeping as many leading answers as fit `limit` and setting TC if any had to
    go. Packing is dnslib's slow part, so the count is estimated from the size of one
    answer (A/AAAA answers all pack to the same size behind a compressed name) and then
    checked, rather than searched for."""
    answers = reply.rr

    def pack(n: int) -> bytes:
        return bytes(DNSRecord(reply.header, reply.questions, answers[:n], ar=reply.ar).pack())

    if dropped:
        reply.header.tc = 1
    if len(answers) <= 1:
        packed = pack(len(answers))
        if len(packed) <= limit:
            return packed
        n, base, per = 0, 0, 1
    else:
        base, one = len(pack(0)), len(pack(1))
        per = max(1, one - base)
        n = min(len(answers), max(0, (limit - base) // per))
    while True:
        if n < len(answers):
            reply.header.tc = 1
        packed = pack(n)
        if len(packed) <= limit or n == 0:
            return packed
        n -= 1
