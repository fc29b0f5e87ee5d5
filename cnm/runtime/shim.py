"""The per-container supervisor ("shim").

A supervisor is forked from the template process (cnm.runtime.template_main), which
has imported this module and everything it uses once; so a supervisor costs a fork,
not an interpreter, and shares almost all of its memory with the template and every
other supervisor. `serve()` is its entry point; it never returns.

Protocol with the Runtime (cnm.runtime.wire): the template hands the supervisor a
stream socket, the container directory as an open fd, and the request's options
(`options()`: TTY, stdin, log limits, which streams the requester attaches to). The
request's configuration follows on the socket as one CONFIG frame; the supervisor
answers OK "<shim-pid> <container-pid>" once the container process has exec'd, or
ERROR "<ErrorClass> <message>". If the requester attached, the socket then carries the
container's output and input (cnm.runtime.relay) until the container exits (EXIT
frame); else it is closed. A probe (`Template.probe()`) is answered OK at once; an
exec request is served by cnm.runtime.exec_shim.

Life cycle:
 1. detach from everything of the template: fds 0-2 become /dev/null and shim.log,
    every other fd but the socket and the directory is closed; the template already
    forked twice, so the supervisor is nobody's child but init's (or the nearest
    subreaper's) and outlives the daemon;
 2. unshare(CLONE_NEWPID) so its next child is PID 1 of a new PID namespace;
 3. fork the container process, which reads the configuration, claims the directory
    (shim.pid, created with link(): never a second supervisor, and a start the Runtime
    gave up on and fenced is never taken up late), joins the cgroups, setns()s into
    the network namespace, joins the template's mount namespace for containers (the
    daemon's without the sandboxes' mounts: see cnm.runtime.template_main) and
    unshares mount/UTS/IPC from there, builds its filesystem view, takes
    its stdio (pipes to the supervisor, or a TTY it allocates from the container's
    own /dev/ptmx and sends the master of), its user, and execs. Errors before exec
    travel back over a close-on-exec pipe: EOF without data means exec happened.
    Its mount namespace is made a slave of the caller's (MS_REC|MS_SLAVE): its mounts
    never propagate out and vanish with it, so the host's mount table and files never
    change, while the host's unmounts still propagate in;
 4. rename state.json.new (written by the container process just before exec) into
    place, listen on attach.sock (0600) for clients, answer OK, and relay: output to
    container.log and attached clients, clients' input to the container's stdin, TTY
    resizes; SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 are forwarded to the
    container;
 5. when it exits: drain its output, write exit.json atomically, send EXIT to the
    clients, exit.

Memory: every page a supervisor writes stops being shared with the template and the
other supervisors, and stays private for the container's whole life. So the allocation-
heavy part of a start (unmarshalling the configuration, the claim, the state file) is
done by the container process before it execs, which throws its copy away.

The container gets PR_SET_PDEATHSIG=SIGKILL: if the shim is killed, the container dies
with it rather than running unsupervised (adopt() then records exit code 137); it
checks, after asking, that the shim did not die before it asked.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no stubs; `signal` would import enum
import _socket
import gc
import os
import select
import time

from cnm.runtime import child_stdio, confine_apply, exec_shim, files, linux, prexec, relay, reply, wire

FORWARD = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1, _signal.SIGUSR2)
OP_START = b"S"
OP_PROBE = b"P"
OP_EXEC = b"E"
ATTACH_SOCK = "attach.sock"
_child_pid = 0
_Fail = prexec.Fail


def options(tty: bool, open_stdin: bool, stdin_once: bool, log_max_size: int, log_max_files: int, attach: str) -> bytes:
    """A start request's options, sent with the operation byte (the supervisor needs
    them before the configuration, which only the container process reads)."""
    return b"%d %d %d %d %d %s" % (tty, open_stdin, stdin_once, log_max_size, log_max_files, (attach or "-").encode())


def _forward(signum: int, _frame: object) -> None:
    if _child_pid:
        try:
            os.kill(_child_pid, signum)
        except ProcessLookupError:
            pass


def _detach(sock: int, dirfd: int, mnt: int = -1) -> None:
    """Keep nothing of the template: fds 0-2 = /dev/null, /dev/null, shim.log; every
    other fd but `sock`, `dirfd` and `mnt` (-1: none) closed, the template's control
    socket above all. All are > 2: the template's own 0-2 are open."""
    keep = sorted({sock, dirfd, mnt} - {-1})
    lo = 3
    for fd in keep:
        os.closerange(lo, fd)
        os.set_inheritable(fd, False)
        lo = fd + 1
    os.closerange(lo, 1 << 20)
    null = os.open("/dev/null", os.O_RDWR)
    log = (
        null
        if dirfd < 0
        else os.open(files.SHIM_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600, dir_fd=dirfd)
    )
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(log, 2)
    os.close(null)
    if log != null:
        os.close(log)
    os.chdir("/")
    linux.set_comm(files.SHIM_COMM)


def serve(msg: bytes, sock: int, dirfd: int, mnt: int = -1) -> None:
    """The supervisor's life, in a process forked (twice) from the template: `msg` is
    the operation byte and its options; `mnt` the template's mount namespace for
    containers (see cnm.runtime.template_main), -1 for none. Never returns."""
    reply.fd = sock
    gc.disable()  # nothing here makes cycles; a collection would only dirty shared pages
    op = msg[:1]
    try:
        _detach(sock, dirfd, mnt if op == OP_START else -1)
        if op == OP_PROBE:
            reply.frame(wire.OK, b"%d" % os.getpid())
        elif op == OP_EXEC:
            exec_shim.serve(sock, dirfd)
        else:
            _supervise(sock, dirfd, mnt, msg[1:].split())
    except BaseException as exc:  # the Runtime must always get an answer
        import traceback  # (only when a supervisor fails: not loaded into every one)

        traceback.print_exc()
        reply.error("InternalError", f"supervisor failed: {exc}")
        os._exit(1)
    os._exit(0)


def _supervise(sock: int, dirfd: int, mnt: int, opts: list[bytes]) -> None:
    global _child_pid
    tty, open_stdin, stdin_once, log_max, log_files = (int(x) for x in opts[:5])
    attach = opts[5].decode() if opts[5] != b"-" else ""
    io = child_stdio.ChildStdio(bool(tty), bool(open_stdin))
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    alive = os.pidfd_open(os.getpid())  # lets the child see whether we died before its pdeathsig
    for sig in FORWARD:
        _signal.signal(sig, _forward)
    linux.unshare(linux.CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        _container(sock, dirfd, wfd, alive, mnt, io.child, io.child_tty())
    _child_pid = pid
    for fd in [wfd, alive, *io.child, *([mnt] if mnt >= 0 else [])]:
        os.close(fd)
    if not io.await_exec(rfd, pid):
        return
    os.rename(files.STATE_NEW, files.STATE, src_dir_fd=dirfd, dst_dir_fd=dirfd)  # exec'd: running
    listener = _listen(dirfd)
    log = relay.LogWriter(dirfd, log_max, log_files)
    rel = relay.Relay(io.mine, io.stdin_w, io.master, bool(stdin_once), log, listener)
    reply.frame(wire.OK, b"%d %d" % (os.getpid(), pid))
    if attach:
        want, stdin = relay.wants(attach, bool(tty))
        rel.add(relay.Client(_socket.socket(fileno=reply.fd), want, stdin), hello=False)
    else:
        os.close(reply.fd)  # the Runtime sees EOF
    reply.fd = -1
    exited = os.pidfd_open(pid)
    rel.run(exited)
    _, status = os.waitpid(pid, 0)  # PEP 475: retried after each forwarded signal
    code = files.exit_code(status)
    try:
        os.unlink(ATTACH_SOCK, dir_fd=dirfd)
    except FileNotFoundError:
        pass
    files.write_atomic(
        files.EXIT, files.dump_flat({"exit_code": code, "finished_at": files.rfc3339(time.time())}), dir_fd=dirfd
    )
    rel.finish(code)


def _listen(dirfd: int) -> _socket.socket:
    """attach.sock in the container directory, 0600, reached through our directory fd
    (a socket path is limited to 108 bytes; a state directory's path is not). A stale
    one from an earlier run is ours to replace: we hold the directory's claim."""
    try:
        os.unlink(ATTACH_SOCK, dir_fd=dirfd)
    except FileNotFoundError:
        pass
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.bind(f"/proc/self/fd/{dirfd}/{ATTACH_SOCK}")
    os.chmod(ATTACH_SOCK, 0o600, dir_fd=dirfd, follow_symlinks=False)
    sock.listen(16)
    return sock


# --- in the container process, between fork and exec ------------------------------


def _stat(path: str) -> list[bytes]:
    """Fields 3.. of a /proc/PID/stat (after comm): [state, ppid, …]; index 19 = start time."""
    fd = os.open(path, os.O_RDONLY)
    try:
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    return raw[raw.rindex(b")") + 2 :].split()


def _claim(dirfd: int, cdir: str) -> dict[str, int]:
    """Claim the directory for our parent, the supervisor (see the module docstring);
    return the pids and start times of both as the host sees them: /proc is still the
    daemon's here, so its pids are not our new PID namespace's."""
    me = _stat("/proc/self/stat")
    shim_pid = int(me[1])
    shim_start = int(_stat(f"/proc/{shim_pid}/stat")[19])
    if not files.claim(files.SHIM_PID, f"{shim_pid} {shim_start} {linux.boot_id()}\n", dir_fd=dirfd):
        raise _Fail("Conflict", f"container {cdir.rsplit('/', 1)[-1]} already has a supervisor")
    return {
        "shim_pid": shim_pid,
        "shim_start": shim_start,
        "pid": int(os.readlink("/proc/self")),
        "pid_start": int(me[19]),
    }


def _container(
    sock: int, dirfd: int, wfd: int, alive: int, mnt: int, stdio: list[int], ptys: _socket.socket | None
) -> None:
    """The container process. `stdio`: [stdin pipe,] stdout pipe, stderr pipe (no stdin
    pipe: /dev/null); `ptys`: where to send a TTY's master instead. Never returns."""
    try:
        cfg = prexec.read_config(sock)
        os.close(sock)
        ids = _claim(dirfd, cfg["dir"])
        _prepare(cfg, alive, mnt)
        env = dict(cfg["env"])
        who = prexec.resolve_user(cfg.get("user") or "", env)  # in the container's root: its passwd
        if ptys is not None:
            prexec.take_tty(prexec.open_tty(ptys, cfg.get("console_size")))
        else:
            if len(stdio) == 2:
                stdio.insert(0, os.open("/dev/null", os.O_RDONLY))
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
        # The supervisor renames this into place once exec succeeded (EOF on wfd).
        files.write_atomic(
            files.STATE_NEW, files.dump_flat({**ids, "started_at": files.rfc3339(time.time())}), dir_fd=dirfd
        )
        confine_apply.lock(cfg["confine"])  # capabilities, no_new_privs, seccomp: as root, last
        prexec.become(who)  # as runc: lock() needs CAP_SETPCAP
        prexec.execute(cfg["argv"], env)
    except confine_apply.Refused as exc:
        prexec.report_failure(wfd, _Fail(exc.kind, exc.message))
    except BaseException as exc:  # anything must reach the Runtime
        prexec.report_failure(wfd, exc)
    os._exit(127)


def _prepare(cfg: dict, alive: int, mnt: int) -> None:
    for sig in FORWARD + (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(sig, _signal.SIG_DFL)  # Python ignores SIGPIPE; exec keeps "ignored"
    linux.set_pdeathsig(_signal.SIGKILL)
    if select.select([alive], [], [], 0)[0]:  # the shim died before we asked: nobody supervises us
        os._exit(137)
    os.close(alive)
    os.umask(0o022)  # a container's default (Docker's); the daemon's own is 077
    os.setsid()
    for d in cfg["cgroups"]:
        try:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write("0")
        except OSError as exc:
            raise _Fail("InternalError", f"cannot join cgroup {d}: {exc.strerror}") from exc
    netns = cfg["netns"]
    if netns:
        try:
            fd = os.open(netns, os.O_RDONLY)
        except FileNotFoundError as exc:
            raise _Fail("NotFound", f"network namespace {netns} not found") from exc
        try:
            linux.setns(fd, linux.CLONE_NEWNET)
        except OSError as exc:
            raise _Fail("InvalidParameter", f"cannot join network namespace {netns}: {exc.strerror}") from exc
        finally:
            os.close(fd)
    if mnt >= 0:
        # Copy the template's mount namespace rather than the daemon's: the same but
        # for the namespace files of every sandbox (see cnm.runtime.template_main).
        linux.setns(mnt, linux.CLONE_NEWNS)
        os.close(mnt)
    try:
        # A cgroup namespace too, after joining its cgroups: /proc/self/cgroup shows "/"
        # and the cgroup filesystems it mounts show its own cgroup as their root.
        linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWCGROUP)
    except PermissionError as exc:
        raise _Fail("Forbidden", "cannot create namespaces: the runtime needs root (CAP_SYS_ADMIN)") from exc
    # Slave, not private: nothing mounted here propagates back to the host, but the
    # host's unmounts still reach us. That matters for namespace files: `ip netns`
    # (and the sandbox store) keep them on a shared mount, and a private copy here
    # would pin every other sandbox's network namespace for this container's lifetime.
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_SLAVE)
    confine_apply.enter_root(cfg["confine"])  # the filesystem view; see /work/notes/confine.md
    if cfg["hostname"]:
        linux.sethostname(cfg["hostname"])
    try:
        os.chdir(cfg["workdir"])
    except OSError as exc:
        raise _Fail(
            "InvalidParameter", f"cannot change to the working directory {cfg['workdir']}: {exc.strerror}"
        ) from exc
