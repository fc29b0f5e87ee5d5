"""Between fork and exec: the steps a container's process and an exec'd process share —
the configuration off the request socket, stdio (pipes to the supervisor, or a TTY
allocated inside the container), the user, and the exec itself.

Imported by the template (through cnm.runtime.shim), so cheap imports only. Every
failure a user should see is raised as `Fail(kind, message)` with `kind` a
cnm.errors class name; the supervisor passes it to the Runtime.
"""

from __future__ import annotations

import _socket
import fcntl
import marshal
import os
import sys
import termios

from cnm.runtime import relay, users, wire

# <asm-generic/ioctls.h>: open the slave of a pty master without a path (Linux 4.13),
# and (un)lock a master's slave; not in Python's termios module.
TIOCGPTPEER = 0x5441
TIOCSPTLCK = 0x40045431


class Fail(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def read_exactly(fd: int, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise Fail("InternalError", "the runtime hung up before sending the whole configuration")
        buf += chunk
    return buf


def read_config(sock: int) -> dict:
    """The CONFIG frame a request starts with (no more: input frames may follow it)."""
    kind, length = wire.IN_HEADER.unpack(read_exactly(sock, wire.IN_HEADER.size))
    if kind != wire.CONFIG:
        raise Fail("InternalError", f"expected a configuration, got frame kind {kind}")
    cfg = marshal.loads(read_exactly(sock, length))
    if not isinstance(cfg, dict):
        raise Fail("InternalError", "the configuration is not a dict")
    return cfg


# --- the TTY -----------------------------------------------------------------------


def open_tty(to_supervisor: _socket.socket, size: list | tuple | None) -> int:
    """A pty from this process's /dev/ptmx (the container's own devpts once its root is
    in place, as runc does); the master goes to the supervisor over `to_supervisor`,
    the slave is returned. `size`: (rows, columns) or None."""
    try:
        master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise Fail("InvalidParameter", f"cannot allocate a TTY: /dev/ptmx: {exc.strerror}") from exc
    try:
        fcntl.ioctl(master, TIOCSPTLCK, bytes(4))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
        if size:
            fcntl.ioctl(master, termios.TIOCSWINSZ, relay.WINSIZE.pack(int(size[0]), int(size[1]), 0, 0))
        to_supervisor.sendmsg(
            [b"T"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, master.to_bytes(4, sys.byteorder, signed=True))]
        )
    except OSError as exc:
        raise Fail("InternalError", f"cannot allocate a TTY: {exc.strerror or exc}") from exc
    finally:
        os.close(master)
    return slave


def take_tty(slave: int) -> None:
    """Make the pty slave our controlling terminal and stdio (after setsid)."""
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def receive_fd(sock: _socket.socket) -> int:
    """The fd a child sent with `open_tty` (or -1 if it sent none)."""
    _, anc, _, _ = sock.recvmsg(1, _socket.CMSG_SPACE(4))
    for level, kind, data in anc:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS and len(data) >= 4:
            return int.from_bytes(data[:4], sys.byteorder, signed=True)
    return -1


# --- the user and the exec ---------------------------------------------------------


def resolve_user(spec: str, env: dict[str, str]) -> tuple[int, int, list[int], str] | None:
    """Docker's User (`spec`, "" = root) from the container's own passwd and group (we
    are in its root now); HOME from passwd unless the environment has one (runc's
    rule, root's too). None when there is nobody to become."""
    try:
        ids = users.resolve(spec)
    except users.UnknownUser as exc:
        raise Fail("InvalidParameter", str(exc)) from exc
    env.setdefault("HOME", ids[3])
    return ids if spec else None


def become(ids: tuple[int, int, list[int], str] | None) -> None:
    """Take the user `resolve_user` found (after confinement: lock() needs root)."""
    if ids is not None:
        os.setgroups(ids[2])
        os.setgid(ids[1])
        os.setuid(ids[0])


def _execvpe(argv: list[str], env: dict[str, str]) -> None:
    # Not os.execvpe: it imports `warnings` lazily, and after pivot_root the host's
    # stdlib is out of reach. Same rules: a name with '/' is a path, else search PATH;
    # ENOENT/ENOTDIR try the next directory, any other error is remembered.
    if "/" in argv[0]:
        os.execve(argv[0], argv, env)
    saved: OSError | None = None
    for d in env.get("PATH", "").split(":"):
        try:
            os.execve(os.path.join(d or ".", argv[0]), argv, env)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            saved = saved or exc
    raise saved or FileNotFoundError(2, "not found", argv[0])


def execute(argv: list[str], env: dict[str, str]) -> None:
    """exec, or Fail with Docker's words."""
    try:
        _execvpe(argv, env)
    except FileNotFoundError as exc:
        if "/" in argv[0]:
            msg = f'exec: "{argv[0]}": stat {argv[0]}: no such file or directory'
        else:
            msg = f'exec: "{argv[0]}": executable file not found in $PATH'
        raise Fail("InvalidParameter", msg) from exc
    except PermissionError as exc:
        raise Fail("InvalidParameter", f'exec: "{argv[0]}": permission denied') from exc
    except OSError as exc:
        raise Fail("InvalidParameter", f'exec: "{argv[0]}": {exc.strerror}') from exc


def report_failure(wfd: int, exc: BaseException) -> None:
    """Tell the supervisor why we could not exec (over the close-on-exec pipe), then exit."""
    if isinstance(exc, Fail):
        msg = f"{exc.kind}\t{exc.message}"
    elif isinstance(exc, OSError):
        msg = f"InternalError\tcannot start the process: {exc.strerror or exc}"
    else:
        msg = f"InternalError\tcannot start the process: {exc!r}"
    try:
        os.write(wfd, msg.encode())
    finally:
        os._exit(127)
