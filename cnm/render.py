"""Docker-shaped JSON for API answers (`GET /networks/{id}` and friends). Pure."""

from __future__ import annotations

from cnm.model import Network, PoolConfig


def pool_json(pool: PoolConfig) -> dict:
    """One `IPAM.Config` entry; empty keys are omitted, as Docker does."""
    out: dict = {"Subnet": str(pool.subnet)}
    if pool.ip_range:
        out["IPRange"] = str(pool.ip_range)
    if pool.gateway:
        out["Gateway"] = str(pool.gateway)
    if pool.aux_addresses:
        out["AuxiliaryAddresses"] = {k: str(v) for k, v in pool.aux_addresses.items()}
    return out


def network_json(net: Network, containers: dict[str, dict] | None = None) -> dict:
    """The network as Docker's `network inspect` shows it. `containers` is the endpoint
    data keyed by container id ({"Name", "EndpointID", "MacAddress", "IPv4Address",
    "IPv6Address"}); lists pass none and get `{}` like Docker's."""
    return {
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": net.scope,
        "Driver": net.driver,
        "EnableIPv6": net.enable_ipv6,
        "IPAM": {
            "Driver": net.ipam_driver,
            "Options": dict(net.ipam_options),
            "Config": [pool_json(p) for p in net.pools],
        },
        "Internal": net.internal,
        "Attachable": net.attachable,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": {cid: dict(ep) for cid, ep in (containers or {}).items()},
        "Options": dict(net.options),
        "Labels": dict(net.labels),
    }
