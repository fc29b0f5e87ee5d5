"""Containers confined by default, checked from inside real containers: capabilities,
no_new_privs, seccomp, /dev, /sys, /proc masks, the host's filesystem read-only and the
daemon's socket out of reach; --privileged, --cap-add, -v, --tmpfs, --read-only and
--security-opt saying otherwise.

Each test starts containers with the Runtime in its own state directory and throwaway
network namespace; probes run with the venv's Python (visible in the host-filesystem
mode) or busybox."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest

from cnm.errors import InvalidParameter
from cnm.runtime import ContainerSpec, Runtime, caps
from cnm.runtime.confine_opts import parse_bind
from tests.integration.conftest import sh

BUSYBOX = "/bin/busybox"
# The base interpreter, not the venv's: a container in host-filesystem mode gets a private
# /tmp, so a venv in a checkout under /tmp would not exist inside it.
PY = os.path.realpath(sys.executable)
pytestmark = pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static at /bin/busybox")
DOCKER_DEFAULT_MASK = 0xA80425FB  # Docker's 14 capabilities

# Runs inside a container: reports what it is allowed, as JSON on stdout.
PROBE = r"""
import ctypes, errno, json, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
def sys_(nr, *a):
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(x) for x in a))
    return 0 if rc != -1 else errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno())
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
def attempt(fn):
    try:
        fn()
        return 0
    except OSError as e:
        return errno.errorcode.get(e.errno, e.errno)
def write(path):
    with open(path, "w") as f:
        f.write("x")
out = {k: status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")}
out["unshare"] = sys_(272, 0x20000)            # unshare(CLONE_NEWNS)
out["mount"] = sys_(165, 0, 0, 0, 0, 0)
out["keyctl"] = sys_(250, 0, 0)
out["dev"] = sorted(os.listdir("/dev"))
out["sys_net"] = sorted(os.listdir("/sys/class/net"))
out["sys_write"] = attempt(lambda: write("/sys/class/net/lo/tx_queue_len"))  # "x": refused if writable
out["masks"] = sorted(l.split()[4] for l in open("/proc/self/mountinfo") if l.split()[4] in
                      ("/proc/keys", "/proc/timer_list", "/proc/scsi", "/sys/firmware", "/proc/sys"))
out["proc_sys_write"] = attempt(lambda: write("/proc/sys/kernel/hostname"))
out["kcore"] = len(open("/proc/kcore", "rb").read(16)) if os.path.exists("/proc/kcore") else -1
out["keys"] = open("/proc/keys").read()
out["etc_write"] = attempt(lambda: write("/etc/cnm-confine-probe"))
out["tmp_write"] = attempt(lambda: write("/tmp/cnm-confine-probe"))
def node():
    os.mknod("/dev/probe-null", 0o666 | 0o020000, os.makedev(1, 3))
    open("/dev/probe-null", "w").close()
out["mknod_open"] = attempt(node)
for p in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX)
    out["connect:" + p] = attempt(lambda: s.connect(p))
print(json.dumps(out))
"""


@pytest.fixture
def rt(tmp_path):
    state = tmp_path / "containers"
    r = Runtime(str(state), cgroup_root=f"cnm-test-{os.getpid()}-{tmp_path.name[-12:]}")
    yield r
    for st in r.list():
        r.remove(st.id, force=True)


@pytest.fixture
def outside():
    """A directory on the host's own filesystem (not /tmp, /run or /var/tmp, which a
    host-filesystem container sees as private tmpfs)."""
    d = tempfile.mkdtemp(prefix="cnm-confine-", dir="/var/lib")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def run(rt: Runtime, cid: str, argv: list[str], **kw) -> tuple[int, str, str]:
    rt.start(ContainerSpec(id=cid, argv=argv, **kw))
    code = rt.wait(cid, timeout=30)
    lines = list(rt.logs(cid))
    o, e = (b"".join(ln.data for ln in lines if ln.stream == s).decode() for s in (1, 2))
    return code, o, e


def probe(rt: Runtime, cid: str, *args: str, **kw) -> dict:
    code, out, err = run(rt, cid, [PY, "-I", "-S", "-c", PROBE, *args], **kw)
    assert code == 0, err
    return json.loads(out)


def test_default_container_is_confined_like_dockers(rt, host_ns):
    sh("ip", "-n", host_ns, "link", "add", "eth0", "type", "veth", "peer", "name", "cnmpeer0")
    got = probe(rt, "d", netns=f"/run/netns/{host_ns}")
    mask = f"{DOCKER_DEFAULT_MASK & caps.mask(rt.host.available):016x}"
    assert (got["CapEff"], got["CapPrm"], got["CapBnd"]) == (mask, mask, mask)
    assert (got["CapInh"], got["CapAmb"]) == ("0" * 16, "0" * 16)
    assert got["NoNewPrivs"] == "1" and got["Seccomp"] == "2"
    assert (got["unshare"], got["mount"], got["keyctl"]) == ("EPERM", "EPERM", "EPERM")
    kcore = ["core"] if os.path.exists("/proc/kcore") else []  # /dev/core -> /proc/kcore where there is one
    assert got["dev"] == sorted(
        kcore
        + [
            "fd",
            "full",
            "mqueue",
            "null",
            "ptmx",
            "pts",
            "random",
            "shm",
            "stderr",
            "stdin",
            "stdout",
            "tty",
            "urandom",
            "zero",
        ]
    )
    assert got["sys_net"] == ["cnmpeer0", "eth0", "lo"]  # this namespace's, not the host's
    assert got["sys_write"] == "EROFS" and got["proc_sys_write"] == "EROFS"
    assert got["kcore"] in (0, -1) and got["keys"] == ""
    assert {"/proc/keys", "/proc/timer_list", "/proc/sys", "/sys/firmware"} <= set(got["masks"])
    assert got["etc_write"] == "EROFS"
    assert got["tmp_write"] == 0 and not os.path.exists("/tmp/cnm-confine-probe")  # a private /tmp
    assert got["mknod_open"] == "EACCES"  # CAP_MKNOD as Docker, but /dev is nodev: no new devices


def test_host_files_and_daemon_socket_out_of_reach(rt, outside, tmp_path):
    daemon_dir = outside / "run"
    daemon_dir.mkdir()
    sock_path = str(daemon_dir / "d.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(sock_path)
    srv.listen()
    hidden = Runtime(str(tmp_path / "c2"), hide=(str(daemon_dir),))
    try:
        got = probe(hidden, "h", sock_path, "/run/cnm/cnm.sock")
        assert got[f"connect:{sock_path}"] == "ENOENT"
        assert got["connect:/run/cnm/cnm.sock"] == "ENOENT"  # /run is private
        code, _, err = run(hidden, "w", [BUSYBOX, "sh", "-c", f"echo x > {outside}/written"])
        assert code != 0 and "Read-only file system" in err
        assert not (outside / "written").exists()
    finally:
        for st in hidden.list():
            hidden.remove(st.id, force=True)
        srv.close()


def test_volumes_say_otherwise(rt, outside):
    (outside / "rw").mkdir()
    (outside / "ro").mkdir()
    mounts = [parse_bind(f"{outside}/rw:/srv/rw-in"), parse_bind(f"{outside}/ro:{outside}/ro:ro")]
    # /srv/rw-in may not exist on the host: in the host-filesystem mode a target that is
    # missing cannot be created on the read-only host.
    target = f"{outside}/rw"
    mounts[0]["target"] = target
    code, _, err = run(
        rt, "v", [BUSYBOX, "sh", "-c", f"echo yes > {target}/f; echo no > {outside}/ro/f"], mounts=mounts
    )
    assert (outside / "rw" / "f").read_text() == "yes\n"
    assert not (outside / "ro" / "f").exists() and "Read-only file system" in err and code != 0
    with pytest.raises(InvalidParameter, match="cannot be created"):
        rt.start(ContainerSpec(id="missing", argv=["true"], mounts=[parse_bind(f"{outside}/rw:/no-such-dir-here")]))


def test_writable_host_root_only_when_asked(rt, outside):
    code, _, err = run(rt, "rw", [BUSYBOX, "sh", "-c", f"echo yes > {outside}/f"], mounts=[parse_bind("/:/")])
    assert code == 0, err
    assert (outside / "f").read_text() == "yes\n"


def test_privileged_and_cap_add(rt, host_ns):
    netns = f"/run/netns/{host_ns}"
    got = probe(rt, "p", netns=netns, privileged=True)
    full = f"{caps.mask(rt.host.available):016x}"
    assert (got["CapEff"], got["CapBnd"], got["NoNewPrivs"], got["Seccomp"]) == (full, full, "0", "0")
    assert got["unshare"] == 0 and got["sys_write"] == "EINVAL" and got["masks"] == []
    assert "sda" in got["dev"] or len(got["dev"]) > 20  # the host's devices
    lo_mtu = [BUSYBOX, "ip", "link", "set", "lo", "mtu", "1400"]
    code, _, err = run(rt, "plain", lo_mtu, netns=netns)
    assert code != 0 and "Operation not permitted" in err
    code, _, err = run(rt, "admin", lo_mtu, netns=netns, cap_add=["NET_ADMIN"])
    assert code == 0, err
    got = probe(rt, "dropped", netns=netns, cap_drop=["ALL"], cap_add=["kill"])
    assert got["CapEff"] == f"{1 << caps.NUMBER['CAP_KILL']:016x}"


def test_security_opts(rt, host_ns):
    netns = f"/run/netns/{host_ns}"
    got = probe(rt, "u", netns=netns, security_opt=["seccomp=unconfined", "no-new-privileges=false"])
    assert (got["Seccomp"], got["NoNewPrivs"], got["unshare"]) == ("0", "0", "EPERM")  # no CAP_SYS_ADMIN
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 122}],
    }
    code, _, err = run(
        rt, "c", [BUSYBOX, "mkdir", "/tmp/x"], netns=netns, security_opt=["seccomp=" + json.dumps(profile)]
    )
    assert code != 0 and "Disk quota exceeded" in err  # EDQUOT = 122, from the profile
    got = probe(rt, "s", netns=netns, security_opt=["systempaths=unconfined"])
    assert got["proc_sys_write"] != "EROFS"


def test_rootfs_container_gets_a_private_dev(rt, host_ns, tmp_path):
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    before = set(os.listdir("/dev"))
    script = (
        "touch /dev/created-inside; ls /dev; mknod /dev/hostdisk b 8 0 && "
        "(busybox dd if=/dev/hostdisk of=/dev/null count=1 2>&1 || echo no-device-access); "
        "busybox mount -t tmpfs none /mnt 2>&1 || echo no-mount; echo x > /f 2>&1 || echo read-only-root"
    )
    code, out, err = run(
        rt,
        "r",
        ["sh", "-c", script],
        netns=f"/run/netns/{host_ns}",
        rootfs=[str(root)],
        env={"PATH": "/bin"},
        read_only=False,
    )
    assert code == 0, err
    assert set(os.listdir("/dev")) == before  # nothing appeared on the host
    assert "null" in out and "pts" in out and "sda" not in out
    assert "no-device-access" in out and "no-mount" in out and "read-only-root" not in out
    code, out, _ = run(
        rt,
        "ro",
        ["sh", "-c", "echo x > /f 2>&1 || echo read-only-root"],
        netns=f"/run/netns/{host_ns}",
        rootfs=[str(root)],
        env={"PATH": "/bin"},
        read_only=True,
    )
    assert "read-only-root" in out


def test_unknown_capability_is_refused_before_anything(rt):
    with pytest.raises(InvalidParameter, match='unknown capability: "CAP_NOPE"'):
        rt.start(ContainerSpec(id="bad", argv=["true"], cap_add=["NOPE"]))
    assert rt.list() == []


def test_exec_style_lock_in_a_forked_child(rt):
    """lock() alone (what exec uses) confines a process: fork, lock, read status."""
    from cnm.runtime import confine, confine_apply

    spec = ContainerSpec(id="x", argv=["true"])
    p = confine.lock_plan(confine.plan(spec, [], rt.host))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            confine_apply.lock(p)
            with open("/proc/self/status") as f:
                os.write(w, f.read().encode())
        finally:
            os._exit(0)
    os.close(w)
    text = b""
    while chunk := os.read(r, 65536):
        text += chunk
    os.close(r)
    os.waitpid(pid, 0)
    status = text.decode()
    assert caps.parse_status_mask(status, "CapEff") == DOCKER_DEFAULT_MASK & caps.mask(rt.host.available)
    assert "Seccomp:\t2" in status and "NoNewPrivs:\t1" in status


def test_through_the_daemon_a_container_cannot_reach_it(daemon):
    """The issue's escape: from inside a container, `net -H unix://… run --net host …`.
    Its socket, root and run directories are out of sight; the host's files read-only."""
    paths = " ".join(str(p) for p in (daemon.sock, daemon.root, daemon.run_dir))
    r = daemon.net(
        "run",
        "--rm",
        "--net",
        "none",
        "--",
        BUSYBOX,
        "sh",
        "-c",
        f"for p in {paths}; do ls $p >/dev/null 2>&1 && echo seen $p || echo hidden $p; done; "
        "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; touch /usr/cnm-probe || echo read-only",
    )
    out = r.stdout
    for p in (daemon.sock, daemon.root, daemon.run_dir):
        assert f"hidden {p}" in out, out
    assert "Seccomp:\t2" in out and "NoNewPrivs:\t1" in out and "read-only" in out
    assert not os.path.exists("/usr/cnm-probe")


def test_docker_py_drives_confinement(daemon):
    """Docker's own client sets the HostConfig fields; the container gets them and
    inspect shows them; a bad capability is a 400 naming it."""
    docker = pytest.importorskip("docker", reason="docker-py is a test dependency: pip install -e '.[test]'")
    from tests.integration.docker_clients import BUSYBOX_TAR, docker_py

    daemon.net("image", "load", "-q", "-i", str(BUSYBOX_TAR))  # docker-py names an image
    client = docker_py(daemon.host)
    try:
        ct = client.containers.create(
            "busybox",
            [
                BUSYBOX,
                "sh",
                "-c",
                "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; echo x > /tmp/scratch/f && echo tmpfs-ok",
            ],
            name="dpy-confine",
            cap_add=["NET_ADMIN"],
            cap_drop=["MKNOD"],
            security_opt=["no-new-privileges=false"],
            tmpfs={"/tmp/scratch": "size=1m"},
            network_mode="none",
        )
        ct.reload()
        if ct.status == "created":
            ct.start()
        assert ct.wait(timeout=30)["StatusCode"] == 0
        out = daemon.net("logs", "dpy-confine").stdout  # (docker-py's logs() wants Config.Tty in inspect)
        want = (caps.DEFAULT - {"CAP_MKNOD"}) | {"CAP_NET_ADMIN"}
        assert f"CapEff:\t{caps.mask(want):016x}" in out and "NoNewPrivs:\t0" in out and "tmpfs-ok" in out
        ct.reload()
        hc = ct.attrs["HostConfig"]
        assert (hc["CapAdd"], hc["CapDrop"], hc["Tmpfs"]) == (["NET_ADMIN"], ["MKNOD"], {"/tmp/scratch": "size=1m"})
        ct.remove(force=True)
        with pytest.raises(docker.errors.APIError) as err:
            client.containers.create("busybox", ["true"], name="dpy-bad-cap", cap_add=["FLY"])
        assert err.value.status_code == 400 and 'unknown capability: "CAP_FLY"' in str(err.value)
    finally:
        for c in client.containers.list(all=True):
            c.remove(force=True)
        client.close()


def test_exec_runs_confined_as_the_container(daemon):
    """docker exec: the process gets the container's capabilities, no_new_privs and
    seccomp filter (with Privileged: every capability, the filter kept)."""
    pytest.importorskip("docker", reason="docker-py is a test dependency: pip install -e '.[test]'")
    from tests.integration.docker_clients import BUSYBOX_TAR, docker_py

    daemon.net("image", "load", "-q", "-i", str(BUSYBOX_TAR))  # docker-py names an image
    client = docker_py(daemon.host)
    status = "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status"
    try:
        ct = client.containers.create(
            "busybox", [BUSYBOX, "sleep", "60"], name="exec-confine", cap_add=["NET_ADMIN"], network_mode="none"
        )
        ct.reload()
        if ct.status == "created":
            ct.start()
        code, out = ct.exec_run([BUSYBOX, "sh", "-c", status])
        want = caps.mask(caps.DEFAULT | {"CAP_NET_ADMIN"})
        assert code == 0 and f"CapEff:\t{want:016x}" in out.decode(), out
        assert "NoNewPrivs:\t1" in out.decode() and "Seccomp:\t2" in out.decode()
        code, out = ct.exec_run([BUSYBOX, "unshare", "-n", "true"])
        assert code != 0 and b"Operation not permitted" in out
        code, out = ct.exec_run([BUSYBOX, "sh", "-c", status], privileged=True)
        eff = caps.parse_status_mask(out.decode(), "CapEff")
        assert "CAP_SYS_ADMIN" in caps.names(eff) and "Seccomp:\t2" in out.decode()
    finally:
        for c in client.containers.list(all=True):
            c.remove(force=True)
        client.close()


def test_cli_flags_through_the_daemon(daemon, outside, tmp_path):
    """net run's confinement flags, end to end."""
    lo_mtu = ["--", BUSYBOX, "ip", "link", "set", "lo", "mtu", "1400"]
    r = daemon.net("run", "--rm", "--net", "none", *lo_mtu, check=False)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr
    daemon.net("run", "--rm", "--net", "none", "--cap-add", "NET_ADMIN", *lo_mtu)
    r = daemon.net(
        "run",
        "--rm",
        "--net",
        "none",
        "-v",
        f"{outside}:/mnt/data",
        "--tmpfs",
        "/mnt/scratch:size=1m",
        "--",
        BUSYBOX,
        "sh",
        "-c",
        "echo hi > /mnt/data/f && grep -c ' /mnt/scratch ' /proc/self/mounts",
        check=False,
    )
    # /mnt/data does not exist on the (read-only) host: refused with the reason
    assert r.returncode == 125 and "/mnt/data does not exist and cannot be created" in r.stderr
    r = daemon.net(
        "run",
        "--rm",
        "--net",
        "none",
        "-v",
        f"{outside}:{outside}",
        "--",
        BUSYBOX,
        "sh",
        "-c",
        f"echo hi > {outside}/f",
    )
    assert (outside / "f").read_text() == "hi\n"
    profile = tmp_path / "deny-mkdir.json"
    profile.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 122}],
            }
        )
    )
    r = daemon.net(
        "run",
        "--rm",
        "--net",
        "none",
        "--security-opt",
        f"seccomp={profile}",
        "--",
        BUSYBOX,
        "mkdir",
        "/tmp/x",
        check=False,
    )
    assert r.returncode != 0 and "Disk quota exceeded" in r.stderr
