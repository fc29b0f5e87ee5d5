"""The VXLAN source filter (the CVE-2023-28840 family of advisories): in the underlay
namespace, accept UDP to the VXLAN port only from known VTEPs and drop the rest, so
nobody outside the cluster can inject frames into an overlay network.

Kernel facts: the VXLAN socket binds the wildcard address (0.0.0.0:4789) whatever
`local` says, and a VXLAN device with learning off still delivers a frame from any
source, so without this filter any host that can reach the port reaches the bridge.
Decapsulation happens after the input hook (after IP reassembly), so one input chain
sees every VXLAN packet.

`render` is pure and golden-file tested; `NftVxlanFilter` applies it as one nft
transaction in our own table, `inet cnm-overlay` (never the bridge firewall's
`inet cnm`, never anybody else's). Our accept does not override another table's
drop: nftables runs every base chain, and any drop is final.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from cnm.osl import nft

TABLE_FAMILY = "inet"
TABLE_NAME = "cnm-overlay"
TABLES: tuple[tuple[str, str], ...] = ((TABLE_FAMILY, TABLE_NAME),)

_HEADER = "# Rendered by drivers.overlay from the known VTEPs; the daemon replaces this table whole.\n"


@dataclass(frozen=True)
class FilterState:
    port: int = 4789
    vteps: frozenset[str] = field(default_factory=frozenset)  # IPv4 addresses


def render(state: FilterState) -> str:
    """FilterState -> nft script replacing our table atomically. Pure, deterministic.
    IPv6 VXLAN is dropped outright: VTEPs here are IPv4."""
    lines = [
        _HEADER.rstrip("\n"),
        f"table {TABLE_FAMILY} {TABLE_NAME}",
        f"delete table {TABLE_FAMILY} {TABLE_NAME}",
        f"table {TABLE_FAMILY} {TABLE_NAME} {{",
        "\tset vteps {",
        "\t\ttype ipv4_addr",
    ]
    vteps = sorted(state.vteps, key=lambda a: tuple(int(x) for x in a.split(".")))
    if vteps:
        lines.append("\t\telements = {")
        lines.extend(f"\t\t\t{v}," if i < len(vteps) - 1 else f"\t\t\t{v}" for i, v in enumerate(vteps))
        lines.append("\t\t}")
    lines += [
        "\t}",
        "",
        "\tchain vxlan_input {",
        # Before the usual filter chains: a packet we drop costs them nothing.
        "\t\ttype filter hook input priority filter - 10; policy accept;",
        f"\t\tudp dport {state.port} ip saddr @vteps counter accept",
        f"\t\tudp dport {state.port} counter drop",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


class VxlanFilter(Protocol):
    def apply(self, state: FilterState) -> None:
        """Install or replace the filter, atomically. Idempotent."""

    def clear(self) -> None:
        """Remove it (no overlay network left on this host). Idempotent."""


class NftVxlanFilter:
    """The filter in nftables, in the calling process's namespace or `netns` (a path or
    an `ip netns` name: for tests and labs)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

    def apply(self, state: FilterState) -> None:
        nft.apply(render(state), self.netns)

    def clear(self) -> None:
        nft.delete_tables(TABLES, self.netns)


class NoVxlanFilter:
    """No filter: for tests that do not look at it. Leaves VXLAN open to any source."""

    def apply(self, state: FilterState) -> None:
        pass

    def clear(self) -> None:
        pass
