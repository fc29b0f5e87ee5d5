"""The container runtime for real: namespaces, overlay rootfs, cgroups, supervisor.

Every test gets its own state directory, its own cgroup sub-tree and (via host_ns) its
own throwaway network namespace; the `rt` fixture checks afterwards that no process,
mount or cgroup of ours is left."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from cnm.errors import Conflict, InvalidParameter, NotFound
from cnm.runtime import ContainerSpec, Runtime, files, linux
from tests.integration import runtime_harness as harness
from tests.integration.conftest import sh
from tests.integration.runtime_harness import BUSYBOX, mounts_under, procs_mentioning

rt, netns, rootfs = harness.rt, harness.netns, harness.rootfs  # fixtures
pytestmark = pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static at /bin/busybox")


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


# --- the basics ---------------------------------------------------------------------


def test_logs_exit_code_and_timestamps(rt, netns):
    st = rt.start("c1", [BUSYBOX, "sh", "-c", "echo hi; echo err >&2; exit 3"], netns=netns)
    assert st.status in ("running", "exited") and st.pid and st.shim_pid
    assert rt.rt.wait("c1", timeout=10) == 3
    assert rt.out("c1") == ("hi\n", "err\n")
    st = rt.rt.state("c1")
    assert (st.status, st.exit_code) == ("exited", 3)
    t0 = datetime.fromisoformat(st.started_at.replace("Z", "+00:00"))
    t1 = datetime.fromisoformat(st.finished_at.replace("Z", "+00:00"))
    assert 0 <= (t1 - t0).total_seconds() < 10
    rt.rt.remove("c1")
    assert not (rt.state_dir / "c1").exists()


def test_pid_namespace(rt, netns):
    rt.start("p", [BUSYBOX, "sh", "-c", "echo $$; busybox ps -o pid,args"], netns=netns)
    assert rt.rt.wait("p", 10) == 0
    out = rt.out("p")[0].splitlines()
    assert out[0] == "1"
    pids = sorted(int(line.split()[0]) for line in out[2:])
    assert pids[0] == 1 and len(pids) <= 3, out  # only the container's own processes


def test_hostname_and_etc_files_inside_only(rt, netns):
    before = {
        p: (Path(p).read_bytes(), os.stat(p).st_mtime_ns) for p in ("/etc/hosts", "/etc/hostname") if os.path.exists(p)
    }
    host_name = os.uname().nodename
    rt.start(
        "h",
        [BUSYBOX, "sh", "-c", "hostname; cat /etc/hosts /etc/resolv.conf /etc/hostname"],
        netns=netns,
        hostname="box-1",
        hosts="10.9.8.7 magic\n",
        resolv_conf="nameserver 10.9.8.1\n",
    )
    assert rt.rt.wait("h", 10) == 0
    assert rt.out("h")[0] == "box-1\n10.9.8.7 magic\nnameserver 10.9.8.1\nbox-1\n"
    assert os.uname().nodename == host_name
    after = {p: (Path(p).read_bytes(), os.stat(p).st_mtime_ns) for p in before}
    assert after == before


def test_joins_the_given_network_namespace(rt, host_ns, netns):
    sh("ip", "-n", host_ns, "link", "add", "cnmt0", "type", "veth", "peer", "name", "cnmt1")
    rt.start("n", [BUSYBOX, "sh", "-c", "readlink /proc/self/ns/net; busybox ip -o link"], netns=netns)
    assert rt.rt.wait("n", 10) == 0
    out = rt.out("n")[0].splitlines()
    assert out[0] == f"net:[{os.stat(netns).st_ino}]"
    names = {line.split(":")[1].strip().split("@")[0] for line in out[1:]}
    assert names == {"lo", "cnmt0", "cnmt1"}


def test_host_mode_shares_the_callers_network_namespace(rt):
    rt.start("hm", [BUSYBOX, "readlink", "/proc/self/ns/net"], netns="host")
    assert rt.rt.wait("hm", 10) == 0
    assert rt.out("hm")[0].strip() == os.readlink("/proc/self/ns/net")


def test_container_does_not_pin_other_namespaces(rt, netns):
    """A namespace file unmounted on the host while a host-root container runs must
    really go: the container's copy of it follows the host's unmounts (MS_SLAVE), or
    it would pin that network namespace for the container's lifetime."""
    other = f"cnmt-{os.urandom(4).hex()}"
    sh("ip", "netns", "add", other)
    try:
        st = rt.start("pin", ["sleep", "1000"], netns=netns)
        mountinfo = Path(f"/proc/{st.pid}/mountinfo")
        assert f"/run/netns/{other} " in mountinfo.read_text()
        sh("umount", f"/run/netns/{other}")  # unmount only: unlink would detach it anyway
        assert f"/run/netns/{other} " not in mountinfo.read_text()
    finally:
        sh("ip", "netns", "del", other, check=False)
        Path(f"/run/netns/{other}").unlink(missing_ok=True)


def test_rootfs_overlay(rt, netns, rootfs):
    lower_before = _tree(rootfs)
    rt.start(
        "r",
        ["sh", "-c", "echo data > /created.txt; ls /; cat /etc/hosts"],
        netns=netns,
        rootfs=[str(rootfs)],
        hosts="10.1.1.1 inside\n",
        env={"PATH": "/bin"},
    )
    assert rt.rt.wait("r", 10) == 0
    out, err = rt.out("r")
    listing = set(out.split())
    assert {"bin", "created.txt", "proc", "dev"} <= listing and "usr" not in listing, out + err
    assert "10.1.1.1 inside" in out
    upper = rt.state_dir / "r" / files.UPPER
    assert (upper / "created.txt").read_text() == "data\n"
    assert _tree(rootfs) == lower_before  # the lower layer is never written
    rt.rt.remove("r")
    assert not upper.exists() and not (rt.state_dir / "r").exists()


# --- supervision --------------------------------------------------------------------


def test_supervisor_outlives_its_starter(rt, netns):
    code = (
        f"import sys; from cnm.runtime import Runtime, ContainerSpec; "
        f"rt = Runtime({str(rt.state_dir)!r}, cgroup_root={rt.cgroup_root!r}); "
        f"st = rt.start(ContainerSpec(id='s', argv=['sleep', '1000'], netns={netns!r})); "
        f"print(st.shim_pid, st.pid)"
    )
    starter = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert starter.returncode == 0, starter.stderr
    d = json.loads((rt.state_dir / "s" / files.STATE).read_text())
    rt.seen += [(d["shim_pid"], d["shim_start"]), (d["pid"], d["pid_start"])]

    fresh = Runtime(str(rt.state_dir), cgroup_root=rt.cgroup_root)
    assert [(s.id, s.status) for s in fresh.adopt()] == [("s", "running")]
    st = fresh.state("s")
    assert (st.shim_pid, st.pid) == tuple(map(int, starter.stdout.split()))
    assert linux.is_alive(st.shim_pid, d["shim_start"])
    t = time.monotonic()
    assert fresh.stop("s", timeout=0.5) == 137  # sleep as PID 1 ignores SIGTERM
    assert time.monotonic() - t < 5


def _wait_ready(rt, cid: str) -> None:
    """Wait until the container's shell printed "ready" (its trap is installed)."""
    deadline = time.monotonic() + 5
    while "ready" not in rt.out(cid)[0]:
        assert time.monotonic() < deadline, "container never became ready"
        time.sleep(0.01)


def test_stop_falls_back_to_sigkill(rt, netns):
    rt.start("t", [BUSYBOX, "sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"], netns=netns)
    t = time.monotonic()
    assert rt.rt.stop("t", timeout=1) == 137
    assert 0.9 <= time.monotonic() - t < 5


def test_stop_with_a_handler_exits_cleanly(rt, netns):
    rt.start("g", [BUSYBOX, "sh", "-c", "trap 'exit 7' TERM; echo ready; while :; do sleep 0.1; done"], netns=netns)
    _wait_ready(rt, "g")
    t = time.monotonic()
    assert rt.rt.stop("g", timeout=5) == 7
    assert time.monotonic() - t < 3
    assert rt.rt.stop("g") == 7  # idempotent


def test_sigterm_to_the_shim_is_forwarded(rt, netns):
    st = rt.start(
        "f", [BUSYBOX, "sh", "-c", "trap 'exit 9' TERM; echo ready; while :; do sleep 0.1; done"], netns=netns
    )
    _wait_ready(rt, "f")
    os.kill(st.shim_pid, signal.SIGTERM)
    assert rt.rt.wait("f", 5) == 9


def test_exit_fd_kill_and_remove_rules(rt, netns):
    rt.start("k", ["sleep", "1000"], netns=netns)
    fd = rt.rt.exit_fd("k")
    assert fd is not None
    try:
        assert select.select([fd], [], [], 0.1)[0] == []  # still running
        with pytest.raises(Conflict, match="stop the container before removing"):
            rt.rt.remove("k")
        rt.rt.kill("k", signal.SIGKILL)
        assert select.select([fd], [], [], 5)[0] == [fd]  # readable once the shim ended
    finally:
        os.close(fd)
    st = rt.rt.state("k")
    assert (st.status, st.exit_code) == ("exited", 137)
    assert rt.rt.exit_fd("k") is None


def test_force_remove_kills(rt, netns):
    st = rt.start("fr", ["sleep", "1000"], netns=netns)
    rt.rt.remove("fr", force=True)
    assert not linux.is_alive(st.pid, rt.seen[-1][1])
    assert not (rt.state_dir / "fr").exists()
    rt.rt.remove("fr")  # idempotent


def test_a_starter_holding_more_than_1024_fds(rt, netns):
    """A daemon with hundreds of containers holds an fd or two per container: past
    1,023, select() refuses them (found at 495 containers); start and remove still work."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < 1200: cannot hold 1,100 fds here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        rt.start("many", ["sleep", "1000"], netns=netns)
        assert rt.rt.state("many").status == "running"
        rt.rt.remove("many", force=True)
        assert not (rt.state_dir / "many").exists()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_lost_shim_is_settled_by_adopt(rt, netns):
    st = rt.start("l", ["sleep", "1000"], netns=netns)
    os.kill(st.shim_pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while linux.is_alive(*rt.seen[-1]) and time.monotonic() < deadline:  # pdeathsig kills the container
        time.sleep(0.02)
    assert not linux.is_alive(*rt.seen[-1])
    states = Runtime(str(rt.state_dir), cgroup_root=rt.cgroup_root).adopt()
    assert [(s.id, s.status, s.exit_code) for s in states] == [("l", "exited", 137)]
    assert "supervisor died" in states[0].error


def test_duplicate_id_conflicts(rt, netns):
    rt.start("d", ["sleep", "1000"], netns=netns)
    with pytest.raises(Conflict, match="already exists"):
        rt.rt.start(ContainerSpec(id="d", argv=["true"], netns=netns))
    assert rt.rt.state("d").status == "running"


# --- cgroups ------------------------------------------------------------------------


def test_cgroup_limits(rt, netns):
    layout = rt.rt.cgroups.layout
    missing = {"memory", "cpu", "pids"} - set(layout.controllers)
    if missing:
        pytest.skip(f"cgroup controllers missing on this host: {sorted(missing)}")
    st = rt.start("cg", ["sleep", "1000"], netns=netns, memory=64 << 20, cpus=0.5, pids_limit=17)
    dirs = json.loads((rt.state_dir / "cg" / files.CGROUPS).read_text())
    assert all(os.path.basename(d) == "cg" and f"/{rt.cgroup_root}/" in d for d in dirs)
    values = {}
    for d in dirs:
        for name in ("memory.limit_in_bytes", "memory.max", "pids.max", "cpu.cfs_quota_us", "cpu.max"):
            if os.path.exists(os.path.join(d, name)):
                values[name] = Path(d, name).read_text().strip()
        assert str(st.pid) in Path(d, "cgroup.procs").read_text().split()
    assert values.get("memory.limit_in_bytes", values.get("memory.max")) == str(64 << 20)
    assert values["pids.max"] == "17"
    assert values.get("cpu.cfs_quota_us") == "50000" or values.get("cpu.max") == "50000 100000"
    rt.rt.remove("cg", force=True)
    assert not any(os.path.exists(d) for d in dirs)


def test_pids_limit_is_enforced(rt, netns):
    if "pids" not in rt.rt.cgroups.layout.controllers:
        pytest.skip("no pids cgroup controller on this host")
    rt.start("pl", [BUSYBOX, "sh", "-c", "for i in 1 2 3 4 5 6; do sleep 2 & done; wait"], netns=netns, pids_limit=3)
    rt.rt.wait("pl", 10)
    assert "can't fork" in rt.out("pl")[1] or "Resource temporarily unavailable" in rt.out("pl")[1]


# --- failures leave nothing behind --------------------------------------------------


def _assert_nothing_left(rt, cid: str) -> None:
    assert not (rt.state_dir / cid).exists()
    assert os.listdir(rt.state_dir) == []
    assert mounts_under(str(rt.state_dir)) == []
    assert procs_mentioning(str(rt.state_dir), ignore=(rt.rt.template.pid,)) == []  # the template stays
    for d in rt.rt.cgroups.dirs(cid, 64 << 20, 1.0, 10).values():
        assert not os.path.exists(d)


def test_missing_command(rt, netns, rootfs):
    spec = dict(netns=netns, memory=64 << 20, pids_limit=10)
    with pytest.raises(InvalidParameter) as exc:
        rt.rt.start(ContainerSpec(id="m", argv=["no-such-cmd-xyz"], **spec))
    assert str(exc.value) == 'exec: "no-such-cmd-xyz": executable file not found in $PATH'
    _assert_nothing_left(rt, "m")
    with pytest.raises(InvalidParameter, match='exec: "/nope/x": stat /nope/x: no such file or directory'):
        rt.rt.start(ContainerSpec(id="m", argv=["/nope/x"], rootfs=[str(rootfs)], **spec))
    _assert_nothing_left(rt, "m")


def test_missing_rootfs_or_netns(rt, netns, tmp_path):
    with pytest.raises(NotFound, match="rootfs .* not found"):
        rt.rt.start(ContainerSpec(id="m", argv=["true"], rootfs=[str(tmp_path / "nope")]))
    _assert_nothing_left(rt, "m")
    with pytest.raises(NotFound, match="network namespace /run/netns/cnmt-absent not found"):
        rt.rt.start(ContainerSpec(id="m", argv=["true"], netns="/run/netns/cnmt-absent"))
    _assert_nothing_left(rt, "m")
    with pytest.raises(InvalidParameter, match="cannot join network namespace"):
        rt.rt.start(ContainerSpec(id="m", argv=["true"], netns=str(tmp_path)))  # not a namespace file
    _assert_nothing_left(rt, "m")


# --- exec ---------------------------------------------------------------------------


def test_exec_argv_enters_the_container(rt, netns, rootfs):
    rt.start("x", ["sleep", "1000"], netns=netns, hostname="exec-box")
    argv = rt.rt.exec_argv(
        "x", [BUSYBOX, "sh", "-c", "hostname; cat /proc/1/cmdline; echo; readlink /proc/self/ns/net"]
    )
    r = subprocess.run(
        argv, env=rt.rt.exec_env("x"), capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "exec-box"
    assert lines[1].split("\0")[:2] == ["sleep", "1000"]  # PID 1 in its PID namespace
    assert lines[2] == f"net:[{os.stat(netns).st_ino}]"


def test_exec_into_rootfs_container(rt, netns, rootfs):
    rt.start(
        "xr",
        ["sh", "-c", "echo inside > /marker; exec sleep 1000"],
        netns=netns,
        rootfs=[str(rootfs)],
        env={"PATH": "/bin"},
    )
    deadline = time.monotonic() + 5
    while not (rt.state_dir / "xr" / files.UPPER / "marker").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    r = subprocess.run(
        rt.rt.exec_argv("xr", ["sh", "-c", "cat /marker; ls /"]),
        env=rt.rt.exec_env("xr"),
        capture_output=True,
        text=True,
        timeout=10,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "inside" and "usr" not in r.stdout.split()


def test_daemon_started_by_ip_netns_exec(rt, host_ns, netns):
    """Labs run each daemon under `ip netns exec`, which hides the cgroup mounts: limits
    must still land in the real hierarchy, and "host" mode means that daemon's namespace."""
    if "pids" not in rt.rt.cgroups.layout.controllers:
        pytest.skip("no pids cgroup controller on this host")
    real = Path(rt.rt.cgroups.dirs("ne", pids=9)["pids"])  # as seen from the test's namespace
    boot = f"from cnm.runtime import Runtime, ContainerSpec; rt = Runtime({str(rt.state_dir)!r}, cgroup_root={rt.cgroup_root!r}); "
    start = boot + (
        "st = rt.start(ContainerSpec(id='ne', argv=['sleep', '1000'], pids_limit=9)); "
        "import json; print(json.dumps([st.pid, st.shim_pid]))"
    )
    pid, shim_pid = json.loads(sh("ip", "netns", "exec", host_ns, sys.executable, "-c", start).stdout)
    d = json.loads((rt.state_dir / "ne" / files.STATE).read_text())
    rt.seen += [(d["shim_pid"], d["shim_start"]), (d["pid"], d["pid_start"])]
    try:
        assert (real / "pids.max").read_text().strip() == "9"
        assert str(pid) in (real / "cgroup.procs").read_text().split()
        assert os.readlink(f"/proc/{pid}/ns/net") == f"net:[{os.stat(netns).st_ino}]"
    finally:
        sh("ip", "netns", "exec", host_ns, sys.executable, "-c", boot + "rt.remove('ne', force=True)")
    assert not real.exists()
