"""Composition roots of `net plugin serve` and `net plugin forget-host`: the real
drivers and default IPAM put together behind cnm.plugins' protocol adapters. With
cnm.daemon, the only module of cnm that imports drivers/ and ipam/ (the CLI imports it
only for these two commands)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cnm.errors import CNMError, InvalidParameter
from cnm.firewall import Firewall
from cnm.osl.netlink import Netlink
from cnm.osl.vxlan import VxlanNetlink
from cnm.plugins.overlay_cluster import forget_host as forget_in_store
from cnm.plugins.sdk import IpamPlugin
from cnm.plugins.serve import DriverPlugin, IpamAdapter
from cnm.plugins.serve_overlay import ClusterOverlayPlugin
from cnm.plugins.served_state import ServedState
from cnm.plugins.shared_ipam import SharedPoolIpam
from cnm.statedirs import DAEMON_UMASK, ROOT_MODE, private_dir
from cnm.store.etcd import EtcdStore
from cnm.store.sqlite import SQLiteStore
from drivers.bridge import BridgeDriver
from drivers.bridge.nftables import NftablesBridgeFirewall
from drivers.overlay.driver import OverlayDriver
from drivers.overlay.filter import NftVxlanFilter
from ipam.default import DefaultIpam

log = logging.getLogger("cnm.plugins.serve")


@dataclass
class Served:
    network: DriverPlugin | None
    ipam: IpamPlugin | None
    closers: list[Callable[[], None]] = field(default_factory=list)
    shared_ipam: Any = None  # the cluster's SharedPoolIpam (overlay --ipam): reconciled at start

    def start(self) -> list[str]:
        """Join the cluster (overlay), then rebuild what the engine made before a
        restart. Returns what could not be restored."""
        # Restore first: a resync at start must already know which peers are ours,
        # or it would withdraw them from the cluster as stale.
        problems = self.network.restore() if self.network is not None else []
        start = getattr(self.network, "start", None)
        if start is not None:
            problems += start()
        if self.shared_ipam is not None and self.network is not None and self.network.state is not None:
            try:
                for pid in self.shared_ipam.release_unused(self.network.state.pools_in_use()):
                    log.info("released pool %s: no network here uses it", pid)
            except CNMError as exc:
                problems.append(f"shared pools not reconciled (cluster store: {exc})")
        return problems

    def close(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception:
                pass


def build(
    driver: str,
    *,
    root: str,
    ipam: bool = False,
    firewall: bool = True,
    cluster_store: str | None = None,
    advertise: str | None = None,
    run_dir: str | None = None,
) -> Served:
    """The real driver in the current network namespace, its record of networks and
    endpoints in <root>/plugin-state.db, and (with `ipam`) the default IPAM: in
    <root>/plugin-ipam.db for bridge, in the cluster store (pools shared by subnet
    across hosts) for overlay."""
    if driver not in ("bridge", "overlay"):
        raise InvalidParameter(f"unknown driver {driver!r}: serve bridge or overlay")
    if driver == "overlay" and (not cluster_store or not advertise):
        raise InvalidParameter(
            "serving the overlay driver needs --cluster-store etcd://HOST:PORT "
            "and --advertise ADDR (this host's underlay address)"
        )
    # `net plugin serve` is a root daemon too: private files, and a --root (and
    # --run-dir) no other user can change (Forbidden, one line, otherwise).
    os.umask(DAEMON_UMASK)
    private_dir(root, ROOT_MODE, "--root")
    if driver == "overlay":
        run_dir = private_dir(run_dir or os.path.join(root, "run"), ROOT_MODE, "--run-dir")
    served = Served(None, None)
    try:
        state_db = SQLiteStore(os.path.join(root, "plugin-state.db"))
        served.closers.append(state_db.close)
        state = ServedState(state_db)
        if driver == "overlay":
            _overlay(served, state, cluster_store or "", advertise or "", ipam, run_dir or os.path.join(root, "run"))
        else:
            _bridge(served, state, root, ipam, firewall)
    except BaseException:
        served.close()
        raise
    return served


def _bridge(served: Served, state: ServedState, root: str, ipam: bool, firewall: bool) -> None:
    nl = Netlink()
    served.closers.append(nl.close)
    fw = None
    if firewall:
        fw = NftablesBridgeFirewall(Firewall())
    served.network = DriverPlugin(BridgeDriver(lambda: nl, firewall=fw, peer_in_sandbox=False), state)
    if fw is not None:
        # Its table rendered from what was restored, even when nothing was (a crash
        # after the last network went would leave the old table otherwise).
        served.network.after_restore.append(fw.firewall.reapply)
    if ipam:
        store = SQLiteStore(os.path.join(root, "plugin-ipam.db"))
        served.closers.append(store.close)
        served.ipam = IpamAdapter(DefaultIpam({"LocalDefault": store, "GlobalDefault": store}))


def _overlay(served: Served, state: ServedState, cluster_store: str, advertise: str, ipam: bool, run_dir: str) -> None:
    store = EtcdStore.from_url(cluster_store)
    served.closers.append(store.close)
    driver = OverlayDriver(
        VxlanNetlink, run_dir=run_dir, advertise_addr=advertise, underlay_mtu=None, firewall=NftVxlanFilter()
    )
    served.closers.append(driver.close)
    plugin = ClusterOverlayPlugin(driver, store, advertise, state)
    served.closers.append(plugin.close)
    served.network = plugin
    if ipam:
        inner = DefaultIpam({"LocalDefault": store, "GlobalDefault": store})
        served.shared_ipam = SharedPoolIpam(inner, store, advertise)
        served.ipam = IpamAdapter(served.shared_ipam)


def forget_host(cluster_store: str, address: str) -> list[str]:
    """`net plugin forget-host`: take a host that is gone for good out of the served
    overlays and shared pools; one line per thing freed."""
    store = EtcdStore.from_url(cluster_store)
    try:
        ipam = SharedPoolIpam(DefaultIpam({"LocalDefault": store, "GlobalDefault": store}), store, address)
        return forget_in_store(store, address, ipam)
    finally:
        store.close()
