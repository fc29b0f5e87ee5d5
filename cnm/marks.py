"""The marks that say a kernel object is ours: interface aliases (IFLA_IFALIAS) naming
the network or endpoint a link was made for. Drivers set them (drivers.bridge.naming,
drivers.overlay.naming use these prefixes); start-up reads them back to find what a
crash left (cnm.reconcile). Pure."""

from __future__ import annotations

import hashlib

BRIDGE = "cnm:bridge:"  # a bridge network's Linux bridge: + network id
OVERLAY = "cnm:overlay:"  # an overlay network's bridge and VXLAN device: + network id
ENDPOINT = "cnm:ep:"  # an endpoint's veth (the end the driver keeps): + endpoint id

KINDS = {BRIDGE: "network", OVERLAY: "network", ENDPOINT: "endpoint"}
PROVISIONAL = "cnm"  # + 12 hex digits: a marked link while it is being made


def provisional_name(alias: str) -> str:
    """The name a link that will carry `alias` has while it is made. The kernel takes
    no alias when it creates a link, so a link is created under this name, then named
    and marked in one request (cnm.osl.netlink): a crash in between leaves a link whose
    name alone says which mark, and so which owner, it was made for."""
    return PROVISIONAL + hashlib.sha256(alias.encode()).hexdigest()[:12]


def parse(alias: str | None) -> tuple[str, str] | None:
    """("network" | "endpoint", id) for an alias of ours; None for anything else."""
    if not alias:
        return None
    for prefix, kind in KINDS.items():
        if alias.startswith(prefix) and len(alias) > len(prefix):
            return kind, alias[len(prefix) :]
    return None
