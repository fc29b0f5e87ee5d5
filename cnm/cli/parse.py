"""The execution parser of `net`: argv -> the values of one declared command
(cnm.cli.spec), the way Docker's CLI (pflag) reads them, without click.

    --name VALUE   --name=VALUE   -n VALUE   -nVALUE   -n=VALUE   -dq (short flags combined)
    --flag         --flag=false   --   (the rest are arguments)

Options may follow arguments (`net rm a b -f`) unless the command is declared
`interspersed=False` (`net run [OPTIONS] CMD [ARG...]`: options end at CMD, and a `--`
right after the fixed arguments — `net exec C -- CMD` — is dropped). `-h`/`--help`
anywhere among the options asks for help (the caller hands it to click). Bad input
raises UsageError with a one-line message.
"""

from __future__ import annotations

from cnm.cli.spec import Opts
from cnm.errors import InvalidParameter

TYPE_CHECKING = False  # typing stays off the CLI's execution path; type checkers see True
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from cnm.cli.spec import Command, Param

_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


class UsageError(InvalidParameter):
    """The command line does not fit the command's declaration (exit 2). `hint` says
    whether pointing at `--help` helps (not for a bad value: the user knows the flag)."""

    def __init__(self, message: str, hint: bool = True) -> None:
        super().__init__(message)
        self.hint = hint


class HelpRequested(Exception):
    """-h/--help among the options: show the command's help instead of running it."""


def _convert(p: Param, text: str) -> Any:
    if p.choices is not None and text not in p.choices:
        allowed = ", ".join(repr(c) for c in p.choices)
        raise UsageError(f"invalid value for {p.shown}: {text!r} is not one of {allowed}", hint=False)
    if p.value is None:
        return text
    try:
        return p.value(text)
    except ValueError as exc:
        raise UsageError(f"invalid value for {p.shown}: {exc}", hint=False) from None


def _flag_value(p: Param, text: str) -> bool:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise UsageError(f"invalid value for {p.shown}: {text!r} is not true or false", hint=False)


def parse(cmd: Command, argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Opts:
    """The command's values from `argv` (everything after the command's name)."""
    longs: dict[str, Param] = {}
    shorts: dict[str, Param] = {}
    for p in cmd.params:
        for name in p.names:
            (longs if name.startswith("--") else shorts)[name] = p
    given: dict[str, Any] = {}

    def put(p: Param, value: Any) -> None:
        if p.multiple:
            given.setdefault(p.dest, []).append(value)
        else:
            given[p.dest] = value

    fixed = sum(1 for p in cmd.params if p.kind == "arg" and p.nargs == 1)
    positionals: list[str] = []
    only_args = by_dashdash = False
    i, n = 0, len(argv)
    while i < n:
        tok = argv[i]
        i += 1
        if only_args or tok == "-" or tok[:1] != "-":
            if tok == "--" and only_args and not by_dashdash and len(positionals) == fixed:
                by_dashdash = True  # `net exec C -- CMD`: the -- only separates
                continue
            positionals.append(tok)
            only_args = only_args or not cmd.interspersed
            continue
        if tok == "--":
            only_args = by_dashdash = True
            continue
        if tok[1] == "-":
            name, eq, text = tok.partition("=")
            found = longs.get(name)
            if found is None:
                if name == "--help":
                    raise HelpRequested()
                raise UsageError(f"unknown flag: {name}")
            p = found
            if p.kind == "flag":
                put(p, _flag_value(p, text) if eq else True)
                continue
            if not eq:
                if i >= n:
                    raise UsageError(f"flag needs an argument: {name}")
                text, i = argv[i], i + 1
            put(p, _convert(p, text))
            continue
        j = 1
        while j < len(tok):  # -dq, -p80:80, -e=A=1, -t 5
            letter = tok[j]
            j += 1
            found = shorts.get("-" + letter)
            if found is None:
                if letter == "h":
                    raise HelpRequested()
                raise UsageError(f"unknown shorthand flag: {letter!r} in {tok}")
            p = found
            if p.kind == "flag":
                if tok[j : j + 1] == "=":
                    put(p, _flag_value(p, tok[j + 1 :]))
                    break
                put(p, True)
                continue
            text = tok[j + 1 :] if tok[j : j + 1] == "=" else tok[j:]
            if not text and j >= len(tok):
                if i >= n:
                    raise UsageError(f"flag needs an argument: {letter!r} in {tok}")
                text, i = argv[i], i + 1
            put(p, _convert(p, text))
            break
    return Opts(_complete(cmd, given, positionals, environ))


def _complete(
    cmd: Command, given: dict[str, Any], positionals: list[str], environ: Mapping[str, str] | None
) -> dict[str, Any]:
    """Arguments placed, defaults and environment filled in, requirements checked."""
    values: dict[str, Any] = {}
    rest = positionals
    for p in cmd.params:
        if p.kind == "arg":
            if p.nargs == -1:
                values[p.dest] = [_convert(p, t) for t in rest]
                if p.required and not rest:
                    raise UsageError(f"missing argument {p.shown}")
                rest = []
            elif rest:
                values[p.dest], rest = _convert(p, rest[0]), rest[1:]
            elif p.required:
                raise UsageError(f"missing argument {p.shown}")
            else:
                values[p.dest] = p.default
        elif p.dest in given:
            values[p.dest] = given[p.dest]
        elif p.envvar and environ is not None and environ.get(p.envvar):
            text = environ[p.envvar]
            values[p.dest] = [_convert(p, text)] if p.multiple else _convert(p, text)
        elif p.required:
            raise UsageError(f"missing flag {p.names[-1]}")
        else:
            values[p.dest] = list(p.default) if p.multiple else p.default
    if rest:
        raise UsageError(f"unexpected argument {rest[0]!r}")
    return values
