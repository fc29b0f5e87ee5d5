"""Network commands: create, ls, inspect, rm, prune (top level and under `network`)."""
from __future__ import annotations

import json
import sys
from typing import Any

import click

from cnm.cli.ipamflags import ipam_configs
from cnm.cli.output import error_line, table
from cnm.cli.params import CIDR, IP, KeyValue
from cnm.errors import CNMError

PRUNE_WARNING = ("WARNING! This will remove all custom networks not used by at least one container.\n"
                 "Are you sure you want to continue? [y/N] ")


@click.command("create")
@click.option("-d", "--driver", default="bridge", show_default=True, help="Driver to manage the network.")
@click.option("--subnet", "subnets", multiple=True, type=CIDR(), help="Subnet in CIDR format (repeatable).")
@click.option("--ip-range", "ip_ranges", multiple=True, type=CIDR(), help="Allocate container IPs from a sub-range.")
@click.option("--gateway", "gateways", multiple=True, type=IP(), help="Gateway for the subnet that contains it.")
@click.option("--aux-address", "aux", multiple=True, type=KeyValue(IP()), metavar="NAME=IP",
              help="Reserve an address (NAME=IP).")
@click.option("--ipv6", is_flag=True, help="Enable IPv6.")
@click.option("--internal", is_flag=True, help="Restrict external access to the network.")
@click.option("--attachable", is_flag=True, help="Mark the network attachable (recorded; bridge networks always accept containers).")
@click.option("-o", "--opt", "opts", multiple=True, type=KeyValue(), help="Driver option KEY=VALUE.")
@click.option("--label", "labels", multiple=True, type=KeyValue(bare_ok=True), help="Label KEY=VALUE.")
@click.option("--ipam-driver", default="default", show_default=True, help="IPAM driver.")
@click.option("--ipam-opt", "ipam_opts", multiple=True, type=KeyValue(), help="IPAM option KEY=VALUE.")
@click.argument("name")
@click.pass_obj
def create(state: Any, driver: str, subnets: tuple[str, ...], ip_ranges: tuple[str, ...],
           gateways: tuple[str, ...], aux: tuple[tuple[str, str], ...], ipv6: bool, internal: bool,
           attachable: bool, opts: tuple[tuple[str, str], ...], labels: tuple[tuple[str, str], ...],
           ipam_driver: str, ipam_opts: tuple[tuple[str, str], ...], name: str) -> None:
    """Create a network; prints its ID."""
    body: dict[str, Any] = {
        "Name": name,
        "Driver": driver,
        "CheckDuplicate": True,
        "Internal": internal,
        "EnableIPv6": ipv6,
        "IPAM": {"Driver": ipam_driver, "Config": ipam_configs(list(subnets), list(ip_ranges), list(gateways),
                                                               list(aux)),
                 "Options": dict(ipam_opts)},
        "Options": dict(opts),
        "Labels": dict(labels),
    }
    if attachable:
        body["Attachable"] = True
    click.echo(state.client.network_create(body))


def _parse_filters(pairs: tuple[tuple[str, str], ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def _short(net_id: str, no_trunc: bool) -> str:
    return net_id if no_trunc else net_id[:12]


@click.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display network IDs.")
@click.option("-f", "--filter", "filters", multiple=True, type=KeyValue(), metavar="KEY=VALUE",
              help="Filter: driver=, name=, scope=, id=, label=, type=custom|builtin (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="table, or json (an array of the full network objects).")
@click.option("--no-trunc", is_flag=True, help="Do not truncate the output.")
@click.pass_obj
def ls(state: Any, quiet: bool, filters: tuple[tuple[str, str], ...], fmt: str, no_trunc: bool) -> None:
    """List networks."""
    nets = sorted(state.client.networks(_parse_filters(filters) or None), key=lambda n: n["Name"])
    if quiet:
        for n in nets:
            click.echo(_short(n["Id"], no_trunc))
    elif fmt == "json":
        # The full API objects, as one JSON array (what scripts and tests want to parse).
        click.echo(json.dumps(nets, indent=4))
    else:
        rows = [(_short(n["Id"], no_trunc), n["Name"], n["Driver"], n["Scope"]) for n in nets]
        click.echo(table(("NETWORK ID", "NAME", "DRIVER", "SCOPE"), rows))


@click.command("inspect")
@click.argument("refs", nargs=-1, required=True, metavar="NAME|ID...")
@click.pass_context
def inspect(ctx: click.Context, refs: tuple[str, ...]) -> None:
    """Display detailed information on networks.

    Prints a JSON array of the networks found; a missing one is an error (exit
    non-zero) but the others are still printed.
    """
    found, code = [], 0
    errors: list[CNMError] = []
    for ref in refs:
        try:
            found.append(ctx.obj.client.network_inspect(ref))
        except CNMError as exc:
            errors.append(exc)
            code = code or exc.exit_code
    click.echo(json.dumps(found, indent=4))
    for exc in errors:
        error_line(exc)
    ctx.exit(code)


@click.command("rm")
@click.argument("refs", nargs=-1, required=True, metavar="NAME|ID...")
@click.pass_context
def rm(ctx: click.Context, refs: tuple[str, ...]) -> None:
    """Remove one or more networks.

    Goes on past failures and exits non-zero if any failed.
    """
    code = 0
    for ref in refs:
        try:
            ctx.obj.client.network_remove(ref)
        except CNMError as exc:
            error_line(exc)
            code = code or exc.exit_code
            continue
        click.echo(ref)
    ctx.exit(code)


@click.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.pass_obj
def prune(state: Any, force: bool) -> None:
    """Remove all unused custom networks."""
    if not force:
        click.echo(PRUNE_WARNING, nl=False)
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            return
    names = state.client.networks_prune()
    if names:
        click.echo("Deleted Networks:")
        for name in names:
            click.echo(name)


COMMANDS = (create, ls, inspect, rm, prune)

__all__ = ["COMMANDS"]
