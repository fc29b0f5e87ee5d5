"""Paths inside a container's root resolved as if it were "/" (confine_apply._resolve):
no symlink leads out of it, what is missing is made inside it, loops end. No root
needed: openat2 and the *at() calls are unprivileged."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest

from cnm.runtime import confine_apply as ca
from cnm.runtime import linux


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "etc").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_text("host\n")
    (root / "etc" / "secret").write_text("inside\n")
    return root, outside


def where(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def test_absolute_and_relative_links_stay_inside(tree):
    root, outside = tree
    (root / "abs").symlink_to(f"{outside}")  # an absolute host path
    (root / "rel").symlink_to("../../../../../../../..")  # up past the root
    (root / "etc" / "up").symlink_to("../../outside")
    assert where(ca._resolve(str(root), "/rel/etc/secret")) == f"{root}/etc/secret"
    with pytest.raises(FileNotFoundError):
        ca._resolve(str(root), "/abs/secret")  # {outside}/secret inside the root: none there
    with pytest.raises(FileNotFoundError):
        ca._resolve(str(root), "/etc/up/secret")


def test_dangling_links_are_made_inside(tree):
    root, outside = tree
    (root / "dev").symlink_to(f"{outside}/dev")
    (root / "etc" / "hosts").symlink_to(f"../../../{outside.name}/hosts")
    assert where(ca._resolve(str(root), "/dev/pts", "dir")) == f"{root}{outside}/dev/pts"
    assert where(ca._resolve(str(root), "/etc/hosts", "file")) == f"{root}/{outside.name}/hosts"
    assert sorted(os.listdir(outside)) == ["secret"]  # nothing made on the host side
    assert (root / outside.name / "hosts").is_file()


def test_loops_and_bad_names_end_in_errors(tree):
    root, _ = tree
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("a")
    with pytest.raises(OSError) as exc:
        ca._resolve(str(root), "/a/x", "dir")
    assert exc.value.errno == 40  # ELOOP
    with pytest.raises(ca.Refused):
        ca._parent(str(root), "/etc/..")


def test_a_mount_point_that_is_the_root_is_refused(tree):
    root, _ = tree
    (root / "proc").symlink_to("/")
    with pytest.raises(ca.Refused, match="symlink to its root"):
        ca._mountpoint(str(root), "/proc", True, False)
    fd = ca._mountpoint(str(root), "/etc", True, False)
    assert fd is not None and where(fd) == f"{root}/etc"


def test_openat2_retries_what_a_racing_mount_or_rename_fails(tree, monkeypatch):
    """With RESOLVE_IN_ROOT the kernel fails a ".." with EAGAIN when a mount or rename
    anywhere on the machine raced the lookup (seen under load: other tests' mounts). That
    is retried; an EAGAIN that never ends is still an error."""
    root, _ = tree
    real = linux._libc.syscall
    calls: list[int] = []

    def racing(*args: object) -> int:
        calls.append(1)
        if len(calls) <= 3:
            ctypes.set_errno(errno.EAGAIN)
            return -1
        return real(*args)

    monkeypatch.setattr(linux._libc, "syscall", racing)
    rfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        assert where(linux.openat2(rfd, "etc/../etc/secret", os.O_PATH, linux.RESOLVE_IN_ROOT)) == f"{root}/etc/secret"
        assert len(calls) == 4
        calls.clear()
        monkeypatch.setattr(linux, "OPENAT2_TRIES", 2)
        with pytest.raises(OSError) as err:
            linux.openat2(rfd, "etc/../etc/secret", os.O_PATH, linux.RESOLVE_IN_ROOT)
        assert err.value.errno == errno.EAGAIN and len(calls) == 2
    finally:
        os.close(rfd)
