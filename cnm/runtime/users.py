"""A container's user (Docker's `User`: "name", "uid", "uid:gid", "name:group") as
numeric ids, from the container's own /etc/passwd and /etc/group, with runc's rules
(libcontainer/user GetExecUser): a uid missing from passwd is still valid, with gid 0
and home "/"; a name missing is an error; supplementary groups are those listing the
user as a member. Called inside the container's root (after pivot_root), by the
supervisor before exec and by nsexec; cheap to import (os only).
"""

from __future__ import annotations


class UnknownUser(Exception):
    """The user or group is not in the container's files (Docker's wording)."""


def _entries(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f if line.count(":") >= 3 and not line.startswith("#")]
    except OSError:
        return []


def resolve(user: str, passwd: str = "/etc/passwd", group: str = "/etc/group") -> tuple[int, int, list[int], str]:
    """(uid, gid, supplementary gids, home directory) of `user` ("" = root)."""
    name, _, group_spec = (user or "0").partition(":")
    users = _entries(passwd)
    match = [e for e in users if len(e) >= 4 and (e[2] == name if name.isdigit() else e[0] == name)]
    if not match and not name.isdigit():
        raise UnknownUser(f"unable to find user {name}: no matching entries in passwd file")
    uid = int(name) if name.isdigit() else int(match[0][2])
    gid = int(match[0][3]) if match and match[0][3].isdigit() else 0
    home = match[0][5] if match and len(match[0]) > 5 and match[0][5] else "/"
    groups = _entries(group) if group_spec or match else []
    if group_spec:
        gmatch = (
            [e for e in groups if e[2] == group_spec]
            if group_spec.isdigit()
            else [e for e in groups if e[0] == group_spec]
        )
        if not gmatch and not group_spec.isdigit():
            raise UnknownUser(f"unable to find group {group_spec}: no matching entries in group file")
        gid = int(group_spec) if group_spec.isdigit() else int(gmatch[0][2])
    login = match[0][0] if match else None
    extra = [int(e[2]) for e in groups if login and e[2].isdigit() and login in e[3].split(",")]
    return uid, gid, extra, home
