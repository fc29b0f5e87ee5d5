"""Directories only the daemon can change: checked at start, created private, and
entered without following anything another user could have planted.

A root daemon keeps secrets (container environments, in its SQLite store and in each
container's spec) and acts on paths under its directories as root. If another user
could write to any directory on the way to them, that user could swap a directory for
a symlink and make the daemon read, write or bind-mount whatever they point it at.
So, like OpenSSH's StrictModes, `private_dir()` walks the whole path from `/`:

  - every directory on the way belongs to root or to the daemon's user, and is not
    writable by group or others unless it has the sticky bit (like /tmp, where only
    an entry's owner can replace it — and the next component's owner is checked);
  - every symlink on the way belongs to root or to the daemon's user (a symlink an
    admin made, e.g. /var/run -> /run, is fine; one another user planted is not);
  - the directory itself belongs to the daemon's user and is not writable by group or
    others; its mode is then set (tightened) to the one asked for.

Once that holds, nobody but root can create, rename or remove anything inside, so
plain path operations below it are safe; the files the daemon makes there are still
opened with O_NOFOLLOW (`open_private`), and subdirectories made with `private_subdir`
are checked to be real directories (never a symlink) owned by the daemon.

Refusals are `Forbidden` with one line saying which path is wrong and what to do.
"""

from __future__ import annotations

import errno
import os
import stat

from cnm.errors import Forbidden, InvalidParameter

# The daemon's umask: everything it creates is private unless it says otherwise.
DAEMON_UMASK = 0o077
ROOT_MODE = 0o700  # --root: nobody else may even look (Docker: 0710 / 0700)
RUN_MODE = 0o710  # --run-dir: the API socket's group may pass through to the socket
PARENT_MODE = 0o755  # missing parents made on the way (like `mkdir -p`)
MAX_SYMLINKS = 40  # the kernel's own limit (ELOOP)


def trusted_uids() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def _who(uid: int) -> str:
    try:
        import pwd  # only on a refusal: the message is clearer with a name

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _check_traversed(path: str, st: os.stat_result, what: str) -> None:
    """A directory or symlink the daemon passes through on its way to `what`."""
    if st.st_uid not in trusted_uids():
        kind = "symlink" if stat.S_ISLNK(st.st_mode) else "directory"
        raise Forbidden(
            f"{what}: {kind} {path} on the way belongs to {_who(st.st_uid)}, who could redirect it: "
            f"use a path whose directories only root can change"
        )
    if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise Forbidden(
            f"{what}: directory {path} on the way is writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}): use a path whose directories only root can change"
        )


def _check_own(path: str, st: os.stat_result, what: str) -> None:
    """The daemon's own directory: its user's, and nobody else may write to it."""
    if st.st_uid != os.geteuid():
        raise Forbidden(
            f"{what} {path} belongs to {_who(st.st_uid)}, not to the daemon's {_who(os.geteuid())}: "
            f"refusing to start (chown it after checking its contents, or choose another directory)"
        )
    if st.st_mode & 0o022:
        raise Forbidden(
            f"{what} {path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"refusing to start (chmod go-w it after checking nothing was planted in it)"
        )


def _mkdir(path: str, mode: int) -> None:
    """mkdir that gives exactly `mode` whatever the umask (and tolerates a racing twin)."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def resolve_trusted(path: str, what: str, *, create_mode: int | None = None) -> str:
    """Walk `path` from / one component at a time, checking every directory and symlink
    passed through (see the module doc) and, with `create_mode`, making missing
    directories (parents PARENT_MODE, the last one `create_mode`). Returns the resolved
    path (no symlinks). The last component is not checked here: callers check it
    with the rule that fits it."""
    if not path:
        raise InvalidParameter(f"{what} must not be empty")
    pending = [c for c in os.path.abspath(path).split("/") if c and c != "."][::-1]
    cur = "/"
    _check_traversed(cur, os.lstat(cur), what)
    hops = 0
    while pending:
        comp = pending.pop()
        if comp == "..":
            cur = os.path.dirname(cur)
            continue
        nxt = os.path.join(cur, comp)
        try:
            st = os.lstat(nxt)
        except FileNotFoundError:
            if create_mode is None:
                raise
            _mkdir(nxt, create_mode if not pending else PARENT_MODE)
            st = os.lstat(nxt)
        if stat.S_ISLNK(st.st_mode):
            _check_traversed(nxt, st, what)
            hops += 1
            if hops > MAX_SYMLINKS:
                raise InvalidParameter(f"{what} {path}: too many levels of symbolic links")
            target = os.readlink(nxt)
            pending.extend([c for c in target.split("/") if c and c != "."][::-1])
            if target.startswith("/"):
                cur = "/"
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidParameter(f"{what} {path}: {nxt} is not a directory")
        if pending:
            _check_traversed(nxt, st, what)
        cur = nxt
    return cur


def private_dir(path: str, mode: int, what: str) -> str:
    """The daemon's own directory at `path`, made if missing: checked all the way from
    / (Forbidden, one line, if another user could change it) and set to `mode`.
    Returns its resolved path."""
    real = resolve_trusted(path, what, create_mode=mode)
    fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _check_own(path, os.fstat(fd), what)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return real


def trusted_parent(path: str, what: str, mode: int = RUN_MODE) -> str:
    """The directory that will hold `path` (e.g. the API socket): made (`mode`) if
    missing, else checked like any directory on the way (root's or ours, not writable
    by others unless sticky). Its mode is left alone. Returns the resolved directory."""
    parent = os.path.dirname(os.path.abspath(path))
    real = resolve_trusted(parent, what, create_mode=mode)
    _check_traversed(real, os.lstat(real), what)
    return real


def _open_nofollow(path: str, flags: int, mode: int, kind: str) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        # ELOOP: the last component is a symlink; ENOTDIR: it is not a directory (or,
        # with O_DIRECTORY, a symlink to one).
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
            raise Forbidden(
                f"{path} is a symlink where the daemon keeps {kind} of its own: remove it after checking who made it"
            ) from None
        raise


def private_subdir(path: str, mode: int = 0o700) -> str:
    """A subdirectory of a checked directory: made with `mode`, or the existing one if it
    is a real directory (not a symlink) owned by the daemon's user; its mode is set to
    `mode` either way (older versions made some 0711). Returns `path`."""
    _mkdir(path, mode)
    fd = _open_nofollow(path, os.O_RDONLY | os.O_DIRECTORY, 0, "a directory")
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise Forbidden(
                f"{path} belongs to {_who(st.st_uid)}, not to the daemon: remove it after checking its contents"
            )
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return path


def open_private(path: str, flags: int, mode: int = 0o600) -> int:
    """os.open for a file the daemon owns: never through a symlink (O_NOFOLLOW), not
    inherited by children (O_CLOEXEC), and, when it exists already, set to `mode`
    (files made by older versions, or by SQLite with the umask of the day)."""
    fd = _open_nofollow(path, flags, mode, "a file")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Forbidden(f"{path} is not a regular file: remove it")
        if stat.S_IMODE(st.st_mode) != mode and st.st_uid == os.geteuid():
            os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def tighten_file(path: str, mode: int = 0o600) -> None:
    """Set an existing file's mode without following a symlink; a missing file is fine."""
    try:
        os.close(open_private(path, os.O_RDONLY, mode))
    except FileNotFoundError:
        pass


def chmod_socket(path: str, mode: int) -> None:
    """chmod the unix socket just bound at `path`, never through a symlink: an O_PATH
    handle on the path itself, checked to be a socket, changed through /proc (the
    kernel has no fchmod for a socket file)."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise Forbidden(f"{path} was replaced while the daemon bound it: check who writes to its directory")
        os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)
