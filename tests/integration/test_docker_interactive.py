"""Interactive containers as Docker's clients drive them: `docker run -i` (stdin over
the hijacked attach, its end closing the container's stdin), `-t` (a TTY: raw stream,
our terminal's size, resize), `-it`, `docker attach` with detach keys, `docker start
-ai`, `docker logs` of a TTY; docker CLI 20.10 and 28, docker-py. One daemon."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import struct
import subprocess
import termios
import time

import pytest

from tests.integration import docker_clients
from tests.integration.docker_clients import DOCKER_NEW, DockerCLI, module_daemon, uniq


@pytest.fixture(scope="module")
def daemon():
    with module_daemon("cnmit") as d:
        yield d


cli = docker_clients.cli_fixture
dpy = docker_clients.dpy_fixture


def in_terminal(
    cli: DockerCLI, shell: str, input: str = "", rows: int = 40, cols: int = 100, timeout: float = 60
) -> subprocess.CompletedProcess:
    """`shell` (a command line using the CLI) run by util-linux `script`, which gives it
    a terminal of rows x cols; `input` typed into it."""
    if not shutil.which("script"):
        pytest.skip("util-linux script is not installed: no terminal for docker -t")
    return subprocess.run(
        ["script", "-qec", f"stty rows {rows} cols {cols}; {shell}", "/dev/null"],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli.environ(),
    )


def until(cond, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        time.sleep(0.05)
    return got


def test_run_i_pipes_stdin_and_its_end(cli):
    r = cli("run", "-i", "--rm", "busybox", "sh", "-c", "cat; echo end; exit 3", input="hello\nworld\n", check=False)
    assert (r.returncode, r.stdout) == (3, "hello\nworld\nend\n")
    r = cli("run", "--rm", "busybox", "cat", input="not sent\n", check=False)  # no -i: no stdin
    assert (r.returncode, r.stdout) == (0, "")


def test_run_it_gives_a_terminal_of_our_size(cli):
    name = uniq("it")
    # A newer CLI sends its size with the create (HostConfig.ConsoleSize, API 1.42): the
    # TTY has it from the start. 20.10 (API 1.41) resizes right after the start, as it
    # does with Docker: the size comes a moment later (the first `stty size` may be 0 0).
    wait = "" if cli.path == DOCKER_NEW else "sleep 1; "
    r = in_terminal(
        cli,
        f"{cli.path} run -it --name {name} busybox sh -c '{wait}stty size; tty; read line; echo got:$line; exit 6'",
        input="abc\n",
    )
    assert r.returncode == 6, r.stdout + r.stderr
    assert "40 100" in r.stdout and "/dev/pts/" in r.stdout and "got:abc" in r.stdout
    info = cli.json("inspect", name)[0]
    assert info["Config"]["Tty"] and info["Config"]["OpenStdin"] and info["Config"]["StdinOnce"]
    logs = cli("logs", name).stdout
    assert "got:abc" in logs and "\x01\x00" not in logs  # a TTY's output: raw, no frames
    cli("rm", name)


class Terminal:
    """A command on a pty of our own: type into it and read what it shows, step by step
    (keys typed before the CLI put its terminal in raw mode would be cooked: ctrl-q
    eaten by flow control)."""

    def __init__(self, argv: list[str], env: dict[str, str], rows: int = 40, cols: int = 100) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        self.seen = b""

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def expect(self, text: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            assert time.monotonic() < deadline, f"{text!r} not shown: {self.seen!r}"
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:
                    break

    def wait(self, timeout: float = 30) -> int:
        """Its exit code, once it ended and what it showed is read."""
        try:
            code = self.proc.wait(timeout=timeout)
            while select.select([self.master], [], [], 0.2)[0]:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                self.seen += chunk
            return code
        finally:
            os.close(self.master)


def test_attach_sends_input_and_detaches_with_the_keys(cli):
    name = uniq("att")
    cli("run", "-dit", "--name", name, "busybox", "sh", "-c", "while read l; do echo got:$l; done")
    for keys, flags, word in ((b"\x10\x11", [], b"one"), (b"\x18", ["--detach-keys", "ctrl-x"], b"two")):
        term = Terminal([cli.path, "attach", *flags, name], cli.environ())
        time.sleep(0.5)  # (the CLI sets its terminal raw before it attaches)
        term.type(word + b"\n")
        term.expect(b"got:" + word)
        term.type(keys)
        # Docker's CLI sees the keys itself: "read escape sequence", exit status 1.
        assert term.wait() == 1 and b"read escape sequence" in term.seen, term.seen
        assert cli.json("inspect", name)[0]["State"]["Running"]
    assert "got:one" in cli("logs", name).stdout
    cli("rm", "-f", name)


def test_resize_and_bad_input(cli, dpy, daemon):
    name = uniq("rsz")
    cli(
        "run",
        "-dt",
        "--name",
        name,
        "busybox",
        "sh",
        "-c",
        "trap 'stty size' WINCH; echo ready; while true; do sleep 0.1; done",
    )
    ct = dpy.containers.get(name)
    until(lambda: "ready" in cli("logs", name).stdout, what="the trap set")  # (a SIGWINCH before it is lost)
    ct.resize(height=21, width=77)
    until(lambda: "21 77" in cli("logs", name).stdout, what="the new size seen by the container")
    import docker.errors

    with pytest.raises(docker.errors.APIError) as err:
        dpy.api.resize(ct.id, height="x", width=3)
    assert err.value.status_code == 400
    cli("rm", "-f", name)
    stopped = dpy.containers.create("busybox", ["true"], tty=True)
    with pytest.raises(docker.errors.APIError) as err:
        stopped.resize(height=10, width=10)
    assert err.value.status_code == 409
    stopped.remove()


def test_docker_py_attach_socket_with_stdin(dpy):
    ct = dpy.containers.create("busybox", ["sh", "-c", "read a; echo got:$a"], stdin_open=True, name=uniq("dpy"))
    sock = dpy.api.attach_socket(ct.id, params={"stdin": 1, "stdout": 1, "stream": 1})
    ct.start()
    sock._sock.sendall(b"zzz\n")
    assert ct.wait(timeout=30)["StatusCode"] == 0
    sock.close()
    assert ct.logs() == b"got:zzz\n"
    ct.remove()


def test_start_ai_attaches_again(cli):
    name = uniq("sai")
    cli("create", "-i", "--name", name, "busybox", "sh", "-c", "read a; echo got:$a; exit 2")
    r = cli("start", "-ai", name, input="first\n", check=False)
    assert (r.returncode, r.stdout) == (2, "got:first\n")
    r = cli("start", "-ai", name, input="second\n", check=False)  # again, in place
    assert (r.returncode, r.stdout) == (2, "got:second\n")
    assert cli("logs", name).stdout == "got:first\ngot:second\n"
    cli("rm", name)
