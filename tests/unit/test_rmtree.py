"""cnm.rmtree.remove_tree: a container's directory goes whatever its writable
layer holds: nesting deeper than Python's recursion limit (shutil.rmtree raised
RecursionError at 1,200 levels: the container could never be removed), symlinks out of
it (never followed), wide directories."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cnm.rmtree import MAX_DEPTH, remove_tree


def nest(base: Path, depth: int) -> None:
    fd = os.open(base, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
            f.write("x")
        nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)


def test_deeper_than_the_recursion_limit(tmp_path):
    cdir = tmp_path / "c"
    (cdir / "upper").mkdir(parents=True)
    nest(cdir / "upper", 1500)
    with pytest.raises(RecursionError):  # why this module exists
        shutil.rmtree(cdir)
    assert remove_tree(str(cdir)) == []
    assert not cdir.exists()
    assert remove_tree(str(cdir)) == []  # idempotent


def test_symlinks_are_removed_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("host\n")
    cdir = tmp_path / "c"
    (cdir / "a" / "b").mkdir(parents=True)
    (cdir / "a" / "b" / "to-outside").symlink_to(outside)
    (cdir / "to-file").symlink_to(outside / "keep")
    (cdir / "dangling").symlink_to("/nonexistent")
    assert remove_tree(str(cdir)) == []
    assert not cdir.exists() and (outside / "keep").read_text() == "host\n"
    link = tmp_path / "link"
    link.symlink_to(outside)
    assert remove_tree(str(link)) == []  # the link goes, not what it points at
    assert not link.exists() and (outside / "keep").exists()


def test_wide_and_deep_mixed(tmp_path):
    cdir = tmp_path / "c"
    for i in range(300):
        (cdir / f"w{i}" / "x").mkdir(parents=True)
        (cdir / f"w{i}" / "x" / "f").write_text("y")
    nest(cdir / "w0", MAX_DEPTH * 3 + 5)  # several carries up to the top
    fifo = cdir / "fifo"
    os.mkfifo(fifo)
    assert remove_tree(str(cdir)) == []
    assert not cdir.exists()
