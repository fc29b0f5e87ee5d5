"""Firewall for bridge networks and published ports, in the nftables table `inet cnm`.

    model     NetworkRules, PortMapping, FirewallState (validated inputs)
    render    render(state) -> nft script (pure); required_sysctls(state)
    manager   Firewall: current state + atomic apply with rollback

The kernel is reached only through cnm.osl.nft (and cnm.osl.sysctl), in the manager.
"""

from __future__ import annotations

from cnm.firewall.manager import Firewall
from cnm.firewall.model import FirewallState, NetworkRules, PortMapping
from cnm.firewall.render import TABLES, render, required_sysctls

__all__ = ["Firewall", "FirewallState", "NetworkRules", "PortMapping", "TABLES", "render", "required_sysctls"]
