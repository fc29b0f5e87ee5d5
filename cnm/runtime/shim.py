"""The per-container supervisor ("shim").

A supervisor is forked from the template process (cnm.runtime.template_main), which
has imported this module and everything it uses once; so a supervisor costs a fork,
not an interpreter, and shares almost all of its memory with the template and every
other supervisor. `serve()` is its entry point; it never returns.

Protocol with the Runtime (cnm.runtime.template): the template hands the supervisor
a stream socket and the container directory as an open fd. For a start, the config
arrives on the socket as one `marshal` blob up to EOF; the supervisor answers with one
line, "ok <shim-pid> <container-pid>" once the container process has exec'd, or
"err <ErrorClass> <message>" if it could not start — then closes the socket. A probe
(`Template.probe()`) is answered "ok <shim-pid>" at once.

Life cycle:
 1. detach from everything of the template: fds 0-2 become /dev/null and shim.log,
    every other fd but the socket and the directory is closed; the template already
    forked twice, so the supervisor is nobody's child but init's (or the nearest
    subreaper's) and outlives the daemon;
 2. claim the directory: shim.pid is created with link(), which fails if it exists,
    so there is never a second supervisor for a container, and a start the Runtime
    gave up on (and fenced) is never taken up late. All files are written relative to
    the directory fd, never through its path;
 3. unshare(CLONE_NEWPID) so its next child is PID 1 of a new PID namespace;
 4. fork the container process, which joins the cgroups, setns()s into the network
    namespace, unshares mount/UTS/IPC, builds its filesystem view (overlay + pivot_root,
    or the host's / with a private /proc), sets the hostname and execs. Errors before
    exec travel back over a close-on-exec pipe: EOF without data means exec happened.
    Its mount namespace is made a slave of the caller's (MS_REC|MS_SLAVE): its mounts
    never propagate out and vanish with it, so the host's mount table and files never
    change, while the host's unmounts still propagate in;
 5. forward SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to the container, wait for
    it, write exit.json atomically, exit.

The container gets PR_SET_PDEATHSIG=SIGKILL: if the shim is killed, the container dies
with it rather than running unsupervised (adopt() then records exit code 137); it
checks, after asking, that the shim did not die before it asked.
stdin of the container is /dev/null (an interactive `run -i` would need a stdin
passed in the config; not implemented).
"""
from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # no stubs; `signal` would import enum
import gc
import marshal
import os
import select
import sys
import time

from cnm.runtime import confine_apply, files, linux, users

FORWARD = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1, _signal.SIGUSR2)
OP_START = b"S"
OP_PROBE = b"P"
_child_pid = 0
_reply = -1     # the Runtime's socket until the start is answered


class _Fail(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _report(line: str) -> None:
    try:
        os.write(_reply, (line.replace("\n", " ") + "\n").encode())
    except OSError:
        pass  # the caller died; the container still runs and adopt() will find it


def _forward(signum: int, _frame: object) -> None:
    if _child_pid:
        try:
            os.kill(_child_pid, signum)
        except ProcessLookupError:
            pass


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _detach(sock: int, dirfd: int) -> None:
    """Keep nothing of the template: fds 0-2 = /dev/null, /dev/null, shim.log; every
    other fd but `sock` and `dirfd` (-1: none) closed, the template's control socket
    above all. Both are > 2: the template's own 0-2 are open."""
    keep = sorted({sock, dirfd} - {-1})
    lo = 3
    for fd in keep:
        os.closerange(lo, fd)
        os.set_inheritable(fd, False)
        lo = fd + 1
    os.closerange(lo, 1 << 20)
    null = os.open("/dev/null", os.O_RDWR)
    log = null if dirfd < 0 else os.open(files.SHIM_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW,
                                          0o600, dir_fd=dirfd)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(log, 2)
    os.close(null)
    if log != null:
        os.close(log)
    os.chdir("/")
    linux.set_comm(files.SHIM_COMM)


def serve(op: bytes, sock: int, dirfd: int) -> None:
    """The supervisor's life, in a process forked (twice) from the template. Never returns.

    Memory: every page this process writes stops being shared with the template and
    the other supervisors, and stays private for the container's whole life. So the
    supervisor itself does almost nothing but system calls until the container runs;
    the allocation-heavy part of a start (reading the config, claiming the directory,
    the state file) is done by the container process before it execs, which throws
    its copy of the memory away."""
    global _reply
    _reply = sock
    gc.disable()  # nothing here makes cycles; a collection would only dirty shared pages
    try:
        _detach(sock, dirfd)
        if op == OP_PROBE:
            _report(f"ok {os.getpid()}")
            os._exit(0)
        _supervise(sock, dirfd)
    except BaseException as exc:
        import traceback
        traceback.print_exc()
        _report(f"err InternalError supervisor failed: {exc}")
        os._exit(1)
    os._exit(0)


def _supervise(sock: int, dirfd: int) -> None:
    global _child_pid, _reply
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    alive = os.pidfd_open(os.getpid())  # lets the child see whether we died before its pdeathsig
    for sig in FORWARD:
        _signal.signal(sig, _forward)
    linux.unshare(linux.CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        _container(sock, dirfd, wfd, alive)  # never returns
    _child_pid = pid
    os.close(wfd)
    os.close(alive)
    failure = _read_all(rfd)
    os.close(rfd)
    if failure:
        os.waitpid(pid, 0)
        kind, _, message = failure.decode(errors="replace").partition("\t")
        _report(f"err {kind} {message}")
        return
    os.rename(files.STATE_NEW, files.STATE, src_dir_fd=dirfd, dst_dir_fd=dirfd)  # exec'd: running
    os.write(_reply, b"ok\n")
    os.close(_reply)  # the Runtime sees EOF
    _reply = -1
    _, status = os.waitpid(pid, 0)  # PEP 475: retried after each forwarded signal
    files.write_atomic(files.EXIT, files.dump_flat({
        "exit_code": files.exit_code(status), "finished_at": files.rfc3339(time.time())}), dir_fd=dirfd)


# --- in the container process, between fork and exec ------------------------------

def _stat(path: str) -> list[bytes]:
    """Fields 3.. of a /proc/PID/stat (after comm): [state, ppid, …]; index 19 = start time."""
    fd = os.open(path, os.O_RDONLY)
    try:
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    return raw[raw.rindex(b")") + 2:].split()


def _claim(dirfd: int, cdir: str) -> dict[str, int]:
    """Claim the directory for our parent, the supervisor (see the module docstring);
    return the pids and start times of both as the host sees them: /proc is still the
    daemon's here, so its pids are not our new PID namespace's."""
    me = _stat("/proc/self/stat")
    shim_pid = int(me[1])
    shim_start = int(_stat(f"/proc/{shim_pid}/stat")[19])
    if not files.claim(files.SHIM_PID, f"{shim_pid} {shim_start} {linux.boot_id()}\n", dir_fd=dirfd):
        raise _Fail("Conflict", f"container {cdir.rsplit('/', 1)[-1]} already has a supervisor")
    return {"shim_pid": shim_pid, "shim_start": shim_start, "pid": int(os.readlink("/proc/self")),
            "pid_start": int(me[19])}


def _container(sock: int, dirfd: int, wfd: int, alive: int) -> None:
    try:
        try:
            cfg = marshal.loads(_read_all(sock))
            os.close(sock)
            ids = _claim(dirfd, cfg["dir"])
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
            out = os.open(files.STDOUT, flags, 0o600, dir_fd=dirfd)
            err = os.open(files.STDERR, flags, 0o600, dir_fd=dirfd)
            null = os.open("/dev/null", os.O_RDWR)
            _prepare(cfg, alive)
            # The supervisor renames this into place once exec succeeded (EOF on wfd).
            files.write_atomic(files.STATE_NEW, files.dump_flat(
                {**ids, "started_at": files.rfc3339(time.time())}), dir_fd=dirfd)
            who = _user(cfg)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            confine_apply.lock(cfg["confine"])  # capabilities, no_new_privs, seccomp: last before exec
            if who is not None:  # as root until here, as runc: lock() needs CAP_SETPCAP
                os.setgroups(who[2])
                os.setgid(who[1])
                os.setuid(who[0])
            _exec(cfg["argv"], cfg["env"])
        except _Fail:
            raise
        except confine_apply.Refused as exc:
            raise _Fail(exc.kind, exc.message) from exc
        except OSError as exc:
            raise _Fail("InternalError", f"cannot start the container: {exc.strerror or exc}") from exc
    except _Fail as f:
        os.write(wfd, f"{f.kind}\t{f.message}".encode())
    except BaseException as exc:
        os.write(wfd, f"InternalError\tcannot start the container: {exc!r}".encode())
    os._exit(127)


def _user(cfg: dict) -> tuple[int, int, list[int], str] | None:
    """The image's or the request's User, from the container's own /etc/passwd (we are
    in its root now); HOME from there too when the environment has none (runc's rule)."""
    try:
        ids = users.resolve(cfg.get("user") or "")
    except users.UnknownUser as exc:
        raise _Fail("InvalidParameter", str(exc)) from exc
    cfg["env"].setdefault("HOME", ids[3])
    return ids if cfg.get("user") else None


def _prepare(cfg: dict, alive: int) -> None:
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
        raise _Fail("InvalidParameter", f"cannot change to the working directory {cfg['workdir']}: {exc.strerror}") from exc


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


def _exec(argv: list[str], env: dict[str, str]) -> None:
    try:
        _execvpe(argv, env)
    except FileNotFoundError as exc:
        if "/" in argv[0]:
            msg = f'exec: "{argv[0]}": stat {argv[0]}: no such file or directory'
        else:
            msg = f'exec: "{argv[0]}": executable file not found in $PATH'
        raise _Fail("InvalidParameter", msg) from exc
    except PermissionError as exc:
        raise _Fail("InvalidParameter", f'exec: "{argv[0]}": permission denied') from exc
    except OSError as exc:
        raise _Fail("InvalidParameter", f'exec: "{argv[0]}": {exc.strerror}') from exc

