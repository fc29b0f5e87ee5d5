"""`net plugin …`: find, check and serve Docker network/IPAM plugins.

These commands talk to plugins directly (not through the daemon). Light on import:
the plugin modules (standard library) load when a command runs.
"""
from __future__ import annotations

from typing import Any

import click

DIR_HELP = ("Plugin folder to search (repeatable; default: /run/docker/plugins, "
            "/etc/docker/plugins, /usr/lib/docker/plugins).")


def _discovery(dirs: tuple[str, ...]):
    from cnm.plugins.discovery import Discovery
    return Discovery(list(dirs) or None)


def plugin_group(group_cls: type[click.Group]) -> click.Group:
    @click.group("plugin", cls=group_cls)
    def plugin() -> None:
        """Docker network and IPAM plugins: list, check, serve."""

    @plugin.command("ls")
    @click.option("--plugin-dir", "dirs", multiple=True, help=DIR_HELP)
    @click.option("--timeout", type=float, default=2.0, show_default=True,
                  help="Seconds to wait for each plugin's answer.")
    @click.option("-q", "--quiet", is_flag=True, help="Only names.")
    def ls(dirs: tuple[str, ...], timeout: float, quiet: bool) -> None:
        """List the plugins found, what each implements, whether it answers."""
        from cnm.errors import CNMError
        from cnm.plugins.client import PluginClient
        rows = [("NAME", "IMPLEMENTS", "STATUS", "ADDRESS")]
        for name, spec, error in _discovery(dirs).all():
            if quiet:
                click.echo(name)
                continue
            if spec is None:
                rows.append((name, "-", f"bad spec: {error}", "-"))
                continue
            try:
                impl = PluginClient(spec, timeout=timeout, activate_retry=0).activate()
                rows.append((name, ",".join(impl) or "-", "ok", spec.address))
            except CNMError as exc:
                rows.append((name, "-", f"not answering: {exc}", spec.address))
        if not quiet:
            widths = [max(len(r[i]) for r in rows) for i in range(3)]
            for r in rows:
                click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3])

    @plugin.command("check")
    @click.argument("name")
    @click.option("--plugin-dir", "dirs", multiple=True, help=DIR_HELP)
    @click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds per call.")
    @click.option("--subnet", default="192.0.2.0/24", show_default=True,
                  help="Throwaway IPv4 subnet used for the test network.")
    def check(name: str, dirs: tuple[str, ...], timeout: float, subnet: str) -> None:
        """Drive plugin NAME through the protocol; report every deviation (exit 1 if any)."""
        from cnm.plugins.check import check as run_check
        from cnm.plugins.client import PluginClient
        spec = _discovery(dirs).get(name)
        report = run_check(PluginClient(spec, timeout=timeout, activate_retry=0.5), subnet=subnet)
        click.echo(f"plugin {name} at {spec.address}: implements {', '.join(report.implements) or 'nothing'}")
        for line in report.lines():
            click.echo(line)
        errors = sum(1 for f in report.findings if f.severity == "error")
        warnings = len(report.findings) - errors
        click.echo(f"{'PASS' if report.ok else 'FAIL'}: {errors} error(s), {warnings} warning(s)")
        if not report.ok:
            raise click.exceptions.Exit(1)

    @plugin.command("serve")
    @click.option("--name", required=True, help="Plugin name (the socket is DIR/NAME.sock).")
    @click.option("--driver", type=click.Choice(["bridge", "overlay"]), default="bridge", show_default=True)
    @click.option("--ipam", "with_ipam", is_flag=True,
                  help="Also serve the default IPAM (IpamDriver); for overlay, shared by the cluster.")
    @click.option("--plugin-dir", default="/run/docker/plugins", show_default=True)
    @click.option("--root", default="/var/lib/cnm-plugin", show_default=True,
                  help="State folder: networks and endpoints made (restored at start), bridge IPAM.")
    @click.option("--run-dir", default=None, help="Overlay: folder of the overlay namespaces "
                  "[default: ROOT/run].")
    @click.option("--no-firewall", is_flag=True, help="Bridge: no nftables rules (no NAT, no isolation).")
    @click.option("--cluster-store", default=None, help="Overlay: etcd://HOST:PORT[,HOST:PORT...].")
    @click.option("--advertise", default=None, help="Overlay: this host's underlay (VTEP) address.")
    def serve(name: str, driver: str, with_ipam: bool, plugin_dir: str, root: str, run_dir: str | None,
              no_firewall: bool, cluster_store: str | None, advertise: str | None) -> None:
        """Serve this project's DRIVER (and default IPAM) to a Docker engine.

        \b
        bridge:  docker network create -d NAME [--ipam-driver NAME] --subnet ... NET
        overlay: the same on every host (same --subnet, or -o cnm.overlay.name=X) gives
                 one VXLAN network across the hosts; peers meet in etcd."""
        from cnm.plugins import sdk
        from cnm.plugins.serve import build
        served = build(driver, root=root, ipam=with_ipam, firewall=not no_firewall,
                       cluster_store=cluster_store, advertise=advertise, run_dir=run_dir)
        try:
            for problem in served.start():
                click.echo(f"warning: not restored: {problem}", err=True)
            sdk.serve(served.network, served.ipam, name=name, plugin_dir=plugin_dir,
                      ready=lambda path: click.echo(f"serving {driver}"
                                                    f"{' + default IPAM' if with_ipam else ''} on {path}"))
        finally:
            served.close()

    @plugin.command("forget-host")
    @click.argument("address")
    @click.option("--cluster-store", required=True, help="etcd://HOST:PORT[,HOST:PORT...].")
    def forget_host(address: str, cluster_store: str) -> None:
        """Take a host that is gone for good (its underlay ADDRESS) out of the served
        overlays and shared pools, freeing what only it held. Refused while it is alive."""
        from cnm.plugins.overlay_cluster import forget_host as forget
        from cnm.plugins.shared_ipam import SharedPoolIpam
        from cnm.store.etcd import EtcdStore
        from ipam.default import DefaultIpam
        store = EtcdStore.from_url(cluster_store)
        try:
            ipam = SharedPoolIpam(DefaultIpam({"LocalDefault": store, "GlobalDefault": store}), store, address)
            lines = forget(store, address, ipam)
        finally:
            store.close()
        for line in lines:
            click.echo(line)
        if not lines:
            click.echo(f"host {address} holds nothing in the served overlays or pools")

    return plugin


__all__: list[Any] = ["plugin_group"]
