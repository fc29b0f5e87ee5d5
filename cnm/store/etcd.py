"""Global-scope `Store` on etcd v3, through etcd's grpc-gateway JSON API.

Client: `etcd3gw` (sync, maintained by OpenStack) supplies the HTTP session and the
gateway URLs; the request bodies are built here because its helpers encode values
as latin-1, take no per-call timeout, and its watcher hides disconnects and
compaction. Everything that speaks to etcd lives in this module.

Semantics, on top of the `Store` contract:
  * keys live under `prefix` (default "/cnm/"); callers never see it;
  * values are JSON; KV.revision is etcd's mod_revision; returned revisions are the
    cluster revision after the write (etcd's header.revision);
  * `atomic` is one etcd txn comparing mod_revision (0 = create_revision 0, "must not
    exist"); on a failed compare it raises Conflict and changes nothing;
  * endpoints are tried in order, sticking to the last one that answered; a call
    never takes longer than `timeout`, and raises Unavailable when no member answers;
  * `watch` runs a daemon thread that resumes from the last delivered revision after
    a disconnect (no event lost, none repeated) and calls `resync` when it cannot
    (history compacted, or the store went back in time).
"""
from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

import requests
from etcd3gw.client import Etcd3Client

from cnm.errors import CNMError, Conflict, InternalError, InvalidParameter, NotFound, Unavailable
from cnm.store import KV, Delete, Op, Put, WatchEvent

log = logging.getLogger(__name__)

DEFAULT_PORT = 2379
API_PATH = "/v3/"            # etcd >= 3.4 (Debian 12 ships 3.4.23)
WATCH_IDLE_TIMEOUT = 30.0    # reconnect a watch stream silent for this long
_RETRY_PAUSE = 0.1           # between rounds over all endpoints (leader elections)
_GRPC_UNAVAILABLE = 14
_GRPC_NOT_FOUND = 5


# --- pure helpers ---------------------------------------------------------------------

def parse_cluster_store(url: str) -> list[str]:
    """'etcd://HOST[:PORT][,HOST[:PORT]…]' -> ['http://HOST:PORT', …] (port 2379 by
    default; IPv6 hosts in brackets). Raises InvalidParameter saying what is wrong."""
    hint = "expected etcd://HOST:PORT[,HOST:PORT…], e.g. etcd://198.18.0.10:2379"
    if not isinstance(url, str) or "://" not in url:
        raise InvalidParameter(f"cluster store {url!r}: {hint}")
    scheme, rest = url.split("://", 1)
    if scheme.lower() != "etcd":
        raise InvalidParameter(f"cluster store {url!r}: unsupported scheme {scheme!r} (only etcd); {hint}")
    rest = rest.rstrip("/")
    if not rest or "/" in rest or "?" in rest or "@" in rest:
        raise InvalidParameter(f"cluster store {url!r}: {hint}")
    endpoints: list[str] = []
    for item in rest.split(","):
        item = item.strip()
        if not item:
            raise InvalidParameter(f"cluster store {url!r}: empty member address; {hint}")
        try:
            parts = urlsplit("//" + item)
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise InvalidParameter(f"cluster store {url!r}: bad member address {item!r} ({exc}); {hint}") from exc
        if not host:
            raise InvalidParameter(f"cluster store {url!r}: bad member address {item!r}; {hint}")
        if port == 0:
            raise InvalidParameter(f"cluster store {url!r}: port 0 in {item!r}; {hint}")
        shown = f"[{host}]" if ":" in host else host
        endpoint = f"http://{shown}:{port or DEFAULT_PORT}"
        if endpoint in endpoints:
            raise InvalidParameter(f"cluster store {url!r}: {item!r} is listed twice")
        endpoints.append(endpoint)
    return endpoints


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _unb64(data: str | None) -> bytes:
    return base64.b64decode(data or "")


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


def _dumps(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _loads(raw: bytes, key: str) -> dict:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InternalError(f"cluster store key {key} does not hold JSON (not written by cnm?)") from exc


def last_op_per_key(ops: Sequence[Op]) -> list[Op]:
    """etcd refuses a txn touching one key twice; applying ops in order leaves the last
    op per key in force, so keep only that (in first-seen key order)."""
    last: dict[str, Op] = {}
    for op in ops:
        last.pop(op.key, None)
        last[op.key] = op
    return list(last.values())


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
    def starting_at(cls, start_revision: int) -> "WatchCursor":
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


def _event_of(raw: Mapping[str, Any], strip: int) -> tuple[int, str, WatchEvent]:
    kv = raw["kv"]
    full = _unb64(kv.get("key")).decode()
    rel = full[strip:]
    rev = int(kv.get("mod_revision", 0))
    if raw.get("type") == "DELETE":
        return rev, full, WatchEvent("delete", rel, None)
    value = _unb64(kv.get("value"))
    try:
        return rev, full, WatchEvent("put", rel, json.loads(value) if value else None)
    except ValueError:
        log.warning("cluster store key %s does not hold JSON; delivering it with value None", full)
        return rev, full, WatchEvent("put", rel, None)


@dataclass(frozen=True)
class MemberStatus:
    endpoint: str
    reachable: bool
    leader: bool
    revision: int
    error: str | None = None


# --- transport -------------------------------------------------------------------------

class _Retry(Exception):
    """This member cannot serve the request now; try another one. `down` = it could
    not even be connected to (as opposed to busy: no leader yet, slow answer)."""

    def __init__(self, reason: str, down: bool = False) -> None:
        super().__init__(reason)
        self.down = down


class _Gateway:
    """Bounded POSTs to etcd's gateway, failing over between members."""

    def __init__(self, endpoints: Sequence[str], timeout: float, name: str) -> None:
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.name = name
        self._clients = [_client_for(e) for e in self.endpoints]
        self._preferred = 0

    def post(self, path: str, body: dict, *, idempotent: bool = True) -> dict:
        deadline = time.monotonic() + self.timeout
        reasons: dict[str, str] = {}
        n = len(self._clients)
        while True:
            all_down = True
            for i in range(n):
                idx = (self._preferred + i) % n
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    all_down = False
                    break
                client = self._clients[idx]
                try:
                    out = self._post_one(client, path, body, remaining, idempotent)
                except _Retry as exc:
                    reasons[self.endpoints[idx]] = str(exc)
                    all_down = all_down and exc.down
                    continue
                self._preferred = idx
                return out
            # No member accepts connections: etcd is down, waiting will not help.
            # Otherwise (no leader yet, slow answers) retry until the deadline.
            if all_down or deadline - time.monotonic() <= _RETRY_PAUSE:
                break
            time.sleep(_RETRY_PAUSE)
        detail = "; ".join(f"{e}: {r}" for e, r in reasons.items()) or f"no answer in {self.timeout:g}s"
        raise Unavailable(f"cluster store {self.name} unreachable: {detail}; global (overlay) operations need it")

    def _post_one(self, client: Etcd3Client, path: str, body: dict, remaining: float, idempotent: bool) -> dict:
        # A dead member refuses at once; a silent one must not eat the whole budget.
        connect = min(remaining, max(0.2, self.timeout / (len(self._clients) + 1)))
        # etcd holds a request made while the cluster has no leader until its own
        # (long) timeout; an idempotent request is better re-sent after an election.
        read = remaining if not idempotent else min(remaining, max(0.5, self.timeout / 3))
        try:
            resp = client.session.post(client.get_url(path), json=body, timeout=(connect, read))
        except requests.exceptions.ReadTimeout as exc:
            if not idempotent:
                raise Unavailable(f"cluster store {self.name}: no answer from {client.base_url} in "
                                  f"{read:.1f}s; the write may or may not have been applied") from exc
            raise _Retry(f"no answer in {read:.1f}s") from exc
        except requests.exceptions.ConnectionError as exc:
            raise _Retry(_short(exc), down=True) from exc
        except requests.exceptions.RequestException as exc:
            raise _Retry(_short(exc)) from exc
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if resp.status_code == 200:
            return data
        message = data.get("message") or data.get("error") or resp.text.strip()[:200]
        code = data.get("code")
        if resp.status_code in (503, 504, 408) or code in (_GRPC_UNAVAILABLE, 4):
            raise _Retry(message)                # no leader, leader changed, timed out
        if code == _GRPC_NOT_FOUND or resp.status_code == 404:
            raise NotFound(f"cluster store {self.name}: {message}")
        if resp.status_code == 400:
            raise InvalidParameter(f"cluster store {self.name} refused the request: {message}")
        raise InternalError(f"cluster store {self.name} answered {resp.status_code}: {message}")

    def close(self) -> None:
        for c in self._clients:
            c.session.close()


def _client_for(endpoint: str) -> Etcd3Client:
    parts = urlsplit(endpoint)
    return Etcd3Client(host=parts.hostname or "localhost", port=parts.port or DEFAULT_PORT,
                       protocol=parts.scheme or "http", api_path=API_PATH)


def _short(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "No route to host", "Network is unreachable",
                   "timed out", "Connection reset", "Name or service not known"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__


# --- the store ---------------------------------------------------------------------------

class EtcdStore:
    """`Store` on etcd. Thread-safe; watches and leases run on their own threads."""

    def __init__(self, endpoints: Sequence[str], prefix: str = "/cnm/", scope: str = "global",
                 timeout: float = 3.0) -> None:
        if not endpoints:
            raise InvalidParameter("cluster store needs at least one etcd endpoint")
        self.scope = scope
        self.prefix = prefix
        self.timeout = timeout
        self.endpoints = list(endpoints)
        self.url = "etcd://" + ",".join(urlsplit(e).netloc for e in self.endpoints)
        self._gw = _Gateway(self.endpoints, timeout, self.url)
        self._watchers: list[_Watcher] = []
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> "EtcdStore":
        """EtcdStore for a --cluster-store value (etcd://h:p,h:p)."""
        return cls(parse_cluster_store(url), **kwargs)

    def _full(self, key: str) -> str:
        return self.prefix + key

    def _kv(self, raw: Mapping[str, Any]) -> KV:
        full = _unb64(raw.get("key")).decode()
        return KV(full[len(self.prefix):], _loads(_unb64(raw.get("value")), full), int(raw.get("mod_revision", 0)))

    # --- reads ---

    def get(self, key: str) -> KV | None:
        out = self._gw.post("kv/range", {"key": _b64(self._full(key))})
        kvs = out.get("kvs") or []
        return self._kv(kvs[0]) if kvs else None

    def list(self, prefix: str) -> list[KV]:
        return self.snapshot(prefix)[0]

    def snapshot(self, prefix: str) -> tuple[list[KV], int]:
        """Every pair under `prefix` (sorted by key) and the store revision they were
        read at: watch(prefix, cb, start_revision=rev + 1) continues exactly there."""
        full = self._full(prefix)
        out = self._gw.post("kv/range", {"key": _b64(full), "range_end": _b64(prefix_end(full))})
        return [self._kv(kv) for kv in out.get("kvs") or []], int(out["header"]["revision"])

    def revision(self) -> int:
        """The cluster's current revision."""
        out = self._gw.post("kv/range", {"key": _b64(self.prefix), "count_only": True})
        return int(out["header"]["revision"])

    # --- writes ---

    def put(self, key: str, value: dict, lease: int | None = None) -> int:
        """Write unconditionally (attached to `lease` when given: the key vanishes
        when the lease expires); returns the new revision. Idempotent."""
        body: dict[str, Any] = {"key": _b64(self._full(key)), "value": _b64(_dumps(value))}
        if lease:
            body["lease"] = str(lease)
        out = self._post_lease_aware("kv/put", body, lease)
        return int(out["header"]["revision"])

    def delete(self, key: str) -> bool:
        out = self._gw.post("kv/deleterange", {"key": _b64(self._full(key))})
        return int(out.get("deleted", 0)) > 0

    def delete_prefix(self, prefix: str) -> int:
        full = self._full(prefix)
        out = self._gw.post("kv/deleterange", {"key": _b64(full), "range_end": _b64(prefix_end(full))})
        return int(out.get("deleted", 0))

    def atomic(self, ops: Sequence[Op], expect: Mapping[str, int] | None = None,
               lease: int | None = None) -> int:
        """One etcd txn: all `ops` if every key in `expect` is at its revision (0 = must
        not exist), else Conflict and nothing changes. Puts attach to `lease` if given.
        Several ops on one key: the last wins, as if applied in order."""
        compare = []
        failure = []
        for key, rev in (expect or {}).items():
            k = _b64(self._full(key))
            if rev == 0:
                compare.append({"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"})
            else:
                compare.append({"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": str(rev)})
            failure.append({"request_range": {"key": k, "keys_only": True}})
        success = []
        for op in last_op_per_key(ops):
            k = _b64(self._full(op.key))
            if isinstance(op, Put):
                put: dict[str, Any] = {"key": k, "value": _b64(_dumps(op.value))}
                if lease:
                    put["lease"] = str(lease)
                success.append({"request_put": put})
            elif isinstance(op, Delete):
                success.append({"request_delete_range": {"key": k}})
            else:
                raise InternalError(f"unknown store operation {op!r}")
        body = {"compare": compare, "success": success, "failure": failure}
        # A txn with compares is not safe to resend blindly after a lost answer.
        out = self._post_lease_aware("kv/txn", body, lease, idempotent=not compare)
        if not out.get("succeeded"):
            raise Conflict(self._conflict_message(expect or {}, out))
        return int(out["header"]["revision"])

    def _conflict_message(self, expect: Mapping[str, int], out: dict) -> str:
        now: dict[str, int] = {}
        for resp in out.get("responses") or []:
            for kv in (resp.get("response_range") or {}).get("kvs") or []:
                now[_unb64(kv.get("key")).decode()[len(self.prefix):]] = int(kv.get("mod_revision", 0))
        changed = [k for k, r in expect.items() if now.get(k, 0) != r] or list(expect)
        parts = [f"{k} (expected revision {expect[k]}, found {now.get(k, 0)})" for k in changed]
        return "store key " + ", ".join(parts) + " changed concurrently; reload and retry"

    def _post_lease_aware(self, path: str, body: dict, lease: int | None, idempotent: bool = True) -> dict:
        try:
            return self._gw.post(path, body, idempotent=idempotent)
        except NotFound as exc:
            if lease:
                raise NotFound(f"etcd lease {lease:x} expired or is unknown; grant a new one "
                               f"and publish again") from exc
            raise

    def status(self) -> list[MemberStatus]:
        """One line per endpoint: does it answer, is it the leader (for `lab inspect`
        and tests). Never raises for an unreachable member."""
        out = []
        for endpoint, client in zip(self.endpoints, self._gw._clients):
            try:
                st = self._gw._post_one(client, "maintenance/status", {}, self.timeout, True)
            except (_Retry, CNMError) as exc:
                out.append(MemberStatus(endpoint, False, False, 0, str(exc)))
                continue
            header = st.get("header") or {}
            out.append(MemberStatus(endpoint, True, st.get("leader") == header.get("member_id"),
                                    int(header.get("revision", 0)), None))
        return out

    def compact(self, revision: int) -> None:
        """Drop history before `revision` (watchers behind it must resync). Our etcd
        members run without auto-compaction; this is for maintenance and tests."""
        self._gw.post("kv/compaction", {"revision": str(revision), "physical": True})

    # --- leases ---

    def lease_grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds; returns its id."""
        out = self._gw.post("lease/grant", {"TTL": int(ttl), "ID": 0}, idempotent=False)
        if out.get("error"):
            raise InternalError(f"cluster store {self.url} refused a lease: {out['error']}")
        return int(out["ID"])

    def lease_keepalive(self, lease: int) -> int:
        """Renew `lease`; returns its TTL in seconds, 0 when it has expired (or never
        existed) — then keys attached to it are gone."""
        out = self._gw.post("lease/keepalive", {"ID": str(lease)})
        return int((out.get("result") or {}).get("TTL", 0))

    def lease_revoke(self, lease: int) -> bool:
        """Revoke `lease`, deleting its keys now. False if it was already gone."""
        try:
            self._gw.post("lease/revoke", {"ID": str(lease)})
        except NotFound:
            return False
        return True

    # --- watch ---

    def watch(self, prefix: str, callback: Callable[[WatchEvent], None],
              resync: Callable[[], None] | None = None,
              start_revision: int | None = None) -> Callable[[], None]:
        """Deliver every change under `prefix` to `callback`, in revision order, on a
        daemon thread, from `start_revision` (default: the revision current when this
        is called, +1). Survives disconnects: it reconnects by itself and resumes where
        it stopped. When events were lost for good (history compacted, or the store
        was reset) it calls `resync()` (the owner relists) and carries on from the
        current revision; events after the relist may then repeat, never go missing
        (with no `resync` given, the lost events are skipped with a warning).
        If etcd is unreachable now and no start_revision is given, the first
        successful connection is treated as a resync. Returns cancel(); idempotent."""
        cursor: WatchCursor | None = None
        if start_revision is not None:
            cursor = WatchCursor.starting_at(start_revision)
        else:
            try:
                cursor = WatchCursor.starting_at(self.revision() + 1)
            except Unavailable as exc:
                log.warning("watch %s: %s; will resync when etcd answers", prefix, exc)
        w = _Watcher(self, self._full(prefix), callback, resync, cursor)
        with self._lock:
            self._watchers.append(w)
        w.start()

        def cancel() -> None:
            w.stop()
            with self._lock:
                if w in self._watchers:
                    self._watchers.remove(w)

        return cancel

    def close(self) -> None:
        with self._lock:
            watchers, self._watchers = self._watchers, []
        for w in watchers:
            w.stop()
        self._gw.close()


class _Watcher:
    """One watch stream, on its own session (a stream holds its connection)."""

    def __init__(self, store: EtcdStore, full_prefix: str, callback: Callable[[WatchEvent], None],
                 resync: Callable[[], None] | None, cursor: WatchCursor | None) -> None:
        self.store = store
        self.full_prefix = full_prefix
        self.callback = callback
        self.resync = resync
        self.cursor = cursor
        self._stopped = threading.Event()
        self._resp: requests.Response | None = None
        self._resp_lock = threading.Lock()
        self._clients = [_client_for(e) for e in store.endpoints]
        self._idx = 0
        self._thread = threading.Thread(target=self._run, name=f"etcd-watch {full_prefix}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        with self._resp_lock:
            resp = self._resp
        if resp is not None:
            _abort(resp)
        if threading.current_thread() is not self._thread:
            self._thread.join(5)
        for c in self._clients:
            c.session.close()

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopped.is_set():
            try:
                if self.cursor is None:
                    self._do_resync("first connection")
                if self._stream():
                    backoff = 0.1                  # got at least one answer
            except CNMError as exc:
                log.info("watch %s: %s", self.full_prefix, exc)
            except (requests.exceptions.RequestException, ValueError, OSError) as exc:
                if not self._stopped.is_set():
                    log.info("watch %s on %s: %s; reconnecting", self.full_prefix,
                             self.store.endpoints[self._idx], _short(exc))
            except Exception:                     # a bug: keep the watch alive, say so loudly
                log.exception("watch %s failed; reconnecting", self.full_prefix)
            if self._stopped.is_set():
                return
            self._idx = (self._idx + 1) % len(self._clients)
            self._stopped.wait(backoff)
            backoff = min(backoff * 2, 2.0)

    def _do_resync(self, why: str) -> None:
        rev = self.store.revision()            # raises Unavailable while etcd is down
        log.warning("watch %s: %s; resyncing at revision %d", self.full_prefix, why, rev)
        if self.resync is not None:
            self.resync()
        self.cursor = WatchCursor.starting_at(rev + 1)

    def _stream(self) -> bool:
        """Read one watch stream until it ends. True if the stream was established."""
        assert self.cursor is not None
        client = self._clients[self._idx]
        create = {"key": _b64(self.full_prefix), "range_end": _b64(prefix_end(self.full_prefix)),
                  "start_revision": str(self.cursor.start_revision), "progress_notify": True}
        # hasleader: a member cut off from the leader ends the stream instead of going
        # silent, so the watcher moves to a member that still gets the cluster's news.
        resp = client.session.post(client.get_url("watch"), json={"create_request": create}, stream=True,
                                   headers={"Grpc-Metadata-hasleader": "true"},
                                   timeout=(min(1.0, self.store.timeout), WATCH_IDLE_TIMEOUT))
        with self._resp_lock:
            self._resp = resp
        if self._stopped.is_set():
            _abort(resp)
            return False
        try:
            if resp.status_code != 200:
                raise Unavailable(f"watch refused by {client.base_url}: HTTP {resp.status_code}")
            established = False
            buf = b""
            for chunk in resp.iter_content(chunk_size=None):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        if not self._handle(json.loads(line)):
                            return established
                        established = True
            return established
        finally:
            with self._resp_lock:
                self._resp = None
            resp.close()

    def _handle(self, msg: Mapping[str, Any]) -> bool:
        """Process one stream message; False = end this stream (and reconnect)."""
        if "error" in msg:
            raise Unavailable(f"watch stream error: {msg['error'].get('message', msg['error'])}")
        result = msg.get("result") or {}
        assert self.cursor is not None
        header_rev = int((result.get("header") or {}).get("revision", 0))
        if result.get("canceled"):
            compacted = int(result.get("compact_revision", 0))
            if compacted:
                self._do_resync(f"history before revision {compacted} was compacted")
                return False
            raise Unavailable(f"watch canceled by etcd: {result.get('cancel_reason', 'no reason given')}")
        if result.get("created"):
            if header_rev and header_rev < self.cursor.rev:
                self._do_resync(f"store revision went back from {self.cursor.rev} to {header_rev}")
                return False
            return True
        events = result.get("events") or []
        strip = len(self.store.prefix)
        for raw in events:
            rev, full, event = _event_of(raw, strip)
            if self._stopped.is_set():
                return False
            if self.cursor.accept(rev, full):
                try:
                    self.callback(event)
                except Exception:
                    log.exception("watch %s: callback failed on %s %s", self.full_prefix, event.kind, event.key)
        return True


def _abort(resp: requests.Response) -> None:
    """Unblock a thread reading `resp`: shutting the socket down wakes its recv()."""
    try:
        fd = resp.raw.fileno()
        sock = socket.socket(fileno=socket.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
    except (OSError, AttributeError, ValueError):
        pass
    try:
        resp.close()
    except Exception:  # closing from another thread may race the reader; harmless
        pass
