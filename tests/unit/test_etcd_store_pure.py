"""Pure parts of the etcd store: cluster-store URLs, key ranges, the watch resume
cursor, txn op folding, the etcd member command line; and the gateway's failover and
time bound, driven through a fake HTTP transport (no etcd, no network)."""

from __future__ import annotations

import base64
import json
import time

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from cnm.cluster.etcd_server import EtcdMember, cluster_store_url, make_members
from cnm.errors import Conflict, InvalidParameter, NotFound, Unavailable
from cnm.store import Delete, Put
from cnm.store.etcd import EtcdStore, WatchCursor, last_op_per_key, parse_cluster_store, prefix_end

# --- parse_cluster_store ------------------------------------------------------------


@pytest.mark.parametrize(
    "url, expected",
    [
        ("etcd://198.18.0.10:2379", ["http://198.18.0.10:2379"]),
        ("etcd://198.18.0.10", ["http://198.18.0.10:2379"]),
        ("etcd://a:1,b:2,c", ["http://a:1", "http://b:2", "http://c:2379"]),
        ("ETCD://h:2379/", ["http://h:2379"]),
        ("etcd://[fd00::1]:2379,[fd00::2]", ["http://[fd00::1]:2379", "http://[fd00::2]:2379"]),
    ],
)
def test_parse_cluster_store(url, expected):
    assert parse_cluster_store(url) == expected


@pytest.mark.parametrize(
    "url, words",
    [
        ("198.18.0.10:2379", "expected etcd://"),
        ("consul://h:8500", "unsupported scheme 'consul'"),
        ("etcd://", "expected etcd://"),
        ("etcd://h:2379,,g:2379", "empty member address"),
        ("etcd://h:99999", "bad member address"),
        ("etcd://h:port", "bad member address"),
        ("etcd://h:0", "port 0"),
        ("etcd://h:2379/cnm", "expected etcd://"),
        ("etcd://u:p@h:2379", "expected etcd://"),
        ("etcd://h:2379,h:2379", "listed twice"),
    ],
)
def test_parse_cluster_store_rejects(url, words):
    with pytest.raises(InvalidParameter) as info:
        parse_cluster_store(url)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_cluster_store_url_round_trips_through_parse(tmp_path):
    members = make_members([("e0", "198.18.0.10"), ("e1", "198.18.0.11")], tmp_path)
    assert parse_cluster_store(cluster_store_url(members)) == [m.client_url for m in members]


# --- key ranges -----------------------------------------------------------------------


def test_prefix_end():
    assert prefix_end("/cnm/") == b"/cnm0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"


@given(st.binary(min_size=1, max_size=6), st.binary(max_size=6))
def test_prefix_end_bounds_every_extension(prefix, tail):
    end = prefix_end(prefix)
    key = prefix + tail
    assert prefix <= key and (end == b"\0" or key < end)


def test_last_op_per_key_keeps_final_state():
    ops = [Put("a", {"v": 1}), Delete("b"), Delete("a"), Put("b", {"v": 2}), Put("c", {})]
    assert last_op_per_key(ops) == [Delete("a"), Put("b", {"v": 2}), Put("c", {})]


# --- watch cursor -----------------------------------------------------------------------


def test_cursor_skips_replayed_events_and_resumes_mid_revision():
    c = WatchCursor.starting_at(10)
    assert c.start_revision == 10
    assert c.accept(10, "a") and c.accept(10, "b")
    # Stream broke in the middle of revision 10: resume AT 10, skipping what was seen.
    assert c.start_revision == 10
    assert not c.accept(10, "a") and not c.accept(10, "b")
    assert c.accept(10, "c")
    assert c.accept(12, "a")
    assert not c.accept(11, "z") and not c.accept(12, "a")
    assert c.start_revision == 12


@given(st.lists(st.tuples(st.integers(1, 8), st.sampled_from("abc")), unique=True).map(sorted), st.integers(0, 30))
def test_cursor_delivers_each_event_once_whatever_the_break(events, cut):
    """Deliver a prefix of the history, 'reconnect' from start_revision and replay the
    whole history from there: every event is delivered exactly once, in order."""
    cut = min(cut, len(events))
    c = WatchCursor.starting_at(1)
    got = [e for e in events[:cut] if c.accept(*e)]
    start = c.start_revision
    got += [e for e in events if e[0] >= start and c.accept(*e)]
    assert got == events


# --- etcd member command line -------------------------------------------------------------


def test_member_argv(tmp_path):
    cluster = {"e0": "http://198.18.0.10:2380", "e1": "http://198.18.0.11:2380"}
    m = EtcdMember("e0", tmp_path / "e0", "http://198.18.0.10:2379", cluster["e0"], cluster, netns="h1")
    argv = m.argv()
    assert argv[:4] == ["ip", "netns", "exec", "h1"]
    flags = dict(zip(argv[5::2], argv[6::2], strict=True))
    assert flags["--initial-cluster"] == "e0=http://198.18.0.10:2380,e1=http://198.18.0.11:2380"
    assert flags["--listen-client-urls"] == flags["--advertise-client-urls"] == "http://198.18.0.10:2379"
    assert flags["--auto-compaction-retention"] == "0"
    assert m.log_path == tmp_path / "e0.log"
    assert m.pid is None and not m.running


def test_member_rejects_bad_config(tmp_path):
    with pytest.raises(InvalidParameter, match="missing from its initial cluster"):
        EtcdMember("e9", tmp_path, "http://h:2379", "http://h:2380", {"e0": "http://h:2380"})
    with pytest.raises(InvalidParameter, match="http://HOST:PORT"):
        EtcdMember("e0", tmp_path, "h:2379", "http://h:2380", {"e0": "http://h:2380"})


# --- gateway failover through a fake transport ----------------------------------------------


class FakeEtcd(requests.adapters.BaseAdapter):
    """Answers like one etcd member's gateway, or fails the way a dead one does."""

    def __init__(self, mode: str = "ok", kvs: dict[str, tuple[dict, int]] | None = None) -> None:
        super().__init__()
        self.mode = mode
        self.kvs = kvs if kvs is not None else {}
        self.calls = 0

    def send(self, request, **kwargs):
        self.calls += 1
        if self.mode == "refused":
            raise requests.exceptions.ConnectionError("[Errno 111] Connection refused")
        if self.mode == "silent":
            time.sleep(kwargs["timeout"][0])
            raise requests.exceptions.ConnectTimeout("connect timed out")
        if self.mode == "noleader":
            return self._answer(request, 503, {"error": "etcdserver: no leader", "code": 14})
        body = json.loads(request.body)
        path = request.path_url
        header = {"revision": "7"}
        if path.endswith("/kv/range"):
            key = base64.b64decode(body["key"]).decode()
            kvs = [
                {"key": body["key"], "value": base64.b64encode(json.dumps(v).encode()).decode(), "mod_revision": str(r)}
                for k, (v, r) in self.kvs.items()
                if k == key
            ]
            return self._answer(request, 200, {"header": header, "kvs": kvs})
        if path.endswith("/kv/txn"):
            ok = all(
                self.kvs.get(base64.b64decode(c["key"]).decode(), ({}, 0))[1]
                == int(c.get("mod_revision", c.get("create_revision", 0)))
                for c in body["compare"]
            )
            return self._answer(request, 200, {"header": header, "succeeded": ok})
        if path.endswith("/kv/put") and "lease" in body:
            return self._answer(request, 404, {"error": "etcdserver: requested lease not found", "code": 5})
        return self._answer(request, 200, {"header": header})

    @staticmethod
    def _answer(request, status, data):
        resp = requests.Response()
        resp.status_code = status
        resp._content = json.dumps(data).encode()
        resp.request = request
        resp.url = request.url
        return resp

    def close(self):
        pass


def fake_store(*modes: str, timeout: float = 1.0, kvs=None) -> tuple[EtcdStore, list[FakeEtcd]]:
    store = EtcdStore([f"http://198.18.0.{10 + i}:2379" for i in range(len(modes))], timeout=timeout)
    fakes = []
    for client, mode in zip(store._gw._clients, modes, strict=True):
        fake = FakeEtcd(mode, kvs)
        client.session.mount("http://", fake)
        fakes.append(fake)
    return store, fakes


def test_failover_skips_dead_and_leaderless_members_and_sticks_to_the_good_one():
    store, fakes = fake_store("refused", "noleader", "ok", kvs={"/cnm/k": ({"a": 1}, 5)})
    kv = store.get("k")
    assert kv is not None and kv.value == {"a": 1} and kv.revision == 5
    store.get("k")
    assert [f.calls for f in fakes] == [1, 1, 2]  # second call went straight to the good one


def test_all_members_down_raises_unavailable_within_the_timeout():
    store, _ = fake_store("refused", "silent", timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(Unavailable) as info:
        store.put("k", {})
    elapsed = time.monotonic() - t0
    assert elapsed < 1.5
    msg = str(info.value)
    assert msg.startswith("cluster store etcd://198.18.0.10:2379,198.18.0.11:2379 unreachable")
    assert "connection refused" in msg and "global (overlay) operations need it" in msg


def test_failed_compare_raises_conflict_and_expired_lease_not_found():
    store, _ = fake_store("ok", kvs={"/cnm/k": ({}, 5)})
    with pytest.raises(Conflict, match="store key k"):
        store.atomic([Put("k", {"b": 2})], expect={"k": 4})
    assert store.atomic([Put("k", {"b": 2})], expect={"k": 5}) == 7
    with pytest.raises(NotFound, match="lease 2a expired"):
        store.put("x", {}, lease=42)
