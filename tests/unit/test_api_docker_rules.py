"""Docker's API rules, pure: version negotiation, times, filters (networks, events,
containers, prune) and the event bus."""

from __future__ import annotations

import datetime
import threading

import pytest

from cnm.api import container_filters as cf
from cnm.api.filters import event_matches, network_matches, parse_filters
from cnm.api.networks import prune_selector
from cnm.api.timestamps import get_timestamp, parse_duration, parse_timestamp
from cnm.api.version import check_version, compare
from cnm.errors import InvalidParameter, NotFound, Unavailable
from cnm.events import EventBus
from cnm.model import Network
from cnm.requests import NOT_A_SWARM_MANAGER, NetworkCreate

UTC = datetime.UTC
NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
S = 1_000_000_000


# -- versions ----------------------------------------------------------------------------


def test_versions_compare_numerically():
    assert compare("1.9", "1.43") == -1 and compare("1.43", "1.43.0") == 0 and compare("2", "1.99") == 1


def test_version_out_of_range_is_refused_in_dockers_words():
    assert check_version("") == "1.43" and check_version("1.24") == "1.24" and check_version("1.41") == "1.41"
    with pytest.raises(
        InvalidParameter,
        match=r"^client version 1.99 is too new. Maximum supported API "
        r"version is 1.43$",
    ):
        check_version("1.99")
    with pytest.raises(
        InvalidParameter,
        match=r"^client version 1.12 is too old. Minimum supported API "
        r"version is 1.24, please upgrade",
    ):
        check_version("1.12")


# -- times -------------------------------------------------------------------------------


def test_wire_timestamps():
    assert parse_timestamp("1700000000") == 1700000000 * S
    assert parse_timestamp("1700000000.5") == 1700000000 * S + 500_000_000
    assert parse_timestamp("1700000000.000000001") == 1700000000 * S + 1
    for bad in ("", "1h", "12.x", "abc"):
        with pytest.raises(InvalidParameter):
            parse_timestamp(bad)


def test_go_durations():
    assert parse_duration("1h30m") == 5400 * S
    assert parse_duration("1.5h") == 5400 * S
    assert parse_duration("300ms") == 300_000_000
    assert parse_duration("-2m") == -120 * S
    assert parse_duration("10") is None and parse_duration("h") is None and parse_duration("1d") is None


def test_user_times_as_docker_reads_them():
    now_ns = int(NOW.timestamp()) * S
    assert get_timestamp("10m", NOW) == now_ns - 600 * S
    assert get_timestamp("0", NOW) == 0  # a timestamp, not a duration
    assert get_timestamp("2024-05-01", NOW) == now_ns - 12 * 3600 * S
    assert get_timestamp("2024-05-01T11:00:00Z", NOW) == now_ns - 3600 * S
    assert get_timestamp("2024-05-01T13:00:00+02:00", NOW) == now_ns - 3600 * S
    assert get_timestamp("2024-05-01T11:00", NOW) == now_ns - 3600 * S  # no zone: the daemon's
    assert get_timestamp("1714561200.25", NOW) == 1714561200 * S + 250_000_000
    for bad in ("yesterday", "2024-13-01", "1x"):
        with pytest.raises(InvalidParameter):
            get_timestamp(bad, NOW)


# -- networks ------------------------------------------------------------------------------


def net(
    name: str,
    labels: dict | None = None,
    created: str = "2024-05-01T10:00:00Z",
    builtin: bool = False,
    driver: str = "bridge",
) -> Network:
    return Network(
        id=f"{abs(hash(name)):064x}"[:64],
        name=name,
        driver=driver,
        created=created,
        labels=labels or {},
        builtin=builtin,
    )


def test_network_list_filters_follow_docker():
    a, b = net("front", {"env": "prod", "tier": "web"}), net("back", {"env": "dev"})
    bridge = net("bridge", builtin=True)
    f = parse_filters('{"label": ["env", "tier=web"]}')  # label values are AND'ed
    assert [n.name for n in (a, b) if network_matches(n, f)] == ["front"]
    f = parse_filters('{"name": ["fro", "ack"]}')  # name values OR'ed, regex
    assert [n.name for n in (a, b) if network_matches(n, f)] == ["front", "back"]
    f = parse_filters('{"dangling": ["true"]}')
    assert network_matches(a, f, in_use=False) and not network_matches(b, f, in_use=True)
    assert not network_matches(bridge, f, in_use=False)  # predefined is never dangling
    assert network_matches(bridge, parse_filters('{"dangling": ["0"]}'))
    with pytest.raises(InvalidParameter, match='must be "true"'):
        network_matches(a, parse_filters('{"dangling": ["maybe"]}'))
    with pytest.raises(InvalidParameter, match="invalid filter 'until'"):
        parse_filters('{"until": ["1h"]}')


def test_network_prune_filters():
    old = net("old", {"keep": "yes"}, created="2024-05-01T09:00:00Z")
    new = net("new", {"keep": "no"}, created="2024-05-01T11:59:00Z")
    bare = net("bare", created="2024-05-01T09:00:00Z")

    def chosen(raw: str) -> list[str]:
        select = prune_selector(parse_filters(raw, frozenset({"until", "label", "label!"})), NOW)
        return [n.name for n in (old, new, bare) if select(n)]

    assert chosen('{"label": ["nomatch"]}') == []  # the bug: this pruned everything
    assert chosen('{"label": ["keep"]}') == ["old", "new"]
    assert chosen('{"label": ["keep=yes"]}') == ["old"]
    assert chosen('{"label!": ["keep"]}') == ["bare"]
    assert chosen('{"label!": ["keep=no"]}') == ["old", "bare"]
    assert chosen('{"until": ["1h"]}') == ["old", "bare"]
    assert chosen('{"until": ["2024-05-01T09:30:00Z"], "label": ["keep"]}') == ["old"]
    with pytest.raises(InvalidParameter, match="more than one until"):
        chosen('{"until": ["1h", "2h"]}')


def test_swarm_and_config_only_networks_are_refused():
    with pytest.raises(Unavailable, match="not a swarm manager"):
        NetworkCreate.from_docker_json({"Name": "s", "Scope": "swarm"})
    with pytest.raises(Unavailable) as info:
        NetworkCreate.from_docker_json({"Name": "s", "Ingress": True})
    assert info.value.message == NOT_A_SWARM_MANAGER
    with pytest.raises(InvalidParameter, match="--config-only"):
        NetworkCreate.from_docker_json({"Name": "s", "ConfigOnly": True})
    with pytest.raises(InvalidParameter, match="--config-from"):
        NetworkCreate.from_docker_json({"Name": "s", "ConfigFrom": {"Network": "cfg"}})
    with pytest.raises(InvalidParameter, match="invalid scope"):
        NetworkCreate.from_docker_json({"Name": "s", "Scope": "planet"})
    assert (
        NetworkCreate.from_docker_json({"Name": "s", "Scope": "local", "ConfigFrom": {"Network": ""}}).scope == "local"
    )


# -- events ----------------------------------------------------------------------------------


def ev_ok(
    raw: str, type_: str = "container", action: str = "start", actor: str = "abc123", attrs: dict | None = None
) -> bool:
    from cnm.api.filters import EVENT_FILTERS

    return event_matches(
        type_,
        action,
        actor,
        attrs or {"name": "web", "image": "busybox:latest"},
        "local",
        parse_filters(raw, EVENT_FILTERS),
    )


def test_event_filters():
    assert ev_ok('{"container": ["web"]}') and ev_ok('{"container": ["abc"]}')  # name, ID prefix
    assert not ev_ok('{"container": ["db"]}')
    # container=web keeps only web's own events: a network's event is another actor
    assert not ev_ok(
        '{"container": ["web"]}',
        "network",
        "connect",
        "n1id",
        {"name": "front", "container": "abc123", "type": "bridge"},
    )
    assert ev_ok('{"network": ["front"]}', "network", "connect", "n1id", {"name": "front"})
    assert ev_ok('{"type": ["network", "container"], "event": ["start", "die"]}')
    assert not ev_ok('{"event": ["die"]}')
    assert ev_ok('{"event": ["exec_start"]}', action="exec_start: sh -c true")  # Docker's prefix rule
    assert ev_ok('{"image": ["busybox"]}') and ev_ok('{"image": ["busybox:latest"]}')
    assert ev_ok('{"label": ["tier=web"]}', attrs={"name": "web", "tier": "web"})
    assert not ev_ok('{"label": ["tier=web", "env"]}', attrs={"name": "web", "tier": "web"})


def test_event_bus_history_and_live_without_gaps():
    clock = iter(range(100, 1000, 10))
    bus = EventBus(keep=3, clock=lambda: next(clock))
    for i in range(4):
        bus.publish("network", "create", f"n{i}", {"name": f"n{i}"})
    got: list = []
    history, unsubscribe = bus.subscribe(got.append, since=0)
    assert [e.actor_id for e in history] == ["n1", "n2", "n3"]  # the last `keep`
    assert bus.subscribe(got.append)[0] == []  # no since/until: no history
    history, _ = bus.subscribe(lambda e: None, since=120, until=130)
    assert [e.actor_id for e in history] == ["n2", "n3"]
    bus.publish("container", "start", "c1")
    unsubscribe()
    bus.publish("container", "die", "c1", {"exitCode": "0"})
    assert [(e.action, e.actor_id) for e in got] == [("start", "c1"), ("start", "c1"), ("die", "c1")]
    message = got[-1].to_docker()
    assert message["status"] == "die" and message["id"] == "c1" and message["Actor"]["Attributes"]["exitCode"] == "0"
    assert message["time"] == message["timeNano"] // S
    assert "status" not in history[0].to_docker()  # networks have no legacy fields


def test_event_times_strictly_increase_under_threads():
    bus = EventBus(keep=10_000, clock=lambda: 5)  # a clock that stands still
    threads = [
        threading.Thread(target=lambda: [bus.publish("network", "create", "n") for _ in range(200)]) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times = [e.time_nano for e in bus.subscribe(lambda e: None, since=0)[0]]
    assert len(times) == 800 and times == sorted(set(times))


# -- containers ------------------------------------------------------------------------------


def row(name: str, created: str, status: str = "running", **kw) -> cf.Row:
    return cf.Row(id=f"{name}0000", name=name, created=created, status=status, **kw)


ROWS = [  # newest first, as the service lists them
    row("d", "2024-05-01T11:04:00Z", "exited", exit_code=0, started=True, labels={"env": "dev"}),
    row(
        "c",
        "2024-05-01T11:03:00Z",
        "exited",
        exit_code=3,
        started=True,
        image="busybox:latest",
        image_id="sha256:feedbeef",
    ),
    row(
        "b",
        "2024-05-01T11:02:00Z",
        networks={"front": "f00d" * 16},
        published=[(8080, "tcp")],
        exposed=[(80, "tcp")],
        labels={"env": "prod", "tier": "web"},
    ),
    row("a", "2024-05-01T11:01:00Z", "created", labels={"env": "prod"}),
]


def names(raw: str, all_: bool = True) -> list[str]:
    by_ref = {r.name: r for r in ROWS}

    def find(ref: str) -> cf.Row:
        if ref not in by_ref:
            raise NotFound(f"no such container: {ref}")
        return by_ref[ref]

    q = cf.ListQuery.parse(parse_filters(raw, cf.LIST_FILTERS), all_)
    return [r.name for r in cf.select(ROWS, q, find)]


def test_ps_filters():
    assert names("", all_=False) == ["b"]
    assert names('{"status": ["exited"]}', all_=False) == ["d", "c"]  # a status lists stopped ones
    assert names('{"exited": ["3"]}') == ["c"]
    assert names('{"exited": ["0"]}') == ["d"]  # "created" never ran: no exit code
    assert names('{"label": ["env=prod"]}') == ["b", "a"]
    assert names('{"label": ["env=prod", "tier"]}') == ["b"]
    assert names('{"network": ["front"]}') == ["b"] and names('{"network": ["f00d"]}') == ["b"]
    assert names('{"ancestor": ["busybox"]}') == ["c"] and names('{"ancestor": ["feedb"]}') == ["c"]
    assert names('{"before": ["c"]}') == ["b", "a"] and names('{"since": ["b"]}') == ["d", "c"]
    assert names('{"publish": ["8080"]}') == ["b"] and names('{"publish": ["8000-8090/udp"]}') == []
    assert names('{"expose": ["80/tcp"]}') == ["b"]
    assert names('{"name": ["^/?[ab]$"]}') == ["b", "a"]
    assert names('{"health": ["none"]}') == ["d", "c", "b", "a"] and names('{"health": ["healthy"]}') == []
    assert names('{"volume": ["/data"]}') == [] and names('{"is-task": ["false"]}') == ["d", "c", "b", "a"]
    with pytest.raises(NotFound):
        names('{"before": ["nosuch"]}')
    for bad in ('{"status": ["sleeping"]}', '{"exited": ["x"]}', '{"publish": ["web"]}', '{"health": ["ok"]}'):
        with pytest.raises(InvalidParameter):
            names(bad)


def test_container_prune_filters():
    def pruned(raw: str) -> list[str]:
        chosen = cf.prune_selector(parse_filters(raw, cf.PRUNE_FILTERS), NOW)
        return [r.name for r in ROWS if chosen(r)]

    assert pruned("") == ["d", "c", "a"]  # never a running one
    assert pruned('{"label": ["env=prod"]}') == ["a"]
    assert pruned('{"label!": ["env"]}') == ["c"]
    assert pruned('{"until": ["2024-05-01T11:03:30Z"]}') == ["c", "a"]
    assert pruned('{"label": ["nomatch"]}') == []


def test_top_parses_ps_as_docker_does():
    from cnm.api.top import parse_ps

    out = (
        "UID  PID  PPID  C STIME TTY TIME CMD\n"
        "root 10   1     0 10:00 ?   0:00 sleep 100 --flag\n"
        "root 11   10    0 10:00 ?   0:00 sh -c 'a b'\n"
        "root 12   1     0 10:00 ?   0:00 other\n"
    )
    got = parse_ps(out, [10, 11])
    assert got["Titles"] == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert [r[-1] for r in got["Processes"]] == ["sleep 100 --flag", "sh -c 'a b'"]
    with pytest.raises(InvalidParameter, match="PID field"):
        parse_ps("COMMAND\nsleep\n", [1])


def test_stats_sources_parse():
    from cnm.api.stats import parse_net_dev, proc_cpu_ns, system_cpu_ns

    net_dev = (
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
        "    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n"
        "  eth0:    1500      10    1    2    0     0          0         0      700       5    0    3    0     0       0          0\n"
    )
    assert parse_net_dev(net_dev) == {
        "eth0": {
            "rx_bytes": 1500,
            "rx_packets": 10,
            "rx_errors": 1,
            "rx_dropped": 2,
            "tx_bytes": 700,
            "tx_packets": 5,
            "tx_errors": 0,
            "tx_dropped": 3,
        }
    }
    assert system_cpu_ns("cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\n", 100) == 1_000_000_000
    stat = "42 (my proc) S 1 42 42 0 -1 4194560 100 0 0 0 50 25 10 5 20 0 1 0 100 1000 200"
    assert proc_cpu_ns(stat, 100, with_children=False) == (500_000_000, 250_000_000)
    assert proc_cpu_ns(stat, 100, with_children=True) == (600_000_000, 300_000_000)


def test_logs_tail_values():
    from cnm.api.logs import parse_tail

    assert parse_tail(None) is None and parse_tail("all") is None and parse_tail("3") == 3
    with pytest.raises(InvalidParameter, match="tail"):
        parse_tail("few")
