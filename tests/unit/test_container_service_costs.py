"""What each container operation costs the daemon, as counts that do not depend on the
machine: one store commit per request, no runtime file read to list or look up
containers (their states are kept, fed by the service's own changes and the exit
watcher), lookups by name and ID prefix without a scan (cnm.container_index)."""

from __future__ import annotations

import pytest

from cnm.container_index import ContainerIndex
from cnm.container_record import Container
from cnm.container_requests import ContainerCreate, EndpointRequest
from cnm.errors import InvalidParameter, NotFound
from cnm.requests import IPAMConfigRequest, NetworkCreate
from cnm.runtime.state import ContainerState
from tests.unit.fakehost import FakeHost


@pytest.fixture
def host():
    h = FakeHost()
    yield h
    h.close()


def network(host: FakeHost, name: str, subnet: str):
    return host.controller.create_network(NetworkCreate(name=name, ipam_configs=[IPAMConfigRequest(subnet=subnet)]))


def commits(host: FakeHost, fn) -> int:
    before = host.store.commits
    fn()
    return host.store.commits - before


class CountingStates:
    """Counts the runtime's state reads (each one reads the container's files)."""

    def __init__(self, host: FakeHost) -> None:
        self.reads = 0
        real = host.runtime.state

        def state(cid: str):
            self.reads += 1
            return real(cid)

        host.runtime.state = state  # type: ignore[method-assign]


def test_requests_that_only_take_away_are_one_commit(host):
    """Requests that make kernel objects commit each record before the object it names
    (start, connect: cnm.reconcile's rule); those that only take away are one commit,
    the kernel's part after it. Remove also writes its intent ahead, on its own (its
    runtime directory goes before the records: a crash in between is finished at start)."""
    network(host, "a", "10.1.0.0/24")
    network(host, "b", "10.2.0.0/24")
    svc = host.containers
    assert commits(host, lambda: svc.create(ContainerCreate(argv=["sleep", "30"], name="c1", network_mode="a"))) == 1
    svc.start("c1")
    svc.connect("b", "c1", EndpointRequest())
    assert commits(host, lambda: svc.disconnect("b", "c1")) == 1
    assert commits(host, lambda: svc.remove("c1", force=True)) == 2  # intent, then the rest
    svc.run(ContainerCreate(argv=["true"], name="c2", network_mode="a"))
    host.runtime.wait(svc.get("c2").id, 10)
    assert commits(host, lambda: svc.handle_exit(svc.get("c2").id)) == 1  # the exit watcher's report


def test_listing_and_lookups_read_no_runtime_state(host):
    network(host, "a", "10.1.0.0/24")
    svc = host.containers
    for i in range(20):
        svc.run(ContainerCreate(argv=["sleep", "30"], name=f"c{i:02d}", network_mode="a"))
    svc.create(ContainerCreate(argv=["true"], name="made", network_mode="a"))
    counting = CountingStates(host)
    from cnm.api import container_filters as cf
    from cnm.api.container_listing import summaries

    rows = summaries(svc, cf.ListQuery(filters={}, all=True))
    assert len(rows) == 21 and {r["State"] for r in rows} == {"running", "created"}
    svc.get("c07")
    svc.get(svc.get("c03").id[:10])
    assert counting.reads == 0


def test_an_exit_is_seen_once_the_watcher_reports_it(host):
    network(host, "a", "10.1.0.0/24")
    svc = host.containers
    ct = svc.run(ContainerCreate(argv=["true"], name="quick", network_mode="a"))
    host.runtime.wait(ct.id, 10)
    svc.handle_exit(ct.id)  # what the exit watcher calls
    st = svc.state_of(ct.id)
    assert st is not None and (st.status, st.exit_code) == ("exited", 0)
    assert not svc.looks_running(ct)


def record(cid: str, name: str) -> Container:
    return Container(id=cid, name=name, created="", argv=["true"])


class NoRuntime:
    def state(self, cid: str):
        raise NotFound(cid)


def test_index_finds_by_name_id_and_unique_prefix():
    import threading

    idx = ContainerIndex(NoRuntime(), threading.RLock())
    a, b, c = record("abc123" + "0" * 58, "web"), record("abd999" + "0" * 58, "db"), record("f" * 64, "abc")
    for ct in (a, b, c):
        idx.add(ct)
    assert idx.get("web") is a and idx.get("/db") is b
    assert idx.get("abc") is c  # a name wins over an ID prefix (Docker's order)
    assert idx.get(a.id) is a and idx.get("abc1") is a and idx.get("ABD9") is b
    with pytest.raises(InvalidParameter, match="ambiguous: 2 containers match"):
        idx.get("ab")
    with pytest.raises(NotFound):
        idx.get("0123")
    old = a.name
    a.name = "www"
    idx.renamed(a, old)
    assert idx.get("www") is a and "web" not in idx.names()
    with pytest.raises(NotFound):
        idx.get("web")
    idx.drop(b)
    assert idx.get("ab") is a and "db" not in idx.names() and len(idx) == 2


class SlowExited:
    """A runtime whose state() reads "exited" and is slow to return it (a caller
    stopping a container, while a restart policy's start runs)."""

    def __init__(self) -> None:
        import threading

        self.reading, self.proceed = threading.Event(), threading.Event()

    def state(self, cid: str):
        self.reading.set()
        self.proceed.wait(5)
        return ContainerState(id=cid, status="exited", exit_code=0)


def test_a_refresh_never_overwrites_a_state_set_while_it_read():
    import threading

    lock = threading.RLock()
    runtime = SlowExited()
    idx = ContainerIndex(runtime, lock)
    ct = record("c" * 64, "web")
    idx.add(ct)
    reader = threading.Thread(target=idx.refresh, args=(ct.id,))
    reader.start()
    assert runtime.reading.wait(5)

    def start() -> None:  # as the service starts a container: under its lock
        with lock:
            idx.set_state(ct.id, ContainerState(id=ct.id, status="running", pid=42))

    starter = threading.Thread(target=start)
    starter.start()
    starter.join(0.3)  # a refresh reading outside the lock lets the start in now
    runtime.proceed.set()
    reader.join(5)
    starter.join(5)
    st = idx.state_of(ct.id)
    assert st is not None and st.status == "running", f"the refresh's older read won: {st}"
