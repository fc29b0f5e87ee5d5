"""Restart policies: Docker's rules for what a request may ask (messages included), the
decision and back-off after an exit (moby's restart manager), and the service
restarting real child processes by them (FakeHost: no root)."""

from __future__ import annotations

import time

import pytest

from cnm.container_requests import ContainerCreate
from cnm.errors import Conflict, InvalidParameter
from cnm.restart_policy import FIRST_DELAY, MAX_DELAY, RestartPolicy, decide, run_length
from tests.unit.fakehost import FakeHost

# -- the request ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, want",
    [
        (None, ("no", 0)),
        ({}, ("no", 0)),
        ({"Name": ""}, ("no", 0)),
        ({"Name": "", "MaximumRetryCount": 3}, ("no", 0)),
        ({"Name": "always"}, ("always", 0)),
        ({"Name": "unless-stopped", "MaximumRetryCount": 0}, ("unless-stopped", 0)),
        ({"Name": "on-failure"}, ("on-failure", 0)),
        ({"Name": "on-failure", "MaximumRetryCount": 5}, ("on-failure", 5)),
    ],
)
def test_policies_docker_accepts(raw, want):
    p = RestartPolicy.from_docker_json(raw)
    assert (p.name, p.max_retries) == want
    assert RestartPolicy.from_record(p.to_docker_json()) == p


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            {"Name": "sometimes"},
            "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', "
            "'on-failure', or 'unless-stopped'",
        ),
        (
            {"Name": "always", "MaximumRetryCount": 2},
            "invalid restart policy: maximum retry count can only be used with 'on-failure'",
        ),
        (
            {"Name": "no", "MaximumRetryCount": -1},
            "invalid restart policy: maximum retry count can only be used with 'on-failure' and cannot be negative",
        ),
        (
            {"Name": "on-failure", "MaximumRetryCount": -1},
            "invalid restart policy: maximum retry count cannot be negative",
        ),
        ({"Name": "on-failure", "MaximumRetryCount": "3"}, "MaximumRetryCount must be an integer"),
        ({"Name": 1}, "RestartPolicy.Name must be a string"),
        ("always", "RestartPolicy must be an object"),
    ],
)
def test_policies_docker_refuses(raw, message):
    with pytest.raises(InvalidParameter) as err:
        RestartPolicy.from_docker_json(raw)
    assert message in err.value.message


def test_auto_remove_and_a_restart_policy_conflict():
    body = {"Cmd": ["true"], "HostConfig": {"AutoRemove": True, "RestartPolicy": {"Name": "always"}}}
    with pytest.raises(InvalidParameter, match="can't create 'AutoRemove' container with restart policy"):
        ContainerCreate.from_docker_json(body)
    body["HostConfig"]["RestartPolicy"] = {"Name": "no"}
    assert ContainerCreate.from_docker_json(body).restart_policy == {"Name": "no", "MaximumRetryCount": 0}


# -- the decision ---------------------------------------------------------------------------

ALWAYS, UNLESS, NO = RestartPolicy("always"), RestartPolicy("unless-stopped"), RestartPolicy()


def test_back_off_doubles_from_100ms_to_a_minute_and_resets_after_10s_up():
    delay, seen = 0.0, []
    for _ in range(12):
        d = decide(ALWAYS, 1, False, 0.5, 0, delay)
        seen.append(d.delay)
        delay = d.delay
    assert seen[:4] == [0.1, 0.2, 0.4, 0.8] and seen[-1] == MAX_DELAY and max(seen) == MAX_DELAY
    assert decide(ALWAYS, 1, False, 10.0, 0, delay).delay == FIRST_DELAY  # it ran 10 s: start over
    assert decide(ALWAYS, 1, False, 9.9, 0, 0.4).delay == 0.8
    assert decide(ALWAYS, 1, False, None, 0, 0.4).delay == 0.8  # length unknown: no reset


def test_which_policy_restarts_what():
    on_failure, three = RestartPolicy("on-failure"), RestartPolicy("on-failure", 3)
    assert decide(ALWAYS, 0, True, 1, 0, 0).restart  # always: even after a user's kill
    assert decide(UNLESS, 0, False, 1, 0, 0).restart and not decide(UNLESS, 1, True, 1, 0, 0).restart
    assert decide(on_failure, 1, False, 1, 1000, 0).restart and not decide(on_failure, 0, False, 1, 0, 0).restart
    assert decide(three, 2, False, 1, 2, 0).restart and not decide(three, 2, False, 1, 3, 0).restart
    assert not decide(NO, 1, False, 1, 0, 0).restart
    # The back-off moves even when the answer is no (moby does the same).
    assert decide(NO, 1, False, 1, 0, 0.1).delay == 0.2


def test_run_length_reads_the_runtimes_times():
    assert run_length("2026-12-05T16:00:00.123456789Z", "2026-12-05T16:00:10.623456Z") == pytest.approx(10.5)
    assert run_length(None, "2026-12-05T16:00:00Z") is None and run_length("x", "y") is None


# -- the service, with real processes ---------------------------------------------------------


@pytest.fixture
def host():
    h = FakeHost()
    yield h
    h.close()


def run(host: FakeHost, name: str, argv: list[str], policy: dict):
    return host.containers.run(ContainerCreate(argv=argv, name=name, network_mode="none", restart_policy=policy))


def until(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def exits(host: FakeHost, ct) -> None:
    """The container's process ended; the service hears of it (the daemon's exit watcher
    does this)."""
    host.runtime.wait(ct.id, 10)
    host.containers.handle_exit(ct.id)


def starts(host: FakeHost, cid: str) -> int:
    history, _ = host.events.subscribe(lambda ev: None, since=0)
    return sum(1 for e in history if e.actor_id == cid and e.action == "start")


def test_on_failure_restarts_up_to_its_count_then_stays_exited(host):
    ct = run(host, "flaky", ["sh", "-c", "exit 3"], {"Name": "on-failure", "MaximumRetryCount": 2})
    for n in (1, 2):
        exits(host, ct)
        assert ct.restart_count == n
        until(lambda n=n: starts(host, ct.id) == n + 1)
    exits(host, ct)
    assert ct.restart_count == 2 and not host.containers.restarts.pending(ct.id)
    assert host.containers.state(ct).status == "exited" and host.containers.state(ct).exit_code == 3
    # A user's start begins again: count 0, and the policy applies anew.
    host.containers.start("flaky")
    assert ct.restart_count == 0
    exits(host, ct)
    assert ct.restart_count == 1


def test_on_failure_leaves_a_clean_exit_alone(host):
    ct = run(host, "fine", ["true"], {"Name": "on-failure"})
    exits(host, ct)
    assert ct.restart_count == 0 and not host.containers.restarts.pending(ct.id)


def test_stop_calls_always_off_until_a_users_start(host):
    ct = run(host, "svc", ["sleep", "30"], {"Name": "always"})
    assert host.containers.stop("svc", timeout=5)
    time.sleep(FIRST_DELAY * 3)
    assert host.containers.state(ct).status == "exited" and ct.manually_stopped and ct.restart_count == 0
    assert starts(host, ct.id) == 1
    host.containers.start("svc")
    assert not ct.manually_stopped
    host.runtime.kill(ct.id, 9)  # dies on its own: always brings it back
    exits(host, ct)
    until(lambda: host.containers.is_running(ct))
    assert ct.restart_count == 1


def test_kill_restarts_always_but_not_unless_stopped(host):
    a = run(host, "aa", ["sleep", "30"], {"Name": "always"})
    u = run(host, "uu", ["sleep", "30"], {"Name": "unless-stopped"})
    for ct in (a, u):
        host.containers.kill(ct.name, 9)
        exits(host, ct)
    until(lambda: host.containers.is_running(a))
    assert not host.containers.is_running(u) and not host.containers.restarts.pending(u.id)
    assert (a.restart_count, u.restart_count) == (1, 0) and u.manually_stopped


def test_a_restarting_container_shows_it_and_is_not_removed_without_force(host):
    ct = run(host, "loop", ["sh", "-c", "exit 1"], {"Name": "always"})
    host.containers.restarts._delay[ct.id] = 30.0  # the back-off has grown: next wait is a minute
    exits(host, ct)
    assert host.containers.restarts.pending(ct.id)
    with pytest.raises(Conflict, match="restarting container"):
        host.containers.remove("loop")
    assert host.containers.stop("loop")  # calls the restart off
    assert not host.containers.restarts.pending(ct.id) and ct.manually_stopped
    host.containers.remove("loop")


def test_a_restarting_container_is_listed_without_all_as_dockers_ps(host):
    """moby counts a restarting container as running: `docker ps` lists it (compose's
    stop finds its containers so). Both listings: Docker's JSON and net ps's table."""
    from cnm.api import container_filters as cf
    from cnm.api import container_listing
    from cnm.api.ps_listing import PsListing

    ps = PsListing(host.containers)
    running = cf.ListQuery(filters={}, all=False)
    ct = run(host, "loop", ["sh", "-c", "exit 1"], {"Name": "always"})
    host.containers.restarts._delay[ct.id] = 30.0  # the next back-off is a minute
    exits(host, ct)
    assert host.containers.restarts.pending(ct.id)
    [entry] = container_listing.summaries(host.containers, running)
    assert entry["State"] == "restarting" and entry["Status"].startswith("Restarting (1)")
    assert "loop" in ps.text(running) and "Restarting (1)" in ps.text(running)
    host.containers.stop("loop")  # calls the restart off: no longer listed (nor kept in a cached table)
    assert container_listing.summaries(host.containers, running) == []
    assert "loop" not in ps.text(running)


def test_a_policy_restart_stays_pending_until_its_start_has_run():
    """Between the back-off's end and the start, the container is still "restarting"
    (it was "exited" there: a listing in between missed it)."""
    from cnm.restarts import Restarts

    seen, changed = [], []
    restarts: Restarts

    def start(cid: str) -> None:
        seen.append(restarts.pending(cid))

    restarts = Restarts(start, changed.append)
    ct = type("Ct", (), {"id": "c1", "name": "c1", "restart_policy": {"Name": "always"}})()
    ct.manually_stopped, ct.restart_count = False, 0
    state = type("St", (), {"exit_code": 1, "started_at": None, "finished_at": None})()
    assert restarts.after_exit(ct, state)
    until(lambda: changed == ["c1"], timeout=10)
    assert seen == [True] and not restarts.pending("c1")
    restarts.close()


def test_a_restarted_daemon_starts_what_its_policy_says(host):
    cts = {
        n: run(host, n, ["sleep", "30"], {"Name": p})
        for n, p in (("al", "always"), ("us", "unless-stopped"), ("no", "no"), ("st", "unless-stopped"))
    }
    host.containers.stop("st", timeout=5)  # stopped by a user: stays stopped
    for n in ("al", "us", "no"):
        host.runtime.kill(cts[n].id, 9)  # die while "the daemon is down"
        host.runtime.wait(cts[n].id, 5)
    host.containers.restarts.close()
    again = host.restarted()
    try:
        until(lambda: all(again.containers.is_running(again.containers.get(n)) for n in ("al", "us")))
        assert not again.containers.is_running(again.containers.get("no"))
        assert not again.containers.is_running(again.containers.get("st"))
    finally:
        again.containers.restarts.close()


def test_restarts_at_daemon_start_wait_until_start_up_has_swept(host, monkeypatch):
    """A restart's back-off may pass while the restarted daemon still adopts, gives back
    addresses and sweeps: a start then would race those (its new namespace swept as an
    orphan, seen by the crash test). It waits, "restarting", until start-up is done."""
    ct = run(host, "al", ["sleep", "30"], {"Name": "always"})
    host.runtime.kill(ct.id, 9)
    host.runtime.wait(ct.id, 5)
    host.containers.restarts.close()
    seen = []
    real = FakeHost.sweep

    def slow_sweep(self: FakeHost):
        time.sleep(FIRST_DELAY * 4)  # well past the restart's back-off
        seen.append((self.containers.restarts.pending(ct.id), starts(self, ct.id)))
        return real(self)

    monkeypatch.setattr(FakeHost, "sweep", slow_sweep)
    again = host.restarted()
    try:
        assert seen == [(True, 0)]
        until(lambda: again.containers.is_running(again.containers.get("al")))
    finally:
        again.containers.restarts.close()


def test_a_container_whose_start_record_a_crash_lost_is_restarted_by_its_policy(host):
    """Its process ran (the runtime says it exited) but a crash came before the record
    said it started: it ran, so the restarted daemon applies its policy (it was left
    "never started")."""
    ct = run(host, "lost", ["sleep", "30"], {"Name": "always"})
    ct.started = False
    host.containers._save(ct)
    host.runtime.kill(ct.id, 9)
    host.runtime.wait(ct.id, 5)
    host.containers.restarts.close()
    again = host.restarted()
    try:
        until(lambda: again.containers.is_running(again.containers.get("lost")))
        assert again.containers.get("lost").started
    finally:
        again.containers.restarts.close()
