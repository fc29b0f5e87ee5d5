"""`net`: the command line of the cnm stack (Docker's `docker network …`/`docker run …`
flags). The console script calls `main()`.

A command runs without click: the global flags and the command's own are parsed from
their declarations (cnm.cli.commands, cnm.cli.spec) by cnm.cli.parse, and only the
command's module is imported. click serves what needs it — help (`-h`/`--help`, a group
without a command) and shell completion — from a tree built from the same declarations
(cnm.cli.clicktree). A domain error (CNMError) prints one line and exits with its
category's code; a usage error prints one line and exits 2.
"""

from __future__ import annotations

import sys

from cnm.cli.commands import COMMANDS, GROUPS, TOP, load, resolve
from cnm.cli.output import error_line
from cnm.cli.parse import HelpRequested, UsageError, parse
from cnm.cli.spec import Command, Context
from cnm.errors import CNMError

TYPE_CHECKING = False  # typing stays off the CLI's execution path; type checkers see True
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

INTERRUPTED = 130
COMPLETE_VAR = "_NET_COMPLETE"  # click's shell completion asks through this variable


class Environment:
    """os.environ's values, read without importing os when nothing else has (os and its
    _collections_abc are ~1.5 ms of the ~15 ms a `net ls -q` costs)."""

    def get(self, key: str, default: str | None = None) -> str | None:
        os = sys.modules.get("os")
        if os is not None:
            return os.environ.get(key, default)
        import posix  # (CLI start-up: posix rather than os, see Environment)

        value = posix.environ.get(key.encode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()))
        if value is None:
            return default
        return value.decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value


def _usage(exc: UsageError, path: str) -> int:
    where = f"net {path}".rstrip()
    hint = f" (see '{where} --help')" if exc.hint else ""
    sys.stdout.flush()
    sys.stderr.write(f"Error: {exc.message}{hint}\n")
    return exc.exit_code


def _click(argv: Sequence[str]) -> int:
    """Help and completion, by click (imported only now)."""
    from cnm.cli.clicktree import run_click  # (CLI start-up: click only for help and completion)

    return run_click(list(argv))


def run(
    argv: Sequence[str],
    transport: Any = None,
    environ: Mapping[str, str] | None = None,
    ran: list[Command] | None = None,
) -> int:
    """Run one command line (without the program name); its exit code. `transport`
    replaces the unix socket (tests); `ran` gets the command that ran, if one did."""
    env: Any = Environment() if environ is None else environ
    if COMPLETE_VAR in env:
        return _click(argv)
    try:
        top = parse(TOP, argv, env)
    except HelpRequested:
        return _click(argv)
    except UsageError as exc:
        return _usage(exc, "")
    path, rest = resolve(top.rest)
    if path not in COMMANDS:
        if rest and not rest[0].startswith("-"):
            where = f' for "net {path}"' if path else ""
            return _usage(UsageError(f"unknown command {rest[0]!r}{where}"), path)
        return _click(argv)  # `net`, `net lab`: the group's help
    cmd = load(path)
    try:
        opts = parse(cmd, rest, env)
    except HelpRequested:
        return _click(argv)
    except UsageError as exc:
        return _usage(exc, path)
    cx = Context(top.host, transport, path)
    if ran is not None:
        ran.append(cmd)
    try:
        code = cmd.handler(cx, opts)
    except CNMError as exc:
        error_line(exc)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = INTERRUPTED
    sys.stdout.flush()
    return code or 0


def main() -> None:
    ran: list[Command] = []
    try:
        code = run(sys.argv[1:], ran=ran)
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        # The reader went away (`net ps | head -1`): stop quietly, as Docker's client does.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 141
    if ran and not ran[0].heavy:
        # A light command has nothing left to clean up: skip the interpreter's teardown
        # (freeing every module and object: ~2 ms of a ~15 ms `net ls -q`). atexit
        # handlers still run; the output is flushed above.
        import atexit
        import posix  # (CLI start-up: posix rather than os, see Environment)

        atexit._run_exitfuncs()
        posix._exit(code)
    sys.exit(code)


__all__ = ["GROUPS", "main", "run"]
