"""Write-ahead intents: what a multi-step operation is about to do, in the store first.

An operation that makes kernel objects (or other state) before the record that owns
them, or deletes a record before its kernel objects, writes an intent naming what it
touches before its first side effect, and removes it in the same transaction as its
final record write (`done_op`). A crash in between leaves the intent in the store; at
the next start the owner of the operation finishes it — rolls a create back, a delete
forward — so nothing half-made stays, and nothing is touched that we never recorded.

    intent/<kind>/<id>   {"kind", "id", "data": {...}}

One store write (~20 µs on the local SQLite store) per intent and per update; the
removal rides along with the operation's commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cnm.store import Delete, Store

INTENT_PREFIX = "intent/"

NETWORK_CREATE = "network-create"
NETWORK_DELETE = "network-delete"
CONTAINER_REMOVE = "container-remove"


@dataclass(frozen=True)
class Intent:
    kind: str
    id: str
    data: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return intent_key(self.kind, self.id)


def intent_key(kind: str, id_: str) -> str:
    return f"{INTENT_PREFIX}{kind}/{id_}"


class Intents:
    """The intents of one store (the daemon's local one)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def write(self, kind: str, id_: str, data: dict | None = None) -> Intent:
        """Record (or update) an intent. Call before the step it protects."""
        intent = Intent(kind, id_, dict(data or {}))
        self.store.put(intent.key, {"kind": kind, "id": id_, "data": intent.data})
        return intent

    @staticmethod
    def done_op(kind: str, id_: str) -> Delete:
        """The delete to put in the operation's final transaction."""
        return Delete(intent_key(kind, id_))

    def done(self, kind: str, id_: str) -> None:
        """Remove the intent on its own (a rollback, or no final transaction). Idempotent."""
        self.store.delete(intent_key(kind, id_))

    def pending(self, kind: str | None = None) -> list[Intent]:
        """Intents a previous life left, oldest operation kinds first by key."""
        prefix = INTENT_PREFIX + (f"{kind}/" if kind else "")
        out = []
        for kv in self.store.list(prefix):
            v = kv.value
            if isinstance(v, dict) and isinstance(v.get("kind"), str) and isinstance(v.get("id"), str):
                out.append(Intent(v["kind"], v["id"], dict(v.get("data") or {})))
        return out
