"""`net daemon` (runs the daemon; heavy imports happen inside) and `net version`."""
from __future__ import annotations

import importlib
import json
from typing import Any

import click

from cnm.cli.params import AddressPool

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@click.command("daemon")
@click.option("--root", default="/var/lib/cnm", show_default=True, type=click.Path(file_okay=False),
              help="State directory (SQLite store, …).")
@click.option("--run-dir", default="/run/cnm", show_default=True, type=click.Path(file_okay=False),
              help="Runtime directory (namespaces, pid files).")
@click.option("--socket", "socket_", default="/run/cnm/cnm.sock", show_default=True, type=click.Path(dir_okay=False),
              help="Unix socket the API listens on.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="info", show_default=True)
@click.option("--default-address-pool", "pools", multiple=True, type=AddressPool(),
              help="Default pool for networks without --subnet, base=CIDR,size=N (repeatable).")
@click.option("--cluster-store", default=None, metavar="etcd://HOST:PORT[,HOST:PORT…]",
              help="etcd cluster holding global-scope (overlay) networks.")
@click.option("--advertise", default=None, metavar="IP",
              help="This host's underlay address (VXLAN tunnel endpoint); needed with --cluster-store.")
@click.option("--plugin-dir", "plugin_dirs", multiple=True, type=click.Path(file_okay=False),
              help="Where to discover remote driver plugins (repeatable; default: Docker's folders).")
def daemon(root: str, run_dir: str, socket_: str, log_level: str, pools: tuple[str, ...],
           cluster_store: str | None, advertise: str | None, plugin_dirs: tuple[str, ...]) -> None:
    """Run the cnm daemon in the foreground."""
    if cluster_store and not advertise:
        raise click.UsageError("--cluster-store needs --advertise IP (this host's underlay address)")
    # Heavy (aiohttp, pyroute2): imported here only, never on the CLI's path.
    daemon_mod = importlib.import_module("cnm.daemon")
    config = daemon_mod.DaemonConfig(root=root, run_dir=run_dir, socket=socket_, log_level=log_level.lower(),
                                     default_address_pools=list(pools), cluster_store=cluster_store,
                                     advertise=advertise, plugin_dirs=list(plugin_dirs))
    raise click.exceptions.Exit(daemon_mod.run_daemon(config))


@click.command("version")
@click.pass_obj
def version(state: Any) -> None:
    """Show the daemon's version information (JSON)."""
    click.echo(json.dumps(state.client.version(), indent=4))
