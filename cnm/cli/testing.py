"""Running `net` command lines in tests: in this process (`invoke`: fast, monkeypatching
works, an in-memory transport can stand in for the daemon) or as a real process
(`run_net`: the console script's path, with the modules it imported recorded).

HEAVY is what no command's execution path may import unless the command declares it
(`heavy=` in its declaration): each costs milliseconds at every start of `net`. "site"
among them: under the launcher (`python -IS`) it is loaded only when something outside
the standard library and cnm is imported.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import cnm
from cnm.cli import entry
from cnm.cli.commands import COMMANDS, load, resolve

HEAVY = frozenset(
    {
        "site",
        "click",
        "rich",
        "typing",
        "asyncio",
        "aiohttp",
        "pyroute2",
        "yaml",
        "netaddr",
        "etcd3gw",
        "dnslib",
        "scapy",
        "http",
        "email",
        "ssl",
        "urllib",
        "dataclasses",
        "inspect",
        "logging",
        "concurrent",
        "sqlite3",
        "subprocess",
        "threading",
        "importlib.metadata",
        "cnm.daemon",
        "cnm.runtime",
        "cnm.controller",
        "pygments",
        "markdown_it",
    }
)


class Result:
    """What a command line did: exit code and output, like click's CliRunner result."""

    def __init__(self, exit_code: int, stdout: str, stderr: str, modules: frozenset[str] = frozenset()) -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        self.modules = modules

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __repr__(self) -> str:
        return f"<Result exit {self.exit_code} stdout={self.stdout[:200]!r} stderr={self.stderr[:200]!r}>"


def _stream(data: bytes = b"") -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace", write_through=True)


def invoke(
    argv: Sequence[str], *, transport: Any = None, input: str = "", env: Mapping[str, str] | None = None
) -> Result:
    """Run `net ARGV` in this process with captured stdin/stdout/stderr."""
    saved = sys.stdin, sys.stdout, sys.stderr
    out, err = _stream(), _stream()
    sys.stdin, sys.stdout, sys.stderr = _stream(input.encode()), out, err
    try:
        try:
            code = entry.run(list(argv), transport=transport, environ=os.environ if env is None else env)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out.flush()
        err.flush()
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    return Result(
        code,
        out.buffer.getvalue().decode(errors="replace"),  # type: ignore[attr-defined]
        err.buffer.getvalue().decode(errors="replace"),  # type: ignore[attr-defined]
    )


# What the launcher (cnm.cli.launcher) runs, under `python -IS`, plus a note of every module
# imported when the process ends.
_AUDITED = (
    "import sys, atexit\n"
    "_path = sys.argv.pop(1)\n"
    "sys.path.append(sys.argv.pop(1))\n"
    "def _note():\n"
    "    with open(_path, 'w') as f:\n"
    "        f.write('\\n'.join(sorted(sys.modules)))\n"
    "atexit.register(_note)\n"
    "from cnm.cli import lazysite\n"
    "lazysite.install()\n"
    "from cnm.cli.entry import main\n"
    "main()\n"
)


def run_net(
    argv: Sequence[str], *, input: str = "", env: Mapping[str, str] | None = None, timeout: float = 60
) -> Result:
    """Run `net ARGV` as a process, started as the launcher starts it (`python -IS`,
    site-packages on demand); `Result.modules` names every module it imported."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(cnm.__file__)))
    fd, note = tempfile.mkstemp(prefix="cnm-cli-modules-")
    os.close(fd)
    environ = dict(os.environ if env is None else env)
    try:
        r = subprocess.run(
            [sys.executable, "-IS", "-c", _AUDITED, note, root, *argv],
            input=input.encode(),
            capture_output=True,
            env=environ,
            timeout=timeout,
            check=False,
        )
        with open(note) as f:
            modules = frozenset(f.read().split())
    finally:
        os.unlink(note)
    return Result(r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"), modules)


def allowed_heavy(argv: Sequence[str]) -> frozenset[str]:
    """The heavy modules the command `argv` names may import (its `heavy=`)."""
    words = list(argv)
    while words and words[0] in ("-H", "--host"):
        words = words[2:]
    words = [w for w in words if not w.startswith("--host=")]
    path, _ = resolve(words)
    return frozenset(load(path).heavy) if path in COMMANDS else frozenset()


def heavy_imports(modules: frozenset[str], allowed: frozenset[str] = frozenset()) -> list[str]:
    """The modules in `modules` that HEAVY names (a package or any module under it) and
    `allowed` does not; "*" in `allowed` allows all but click."""
    if "*" in allowed:
        allowed = HEAVY - {"click"}
    bad = set()
    for name in modules:
        parts = name.split(".")
        for i in range(len(parts)):
            prefix = ".".join(parts[: i + 1])
            if prefix in HEAVY and prefix not in allowed and prefix.split(".")[0] not in allowed:
                bad.add(prefix)
                break
    return sorted(bad)


def run_lean(argv: Sequence[str], **kw: Any) -> Result:
    """`run_net`, failing (AssertionError) if the command imported a HEAVY module it did
    not declare."""
    r = run_net(argv, **kw)
    assert "cnm.cli.entry" in r.modules, f"net {' '.join(argv)}: no record of its imports (atexit did not run)"
    bad = heavy_imports(r.modules, allowed_heavy(argv))
    assert not bad, f"net {' '.join(argv)} imported {', '.join(bad)} on its execution path"
    return r
