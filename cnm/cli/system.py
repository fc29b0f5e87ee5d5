"""`net daemon` (runs the daemon; its heavy imports happen inside) and `net version`."""

from __future__ import annotations

from cnm.cli.output import dumps, echo
from cnm.cli.spec import ANY, command, option
from cnm.cli.values import address_pool
from cnm.errors import InvalidParameter

TYPE_CHECKING = False  # typing stays off the CLI's execution path; type checkers see True
if TYPE_CHECKING:
    from cnm.cli.spec import Context, Opts

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _log_level(text: str) -> str:
    if text.lower() not in LOG_LEVELS:
        raise ValueError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return text.lower()


_log_level.metavar = "[" + "|".join(LOG_LEVELS) + "]"  # type: ignore[attr-defined]


@command(
    "daemon",
    option("--root", default="/var/lib/cnm", metavar="DIRECTORY", help="State directory (SQLite store, …)."),
    option("--run-dir", default="/run/cnm", metavar="DIRECTORY", help="Runtime directory (namespaces, pid files)."),
    option(
        "--socket", dest="socket_", default="/run/cnm/cnm.sock", metavar="FILE", help="Unix socket the API listens on."
    ),
    option("--log-level", value=_log_level, default="info", help="Log level (case-insensitive)."),
    option(
        "--default-address-pool",
        dest="pools",
        multiple=True,
        value=address_pool,
        help="Default pool for networks without --subnet, base=CIDR,size=N (repeatable).",
    ),
    option(
        "--cluster-store",
        metavar="etcd://HOST:PORT[,HOST:PORT…]",
        help="etcd cluster holding global-scope (overlay) networks.",
    ),
    option(
        "--advertise",
        metavar="IP",
        help="This host's underlay address (VXLAN tunnel endpoint); needed with --cluster-store.",
    ),
    option(
        "--plugin-dir",
        dest="plugin_dirs",
        multiple=True,
        metavar="DIRECTORY",
        help="Where to discover remote driver plugins (repeatable; default: Docker's folders).",
    ),
    heavy=ANY,
)
def daemon(cx: Context, o: Opts) -> int:
    """Run the cnm daemon in the foreground."""
    if o.cluster_store and not o.advertise:
        raise InvalidParameter("--cluster-store needs --advertise IP (this host's underlay address)")
    # Heavy (aiohttp, pyroute2): imported here only, never on the CLI's path.
    import importlib

    daemon_mod = importlib.import_module("cnm.daemon")
    config = daemon_mod.DaemonConfig(
        root=o.root,
        run_dir=o.run_dir,
        socket=o.socket_,
        log_level=o.log_level,
        default_address_pools=list(o.pools),
        cluster_store=o.cluster_store,
        advertise=o.advertise,
        plugin_dirs=list(o.plugin_dirs),
    )
    return int(daemon_mod.run_daemon(config) or 0)


@command("version")
def version(cx: Context, o: Opts) -> None:
    """Show the daemon's version information (JSON)."""
    echo(dumps(cx.client.version()))
