"""The one subprocess seam: argv lists, never a shell; errors as cnm.errors.

Only for tools with no netlink equivalent (nft, nsenter'd helpers). Nothing on the
hot path of link/address/route work goes through here.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence

from cnm.errors import InternalError, InvalidParameter, Unavailable


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = 30.0,
    check: bool = True,
    netns: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv`, capture text stdout/stderr, return the CompletedProcess.

    netns: a namespace PATH to run the command in (via nsenter --net=PATH).
    check: a non-zero exit raises InternalError with the command and its stderr.
    A missing executable or a timeout raises Unavailable."""
    args = [str(a) for a in argv]
    if not args:
        raise InvalidParameter("empty command")
    if netns is not None:
        args = ["nsenter", f"--net={netns}", "--", *args]
    try:
        cp = subprocess.run(
            args,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
        )
    except FileNotFoundError as exc:
        raise Unavailable(f"{args[0]} is not installed (needed to run {argv[0]})") from exc
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"{argv[0]} did not finish in {timeout:g}s") from exc
    if check and cp.returncode != 0:
        detail = (cp.stderr or cp.stdout).strip().splitlines()
        tail = "; ".join(detail[-3:]) if detail else "no output"
        raise InternalError(f"{shlex.join(args)} exited with {cp.returncode}: {tail}")
    return cp


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """Send `sig` to a child we started, wait up to `timeout`, then SIGKILL; return its
    exit code (None if there is no process). Idempotent."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode
