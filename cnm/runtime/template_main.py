"""The template process: a pre-imported interpreter that forks container supervisors.

Started by cnm.runtime.template.Template as

    python -I -S -c "<put the project on sys.path>; from cnm.runtime.template_main import main; main()" <fd> [<scratch dir>]

where <fd> is its end of a SOCK_SEQPACKET socketpair with the daemon (the control
socket). It imports the supervisor (cnm.runtime.shim and what that imports) once, runs
the supervisor's I/O code a few times on throwaway fds (`_warm_up`, in the scratch
directory), freezes the garbage collector's view of everything (gc.freeze(): no
collection in a forked child ever touches, and so copies, those objects), says "R"
(ready) on the control socket, then serves requests until the daemon's end closes —
which is how it dies with its daemon, however the daemon dies.

A request is one message: an operation byte (shim.OP_START, OP_EXEC or OP_PROBE) and
its options, with file descriptors attached (SCM_RIGHTS): the daemon's per-request
stream socket, and for a start or an exec the container directory. For each, the template forks; the child calls
setsid() and forks the supervisor, then exits at once, and the template reaps it. So a
supervisor is never a child of the template (it is re-parented to init, or the nearest
subreaper), shares no session with it, and keeps none of its fds (shim.serve closes
them). The template itself does no per-request work beyond recvmsg, two forks and a
waitpid: its memory stays as the supervisors saw it at their fork, which is what they
share with it.

If it cannot fork, it answers ERROR "Unavailable …" on the request's socket itself. If it
dies with requests queued, their sockets close unanswered: the Runtime sees EOF without
a claim on the directory, starts a new template and asks again.
"""
from __future__ import annotations

import _socket
import gc
import os
import sys
import time

from cnm.runtime import exec_shim, files, linux, relay, shim, wire  # noqa: F401 - exec_shim: imported once, for every exec supervisor

# Enough ancillary space for the descriptors of one request (two ints) and a margin.
_ANC = _socket.CMSG_SPACE(4 * 4)


def _fds(ancdata: list) -> list[int]:
    out: list[int] = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            out += [int.from_bytes(data[i:i + 4], sys.byteorder, signed=True) for i in range(0, usable, 4)]
    return out


def _fork_supervisor(msg: bytes, fds: list[int]) -> None:
    try:
        pid = os.fork()
    except OSError as exc:
        os.write(fds[0], wire.out_frame(wire.ERROR, f"Unavailable cannot fork a supervisor: {exc.strerror}".encode(),
                                        time.time_ns()))
        return
    if pid == 0:
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            shim.serve(msg, fds[0], fds[1] if len(fds) > 1 else -1)  # never returns
        except BaseException:
            os._exit(1)
        os._exit(1)
    os.waitpid(pid, 0)  # the intermediate exits at once; the supervisor is on its own


def _warm_up(scratch: str, rounds: int = 24) -> None:
    """Run the supervisor's I/O paths here, on throwaway pipes and sockets and a log in
    `scratch`, before any supervisor is forked. Python specialises bytecode and fills
    lazy caches the first times code runs, writing to the objects involved; done once
    here, those writes land in pages every supervisor shares instead of in each
    supervisor's private copy (~300 kB less private memory per supervisor, measured)."""
    dirfd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for _ in range(rounds):
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            ended_r, ended_w = os.pipe2(os.O_CLOEXEC)
            listener = shim._listen(dirfd)
            log = relay.LogWriter(dirfd, 1 << 16, 2)
            rel = relay.Relay([(out_r, wire.STDOUT), (err_r, wire.STDERR)], in_w, -1, True, log, listener)
            mine, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
            want, stdin = relay.wants("ioe", False)
            rel.add(relay.Client(mine, want, stdin), hello=True)
            os.write(out_w, b"warm\n")
            os.write(err_w, b"up\n")
            theirs.sendall(wire.in_frame(wire.ATTACH, b"ioe") + wire.in_frame(wire.STDIN, b"x") +
                           wire.in_frame(wire.RESIZE, b"24 80") + wire.in_frame(wire.CLOSE))
            os.close(out_w)
            os.close(err_w)
            os.write(ended_w, b"!")         # "the process exited"
            rel.run(ended_r)
            rel.finish(0)
            theirs.close()
            for fd in (in_r, ended_r, ended_w, log.fd):
                os.close(fd)
        for name in ("attach.sock", "container.log", "container.log.1"):
            try:
                os.unlink(name, dir_fd=dirfd)
            except FileNotFoundError:
                pass
    finally:
        os.close(dirfd)


def main() -> None:
    ctl_fd = int(sys.argv[1])
    linux.set_comm(files.TEMPLATE_COMM)
    if len(sys.argv) > 2:
        _warm_up(sys.argv[2])
    os.chdir("/")
    ctl = _socket.socket(fileno=ctl_fd)
    gc.freeze()
    ctl.send(b"R")
    while True:
        try:
            msg, anc, _flags, _addr = ctl.recvmsg(512, _ANC)
        except ConnectionError:
            break
        if not msg:
            break  # the daemon's end closed: it is gone, and so are we
        fds = _fds(anc)
        try:
            if fds and msg[:1] in (shim.OP_START, shim.OP_PROBE, shim.OP_EXEC):
                _fork_supervisor(msg, fds)
        finally:
            for fd in fds:
                os.close(fd)
    os._exit(0)
