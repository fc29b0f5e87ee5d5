"""A test plugin: the example routed driver, but its Join gives no gateway and no
default route (only the link route to the host end). Docker's rule, and ours: such a
container also gets an endpoint on the gateway bridge, for its way out.

    python tests/integration/nogw_plugin.py NAME PLUGIN_DIR"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from routed_driver import GATEWAY, JoinResult, RoutedDriver, StaticRoute, serve


class NoGatewayDriver(RoutedDriver):
    def join(self, network_id, endpoint_id, sandbox_key, options):
        return JoinResult(
            src_ifname=self.names(endpoint_id)[1], static_routes=(StaticRoute(f"{GATEWAY}/32", route_type=1),)
        )


if __name__ == "__main__":
    serve(NoGatewayDriver(), name=sys.argv[1], plugin_dir=sys.argv[2])
