"""The daemon's files: private after a run with a secret in its environment (checked by
mode and by reading as another user), the API socket usable by root's group only, and
a refusal to start on directories another user could change."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.integration.conftest import NET, Daemon

BB = "/bin/busybox"
OTHER = 4242  # a uid (and gid) nobody on the machine uses
SECRET = "hunter2-" + os.urandom(6).hex()


@pytest.fixture
def open_base():
    """A base directory other users may traverse (unlike pytest's 0700 tmp_path), so
    that what keeps them out is the daemon's own modes."""
    d = Path(tempfile.mkdtemp(prefix="cnmf-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make(host_ns, open_base):
    made: list[Daemon] = []

    def build(root: Path | None = None, run: Path | None = None) -> Daemon:
        run = run or open_base / "run"
        d = Daemon(
            ns=host_ns,
            root=root or open_base / "root",
            run_dir=run,
            sock=run / "cnm.sock",
            log=open_base / f"daemon{len(made)}.log",
        )
        made.append(d)
        return d

    yield build
    for d in made:
        if d.proc is not None and d.proc.poll() is None:
            d.teardown()


def as_user(uid: int, gid: int, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv],
        capture_output=True,
        text=True,
        timeout=30,
    )


def reachable(path: Path, top: Path, bit_r: int, bit_x: int) -> bool:
    """Could a user with these permission bits (group's or others') read `path`?"""
    for d in [top, *[p for p in path.parents if top in p.parents]]:
        if not os.lstat(d).st_mode & bit_x:
            return False
    return bool(os.lstat(path).st_mode & bit_r)


def test_state_is_private_after_a_run_with_a_secret(make):
    d = make().start()
    d.net("run", "-d", "--name", "keeper", "-e", f"DBPASSWORD={SECRET}", BB, "sleep", "300")
    d.net("run", "--rm", "-e", f"TOKEN={SECRET}", BB, "true")
    paths = [Path(dp) / n for top in (d.root, d.run_dir) for dp, dirs, files in os.walk(top) for n in dirs + files]
    holding = [p for p in paths if stat.S_ISREG(os.lstat(p).st_mode) and SECRET.encode() in p.read_bytes()]
    assert holding, "the secret should be somewhere in the state (store, spec): else this test proves nothing"
    assert stat.S_IMODE(os.stat(d.root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(d.run_dir).st_mode) == 0o710
    wal = d.root / "local-kv.db-wal"
    assert wal.exists() and stat.S_IMODE(os.stat(wal).st_mode) == 0o600
    for top in (d.root, d.run_dir):
        others = [p for p in paths if top in p.parents and reachable(p, top, stat.S_IROTH, stat.S_IXOTH)]
        assert others == [], f"readable by other users: {others}"
        group = [p for p in paths if top in p.parents and reachable(p, top, stat.S_IRGRP, stat.S_IXGRP)]
        assert group == ([d.sock] if top == d.run_dir else []), f"readable by root's group: {group}"
    # The same, as the kernel sees it: another user reads none of it.
    for p in holding:
        r = as_user(OTHER, OTHER, "cat", str(p))
        assert r.returncode != 0 and "Permission denied" in r.stderr, (p, r.stdout[:100])
    # The socket: root's group may use the API (as Docker's docker group); others not.
    sock_mode = os.stat(d.sock)
    assert stat.S_IMODE(sock_mode.st_mode) == 0o660 and sock_mode.st_gid == 0
    assert as_user(OTHER, 0, NET, "-H", d.host, "ps", "-q").returncode == 0
    r = as_user(OTHER, OTHER, NET, "-H", d.host, "ps", "-q")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    d.net("container", "rm", "-f", "keeper")
    # The daemon's umask (077) is not the containers': theirs is Docker's 022, and the
    # files made for them are readable by any user inside.
    out = d.net("run", "--rm", BB, "sh", "-c", "umask; stat -c %a /etc/hosts /etc/resolv.conf /etc/hostname").stdout
    assert out.split() == ["0022", "644", "644", "644"]


def refused(d: Daemon, text: str) -> str:
    with pytest.raises(RuntimeError, match="daemon exited with 5"):
        d.start(timeout=20)
    lines = [ln for ln in d.log.read_text().splitlines() if "cannot start" in ln]
    assert len(lines) == 1 and text in lines[0], d.log.read_text()[-2000:]
    assert "Traceback" not in d.log.read_text()
    return lines[0]


def test_refuses_a_run_dir_owned_by_another_user_with_a_planted_symlink(make, open_base):
    run = open_base / "run"
    run.mkdir(mode=0o755)
    elsewhere = open_base / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (run / "containers").symlink_to(elsewhere)  # planted: the daemon must not follow it
    os.lchown(run / "containers", OTHER, OTHER)
    os.chown(run, OTHER, OTHER)
    refused(make(), f"--run-dir {run} belongs to uid {OTHER}")
    assert os.listdir(elsewhere) == [] and sorted(os.listdir(run)) == ["containers"]
    assert not (open_base / "root" / "local-kv.db").exists()


def test_refuses_a_root_writable_by_others(make, open_base):
    root = open_base / "root"
    root.mkdir()
    os.chmod(root, 0o777)
    refused(make(), f"--root {root} is writable by group or others")
    assert os.listdir(root) == []


def test_refuses_a_root_below_another_users_directory(make, open_base):
    theirs = open_base / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, OTHER, OTHER)
    refused(make(root=theirs / "root"), f"directory {theirs} on the way belongs to uid {OTHER}")
    assert os.listdir(theirs) == []


def test_an_older_versions_modes_are_tightened(make, open_base):
    root, run = open_base / "root", open_base / "run"
    for p in (root, run):
        p.mkdir()
        os.chmod(p, 0o711)
    d = make().start()
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(run).st_mode) == 0o710
    assert stat.S_IMODE(os.stat(run / "containers").st_mode) == 0o700
    d.stop()


def test_a_rootfs_container_sees_usual_modes(make, open_base):
    rootfs = open_base / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(BB, rootfs / "bin" / "busybox")
    os.symlink("busybox", rootfs / "bin" / "sh")
    d = make().start()
    out = d.net(
        "run",
        "--rm",
        "--rootfs",
        str(rootfs),
        "/bin/sh",
        "-c",
        "umask; /bin/busybox stat -c %a / /etc/hosts; /bin/busybox touch /f; /bin/busybox stat -c %a /f",
    ).stdout
    assert out.split() == ["0022", "755", "644", "644"]
