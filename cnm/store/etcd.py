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
  * `watch` streams run on a WatchHub (cnm.store.etcd_watch: one loop thread reads
    every stream, one thread calls back), resume from the last delivered revision
    after a disconnect (no event lost, none repeated) and call `resync` when they
    cannot (history compacted, or the store went back in time). Stores may share a hub.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from etcd3gw.client import Etcd3Client

from cnm.errors import CNMError, Conflict, InternalError, InvalidParameter, NotFound, Unavailable
from cnm.store import KV, Delete, Op, Put, WatchEvent, run_after_commit
from cnm.store.etcd_watch import Watch, WatchCursor, WatchHub, prefix_end

__all__ = [
    "EtcdStore",
    "MemberStatus",
    "WatchCursor",
    "WatchHub",
    "last_op_per_key",
    "parse_cluster_store",
    "prefix_end",
]

log = logging.getLogger(__name__)

DEFAULT_PORT = 2379
API_PATH = "/v3/"  # etcd >= 3.4 (Debian 12 ships 3.4.23)
_RETRY_PAUSE = 0.1  # between rounds over all endpoints (leader elections)
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
                raise Unavailable(
                    f"cluster store {self.name}: no answer from {client.base_url} in "
                    f"{read:.1f}s; the write may or may not have been applied"
                ) from exc
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
            raise _Retry(message)  # no leader, leader changed, timed out
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
    client = Etcd3Client(
        host=parts.hostname or "localhost",
        port=parts.port or DEFAULT_PORT,
        protocol=parts.scheme or "http",
        api_path=API_PATH,
    )
    # etcd is reached directly: no proxy from the environment, and no ~/.netrc or CA
    # bundle lookups on every request (requests does them per call when trusting the env).
    client.session.trust_env = False
    return client


def _short(exc: BaseException) -> str:
    text = str(exc)
    for marker in (
        "Connection refused",
        "No route to host",
        "Network is unreachable",
        "timed out",
        "Connection reset",
        "Name or service not known",
    ):
        if marker in text:
            return marker.lower()
    return type(exc).__name__


# --- the store ---------------------------------------------------------------------------


class EtcdStore:
    """`Store` on etcd. Thread-safe; watches and leases run on their own threads."""

    def __init__(
        self,
        endpoints: Sequence[str],
        prefix: str = "/cnm/",
        scope: str = "global",
        timeout: float = 3.0,
        watch_hub: WatchHub | None = None,
    ) -> None:
        if not endpoints:
            raise InvalidParameter("cluster store needs at least one etcd endpoint")
        self.scope = scope
        self.prefix = prefix
        self.timeout = timeout
        self.endpoints = list(endpoints)
        self.url = "etcd://" + ",".join(urlsplit(e).netloc for e in self.endpoints)
        self._gw = _Gateway(self.endpoints, timeout, self.url)
        # Its threads run only while a watch does; a shared hub is closed by its owner.
        self._hub = watch_hub if watch_hub is not None else WatchHub(f"etcd-watch {self.url}")
        self._watches: list[Watch] = []
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> EtcdStore:
        """EtcdStore for a --cluster-store value (etcd://h:p,h:p)."""
        return cls(parse_cluster_store(url), **kwargs)

    def _full(self, key: str) -> str:
        return self.prefix + key

    def _kv(self, raw: Mapping[str, Any]) -> KV:
        full = _unb64(raw.get("key")).decode()
        return KV(full[len(self.prefix) :], _loads(_unb64(raw.get("value")), full), int(raw.get("mod_revision", 0)))

    # --- reads ---

    def get(self, key: str) -> KV | None:
        out = self._gw.post("kv/range", {"key": _b64(self._full(key))})
        kvs = out.get("kvs") or []
        return self._kv(kvs[0]) if kvs else None

    def list(self, prefix: str) -> list[KV]:
        return self.snapshot(prefix)[0]

    def snapshot(self, prefix: str) -> tuple[builtins.list[KV], int]:
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

    def atomic(self, ops: Sequence[Op], expect: Mapping[str, int] | None = None, lease: int | None = None) -> int:
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
                now[_unb64(kv.get("key")).decode()[len(self.prefix) :]] = int(kv.get("mod_revision", 0))
        changed = [k for k, r in expect.items() if now.get(k, 0) != r] or list(expect)
        parts = [f"{k} (expected revision {expect[k]}, found {now.get(k, 0)})" for k in changed]
        return "store key " + ", ".join(parts) + " changed concurrently; reload and retry"

    def _post_lease_aware(self, path: str, body: dict, lease: int | None, idempotent: bool = True) -> dict:
        try:
            return self._gw.post(path, body, idempotent=idempotent)
        except NotFound as exc:
            if lease:
                raise NotFound(
                    f"etcd lease {lease:x} expired or is unknown; grant a new one and publish again"
                ) from exc
            raise

    def status(self) -> builtins.list[MemberStatus]:
        """One line per endpoint: does it answer, is it the leader (for `lab inspect`
        and tests). Never raises for an unreachable member."""
        out = []
        for endpoint, client in zip(self.endpoints, self._gw._clients, strict=True):
            try:
                st = self._gw._post_one(client, "maintenance/status", {}, self.timeout, True)
            except (_Retry, CNMError) as exc:
                out.append(MemberStatus(endpoint, False, False, 0, str(exc)))
                continue
            header = st.get("header") or {}
            out.append(
                MemberStatus(
                    endpoint, True, st.get("leader") == header.get("member_id"), int(header.get("revision", 0)), None
                )
            )
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

    def watch(
        self,
        prefix: str,
        callback: Callable[[WatchEvent], None],
        resync: Callable[[], None] | None = None,
        start_revision: int | None = None,
        resync_first: bool = False,
    ) -> Callable[[], None]:
        """Deliver every change under `prefix` to `callback`, in revision order, from
        `start_revision` (default: the revision current when this is called, +1).
        Survives disconnects: it reconnects by itself and resumes where it stopped.
        When events were lost for good (history compacted, or the store was reset) it
        calls `resync()` (the owner relists) and carries on from the revision read just
        before; events after the relist may then repeat, never go missing (with no
        `resync` given, the lost events are skipped with a warning). If etcd is
        unreachable now and no start_revision is given, the first successful
        connection is treated as a resync; `resync_first` asks for that without trying
        now (the caller knows etcd does not answer). Callbacks run on the hub's callback thread
        (cnm.store.etcd_watch). Returns cancel(): once it returns, no callback of this
        watch runs; idempotent."""
        cursor: WatchCursor | None = None
        if start_revision is not None:
            cursor = WatchCursor.starting_at(start_revision)
        elif not resync_first:
            try:
                cursor = WatchCursor.starting_at(self.revision() + 1)
            except Unavailable as exc:
                log.warning("watch %s: %s; will resync when etcd answers", prefix, exc)
        w = Watch(self.endpoints, self.prefix, self._full(prefix), self.timeout, callback, resync, cursor)
        with self._lock:
            self._watches.append(w)
        self._hub.add(w)

        def cancel() -> None:
            self._hub.remove(w)
            with self._lock:
                if w in self._watches:
                    self._watches.remove(w)

        return cancel

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Each write is committed at once in etcd (see cnm.store.Store.transaction)."""
        return contextlib.nullcontext()

    def after_commit(self, fn: Callable[[], None]) -> None:
        run_after_commit([fn])

    def close(self) -> None:
        with self._lock:
            watches, self._watches = self._watches, []
        for w in watches:
            self._hub.remove(w)
        self._gw.close()
