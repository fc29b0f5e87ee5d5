"""The template process: a pre-imported interpreter that forks container supervisors.

Started by cnm.runtime.template.Template as

    python -I -S -c "<put the project on sys.path>; from cnm.runtime.template_main import main; main()" \
        <fd> <scratch dir>|- [<namespace dir>…]

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

Containers' mount namespaces: each container unshares one, a copy of the namespace it
is in. The daemon's holds one bind mount per sandbox (its network namespace, under
<run>/netns) and per overlay network: copying them made the N-th container's start
O(N) (fork + unshare(CLONE_NEWNS): 1.3 ms at 0 such mounts, 18 ms at 2,000, 69 ms at
4,000; ~360 B of kernel memory per mount per namespace) and pinned every other
sandbox's namespace for the container's life. So at start the template makes, once, a
mount namespace like the daemon's (a slave of it: later mounts and unmounts elsewhere
still reach it) minus everything under the <namespace dir>s (`_clean_namespace`), and
hands it to each start's supervisor as an fd; the container process joins it after it
joined its network namespace (by path, in the daemon's namespace) and unshares its own
copy of it. The template and the supervisors stay in the daemon's namespace: a daemon
restarted after a SIGKILL finds its sandboxes' namespace files through a supervisor's
view (cnm.osl.netns.recover_from), as before. The daemon makes each namespace dir a
mount point of its own (Runtime), so that what it mounts there later propagates into
nothing: the template's copy of that mount point is gone.

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
            out += [int.from_bytes(data[i : i + 4], sys.byteorder, signed=True) for i in range(0, usable, 4)]
    return out


def _fork_supervisor(msg: bytes, fds: list[int], mnt: int) -> None:
    try:
        pid = os.fork()
    except OSError as exc:
        os.write(
            fds[0],
            wire.out_frame(
                wire.ERROR, f"Unavailable cannot fork a supervisor: {exc.strerror}".encode(), time.time_ns()
            ),
        )
        return
    if pid == 0:
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            shim.serve(msg, fds[0], fds[1] if len(fds) > 1 else -1, mnt)  # never returns
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
            theirs.sendall(
                wire.in_frame(wire.ATTACH, b"ioe")
                + wire.in_frame(wire.STDIN, b"x")
                + wire.in_frame(wire.RESIZE, b"24 80")
                + wire.in_frame(wire.CLOSE)
            )
            os.close(out_w)
            os.close(err_w)
            os.write(ended_w, b"!")  # "the process exited"
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


def _clean_namespace(drop: list[str]) -> int:
    """An fd of a new mount namespace: a copy of ours, a slave of it, without any mount
    at or under the `drop` directories (see the module docstring). -1 if there is nothing
    to drop or we may not (not root: containers then copy the daemon's namespace). We
    stay in our own namespace."""
    if not drop:
        return -1
    home = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            linux.unshare(linux.CLONE_NEWNS)
        except OSError:
            return -1
        try:
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_SLAVE)
            prefixes = tuple(d.rstrip("/") + "/" for d in drop)
            # Shortest first: detaching a mount takes the ones under it along.
            for path in sorted({p for p in linux.mount_points() if p in drop or p.startswith(prefixes)}, key=len):
                for _ in range(64):  # stacked mounts: until none is left there
                    try:
                        linux.umount2(path, linux.MNT_DETACH)
                    except OSError:
                        break
            return os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return -1
        finally:
            linux.setns(home, linux.CLONE_NEWNS)  # back: supervisors live in the daemon's
    finally:
        os.close(home)


def main() -> None:
    ctl_fd = int(sys.argv[1])
    linux.set_comm(files.TEMPLATE_COMM)
    if len(sys.argv) > 2 and sys.argv[2] != "-":
        _warm_up(sys.argv[2])
    mnt = _clean_namespace(sys.argv[3:])
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
                _fork_supervisor(msg, fds, mnt)
        finally:
            for fd in fds:
                os.close(fd)
    os._exit(0)
