"""`net`: the command line of the cnm stack (Docker's `docker network …` flags).

Kept light on purpose: importing this module loads click and cnm.errors only; the API
client (standard library) is imported when a command first needs it, the daemon
(aiohttp, pyroute2) only by `net daemon`.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable, NoReturn

import click

from cnm.cli import daemon_cmd, networks
from cnm.cli.output import error_line
from cnm.errors import CNMError

if TYPE_CHECKING:
    from cnm.api.client import APIClient

DEFAULT_HOST = "unix:///run/cnm/cnm.sock"


class CLIState:
    """What commands share, in `ctx.obj`. Tests pass one with an in-memory transport.
    (A plain class: importing dataclasses costs the CLI ~15 ms at every start.)"""

    def __init__(self, host: str | None = None, transport: Any = None) -> None:
        self.host = host
        self.transport = transport
        self._client: "APIClient | None" = None

    @property
    def client(self) -> "APIClient":
        if self._client is None:
            from cnm.api.client import APIClient
            self._client = APIClient(self.host or DEFAULT_HOST, transport=self.transport)
        return self._client


def fail(exc: CNMError) -> NoReturn:
    """Print a domain error as one line and exit with its category's code."""
    error_line(exc)
    raise click.exceptions.Exit(exc.exit_code)


class CNMGroup(click.Group):
    """A group whose commands may raise CNMError: one line on stderr, exit code by category.

    Commands may also be registered lazily (`add_lazy`): their module is imported only
    when that command runs or help lists it, so `net ls` does not pay for `net lab`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, Callable[[], click.Command]] = {}

    def add_lazy(self, name: str, load: Callable[[], click.Command]) -> None:
        self.lazy[name] = load

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in self.lazy:
            self.add_command(self.lazy.pop(name)(), name)
        return self.commands.get(name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CNMError as exc:
            fail(exc)


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=CNMGroup, context_settings=CONTEXT)
@click.option("-H", "--host", envvar="NET_HOST", default=DEFAULT_HOST, show_default=True,
              help="Daemon socket to talk to (env NET_HOST).")
@click.pass_context
def main(ctx: click.Context, host: str) -> None:
    """Manage cnm networks, and run the cnm daemon."""
    if ctx.obj is None:
        ctx.obj = CLIState(host=host)
    elif ctx.obj.host is None:
        ctx.obj.host = host


@main.group("network", cls=CNMGroup)
def network() -> None:
    """Manage networks (the same commands as at the top level)."""


for _cmd in networks.COMMANDS:
    main.add_command(_cmd)
    network.add_command(_cmd)
network.add_command(networks.ls, "list")
network.add_command(networks.rm, "remove")


def _from(module: str, attr: str, *args: Any) -> Callable[[], click.Command]:
    def load() -> click.Command:
        obj = getattr(importlib.import_module(module), attr)
        return obj(*args) if args else obj
    return load


for _name, _attr in (("run", "run"), ("ps", "ps"), ("exec", "exec_"), ("logs", "logs"), ("stop", "stop"),
                     ("kill", "kill"), ("connect", "connect"), ("disconnect", "disconnect")):
    main.add_lazy(_name, _from("cnm.cli.containers", _attr))
network.add_lazy("connect", _from("cnm.cli.containers", "connect"))
network.add_lazy("disconnect", _from("cnm.cli.containers", "disconnect"))
main.add_lazy("container", _from("cnm.cli.containers", "container_group", CNMGroup))
main.add_lazy("lab", _from("cnm.cli.lab", "lab"))
main.add_lazy("plugin", _from("cnm.cli.plugins", "plugin_group", CNMGroup))
main.add_command(daemon_cmd.daemon)
main.add_command(daemon_cmd.version)
