"""Store transactions: a request's writes committed once, at the end of the outermost
block (SQLite: one COMMIT; a crash loses the block whole), every call inside still all
or nothing, steps run after the commit, other threads kept out until then."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from cnm.errors import Conflict
from cnm.store import Put
from cnm.store.memory import MemoryStore
from cnm.store.sqlite import SQLiteStore


@pytest.fixture(params=["sqlite", "memory"])
def store(request, tmp_path):
    s = SQLiteStore(str(tmp_path / "kv.db")) if request.param == "sqlite" else MemoryStore()
    yield s
    s.close()


def committed(path) -> set[str]:
    """The keys another connection sees: what is durable."""
    db = sqlite3.connect(path)
    try:
        return {k for (k,) in db.execute("SELECT key FROM kv")}
    finally:
        db.close()


def test_writes_in_a_block_are_one_commit(tmp_path):
    path = str(tmp_path / "kv.db")
    s = SQLiteStore(path)
    with s.transaction():
        s.put("a", {"n": 1})
        with s.transaction():  # nested: joins the outer one
            s.put("b", {})
            s.delete("a")
        assert committed(path) == set()  # nothing durable before the outer end
        assert s.get("b") is not None and s.get("a") is None  # but visible to this connection
    assert committed(path) == {"b"}
    s.close()


def test_a_block_that_raises_still_commits_what_it_left(store):
    """Undo steps are writes like the others: what the block left is what is saved."""
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.put("kept", {})
            store.put("undone", {})
            store.delete("undone")  # an undo step
            raise RuntimeError("boom")
    assert store.get("kept") is not None and store.get("undone") is None


def test_a_refused_atomic_inside_a_block_changes_nothing_of_its_own(store):
    with store.transaction():
        store.put("x", {"v": 1})
        rev = store.get("x").revision
        with pytest.raises(Conflict):
            store.atomic([Put("y", {}), Put("x", {"v": 2})], expect={"x": rev + 5})
        store.put("z", {})
    assert store.get("y") is None and store.get("x").value == {"v": 1} and store.get("z") is not None


def test_after_commit_steps_run_after_the_outer_commit_in_order(tmp_path):
    path = str(tmp_path / "kv.db")
    s = SQLiteStore(path)
    seen = []
    with s.transaction():
        s.put("k", {})
        s.after_commit(lambda: seen.append(("first", committed(path))))
        with s.transaction():
            s.after_commit(lambda: seen.append(("second", committed(path))))
        assert seen == []
    assert seen == [("first", {"k"}), ("second", {"k"})]
    s.after_commit(lambda: seen.append("at once"))  # no block open: now
    assert seen[-1] == "at once"
    s.close()


def test_after_commit_steps_run_even_when_the_block_raises_and_one_step_failing_does_not_stop_the_rest(store):
    seen = []

    def broken() -> None:
        raise ValueError("step failed")

    with pytest.raises(RuntimeError, match="the block's own error"):
        with store.transaction():
            store.after_commit(broken)
            store.after_commit(lambda: seen.append("ran"))
            raise RuntimeError("the block's own error")
    assert seen == ["ran"]


def test_other_threads_wait_for_the_commit(tmp_path):
    s = SQLiteStore(str(tmp_path / "kv.db"))
    got = []
    inside = threading.Event()

    def other() -> None:
        inside.wait()
        s.put("theirs", {})
        got.append(s.get("mine") is not None)  # our commit came first

    t = threading.Thread(target=other)
    t.start()
    with s.transaction():
        s.put("mine", {})
        inside.set()
        time.sleep(0.1)
        assert s.get("theirs") is None
    t.join(5)
    assert got == [True] and s.get("theirs") is not None
    s.close()


def test_memory_store_counts_commits():
    s = MemoryStore()
    s.put("a", {})
    with s.transaction():
        for i in range(5):
            s.put(f"k{i}", {})
    assert s.commits == 2
