"""The overlay driver: multi-host networks over VXLAN (Docker's overlay, classic KV mode).

config   -o options and the core's VNI -> OverlayConfig; MTU (pure)
naming   namespace paths, interface names, ownership aliases (pure)
peers    the peer table: which neighbour/FDB entries each network needs (pure)
filter   the VXLAN source filter: render (pure) and nftables apply
kernel   its kernel seams (OverlayNetlink, Namespaces) and what it built (LocalNetwork)
driver   OverlayDriver, register()
"""

from __future__ import annotations

from drivers.overlay.config import OverlayConfig
from drivers.overlay.driver import OverlayDriver, register

__all__ = ["OverlayConfig", "OverlayDriver", "register"]
