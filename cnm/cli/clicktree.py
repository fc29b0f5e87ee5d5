"""click's view of `net`, derived from the declarations (cnm.cli.commands, cnm.cli.spec):
it serves help, group listings and shell completion. Commands never run through it —
cnm.cli.entry runs them — so a click command here has no callback of its own.

Imported only for help and completion: it loads click and every command module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from cnm.cli.commands import COMMANDS, GROUPS, TOP, load
from cnm.cli.spec import Command, Param

WIDTH = 100


class _Converter(click.ParamType):
    """A declared converter (str -> value, ValueError when bad) as a click type, for
    completion and for the metavar shown in help."""

    def __init__(self, convert: Callable[[str], Any]) -> None:
        self.convert_text = convert
        self.name = getattr(convert, "metavar", "TEXT")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.convert_text(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _param(p: Param) -> click.Parameter:
    if p.kind == "arg":
        return click.Argument(
            [p.dest],
            nargs=p.nargs,
            required=p.required,
            metavar=p.metavar,
            type=_Converter(p.value) if p.value else None,
        )
    if p.kind == "flag":
        return click.Option([*p.names, p.dest], is_flag=True, help=p.help, hidden=p.hidden)
    kind: Any = click.Choice(p.choices) if p.choices else _Converter(p.value) if p.value else None
    shown = p.default not in (None, [], "")
    return click.Option(
        [*p.names, p.dest],
        type=kind,
        multiple=p.multiple,
        required=p.required,
        default=p.default if shown else None,
        show_default=shown,
        metavar=p.metavar,
        envvar=p.envvar,
        show_envvar=False,
        help=p.help,
        hidden=p.hidden,
    )


def _settings(params: tuple[Param, ...]) -> dict[str, Any]:
    # `-h` is help unless the command uses it for something else (as docker run's -h).
    taken = any("-h" in p.names for p in params)
    return {"help_option_names": ["--help"] if taken else ["-h", "--help"], "max_content_width": WIDTH}


def command(name: str, cmd: Command) -> click.Command:
    return click.Command(
        name,
        params=[_param(p) for p in cmd.params],
        help=cmd.help,
        hidden=cmd.hidden,
        context_settings=_settings(cmd.params),
    )


def tree() -> click.Group:
    """The whole `net` command tree (every command module is imported)."""
    top = click.Group(
        "net",
        params=[_param(p) for p in TOP.params if p.kind != "arg"],
        help=GROUPS[""],
        context_settings=_settings(TOP.params),
    )
    groups: dict[str, click.Group] = {"": top}
    for path in sorted(GROUPS, key=lambda g: g.count(" ")):
        if path:
            parent, _, name = path.rpartition(" ")
            groups[path] = click.Group(name, help=GROUPS[path], context_settings=_settings(()))
            groups[parent].add_command(groups[path])
    for path in COMMANDS:
        parent, _, name = path.rpartition(" ")
        groups[parent].add_command(command(name, load(path)))
    return top


def run_click(argv: list[str]) -> int:
    """Let click answer (help, completion, its own usage errors); the exit code."""
    try:
        result = tree().main(args=argv, prog_name="net", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        return 1
    return result if isinstance(result, int) else 0
