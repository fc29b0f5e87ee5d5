"""etcd watch streams, many on one thread: the watch side of `cnm.store.etcd.EtcdStore`.

A watch is one HTTP stream: etcd's grpc-gateway turns each POST /v3/watch into a gRPC
watch, and over HTTP/1.1 one request cannot carry several. A host that watches one
prefix per network it is on would need a blocked thread (and a connection pool) per
network; instead a WatchHub reads every stream of its stores on one asyncio loop
thread and calls the callbacks from one delivery thread, so a host's watch cost is two
threads whatever it watches, and a process simulating hundreds of hosts can share one
hub among their stores.

Semantics (what EtcdStore.watch promises):
  * events of one watch reach its callback in revision order, each once; a stream that
    breaks resumes where it stopped (WatchCursor), on the next endpoint after a pause;
  * when history is lost (compacted, or the store went back in time) the watch reads
    the current revision, calls `resync()` (the owner relists) and continues from
    there; events after that revision may repeat what the listing showed, none are
    lost. A failing resync is retried;
  * callbacks of all watches of a hub run one at a time, on the delivery thread: a
    slow callback delays the others' events, never loses them;
  * stopping a watch (Watch.stop via cancel()) returns once no callback of it runs or
    will run — so never call it while holding a lock that watch's callback takes.
The hub's threads start with its first watch and end with its last.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from cnm.errors import CNMError, Unavailable
from cnm.store import WatchEvent

log = logging.getLogger("cnm.store.etcd")

WATCH_IDLE_TIMEOUT = 30.0  # reconnect a watch stream silent for this long
# A member behind our cursor is usually a follower catching up; only one that stays
# behind this long (every member: the store was restored from a backup) means a resync.
BEHIND_GRACE = 10.0
API_PATH = "/v3/"


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def prefix_end(prefix: str | bytes) -> bytes:
    """etcd's range_end for 'every key starting with prefix': the prefix with its last
    byte incremented (trailing 0xff bytes dropped); b'\\0' = to the end of the keyspace."""
    raw = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"


@dataclass
class WatchCursor:
    """Where a watch stream resumes, so a reconnect neither loses nor repeats events.

    `rev` is the highest revision delivered; `seen` the keys delivered at `rev` (one
    revision's events may be split across responses, so a resumed stream starts AT
    `rev` and skips what was seen); `complete` = nothing of `rev` is left to deliver.
    Progress reports do not move the cursor (they only keep idle streams alive): on
    etcd 3.4.23 they can run ahead of the events (etcd issues 15220, 20221), and
    events older than the requested start are dropped here too."""

    rev: int = 0
    seen: set[str] = field(default_factory=set)
    complete: bool = True

    @classmethod
    def starting_at(cls, start_revision: int) -> WatchCursor:
        return cls(rev=start_revision - 1, complete=True)

    @property
    def start_revision(self) -> int:
        return self.rev + 1 if self.complete else self.rev

    def accept(self, rev: int, key: str) -> bool:
        """True if the event is new (and records it); False for a replayed one."""
        if rev < self.rev or (rev == self.rev and (self.complete or key in self.seen)):
            return False
        if rev > self.rev:
            self.rev, self.seen, self.complete = rev, set(), False
        self.seen.add(key)
        return True


def event_of(raw: Mapping[str, Any], strip: int) -> tuple[int, str, WatchEvent]:
    """(mod revision, full key, event with the key relative to the store's prefix)."""
    kv = raw["kv"]
    full = base64.b64decode(kv.get("key") or "").decode()
    rel = full[strip:]
    rev = int(kv.get("mod_revision", 0))
    if raw.get("type") == "DELETE":
        return rev, full, WatchEvent("delete", rel, None)
    value = base64.b64decode(kv.get("value") or "")
    try:
        return rev, full, WatchEvent("put", rel, json.loads(value) if value else None)
    except ValueError:
        log.warning("cluster store key %s does not hold JSON; delivering it with value None", full)
        return rev, full, WatchEvent("put", rel, None)


class Watch:
    """One prefix watched for one store: its stream state (loop thread only) and
    its callbacks (delivery thread only)."""

    def __init__(
        self,
        endpoints: list[str],
        store_prefix: str,
        full_prefix: str,
        timeout: float,
        callback: Callable[[WatchEvent], None],
        resync: Callable[[], None] | None,
        cursor: WatchCursor | None,
    ) -> None:
        self.endpoints = endpoints
        self.store_prefix = store_prefix
        self.full_prefix = full_prefix
        self.timeout = timeout
        self.callback = callback
        self.resync = resync
        self.cursor = cursor
        self.why = "etcd did not answer when the watch began"
        self.stopped = threading.Event()
        self.finished = threading.Event()
        self.callback_lock = threading.RLock()
        self._idx = 0
        self._behind_since: float | None = None
        self._resp: aiohttp.ClientResponse | None = None
        self._future: Any = None  # the concurrent future of run()

    # --- loop thread -----------------------------------------------------------------

    async def run(self, hub: WatchHub) -> None:
        backoff = 0.1
        try:
            while not self.stopped.is_set():
                try:
                    if self.cursor is None:
                        await self._resync(hub)
                    if await self._stream(hub):
                        backoff = 0.1  # got at least one answer
                except CNMError as exc:
                    log.info("watch %s: %s", self.full_prefix, exc)
                except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
                    if not self.stopped.is_set():
                        log.info(
                            "watch %s on %s: %s; reconnecting",
                            self.full_prefix,
                            self.endpoints[self._idx],
                            type(exc).__name__,
                        )
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug: keep the watch alive, say so loudly
                    log.exception("watch %s failed; reconnecting", self.full_prefix)
                if self.stopped.is_set():
                    return
                self._idx = (self._idx + 1) % len(self.endpoints)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        finally:
            self.finished.set()

    async def _resync(self, hub: WatchHub) -> None:
        rev = await hub.revision(self)  # raises Unavailable while etcd is down
        log.warning("watch %s: %s; resyncing at revision %d", self.full_prefix, self.why, rev)
        self.cursor = WatchCursor.starting_at(rev + 1)
        # Queued before any event of the new stream: the owner relists first.
        hub.deliver(self, "resync", None)

    def resync_failed(self) -> None:
        """The owner's relisting failed (etcd went away again): do it over."""
        if self.cursor is not None:
            self.cursor = None
            self.why = "the last resync failed"
            self._abort()

    def _abort(self) -> None:
        resp = self._resp
        if resp is not None:
            resp.close()

    async def _stream(self, hub: WatchHub) -> bool:
        """Read one watch stream until it ends. True if the stream was established."""
        assert self.cursor is not None
        create = {
            "key": _b64(self.full_prefix),
            "range_end": _b64(prefix_end(self.full_prefix)),
            "start_revision": str(self.cursor.start_revision),
            "progress_notify": True,
        }
        url = self.endpoints[self._idx].rstrip("/") + API_PATH + "watch"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(1.0, self.timeout), sock_read=WATCH_IDLE_TIMEOUT)
        # hasleader: a member cut off from the leader ends the stream instead of going
        # silent, so the watch moves to a member that still gets the cluster's news.
        async with hub.session().post(
            url, json={"create_request": create}, timeout=timeout, headers={"Grpc-Metadata-hasleader": "true"}
        ) as resp:
            if resp.status != 200:
                raise Unavailable(f"watch refused by {self.endpoints[self._idx]}: HTTP {resp.status}")
            self._resp = resp
            try:
                established = False
                tail = b""
                async for chunk in resp.content.iter_any():
                    lines = (tail + chunk).split(b"\n")
                    tail = lines.pop()
                    for line in lines:
                        if line.strip():
                            if not self._handle(json.loads(line), hub):
                                return established
                            established = True
                return established
            finally:
                self._resp = None

    def _handle(self, msg: Mapping[str, Any], hub: WatchHub) -> bool:
        """Process one stream message; False = end this stream (and reconnect)."""
        if "error" in msg:
            raise Unavailable(f"watch stream error: {msg['error'].get('message', msg['error'])}")
        result = msg.get("result") or {}
        assert self.cursor is not None
        header_rev = int((result.get("header") or {}).get("revision", 0))
        if result.get("canceled"):
            compacted = int(result.get("compact_revision", 0))
            if compacted:
                self.cursor, self.why = None, f"history before revision {compacted} was compacted"
                return False
            raise Unavailable(f"watch canceled by etcd: {result.get('cancel_reason', 'no reason given')}")
        if result.get("created"):
            if header_rev and header_rev < self.cursor.rev:
                now = time.monotonic()
                if self._behind_since is None:
                    self._behind_since = now
                if now - self._behind_since < BEHIND_GRACE:
                    log.info(
                        "watch %s: %s is at revision %d, behind ours (%d); trying again",
                        self.full_prefix,
                        self.endpoints[self._idx],
                        header_rev,
                        self.cursor.rev,
                    )
                    return False
                self.why = f"store revision went back from {self.cursor.rev} to {header_rev}"
                self.cursor, self._behind_since = None, None
                return False
            self._behind_since = None
            return True
        strip = len(self.store_prefix)
        for raw in result.get("events") or ():
            rev, full, event = event_of(raw, strip)
            if self.stopped.is_set():
                return False
            if self.cursor.accept(rev, full):
                hub.deliver(self, "event", event)
        return True

    # --- delivery thread -------------------------------------------------------------

    def dispatch(self, kind: str, event: WatchEvent | None, hub: WatchHub) -> None:
        with self.callback_lock:
            if self.stopped.is_set():
                return
            if kind == "event":
                assert event is not None
                try:
                    self.callback(event)
                except Exception:
                    log.exception("watch %s: callback failed on %s %s", self.full_prefix, event.kind, event.key)
                return
            if self.resync is None:
                log.warning("watch %s: events were lost and nobody resyncs", self.full_prefix)
                return
            try:
                self.resync()
            except Exception as exc:
                level = logging.INFO if isinstance(exc, CNMError) else logging.ERROR
                log.log(
                    level,
                    "watch %s: resync failed (%s); retrying",
                    self.full_prefix,
                    exc,
                    exc_info=not isinstance(exc, CNMError),
                )
                hub.call_soon(self.resync_failed)


class WatchHub:
    """The threads that run watches: one asyncio loop reading every stream, one
    thread calling back. Shared by any number of EtcdStores; thread-safe."""

    def __init__(self, name: str = "etcd-watch") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._watches: set[Watch] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue[tuple[Watch, str, WatchEvent | None] | None] | None = None
        self._threads: tuple[threading.Thread, threading.Thread] | None = None
        self._session: aiohttp.ClientSession | None = None

    def add(self, watch: Watch) -> None:
        with self._lock:
            if self._loop is None:
                self._start_locked()
            assert self._loop is not None
            self._watches.add(watch)
            watch._future = asyncio.run_coroutine_threadsafe(watch.run(self), self._loop)

    def remove(self, watch: Watch, timeout: float = 5.0) -> None:
        """Stop `watch`; see the module docstring. Idempotent."""
        watch.stopped.set()
        with self._lock:
            loop, threads = self._loop, self._threads
            if watch not in self._watches:
                return
        here = threading.current_thread()
        if loop is not None and watch._future is not None:
            watch._future.cancel()
            if threads is None or here is not threads[0]:
                watch.finished.wait(timeout)
        with watch.callback_lock:  # an in-flight callback of this watch is over
            pass
        with self._lock:
            self._watches.discard(watch)
            if self._watches or self._loop is not loop:
                return
            stopping = self._stop_locked()
        self._join(stopping)

    def close(self) -> None:
        """Stop every watch of every store using this hub."""
        with self._lock:
            watches = list(self._watches)
        for w in watches:
            self.remove(w)

    @property
    def watches(self) -> int:
        with self._lock:
            return len(self._watches)

    # --- the threads ------------------------------------------------------------------

    def _start_locked(self) -> None:
        loop = asyncio.new_event_loop()
        q: queue.SimpleQueue[tuple[Watch, str, WatchEvent | None] | None] = queue.SimpleQueue()
        io = threading.Thread(target=self._run_loop, args=(loop,), name=f"{self.name} io", daemon=True)
        deliver = threading.Thread(target=self._deliver_loop, args=(q,), name=f"{self.name} callbacks", daemon=True)
        self._loop, self._queue, self._threads = loop, q, (io, deliver)
        io.start()
        deliver.start()

    def _stop_locked(self) -> tuple[asyncio.AbstractEventLoop, threading.Thread, threading.Thread] | None:
        if self._loop is None or self._threads is None or self._queue is None:
            return None
        loop, (io, deliver), q = self._loop, self._threads, self._queue
        self._loop = self._queue = self._threads = None
        q.put(None)
        session, self._session = self._session, None

        async def shut() -> None:
            if session is not None:
                await session.close()
            loop.stop()

        asyncio.run_coroutine_threadsafe(shut(), loop)
        return loop, io, deliver

    @staticmethod
    def _join(stopping: tuple[asyncio.AbstractEventLoop, threading.Thread, threading.Thread] | None) -> None:
        if stopping is None:
            return
        _, io, deliver = stopping
        here = threading.current_thread()
        for t in (io, deliver):
            if t is not here:
                t.join(5)

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    def _deliver_loop(self, q: queue.SimpleQueue[tuple[Watch, str, WatchEvent | None] | None]) -> None:
        while True:
            item = q.get()
            if item is None:
                return
            watch, kind, event = item
            watch.dispatch(kind, event, self)

    # --- used by watches, on the loop thread --------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No connection limit: each stream holds one for its whole life.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self._session

    def deliver(self, watch: Watch, kind: str, event: WatchEvent | None) -> None:
        q = self._queue
        if q is not None:
            q.put((watch, kind, event))

    def call_soon(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(fn)

    async def revision(self, watch: Watch) -> int:
        """The cluster's current revision, from the first member that answers."""
        reasons = []
        timeout = aiohttp.ClientTimeout(total=watch.timeout)
        body = {"key": _b64(watch.store_prefix), "count_only": True}
        for i in range(len(watch.endpoints)):
            endpoint = watch.endpoints[(watch._idx + i) % len(watch.endpoints)]
            try:
                async with self.session().post(
                    endpoint.rstrip("/") + API_PATH + "kv/range", json=body, timeout=timeout
                ) as resp:
                    data = await resp.json(content_type=None)
                    if resp.status == 200:
                        return int(data["header"]["revision"])
                    reasons.append(f"{endpoint}: HTTP {resp.status}")
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, OSError) as exc:
                reasons.append(f"{endpoint}: {type(exc).__name__}")
        raise Unavailable("cluster store unreachable: " + "; ".join(reasons))
