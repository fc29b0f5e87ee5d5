"""State directories: created private, refused when another user could change them,
never entered through a planted symlink. Ownership by another uid needs chown, so those
cases need root (they say so when skipped)."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from cnm.errors import Forbidden
from cnm.statedirs import chmod_socket, open_private, private_dir, private_subdir, resolve_trusted, trusted_parent
from cnm.store import Put
from cnm.store.sqlite import SQLiteStore

OTHER = 4242  # a uid nobody on the machine uses
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def base(tmp_path):
    # pytest's tmp_path is ours and 0700 on the way down; make sure of the last step.
    os.chmod(tmp_path, 0o755)
    return tmp_path


def test_made_private_with_exact_modes_whatever_the_umask(base):
    old = os.umask(0o000)
    try:
        real = private_dir(str(base / "a" / "b" / "root"), 0o700, "--root")
    finally:
        os.umask(old)
    assert real == str(base / "a" / "b" / "root")
    assert mode(base / "a" / "b" / "root") == 0o700
    assert mode(base / "a") == mode(base / "a" / "b") == 0o755


def test_existing_dir_of_an_older_version_is_tightened(base):
    d = base / "root"
    d.mkdir(mode=0o711)
    os.chmod(d, 0o711)
    private_dir(str(d), 0o700, "--root")
    assert mode(d) == 0o700
    private_dir(str(d), 0o710, "--run-dir")
    assert mode(d) == 0o710


@pytest.mark.parametrize("bad_mode", [0o770, 0o707, 0o777])
def test_writable_by_group_or_others_is_refused_untouched(base, bad_mode):
    d = base / "run"
    d.mkdir()
    os.chmod(d, bad_mode)
    with pytest.raises(Forbidden) as err:
        private_dir(str(d), 0o710, "--run-dir")
    msg = err.value.message
    assert "\n" not in msg and str(d) in msg and "writable by group or others" in msg
    assert mode(d) == bad_mode  # refused, not "fixed": something may have been planted


@needs_root
def test_owned_by_another_user_is_refused(base):
    d = base / "run"
    d.mkdir(mode=0o700)
    os.chown(d, OTHER, OTHER)
    with pytest.raises(Forbidden, match=rf"--run-dir {d} belongs to uid {OTHER}.*refusing to start") as err:
        private_dir(str(d), 0o710, "--run-dir")
    assert "\n" not in err.value.message
    assert os.lstat(d).st_uid == OTHER and mode(d) == 0o700


@needs_root
def test_a_directory_on_the_way_owned_by_another_user_is_refused(base):
    mid = base / "home-of-other"
    mid.mkdir(mode=0o755)
    os.chown(mid, OTHER, OTHER)
    with pytest.raises(Forbidden, match=rf"directory {mid} on the way belongs to uid {OTHER}"):
        private_dir(str(mid / "root"), 0o700, "--root")
    assert not (mid / "root").exists()  # nothing made below it


def test_a_world_writable_directory_on_the_way_needs_the_sticky_bit(base):
    shared = base / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(Forbidden, match=rf"directory {shared} on the way is writable by group or others"):
        private_dir(str(shared / "root"), 0o700, "--root")
    os.chmod(shared, 0o1777)  # like /tmp: only an entry's owner may replace it
    private_dir(str(shared / "root"), 0o700, "--root")
    assert mode(shared / "root") == 0o700


@needs_root
def test_a_planted_symlink_is_never_followed(base):
    target = base / "elsewhere"
    target.mkdir(mode=0o700)
    shared = base / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    link = shared / "cnm"
    link.symlink_to(target)
    os.lchown(link, OTHER, OTHER)  # planted by another user in a sticky directory
    with pytest.raises(Forbidden, match=rf"symlink {link} on the way belongs to uid {OTHER}"):
        private_dir(str(link / "root"), 0o700, "--root")
    assert os.listdir(target) == []


def test_an_admins_symlink_is_followed(base):
    # Like /var/run -> /run: made by root (or the daemon's user), so trusted.
    real = base / "real"
    real.mkdir()
    (base / "alias").symlink_to(real)
    assert private_dir(str(base / "alias" / "run"), 0o710, "--run-dir") == str(real / "run")
    assert mode(real / "run") == 0o710
    assert resolve_trusted(str(base / "alias" / ".." / "real"), "x") == str(real)


def test_a_file_in_the_way_is_refused(base):
    (base / "f").write_text("")
    with pytest.raises(Exception, match="is not a directory"):
        private_dir(str(base / "f" / "root"), 0o700, "--root")


def test_socket_parent_is_made_or_checked(base):
    assert trusted_parent(str(base / "s" / "cnm.sock"), "--socket") == str(base / "s")
    assert mode(base / "s") == 0o710
    os.chmod(base / "s", 0o777)
    with pytest.raises(Forbidden, match="writable by group or others"):
        trusted_parent(str(base / "s" / "cnm.sock"), "--socket")


def test_subdir_is_a_real_directory_of_ours(base):
    d = base / "containers"
    private_subdir(str(d))
    assert mode(d) == 0o700
    os.chmod(d, 0o711)
    private_subdir(str(d))
    assert mode(d) == 0o700
    (base / "netns").symlink_to(base / "containers")
    with pytest.raises(Forbidden, match="is a symlink where the daemon keeps a directory"):
        private_subdir(str(base / "netns"))


def test_private_files_never_follow_a_symlink(base):
    secret = base / "victim"
    secret.write_text("x")
    os.chmod(secret, 0o644)
    (base / "daemon.lock").symlink_to(secret)
    with pytest.raises(Forbidden, match="is a symlink"):
        open_private(str(base / "daemon.lock"), os.O_RDWR | os.O_CREAT)
    assert mode(secret) == 0o644 and secret.read_text() == "x"
    os.close(open_private(str(base / "new"), os.O_RDWR | os.O_CREAT))
    assert mode(base / "new") == 0o600


def test_socket_chmod_never_follows_a_symlink(base):
    victim = base / "victim"
    victim.write_text("")
    os.chmod(victim, 0o600)
    (base / "cnm.sock").symlink_to(victim)
    with pytest.raises(Forbidden, match="was replaced"):
        chmod_socket(str(base / "cnm.sock"), 0o660)
    assert mode(victim) == 0o600
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(base / "real.sock"))
        chmod_socket(str(base / "real.sock"), 0o660)
        assert mode(base / "real.sock") == 0o660
    finally:
        s.close()


def test_sqlite_files_are_private_even_under_a_loose_umask(base):
    """The -wal file holds every secret written (container environments) before a
    checkpoint; SQLite gives it the database's mode, so the database is made 0600 first."""
    old = os.umask(0o022)
    try:
        path = base / "local-kv.db"
        store = SQLiteStore(str(path))
        store.atomic([Put("containers/x", {"Env": ["SECRET=hunter2"]})])
        try:
            made = sorted(p.name for p in base.iterdir())
            assert made == ["local-kv.db", "local-kv.db-shm", "local-kv.db-wal"]
            assert {p: mode(base / p) for p in made} == {p: 0o600 for p in made}
        finally:
            store.close()
        os.chmod(path, 0o644)  # as an older version left it
        (base / "local-kv.db-wal").touch()
        os.chmod(base / "local-kv.db-wal", 0o644)
        SQLiteStore(str(path)).close()
        assert mode(path) == 0o600
        assert not (base / "local-kv.db-wal").exists() or mode(base / "local-kv.db-wal") == 0o600
    finally:
        os.umask(old)
