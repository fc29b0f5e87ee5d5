"""The store contract: a small key-value interface with transactions.

Local scope is SQLite (`cnm.store.sqlite`), global scope is etcd (multi-host issue);
both implement `Store`. Keys are '/'-separated strings, values are JSON-able dicts.
Each key carries a revision (an int that grows on every write), which makes
compare-and-swap possible; revision 0 means "must not exist".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol


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

    def transaction(self) -> AbstractContextManager[None]:
        """Every write made on this thread inside the block is committed at its end,
        as one transaction (nested blocks join the outermost). The writes stay what
        they are — each call still checks its `expect` and changes nothing when it
        fails — and are committed even when the block raises (undo steps written in
        the block are writes like the others): what is saved is what the block left;
        a crash loses the whole block, never a part of it. Other threads' reads and
        writes wait for the commit, so open a transaction only while holding the one
        lock the daemon's mutations take (the controller's), never the other way round.
        A store that commits each write at once (etcd) makes this a no-op."""

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Call `fn()` once the open transaction of this thread has committed (at once
        when none is open): for steps that must not happen before their record is
        saved, such as taking a deleted endpoint's veth out of use. Steps must not
        raise (a failure is logged)."""

    def close(self) -> None:
        """Release connections and files. Idempotent."""


def run_after_commit(steps: Sequence[Callable[[], None]]) -> None:
    """Run after-commit steps in order; one that fails is logged, not raised: they are
    teardown that must not be lost for an earlier one's failure (nor hide the error a
    failed transaction block raises)."""
    for step in steps:
        try:
            step()
        except Exception:
            logging.getLogger(__name__).exception("after a store commit")


def put_all(store: Store, pairs: Iterable[tuple[str, dict]]) -> int:
    """Write several pairs in one transaction."""
    return store.atomic([Put(k, v) for k, v in pairs])
