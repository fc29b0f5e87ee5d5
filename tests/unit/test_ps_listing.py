"""`net ps` rendered by the daemon (cnm.api.ps_listing, `as=table`) prints the very bytes
the CLI prints from the API's JSON (what it does against a daemon that renders no table,
as it did for every listing before) — for every flag, after every kind of change, as the
time moves — and keeps each container's row until that container changes. Docker's
clients still get Docker's JSON."""

from __future__ import annotations

import json
import random
import re
import time
import types

import pytest

from cnm import ps_table, texttable
from cnm.api import container_listing, ps_listing
from cnm.api.client import APIClient
from cnm.cli.testing import invoke
from cnm.humanunits import duration_changes_at, human_duration
from cnm.render_container import status_text, status_until
from cnm.runtime.state import ContainerState

T0 = time.time()  # the frozen "now" of the listing tests


# -- pure: when a STATUS text changes ------------------------------------------------------


@pytest.mark.parametrize("top", [70, 4000, 3 * 86400, 40 * 86400, 900 * 86400, 3 * 365 * 86400])
def test_a_duration_text_holds_until_its_change_time(top):
    rng = random.Random(top)
    for _ in range(2000):
        s = rng.uniform(0, top)
        end = duration_changes_at(s)
        assert end > s or end > s - 0.002  # progress (or a rounding edge within 2 ms)
        for x in (s, (s + end) / 2, end - 1e-6, rng.uniform(s, end)):
            if x >= s:
                assert human_duration(x) == human_duration(s), (s, x, end)


def test_a_duration_text_changes_soon_after_its_change_time():
    # Not too early either: the next text comes within the second (a minute, an hour).
    for s, later in ((0.2, 1), (5.5, 6), (59.9, 60), (61, 120), (3599, 3600), (3600, 5400), (47 * 3600, 47.5 * 3600)):
        assert duration_changes_at(s) <= later
        assert human_duration(later + 0.001) != human_duration(s)


def _state(status, started=None, finished=None, code=None):
    iso = "%Y-%m-%dT%H:%M:%S"
    import datetime

    def rfc(t):
        if t is None:
            return None
        d = datetime.datetime.fromtimestamp(t, datetime.UTC)
        return d.strftime(iso) + f".{d.microsecond:06d}Z"

    return ContainerState("c" * 64, status, exit_code=code, started_at=rfc(started), finished_at=rfc(finished))


def test_status_until_gives_the_text_and_how_long_it_holds():
    rng = random.Random(7)
    for _ in range(500):
        started = T0 - rng.uniform(0, 3 * 86400)
        finished = started + rng.uniform(0, 3600)
        for st in (
            _state("running", started),
            _state("exited", started, finished, code=rng.randint(0, 255)),
            _state("restarting", started, finished, code=1),
        ):
            now = max(T0 - rng.uniform(0, 7200), finished)
            text, until = status_until(st, now)
            assert text == status_text(st, now)
            for later in (now, rng.uniform(now, until), until - 1e-4):
                if later >= now:
                    assert status_text(st, later) == text, (st, now, later, until)
    assert status_until(_state("created"), T0) == ("Created", float("inf"))
    assert status_until(None, T0) == ("Dead", float("inf"))


def test_the_ps_cells_and_table_are_dockers():
    entries = [
        {
            "Id": "a" * 64,
            "Names": ["/web"],
            "Command": "/bin/sh -c sleep 30 # a long one",
            "Status": "Up 5 minutes",
            "Ports": [
                {"PrivatePort": 81, "Type": "tcp"},
                {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            ],
            "NetworkSettings": {"Networks": {"front": {}, "back": {}}},
        },
        {"Id": "b" * 64, "Names": ["/é"], "Command": "échο", "Status": "Exited (2) 1 second ago", "Ports": []},
    ]
    text = texttable.table(ps_table.HEADERS, [ps_table.cells(c) for c in entries])
    assert text.splitlines() == [
        "CONTAINER ID   NAME   COMMAND                  STATUS                    PORTS                       NETWORKS",
        'aaaaaaaaaaaa   web    "/bin/sh -c sleep 30…"   Up 5 minutes              [::]:8080->80/tcp, 81/tcp   back,front',
        'bbbbbbbbbbbb   é      "échο"                   Exited (2) 1 second ago',
    ]
    assert ps_table.quiet_text([c["Id"] for c in entries]) == "a" * 12 + "\n" + "b" * 12 + "\n"


# -- the daemon's text against the CLI's own rendering ----------------------------------------


@pytest.fixture
def clock(monkeypatch):
    """A frozen clock for both listings (the daemon runs in this process, on a thread)."""
    now = [T0]
    for module in (ps_listing, container_listing):  # their `time` only, not everyone's
        monkeypatch.setattr(module, "time", types.SimpleNamespace(time=lambda: now[0]))
    return now


def _from_json(monkeypatch):
    """Make the CLI's client get JSON, as from a daemon that renders no table."""

    def containers_text(self, all=False, filters=None, no_trunc=False, quiet=False):
        return self.containers(all=all, filters=filters)

    monkeypatch.setattr(APIClient, "containers_text", containers_text)


FLAGS = [
    ["ps"],
    ["ps", "-a"],
    ["ps", "--no-trunc"],
    ["ps", "-a", "--no-trunc"],
    ["ps", "-q"],
    ["ps", "-aq"],
    ["ps", "-aq", "--no-trunc"],
    ["container", "ls", "-a"],
    ["ps", "-a", "-f", "status=exited"],
    ["ps", "-f", "name=web"],
    ["ps", "-a", "-q", "-f", "network=back"],
    ["ps", "-q", "--format", "json"],
]


def _both(server, monkeypatch, argv):
    ours = invoke(["-H", server.host, *argv])
    with monkeypatch.context() as m:
        _from_json(m)
        theirs = invoke(["-H", server.host, *argv])
    assert (ours.exit_code, theirs.exit_code) == (0, 0), ours.stderr + theirs.stderr
    return ours.stdout, theirs.stdout


def _same_for_every_flag(server, monkeypatch):
    outputs = {}
    for argv in FLAGS:
        ours, theirs = _both(server, monkeypatch, argv)
        assert ours == theirs, (argv, ours, theirs)
        outputs[" ".join(argv)] = ours
    return outputs


def _run(server, *args):
    r = invoke(["-H", server.host, "run", *args])
    assert r.exit_code in (0, 2), r.stderr
    return r


def test_the_daemons_table_is_the_clis_for_every_flag_and_change(server, service, monkeypatch, clock):
    out = _same_for_every_flag(server, monkeypatch)
    assert out["ps"] == "   ".join(ps_table.HEADERS) + "\n" and out["ps -q"] == ""
    invoke(["-H", server.host, "create", "back"])
    _run(server, "-d", "--name", "web", "-p", "8080:80", "-p", "81", "/bin/sh", "-c", "sleep 30")
    _run(server, "-d", "--name", "long", "/bin/sh", "-c", "sleep 30 # a comment longer than twenty, é")
    _run(server, "--name", "done", "/bin/sh", "-c", "exit 2")
    _run(server, "-d", "--name", "side", "--net", "container:web", "/bin/sh", "-c", "sleep 30")
    _run(server, "-d", "--name", "hosted", "--net", "none", "/bin/sh", "-c", "sleep 30")
    # (Every process here outlives the test: a state that changes between the two
    # listings of a comparison would make them differ.)
    made = {"Cmd": ["/bin/sh", "-c", "sleep 30"], "ExposedPorts": {"90/tcp": {}}, "HostConfig": {"NetworkMode": "back"}}
    APIClient(server.host).request("POST", "/containers/create", made, query={"name": "made"})
    out = _same_for_every_flag(server, monkeypatch)
    assert len(out["ps -a"].splitlines()) == 7, out["ps -a"]
    assert "Exited (2)" in out["ps -a"]
    steps: list[list[str] | tuple[str, str]] = [
        ["connect", "back", "long"],
        ("POST", "/containers/long/rename?name=longer"),
        ["stop", "-t", "0", "hosted"],
        ["network", "disconnect", "back", "longer"],
        ["container", "rm", "-f", "done"],
        ["create", "later"],
        ["rm", "later"],
        ["connect", "bridge", "made"],
        ("POST", "/containers/made/start"),
    ]
    for step in steps:
        if isinstance(step, tuple):
            APIClient(server.host).request(*step)
        else:
            r = invoke(["-H", server.host, *step])
            assert r.exit_code == 0, (step, r.stderr)
        clock[0] += 0.4
        _same_for_every_flag(server, monkeypatch)
    for jump in (1, 58, 61, 3500, 7200, 86400 * 3):  # the statuses' texts move on
        clock[0] += jump
        out = _same_for_every_flag(server, monkeypatch)
    assert "Up 3 days" in out["ps"] and re.search(r"Exited \(\d+\) 3 days ago", out["ps -a"])


def test_a_row_is_rendered_again_only_when_its_container_changes(server, service, monkeypatch, clock):
    for i in range(5):
        _run(server, "-d", "--name", f"c{i}", "/bin/sh", "-c", "sleep 30")
    rendered = []
    real = ps_listing.container_summary

    def counting(ct, *args, **kw):
        rendered.append(ct.name)
        return real(ct, *args, **kw)

    monkeypatch.setattr(ps_listing, "container_summary", counting)
    first = invoke(["-H", server.host, "ps"]).stdout
    assert sorted(rendered) == [f"c{i}" for i in range(5)]
    rendered.clear()
    assert invoke(["-H", server.host, "ps"]).stdout == first and rendered == []
    APIClient(server.host).request("POST", "/containers/c3/rename?name=c3b")
    assert "c3b" in invoke(["-H", server.host, "ps"]).stdout and rendered == ["c3b"]
    rendered.clear()
    invoke(["-H", server.host, "create", "n2"])  # a network's name may show: every row again
    invoke(["-H", server.host, "ps"])
    assert len(rendered) == 5


def test_docker_clients_still_get_dockers_json(server, service, monkeypatch, clock):
    _run(server, "-d", "--name", "web", "/bin/sh", "-c", "sleep 30")
    client = APIClient(server.host)
    status, headers, body = client.transport.request("GET", "/containers/json")
    assert (status, headers["content-type"]) == (200, "application/json")
    assert [c["Names"] for c in json.loads(body)] == [["/web"]]
    status, headers, body = client.transport.request("GET", "/containers/json?as=table&quiet=1")
    assert (status, headers["content-type"]) == (200, "text/plain; charset=utf-8")
    assert body.decode() == service.get("web").id[:12] + "\n"
    status, _, body = client.transport.request(
        "GET", "/containers/json?as=table&filters=%7B%22status%22%3A%5B%22bad%22%5D%7D"
    )
    assert status == 400 and b"invalid filter" in body
