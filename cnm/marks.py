"""The marks that say a kernel object is ours: interface aliases (IFLA_IFALIAS) naming
the network or endpoint a link was made for. Drivers set them (drivers.bridge.naming,
drivers.overlay.naming use these prefixes); start-up reads them back to find what a
crash left (cnm.reconcile). Pure."""
from __future__ import annotations

BRIDGE = "cnm:bridge:"       # a bridge network's Linux bridge: + network id
OVERLAY = "cnm:overlay:"     # an overlay network's bridge and VXLAN device: + network id
ENDPOINT = "cnm:ep:"         # an endpoint's veth (the end the driver keeps): + endpoint id

KINDS = {BRIDGE: "network", OVERLAY: "network", ENDPOINT: "endpoint"}


def parse(alias: str | None) -> tuple[str, str] | None:
    """("network" | "endpoint", id) for an alias of ours; None for anything else."""
    if not alias:
        return None
    for prefix, kind in KINDS.items():
        if alias.startswith(prefix) and len(alias) > len(prefix):
            return kind, alias[len(prefix):]
    return None
