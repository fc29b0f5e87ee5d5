"""Names the overlay driver gives its kernel objects. Pure.

Every name derives from the network's VNI and id or the endpoint's id, so after a
restart the driver finds its objects again without state of its own; aliases mark
them as ours (Docker's names: namespace "<vni>-<nid>", device "vx-<vni hex>-<nid5>").
"""

from __future__ import annotations

import os

from cnm import marks

NETNS_SUBDIR = "overlay"
ALIAS_NETWORK = marks.OVERLAY  # IFLA_IFALIAS of our bridge and VXLAN device: + network id
ALIAS_ENDPOINT = marks.ENDPOINT  # of the bridge end of an endpoint's veth: + endpoint id
BRIDGE_END_PREFIX = "ovb"  # veth end on the overlay bridge (inside the overlay namespace)
CONTAINER_END_PREFIX = "ovc"  # veth end the core moves into the sandbox


def netns_dir(run_dir: str) -> str:
    return os.path.join(run_dir, NETNS_SUBDIR)


def netns_name(vni: int, network_id: str) -> str:
    return f"{vni}-{network_id[:12]}"


def netns_path(run_dir: str, vni: int, network_id: str) -> str:
    """Where the network's namespace is bind-mounted: <run_dir>/overlay/<vni>-<nid12>."""
    return os.path.join(netns_dir(run_dir), netns_name(vni, network_id))


def network_of_netns(name: str) -> tuple[int, str] | None:
    """ "256-0123456789ab" -> (256, "0123456789ab"); None for names that are not ours."""
    vni, sep, nid = name.partition("-")
    if not sep or not vni.isdigit() or len(nid) != 12:
        return None
    return int(vni), nid


def bridge_name(vni: int, network_id: str) -> str:
    """ov-<VNI as 6 hex digits>-<nid5>: 15 characters, the IFNAMSIZ limit."""
    return f"ov-{vni:06x}-{network_id[:5]}"


def vxlan_name(vni: int, network_id: str) -> str:
    """vx-<VNI as 6 hex digits>-<nid5>. Unique in the HOST namespace too, where the
    device is created before it moves into the overlay namespace."""
    return f"vx-{vni:06x}-{network_id[:5]}"


def bridge_end(endpoint_id: str) -> str:
    return BRIDGE_END_PREFIX + endpoint_id[:7]


def container_end(endpoint_id: str) -> str:
    return CONTAINER_END_PREFIX + endpoint_id[:7]


def network_alias(network_id: str) -> str:
    return ALIAS_NETWORK + network_id


def endpoint_alias(endpoint_id: str) -> str:
    return ALIAS_ENDPOINT + endpoint_id
