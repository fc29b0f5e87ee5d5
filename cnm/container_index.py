"""The daemon's containers in memory: records by ID, name and ID prefix, and the last
known state of each one's process.

Looking a container up, checking a name is free, or listing every container's state
reads no file and scans nothing: with thousands of containers each `net run`, `rm` or
`inspect` would otherwise pay for all of them. States are fed by the container
service's own changes and by the exit watcher (a process that ends is noticed within
milliseconds); a query may see a container as running for those milliseconds after
its exit, as Docker's do. The service's lock guards it.

It is also where every change of a container is recorded (`changed`: the service's
records, states, names, the set of containers; a network that comes or goes changes
them all), so what listings render from a container (`rendered`) is dropped here, in
one place, and `version` tells a listing whether anything changed since its last look.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, KeysView
from typing import Any, Protocol

from cnm.container_record import Container
from cnm.errors import InvalidParameter, NotFound
from cnm.runtime.state import ContainerState


class StateSource(Protocol):
    def state(self, cid: str) -> ContainerState: ...


class ContainerIndex:
    def __init__(self, runtime: StateSource, lock: threading.RLock) -> None:
        self._runtime = runtime
        self._lock = lock
        self.by_id: dict[str, Container] = {}
        self._by_name: dict[str, str] = {}
        self._ids: list[str] = []  # sorted: prefix lookups by bisection
        self._states: dict[str, ContainerState | None] = {}  # None: the runtime has none (created)
        self._rendered: dict[str, dict[Any, Any]] = {}
        self.version = 0  # counts changes of containers (and of the set of them)

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[Container]:
        return iter(self.by_id.values())

    def names(self) -> KeysView[str]:
        return self._by_name.keys()

    def add(self, ct: Container) -> None:
        if ct.id not in self.by_id:
            bisect.insort(self._ids, ct.id)
        self.by_id[ct.id] = ct
        self._by_name[ct.name] = ct.id
        self.changed(ct.id)

    def drop(self, ct: Container) -> None:
        if self.by_id.pop(ct.id, None) is None:
            return
        if self._by_name.get(ct.name) == ct.id:
            del self._by_name[ct.name]
        i = bisect.bisect_left(self._ids, ct.id)
        if i < len(self._ids) and self._ids[i] == ct.id:
            del self._ids[i]
        self._states.pop(ct.id, None)
        self.changed(ct.id)

    def renamed(self, ct: Container, old: str) -> None:
        if self._by_name.get(old) == ct.id:
            del self._by_name[old]
        self._by_name[ct.name] = ct.id
        self.changed(ct.id)

    def get(self, ref: str) -> Container:
        """By exact name, full ID, or unique ID prefix (Docker's order)."""
        if not ref:
            raise InvalidParameter("container name or ID must not be empty")
        ref = ref.lstrip("/")
        cid = self._by_name.get(ref)
        if cid is not None:
            return self.by_id[cid]
        if ref in self.by_id:
            return self.by_id[ref]
        prefix = ref.lower()
        i = bisect.bisect_left(self._ids, prefix)
        found = [cid for cid in self._ids[i : i + 2] if cid.startswith(prefix)]
        if len(found) == 1:
            return self.by_id[found[0]]
        if found:
            many = bisect.bisect_left(self._ids, prefix + "\x7f") - i
            raise InvalidParameter(f"container ID prefix {ref} is ambiguous: {many} containers match")
        raise NotFound(f"no such container: {ref}")

    # -- process states ------------------------------------------------------------------

    def state_of(self, cid: str) -> ContainerState | None:
        """As last known: no file read. None: the runtime has no such container
        (created, never started)."""
        if cid in self._states:
            return self._states[cid]
        return self.refresh(cid)

    def refresh(self, cid: str) -> ContainerState | None:
        """The state read from the runtime now, and kept. Read under the lock too: read
        outside it, a caller that does not hold it (stop, kill) could keep a state older
        than the one a start made meanwhile ("exited" over "running")."""
        with self._lock:
            try:
                st: ContainerState | None = self._runtime.state(cid)
            except NotFound:
                st = None
            self.set_state(cid, st)
            return st

    def set_state(self, cid: str, st: ContainerState | None) -> None:
        """What the runtime says now (None: it has no such container)."""
        with self._lock:
            if cid in self.by_id and (cid not in self._states or self._states[cid] != st):
                self._states[cid] = st
                self.changed(cid)

    # -- what listings render from containers ------------------------------------------

    def changed(self, cid: str | None = None) -> None:
        """Container `cid` changed (its record, state or name; None: all of them, as when
        a network comes or goes): what was rendered from it is stale."""
        with self._lock:
            self.version += 1
            if cid is None:
                self._rendered.clear()
            else:
                self._rendered.pop(cid, None)

    def rendered(self, cid: str) -> dict[Any, Any]:
        """What listings rendered from container `cid`, theirs to fill (under the lock);
        emptied at its next change."""
        found = self._rendered.get(cid)
        if found is None:
            found = self._rendered[cid] = {}
        return found
