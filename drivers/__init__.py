"""Built-in network drivers. The core never imports these; the composition root
(daemon start-up) calls `register_builtin` once."""

from __future__ import annotations

from collections.abc import Callable

from cnm.driverapi import DriverRegistry
from drivers import bridge, host, null
from drivers.bridge.hooks import BridgeFirewall
from drivers.bridge.kernel import HostNetlink


def register_builtin(
    registry: DriverRegistry,
    *,
    netlink_factory: Callable[[], HostNetlink] | None = None,
    firewall: BridgeFirewall | None = None,
) -> None:
    """Register null, host and bridge in `registry` (a cnm.driverapi.DriverRegistry).

    netlink_factory: builds the OS-layer handle the bridge driver uses for the
    daemon's namespace (default: cnm.osl.netlink.Netlink(), i.e. the namespace of the
    thread that first needs it). firewall: a drivers.bridge.hooks.BridgeFirewall
    (default: none, nothing NATed)."""
    null.register(registry)
    host.register(registry)
    bridge.register(registry, netlink_factory=netlink_factory, firewall=firewall)
