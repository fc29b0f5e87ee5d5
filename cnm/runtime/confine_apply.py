"""Apply a confinement plan (cnm.runtime.confine.plan) inside the container process,
between fork and exec. Two entry points, called by the supervisor:

    enter_root(plan)  after setns(net) + unshare(NEWNS|UTS|IPC) + "/" made MS_REC|MS_SLAVE:
                      builds the filesystem view (runs the plan's mount operations, then
                      pivot_root into the overlay, if any); leaves cwd at "/"
    lock(plan)        the last thing before execve: bounding set, ambient set, no_new_privs,
                      capabilities, seccomp filter, every fd >= 3 close-on-exec

`exec` into a running container joins its namespaces and calls lock() only.

Imported by the supervisor: only os, stat and cnm.runtime.linux (ctypes), nothing that
costs start-up time. The plan holds all decisions; this module only carries them out.
Errors: Refused(kind, message) for what the user can fix (kind is a cnm.errors class
name), OSError for the rest.
"""

from __future__ import annotations

import os
import stat

from cnm.runtime import linux

TYPE_CHECKING = False  # typing stays out of the supervisor's start (~12 ms); type checkers see True
if TYPE_CHECKING:
    from collections.abc import Callable


class Refused(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# Every path below the container's root is resolved by the kernel as if that root were
# "/" (openat2 RESOLVE_IN_ROOT): an image's or a --rootfs's symlinks ("dev -> /etc",
# "proc -> /", "../../..") stay inside it, and what is found is used through its fd
# (mount on /proc/self/fd/N, move_mount to an fd, *at() calls), so a name swapped for a
# symlink after the check (a volume shared with a running container) changes nothing.
_RESOLVE = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS
_PATH = os.O_PATH | os.O_CLOEXEC


def _open_root(root: str) -> int:
    return os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # the daemon's own dir (or "/")


def _resolve(root: str, path: str, create: str | None = None) -> int:
    """An O_PATH fd of `path` inside `root` (symlinks followed, inside it only). With
    `create` ("dir" or "file") what is missing is made on the way (a dangling symlink's
    target too, inside the root, as runc does): directories 0755, the last one a file
    0644 for "file"."""
    rfd = _open_root(root)
    try:
        return _resolve_at(rfd, path, create)
    finally:
        os.close(rfd)


def _resolve_at(rfd: int, path: str, create: str | None) -> int:
    links = 0
    for _ in range(100):  # each round makes one component, follows one link or loses one race
        try:
            return linux.openat2(rfd, path, _PATH, _RESOLVE)
        except FileNotFoundError:
            if create is None:
                raise
        except BlockingIOError:
            continue  # EAGAIN: a rename raced the walk; the kernel asks for a retry
        parts = [p for p in path.split("/") if p]
        i = 0
        while i < len(parts):
            try:
                os.close(linux.openat2(rfd, "/".join(parts[: i + 1]), _PATH, _RESOLVE))
            except FileNotFoundError:
                break
            i += 1
        if i == len(parts):
            continue  # it appeared meanwhile
        parent = linux.openat2(rfd, "/".join(parts[:i]) or "/", _PATH | os.O_DIRECTORY, _RESOLVE)
        name = parts[i]
        try:
            if i == len(parts) - 1 and create == "file":
                os.close(
                    os.open(
                        name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=parent
                    )
                )
            else:
                os.mkdir(name, 0o755, dir_fd=parent)
        except FileExistsError:
            if stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                links += 1
                if links > 40:
                    raise OSError(40, f"too many levels of symbolic links in {path}") from None
                # A dangling symlink: make what it points at, resolved again from the root.
                target = os.readlink(name, dir_fd=parent)
                head = [] if target.startswith("/") else parts[:i]
                path = "/".join(head + [target] + parts[i + 1 :])
        finally:
            os.close(parent)
    raise OSError(11, f"cannot resolve {path}: it keeps changing")


def _parent(root: str, path: str) -> tuple[int, str]:
    """(fd of the directory that holds `path`, made if missing; the last name)."""
    head, _, name = path.rstrip("/").rpartition("/")
    if name in ("", ".", ".."):
        raise Refused("InvalidParameter", f"invalid path {path!r}")
    return _resolve(root, head or "/", "dir"), name


def _is_root(fd: int, root: str) -> bool:
    a, b = os.fstat(fd), os.stat(root)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _mountpoint(root: str, dst: str, is_dir: bool, optional: bool) -> int | None:
    """An O_PATH fd of mount point `dst`, made if missing; None if it cannot be made and
    the mount is optional (the host's read-only filesystem)."""
    try:
        fd = _resolve(root, dst, "dir" if is_dir else "file")
    except OSError as exc:
        if optional:
            return None
        if exc.errno == 30:  # EROFS
            raise Refused(
                "InvalidParameter",
                f"{dst} does not exist and cannot be created: the host's "
                "filesystem is read-only in the host-filesystem mode",
            ) from exc
        raise
    if root != "/" and _is_root(fd, root):
        os.close(fd)  # "dev -> /", "proc -> .": a mount there would hide the container's whole tree
        raise Refused(
            "InvalidParameter",
            f"cannot mount on {dst}: in the container's filesystem it is a symlink to its root directory",
        )
    return fd


def enter_root(plan: dict) -> None:
    """Run the plan's mount operations; pivot into plan["root"] if it has one."""
    root = plan["root"] or "/"
    clones: dict[int, int] = {}
    try:
        # Copy every bind source first, before anything below changes or hides it
        # (the host's mounts turning read-only, the daemon's directories masked). One
        # copy per bind: attaching a copy moves it, so two binds cannot share one.
        for i, op in enumerate(plan["ops"]):
            if op[0] == "bind":
                try:
                    clones[i] = linux.clone_tree(op[1], op[4])
                except FileNotFoundError as exc:
                    if op[7]:
                        continue
                    raise Refused("NotFound", f"bind source {op[1]} does not exist") from exc
        for i, op in enumerate(plan["ops"]):
            _OPS[op[0]](root, clones.get(i), *op[1:])
    finally:
        for fd in clones.values():
            os.close(fd)
    if plan["root"]:
        os.chdir(plan["root"])
        # pivot_root(".", ".") stacks the old root under the new one; detaching "."
        # then drops it, without a put_old directory inside the rootfs.
        linux.pivot_root(".", ".")
        linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")


def _op_mount(
    root: str, _c: int | None, src: str, dst: str, fstype: str, flags: int, data: str, optional: bool
) -> None:
    t = None if dst == "/" else _mountpoint(root, dst, True, optional)
    if t is None and dst != "/":
        return
    try:
        # "/" is the daemon's own merged/ directory (or the host's root): no lookup inside the rootfs
        linux.mount(src, root if t is None else linux.fd_path(t), fstype, flags, data or None)
    except OSError as exc:
        if fstype == "sysfs" and exc.errno == 16 and root == "/":
            # EBUSY: the kernel refuses a filesystem over its own root, i.e. the host's
            # /sys is already this network namespace's sysfs (host networking). Keep it.
            return
        if fstype == "overlay":
            raise Refused("InvalidParameter", f"cannot mount the rootfs as an overlay: {exc.strerror}") from exc
        raise
    finally:
        if t is not None:
            os.close(t)


def _op_bind(
    root: str,
    tree: int | None,
    src: str,
    dst: str,
    kind: str,
    recursive: bool,
    read_only: bool,
    propagation: int,
    optional: bool,
    nodev: bool = False,
) -> None:
    if tree is None:
        return  # an optional bind whose source is missing
    mode = os.fstat(tree).st_mode
    is_dir = stat.S_ISDIR(mode) if kind == "auto" else kind == "dir"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        nodev = False  # a host device bound by name (-v /dev/net/tun:...): asked for, as --device
    t = _mountpoint(root, dst, is_dir, optional)
    if t is None:
        return
    try:
        linux.attach_tree_at(tree, t)
    finally:
        os.close(t)
    # `tree` is now the attached mount itself: no path lookup for its attributes either
    attrs = (linux.MOUNT_ATTR_RDONLY if read_only else 0) | (linux.MOUNT_ATTR_NODEV if nodev else 0)
    if attrs:
        linux.mount_setattr_fd(tree, attrs, 0, recursive)
    if propagation:
        linux.mount(None, linux.fd_path(tree), None, propagation)


def _op_chdir(_root: str, _c: int | None, path: str) -> None:
    os.chdir(path)  # an overlay whose lowerdir= paths are relative to `path` (many layers)


def _op_dir(root: str, _c: int | None, dst: str) -> None:
    os.close(_resolve(root, dst, "dir"))


def _op_mknod(root: str, _c: int | None, dst: str, mode: int, rdev: int, uid: int, gid: int) -> None:
    parent, name = _parent(root, dst)
    old = os.umask(0)  # the node gets exactly `mode`: no chmod by name afterwards
    try:
        os.mknod(name, mode, rdev, dir_fd=parent)
        os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
    except FileExistsError:
        return
    finally:
        os.umask(old)
        os.close(parent)


def _op_symlink(root: str, _c: int | None, target: str, dst: str) -> None:
    parent, name = _parent(root, dst)
    try:
        os.symlink(target, name, dir_fd=parent)
    except FileExistsError:
        pass
    finally:
        os.close(parent)


def _op_mask(root: str, _c: int | None, dst: str) -> None:
    try:
        t = _resolve(root, dst)
    except FileNotFoundError:
        return
    try:
        if stat.S_ISDIR(os.fstat(t).st_mode):
            linux.mount("tmpfs", linux.fd_path(t), "tmpfs", linux.MS_RDONLY, "nr_blocks=1,nr_inodes=1")
            return
        null = _resolve(root, "/dev/null")
        try:
            linux.mount(linux.fd_path(null), linux.fd_path(t), None, linux.MS_BIND)
        finally:
            os.close(null)
    finally:
        os.close(t)


def _op_ro(root: str, _c: int | None, dst: str) -> None:
    try:
        t = _resolve(root, dst)
    except FileNotFoundError:
        return
    try:
        tree = linux.clone_tree_fd(t, True)  # a recursive bind of dst onto itself, made read-only
        try:
            linux.attach_tree_at(tree, t)
            linux.mount_setattr_fd(tree, linux.MOUNT_ATTR_RDONLY, 0, True)
        finally:
            os.close(tree)
    finally:
        os.close(t)


def _op_setattr(root: str, _c: int | None, dst: str, attrs: int, recursive: bool) -> None:
    t = _resolve(root, dst)
    try:
        linux.mount_setattr_fd(t, attrs, 0, recursive)
    finally:
        os.close(t)


def _op_remount_ro(root: str, _c: int | None, dst: str) -> None:
    if dst == "/":
        linux.mount_setattr(root, linux.MOUNT_ATTR_RDONLY, 0, False)
        return
    t = _resolve(root, dst)
    try:
        linux.mount_setattr_fd(t, linux.MOUNT_ATTR_RDONLY, 0, False)
    finally:
        os.close(t)


_OPS: dict[str, Callable[..., None]] = {
    "chdir": _op_chdir,
    "mount": _op_mount,
    "bind": _op_bind,
    "dir": _op_dir,
    "mknod": _op_mknod,
    "symlink": _op_symlink,
    "mask": _op_mask,
    "ro": _op_ro,
    "setattr": _op_setattr,
    "remount_ro": _op_remount_ro,
}


def lock(plan: dict) -> None:
    """Drop to the plan's capabilities and install its seccomp filter (see runc's
    finalizeNamespace: bounding set first, then the sets; the filter as late as possible,
    but before capset when no_new_privs is off, since loading it then needs CAP_SYS_ADMIN)."""
    # Once the capabilities below are the container's, its processes may look into ours
    # (/proc/PID/exe, mem, fd): until execve this is still the host's Python, holding the
    # host's files (runc's CVE-2016-9962 and CVE-2019-5736). Non-dumpable until execve.
    linux.set_not_dumpable()
    keep = plan["caps"]
    everything = (1 << (plan["last_cap"] + 1)) - 1
    linux.drop_bounding(everything & ~keep)
    linux.clear_ambient()
    prog = plan["seccomp"]
    if plan["nnp"]:
        linux.set_no_new_privs()
    elif prog is not None:
        linux.seccomp_load(prog, plan["seccomp_flags"])
    linux.capset(keep, keep, 0)
    if prog is not None and plan["nnp"]:
        linux.seccomp_load(prog, plan["seccomp_flags"])
    linux.cloexec_from(3)
