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


def _in_root(root: str, path: str) -> str:
    """`path` inside `root`, resolving symlinks as if `root` were "/" (so an image's
    symlink cannot point a mount at the host's files)."""
    if root == "/":
        return path
    todo = [p for p in path.split("/") if p]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        cand = root + "/" + "/".join(done + [part])
        try:
            st = os.lstat(cand)
        except FileNotFoundError:
            done.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 40:
                raise OSError(40, f"too many levels of symbolic links in {path}")
            target = os.readlink(cand)
            if target.startswith("/"):
                done = []
            todo = [p for p in target.split("/") if p] + todo
        else:
            done.append(part)
    return root + ("/" + "/".join(done) if done else "")


def _make(path: str, is_dir: bool) -> None:
    if os.path.lexists(path):
        return
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if is_dir:
        os.mkdir(path, 0o755)
    else:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def _mountpoint(root: str, dst: str, is_dir: bool, optional: bool) -> str | None:
    """The real path of mount point `dst`, created if missing; None if it cannot be
    created and the mount is optional (the host's read-only filesystem)."""
    t = _in_root(root, dst)
    try:
        if os.path.islink(t) and root != "/":
            os.unlink(t)  # in the overlay's upper layer only; the image is never written
        _make(t, is_dir)
    except OSError as exc:
        if optional:
            return None
        if exc.errno == 30:  # EROFS
            raise Refused("InvalidParameter", f"{dst} does not exist and cannot be created: the host's "
                                              "filesystem is read-only in the host-filesystem mode") from exc
        raise
    return t


def enter_root(plan: dict) -> None:
    """Run the plan's mount operations; pivot into plan["root"] if it has one."""
    root = plan["root"] or "/"
    clones: dict[tuple[str, bool], int] = {}
    try:
        # Copy every bind source first, before anything below changes or hides it
        # (the host's mounts turning read-only, the daemon's directories masked).
        for op in plan["ops"]:
            if op[0] == "bind" and (op[1], op[4]) not in clones:
                try:
                    clones[(op[1], op[4])] = linux.clone_tree(op[1], op[4])
                except FileNotFoundError as exc:
                    if op[7]:
                        continue
                    raise Refused("NotFound", f"bind source {op[1]} does not exist") from exc
        for op in plan["ops"]:
            _OPS[op[0]](root, clones, *op[1:])
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


def _op_mount(root: str, _c: dict, src: str, dst: str, fstype: str, flags: int, data: str, optional: bool) -> None:
    t = root if dst == "/" else _mountpoint(root, dst, True, optional)
    if t is None:
        return
    try:
        linux.mount(src, t, fstype, flags, data or None)
    except OSError as exc:
        if fstype == "sysfs" and exc.errno == 16 and root == "/":
            # EBUSY: the kernel refuses a filesystem over its own root, i.e. the host's
            # /sys is already this network namespace's sysfs (host networking). Keep it.
            return
        if fstype == "overlay":
            raise Refused("InvalidParameter", f"cannot mount the rootfs as an overlay: {exc.strerror}") from exc
        raise


def _op_bind(root: str, clones: dict, src: str, dst: str, kind: str, recursive: bool, read_only: bool,
             propagation: int, optional: bool) -> None:
    fd = clones.get((src, recursive))
    if fd is None:
        return  # an optional bind whose source is missing
    is_dir = stat.S_ISDIR(os.fstat(fd).st_mode) if kind == "auto" else kind == "dir"
    t = _mountpoint(root, dst, is_dir, optional)
    if t is None:
        return
    linux.attach_tree(fd, t)
    if read_only:
        linux.mount_setattr(t, linux.MOUNT_ATTR_RDONLY, 0, recursive)
    if propagation:
        linux.mount(None, t, None, propagation)


def _op_chdir(_root: str, _c: dict, path: str) -> None:
    os.chdir(path)  # an overlay whose lowerdir= paths are relative to `path` (many layers)


def _op_dir(root: str, _c: dict, dst: str) -> None:
    os.makedirs(_in_root(root, dst), mode=0o755, exist_ok=True)


def _op_mknod(root: str, _c: dict, dst: str, mode: int, rdev: int, uid: int, gid: int) -> None:
    t = _in_root(root, dst)
    os.makedirs(os.path.dirname(t), mode=0o755, exist_ok=True)
    try:
        os.mknod(t, mode, rdev)
    except FileExistsError:
        return
    os.chown(t, uid, gid)
    os.chmod(t, stat.S_IMODE(mode))


def _op_symlink(root: str, _c: dict, target: str, dst: str) -> None:
    try:
        os.symlink(target, _in_root(root, dst))
    except FileExistsError:
        pass


def _op_mask(root: str, _c: dict, dst: str) -> None:
    t = _in_root(root, dst)
    try:
        st = os.lstat(t)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        linux.mount("tmpfs", t, "tmpfs", linux.MS_RDONLY, "nr_blocks=1,nr_inodes=1")
    else:
        linux.mount(_in_root(root, "/dev/null"), t, None, linux.MS_BIND)


def _op_ro(root: str, _c: dict, dst: str) -> None:
    t = _in_root(root, dst)
    if not os.path.lexists(t):
        return
    linux.mount(t, t, None, linux.MS_BIND | linux.MS_REC)
    linux.mount_setattr(t, linux.MOUNT_ATTR_RDONLY, 0, True)


def _op_setattr(root: str, _c: dict, dst: str, attrs: int, recursive: bool) -> None:
    linux.mount_setattr(_in_root(root, dst), attrs, 0, recursive)


def _op_remount_ro(root: str, _c: dict, dst: str) -> None:
    linux.mount_setattr(_in_root(root, dst) if dst != "/" else root, linux.MOUNT_ATTR_RDONLY, 0, False)


_OPS: dict[str, Callable[..., None]] = {"chdir": _op_chdir, "mount": _op_mount, "bind": _op_bind, "dir": _op_dir, "mknod": _op_mknod, "symlink": _op_symlink, "mask": _op_mask,
        "ro": _op_ro, "setattr": _op_setattr, "remount_ro": _op_remount_ro}


def lock(plan: dict) -> None:
    """Drop to the plan's capabilities and install its seccomp filter (see runc's
    finalizeNamespace: bounding set first, then the sets; the filter as late as possible,
    but before capset when no_new_privs is off, since loading it then needs CAP_SYS_ADMIN)."""
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
