"""Remove a directory tree whatever it holds: a container's directory (its writable
layer is the container's to fill), an image's unpacked layer (the image's author's).

shutil.rmtree (Python 3.11) recurses once per directory level: a container that nests
1,200 directories in its upper layer (`mkdir d; cd d` in a loop) made the daemon's
`rm` raise RecursionError, and the container could never be removed. Here the walk is a
loop with an explicit stack, never follows a symlink (every step is an *at() call on the
parent's fd, O_NOFOLLOW), and holds at most MAX_DEPTH directory fds: a subtree deeper
than that is renamed up to the top directory and emptied from there. A directory whose
mode stops the removal (a layer's 0555 dirs, for a non-root caller) is made 0700 through
its fd first.
"""

from __future__ import annotations

import os
import stat

MAX_DEPTH = 64
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Frame:
    __slots__ = ("fd", "name", "names", "failed")

    def __init__(self, fd: int, name: str | None) -> None:
        self.fd = fd
        self.name = name  # its name in the frame below (None: the top)
        self.names: list[str] = []  # entries still to look at
        self.failed: set[str] = set()  # entries that could not be removed


def remove_tree(path: str, dir_fd: int | None = None) -> list[str]:
    """rm -rf `path` (itself included; relative to `dir_fd` if given); returns the errors
    ("path: reason"), [] when it is gone. A symlink or file at `path` is unlinked, not
    followed."""
    try:
        top = os.open(path, _DIR, dir_fd=dir_fd)
    except FileNotFoundError:
        return []
    except OSError as exc:
        if exc.errno not in (20, 40):  # ENOTDIR, ELOOP (a symlink): not a directory
            return [f"{path}: {exc.strerror}"]
        try:
            os.unlink(path, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        except OSError as exc2:
            return [f"{path}: {exc2.strerror}"]
        return []
    errs: list[str] = []
    stack = [_Frame(top, None)]
    moved = 0
    try:
        while stack:
            frame = stack[-1]
            if not frame.names:
                try:
                    frame.names = [n for n in os.listdir(frame.fd) if n not in frame.failed]
                except OSError as exc:
                    errs.append(f"{path}: {exc.strerror}")
                    frame.names = []
                if not frame.names:  # empty (or only what cannot go): leave it
                    stack.pop()
                    if stack:
                        _remove(stack[-1], frame.name or "", True, path, errs)
                    os.close(frame.fd)
                    continue
            name = frame.names.pop()
            try:
                st = os.stat(name, dir_fd=frame.fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                frame.failed.add(name)
                errs.append(f"{path}: {name}: {exc.strerror}")
                continue
            if not stat.S_ISDIR(st.st_mode):
                _remove(frame, name, False, path, errs)
                continue
            if len(stack) >= MAX_DEPTH:
                moved += 1  # too deep: carry it up to the top, empty it from there
                new = f".cnm-rm-{moved}"
                try:
                    os.rename(name, new, src_dir_fd=frame.fd, dst_dir_fd=top)
                except OSError as exc:
                    frame.failed.add(name)
                    errs.append(f"{path}: {name}: {exc.strerror}")
                continue
            try:
                child = os.open(name, _DIR, dir_fd=frame.fd)
            except OSError as exc:
                frame.failed.add(name)
                errs.append(f"{path}: {name}: {exc.strerror}")
                continue
            stack.append(_Frame(child, name))
    finally:
        for frame in stack:
            os.close(frame.fd)
    try:
        os.rmdir(path, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        errs.append(f"{path}: {exc.strerror}")
    return errs


def _writable(fd: int) -> None:
    """u+rwx on the directory `fd` is open on (never by name: no symlink to follow)."""
    os.fchmod(fd, stat.S_IMODE(os.fstat(fd).st_mode) | 0o700)


def _remove(frame: _Frame, name: str, is_dir: bool, path: str, errs: list[str]) -> None:
    try:
        for attempt in (0, 1):
            try:
                if is_dir:
                    os.rmdir(name, dir_fd=frame.fd)
                else:
                    os.unlink(name, dir_fd=frame.fd)
                return
            except PermissionError:
                if attempt:
                    raise
                _writable(frame.fd)  # a 0555 directory, for a non-root caller
    except FileNotFoundError:
        pass
    except OSError as exc:
        frame.failed.add(name)
        errs.append(f"{path}: {name}: {exc.strerror}")
