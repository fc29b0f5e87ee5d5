"""The remote driver: any out-of-process NetworkDriver speaking Docker's plugin protocol.

    driver   RemoteDriver (cnm.driverapi.Driver over a PluginClient), resolver()

The core never imports this package: the composition root plugs `resolver(discovery)`
into `DriverRegistry(fallback=...)`, so `net create -d NAME` finds plugins lazily.
"""

from __future__ import annotations

from drivers.remote.driver import RemoteDriver, needs_gateway_bridge, resolver

__all__ = ["RemoteDriver", "needs_gateway_bridge", "resolver"]
