"""How a `net` command is declared: ONE table per command (its flags and arguments),
from which both the execution parser (cnm.cli.parse, no click) and click's help, usage
and completion (cnm.cli.clicktree) are derived. Nothing here imports click.

How to add a command
--------------------
1. Write its handler in the module of its area (networks.py, containers.py, …; a new
   area gets a new module), declared with `@command` and one line per flag/argument:

       from cnm.cli.spec import arg, command, flag, option
       from cnm.cli.values import key_value

       @command("ls",
                flag("-q", "--quiet", help="Only display network IDs."),
                option("-f", "--filter", dest="filters", multiple=True, value=key_value,
                       help="Filter KEY=VALUE (repeatable)."),
                option("--format", dest="fmt", choices=("table", "json"), default="table",
                       help="table, or json."),
                arg("refs", nargs=-1, required=False, metavar="NAME|ID..."))
       def ls(cx: Context, o: Opts) -> int | None:
           \"\"\"List networks.\"\"\"            # the help text; its first line is the summary
           ...

   The handler gets `cx` (a Context: `cx.client` the API client, `cx.path` the command
   as typed) and `o` (one attribute per flag and argument, named by `dest`: by default
   the longest name without dashes, `-` turned into `_`; repeatable ones and nargs=-1
   arguments are lists). It prints with cnm.cli.output.echo, returns its exit code (None
   means 0), and raises CNMError for a one-line error (the error's exit code).
2. Add its path(s) to COMMANDS in cnm/cli/commands.py:
       "network ls": "cnm.cli.networks:ls",
   (a new group also gets a line in GROUPS there: its name and help).
3. Keep the execution path light: a command module imports only the standard library's
   light modules and cnm's CLI modules at the top; anything heavy (yaml, pyroute2, the
   daemon, rich, asyncio) is imported inside the handler that needs it, and the command
   says so with `heavy=("yaml", …)`. tests/unit/test_cli_startup.py checks every
   declared command: click, typing, rich, asyncio, aiohttp, pyroute2, … must not be
   imported on its path unless it declares them.

How to add a flag: one more `flag(...)` (on/off) or `option(...)` (takes a value) in the
command's declaration, and use `o.<dest>` in the handler. A value is checked by a
converter (cnm.cli.values: `ip`, `cidr`, `key_value`, `byte_size`, `int_range(1)`, …, or
your own `str -> value` function raising ValueError with a short message); choices are
given with `choices=`; `default=`, `multiple=True`, `required=True`, `metavar=` and
`envvar=` mean what they mean in click. Bad input then fails with one line and exit 2.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing stays off the CLI's execution path; type checkers see True
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from cnm.api.client import APIClient  # (CLI start-up: the client only when a command talks to the daemon)

    Handler = Callable[["Context", "Opts"], "int | None"]

DEFAULT_HOST = "unix:///run/cnm/cnm.sock"
ANY = ("*",)  # heavy=ANY: the command runs a whole subsystem (the daemon, a lab)


class Param:
    """A flag (on/off), an option (takes a value) or a positional argument.

    `kind` is "flag", "option" or "arg"; `value` converts and checks one value
    (str -> value, ValueError with a message when bad); `nargs` is 1 or -1 (any number,
    for arguments only)."""

    __slots__ = (
        "choices",
        "default",
        "dest",
        "envvar",
        "help",
        "hidden",
        "kind",
        "metavar",
        "multiple",
        "names",
        "nargs",
        "required",
        "value",
    )

    def __init__(
        self,
        kind: str,
        names: Sequence[str],
        dest: str,
        *,
        value: Callable[[str], Any] | None = None,
        choices: Sequence[str] | None = None,
        default: Any = None,
        multiple: bool = False,
        required: bool = False,
        metavar: str | None = None,
        envvar: str | None = None,
        help: str = "",
        nargs: int = 1,
        hidden: bool = False,
    ) -> None:
        self.kind = kind
        self.names = tuple(names)
        self.dest = dest
        self.value = value
        self.choices = tuple(choices) if choices is not None else None
        self.default = default
        self.multiple = multiple
        self.required = required
        self.metavar = metavar
        self.envvar = envvar
        self.help = help
        self.nargs = nargs
        self.hidden = hidden

    @property
    def shown(self) -> str:
        """How messages name it: '-o' / '--opt' (click's way), or the argument's metavar."""
        if self.kind == "arg":
            return self.metavar or self.dest.upper()
        return " / ".join(f"'{n}'" for n in self.names)

    def __repr__(self) -> str:
        return f"<{self.kind} {self.names[0] if self.names else self.dest}>"


def _dest(names: Sequence[str]) -> str:
    longest = max(names, key=len)
    return longest.lstrip("-").replace("-", "_")


def _check_names(names: Sequence[str]) -> None:
    for n in names:
        if not (n.startswith("--") and len(n) > 3) and not (len(n) == 2 and n[0] == "-" and n[1] != "-"):
            raise ValueError(f"bad flag name {n!r}: -x or --long-name")


def flag(*names: str, dest: str | None = None, help: str = "", hidden: bool = False) -> Param:
    """An on/off flag: False unless given (`--flag=false` turns it off again)."""
    _check_names(names)
    return Param("flag", names, dest or _dest(names), default=False, help=help, hidden=hidden)


def option(
    *names: str,
    dest: str | None = None,
    value: Callable[[str], Any] | None = None,
    choices: Sequence[str] | None = None,
    default: Any = None,
    multiple: bool = False,
    required: bool = False,
    metavar: str | None = None,
    envvar: str | None = None,
    help: str = "",
    hidden: bool = False,
) -> Param:
    """A flag that takes a value: `--name VALUE`, `--name=VALUE`, `-n VALUE`, `-nVALUE`."""
    _check_names(names)
    if multiple and default is None:
        default = []
    return Param(
        "option",
        names,
        dest or _dest(names),
        value=value,
        choices=choices,
        default=default,
        multiple=multiple,
        required=required,
        metavar=metavar,
        envvar=envvar,
        help=help,
        hidden=hidden,
    )


def arg(
    dest: str,
    *,
    nargs: int = 1,
    required: bool = True,
    value: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    default: Any = None,
) -> Param:
    """A positional argument; nargs=-1 takes all that are left (a list)."""
    if nargs not in (1, -1):
        raise ValueError("nargs is 1 or -1")
    if nargs == -1 and default is None:
        default = []
    return Param("arg", (), dest, value=value, required=required, metavar=metavar, nargs=nargs, default=default)


class Command:
    """One command: its parameters, its handler and how it parses.

    `interspersed=False` ends the options at the first positional argument (`net run
    … CMD -x` passes -x to CMD), as Docker's run and exec do. `heavy` names the
    modules this command is allowed to import although the CLI's path must not (the
    daemon needs aiohttp); ANY ("*") allows all of them but click, for commands that
    run whole subsystems (the daemon, a lab)."""

    def __init__(
        self,
        name: str,
        params: Sequence[Param],
        handler: Handler,
        *,
        help: str = "",
        interspersed: bool = True,
        heavy: Sequence[str] = (),
        hidden: bool = False,
    ) -> None:
        self.name = name
        self.params = tuple(params)
        self.handler = handler
        self.help = help
        self.interspersed = interspersed
        self.heavy = tuple(heavy)
        self.hidden = hidden
        args = [p for p in self.params if p.kind == "arg"]
        if any(p.nargs == -1 for p in args[:-1]):
            raise ValueError(f"{name}: only the last argument may take nargs=-1")
        dests = [p.dest for p in self.params]
        names = [n for p in self.params for n in p.names]
        if len(set(dests)) != len(dests) or len(set(names)) != len(names):
            raise ValueError(f"{name}: two parameters share a dest or a flag name")

    def __call__(self, cx: Context, o: Opts) -> int | None:
        return self.handler(cx, o)

    def __repr__(self) -> str:
        return f"<Command {self.name}>"


def command(
    name: str, *params: Param, interspersed: bool = True, heavy: Sequence[str] = (), hidden: bool = False
) -> Callable[[Handler], Command]:
    """Declare a command: `@command("ls", flag(...), option(...), arg(...))` on its handler,
    whose docstring is the help."""

    def wrap(handler: Handler) -> Command:
        return Command(
            name,
            params,
            handler,
            help=_dedent(handler.__doc__ or ""),
            interspersed=interspersed,
            heavy=heavy,
            hidden=hidden,
        )

    return wrap


def _dedent(doc: str) -> str:
    lines = doc.strip("\n").splitlines()
    if not lines:
        return ""
    indents = [len(x) - len(x.lstrip()) for x in lines[1:] if x.strip()]
    cut = min(indents) if indents else 0
    return "\n".join([lines[0].strip(), *(x[cut:] for x in lines[1:])]).strip()


class Opts:
    """The parsed flags and arguments of one command: one attribute per `dest`."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:  # only for names that were not set
        raise AttributeError(f"no flag or argument named {name!r} in this command")

    def __repr__(self) -> str:
        return f"Opts({self.__dict__!r})"


class Context:
    """What a handler shares with the CLI: the daemon's address and client (made on first
    use), and the command as typed (`cx.path`, e.g. "network ls", for messages)."""

    def __init__(self, host: str | None = None, transport: Any = None, path: str = "") -> None:
        self.host = host or DEFAULT_HOST
        self.transport = transport
        self.path = path
        self._client: APIClient | None = None

    @property
    def client(self) -> APIClient:
        if self._client is None:
            from cnm.api.client import APIClient  # (CLI start-up: the client only when a command talks to the daemon)

            self._client = APIClient(self.host, transport=self.transport)
        return self._client
