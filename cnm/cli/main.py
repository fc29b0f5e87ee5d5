"""`net`: the command line of the cnm stack (Docker's `docker network …` flags).

Kept light on purpose: importing this module loads click and cnm.errors only; the API
client (standard library) is imported when a command first needs it, the daemon
(aiohttp, pyroute2) only by `net daemon`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import click

from cnm.cli import containers, daemon_cmd, lab, networks
from cnm.cli.output import error_line
from cnm.errors import CNMError

if TYPE_CHECKING:
    from cnm.api.client import APIClient

DEFAULT_HOST = "unix:///run/cnm/cnm.sock"


@dataclass
class CLIState:
    """What commands share, in `ctx.obj`. Tests pass one with an in-memory transport."""

    host: str | None = None
    transport: Any = None
    _client: "APIClient | None" = None

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
    """A group whose commands may raise CNMError: one line on stderr, exit code by category."""

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
for _cmd in containers.TOP_LEVEL:
    main.add_command(_cmd)
for _cmd in containers.NETWORK_COMMANDS:
    network.add_command(_cmd)
main.add_command(containers.container_group(CNMGroup))
main.add_command(daemon_cmd.daemon)
main.add_command(daemon_cmd.version)
main.add_command(lab.lab)
from cnm.cli.plugins import plugin_group; main.add_command(plugin_group(CNMGroup))  # noqa: E402,E702
