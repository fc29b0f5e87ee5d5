"""The bridge driver: a Linux bridge per network, a veth pair per endpoint.

config   -o options -> BridgeConfig (pure)
naming   interface names, ownership aliases, MACs (pure)
hooks    the firewall seam (BridgeFirewall, NoFirewall)
driver   BridgeDriver, register()
"""

from __future__ import annotations

from drivers.bridge.config import BridgeConfig
from drivers.bridge.driver import BridgeDriver, register

__all__ = ["BridgeConfig", "BridgeDriver", "register"]
