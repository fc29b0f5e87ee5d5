"""The store contract: a small key-value interface with transactions.

Local scope is SQLite (`cnm.store.sqlite`), global scope is etcd (multi-host issue);
both implement `Store`. Keys are '/'-separated strings, values are JSON-able dicts.
Each key carries a revision (an int that grows on every write), which makes
compare-and-swap possible; revision 0 means "must not exist".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Protocol, Sequence


@dataclass(frozen=True)
class KV:
    key: str
    value: dict
    revision: int


@dataclass(frozen=True)
class Put:
    key: str
    value: dict


@dataclass(frozen=True)
class Delete:
    key: str


Op = Put | Delete


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "put" or "delete"
    key: str
    value: dict | None


class Store(Protocol):
    """A transactional key-value store. Every method is safe to call from any thread."""

    scope: str  # "local" or "global"

    def get(self, key: str) -> KV | None:
        """The pair at `key`, or None."""

    def list(self, prefix: str) -> list[KV]:
        """Every pair whose key starts with `prefix`, sorted by key."""

    def put(self, key: str, value: dict) -> int:
        """Write unconditionally; returns the new revision. Idempotent."""

    def delete(self, key: str) -> bool:
        """Remove `key`; True if it existed. Idempotent."""

    def delete_prefix(self, prefix: str) -> int:
        """Remove every key under `prefix`; returns how many. Idempotent."""

    def atomic(self, ops: Sequence[Op], expect: Mapping[str, int] | None = None) -> int:
        """Apply all `ops` in one transaction, only if every key in `expect` is at the
        given revision (0 = must not exist). Raises `cnm.errors.Conflict` otherwise and
        changes nothing. Returns the transaction's revision."""

    def watch(self, prefix: str, callback: Callable[[WatchEvent], None]) -> Callable[[], None]:
        """Call `callback` for every later change under `prefix`; returns a cancel
        function. Optional: stores that cannot watch raise NotImplementedError."""

    def close(self) -> None:
        """Release connections and files. Idempotent."""


def put_all(store: Store, pairs: Iterable[tuple[str, dict]]) -> int:
    """Write several pairs in one transaction."""
    return store.atomic([Put(k, v) for k, v in pairs])
