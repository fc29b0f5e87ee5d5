"""The one seam through which the lab runs commands (argv lists, never shell strings).

`SubprocessRunner` runs them for real; `RecordingRunner` records them and answers from
a script, for unit tests and dry runs. A command in a namespace is run as
`ip netns exec NS argv…` (`ip` execs it, so a spawned pid is the command's own).
"""

from __future__ import annotations

import os
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cnm.errors import InternalError


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def last_line(self) -> str:
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return text[-1].strip() if text else "no output"


def short(argv: tuple[str, ...] | list[str]) -> str:
    """A command as a person would type it: `net …` without the venv path and the
    socket (the step already says which host)."""
    args = list(argv)
    if args[:3] == ["ip", "netns", "exec"]:
        args = args[4:]
    if args and args[0].endswith("/net"):
        args[0] = "net"
        if args[1:2] == ["-H"]:
            del args[1:3]
    return " ".join(args)


class CommandFailed(InternalError):
    """A lab command exited non-zero (its stderr's last line in the message)."""

    def __init__(self, result: Result, netns: str | None) -> None:
        where = f" in {netns}" if netns else ""
        super().__init__(f"`{short(result.argv)}`{where} failed ({result.returncode}): {result.last_line()}")
        self.result = result


class Runner(ABC):
    """The seam: `run` is the same for every runner (the check included); a runner
    says how a command runs (`_result`) and how a long-running one starts (`spawn`)."""

    def run(
        self,
        argv: list[str],
        netns: str | None = None,
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
    ) -> Result:
        """Run argv (in `netns` when given) to completion; CommandFailed when check
        and it exits non-zero."""
        res = self._result(argv, netns, input, timeout, env)
        if check and not res.ok:
            raise CommandFailed(res, netns)
        return res

    @abstractmethod
    def _result(
        self, argv: list[str], netns: str | None, input: str | None, timeout: float, env: Mapping[str, str] | None
    ) -> Result:
        """Run argv to completion; its result, whatever its exit code."""

    @abstractmethod
    def spawn(self, argv: list[str], netns: str | None, log: Path, env: Mapping[str, str] | None = None) -> int:
        """Start a long-running process in its own session, output appended to `log`;
        return its pid without waiting."""


def in_netns(argv: list[str], netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


class SubprocessRunner(Runner):
    """Runs commands for real."""

    def _result(
        self, argv: list[str], netns: str | None, input: str | None, timeout: float, env: Mapping[str, str] | None
    ) -> Result:
        full = in_netns(argv, netns)
        try:
            p = subprocess.run(
                full,
                capture_output=True,
                text=True,
                input=input,
                timeout=timeout,
                env={**os.environ, **env} if env else None,
            )
            return Result(tuple(full), p.returncode, p.stdout, p.stderr)
        except subprocess.TimeoutExpired:
            return Result(tuple(full), 124, "", f"timed out after {timeout:g}s")
        except FileNotFoundError as exc:
            return Result(tuple(full), 127, "", f"{exc.filename}: not found")

    def spawn(self, argv: list[str], netns: str | None, log: Path, env: Mapping[str, str] | None = None) -> int:
        log.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "ab") as out:
            p = subprocess.Popen(
                in_netns(argv, netns),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **env} if env else None,
            )
        return p.pid


@dataclass
class RecordingRunner(Runner):
    """Records every command; answers with `respond(argv, netns)` (default: success)."""

    respond: Callable[[tuple[str, ...], str | None], Result | None] | None = None
    calls: list[tuple[str | None, tuple[str, ...]]] = field(default_factory=list)
    inputs: list[str | None] = field(default_factory=list)  # what each call read on stdin
    next_pid: int = 1 << 30  # above any pid_max: a fake pid never names a real process

    def _result(
        self, argv: list[str], netns: str | None, input: str | None, timeout: float, env: Mapping[str, str] | None
    ) -> Result:
        self.calls.append((netns, tuple(argv)))
        self.inputs.append(input)
        return (self.respond(tuple(argv), netns) if self.respond else None) or Result(tuple(argv), 0)

    def spawn(self, argv: list[str], netns: str | None, log: Path, env: Mapping[str, str] | None = None) -> int:
        self.calls.append((netns, tuple(argv)))
        self.next_pid += 1
        return self.next_pid
