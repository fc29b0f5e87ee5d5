"""Replies already built, reused for repeated queries: the resolver's fast path.

Parsing a query and packing its answer with dnslib costs ~100 µs; a container asks the
same few names over and over, in byte-identical queries but for the 2-byte ID. So the
resolver keeps each reply it built for its own names (cnm.dns.handler.Local; never
forwarded answers or errors) under the query's bytes after the ID, and answers a
repeat with the stored reply, its ID patched to the query's: a dict lookup.

What an answer depends on, and how the cache follows it:
  * the question, the RD bit, EDNS (hence the UDP size limit): all in the query bytes,
    so in the key (a client varying them just makes other entries);
  * who asks: the client's view, i.e. the listener's network and the networks the
    client's container is on (NameTable.networks_of). Clients with the same view share
    entries; the client address -> view map is built as queries come;
  * the name table: any change bumps NameTable.generation and the whole cache goes
    (changes are rare next to queries; the next query of each kind rebuilds its entry);
  * round robin: a name with n addresses answers in n orders. Its entry keeps the n
    replies (built on first need, with NameTable.lookup's `turn`) and advances the
    table's own rotation counter, so rotation is what the slow path does.
Single-threaded: the resolver uses it on its event loop only. Bounded: past
MAX_REPLIES stored replies, the cache starts again empty.
"""

from __future__ import annotations

from collections.abc import Callable

from cnm.dns.handler import Local, decide
from cnm.dns.records import NameTable

MAX_REPLIES = 16384


class _Rotating:
    """The n replies of a round-robin answer, built as each turn first comes up."""

    __slots__ = ("replies", "next_turn", "build")

    def __init__(self, n: int, next_turn: Callable[[], int], build: Callable[[int], bytearray | None]) -> None:
        self.replies: list[bytearray | None] = [None] * n
        self.next_turn = next_turn
        self.build = build

    def take(self) -> bytearray | None:
        turn = self.next_turn() % len(self.replies)
        reply = self.replies[turn]
        if reply is None:
            reply = self.replies[turn] = self.build(turn)
        return reply


class ReplyCache:
    def __init__(self, table: NameTable, max_replies: int = MAX_REPLIES) -> None:
        self.table = table
        self.max_replies = max_replies
        self._generation = -1
        # listener network -> client address -> that client's view's replies
        self._clients: dict[str | None, dict[str, dict[bytes, bytearray | _Rotating]]] = {}
        self._views: dict[tuple[str | None, tuple[str, ...]], dict[bytes, bytearray | _Rotating]] = {}
        self._stored = 0
        self.hits = 0

    def __len__(self) -> int:
        return self._stored

    def clear(self) -> None:
        self._clients, self._views, self._stored = {}, {}, 0
        self._generation = self.table.generation

    def get(self, data: bytes, client_ip: str, listener: str | None) -> bytearray | None:
        """The reply to `data` when an identical query was answered for this view
        since the table last changed; None: ask the slow path (then put()). The reply
        is a buffer of the cache's own, valid until the next call: send it at once."""
        if self.table.generation != self._generation:
            self.clear()
            return None
        try:
            stored = self._clients[listener][client_ip][data[2:]]
        except KeyError:
            return None
        reply = stored if isinstance(stored, bytearray) else stored.take()
        if reply is None:
            return None
        # The stored reply carries the ID of the query it was built for: patch it in
        # place (no copy; the resolver sends it before asking again).
        reply[0] = data[0]
        reply[1] = data[1]
        self.hits += 1
        return reply

    def put(self, data: bytes, client_ip: str, listener: str | None, local: Local, generation: int) -> None:
        """Keep `local`, the slow path's reply to `data`, computed while the table was
        at `generation` (not kept if it changed since: the reply may be stale)."""
        table = self.table
        if generation != table.generation:
            return
        if generation != self._generation or self._stored >= self.max_replies:
            self.clear()
        n, next_turn = table.rotation(client_ip, listener, local.qname, local.qtype)
        if n == 0 or generation != table.generation:
            return
        view = (listener, tuple(table.networks_of(client_ip, listener)))
        replies = self._views.get(view)
        if replies is None:
            replies = self._views[view] = {}
        self._clients.setdefault(listener, {})[client_ip] = replies
        key = data[2:]
        if n == 1 or next_turn is None:
            replies[key] = bytearray(local.reply)
            self._stored += 1
            return

        def build(turn: int) -> bytearray | None:
            out = decide(table, data, client_ip, listener, turn=turn)
            if not isinstance(out, Local):
                return None
            self._stored += 1
            return bytearray(out.reply)

        replies[key] = _Rotating(n, next_turn, build)
