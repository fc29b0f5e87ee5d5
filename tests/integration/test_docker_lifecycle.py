"""The container life cycle as Docker's clients drive it: create (nothing runs, no
network taken), start, run attached and detached, --rm, wait, stop -t, restart, kill,
rename (names in DNS follow), rm -f, inspect's fields; docker CLI 20.10 and 28 and
docker-py. One daemon for the module."""

from __future__ import annotations

import time

import pytest

from tests.integration import docker_clients
from tests.integration.docker_clients import (
    module_daemon,
    uniq,
)


@pytest.fixture(scope="module")
def daemon():
    with module_daemon("cnmdl") as d:
        yield d


cli = docker_clients.cli_fixture
dpy = docker_clients.dpy_fixture


def test_run_attached_detached_and_rm(cli, dpy):
    r = cli("run", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    name = uniq("rm")
    r = cli("run", "--rm", "--name", name, "busybox", "sh", "-c", "sleep 0.3; echo gone")
    assert r.stdout == "gone\n" and name not in cli.lines("ps", "-a", "--format", "{{.Names}}")
    name = uniq("bg")
    began = time.monotonic()
    cid = cli("run", "-d", "--name", name, "busybox", "sleep", "60").stdout.strip()
    assert len(cid) == 64 and time.monotonic() - began < 10  # -d returns at once
    assert cli.lines("ps", "--filter", f"name={name}", "--format", "{{.Status}}")[0].startswith("Up")
    cli("rm", "-f", name)
    r = cli("run", "busybox", "nosuchcmd", check=False)
    assert r.returncode == 127 and "executable file not found" in r.stderr
    r = cli("run", "-i", "--rm", "busybox", "cat", input="in\n", check=False)  # (more in test_docker_interactive)
    assert (r.returncode, r.stdout) == (0, "in\n")


def test_create_start_stop_restart_rename(cli, dpy):
    net = uniq("lc")
    cli("network", "create", net)
    name = uniq("life")
    try:
        cid = cli("create", "--name", name, "--net", net, "--label", "app=lc", "busybox", "sleep", "60").stdout.strip()
        info = dpy.api.inspect_container(cid)
        assert info["State"]["Status"] == "created" and info["State"]["Running"] is False
        assert info["Config"]["Labels"] == {"app": "lc"} and info["Config"]["Tty"] is False
        assert dpy.networks.get(net).attrs["Containers"] == {}  # no network before the start
        cli("start", name)
        assert cid in dpy.networks.get(net).attrs["Containers"]
        assert cli("start", name).returncode == 0  # already running: 304, fine
        began = time.monotonic()
        cli("stop", "-t", "1", name)  # sleep ignores TERM as PID 1
        assert time.monotonic() - began < 8
        info = dpy.api.inspect_container(cid)
        assert info["State"]["Status"] == "exited" and info["State"]["ExitCode"] == 137
        assert dpy.networks.get(net).attrs["Containers"] == {}  # released at stop
        cli("restart", "-t", "1", name)
        assert dpy.api.inspect_container(cid)["State"]["Running"] is True
        new = uniq("renamed")
        cli("rename", name, new)
        assert dpy.containers.get(cid).name == new
        peer = uniq("peer")
        out = cli("run", "--rm", "--name", peer, "--net", net, "busybox", "busybox", "nslookup", new).stdout
        assert new in out and "can't find" not in out  # the new name answers in DNS
        r = cli("rename", new, new, check=False)
        assert r.returncode != 0 and "same name as its current name" in r.stderr
        name = new
    finally:
        cli("rm", "-f", name, check=False)
        cli("network", "rm", net, check=False)


def test_kill_signal_and_rm_force_events(cli, dpy):
    name = uniq("kill")
    since = time.time() - 1
    ct = dpy.containers.run(
        "busybox", ["sh", "-c", "trap 'exit 42' USR1; while true; do sleep 0.1; done"], name=name, detach=True
    )
    time.sleep(0.5)  # the trap is set
    cli("kill", "-s", "USR1", name)
    assert ct.wait(timeout=10)["StatusCode"] == 42
    ct.start()
    ct.remove(force=True)
    actions = [
        e["Action"] for e in dpy.events(since=since, until=time.time() + 0.1, decode=True, filters={"container": name})
    ]
    assert actions[:4] == ["create", "start", "kill", "die"] and actions[-3:] == ["kill", "die", "destroy"]
    r = cli("kill", name, check=False)
    assert r.returncode != 0


def test_docker_py_run_logs_and_errors(dpy):
    import docker

    out = dpy.containers.run("busybox", ["sh", "-c", "echo pyout; echo pyerr >&2"], remove=True, stderr=True)
    assert b"pyout" in out and b"pyerr" in out
    with pytest.raises(docker.errors.ContainerError) as info:
        dpy.containers.run("busybox", ["sh", "-c", "echo boom >&2; exit 4"], remove=True)
    assert info.value.exit_status == 4
    ct = dpy.containers.run("busybox", ["sh", "-c", "echo one; echo two"], detach=True)
    assert ct.wait(timeout=10)["StatusCode"] == 0
    assert ct.logs() == b"one\ntwo\n" and ct.logs(stderr=False) == b"one\ntwo\n"
    ct.remove()


def test_logs_tail_timestamps_since(cli, dpy):
    ct = dpy.containers.run(
        "busybox", ["sh", "-c", "for i in 1 2 3 4; do echo line$i; done; echo oops >&2"], detach=True
    )
    try:
        ct.wait(timeout=10)
        # tail counts the lines of both streams, then the stream filter applies (Docker's json-file)
        assert ct.logs(tail=3, stderr=False) == b"line3\nline4\n"
        r = cli("logs", "--tail", "1", ct.id)
        assert (r.stdout, r.stderr) == ("", "oops\n")
        r = cli("logs", "-t", ct.id)
        stamps = [line.split(" ", 1) for line in r.stdout.splitlines()]
        assert [text for _, text in stamps] == ["line1", "line2", "line3", "line4"]
        assert all(t.endswith("Z") and len(t) == 30 for t, _ in stamps)
        assert cli("logs", "--since", "1m", ct.id).stdout == "line1\nline2\nline3\nline4\n"
        assert cli("logs", "--until", "1h", ct.id).stdout == ""  # all written less than an hour ago
        created = dpy.containers.create("busybox", ["true"])
        assert created.logs() == b""  # never started: no output, not a 404
        created.remove()
    finally:
        ct.remove(force=True)


def test_logs_follow_and_a_since_until_window(cli, dpy):
    name = uniq("fol")
    cli(
        "run",
        "-d",
        "--name",
        name,
        "busybox",
        "sh",
        "-c",
        "echo early; sleep 1.5; echo late; echo late-err >&2; sleep 0.5; exit 2",
    )
    began = time.monotonic()
    r = cli("logs", "-f", name)  # from the start until the container ends
    assert (r.stdout, r.stderr) == ("early\nlate\n", "late-err\n") and time.monotonic() - began > 1
    stamps = [line.split(" ", 1) for line in cli("logs", "-t", name).stdout.splitlines()]
    early_t, late_t = stamps[0][0], stamps[1][0]
    # Both bounds include a line at that very time (Docker's json-file: since <= t <= until).
    assert cli("logs", "--since", late_t, name).stdout == "late\n"
    assert cli("logs", "--until", early_t, name).stdout == "early\n"
    assert cli("logs", "--since", early_t, "--until", late_t, name).stdout == "early\nlate\n"
    chunks = list(dpy.containers.get(name).logs(stream=True, follow=True, stderr=False))
    assert b"".join(chunks) == b"early\nlate\n"
    cli("rm", name)


def test_restart_in_place_keeps_the_log_and_the_writable_layer(cli):
    name = uniq("inpl")
    cli("run", "--name", name, "busybox", "sh", "-c", "cat /mark 2>/dev/null; echo run >> /mark; echo ran")
    assert cli("start", "-a", name).stdout == "run\nran\n"  # its file from the first run
    cli("restart", "-t", "1", name)
    cli("wait", name)
    assert cli("logs", name).stdout == "ran\nrun\nran\nrun\nrun\nran\n"  # every run's output, in order
    cli("rm", name)
