"""Restart policies as Docker's clients use them: `docker run --restart` (no,
on-failure[:N], always, unless-stopped), RestartCount and the policy in inspect, the
"restarting" status, stop calling restarts off, `docker update --restart`, bad policies
refused with Docker's messages, and containers started again when the daemon starts;
docker CLI 20.10 and 28, docker-py. One daemon for the module (restarted by the last
test)."""

from __future__ import annotations

import json
import time

import pytest

from tests.integration import docker_clients
from tests.integration.docker_clients import DockerCLI, cli_params, error_line, module_daemon, uniq


@pytest.fixture(scope="module")
def daemon():
    with module_daemon("cnmrs") as d:
        yield d


cli = docker_clients.cli_fixture
dpy = docker_clients.dpy_fixture


def until(cond, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        time.sleep(0.05)


def inspect(cli: DockerCLI, name: str) -> dict:
    return json.loads(cli("inspect", name).stdout)[0]


def test_on_failure_restarts_n_times_with_docker_cli(cli, dpy):
    name = uniq("onf")
    began = time.time()
    cli("run", "-d", "--name", name, "--restart", "on-failure:2", "busybox", "sh", "-c", "echo run; exit 3")
    info = until(
        lambda: (
            (i := inspect(cli, name))["RestartCount"] == 2
            and i["State"]["Status"] == "exited"
            and not dpy.api.containers(all=True, filters={"name": name, "status": "restarting"})
            and i
        ),
        what="two restarts, then exited",
    )
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert info["State"]["ExitCode"] == 3
    time.sleep(0.5)  # (a third restart would come within 0.4 s)
    assert inspect(cli, name)["RestartCount"] == 2
    starts = [
        e
        for e in dpy.events(
            since=began - 1, until=time.time(), decode=True, filters={"container": name, "event": "start"}
        )
    ]
    assert len(starts) == 3  # the first run and two restarts
    assert cli("logs", name).stdout == "run\n" * 3  # restarted in place: one log for every run
    cli("rm", name)


def test_always_comes_back_until_stopped_and_update_changes_it(cli, dpy):
    name = uniq("alw")
    cli("run", "-d", "--name", name, "--restart", "always", "busybox", "sh", "-c", "sleep 0.3; exit 0")
    until(lambda: inspect(cli, name)["RestartCount"] >= 2, what="two restarts of a clean exit")
    # `restarting` shows while the back-off runs (it grows: 0.1, 0.2, 0.4 s …).
    seen = until(
        lambda: cli.lines(
            "ps", "-a", "--filter", f"name={name}", "--filter", "status=restarting", "--format", "{{.Status}}"
        ),
        what="a restarting status",
    )
    assert seen[0].startswith("Restarting (0)")
    cli("stop", "-t", "1", name)
    count = inspect(cli, name)["RestartCount"]
    time.sleep(1.0)
    info = inspect(cli, name)
    assert info["State"]["Status"] == "exited" and info["RestartCount"] == count  # stop called it off
    # (The policy changes while it is stopped: a run of 0.3 s may end before a CLI call
    # does, under load.)
    cli("update", "--restart", "no", name)
    assert inspect(cli, name)["HostConfig"]["RestartPolicy"]["Name"] == "no"
    cli("start", name)
    assert inspect(cli, name)["RestartCount"] == 0  # a user's start: anew
    until(lambda: inspect(cli, name)["State"]["Status"] == "exited", what="the exit")
    time.sleep(0.5)
    assert inspect(cli, name)["State"]["Status"] == "exited" and inspect(cli, name)["RestartCount"] == 0
    cli("rm", name)


def test_bad_policies_are_refused_with_dockers_messages(cli, dpy):
    r = cli("run", "-d", "--restart", "sometimes", "busybox", "true", check=False)
    assert r.returncode == 125 and "invalid restart policy: unknown policy 'sometimes'" in r.stderr
    r = cli("run", "-d", "--rm", "--restart", "always", "busybox", "true", check=False)
    assert r.returncode != 0 and "--restart" in r.stderr  # the CLI's own check
    import docker.errors

    with pytest.raises(docker.errors.APIError) as err:
        dpy.api.create_container(
            "busybox",
            ["true"],
            host_config=dpy.api.create_host_config(restart_policy={"Name": "always", "MaximumRetryCount": 3}),
        )
    assert err.value.status_code == 400
    assert "maximum retry count can only be used with 'on-failure'" in err.value.explanation
    with pytest.raises(docker.errors.APIError) as err:
        dpy.api.create_container(
            "busybox",
            ["true"],
            host_config=dpy.api.create_host_config(auto_remove=True, restart_policy={"Name": "on-failure"}),
        )
    assert err.value.status_code == 400 and "AutoRemove" in err.value.explanation
    name = uniq("upd")
    cli("create", "--name", name, "busybox", "true")
    r = cli("update", "--memory", "64m", name, check=False)
    assert r.returncode != 0 and "only the restart policy" in error_line(r)
    r = cli("update", "--restart", "on-failure:-1", name, check=False)
    assert r.returncode != 0
    assert inspect(cli, name)["HostConfig"]["RestartPolicy"]["Name"] == "no"  # nothing changed
    cli("rm", name)


def test_docker_py_restart_policy_and_count(dpy):
    ct = dpy.containers.run(
        "busybox",
        ["sh", "-c", "exit 1"],
        detach=True,
        name=uniq("dpy"),
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 1},
    )
    until(
        lambda: (ct.reload() or ct.attrs["RestartCount"] == 1) and ct.status == "exited",
        what="one restart, then exited",
    )
    assert ct.attrs["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 1}
    ct.update(restart_policy={"Name": "unless-stopped"})
    ct.reload()
    assert ct.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    ct.remove(force=True)


def test_the_daemon_starts_always_and_unless_stopped_again(daemon, cli, dpy):
    if cli.path != cli_params()[0].values[0]:
        pytest.skip("one daemon restart is enough: run with the first CLI only")
    names = {p: uniq(p[:6]) for p in ("always", "unless-stopped", "no", "stopped")}
    for policy, name in names.items():
        cli(
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            "unless-stopped" if policy == "stopped" else policy,
            "busybox",
            "sleep",
            "600",
        )
    cli("stop", "-t", "1", names["stopped"])
    ids = {name: inspect(cli, name)["Id"] for name in names.values()}
    daemon.stop()
    # Containers outlive their daemon; these three die while it is down.
    from cnm.runtime.runtime import Runtime

    rt = Runtime(str(daemon.run_dir / "containers"))
    for policy in ("always", "unless-stopped", "no"):
        rt.kill(ids[names[policy]], 9)
        rt.wait(ids[names[policy]], 10)
    daemon.start()
    running = lambda n: inspect(cli, n)["State"]["Status"] == "running"  # noqa: E731
    until(lambda: running(names["always"]) and running(names["unless-stopped"]), what="restarts at daemon start")
    assert not running(names["no"]) and not running(names["stopped"])
    for name in names.values():
        cli("rm", "-f", name)
