"""The template process: a pre-imported interpreter that forks container supervisors.

Started by cnm.runtime.template.Template as

    python -I -S -c "<put the project on sys.path>; from cnm.runtime.template_main import main; main()" <fd>

where <fd> is its end of a SOCK_SEQPACKET socketpair with the daemon (the control
socket). It imports the supervisor (cnm.runtime.shim and what that imports) once,
freezes the garbage collector's view of everything imported (gc.freeze(): no
collection in a forked child ever touches, and so copies, those objects), says "R"
(ready) on the control socket, then serves requests until the daemon's end closes —
which is how it dies with its daemon, however the daemon dies.

A request is one message: an operation byte (shim.OP_START or shim.OP_PROBE) with
file descriptors attached (SCM_RIGHTS): the daemon's per-request stream socket, and
for a start the container directory. For each, the template forks; the child calls
setsid() and forks the supervisor, then exits at once, and the template reaps it. So a
supervisor is never a child of the template (it is re-parented to init, or the nearest
subreaper), shares no session with it, and keeps none of its fds (shim.serve closes
them). The template itself does no per-request work beyond recvmsg, two forks and a
waitpid: its memory stays as the supervisors saw it at their fork, which is what they
share with it.

If it cannot fork, it answers "err Unavailable …" on the request's socket itself. If it
dies with requests queued, their sockets close unanswered: the Runtime sees EOF without
a claim on the directory, starts a new template and asks again.
"""
from __future__ import annotations

import _socket
import gc
import os
import sys

from cnm.runtime import files, linux, shim

# Enough ancillary space for the descriptors of one request (two ints) and a margin.
_ANC = _socket.CMSG_SPACE(4 * 4)


def _fds(ancdata: list) -> list[int]:
    out: list[int] = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            out += [int.from_bytes(data[i:i + 4], sys.byteorder, signed=True) for i in range(0, usable, 4)]
    return out


def _fork_supervisor(op: bytes, fds: list[int]) -> None:
    try:
        pid = os.fork()
    except OSError as exc:
        os.write(fds[0], f"err Unavailable cannot fork a supervisor: {exc.strerror}\n".encode())
        return
    if pid == 0:
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            shim.serve(op, fds[0], fds[1] if len(fds) > 1 else -1)  # never returns
        except BaseException:
            os._exit(1)
        os._exit(1)
    os.waitpid(pid, 0)  # the intermediate exits at once; the supervisor is on its own


def main() -> None:
    ctl_fd = int(sys.argv[1])
    linux.set_comm(files.TEMPLATE_COMM)
    os.chdir("/")
    ctl = _socket.socket(fileno=ctl_fd)
    gc.freeze()
    ctl.send(b"R")
    while True:
        try:
            msg, anc, _flags, _addr = ctl.recvmsg(16, _ANC)
        except ConnectionError:
            break
        if not msg:
            break  # the daemon's end closed: it is gone, and so are we
        fds = _fds(anc)
        try:
            if fds and msg[:1] in (shim.OP_START, shim.OP_PROBE):
                _fork_supervisor(msg[:1], fds)
        finally:
            for fd in fds:
                os.close(fd)
    os._exit(0)
