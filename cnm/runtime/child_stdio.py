"""A supervisor's side of its child's stdio, shared by the supervisor (cnm.runtime.shim)
and the exec supervisor (cnm.runtime.exec_shim): pipes made before the fork, or a socket
pair over which the child sends the master of the TTY it allocates (cnm.runtime.prexec);
after the fork, the wait for the child's exec and the fds the relay then serves.

Imported by the template (through cnm.runtime.shim), so cheap imports only: a plain
class, no dataclasses.
"""

from __future__ import annotations

import _socket
import os

from cnm.runtime import prexec, reply, wire


class ChildStdio:
    """`child`: the child's ends ([stdin,] stdout, stderr; empty with a TTY), to close
    in the supervisor once forked; `mine`: (fd, stream) pairs the relay reads;
    `stdin_w`: where input goes (-1: none); `master`: the TTY's master (-1: none)."""

    __slots__ = ("child", "master", "mine", "ptys", "stdin", "stdin_w")

    def __init__(self, tty: bool, stdin: bool, null_stdin: bool = False) -> None:
        """`null_stdin`: without input, the child's stdin is /dev/null opened here (the
        child dup2s all three) rather than left to the child to open."""
        self.ptys = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM) if tty else None
        self.stdin = stdin
        self.child: list[int] = []
        self.mine: list[tuple[int, int]] = []
        self.stdin_w = -1
        self.master = -1
        if tty:
            return
        for stream in (wire.STDOUT, wire.STDERR):
            r, w = os.pipe2(os.O_CLOEXEC)
            self.child.append(w)
            self.mine.append((r, stream))
        if stdin:
            r, self.stdin_w = os.pipe2(os.O_CLOEXEC)
            self.child.insert(0, r)
        elif null_stdin:
            self.child.insert(0, os.open("/dev/null", os.O_RDONLY))

    def child_tty(self) -> _socket.socket | None:
        """The child's end of the TTY socket pair (None without a TTY)."""
        return self.ptys[1] if self.ptys is not None else None

    def await_exec(self, rfd: int, pid: int) -> bool:
        """Wait for the child `pid` to exec (EOF on its close-on-exec pipe `rfd`, which
        this closes). If it reported a failure instead: reap it, answer the ERROR and
        return False. Else take the TTY's master, if any, and return True."""
        failure = reply.read_all(rfd)
        os.close(rfd)
        if failure:
            os.waitpid(pid, 0)
            kind, _, message = failure.decode(errors="replace").partition("\t")
            reply.error(kind, message)
            return False
        if self.ptys is not None:
            self.ptys[1].close()
            self.master = prexec.receive_fd(self.ptys[0])
            self.ptys[0].close()
            self.mine = [(self.master, wire.STDOUT)]
            self.stdin_w = self.master if self.stdin else -1
        return True
