"""Runtime logic that needs no root: spec, status encoding, state files, cgroup
paths, nsenter argv, and the shim's import diet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnm.errors import Conflict, InvalidParameter, NotFound
from cnm.runtime import cgroups as cg
from cnm.runtime import files
from cnm.runtime.runtime import Runtime, nsenter_argv
from cnm.runtime.spec import DEFAULT_PATH, ContainerSpec
from cnm.runtime.state import CREATED, EXITED, RUNNING, DirFiles, derive, read_dir
from cnm.runtime.template import BOOT

# --- ContainerSpec ----------------------------------------------------------------

_text = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=20)


@settings(deadline=None)  # a property, not a timing: the suite shares 2 cores
@given(
    argv=st.lists(_text, min_size=1, max_size=4).filter(lambda a: a[0] != ""),
    env=st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True), _text, max_size=4),
    memory=st.one_of(st.none(), st.integers(min_value=6 * 1024 * 1024, max_value=2**40)),
    cpus=st.one_of(st.none(), st.floats(min_value=0.01, max_value=64)),
    pids=st.one_of(st.none(), st.integers(min_value=1, max_value=10**6)),
    hosts=st.one_of(st.none(), _text),
)
def test_spec_json_round_trip(argv, env, memory, cpus, pids, hosts):
    spec = ContainerSpec(
        id="c0ffee",
        name="web",
        argv=argv,
        env=env,
        hostname="web-1",
        workdir="/srv",
        netns="/run/cnm/netns/abc",
        rootfs=["/var/lib/img"],
        hosts=hosts,
        resolv_conf="nameserver 10.0.0.2\n",
        memory=memory,
        cpus=cpus,
        pids_limit=pids,
    )
    spec.validate()
    back = ContainerSpec.from_json(spec.to_json())
    assert back == spec
    assert json.loads(spec.to_json())["argv"] == argv


@pytest.mark.parametrize(
    "change, words",
    [
        ({"argv": []}, "no command"),
        ({"argv": [""]}, "no command"),
        ({"id": "../etc"}, "invalid container id"),
        ({"netns": "relative/path"}, "invalid netns"),
        ({"rootfs": ["/a,b"]}, "not allowed"),
        ({"rootfs": ["/ok", "img"]}, "absolute"),
        ({"rootfs": []}, "non-empty list"),
        ({"rootfs": "/img"}, "non-empty list"),
        ({"user": "a\nb"}, "invalid user"),
        ({"workdir": "srv"}, "absolute"),
        ({"memory": 1024}, "6MB"),
        ({"cpus": 0.0}, "CPUs"),
        ({"pids_limit": 0}, "at least 1"),
        ({"env": {"A=B": "x"}}, "environment"),
        ({"hostname": "bad_host!"}, "hostname"),
    ],
)
def test_spec_validation_errors(change, words):
    spec = ContainerSpec(id="abc", argv=["true"])
    for k, v in change.items():
        setattr(spec, k, v)
    with pytest.raises(InvalidParameter, match=words):
        spec.validate()


def test_spec_from_json_takes_an_old_single_rootfs():
    spec = ContainerSpec.from_dict({"id": "a", "argv": ["x"], "rootfs": "/var/lib/img"})
    assert spec.rootfs == ["/var/lib/img"]


def test_spec_from_json_rejects_unknown_fields_and_garbage():
    with pytest.raises(InvalidParameter, match="unknown container spec field"):
        ContainerSpec.from_dict({"id": "a", "argv": ["x"], "ports": []})
    with pytest.raises(InvalidParameter, match="not valid JSON"):
        ContainerSpec.from_json("{nope")
    with pytest.raises(InvalidParameter, match="invalid container spec"):
        ContainerSpec.from_dict({"id": "a"})


def test_spec_env_and_hostname_defaults():
    spec = ContainerSpec(id="a", argv=["x"], hostname="h1", env={"FOO": "1"})
    assert spec.full_env() == {"PATH": DEFAULT_PATH, "HOSTNAME": "h1", "FOO": "1"}
    assert ContainerSpec(id="a", argv=["x"], env={"PATH": "/bin"}).full_env() == {"PATH": "/bin"}
    assert spec.hostname_file() == "h1\n"
    assert ContainerSpec(id="a", argv=["x"]).hostname_file() is None
    assert ContainerSpec(id="a", argv=["x"], hostname="h", etc_hostname="other\n").hostname_file() == "other\n"


# --- exit status and files ----------------------------------------------------------


@pytest.mark.parametrize(
    "status, code",
    [
        (0, 0),
        (3 << 8, 3),
        (255 << 8, 255),  # exited
        (9, 137),
        (15, 143),
        (2, 130),  # killed by SIGKILL, SIGTERM, SIGINT
        (9 | 0x80, 137),  # killed, core dumped
    ],
)
def test_exit_code_encoding(status, code):
    assert files.exit_code(status) == code


def test_exit_code_rejects_stopped_status():
    with pytest.raises(ValueError):
        files.exit_code(0x137F)  # WIFSTOPPED(SIGSTOP)


def test_rfc3339():
    s = files.rfc3339(1700000000.25)
    assert s == "2023-11-14T22:13:20.250000Z"
    assert datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() == 1700000000.25
    assert files.rfc3339(1.9999999).startswith("1970-01-01T00:00:02.000000")


@given(st.dictionaries(_text, st.one_of(st.none(), st.integers(), _text), max_size=5))
def test_dump_flat_is_json(obj):
    assert json.loads(files.dump_flat(obj)) == obj


def test_write_atomic_replaces_whole_file(tmp_path):
    p = str(tmp_path / "exit.json")
    files.write_atomic(p, "old")
    files.write_atomic(p, '{"exit_code": 3}')
    assert json.loads(open(p).read()) == {"exit_code": 3}
    assert os.listdir(tmp_path) == ["exit.json"]  # no temporary left


# --- state files --------------------------------------------------------------------

STARTED = {"shim_pid": 10, "shim_start": 111, "pid": 11, "pid_start": 112, "started_at": "2024-01-01T00:00:00.000000Z"}


def test_derive_states():
    d = DirFiles(shim=(10, 111), started=STARTED, exited=None)
    running = derive("c", d, True)
    assert (running.status, running.pid, running.shim_pid, running.exit_code) == (RUNNING, 11, 10, None)

    lost = derive("c", d, False)
    assert (lost.status, lost.exit_code) == (EXITED, files.LOST_EXIT_CODE)
    assert "supervisor died" in lost.error

    done = derive(
        "c", DirFiles((10, 111), STARTED, {"exit_code": 3, "finished_at": "2024-01-01T00:00:01.000000Z"}), False
    )
    assert (done.status, done.exit_code, done.finished_at, done.error) == (
        EXITED,
        3,
        "2024-01-01T00:00:01.000000Z",
        None,
    )

    starting = derive("c", DirFiles((10, 111), None, None), True)
    assert (starting.status, starting.shim_pid, starting.pid) == (CREATED, 10, None)


def test_read_dir_parses_files_and_tolerates_torn_ones(tmp_path):
    (tmp_path / files.SHIM_PID).write_text("10 111\n")
    (tmp_path / files.STATE).write_text(json.dumps(STARTED))
    (tmp_path / files.EXIT).write_text('{"exit_code": 1')  # torn: a crash leftover
    d = read_dir(str(tmp_path))
    assert d == DirFiles(shim=(10, 111, None), started=STARTED, exited=None)
    (tmp_path / files.SHIM_PID).write_text("10 111 8a2c\n")
    assert read_dir(str(tmp_path)).shim == (10, 111, "8a2c")
    (tmp_path / files.SHIM_PID).write_text("")  # a fence: no supervisor
    assert read_dir(str(tmp_path)).shim is None
    assert read_dir(str(tmp_path / "missing")) == DirFiles(None, None, None)


# --- cgroups ------------------------------------------------------------------------

V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_CGROUP = "9:name=systemd:/\n8:pids:/svc\n4:memory:/svc/x\n1:cpu,cpuacct:/\n0::/\n"
V2_MOUNTINFO = "24 30 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V2_CGROUP = "0::/system.slice/cnmd.service\n"


def test_detect_v1_hybrid_and_paths():
    layout = cg.detect(V1_MOUNTINFO, V1_CGROUP, {"/sys/fs/cgroup/unified": "hugetlb\n"})
    assert {c: (h.version, h.mountpoint) for c, h in layout.controllers.items()} == {
        "cpu": (1, "/sys/fs/cgroup/cpu,cpuacct"),
        "cpuacct": (1, "/sys/fs/cgroup/cpu,cpuacct"),
        "memory": (1, "/sys/fs/cgroup/memory"),
        "pids": (1, "/sys/fs/cgroup/pids"),
    }
    dirs = cg.container_dirs(layout, "cnm", "abc")
    assert dirs == {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct/cnm/abc",
        "cpuacct": "/sys/fs/cgroup/cpu,cpuacct/cnm/abc",
        "memory": "/sys/fs/cgroup/memory/svc/x/cnm/abc",  # nested under our own cgroup
        "pids": "/sys/fs/cgroup/pids/svc/cnm/abc",
    }
    assert cg.container_dirs(layout, "/top", "abc", ["pids"]) == {"pids": "/sys/fs/cgroup/pids/top/abc"}
    assert cg.limit_writes(layout, 64 << 20, 1.5, 100) == [
        ("memory", "memory.limit_in_bytes", str(64 << 20)),
        ("cpu", "cpu.cfs_period_us", "100000"),
        ("cpu", "cpu.cfs_quota_us", "150000"),
        ("pids", "pids.max", "100"),
    ]


def test_detect_v2_and_paths():
    layout = cg.detect(V2_MOUNTINFO, V2_CGROUP, {"/sys/fs/cgroup": "cpuset cpu io memory pids\n"})
    assert {h.version for h in layout.controllers.values()} == {2}
    dirs = cg.container_dirs(layout, "cnm", "abc")
    assert set(dirs.values()) == {"/sys/fs/cgroup/cnm/abc"}  # v2: one directory, under the root
    assert cg.limit_writes(layout, 10 << 20, 0.5, 7) == [
        ("memory", "memory.max", str(10 << 20)),
        ("cpu", "cpu.max", "50000 100000"),
        ("pids", "pids.max", "7"),
    ]


def test_v1_mount_root_is_stripped():
    mi = "35 31 0:32 /outer /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    layout = cg.detect(mi, "4:memory:/outer/inner\n", {})
    assert cg.container_dirs(layout, "cnm", "c") == {"memory": "/sys/fs/cgroup/memory/inner/cnm/c"}


def test_missing_controller_errors_only_when_asked():
    layout = cg.detect(V2_MOUNTINFO, V2_CGROUP, {"/sys/fs/cgroup": "cpu memory\n"})
    assert cg.limit_writes(layout, 10 << 20, None, None)  # fine
    with pytest.raises(InvalidParameter, match="pids cgroup controller is not available"):
        cg.limit_writes(layout, None, None, 5)
    assert cg.limit_writes(cg.Layout({}), None, None, None) == []


def test_cgroup_root_validation():
    with pytest.raises(InvalidParameter):
        cg.Cgroups("../escape")


# --- exec and shim identity ---------------------------------------------------------


def test_nsenter_argv():
    assert nsenter_argv(4242, ["sh", "-c", "echo hi"]) == [
        "nsenter",
        "--target=4242",
        "--mount",
        "--uts",
        "--ipc",
        "--net",
        "--pid",
        "--cgroup",
        "--root",
        "--wd",
        "--",
        "sh",
        "-c",
        "echo hi",
    ]


def test_template_imports_little():
    """Every module the template imports is memory each supervisor shares with it (and,
    at small N, pays a share of): it must not import json, dataclasses, subprocess,
    socket, signal (enum) or the errors module."""
    code = BOOT.replace(
        "from cnm.runtime.template_main import main; main()",
        "import cnm.runtime.template_main; print(' '.join(sorted(sys.modules)))",
    )
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True).stdout
    mods = set(out.split())
    assert {"cnm.runtime.shim", "cnm.runtime.template_main"} <= mods
    assert not mods & {
        "json",
        "dataclasses",
        "subprocess",
        "socket",
        "signal",
        "enum",
        "re",
        "cnm.errors",
        "cnm.runtime.spec",
        "cnm.runtime.template",
        "threading",
    }


# --- Runtime bookkeeping without processes ------------------------------------------


def test_runtime_unknown_and_invalid_ids(tmp_path):
    rt = Runtime(str(tmp_path / "containers"))
    with pytest.raises(NotFound, match="no such container: nope"):
        rt.state("nope")
    with pytest.raises(InvalidParameter):
        rt.state("../x")
    rt.remove("nope")  # idempotent
    assert rt.list() == []


def test_runtime_reads_exited_container_from_disk(tmp_path):
    rt = Runtime(str(tmp_path))
    cdir = tmp_path / "c1"
    cdir.mkdir()
    (cdir / files.SPEC).write_text(ContainerSpec(id="c1", argv=["true"]).to_json())
    (cdir / files.STATE).write_text(json.dumps(dict(STARTED, shim_pid=2**22 + 7)))
    (cdir / files.EXIT).write_text(files.dump_flat({"exit_code": 3, "finished_at": "2024-01-01T00:00:01.000000Z"}))
    st = rt.state("c1")
    assert (st.status, st.exit_code) == (EXITED, 3)
    assert rt.wait("c1", timeout=0) == 3
    assert rt.exit_fd("c1") is None
    assert rt.stop("c1") == 3
    with pytest.raises(Conflict, match="not running"):
        rt.kill("c1")
    with pytest.raises(Conflict, match="not running"):
        rt.exec_argv("c1", ["sh"])
    assert [s.id for s in rt.list()] == ["c1"]
    rt.remove("c1")
    assert not cdir.exists()


def test_runtime_settles_a_lost_shim(tmp_path):
    """state.json without exit.json and no live shim: exited 137, persisted."""
    rt = Runtime(str(tmp_path))
    cdir = tmp_path / "c2"
    cdir.mkdir()
    (cdir / files.SPEC).write_text(ContainerSpec(id="c2", argv=["true"]).to_json())
    (cdir / files.STATE).write_text(json.dumps(dict(STARTED, shim_pid=2**22 + 7, pid=2**22 + 8)))
    st = rt.state("c2")
    assert (st.status, st.exit_code) == (EXITED, 137)
    assert json.loads((cdir / files.EXIT).read_text())["exit_code"] == 137
    assert [s.exit_code for s in rt.adopt()] == [137]


def test_adopt_resets_a_start_that_never_finished(tmp_path):
    """Its supervisor died before the process ran: the container is "created" again
    (startable); a fenced one (a start that timed out) stays fenced."""
    rt = Runtime(str(tmp_path))
    for cid, claim in (("c3", f"{2**22 + 9} 5\n"), ("c4", "")):  # no such process; a fence
        cdir = tmp_path / cid
        cdir.mkdir()
        (cdir / files.SPEC).write_text(ContainerSpec(id=cid, argv=["true"]).to_json())
        (cdir / files.SHIM_PID).write_text(claim)
    states = {st.id: st for st in rt.adopt()}
    assert (states["c3"].status, states["c3"].error) == (CREATED, None)
    assert not (tmp_path / "c3" / files.SHIM_PID).exists()
    assert states["c4"].status == CREATED and "never finished" in states["c4"].error
    with pytest.raises(Conflict, match="never finished"):
        rt.start("c4")


def test_container_view_shows_only_the_hierarchies_it_has_a_cgroup_in():
    v1 = cg.detect(V1_MOUNTINFO, V1_CGROUP, {"/sys/fs/cgroup/unified": "hugetlb\n"})
    assert cg.container_view(v1, ["memory"], V1_CGROUP) == [("memory", "cgroup", "memory")]
    assert cg.container_view(v1, ["cpu", "pids"], V1_CGROUP) == [
        ("pids", "cgroup", "pids"),
        ("cpu,cpuacct", "cgroup", "cpu,cpuacct"),
    ]
    assert cg.container_view(v1, [], V1_CGROUP) == []
    v2 = cg.detect(V2_MOUNTINFO, V2_CGROUP, {"/sys/fs/cgroup": "cpuset cpu io memory pids\n"})
    assert cg.container_view(v2, ["memory", "pids"], V2_CGROUP) == [("", "cgroup2", "")]  # at /sys/fs/cgroup


def test_cgroup_ops_read_only_unless_privileged():
    from cnm.runtime import confine, linux

    view = [("pids", "cgroup", "pids"), ("cpu,cpuacct", "cgroup", "cpu,cpuacct")]
    ops = confine._cgroup_ops(view, privileged=False)
    assert ops[0][:3] == ("mount", "tmpfs", "/sys/fs/cgroup")
    assert [o[2] for o in ops if o[0] == "mount"][1:] == ["/sys/fs/cgroup/pids", "/sys/fs/cgroup/cpu,cpuacct"]
    assert ("symlink", "cpu,cpuacct", "/sys/fs/cgroup/cpuacct") in ops
    assert ops[-1] == ("setattr", "/sys/fs/cgroup", linux.MOUNT_ATTR_RDONLY, True)
    assert not any(o[0] == "setattr" for o in confine._cgroup_ops(view, privileged=True))
    assert [o[:3] for o in confine._cgroup_ops([("", "cgroup2", "")], False)] == [
        ("mount", "cgroup", "/sys/fs/cgroup"),
        ("setattr", "/sys/fs/cgroup", linux.MOUNT_ATTR_RDONLY),
    ]
    assert confine._cgroup_ops([], False) == []


def test_plan_mounts_for_a_namespace_without_cgroupfs():
    assert cg.plan_mounts(V1_CGROUP) == [
        ("pids", "cgroup", "pids"),
        ("memory", "cgroup", "memory"),
        ("cpu,cpuacct", "cgroup", "cpu,cpuacct"),
    ]
    assert cg.plan_mounts(V2_CGROUP) == [("unified", "cgroup2", None)]
    assert cg.plan_mounts("1:name=systemd:/\n") == []


# --- the template's pieces ----------------------------------------------------------


def test_claim_is_exclusive_and_whole(tmp_path):
    p = str(tmp_path / files.SHIM_PID)
    assert files.claim(p, "10 111 boot\n")
    assert not files.claim(p, "20 222 boot\n")
    assert files.parse_pid_file(open(p).read()) == (10, 111, "boot")
    assert os.listdir(tmp_path) == [files.SHIM_PID]  # no temporary left
    d = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert files.claim("other", "x", dir_fd=d) and not files.claim("other", "y", dir_fd=d)
        files.write_atomic("state", "{}", dir_fd=d)
    finally:
        os.close(d)
    assert (tmp_path / "other").read_text() == "x" and (tmp_path / "state").read_text() == "{}"


def test_template_reads_passed_descriptors():
    import socket

    from cnm.runtime import template_main

    data = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in (7, 9))
    assert template_main._fds([(socket.SOL_SOCKET, socket.SCM_RIGHTS, data + b"\0\0")]) == [7, 9]
    assert template_main._fds([(socket.SOL_SOCKET, 99, data)]) == []


def test_template_probe_restarts_a_dead_template():
    """No root needed: a probe is a supervisor that answers and exits. A killed template
    is replaced at the next request; garbage on the control socket is ignored."""
    import signal
    import time

    from cnm.runtime.template import Template

    t = Template()
    try:
        first = t.ensure()
        assert t.probe() > 0
        t._ctl.send(b"?")  # an unknown operation without descriptors
        assert t.probe() > 0 and t.pid == first
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while t.pid == first and time.monotonic() < deadline:
            time.sleep(0.01)
        assert t.probe() > 0 and t.pid not in (None, first) and t.starts == 2
    finally:
        t.close()
    assert t.pid is None


def test_mount_points_decode_mountinfo_escapes():
    from cnm.runtime import linux

    assert linux._unescape(b"/tmp/a\\040b\\011c\\134d") == "/tmp/a b\tc\\d"
    assert linux._unescape(b"/plain") == "/plain"
    points = linux.mount_points()
    assert "/" in points and all(p.startswith("/") for p in points)
