"""The supervisor's I/O for real: create/start/restart, the log (records, rotation,
tail), attach (live output, stdin, StdinOnce, a slow client), TTYs (controlling
terminal, size, resize), exec (namespaces, cgroups, user, workdir, exit codes, TTY,
stdin), stats and pids."""

from __future__ import annotations

import os
import time

import pytest

from cnm.errors import Conflict, InvalidParameter
from cnm.runtime import ContainerSpec, wire
from cnm.runtime.spec import ExecSpec
from tests.integration import runtime_harness as harness
from tests.integration.runtime_harness import BUSYBOX

rt, netns, rootfs = harness.rt, harness.netns, harness.rootfs  # fixtures
pytestmark = pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static at /bin/busybox")


def collect(session, timeout: float = 10) -> tuple[dict[int, bytes], int | None]:
    """Every output frame until EXIT (or EOF): ({stream: bytes}, exit code)."""
    out: dict[int, bytes] = {}
    deadline = time.monotonic() + timeout
    while True:
        frame = session.read_frame(max(0.1, deadline - time.monotonic()))
        if frame is None:
            return out, session.exit_code
        kind, _, payload = frame
        if kind in (wire.STDOUT, wire.STDERR):
            out[kind] = out.get(kind, b"") + payload
        if kind == wire.EXIT:
            return out, session.exit_code


def read_until(session, needle: bytes, timeout: float = 10) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while needle not in got:
        frame = session.read_frame(max(0.1, deadline - time.monotonic()))
        assert frame is not None, f"EOF before {needle!r}; got {got!r}"
        if frame[0] in (wire.STDOUT, wire.STDERR):
            got += frame[2]
    return got


def spec(cid: str, argv: list[str], netns: str, **kw) -> ContainerSpec:
    return ContainerSpec(id=cid, argv=argv, netns=netns, **kw)


# --- create, start, restart ---------------------------------------------------------


def test_create_then_start_and_restart_keep_logs_and_the_writable_layer(rt, netns, rootfs):
    s = spec(
        "r",
        ["sh", "-c", "echo run; cat /mark 2>/dev/null; echo kept > /mark; exit 3"],
        netns,
        rootfs=[str(rootfs)],
        env={"PATH": "/bin"},
    )
    assert rt.rt.create(s).status == "created"
    assert rt.rt.state("r").pid is None and not (rt.state_dir / "r" / "container.log").exists()
    with pytest.raises(Conflict, match="already exists"):
        rt.rt.create(s)
    for _ in (1, 2):
        st = rt.rt.start("r")
        assert st.status in ("running", "exited")
        assert rt.rt.wait("r", 10) == 3
        rt.seen.append((st.pid, st.pid_start))
    assert rt.out("r")[0] == "run\nrun\nkept\n"  # the second run saw the first's file
    assert (rt.state_dir / "r" / "upper" / "mark").read_text() == "kept\n"


def test_a_failed_start_leaves_it_created_and_a_running_one_refuses(rt, netns):
    rt.rt.create(spec("f", ["no-such-command-x"], netns))
    with pytest.raises(InvalidParameter, match="executable file not found"):
        rt.rt.start("f")
    assert rt.rt.state("f").status == "created"
    fixed = spec("f", ["sleep", "1000"], netns)
    st = rt.rt.start("f", fixed)  # a new spec at start: Docker's sandbox comes now
    rt.seen.append((st.pid, st.pid_start))
    assert st.status == "running"
    with pytest.raises(Conflict, match="already running"):
        rt.rt.start("f")


# --- the log ------------------------------------------------------------------------


def test_log_records_streams_times_and_tail(rt, netns):
    t0 = time.time_ns()
    rt.start("l", [BUSYBOX, "sh", "-c", "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done"], netns=netns)
    assert rt.rt.wait("l", 10) == 0
    lines = list(rt.rt.logs("l"))
    assert [ln.data for ln in lines if ln.stream == wire.STDOUT] == [b"out%d\n" % i for i in range(1, 6)]
    assert [ln.data for ln in lines if ln.stream == wire.STDERR] == [b"err%d\n" % i for i in range(1, 6)]
    assert all(t0 <= ln.time_ns <= time.time_ns() for ln in lines)
    assert [ln.time_ns for ln in lines] == sorted(ln.time_ns for ln in lines)
    assert len(list(rt.rt.logs("l", tail=4))) == 4
    assert list(rt.rt.logs("l", since_ns=time.time_ns())) == []


def test_log_rotates(rt, netns):
    rt.start(
        "big",
        [BUSYBOX, "sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done"],
        netns=netns,
        log_max_size=4096,
        log_max_files=3,
    )
    assert rt.rt.wait("big", 20) == 0
    names = sorted(n for n in os.listdir(rt.state_dir / "big") if n.startswith("container.log"))
    assert names == ["container.log", "container.log.1", "container.log.2"]
    tail = [ln.data for ln in rt.rt.logs("big", tail=2)]
    assert tail == [b"line 2998\n", b"line 2999\n"]


# --- attach -------------------------------------------------------------------------


def test_start_attached_misses_nothing_and_gets_the_exit_code(rt, netns):
    rt.rt.create(spec("a", [BUSYBOX, "sh", "-c", "echo first; echo oops >&2; exit 4"], netns))
    st, s = rt.rt.start_attached("a", "oe")
    rt.seen.append((st.pid, st.pid_start))
    with s:
        out, code = collect(s)
    assert out == {wire.STDOUT: b"first\n", wire.STDERR: b"oops\n"} and code == 4


def test_attach_follows_live_output_from_the_hello_point(rt, netns):
    st = rt.start("w", [BUSYBOX, "sh", "-c", "echo before; read x; echo after $x"], netns=netns, open_stdin=True)
    harness.wait_for_output(rt, "w", "before")
    with rt.rt.attach("w", "ioe") as s:
        assert s.log_position is not None
        logged = [ln.data for ln in rt.rt.logs("w", upto=s.log_position)]
        assert logged == [b"before\n"]
        s.send_stdin(b"now\n")
        out, code = collect(s)
    assert out == {wire.STDOUT: b"after now\n"} and code == 0
    with pytest.raises(Conflict, match="not running"):
        rt.rt.attach("w")
    del st


def test_stdin_once_closes_stdin_when_the_client_is_done(rt, netns):
    rt.rt.create(spec("c", [BUSYBOX, "sh", "-c", "cat; echo done"], netns, open_stdin=True, stdin_once=True))
    st, s = rt.rt.start_attached("c", "io")
    rt.seen.append((st.pid, st.pid_start))
    with s:
        s.send_stdin(b"one\n")
        s.send_stdin(b"two\n")
        s.close_stdin()
        out, code = collect(s)
    assert out[wire.STDOUT] == b"one\ntwo\ndone\n" and code == 0


def test_a_client_that_never_reads_does_not_hold_the_container(rt, netns):
    """8 MB of output with an attached client that reads nothing: the container runs
    to its end (the client is dropped when too far behind) and the log has it all."""
    st = rt.start(
        "flood",
        [BUSYBOX, "sh", "-c", "read x; head -c 8000000 /dev/zero | tr '\\0' x; echo; echo end"],
        netns=netns,
        open_stdin=True,
    )
    lazy = rt.rt.attach("flood", "io")
    try:
        lazy.send_stdin(b"go\n")
        assert rt.rt.wait("flood", 30) == 0
    finally:
        lazy.close()
    lines = list(rt.rt.logs("flood", tail=2))
    assert [ln.data for ln in lines] == [b"x" * 8000000 + b"\n", b"end\n"]
    del st


# --- TTY ----------------------------------------------------------------------------


def test_tty_is_the_controlling_terminal_with_its_size(rt, netns, rootfs):
    rt.rt.create(
        spec(
            "t",
            ["sh", "-c", "tty; stty size; echo err >&2"],
            netns,
            rootfs=[str(rootfs)],
            env={"PATH": "/bin"},
            tty=True,
            console_size=[33, 101],
        )
    )
    st, s = rt.rt.start_attached("t", "oe")
    rt.seen.append((st.pid, st.pid_start))
    with s:
        out, code = collect(s)
    assert code == 0 and set(out) == {wire.STDOUT}  # one raw stream
    lines = out[wire.STDOUT].decode().split("\r\n")  # the pty's ONLCR
    assert lines[0].startswith("/dev/pts/") and lines[1] == "33 101" and lines[2] == "err"


def test_tty_resize(rt, netns):
    rt.rt.create(
        spec(
            "rz",
            [BUSYBOX, "sh", "-c", "echo ready; read x; stty size"],
            netns,
            tty=True,
            open_stdin=True,
            console_size=[10, 20],
        )
    )
    st, s = rt.rt.start_attached("rz", "io")
    rt.seen.append((st.pid, st.pid_start))
    with s:
        read_until(s, b"ready")
        rt.rt.resize("rz", 40, 120)
        s.send_stdin(b"\n")
        out, code = collect(s)
    assert b"40 120" in out[wire.STDOUT] and code == 0


# --- exec ---------------------------------------------------------------------------


def test_exec_joins_the_container(rt, netns, rootfs):
    st = rt.start(
        "x",
        ["sh", "-c", "echo inside > /marker; exec sleep 1000"],
        netns=netns,
        rootfs=[str(rootfs)],
        env={"PATH": "/bin", "FROM_SPEC": "1"},
        hostname="exec-box",
        pids_limit=50,
    )
    harness.wait_for_file(rt.state_dir / "x" / "upper" / "marker")
    ex = ExecSpec(
        [
            "sh",
            "-c",
            "hostname; cat /marker; cat /proc/1/cmdline; echo; echo $$ $FROM_SPEC $EXTRA; "
            "readlink /proc/self/ns/net; cat /proc/self/cgroup; pwd; exit 7",
        ],
        env={"EXTRA": "2"},
        workdir="/bin",
    )
    with rt.rt.exec("x", ex) as s:
        assert s.pid and s.pid != st.pid
        out, code = collect(s)
    assert code == 7
    lines = out[wire.STDOUT].decode().splitlines()
    assert lines[:3] == ["exec-box", "inside", "sleep\x001000\x00"]
    pid_in_ns, from_spec, extra = lines[3].split()
    assert int(pid_in_ns) > 1 and (from_spec, extra) == ("1", "2")
    assert lines[4] == f"net:[{os.stat(netns).st_ino}]"
    pids_dir = rt.rt.cgroups.dirs("x", pids=50).get("pids")
    if pids_dir:  # in the container's cgroup: the root of its cgroup namespace, which it joined too
        assert [line.split(":", 2)[2] for line in lines if ":pids:" in line] == ["/"]
    assert lines[-1] == "/bin"


def test_exec_user_stdin_tty_and_errors(rt, netns):
    rt.start("u", ["sleep", "1000"], netns=netns)
    with rt.rt.exec("u", ExecSpec([BUSYBOX, "sh", "-c", "id -u; id -g; cat"], user="1234:5678", stdin=True)) as s:
        s.send_stdin(b"piped\n")
        s.close_stdin()
        out, code = collect(s)
    assert out[wire.STDOUT] == b"1234\n5678\npiped\n" and code == 0
    with rt.rt.exec("u", ExecSpec([BUSYBOX, "sh", "-c", "tty; stty size"], tty=True, console_size=[12, 34])) as s:
        out, code = collect(s)
    assert code == 0 and set(out) == {wire.STDOUT} and b"12 34" in out[wire.STDOUT]
    assert out[wire.STDOUT].startswith(b"/dev/pts/")
    with pytest.raises(InvalidParameter, match="executable file not found"):
        rt.rt.exec("u", ExecSpec(["no-such-command-y"]))
    with pytest.raises(InvalidParameter, match="unable to find user nobody-here"):
        rt.rt.exec("u", ExecSpec(["true"], user="nobody-here"))
    rt.rt.kill("u")
    rt.rt.wait("u", 10)
    with pytest.raises(Conflict, match="not running"):
        rt.rt.exec("u", ExecSpec(["true"]))


def test_exec_dies_with_its_container(rt, netns):
    rt.start("d", ["sleep", "1000"], netns=netns)
    s = rt.rt.exec("d", ExecSpec([BUSYBOX, "sh", "-c", "echo up; sleep 1000"]))
    with s:
        read_until(s, b"up")
        rt.rt.kill("d")
        out, code = collect(s)
    assert code == 137


# --- usage --------------------------------------------------------------------------


def test_stats_and_pids(rt, netns):
    rt.start(
        "s",
        [BUSYBOX, "sh", "-c", "sleep 1000 & i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo busy-done; wait"],
        netns=netns,
        memory=64 << 20,
        pids_limit=40,
    )
    harness.wait_for_output(rt, "s", "busy-done")
    pids = rt.rt.pids("s")
    assert len(pids) == 2 and rt.rt.state("s").pid in pids
    st = rt.rt.stats("s")
    assert st.memory_limit == 64 << 20 and 0 < st.memory_usage < 64 << 20
    assert st.pids_current == 2 and st.pids_limit == 40
    assert st.cpu_total_ns and st.cpu_total_ns > 1_000_000 and st.system_cpu_ns > st.cpu_total_ns
    rt.start("p", [BUSYBOX, "sh", "-c", "echo up; exec sleep 1000"], netns=netns)  # no cgroup: from /proc
    harness.wait_for_output(rt, "p", "up")
    st = rt.rt.stats("p")
    assert st.pids_current == 1 and st.memory_usage > 0 and st.cpu_total_ns is not None
    assert rt.rt.pids("p") == [rt.rt.state("p").pid]
