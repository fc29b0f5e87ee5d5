"""A user's --rootfs (or an image's layers) is not to be trusted by the root daemon: its
symlinks must never make the supervisor mount, create or write anything outside it.

Each rootfs here points its system directories and files (dev, proc, sys, etc/hosts,
etc/resolv.conf, etc/hostname, a volume's target, the working directory) at a "victim"
directory on the host, by absolute and by relative ("../../..") symlinks, some dangling.
Afterwards the victim and its parent are exactly as before (names, types, modes,
contents), the host's mount table has nothing new, and inside the container the
symlinks led to its own files (created in its writable layer)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path

import pytest

from cnm.runtime import ContainerSpec, Runtime
from cnm.runtime.confine_opts import parse_bind

BUSYBOX = "/bin/busybox"
pytestmark = pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static at /bin/busybox")


@pytest.fixture
def rt(tmp_path):
    r = Runtime(str(tmp_path / "containers"), cgroup_root=f"cnm-test-{os.getpid()}-{tmp_path.name[-12:]}")
    yield r
    for st in r.list():
        r.remove(st.id, force=True)
    r.close()


@pytest.fixture
def victim():
    """A host directory the hostile rootfs aims at (on the host's own filesystem)."""
    d = Path(tempfile.mkdtemp(prefix="cnm-victim-", dir="/var/lib"))
    (d / "etc").mkdir()
    (d / "etc" / "hosts").write_text("victim hosts\n")
    (d / "etc" / "resolv.conf").write_text("victim resolv\n")
    (d / "data").mkdir()
    (d / "existing").mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _output(rt: Runtime, cid: str) -> tuple[str, str]:
    """(stdout, stderr) so far, from the container's log."""
    lines = list(rt.logs(cid))
    return (
        b"".join(ln.data for ln in lines if ln.stream == 1).decode(),
        b"".join(ln.data for ln in lines if ln.stream == 2).decode(),
    )


def snapshot(d: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(d):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            content = (
                Path(p).read_bytes()
                if stat.S_ISREG(st.st_mode)
                else os.readlink(p)
                if stat.S_ISLNK(st.st_mode)
                else None
            )
            out[p] = (st.st_mode, st.st_uid, content)
    return out


# Other helpers' tests mount and unmount on /, /tmp, /run... at any moment: watch only
# what the rootfs aims at.
WATCHED = ("/etc", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/var/lib")


def host_mounts(victim: Path) -> list[str]:
    """The host's mounts on the places a hostile rootfs aims at (other helpers' tests
    mount and unmount elsewhere at the same time)."""
    with open("/proc/self/mountinfo") as f:
        points = [ln.split()[4] for ln in f]
    return sorted(p for p in points if p in WATCHED or p.startswith(str(victim)))


def up(victim: Path, levels: int = 12) -> str:
    return "../" * levels + str(victim).lstrip("/")


def hostile_rootfs(base: Path, victim: Path) -> Path:
    root = base / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "etc").mkdir()
    links = {
        "dev": f"{victim}/dev",  # dangling, absolute
        "proc": up(victim) + "/proc",  # dangling, relative escape
        "sys": f"{victim}/existing",  # an existing host directory
        "tmp": f"{victim}/tmp/deeper",  # dangling, two levels
        "etc/hosts": f"{victim}/etc/hosts",  # an existing host file
        "etc/resolv.conf": "../" + up(victim) + "/etc/resolv.conf",
        "etc/hostname": f"{victim}/etc/hostname",  # dangling file
        "vol": f"{victim}/data",  # a volume's target goes through it
        "work": up(victim, 3) + "/work",  # the working directory
    }
    for name, target in links.items():
        (root / name).symlink_to(target)
    return root


def test_symlinks_in_a_rootfs_stay_inside_it(rt, host_ns, tmp_path, victim):
    root = hostile_rootfs(tmp_path, victim)
    src = tmp_path / "volume"
    src.mkdir()
    (src / "in-volume").write_text("volume file\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    before, mounts_before, parent_before = snapshot(victim), host_mounts(victim), sorted(os.listdir(victim.parent))
    script = (
        "cat /etc/hosts /etc/resolv.conf /etc/hostname; cat /vol/v/in-volume; ls /proc/self/ns >/dev/null && "
        "echo proc-ok; ls /dev/null && echo dev-ok; echo written > /tmp/vol/f && echo tmp-ok; pwd"
    )
    rt.start(
        ContainerSpec(
            id="hostile",
            argv=["sh", "-c", script],
            netns=f"/run/netns/{host_ns}",
            rootfs=[str(root)],
            env={"PATH": "/bin"},
            hostname="inside",
            workdir="/work/sub",
            hosts="127.0.0.1 ours\n",
            resolv_conf="nameserver 192.0.2.53\n",
            mounts=[parse_bind(f"{src}:/vol/v:ro"), parse_bind(f"{scratch}:/tmp/vol")],
        )
    )
    code = rt.wait("hostile", timeout=30)
    out, err = _output(rt, "hostile")
    assert code == 0, err
    assert "127.0.0.1 ours" in out and "nameserver 192.0.2.53" in out and "inside" in out
    assert "victim hosts" not in out and "victim resolv" not in out
    assert "volume file" in out and "proc-ok" in out and "dev-ok" in out and "tmp-ok" in out
    assert out.strip().endswith(f"{victim}/work/sub")  # the symlink's target, made inside the rootfs
    # nothing on the host changed: not the victim, not beside it, not the mount table
    assert snapshot(victim) == before
    assert sorted(os.listdir(victim.parent)) == parent_before
    assert host_mounts(victim) == mounts_before
    # ... and what the links pointed at was made in the container's own writable layer
    upper = tmp_path / "containers" / "hostile" / "upper"
    assert (upper / str(victim).lstrip("/") / "work" / "sub").is_dir()
    assert (upper / str(victim).lstrip("/") / "tmp" / "deeper" / "vol").is_dir()
    assert (scratch / "f").read_text() == "written\n"


@pytest.mark.parametrize("link", ["dev", "proc", "sys"])
def test_a_system_directory_linked_to_the_root_is_refused(rt, host_ns, tmp_path, victim, link):
    """`proc -> /` (or `.`): mounting there would cover the whole container: refused with
    one line, nothing left behind."""
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    (root / link).symlink_to("/" if link != "sys" else ".")
    mounts_before = host_mounts(victim)
    from cnm.errors import InvalidParameter

    with pytest.raises(InvalidParameter, match=f"cannot mount on /{link}: .* symlink to its root"):
        rt.start(
            ContainerSpec(
                id="rootlink", argv=["/bin/busybox", "true"], netns=f"/run/netns/{host_ns}", rootfs=[str(root)]
            )
        )
    assert host_mounts(victim) == mounts_before
    assert rt.list() == [] or all(st.status != "running" for st in rt.list())


def test_a_volume_swapped_for_a_symlink_while_containers_start(rt, host_ns, tmp_path, victim):
    """A running container shares a volume with containers being started, and flips a
    directory there between a directory and a symlink to the host's victim, as fast as it
    can. Whatever it wins, the binds of the starting containers land inside them.
    (Against the earlier walk, which checked names and then mounted by name, about one
    run in two made /shared/d/x in the victim on the host.)"""
    shared = tmp_path / "shared"
    shared.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    before, parent_before = snapshot(victim), sorted(os.listdir(victim.parent))
    stop = threading.Event()

    def flip() -> None:  # the racing "container" (a host thread with the same reach)
        d = shared / "d"
        while not stop.is_set():
            try:
                os.symlink(f"{victim}/data", d)
            except FileExistsError:
                pass
            try:
                os.unlink(d)
            except (IsADirectoryError, PermissionError):
                shutil.rmtree(d, ignore_errors=True)  # a starting container made it a directory
            except FileNotFoundError:
                pass

    t = threading.Thread(target=flip, daemon=True)
    t.start()
    try:
        for i in range(60):
            cid = f"race{i}"
            try:
                rt.start(
                    ContainerSpec(
                        id=cid,
                        argv=["/bin/busybox", "true"],
                        netns=f"/run/netns/{host_ns}",
                        rootfs=[str(root)],
                        mounts=[parse_bind(f"{shared}:/shared"), parse_bind(f"{src}:/shared/d/x/y")],
                    )
                )
                rt.wait(cid, timeout=30)
            except Exception:
                pass  # losing the race may fail the start; it must never escape
            rt.remove(cid, force=True)
    finally:
        stop.set()
        t.join()
    assert snapshot(victim) == before
    assert sorted(os.listdir(victim.parent)) == parent_before


def test_a_tty_exec_does_not_open_what_the_container_planted_at_dev_ptmx(rt, host_ns, tmp_path, victim):
    """`docker exec -t` gets its TTY from the container's /dev/ptmx (the runtime's exec
    opens it inside the container). The container owns its /dev: a symlink there to an
    absolute host path must not make anyone open that host file (here a FIFO: a writer
    blocked on it shows whether anyone opened it)."""
    from cnm.errors import CNMError
    from cnm.runtime.spec import ExecSpec

    fifo = victim / "fifo"
    os.mkfifo(fifo)
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    rt.start(
        ContainerSpec(
            id="planter",
            argv=[
                "/bin/busybox",
                "sh",
                "-c",
                f"busybox rm /dev/ptmx && busybox ln -s {fifo} /dev/ptmx && echo ready && busybox sleep 60",
            ],
            netns=f"/run/netns/{host_ns}",
            rootfs=[str(root)],
        )
    )
    deadline = time.monotonic() + 20
    while "ready" not in _output(rt, "planter")[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "ready" in _output(rt, "planter")[0], _output(rt, "planter")[1]
    opened = threading.Event()

    def writer() -> None:
        fd = os.open(fifo, os.O_WRONLY)  # blocks until someone opens the FIFO for reading
        opened.set()
        os.close(fd)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        try:
            sess = rt.exec("planter", ExecSpec(argv=["/bin/busybox", "true"], tty=True))
            while sess.read_frame(10) is not None:
                pass
            sess.close()
        except CNMError:
            pass  # refusing the planted ptmx is fine; opening the host's file is not
        assert not opened.wait(0.5), "the daemon opened the host's FIFO through the container's symlink"
    finally:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # release the writer
        t.join(5)


@pytest.mark.parametrize("where", ["volume", "tmpfs-with-dev"])
def test_a_device_node_made_in_a_volume_does_not_open(rt, host_ns, tmp_path, where):
    """A default container keeps CAP_MKNOD (Docker's set) and there is no device cgroup
    here: a node it makes in a volume (a host directory, on a filesystem that allows
    devices) must still not open, or `mknod /data/sda b 8 0` reads the host's disk.
    Here the node is /dev/null's (1:3), harmless if the check ever failed."""
    from cnm.runtime.confine_opts import parse_tmpfs

    vol = tmp_path / "vol"
    vol.mkdir()
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    mounts = [parse_bind(f"{vol}:/data")] if where == "volume" else parse_tmpfs({"/data": "dev,exec"})
    script = "busybox mknod /data/node c 1 3 && (echo x > /data/node && echo opened || echo refused)"
    for privileged, want in ((False, "refused"), (True, "opened")):
        cid = f"mk{int(privileged)}"
        rt.start(
            ContainerSpec(
                id=cid,
                argv=["/bin/busybox", "sh", "-c", script],
                netns=f"/run/netns/{host_ns}",
                rootfs=[str(root)],
                mounts=mounts,
                privileged=privileged,
            )
        )
        rt.wait(cid, timeout=30)
        out, err = _output(rt, cid)
        assert want in out, (privileged, out, err)
        if where == "volume":
            os.unlink(vol / "node")


def test_a_host_device_bound_by_name_still_opens(rt, host_ns, tmp_path):
    """`-v /dev/net/tun:/dev/net/tun` (OpenVPN's usual line) is a device asked for by name,
    as with --device: the nodev of volumes does not apply to it."""
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    rt.start(
        ContainerSpec(
            id="devbind",
            argv=["/bin/busybox", "sh", "-c", "echo x > /null-here && echo opened"],
            netns=f"/run/netns/{host_ns}",
            rootfs=[str(root)],
            mounts=[parse_bind("/dev/null:/null-here")],
        )
    )
    rt.wait("devbind", timeout=30)
    assert "opened" in _output(rt, "devbind")[0], _output(rt, "devbind")[1]


def test_a_process_between_lock_and_exec_is_out_of_the_containers_reach(rt):
    """lock() gives a process the container's capabilities, then it execs (a container's
    PID 1, or a docker exec). Until the exec it is the host's Python: a container process
    with the same capabilities must not open its /proc/PID/exe (CVE-2019-5736: rewrite the
    host's binary) or fds. Two forked children, both lock()ed as a default container:
    the second tries the first's /proc entries."""
    from cnm.runtime import confine, confine_apply

    plan = confine.lock_plan(confine.plan(ContainerSpec(id="x", argv=["true"]), [], rt.host))
    hold_r, hold_w = os.pipe()
    first = os.fork()
    if first == 0:
        try:
            os.close(hold_w)
            confine_apply.lock(plan)
            os.read(hold_r, 1)  # "before execve", for as long as the test needs
        finally:
            os._exit(0)
    os.close(hold_r)
    res_r, res_w = os.pipe()
    second = os.fork()
    if second == 0:
        try:
            os.close(res_r)
            confine_apply.lock(plan)
            got = []
            for what in ("exe", "fd/0", "environ"):
                try:
                    os.close(os.open(f"/proc/{first}/{what}", os.O_RDONLY))
                    got.append(f"{what}:opened")
                except OSError as exc:
                    got.append(f"{what}:{exc.errno}")
            os.write(res_w, " ".join(got).encode())
        finally:
            os._exit(0)
    os.close(res_w)
    time.sleep(0.2)
    out = os.read(res_r, 4096).decode()
    os.close(res_r)
    os.close(hold_w)
    os.waitpid(first, 0)
    os.waitpid(second, 0)
    assert "opened" not in out, out


def test_a_container_that_nests_deep_can_still_be_removed(rt, host_ns, tmp_path, victim):
    """1,200 nested directories in its writable layer (and a symlink out at the bottom):
    shutil.rmtree raised RecursionError there, so `rm` failed for ever. Removed now, and
    the symlink's target on the host is untouched."""
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    before = snapshot(victim)
    script = (
        f"cd /; i=0; while [ $i -lt 1200 ]; do busybox mkdir d && cd d || exit 1; i=$((i+1)); done; "
        f"busybox ln -s {victim} out && busybox ln -s {victim}/etc/hosts hosts && echo deep"
    )
    rt.start(
        ContainerSpec(
            id="deep", argv=["/bin/busybox", "sh", "-c", script], netns=f"/run/netns/{host_ns}", rootfs=[str(root)]
        )
    )
    assert rt.wait("deep", timeout=60) == 0
    assert "deep" in _output(rt, "deep")[0]
    rt.remove("deep")
    assert not (tmp_path / "containers" / "deep").exists()
    assert snapshot(victim) == before
