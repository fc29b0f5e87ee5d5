"""The per-container supervisor ("shim").

Started by Runtime.start() as a fresh interpreter,

    python -I -S -c "<put the project on sys.path>; from cnm.runtime.shim import main; main()" <dir>

rather than as a fork of the daemon: forking a multi-threaded asyncio daemon is unsafe
before exec, and a fork would carry the daemon's whole heap (tens of MB of RSS per
container). A fresh `-I -S` interpreter that imports only os, marshal, _signal, ctypes
and two small modules of this package costs about 10 ms and 9-10 MB RSS.

Protocol with the Runtime: the config arrives on stdin as one `marshal` blob (no json:
importing json costs ~9 ms); the shim answers on stdout with one line,
"ok <shim-pid> <container-pid>" once the container process has exec'd, or
"err <ErrorClass> <message>" if it could not start — then closes stdout.

Life cycle:
 1. fork and let the parent exit: the shim is reparented to init (or the nearest
    subreaper), so it never becomes a zombie of the daemon and outlives it;
    Popen(start_new_session=True) already made it a session leader;
 2. unshare(CLONE_NEWPID) so its next child is PID 1 of a new PID namespace;
 3. fork the container process, which joins the cgroups, setns()s into the network
    namespace, unshares mount/UTS/IPC, builds its filesystem view (overlay + pivot_root,
    or the host's / with a private /proc), sets the hostname and execs. Errors before
    exec travel back over a close-on-exec pipe: EOF without data means exec happened.
    Its mount namespace is made a slave of the caller's (MS_REC|MS_SLAVE): its mounts
    never propagate out and vanish with it, so the host's mount table and files never
    change, while the host's unmounts still propagate in;
 4. forward SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to the container, wait for
    it, write exit.json atomically, exit.

The container gets PR_SET_PDEATHSIG=SIGKILL: if the shim is killed, the container dies
with it rather than running unsupervised (adopt() then records exit code 137).
stdin of the container is /dev/null (an interactive `run -i` would need a stdin
passed in the config; not implemented).
"""
from __future__ import annotations

import _signal
import marshal
import os
import sys
import time

from cnm.runtime import files, linux

FORWARD = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1, _signal.SIGUSR2)
_child_pid = 0


class _Fail(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _report(line: str) -> None:
    try:
        os.write(1, (line.replace("\n", " ") + "\n").encode())
    except OSError:
        pass  # the caller died; the container still runs and adopt() will find it


def _forward(signum: int, _frame: object) -> None:
    if _child_pid:
        try:
            os.kill(_child_pid, signum)
        except ProcessLookupError:
            pass


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def main() -> None:
    cdir = sys.argv[1]
    cfg = marshal.loads(_read_all(0))
    if os.fork() != 0:
        os._exit(0)
    try:
        _supervise(cdir, cfg)
    except BaseException as exc:  # noqa: BLE001 - the Runtime must always get an answer
        import traceback
        traceback.print_exc()
        _report(f"err InternalError supervisor failed: {exc}")
        os._exit(1)
    os._exit(0)


def _supervise(cdir: str, cfg: dict) -> None:
    global _child_pid
    os.chdir("/")
    linux.set_comm("cnm-shim")
    me = os.getpid()
    me_start = linux.proc_stat(me)[1]
    files.write_atomic(os.path.join(cdir, files.SHIM_PID), f"{me} {me_start}\n")
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
    out = os.open(os.path.join(cdir, files.STDOUT), flags, 0o600)
    err = os.open(os.path.join(cdir, files.STDERR), flags, 0o600)
    null = os.open("/dev/null", os.O_RDWR)
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    for sig in FORWARD:
        _signal.signal(sig, _forward)
    linux.unshare(linux.CLONE_NEWPID)
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        _container(cfg, out, err, null, wfd)  # never returns
    _child_pid = pid
    os.close(wfd)
    os.close(out)
    os.close(err)
    failure = _read_all(rfd).decode(errors="replace")
    os.close(rfd)
    if failure:
        os.waitpid(pid, 0)
        kind, _, message = failure.partition("\t")
        _report(f"err {kind} {message}")
        return
    started = time.time()
    st = linux.proc_stat(pid)
    files.write_atomic(os.path.join(cdir, files.STATE), files.dump_flat({
        "shim_pid": me, "shim_start": me_start, "pid": pid, "pid_start": st[1] if st else None,
        "started_at": files.rfc3339(started)}))
    _report(f"ok {me} {pid}")
    os.dup2(null, 0)
    os.dup2(null, 1)  # closes the Runtime's pipe: it sees EOF
    _, status = os.waitpid(pid, 0)  # PEP 475: retried after each forwarded signal
    files.write_atomic(os.path.join(cdir, files.EXIT), files.dump_flat({
        "exit_code": files.exit_code(status), "finished_at": files.rfc3339(time.time())}))


# --- in the container process, between fork and exec ------------------------------

def _container(cfg: dict, out: int, err: int, null: int, wfd: int) -> None:
    try:
        try:
            _prepare(cfg)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            _exec(cfg["argv"], cfg["env"])
        except _Fail:
            raise
        except OSError as exc:
            raise _Fail("InternalError", f"cannot start the container: {exc.strerror or exc}") from exc
    except _Fail as f:
        os.write(wfd, f"{f.kind}\t{f.message}".encode())
    except BaseException as exc:  # noqa: BLE001 - anything must reach the Runtime
        os.write(wfd, f"InternalError\tcannot start the container: {exc!r}".encode())
    os._exit(127)


def _prepare(cfg: dict) -> None:
    for sig in FORWARD + (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(sig, _signal.SIG_DFL)  # Python ignores SIGPIPE; exec keeps "ignored"
    linux.set_pdeathsig(_signal.SIGKILL)
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
        linux.unshare(linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC)
    except PermissionError as exc:
        raise _Fail("Forbidden", "cannot create namespaces: the runtime needs root (CAP_SYS_ADMIN)") from exc
    # Slave, not private: nothing mounted here propagates back to the host, but the
    # host's unmounts still reach us. That matters for namespace files: `ip netns`
    # (and the sandbox store) keep them on a shared mount, and a private copy here
    # would pin every other sandbox's network namespace for this container's lifetime.
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_SLAVE)
    if cfg["rootfs"]:
        _rootfs(cfg)
    else:
        _host_root(cfg)
    if cfg["hostname"]:
        linux.sethostname(cfg["hostname"])
    try:
        os.chdir(cfg["workdir"])
    except OSError as exc:
        raise _Fail("InvalidParameter", f"cannot change to the working directory {cfg['workdir']}: {exc.strerror}") from exc


_NOSUID_NODEV_NOEXEC = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC


def _shm(target: str) -> None:
    # POSIX shared memory lives in /dev/shm files, which the IPC namespace does not cover.
    try:
        linux.mount("shm", target, "tmpfs", _NOSUID_NODEV_NOEXEC, "mode=1777,size=65536k")
    except OSError:
        pass


def _host_root(cfg: dict) -> None:
    linux.mount("proc", "/proc", "proc", _NOSUID_NODEV_NOEXEC)
    _shm("/dev/shm")
    for src, target in cfg["binds"]:
        if os.path.exists(target):  # never create files on the host's filesystem
            linux.mount(src, target, None, linux.MS_BIND)
        else:
            print(f"cnm-shim: {target} does not exist on the host: not replaced", file=sys.stderr)


def _rootfs(cfg: dict) -> None:
    cdir, lower = cfg["dir"], cfg["rootfs"]
    merged = os.path.join(cdir, files.MERGED)
    try:
        linux.mount("overlay", merged, "overlay", 0,
                    f"lowerdir={lower},upperdir={cdir}/{files.UPPER},workdir={cdir}/{files.WORK}")
    except OSError as exc:
        raise _Fail("InvalidParameter", f"cannot mount rootfs {lower} as an overlay: {exc.strerror}") from exc
    for sub in ("dev", "proc", "sys"):
        os.makedirs(merged + "/" + sub, exist_ok=True)
    linux.mount("/dev", merged + "/dev", None, linux.MS_BIND | linux.MS_REC)
    _shm(merged + "/dev/shm")
    linux.mount("proc", merged + "/proc", "proc", _NOSUID_NODEV_NOEXEC)
    try:
        linux.mount("sysfs", merged + "/sys", "sysfs", linux.MS_RDONLY | _NOSUID_NODEV_NOEXEC)
    except OSError:
        pass  # optional
    for src, target in cfg["binds"]:
        t = merged + target
        # A symlink here would resolve against the host's / before pivot_root: replace
        # it with a plain file (in the upper layer; the lower dir is never written).
        if os.path.islink(t):
            os.unlink(t)
        if not os.path.exists(t):
            os.makedirs(os.path.dirname(t), exist_ok=True)
            os.close(os.open(t, os.O_WRONLY | os.O_CREAT, 0o644))
        linux.mount(src, t, None, linux.MS_BIND)
    os.makedirs(merged + cfg["workdir"], exist_ok=True)  # Docker creates a missing workdir
    os.chdir(merged)
    # pivot_root(".", ".") stacks the old root under the new one; detaching "." then
    # drops it, without needing a put_old directory inside the rootfs.
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")


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


if __name__ == "__main__":
    main()
