"""A container's User as ids, with runc's rules, from passwd/group files (no root)."""

from __future__ import annotations

import pytest

from cnm.runtime.users import UnknownUser, resolve


@pytest.fixture
def files(tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\n"
        "# comment:x:1:1\nnobody:x:65534:65534::/nonexistent:/bin/false\n"
    )
    group = tmp_path / "group"
    group.write_text("root:x:0:\napp:x:1000:\nwheel:x:10:app,other\naudio:x:29:app\nstaff:x:50:\n")
    return str(passwd), str(group)


@pytest.mark.parametrize(
    "user,want",
    [
        ("", (0, 0, [], "/root")),
        ("root", (0, 0, [], "/root")),
        ("app", (1000, 1000, [10, 29], "/home/app")),
        ("1000", (1000, 1000, [10, 29], "/home/app")),
        ("app:staff", (1000, 50, [10, 29], "/home/app")),
        ("app:7", (1000, 7, [10, 29], "/home/app")),
        ("4242", (4242, 0, [], "/")),  # not in passwd: still valid, gid 0 (runc, Docker)
        ("4242:4242", (4242, 4242, [], "/")),
    ],
)
def test_resolve(files, user, want):
    assert resolve(user, *files) == want


def test_unknown_names(files, tmp_path):
    with pytest.raises(UnknownUser, match="unable to find user ghost: no matching entries in passwd file"):
        resolve("ghost", *files)
    with pytest.raises(UnknownUser, match="unable to find group ghosts: no matching entries in group file"):
        resolve("app:ghosts", *files)
    assert resolve("0", str(tmp_path / "none"), str(tmp_path / "none")) == (0, 0, [], "/")
