"""FirewallState -> nft script. Pure: no I/O, deterministic output (golden-file tested).

The rules are a fixed list; networks and published ports only add set and map
ELEMENTS. One table, `inet cnm`, holds everything (filter and NAT, IPv4 and IPv6),
so ownership is obvious and teardown is one `delete table`.

Behaviour (Docker's bridge driver, with the userland proxy replaced by DNAT in the
output hook):

forward (routed traffic; with br_netfilter also bridged traffic, iif == oif == bridge)
    established/related -> accept
    same bridge (iif == oif): DNATed (hairpin to a published port) -> accept;
        ICC off -> drop; otherwise accept. Internal networks still talk inside.
    from or to an internal bridge -> drop (no way out, nothing in)
input (to the host itself)
    from an internal bridge: only to addresses of its own subnet (and IPv6 ND)
    DNATed to one of our bridges (a published port) -> accept, whatever the source:
        the outside, the host, another network (Docker's default userland proxy also
        served those)
    anything else to one of our bridges -> drop: isolation between our networks
        both ways, and no direct access to unpublished container ports
nat
    prerouting/output: traffic to a local address (incl. 127.0.0.1 from the host)
        whose (addr, proto, port) or (proto, port) is published -> DNAT
    postrouting: hairpin (DNATed, from the subnet of the bridge it leaves by)
        -> masquerade, so the reply comes back through the host; 127.0.0.0/8 sources DNATed into a bridge
        -> masquerade; masqueraded subnets leaving through a non-bridge -> masquerade

Limits: [::1]:port from the host is not published (IPv6 has no route_localnet);
ports of internal networks are never rendered (they could not be reached anyway).
"""

from __future__ import annotations

from collections.abc import Iterable

from cnm.firewall.model import FirewallState, dnat_key, validate

TABLE_FAMILY = "inet"
TABLE_NAME = "cnm"
TABLES: tuple[tuple[str, str], ...] = ((TABLE_FAMILY, TABLE_NAME),)

_HEADER = "# Rendered by cnm.firewall from the daemon's state; the daemon replaces this table whole.\n"


def _q(name: str) -> str:
    return f'"{name}"'


def _set(name: str, typ: str, elements: Iterable[str], *, interval: bool = False, is_map: bool = False) -> str:
    lines = [f"\t{'map' if is_map else 'set'} {name} {{", f"\t\ttype {typ}"]
    if interval:
        lines.append("\t\tflags interval")
    elems = sorted(set(elements))
    if elems:
        lines.append("\t\telements = {")
        lines.extend(f"\t\t\t{e}," if i < len(elems) - 1 else f"\t\t\t{e}" for i, e in enumerate(elems))
        lines.append("\t\t}")
    lines.append("\t}")
    return "\n".join(lines)


def _chain(name: str, head: str | None, rules: Iterable[str]) -> str:
    lines = [f"\tchain {name} {{"]
    if head:
        lines.append(f"\t\t{head}")
    lines.extend(f"\t\t{r}" for r in rules)
    lines.append("\t}")
    return "\n".join(lines)


def _sets(state: FirewallState) -> list[str]:
    nets = list(state.networks.values())
    bridges = [n.bridge for n in nets]
    dnat: dict[str, list[str]] = {"dnat_v4_addr": [], "dnat_v4_any": [], "dnat_v6_addr": [], "dnat_v6_any": []}
    for mappings in state.ports.values():
        for pm in mappings:
            net = state.network_by_bridge(pm.bridge)
            # No network, nothing to forward to; internal networks cannot be reached.
            if net is None or net.internal:
                continue
            fam, host_ip, proto, port = dnat_key(pm, net)
            target = f"{pm.container_ip} . {pm.container_port}"
            if host_ip is None:
                dnat[f"dnat_v{fam}_any"].append(f"{proto} . {port} : {target}")
            else:
                dnat[f"dnat_v{fam}_addr"].append(f"{host_ip} . {proto} . {port} : {target}")
    masq = [n for n in nets if n.masquerade and not n.internal]
    return [
        _set("bridges", "ifname", (_q(b) for b in bridges)),
        _set("bridge_self", "ifname . ifname", (f"{_q(b)} . {_q(b)}" for b in bridges)),
        # Hairpin masquerade cannot use iifname: postrouting has no input device.
        _set(
            "subnet_bridge_v4",
            "ipv4_addr . ifname",
            (f"{s} . {_q(n.bridge)}" for n in nets for s in n.subnets_v4),
            interval=True,
        ),
        _set(
            "subnet_bridge_v6",
            "ipv6_addr . ifname",
            (f"{s} . {_q(n.bridge)}" for n in nets for s in n.subnets_v6),
            interval=True,
        ),
        _set("internal_bridges", "ifname", (_q(n.bridge) for n in nets if n.internal)),
        _set("noicc_bridges", "ifname", (_q(n.bridge) for n in nets if not n.icc)),
        _set("masq_v4", "ipv4_addr", (s for n in masq for s in n.subnets_v4), interval=True),
        _set("masq_v6", "ipv6_addr", (s for n in masq for s in n.subnets_v6), interval=True),
        _set(
            "dnat_v4_addr",
            "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service",
            dnat["dnat_v4_addr"],
            is_map=True,
        ),
        _set("dnat_v4_any", "inet_proto . inet_service : ipv4_addr . inet_service", dnat["dnat_v4_any"], is_map=True),
        _set(
            "dnat_v6_addr",
            "ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service",
            dnat["dnat_v6_addr"],
            is_map=True,
        ),
        _set("dnat_v6_any", "inet_proto . inet_service : ipv6_addr . inet_service", dnat["dnat_v6_any"], is_map=True),
    ]


_CHAINS = [
    _chain(
        "forward",
        "type filter hook forward priority filter; policy accept;",
        [
            "ct state established,related accept",
            "iifname . oifname @bridge_self jump same_bridge",
            'iifname @internal_bridges drop comment "internal: no way out"',
            'oifname @internal_bridges drop comment "internal: nothing in"',
            'ct status dnat oifname @bridges accept comment "published ports"',
            'oifname @bridges drop comment "isolation; unpublished ports"',
        ],
    ),
    _chain(
        "input",
        "type filter hook input priority filter; policy accept;",
        [
            # An internal network reaches the host only on its own subnet's addresses (the
            # gateway: DNS lives there); the host's other addresses are "outside".
            "iifname != @internal_bridges accept",
            "ct state established,related accept",
            "ip daddr . iifname @subnet_bridge_v4 accept",
            "ip6 daddr . iifname @subnet_bridge_v6 accept",
            'meta l4proto ipv6-icmp accept comment "neighbour discovery"',
            'drop comment "internal: no way out, not even to the host"',
        ],
    ),
    _chain(
        "same_bridge",
        None,
        [
            'ct status dnat accept comment "hairpin to a published port"',
            'iifname @noicc_bridges drop comment "icc off"',
            "accept",
        ],
    ),
    _chain(
        "published",
        None,
        [
            "meta nfproto ipv4 meta l4proto { tcp, udp } dnat ip to ip daddr . meta l4proto . th dport map @dnat_v4_addr",
            "meta nfproto ipv4 meta l4proto { tcp, udp } dnat ip to meta l4proto . th dport map @dnat_v4_any",
            "meta nfproto ipv6 meta l4proto { tcp, udp } dnat ip6 to ip6 daddr . meta l4proto . th dport map @dnat_v6_addr",
            "meta nfproto ipv6 meta l4proto { tcp, udp } dnat ip6 to meta l4proto . th dport map @dnat_v6_any",
        ],
    ),
    _chain(
        "prerouting",
        "type nat hook prerouting priority dstnat; policy accept;",
        [
            "fib daddr type local jump published",
        ],
    ),
    # `dstnat` is not a valid priority keyword for the output hook in nft 1.0.6.
    _chain(
        "output",
        "type nat hook output priority -100; policy accept;",
        [
            "fib daddr type local jump published",
        ],
    ),
    _chain(
        "postrouting",
        "type nat hook postrouting priority srcnat; policy accept;",
        [
            'ct status dnat ip saddr . oifname @subnet_bridge_v4 masquerade comment "hairpin"',
            'ct status dnat ip6 saddr . oifname @subnet_bridge_v6 masquerade comment "hairpin"',
            'ct status dnat oifname @bridges ip saddr 127.0.0.0/8 masquerade comment "host to 127.0.0.1:port"',
            "ip saddr @masq_v4 oifname != @bridges masquerade",
            "ip6 saddr @masq_v6 oifname != @bridges masquerade",
        ],
    ),
]


def render(state: FirewallState) -> str:
    """The whole `inet cnm` table as one nft transaction: create-if-missing, delete,
    define. Applying it twice gives the same ruleset; applying it after a
    `nft flush ruleset` restores it. Raises Conflict for inconsistent states."""
    validate(state)
    body = "\n\n".join([*_sets(state), *_CHAINS])
    fam, name = TABLE_FAMILY, TABLE_NAME
    return f"{_HEADER}table {fam} {name}\ndelete table {fam} {name}\ntable {fam} {name} {{\n{body}\n}}\n"


def required_sysctls(state: FirewallState) -> dict[str, str]:
    """Sysctls the rendered rules rely on, in the firewall's network namespace.
    Only ever switched on; never switched back off (other users may rely on them).

    - net.ipv4.ip_forward / net.ipv6.conf.all.forwarding: routing in and out of bridges
    - net/ipv4/conf/<bridge>/route_localnet: lets 127.0.0.1:port DNATed in the output
      hook leave through the bridge (else the kernel drops it as a martian)
    - net.bridge.bridge-nf-call-iptables / -ip6tables: bridged traffic traverses the
      inet forward hook, which is how ICC off is enforced (this kernel lacks
      nft bridge `meta ibrname`)
    Per-interface keys use '/' separators because bridge names may contain dots."""
    nets = sorted(state.networks.values(), key=lambda n: n.bridge)
    out: dict[str, str] = {}
    if nets:
        out["net.ipv4.ip_forward"] = "1"
    if any(n.subnets_v6 for n in nets):
        out["net.ipv6.conf.all.forwarding"] = "1"
    if any(not n.icc for n in nets):
        out["net.bridge.bridge-nf-call-iptables"] = "1"
        if any(not n.icc and n.subnets_v6 for n in nets):
            out["net.bridge.bridge-nf-call-ip6tables"] = "1"
    for n in nets:
        if not n.internal:
            out[f"net/ipv4/conf/{n.bridge}/route_localnet"] = "1"
    return out
