"""The realiser and the checks through the recording runner: no root, no processes."""

from __future__ import annotations

import copy
import json
import secrets
import shutil

import pytest

from cnm.errors import Conflict
from cnm.lab.checks import parse_mtu, pick_address, probe_argv, run_checks
from cnm.lab.realise import LabUpFailed, Realiser
from cnm.lab.record import LabRecord, list_labs
from cnm.lab.runner import RecordingRunner, Result, short
from cnm.lab.topology import parse

DOC = {
    "hosts": ["h1", "h2"],
    "cluster_store": {"etcd": 1},
    "underlay": {"links": {"h2": {"mtu": 1400, "rate": "10mbit"}}},
    "networks": [
        {"name": "ov", "driver": "overlay", "subnet": "10.10.0.0/24"},
        {"name": "br", "subnet": "10.20.0.0/24"},
    ],
    "containers": [
        {"name": "c1", "host": "h1", "networks": ["ov", "br"], "ip": "10.10.0.5", "ports": ["80"]},
        {"name": "c2", "host": "h2", "network": "ov"},
        {"name": "c3", "host": "h2", "network": "br"},
    ],
    "checks": [
        {"from": "c2", "ping": "c1"},
        {"from": "c3", "ping": "c1", "expect": "fail"},
        {"from": "c2", "tcp": "h1:8080"},
        {"from": "c1", "mtu": 1450},
    ],
}


BUSYBOX = shutil.which("busybox")  # a lab container without image: runs the host's, by path


@pytest.fixture
def labdir(tmp_path, monkeypatch):
    monkeypatch.setenv("CNM_LAB_DIR", str(tmp_path))
    return tmp_path


def fake_etcd(started):
    def start(members, base, timing):
        started.append((list(members), timing))
        return "etcd://" + ",".join(f"{a}:2379" for _, a, _ in members), [
            {
                "name": n,
                "pid": None,
                "client_url": f"http://{a}:2379",
                "log": str(base / f"{n}.log"),
                "data_dir": str(base / n),
            }
            for n, a, _ in members
        ]

    return start


class FakeLauncher:
    """Records the daemons it is asked for; every one answers at once."""

    def __init__(self):
        self.spawned: list = []
        self.opened = self.closed = 0

    def open(self):
        self.opened += 1

    def spawn(self, config, netns, log, cmdline):
        self.spawned.append((config, netns, str(log), cmdline))
        return (1 << 30) + len(self.spawned)  # above pid_max: never a real process

    def answers(self, sock_path):
        return True

    def close(self):
        self.closed += 1


def make(doc_overrides=None, respond=None):
    name = "u" + secrets.token_hex(3)
    doc = copy.deepcopy(DOC)
    doc.update(doc_overrides or {})
    doc["name"] = name
    lab = parse(doc, "t.yaml")
    runner = RecordingRunner(respond)
    started: list = []
    launcher = FakeLauncher()
    real = Realiser(
        runner, etcd_starter=fake_etcd(started), sleep=lambda s: None, launcher_factory=lambda rec: launcher, workers=4
    )
    real.launcher = launcher  # for the tests' eyes
    return lab, doc, runner, real, started


def argvs(runner):
    return [" ".join(a) for _, a in runner.calls]


def test_up_builds_in_order_and_records_everything(labdir):
    lab, doc, runner, real, started = make()
    rec = real.up(lab, doc, source="t.yaml")
    calls = [(ns, " ".join(a)) for ns, a in runner.calls]
    cmds = [c for _, c in calls]
    n, sw, h1, h2 = lab.name, lab.switch_namespace, lab.namespace("h1"), lab.namespace("h2")
    # the root namespace is never touched: every ip command names a namespace or makes one
    for c in cmds:
        if c.startswith("ip "):
            assert c.startswith(("ip -batch -", "ip -n lab-")), c
    # the underlay is a handful of `ip -batch` runs; their scripts are in cnm.lab.underlay
    batches = [c for c in cmds if "-batch" in c]
    assert batches[:2] == ["ip -batch -", f"ip -n {sw} -batch -"]
    assert sorted(batches[2:4]) == [f"ip -n {h1} -batch -", f"ip -n {h2} -batch -"]
    assert batches[4] == f"ip -n {sw} -batch -"
    assert any(c.startswith("tc qdisc replace dev ul0 root tbf rate 10mbit") for c in cmds)  # h2's link
    assert started == [([("etcd-h1", "198.18.0.1", h1)], (100, 1000))]
    launcher = real.launcher
    assert launcher.opened == launcher.closed == 1
    spawned = {cfg["root"]: (cfg, netns, cmdline) for cfg, netns, _, cmdline in launcher.spawned}
    cfg2, netns2, cmdline2 = spawned[rec.hosts["h2"]["root"]]
    assert netns2 == f"/run/netns/{h2}"
    assert cfg2 == {
        "root": rec.hosts["h2"]["root"],
        "run_dir": rec.hosts["h2"]["run"],
        "socket": rec.hosts["h2"]["socket"],
        "cluster_store": "etcd://198.18.0.1:2379",
        "advertise": "198.18.0.2",
    }
    assert cmdline2.startswith("net daemon --root ") and cmdline2.endswith("--advertise 198.18.0.2")
    shorts = [short(a) for _, a in runner.calls]
    assert shorts.count("net network create -d overlay --subnet 10.10.0.0/24 ov") == 1
    assert shorts.count("net network create -d bridge --subnet 10.20.0.0/24 br") == 2
    run_c1 = f"net run -d --name c1 --hostname c1 --net ov --ip 10.10.0.5 -p 80 -- {BUSYBOX} sleep 1d"
    assert run_c1 in shorts
    assert shorts.index(run_c1) < shorts.index("net network connect br c1")
    # phases in order: every network exists before any container starts
    assert max(i for i, c in enumerate(shorts) if "network create" in c) < shorts.index(run_c1)
    saved = LabRecord.load(n)
    assert saved.status == "up" and saved.namespaces == [sw, h1, h2]
    assert sorted(saved.containers) == [["c1", "h1"], ["c2", "h2"], ["c3", "h2"]]
    assert saved.containers.index(["c2", "h2"]) < saved.containers.index(["c3", "h2"])  # a host's, in order
    assert sorted(saved.networks) == [["br", "h1"], ["br", "h2"], ["ov", "h1"]]
    assert saved.impair == {"h2": {"rate": "10mbit", "loss": None, "delay": None}}
    assert saved.cluster_store == "etcd://198.18.0.1:2379" and saved.topology == doc
    assert saved.hosts["h1"]["socket"] == str(labdir / n / "h1" / "cnm.sock")
    assert [r.name for r in list_labs()] == [n] and rec.name == n


def test_underlay_scripts_make_namespaces_links_and_ports(labdir):
    lab, doc, runner, real, _ = make()
    real.up(lab, doc)
    fed = {" ".join(a): i for (_, a), i in zip(runner.calls, runner.inputs, strict=True) if "-batch" in a and i}
    sw, h1, h2 = lab.switch_namespace, lab.namespace("h1"), lab.namespace("h2")
    assert fed["ip -batch -"] == f"netns add {sw}\nnetns add {h1}\nnetns add {h2}\n"
    assert fed[f"ip -n {h2} -batch -"] == (
        "link set lo up\n"
        f"link add ul0 mtu 1400 type veth peer name p-h2 mtu 1400 netns {sw}\n"
        "address add 198.18.0.2/24 dev ul0\nlink set ul0 up\n"
    )
    switch = [i for (_, a), i in zip(runner.calls, runner.inputs, strict=True) if a[:3] == ("ip", "-n", sw)]
    assert switch == [
        "link set lo up\nlink add br0 type bridge\nlink set br0 up\n",
        "link set p-h1 master br0 up\nlink set p-h2 master br0 up\n",
    ]


def test_failure_half_way_names_the_step_and_tears_down(labdir):
    def respond(argv, netns):
        if "run" in argv and "c2" in argv:
            return Result(argv, 125, "", "Error: network ov not found\n")
        return None

    lab, doc, runner, real, _ = make(respond=respond)
    with pytest.raises(LabUpFailed) as info:
        real.up(lab, doc)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"lab {lab.name}: step 'container c2 on h2' failed:" in msg
    assert "Error: network ov not found" in msg and "torn down" in msg
    assert not (labdir / lab.name).exists()  # the record went with the lab
    assert "net run -d --name c3" not in " ".join(short(a) for _, a in runner.calls)  # c2 first on h2


def test_a_daemon_that_dies_at_start_up_fails_its_step(labdir):
    lab, doc, runner, real, _ = make()
    real.launcher.answers = lambda sock: False  # never answers; and its pid is no process
    with pytest.raises(LabUpFailed, match=r"step 'daemon h\d' failed: the daemon on h\d exited at start-up"):
        real.up(lab, doc)
    assert not (labdir / lab.name).exists()


def test_stale_record_is_removed_and_a_live_one_is_a_conflict(labdir, monkeypatch):
    lab, doc, runner, real, _ = make()
    real.up(lab, doc)
    from cnm.lab import procs

    monkeypatch.setattr(procs, "alive", lambda pid, start: True)
    with pytest.raises(Conflict, match=f"lab {lab.name} is already up"):
        real.up(lab, doc)
    monkeypatch.setattr(procs, "alive", lambda pid, start: False)
    assert real.up(lab, doc).status == "up"  # a crashed lab's record is cleared first


def test_a_lab_whose_up_was_killed_is_cleared_by_the_next_up(labdir, monkeypatch):
    lab, doc, runner, real, _ = make()
    rec = real.up(lab, doc)
    rec.status, rec.builder = "building", {"pid": 4242, "start": 7}  # `net lab up` killed part-way
    rec.save()
    from cnm.lab import procs
    from cnm.lab.realise import interrupted

    monkeypatch.setattr(procs, "alive", lambda pid, start: pid != 4242)  # its daemons live on
    assert interrupted(LabRecord.load(lab.name))
    again = real.up(lab, doc)  # no "already up"
    assert again.status == "up" and not interrupted(again)
    assert again.builder["pid"] != 4242


def test_daemon_argv_without_cluster_store(labdir):
    lab, doc, runner, real, _ = make(
        {"cluster_store": {"etcd": 0}, "networks": [], "checks": [], "containers": [{"name": "c", "host": "h1"}]}
    )
    rec = real.up(lab, doc)
    argv = real.daemon_argv(rec, "h1")
    assert argv[1:] == [
        "daemon",
        "--root",
        rec.hosts["h1"]["root"],
        "--run-dir",
        rec.hosts["h1"]["run"],
        "--socket",
        rec.hosts["h1"]["socket"],
    ]
    assert real.daemon_config(rec, "h1") == {
        "root": rec.hosts["h1"]["root"],
        "run_dir": rec.hosts["h1"]["run"],
        "socket": rec.hosts["h1"]["socket"],
    }


def test_etcd_timing_reaches_the_starter(labdir):
    lab, doc, runner, real, started = make({"cluster_store": {"etcd": 1, "heartbeat": 250}})
    rec = real.up(lab, doc)
    assert started[0][1] == (250, 2500)
    assert rec.etcd["etcd-h1"]["timing"] == [250, 2500]  # kept for `net lab start --etcd`


# --- checks -------------------------------------------------------------------------------

INSPECT = {"c1": {"ov": {"IPAddress": "10.10.0.5"}, "br": {"IPAddress": "10.20.0.2"}}}


def test_pick_address_prefers_named_then_shared_network():
    lab = parse({**DOC, "name": "p"})
    ping_c1 = lab.checks[0]  # c2 (h2, ov) -> c1
    assert pick_address(lab, ping_c1, INSPECT["c1"], {}) == "10.10.0.5"
    isolated = lab.checks[1]  # c3 (br on h2) -> c1: br is per host, not shared
    assert pick_address(lab, isolated, INSPECT["c1"], {}) == "10.10.0.5"  # c1's first network
    to_host = lab.checks[2]
    assert pick_address(lab, to_host, {}, {"h1": "198.18.0.1"}) == "198.18.0.1"
    assert probe_argv("/s.sock", to_host, "198.18.0.1")[-5:] == ["busybox", "nc", "-w2", "198.18.0.1", "8080"]
    assert probe_argv("/s.sock", ping_c1, "10.10.0.5")[1:] == [
        "-H",
        "unix:///s.sock",
        "exec",
        "c2",
        "--",
        "busybox",
        "ping",
        "-c1",
        "-W2",
        "10.10.0.5",
    ]


def test_run_checks_outcomes_against_expectations():
    lab = parse({**DOC, "name": "p"})

    def respond(argv, netns):
        if "inspect" in argv:
            name = argv[-1]
            return Result(argv, 0, json.dumps([{"NetworkSettings": {"Networks": INSPECT.get(name, {})}}]))
        if "ping" in argv:
            return Result(argv, 0 if "c2" in argv else 1)  # c2 reaches, c3 does not
        if "nc" in argv:
            return Result(argv, 1, "", "nc: can't connect\n")
        if "link" in argv:
            return Result(argv, 0, "5: eth0@if6: <BROADCAST,UP> mtu 1450 qdisc noqueue\n")
        return None

    runner = RecordingRunner(respond)
    results = run_checks(lab, {"h1": "/1.sock", "h2": "/2.sock"}, {"h1": "198.18.0.1", "h2": "198.18.0.2"}, runner)
    assert [(r.ok, r.detail) for r in results] == [
        (True, "10.10.0.5 reached"),
        (True, "10.10.0.5 unreachable"),  # expected to fail, and it did
        (False, "198.18.0.1:8080 unreachable"),
        (True, "mtu 1450"),
    ]
    # an expected pass gets three tries before it fails; an expected failure one
    assert sum(1 for _, a in runner.calls if "nc" in a) == 3
    assert sum(1 for _, a in runner.calls if "ping" in a and "c3" in a) == 1
    assert parse_mtu("garbage") is None


def test_exec_plan_points_net_at_the_hosts_daemon(labdir):
    from cnm.cli.lab import exec_plan

    lab, doc, runner, real, _ = make()
    rec = real.up(lab, doc)
    argv, env = exec_plan(rec, "h2", ["net", "ps"])
    assert argv == ["ip", "netns", "exec", lab.namespace("h2"), "net", "ps"]
    assert env["NET_HOST"] == f"unix://{rec.hosts['h2']['socket']}"
