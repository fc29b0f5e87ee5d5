"""Local-scope `Store` in an embedded SQLite file (WAL).

WAL with synchronous=NORMAL survives a SIGKILL of the daemon (every committed
transaction is in the log); only a power cut can lose the last commits. A commit is a
write() to the log, no fsync (those happen at checkpoints): one per API request, as
`transaction()` groups a request's writes.
One connection, guarded by a lock: SQLite serialises writers anyway, and the
daemon's writes are small.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence

from cnm.errors import Conflict, Unavailable
from cnm.statedirs import open_private, tighten_file
from cnm.store import KV, Delete, Op, Put, WatchEvent
from cnm.store.nesting import NestedTransactions

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, revision INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0);
"""


def _prefix_bounds(prefix: str) -> tuple[str, str]:
    # Range scan instead of LIKE so '%' and '_' in keys are not wildcards.
    return prefix, prefix + "\U0010ffff"


def _private_files(path: str) -> None:
    """Make the database 0600 before SQLite opens it: SQLite gives its -wal and -shm
    files the database's mode, and they hold the same secrets (containers' env).
    Never through a symlink; files an older version left 0644 are tightened."""
    try:
        os.close(open_private(path, os.O_RDWR | os.O_CREAT))
    except OSError as exc:
        raise Unavailable(f"cannot open state database {path}: {exc.strerror or exc}") from exc
    for suffix in ("-wal", "-shm", "-journal"):
        tighten_file(path + suffix)


class SQLiteStore(NestedTransactions):
    def __init__(self, path: str, scope: str = "local") -> None:
        super().__init__()
        self.scope = scope
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        _private_files(path)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise Unavailable(f"cannot open state database {path}: {exc}") from exc

    # transaction(), after_commit(): NestedTransactions; the lock is held from BEGIN to COMMIT.
    def _begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self._db.execute("COMMIT")

    def get(self, key: str) -> KV | None:
        with self._lock:
            row = self._db.execute("SELECT value, revision FROM kv WHERE key=?", (key,)).fetchone()
        return KV(key, json.loads(row[0]), row[1]) if row else None

    def list(self, prefix: str) -> list[KV]:
        lo, hi = _prefix_bounds(prefix)
        with self._lock:
            rows = self._db.execute(
                "SELECT key, value, revision FROM kv WHERE key >= ? AND key < ? ORDER BY key", (lo, hi)
            ).fetchall()
        return [KV(k, json.loads(v), r) for k, v, r in rows]

    def put(self, key: str, value: dict) -> int:
        return self.atomic([Put(key, value)])

    def delete(self, key: str) -> bool:
        with self._lock:
            if self.get(key) is None:
                return False
            self.atomic([Delete(key)])
            return True

    def delete_prefix(self, prefix: str) -> int:
        with self._lock:
            keys = [kv.key for kv in self.list(prefix)]
            if keys:
                self.atomic([Delete(k) for k in keys])
            return len(keys)

    def atomic(self, ops: Sequence[Op], expect: Mapping[str, int] | None = None) -> int:
        with self._lock:
            db = self._db
            # Inside a transaction block: a savepoint, so that this call is still all
            # or nothing; the block's COMMIT makes it durable.
            begin, commit, rollback = (
                ("SAVEPOINT atomic", "RELEASE atomic", ("ROLLBACK TO atomic", "RELEASE atomic"))
                if self._depth
                else ("BEGIN IMMEDIATE", "COMMIT", ("ROLLBACK",))
            )
            db.execute(begin)
            try:
                for key, rev in (expect or {}).items():
                    row = db.execute("SELECT revision FROM kv WHERE key=?", (key,)).fetchone()
                    if (row[0] if row else 0) != rev:
                        raise Conflict(f"store key {key} changed concurrently")
                db.execute("UPDATE meta SET value = value + 1 WHERE name='revision'")
                rev = db.execute("SELECT value FROM meta WHERE name='revision'").fetchone()[0]
                for op in ops:
                    if isinstance(op, Put):
                        db.execute(
                            "INSERT INTO kv(key, value, revision) VALUES (?, ?, ?) "
                            "ON CONFLICT(key) DO UPDATE SET value=excluded.value, revision=excluded.revision",
                            (op.key, json.dumps(op.value, separators=(",", ":")), rev),
                        )
                    else:
                        db.execute("DELETE FROM kv WHERE key=?", (op.key,))
                db.execute(commit)
            except BaseException:
                for statement in rollback:
                    db.execute(statement)
                raise
        return rev

    def watch(self, prefix: str, callback: Callable[[WatchEvent], None]) -> Callable[[], None]:
        raise NotImplementedError("local stores have one writer, the daemon: nothing to watch")

    def close(self) -> None:
        with self._lock:
            self._db.close()
