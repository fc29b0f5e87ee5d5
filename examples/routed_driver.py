"""A routed /32 network driver, written with the cnm plugin SDK.

Each endpoint is a veth pair. The host end carries 169.254.1.1/32 (the same link-local
address on every host end) and proxy ARP; the host routes the container's address
to it. The container gets a link-scope route to 169.254.1.1 and its default route via
it, so all its traffic is routed by the host: no bridge, no L2 between containers.

    python examples/routed_driver.py [--name routed] [--plugin-dir /run/docker/plugins]
    net create -d routed --subnet 10.10.0.0/24 r1        # or docker network create -d routed
"""

from __future__ import annotations

import argparse

from cnm.osl.netlink import Netlink
from cnm.plugins.sdk import JoinResult, NetworkPlugin, StaticRoute, serve

GATEWAY = "169.254.1.1"


class RoutedDriver(NetworkPlugin):
    def __init__(self) -> None:
        self.nl = Netlink()  # the plugin's own network namespace
        self.nl.sysctl_write("net.ipv4.ip_forward", 1)

    @staticmethod
    def names(endpoint_id: str) -> tuple[str, str]:
        return f"rt{endpoint_id[:10]}", f"rtc{endpoint_id[:10]}"

    def create_endpoint(self, network_id, endpoint_id, iface, options):
        host, peer = self.names(endpoint_id)
        self.nl.create_veth(host, peer)
        try:
            self.nl.sysctl_write(f"net.ipv4.conf.{host}.proxy_arp", 1)
            self.nl.add_address(host, f"{GATEWAY}/32")
            self.nl.set_link_up(host)
            if iface.address:
                self.nl.add_route(iface.address.split("/")[0] + "/32", dev=host)
        except BaseException:
            self.nl.delete_link(host)  # leave nothing behind
            raise
        return None  # we fill no interface field

    def delete_endpoint(self, network_id, endpoint_id):
        self.nl.delete_link(self.names(endpoint_id)[0])  # routes and peer go with it

    def join(self, network_id, endpoint_id, sandbox_key, options):
        return JoinResult(
            src_ifname=self.names(endpoint_id)[1],
            gateway=GATEWAY,
            static_routes=(StaticRoute(f"{GATEWAY}/32", route_type=1),),
        )


if __name__ == "__main__":
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--name", default="routed")
    args.add_argument("--plugin-dir", default="/run/docker/plugins")
    opts = args.parse_args()
    serve(
        RoutedDriver(),
        name=opts.name,
        plugin_dir=opts.plugin_dir,
        ready=lambda path: print(f"serving on {path}", flush=True),
    )
