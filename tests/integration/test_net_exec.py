"""`net exec` and `net attach` through the daemon's API: the exec'd process is made by
the daemon and confined as the container is (capabilities, no_new_privs, seccomp,
cgroups), stdin and exit codes pass through, -t gives a terminal of the container's own
with our size; attach carries a running container's output and exit code. One daemon
for the module (in its own network namespace)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time

import pytest

from tests.integration.conftest import NET
from tests.integration.docker_clients import module_daemon, uniq


@pytest.fixture(scope="module")
def daemon():
    with module_daemon("cnmnx") as d:
        yield d


@pytest.fixture(scope="module")
def box(daemon):
    name = uniq("box")
    daemon.net("run", "-d", "--name", name, "--memory", "64m", "busybox", "sleep", "600")
    yield name
    daemon.net("container", "rm", "-f", name, check=False)


def status_field(text: str, key: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(key + ":"))


def test_output_streams_and_exit_code(daemon, box):
    r = daemon.net("exec", box, "--", "sh", "-c", "echo out; echo err >&2; exit 5", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (5, "out\n", "err\n")


def test_confined_as_the_container(daemon, box):
    mine = daemon.net("exec", box, "--", "cat", "/proc/self/status").stdout
    init = daemon.net("exec", box, "--", "cat", "/proc/1/status").stdout
    assert status_field(mine, "CapEff") == status_field(init, "CapEff") != "000001ffffffffff"
    assert status_field(mine, "CapBnd") == status_field(init, "CapBnd")
    assert status_field(mine, "NoNewPrivs") == status_field(init, "NoNewPrivs")
    assert status_field(mine, "Seccomp") == status_field(init, "Seccomp") == "2"
    cg_mine = daemon.net("exec", box, "--", "cat", "/proc/self/cgroup").stdout
    cg_init = daemon.net("exec", box, "--", "cat", "/proc/1/cgroup").stdout
    assert cg_mine == cg_init  # in the container's cgroups (its memory limit)
    priv = daemon.net("exec", "--privileged", box, "--", "cat", "/proc/self/status").stdout
    assert int(status_field(priv, "CapEff"), 16) > int(status_field(init, "CapEff"), 16)


def test_stdin_env_user_workdir(daemon, box):
    r = daemon.net("exec", "-i", box, "--", "sh", "-c", "cat; echo end", input="hello\n")
    assert r.stdout == "hello\nend\n"
    r = daemon.net("exec", "-e", "A=1", "-u", "nobody", "-w", "/tmp", box, "--", "sh", "-c", "echo $A $(id -u) $PWD")
    assert r.stdout == "1 65534 /tmp\n"
    r = daemon.net("exec", box, "--", "cat", input="ignored\n")  # no -i: stdin is empty
    assert r.stdout == ""


def test_bad_exec_exit_codes(daemon, box):
    r = daemon.net("exec", box, "--", "nosuchcmd", check=False)
    assert r.returncode == 127 and "executable file not found" in r.stdout + r.stderr  # (Docker: in the stream)
    r = daemon.net("exec", "nosuchbox", "--", "true", check=False)
    assert r.returncode != 0 and "nosuchbox" in r.stderr
    r = daemon.net("exec", box, check=False)
    assert r.returncode == 2 and "missing argument" in r.stderr
    stopped = uniq("stopped")
    daemon.net("run", "--name", stopped, "busybox", "true")
    r = daemon.net("exec", stopped, "--", "true", check=False)
    assert r.returncode == 1 and "is not running" in r.stderr
    daemon.net("container", "rm", stopped)


def run_in_pty(argv: list[str], rows: int, cols: int, timeout: float = 30) -> tuple[int, bytes]:
    """argv with a terminal of `rows` x `cols` as its stdin, stdout and stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=10)
    os.close(master)
    return code, out


def test_tty_of_the_containers_own_with_our_size(daemon, box):
    code, out = run_in_pty(
        [NET, "-H", daemon.host, "exec", "-it", box, "--", "sh", "-c", "tty; stty size; exit 3"], 33, 101
    )
    text = out.decode(errors="replace").replace("\r", "")
    assert code == 3 and "/dev/pts/" in text and "33 101" in text, text


def test_attach_carries_output_and_exit_code(daemon):
    name = uniq("att")
    daemon.net("run", "-d", "--name", name, "busybox", "sh", "-c", "sleep 1; echo hi; echo oops >&2; exit 4")
    r = daemon.net("attach", name, check=False)
    assert (r.returncode, r.stdout, r.stderr) == (4, "hi\n", "oops\n")
    r = daemon.net("attach", name, check=False)
    assert r.returncode != 0 and "start it first" in r.stderr
    daemon.net("container", "rm", name)
