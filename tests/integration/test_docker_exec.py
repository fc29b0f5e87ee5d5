"""`docker exec` and docker-py's exec_run against our daemon: output and exit codes,
stdin with its end, a TTY (with its size and job control), detached execs, users and
working directories, the errors Docker gives. One daemon for the module."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.integration import docker_clients
from tests.integration.docker_clients import (
    error_line,
    module_daemon,
    run_container,
    uniq,
)


@pytest.fixture(scope="module")
def daemon():
    with module_daemon("cnmdx") as d:
        yield d


cli = docker_clients.cli_fixture
dpy = docker_clients.dpy_fixture


@pytest.fixture(scope="module")
def box(dpy):
    """One running container the tests exec into."""
    ct = run_container(dpy, uniq("box"), ["sleep", "600"])
    yield ct
    ct.remove(force=True)


def test_docker_py_exec_run(dpy, box):
    code, (out, err) = box.exec_run(["sh", "-c", "echo out; echo err >&2; exit 3"], demux=True)
    assert (code, out, err) == (3, b"out\n", b"err\n")
    code, out = box.exec_run(
        "sh -c 'echo $FOO in $(pwd) as $(id -u)'", environment={"FOO": "bar"}, workdir="/tmp", user="nobody"
    )
    assert (code, out) == (0, b"bar in /tmp as 65534\n")
    code, out = box.exec_run(["sh", "-c", "tty; echo $$"], tty=True)
    lines = out.decode().split()
    assert code == 0 and lines[0].startswith("/dev/pts/") and lines[1] != "1"  # its own session, not init
    code, out = box.exec_run(["nosuchcmd"])
    assert code == 127 and b"executable file not found" in out


def test_exec_runs_inside_the_containers_cgroups(dpy):
    """Limits cover what `docker exec` runs (Docker's rule): an exec'd process is in the
    container's cgroups, at their root as its cgroup namespace shows them; the pids limit
    counts it. Before, an exec'd fork bomb escaped --pids-limit."""
    ct = run_container(dpy, uniq("limited"), ["sleep", "600"], pids_limit=6, mem_limit="64m")
    try:
        code, out = ct.exec_run(["cat", "/proc/self/cgroup"])
        lines = [ln for ln in out.decode().splitlines() if ":pids:" in ln or ":memory:" in ln]
        assert code == 0 and len(lines) == 2 and all(ln.endswith(":/") for ln in lines), out
        # sleep (1) + the exec's waiter (1) + sh (1): at most 3 more before the limit of 6
        code, out = ct.exec_run(
            ["sh", "-c", "for i in 1 2 3 4 5 6; do sleep 30 </dev/null >/dev/null 2>&1 & done 2>&1; echo end"]
        )
        assert b"can't fork" in out or b"Resource temporarily unavailable" in out, out
    finally:
        ct.remove(force=True)


def test_docker_py_exec_detached_and_inspect(dpy, box):
    api = dpy.api
    ex = api.exec_create(box.id, ["sh", "-c", "sleep 0.3; exit 9"])
    assert api.exec_inspect(ex["Id"])["Running"] is False
    assert not api.exec_start(ex["Id"], detach=True)
    info = api.exec_inspect(ex["Id"])
    assert info["Running"] is True and info["Pid"] > 0 and info["ContainerID"] == box.id
    import time

    deadline = time.monotonic() + 10
    while api.exec_inspect(ex["Id"])["Running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    info = api.exec_inspect(ex["Id"])
    assert info["ExitCode"] == 9 and info["ProcessConfig"]["entrypoint"] == "sh"
    import docker

    with pytest.raises(docker.errors.APIError, match="has already run"):
        api.exec_start(ex["Id"])
    with pytest.raises(docker.errors.NotFound, match="No such exec instance"):
        api.exec_inspect("f" * 64)


def test_cli_exec_stdin_and_exit_code(cli, box):
    r = cli("exec", "-i", box.name, "sh", "-c", "cat; echo done; exit 4", input="hello\n", check=False)
    assert (r.returncode, r.stdout) == (4, "hello\ndone\n")
    r = cli("exec", box.name, "sh", "-c", "echo oops >&2; exit 2", check=False)
    assert (r.returncode, r.stderr) == (2, "oops\n")


def test_cli_exec_tty(cli, box):
    if not shutil.which("script"):
        pytest.skip("util-linux script is not installed: no terminal to give docker exec -t")
    # `script` gives the CLI a terminal of 40x100; the CLI passes its size on (resize).
    cmd = (
        f"stty rows 40 cols 100; {cli.path} exec -it {box.name} sh -c "
        "'stty size; tty >/dev/null && echo isatty; read line; echo got:$line; exit 6'"
    )
    r = subprocess.run(
        ["script", "-qec", cmd, "/dev/null"],
        input="abc\n",
        capture_output=True,
        text=True,
        timeout=30,
        env=cli.environ(),
    )
    assert r.returncode == 6, r.stdout + r.stderr
    assert "40 100" in r.stdout and "isatty" in r.stdout and "got:abc" in r.stdout


def test_cli_exec_errors(cli, dpy):
    stopped = run_container(dpy, uniq("stopped"), ["true"])
    stopped.wait(timeout=20)
    try:
        r = cli("exec", stopped.name, "true", check=False)
        assert r.returncode != 0 and "is not running" in error_line(r)
    finally:
        stopped.remove()


def test_top(cli, dpy, box):
    ex = dpy.api.exec_create(box.id, ["sleep", "77"])  # (one per CLI: each ends in 77 s)
    dpy.api.exec_start(ex["Id"], detach=True)
    import time

    deadline = time.monotonic() + 10
    while True:  # the exec helper forks the command a few ms after the start answers
        top = box.top()
        commands = [row[-1] for row in top["Processes"]]
        if "sleep 77" in commands or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert top["Titles"][:2] == ["UID", "PID"] and top["Titles"][-1] == "CMD"
    assert "sleep 600" in commands and "sleep 77" in commands  # the init and an exec'd process
    assert all(not c.startswith(("nsenter", "python")) for c in commands)  # nothing of the host's
    lines = cli.lines("top", box.name, "-o", "pid,args")
    assert lines[0].split() == ["PID", "COMMAND"] and any(line.endswith("sleep 77") for line in lines)
    r = cli("top", box.name, "-o", "comm", check=False)
    assert r.returncode != 0 and "couldn't find PID field" in error_line(r)


def test_stats(cli, dpy, box):
    s = box.stats(stream=False)
    assert s["id"] == box.id and s["name"] == "/" + box.name
    assert s["pids_stats"]["current"] >= 1 and s["memory_stats"]["usage"] > 0
    assert s["cpu_stats"]["system_cpu_usage"] > s["precpu_stats"]["system_cpu_usage"] > 0  # a pair, 1 s apart
    assert "eth0" in s["networks"] and s["networks"]["eth0"]["rx_packets"] >= 0
    one = box.stats(stream=False, one_shot=True)
    assert one["precpu_stats"]["system_cpu_usage"] == 0
    stream = box.stats(stream=True, decode=True)
    first, second = next(stream), next(stream)
    assert second["precpu_stats"]["cpu_usage"] == first["cpu_stats"]["cpu_usage"]
    stream.close()
    line = cli.lines("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}} {{.MemUsage}}", box.name)
    assert line[0].startswith(box.name + " ") and line[0].split()[1].isdigit()
