"""The exec supervisor: a process run in a running container (Docker's `exec`), forked
from the template like a container's supervisor.

Request (cnm.runtime.exec.Runtime.exec sends it): the operation byte OP_EXEC, the
request socket and the container's directory fd; the configuration as one CONFIG frame:

    {"target": [pid, start time] of the container's PID 1, "cgroups": [dirs],
     "argv", "env" (whole), "user", "workdir", "tty", "stdin" (bool: input is written),
     "attach": letters of the streams the requester takes ("o", "e"), "console_size",
     "confine": the container's lock plan or None, "privileged"}

The supervisor checks the target is still that process (pid + start time, then held by
a pidfd: no recycled pid is ever entered), sets the PID namespace its children get to
the container's, and forks the process, which joins the container's cgroups, then its
mount, UTS, IPC, network and cgroup namespaces (one setns on the pidfd: all or none), its
working directory, a TTY from the container's own /dev/ptmx if asked, the user, the
container's confinement (capabilities, no_new_privs, seccomp), and execs.

The request socket then carries the process's I/O (cnm.runtime.relay, the requester
as its one client: OK "<supervisor pid> <process pid>", output frames, EXIT "<code>"
at the end; input, CLOSE and RESIZE the other way). Output nobody takes is dropped
(Docker does the same for a detached exec). The process is a member of the container's
PID namespace: it dies with the container.
"""

from __future__ import annotations

import _socket
import os

from cnm.runtime import child_stdio, confine_apply, files, linux, prexec, relay, reply, wire

_NAMESPACES = linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWNET | linux.CLONE_NEWCGROUP


def serve(sock: int, dirfd: int) -> None:
    """The exec supervisor's life (after shim._detach). Returns when the process ended."""
    try:
        cfg = prexec.read_config(sock)
    except prexec.Fail as exc:
        reply.error(exc.kind, exc.message)
        return
    pid, start = cfg["target"]
    try:
        target = os.pidfd_open(pid)
    except ProcessLookupError:
        target = -1
    if target < 0 or not linux.is_alive(pid, start):
        reply.error("Conflict", "the container is not running")
        return
    linux.setns(target, linux.CLONE_NEWPID)  # for our children: the container's PID namespace
    tty = bool(cfg["tty"])
    io = child_stdio.ChildStdio(tty, bool(cfg["stdin"]), null_stdin=True)
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        os.close(rfd)
        _process(cfg, target, wfd, io.child, io.child_tty())
    for fd in [wfd, *io.child]:
        os.close(fd)
    if not io.await_exec(rfd, child):
        return
    rel = relay.Relay(io.mine, io.stdin_w, io.master, True, None, None)
    reply.frame(wire.OK, b"%d %d" % (os.getpid(), child))
    want, stdin = relay.wants(cfg["attach"] + ("i" if cfg["stdin"] else ""), tty)
    rel.add(relay.Client(_socket.socket(fileno=sock), want, stdin), hello=False)
    rel.run(os.pidfd_open(child))
    _, status = os.waitpid(child, 0)
    rel.finish(files.exit_code(status))


def _process(cfg: dict, target: int, wfd: int, stdio: list[int], ptys: _socket.socket | None) -> None:
    """The exec'd process, between fork and exec. Never returns."""
    try:
        for d in cfg["cgroups"]:  # the host's paths: before the container's mount namespace
            fd = os.open(os.path.join(d, "cgroup.procs"), os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        linux.setns(target, _NAMESPACES)
        os.close(target)
        os.setsid()
        env = dict(cfg["env"])
        try:
            os.chdir(cfg["workdir"] or "/")
        except OSError as exc:
            raise prexec.Fail(
                "InvalidParameter", f"cannot change to the working directory {cfg['workdir']}: {exc.strerror}"
            ) from exc
        who = prexec.resolve_user(cfg.get("user") or "", env)
        if ptys is not None:
            prexec.take_tty(prexec.open_tty(ptys, cfg.get("console_size")))
        else:
            for fd_target, fd in enumerate(stdio):
                os.dup2(fd, fd_target)
        _lock(cfg)
        prexec.become(who)
        prexec.execute(cfg["argv"], env)
    except BaseException as exc:  # anything must reach the supervisor
        prexec.report_failure(wfd, exc)
    os._exit(127)


def _lock(cfg: dict) -> None:
    """The container's confinement, as root, last before the user switch and exec; with
    "privileged", every capability we hold (Docker's exec --privileged), the rest as is."""
    plan = cfg.get("confine")
    if plan is None:
        return
    if cfg.get("privileged"):
        fd = os.open("/proc/self/status", os.O_RDONLY)
        try:
            status = os.read(fd, 8192).decode()
        finally:
            os.close(fd)
        prm = next(line for line in status.splitlines() if line.startswith("CapPrm:"))
        plan = dict(plan, caps=int(prm.split(":")[1], 16))
    try:
        confine_apply.lock(plan)
    except confine_apply.Refused as exc:
        raise prexec.Fail(exc.kind, exc.message) from exc
