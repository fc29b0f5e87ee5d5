"""`net exec` and `net attach` through the daemon's API (Docker's exec and attach
routes), so an exec'd process is made by the daemon's runtime and confined as the
container is (capabilities, seccomp, no_new_privs, cgroups) — no nsenter, no root on
the client's side.

Exit codes, as Docker's CLI: the exec'd command's own; 126 when it could not be run,
127 when it was not found; for attach, the container's exit code (0 after a detach).
"""

from __future__ import annotations

import time

from cnm.cli.interactive import pump, terminal_size
from cnm.cli.output import error_line
from cnm.errors import CNMError, Conflict

TYPE_CHECKING = False  # typing stays off the CLI's execution path; type checkers see True
if TYPE_CHECKING:
    from typing import Any

NOT_RUNNABLE, NOT_FOUND = 126, 127
DETACHED = 0
DETACH_GRACE = 2.0  # seconds an exit may take to show after the stream ended (else: a detach)


def exec_body(
    argv: list[str],
    *,
    interactive: bool,
    tty: bool,
    env: list[str],
    user: str | None,
    workdir: str | None,
    privileged: bool,
    detach: bool,
) -> dict:
    """`POST /containers/{id}/exec`'s body for `net exec`'s flags."""
    body: dict[str, Any] = {
        "Cmd": list(argv),
        "AttachStdin": interactive and not detach,
        "AttachStdout": not detach,
        "AttachStderr": not detach,
        "Tty": tty,
        "Env": list(env),
        "Privileged": privileged,
    }
    if user:
        body["User"] = user
    if workdir:
        body["WorkingDir"] = workdir
    if tty:
        size = terminal_size()
        if size is not None:
            body["ConsoleSize"] = list(size)
    return body


def start_failure_code(message: str) -> int:
    """Docker's exit code for an exec that could not start."""
    lowered = message.lower()
    return NOT_FOUND if "not found" in lowered or "no such file" in lowered else NOT_RUNNABLE


def run_exec(client: Any, ref: str, body: dict, detach: bool) -> int:
    """Create and start the exec; stream its I/O; its exit code."""
    tty, interactive = bool(body.get("Tty")), bool(body.get("AttachStdin"))
    try:
        exec_id = client.exec_create(ref, body)
    except CNMError as exc:  # no such container, not running, bad flags
        error_line(exc)
        return 1
    try:
        stream = client.exec_start(exec_id, tty, detach=detach)
    except CNMError as exc:  # the command could not be started
        error_line(exc)
        return start_failure_code(exc.message)
    if stream is None:
        return 0
    sock, early = stream
    try:
        pump(sock, early, tty=tty, stdin=interactive, resize=lambda rows, cols: client.exec_resize(exec_id, rows, cols))
    finally:
        sock.close()
    try:
        code = client.exec_inspect(exec_id).get("ExitCode")
    except CNMError as exc:
        error_line(exc)
        return NOT_RUNNABLE
    return int(code) if code is not None else NOT_RUNNABLE


def run_attach(client: Any, ref: str, no_stdin: bool, detach_keys: str) -> int:
    """Attach to a running container: its output, our stdin to its stdin (when it was
    made with -i), a TTY's size. The container's exit code once it ends; 0 after a
    detach (the container runs on)."""
    info = client.container_inspect(ref)
    config = info.get("Config") or {}
    if not (info.get("State") or {}).get("Running"):
        raise_conflict(ref)
    tty, stdin = bool(config.get("Tty")), bool(config.get("OpenStdin")) and not no_stdin
    sock, early = client.container_attach(ref, stdin, detach_keys)
    try:
        pump(sock, early, tty=tty, stdin=stdin, resize=lambda rows, cols: client.container_resize(ref, rows, cols))
    finally:
        sock.close()
    if not stdin:  # no detach keys without input: the stream ended with the container
        return int(client.container_wait(ref))
    deadline = time.monotonic() + DETACH_GRACE
    while (client.container_inspect(ref).get("State") or {}).get("Running"):
        if time.monotonic() > deadline:
            return DETACHED  # the detach keys ended the stream; the container runs on
        time.sleep(0.05)
    return int(client.container_wait(ref))


def raise_conflict(ref: str) -> None:
    raise Conflict(f"You cannot attach to a stopped container {ref}, start it first")


def run_attached_stream(
    client: Any, cid: str, stream: tuple[Any, bytes], *, tty: bool, stdin: bool, remove: bool
) -> int:
    """`net run -i/-t`: the attach taken before the start, carried until the container
    ends; its exit code (removed after with --rm)."""
    sock, early = stream
    code = 0
    try:
        try:
            pump(sock, early, tty=tty, stdin=stdin, resize=lambda rows, cols: client.container_resize(cid, rows, cols))
        finally:
            sock.close()
        code = int(client.container_wait(cid))
    except KeyboardInterrupt:
        client.container_stop(cid, 10)
        code = 130
    except CNMError as exc:
        error_line(exc)
        code = 125
    if remove:
        try:
            client.container_remove(cid, force=True)
        except CNMError as exc:
            error_line(exc)
    return code
