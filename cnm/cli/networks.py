"""Network commands: create, ls, inspect, rm, prune, connect, disconnect (top level and
under `network`). Declared with cnm.cli.spec; Docker's flags and output."""

from __future__ import annotations

import sys

from cnm.cli.output import dumps, echo, error_line, table
from cnm.cli.spec import arg, command, flag, option
from cnm.cli.values import cidr, ip, key_value, label, name_ip
from cnm.errors import CNMError

TYPE_CHECKING = False  # typing stays off the CLI's execution path; type checkers see True
if TYPE_CHECKING:
    from typing import Any

    from cnm.cli.spec import Context, Opts

PRUNE_WARNING = (
    "WARNING! This will remove all custom networks not used by at least one container.\n"
    "Are you sure you want to continue? [y/N] "
)


@command(
    "create",
    option("-d", "--driver", default="bridge", help="Driver to manage the network."),
    option("--subnet", dest="subnets", multiple=True, value=cidr, help="Subnet in CIDR format (repeatable)."),
    option("--ip-range", dest="ip_ranges", multiple=True, value=cidr, help="Allocate container IPs from a sub-range."),
    option("--gateway", dest="gateways", multiple=True, value=ip, help="Gateway for the subnet that contains it."),
    option("--aux-address", dest="aux", multiple=True, value=name_ip, help="Reserve an address (NAME=IP)."),
    flag("--ipv6", help="Enable IPv6."),
    flag("--internal", help="Restrict external access to the network."),
    flag("--attachable", help="Mark the network attachable (recorded; bridge networks always accept containers)."),
    option("-o", "--opt", dest="opts", multiple=True, value=key_value, help="Driver option KEY=VALUE."),
    option("--label", dest="labels", multiple=True, value=label, help="Label KEY=VALUE."),
    option("--ipam-driver", default="default", help="IPAM driver."),
    option("--ipam-opt", dest="ipam_opts", multiple=True, value=key_value, help="IPAM option KEY=VALUE."),
    arg("name"),
)
def create(cx: Context, o: Opts) -> None:
    """Create a network; prints its ID."""
    configs: list[dict] = []
    if o.subnets or o.ip_ranges or o.gateways or o.aux:
        from cnm.cli.ipamflags import ipam_configs  # (ipaddress: ~4 ms, only with IPAM flags)

        configs = ipam_configs(o.subnets, o.ip_ranges, o.gateways, o.aux)
    body: dict[str, Any] = {
        "Name": o.name,
        "Driver": o.driver,
        "CheckDuplicate": True,
        "Internal": o.internal,
        "EnableIPv6": o.ipv6,
        "IPAM": {"Driver": o.ipam_driver, "Config": configs, "Options": dict(o.ipam_opts)},
        "Options": dict(o.opts),
        "Labels": dict(o.labels),
    }
    if o.attachable:
        body["Attachable"] = True
    echo(cx.client.network_create(body))


def filters(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Repeated -f KEY=VALUE as the API's filters ({key: [values]})."""
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def _short(net_id: str, no_trunc: bool) -> str:
    return net_id if no_trunc else net_id[:12]


@command(
    "ls",
    flag("-q", "--quiet", help="Only display network IDs."),
    option(
        "-f",
        "--filter",
        dest="filters",
        multiple=True,
        value=key_value,
        help="Filter: driver=, name=, scope=, id=, label=, type=custom|builtin (repeatable).",
    ),
    option(
        "--format",
        dest="fmt",
        choices=("table", "json"),
        default="table",
        help="table, or json (an array of the full network objects).",
    ),
    flag("--no-trunc", help="Do not truncate the output."),
)
def ls(cx: Context, o: Opts) -> None:
    """List networks."""
    nets = sorted(cx.client.networks(filters(o.filters) or None), key=lambda n: n["Name"])
    if o.quiet:
        sys.stdout.write("".join(_short(n["Id"], o.no_trunc) + "\n" for n in nets))
    elif o.fmt == "json":
        # The full API objects, as one JSON array (what scripts and tests want to parse).
        echo(dumps(nets))
    else:
        rows = [(_short(n["Id"], o.no_trunc), n["Name"], n["Driver"], n["Scope"]) for n in nets]
        echo(table(("NETWORK ID", "NAME", "DRIVER", "SCOPE"), rows))


@command("inspect", arg("refs", nargs=-1, metavar="NAME|ID..."))
def inspect(cx: Context, o: Opts) -> int:
    """Display detailed information on networks.

    Prints a JSON array of the networks found; a missing one is an error (exit
    non-zero) but the others are still printed.
    """
    found: list[dict] = []
    errors: list[CNMError] = []
    for ref in o.refs:
        try:
            found.append(cx.client.network_inspect(ref))
        except CNMError as exc:
            errors.append(exc)
    echo(dumps(found))
    for err in errors:
        error_line(err)
    return errors[0].exit_code if errors else 0


@command("rm", arg("refs", nargs=-1, metavar="NAME|ID..."))
def rm(cx: Context, o: Opts) -> int:
    """Remove one or more networks.

    Goes on past failures and exits non-zero if any failed.
    """
    code = 0
    for ref in o.refs:
        try:
            cx.client.network_remove(ref)
        except CNMError as exc:
            error_line(exc)
            code = code or exc.exit_code
            continue
        echo(ref)
    return code


@command("prune", flag("-f", "--force", help="Do not prompt for confirmation."))
def prune(cx: Context, o: Opts) -> None:
    """Remove all unused custom networks."""
    if not o.force:
        sys.stdout.write(PRUNE_WARNING)
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return
    names = cx.client.networks_prune()
    if names:
        echo("Deleted Networks:")
        for name in names:
            echo(name)


@command(
    "connect",
    option("--ip", value=ip, help="IPv4 address on the network."),
    option("--ip6", value=ip, help="IPv6 address on the network."),
    option("--alias", dest="aliases", multiple=True, metavar="ALIAS", help="Network-scoped alias (repeatable)."),
    option("--mac-address", dest="mac", help="MAC address on the network."),
    arg("network", metavar="NETWORK"),
    arg("ref", metavar="CONTAINER"),
)
def connect(cx: Context, o: Opts) -> None:
    """Connect a running container to a network."""
    from cnm.cli.runflow import endpoint_config  # (CLI start-up: only connect needs it)

    cx.client.network_connect(o.network, o.ref, endpoint_config(o.ip, o.ip6, o.aliases, o.mac))


@command(
    "disconnect",
    flag("-f", "--force", help="Force the container to disconnect."),
    arg("network", metavar="NETWORK"),
    arg("ref", metavar="CONTAINER"),
)
def disconnect(cx: Context, o: Opts) -> None:
    """Disconnect a container from a network."""
    cx.client.network_disconnect(o.network, o.ref, o.force)
