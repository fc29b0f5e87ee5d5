"""`net plugin …`: find, check and serve Docker network/IPAM plugins.

These commands talk to plugins directly (not through the daemon). Declared with
cnm.cli.spec; the plugin modules load when a command runs.
"""

from __future__ import annotations

from cnm.cli.output import echo
from cnm.cli.spec import ANY, arg, command, flag, option
from cnm.cli.values import float_range

TYPE_CHECKING = False  # typing stays off the CLI's execution path; type checkers see True
if TYPE_CHECKING:
    from typing import Any

    from cnm.cli.spec import Context, Opts

DIR_HELP = (
    "Plugin folder to search (repeatable; default: /run/docker/plugins, /etc/docker/plugins, /usr/lib/docker/plugins)."
)
# The plugin client and checker speak HTTP with http.client and use dataclasses; serving
# runs whole drivers (pyroute2, etcd, …).
HEAVY = ("typing", "dataclasses", "inspect", "email", "http", "ssl", "urllib", "subprocess", "threading")
SERVE_HEAVY = ANY


def _discovery(dirs: list[str]) -> Any:
    from cnm.plugins.discovery import Discovery  # (CLI start-up: each net plugin command loads only what it uses)

    return Discovery(list(dirs) or None)


@command(
    "ls",
    option("--plugin-dir", dest="dirs", multiple=True, metavar="DIRECTORY", help=DIR_HELP),
    option("--timeout", value=float_range(0), default=2.0, help="Seconds to wait for each plugin's answer."),
    flag("-q", "--quiet", help="Only names."),
    heavy=HEAVY,
)
def ls(cx: Context, o: Opts) -> None:
    """List the plugins found, what each implements, whether it answers."""
    from cnm.errors import CNMError  # (CLI start-up: as above)
    from cnm.plugins.client import PluginClient  # (CLI start-up: as above)

    rows = [("NAME", "IMPLEMENTS", "STATUS", "ADDRESS")]
    for name, spec, error in _discovery(o.dirs).all():
        if o.quiet:
            echo(name)
            continue
        if spec is None:
            rows.append((name, "-", f"bad spec: {error}", "-"))
            continue
        try:
            impl = PluginClient(spec, timeout=o.timeout, activate_retry=0).activate()
            rows.append((name, ",".join(impl) or "-", "ok", spec.address))
        except CNMError as exc:
            rows.append((name, "-", f"not answering: {exc}", spec.address))
    if not o.quiet:
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[3])


@command(
    "check",
    arg("name"),
    option("--plugin-dir", dest="dirs", multiple=True, metavar="DIRECTORY", help=DIR_HELP),
    option("--timeout", value=float_range(0), default=10.0, help="Seconds per call."),
    option("--subnet", default="192.0.2.0/24", help="Throwaway IPv4 subnet used for the test network."),
    heavy=HEAVY,
)
def check(cx: Context, o: Opts) -> int:
    """Drive plugin NAME through the protocol; report every deviation (exit 1 if any)."""
    from cnm.plugins.check import check as run_check  # (CLI start-up: as above)
    from cnm.plugins.client import PluginClient  # (CLI start-up: as above)

    spec = _discovery(o.dirs).get(o.name)
    report = run_check(PluginClient(spec, timeout=o.timeout, activate_retry=0.5), subnet=o.subnet)
    echo(f"plugin {o.name} at {spec.address}: implements {', '.join(report.implements) or 'nothing'}")
    for line in report.lines():
        echo(line)
    errors = sum(1 for f in report.findings if f.severity == "error")
    warnings = len(report.findings) - errors
    echo(f"{'PASS' if report.ok else 'FAIL'}: {errors} error(s), {warnings} warning(s)")
    return 0 if report.ok else 1


@command(
    "serve",
    option("--name", required=True, help="Plugin name (the socket is DIR/NAME.sock)."),
    option("--driver", choices=("bridge", "overlay"), default="bridge", help="The driver to serve."),
    flag(
        "--ipam", dest="with_ipam", help="Also serve the default IPAM (IpamDriver); for overlay, shared by the cluster."
    ),
    option("--plugin-dir", default="/run/docker/plugins", metavar="DIRECTORY", help="Where the plugin's socket goes."),
    option(
        "--root",
        default="/var/lib/cnm-plugin",
        metavar="DIRECTORY",
        help="State folder: networks and endpoints made (restored at start), bridge IPAM.",
    ),
    option("--run-dir", metavar="DIRECTORY", help="Overlay: folder of the overlay namespaces [default: ROOT/run]."),
    flag("--no-firewall", help="Bridge: no nftables rules (no NAT, no isolation)."),
    option("--cluster-store", help="Overlay: etcd://HOST:PORT[,HOST:PORT...]."),
    option("--advertise", help="Overlay: this host's underlay (VTEP) address."),
    heavy=SERVE_HEAVY,
)
def serve(cx: Context, o: Opts) -> None:
    """Serve this project's DRIVER (and default IPAM) to a Docker engine.

    \b
    bridge:  docker network create -d NAME [--ipam-driver NAME] --subnet ... NET
    overlay: the same on every host (same --subnet, or -o cnm.overlay.name=X) gives
             one VXLAN network across the hosts; peers meet in etcd."""
    from cnm.plugin_roots import build  # (CLI start-up: as above)
    from cnm.plugins import sdk  # (CLI start-up: as above)

    served = build(
        o.driver,
        root=o.root,
        ipam=o.with_ipam,
        firewall=not o.no_firewall,
        cluster_store=o.cluster_store,
        advertise=o.advertise,
        run_dir=o.run_dir,
    )
    try:
        for problem in served.start():
            echo(f"warning: not restored: {problem}", err=True)
        sdk.serve(
            served.network,
            served.ipam,
            name=o.name,
            plugin_dir=o.plugin_dir,
            ready=lambda path: echo(f"serving {o.driver}{' + default IPAM' if o.with_ipam else ''} on {path}"),
        )
    finally:
        served.close()


@command(
    "forget-host",
    arg("address"),
    option("--cluster-store", required=True, help="etcd://HOST:PORT[,HOST:PORT...]."),
    heavy=SERVE_HEAVY,
)
def forget_host(cx: Context, o: Opts) -> None:
    """Take a host that is gone for good (its underlay ADDRESS) out of the served
    overlays and shared pools, freeing what only it held. Refused while it is alive."""
    from cnm.plugin_roots import forget_host as forget  # (CLI start-up: as above)

    lines = forget(o.cluster_store, o.address)
    for line in lines:
        echo(line)
    if not lines:
        echo(f"host {o.address} holds nothing in the served overlays or pools")
