"""An in-memory `Store` for unit tests and for objects that need no persistence."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from cnm.errors import Conflict
from cnm.store import KV, Delete, Op, Put, WatchEvent
from cnm.store.nesting import NestedTransactions


class MemoryStore(NestedTransactions):
    def __init__(self, scope: str = "local") -> None:
        super().__init__()
        self.scope = scope
        self._data: dict[str, tuple[dict, int]] = {}
        self._rev = 0
        self.commits = 0  # transactions (or lone writes) made durable: tests count them

    def _commit(self) -> None:
        """Writes apply at once here; a block only defers the after-commit steps and
        counts one commit, as cnm.store.sqlite's does."""
        self.commits += 1

    def get(self, key: str) -> KV | None:
        with self._lock:
            item = self._data.get(key)
            return KV(key, item[0], item[1]) if item else None

    def list(self, prefix: str) -> list[KV]:
        with self._lock:
            return [KV(k, v, r) for k, (v, r) in sorted(self._data.items()) if k.startswith(prefix)]

    def put(self, key: str, value: dict) -> int:
        return self.atomic([Put(key, value)])

    def delete(self, key: str) -> bool:
        with self._lock:
            existed = key in self._data
            if existed:
                self.atomic([Delete(key)])
            return existed

    def delete_prefix(self, prefix: str) -> int:
        with self._lock:
            keys = [k for k in self._data if k.startswith(prefix)]
            if keys:
                self.atomic([Delete(k) for k in keys])
            return len(keys)

    def atomic(self, ops: Sequence[Op], expect: Mapping[str, int] | None = None) -> int:
        with self._lock:
            for key, rev in (expect or {}).items():
                current = self._data.get(key, (None, 0))[1]
                if current != rev:
                    raise Conflict(f"store key {key} changed concurrently")
            self._rev += 1
            for op in ops:
                if isinstance(op, Put):
                    self._data[op.key] = (op.value, self._rev)
                else:
                    self._data.pop(op.key, None)
            if not self._depth:
                self.commits += 1
            return self._rev

    def watch(self, prefix: str, callback: Callable[[WatchEvent], None]) -> Callable[[], None]:
        raise NotImplementedError("local stores have one writer, the daemon: nothing to watch")

    def close(self) -> None:
        pass
