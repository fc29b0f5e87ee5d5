"""Run a command inside a running container (Docker's exec): join the namespaces of
its init, its root and working directory, then fork a child that is a session leader
*inside* the container's PID namespace (util-linux nsenter leaves the child in
nsenter's own session, outside it: an interactive shell then cannot take its
terminal's process group — "Cannot set tty process group" — and job control breaks).

    python -I -S nsexec.py PID [--confine FILE [--privileged]] [--tty] [--user U[:G]] [--workdir DIR] -- CMD [ARG…]

--confine: the container's lock plan (cnm.runtime.confine.lock_plan, marshal): the command
gets the container's capabilities, no_new_privs and seccomp filter, as Docker's exec does
(--privileged: every capability this helper holds, the rest unchanged).

Started by the daemon with the process's stdio already set up (pipes, or a pty's
slave as 0/1/2 with --tty) and the environment it should have. It exits with the
command's status (128+N when a signal N ended it), and passes SIGTERM, SIGINT, SIGHUP
and SIGQUIT on to the command. Standard library only (it starts in ~20 ms).
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import sys

NAMESPACES = ("cgroup", "ipc", "uts", "net", "pid", "mnt")     # nsenter's order: mnt last
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
TIOCSCTTY = 0x540E


def _die(message: str, code: int = 126) -> None:
    os.write(2, f"exec: {message}\n".encode())
    os._exit(code)


def _ids(resolve, user: str) -> tuple[int, int, list[int]]:
    """uid, gid and supplementary groups of `user` (name or uid, [:group]), from the
    container's own /etc/passwd and /etc/group (we are chrooted into it), with runc's
    rules (cnm.runtime.users.resolve, imported before the chroot)."""
    try:
        uid, gid, extra, _home = resolve(user)
    except Exception as exc:   # users.UnknownUser: a name not in the container's files
        _die(str(exc))
    return uid, gid, extra


def _users():
    """cnm.runtime.users, imported while the host's root is still ours."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    # (not at the top: nsexec starts on the standard library alone; sys.path is set above)
    from cnm.runtime import users
    return users.resolve


def _exec(cmd: list[str]) -> None:
    """execvp without os.execvp, whose PATH lookup imports modules we cannot reach
    once chrooted; 127 when nothing is found, 126 when found but not runnable."""
    if "/" in cmd[0]:
        candidates = [cmd[0]]
    else:
        path = os.environ.get("PATH") or "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        candidates = [os.path.join(d or ".", cmd[0]) for d in path.split(":")]
    error = None
    for candidate in candidates:
        try:
            os.execv(candidate, cmd)
        except OSError as exc:
            if error is None or exc.errno != 2:
                error = exc
    code = 127 if error is None or error.errno == 2 else 126
    _die(f"{cmd[0]}: {'executable file not found in $PATH' if code == 127 and '/' not in cmd[0] else (error.strerror if error else 'not found')}", code)


def _lock_plan(path: str, privileged: bool):
    """(confine_apply.lock, plan) from the container's lock-plan file."""
    import marshal  # (start-up: only with --confine)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from cnm.runtime import confine_apply  # (not at the top: as _users; only with --confine)
    try:
        with open(path, "rb") as f:
            plan = marshal.load(f)
    except (OSError, EOFError, ValueError) as exc:
        _die(f"cannot read the container's confinement {path}: {exc}")
    if privileged:
        with open("/proc/self/status") as f:
            prm = next(line for line in f if line.startswith("CapPrm:"))
        plan = dict(plan, caps=int(prm.split(":")[1], 16))
    return confine_apply.lock, plan


CGROUPS_FILE = "cgroups.json"   # cnm.runtime.files.CGROUPS, beside the lock plan in the container's directory


def _join_cgroups(path: str) -> None:
    """Into the container's cgroups (its limits cover what runs in it, as Docker's exec):
    before any setns, while their paths are the host's and no cgroup namespace stands
    in the way. This waiting process stays in them too (one more task for the pids limit)."""
    import json  # (start-up: only for a confined exec)
    try:
        with open(path) as f:
            dirs = json.load(f)
    except FileNotFoundError:
        return   # no limits: the container has no cgroup of its own
    except (OSError, ValueError) as exc:
        _die(f"cannot read the container's cgroups {path}: {exc}")
    for d in dirs:
        try:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write("0")
        except OSError as exc:
            _die(f"cannot join the container's cgroup {d}: {exc.strerror}")


def main(argv: list[str]) -> None:
    if "--" not in argv or len(argv) < 3:
        _die("usage: nsexec.py PID [--tty] [--user U] [--workdir DIR] -- CMD [ARG...]", 125)
    split = argv.index("--")
    opts, cmd = argv[1:split], argv[split + 1:]
    pid = int(opts.pop(0))
    tty = user = workdir = confine = None
    privileged = False
    while opts:
        opt = opts.pop(0)
        if opt == "--tty":
            tty = True
        elif opt == "--confine":
            confine = opts.pop(0)
        elif opt == "--privileged":
            privileged = True
        elif opt == "--user":
            user = opts.pop(0)
        elif opt == "--workdir":
            workdir = opts.pop(0)
        else:
            _die(f"unknown option {opt}", 125)
    lock = _lock_plan(confine, privileged) if confine else None   # read before leaving the host's root
    if confine:
        _join_cgroups(os.path.join(os.path.dirname(confine), CGROUPS_FILE))
    resolve = _users() if user else None
    libc = ctypes.CDLL(None, use_errno=True)
    fds = {ns: os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC) for ns in NAMESPACES}
    root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY)
    cwd = os.open(f"/proc/{pid}/cwd", os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECTORY)
    for ns in NAMESPACES:
        if libc.setns(fds[ns], 0) != 0:
            _die(f"setns {ns}: {os.strerror(ctypes.get_errno())}")
        os.close(fds[ns])
    os.fchdir(root)
    os.chroot(".")
    os.fchdir(cwd)
    if workdir:
        try:
            os.chdir(workdir)
        except OSError as exc:
            _die(f"working directory {workdir}: {exc.strerror}")
    ids = _ids(resolve, user) if user and resolve else None
    child = os.fork()             # the first process here in the container's PID namespace
    if child == 0:
        os.setsid()
        if tty:
            fcntl.ioctl(0, TIOCSCTTY, 0)
        if lock is not None:
            apply_lock, plan = lock
            apply_lock(plan)   # as root, before dropping to the user: as runc does
        if ids is not None:
            uid, gid, extra = ids
            os.setgroups(extra)
            os.setgid(gid)
            os.setuid(uid)
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        _exec(cmd)
    for sig in FORWARDED:
        signal.signal(sig, lambda s, _f: os.kill(child, s))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


if __name__ == "__main__":
    main(sys.argv)
