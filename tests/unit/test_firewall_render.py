"""render(state) against golden nft scripts, plus the properties the design relies on:
networks and ports add elements, never rules; output is deterministic.

Regenerate the golden files after an intended change with
    CNM_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/unit/test_firewall_render.py
and review the diff. tests/integration/test_firewall.py applies every golden file
with the real nft, so they stay valid nftables.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from cnm.errors import Conflict, InvalidParameter
from cnm.firewall import FirewallState, NetworkRules, PortMapping, render, required_sysctls

GOLDEN = Path(__file__).parent / "golden"

A = NetworkRules("net-a", "br-a", subnets_v4=("172.18.0.0/16",))
B = NetworkRules("net-b", "br-b", subnets_v4=("172.19.0.0/16",))


def state(*nets: NetworkRules, **ports: tuple[PortMapping, ...]) -> FirewallState:
    return FirewallState({n.id: n for n in nets}, ports)


CASES: dict[str, FirewallState] = {
    "empty": state(),
    "one_network": state(A),
    "two_networks": state(A, B),
    "internal": state(NetworkRules("net-i", "br-i", subnets_v4=("10.10.0.0/24",), internal=True)),
    "icc_off": state(NetworkRules("net-n", "br-n", subnets_v4=("10.20.0.0/24",), icc=False)),
    "masquerade_off": state(NetworkRules("net-m", "br-m", subnets_v4=("10.30.0.0/24",), masquerade=False)),
    "published_ports": state(
        A,
        NetworkRules("net-h", "br-h", subnets_v4=("10.40.0.0/24",), host_binding_ipv4="192.0.2.10"),
        ep1=(
            PortMapping("tcp", None, 8080, "172.18.0.2", 80, "br-a"),
            PortMapping("udp", None, 5353, "172.18.0.2", 53, "br-a"),
        ),
        ep2=(
            PortMapping("tcp", "192.0.2.1", 8443, "172.18.0.3", 443, "br-a"),
            PortMapping("udp", "0.0.0.0", 6000, "172.18.0.3", 6000, "br-a"),
        ),
        ep3=(PortMapping("tcp", None, 9000, "10.40.0.2", 9000, "br-h"),),  # gets host_binding_ipv4
    ),
    "ipv6": state(
        NetworkRules("net-6", "br-6", subnets_v4=("172.21.0.0/16",), subnets_v6=("fd00:6::/64",), icc=False),
        ep6=(
            PortMapping("tcp", None, 8080, "fd00:6::2", 80, "br-6"),
            PortMapping("tcp", "::", 8081, "fd00:6::2", 81, "br-6"),
            PortMapping("udp", "2001:db8::1", 53, "fd00:6::3", 53, "br-6"),
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    got = render(CASES[name])
    path = GOLDEN / f"firewall_{name}.nft"
    if os.environ.get("CNM_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(got)
    assert path.exists(), f"missing {path}; run with CNM_UPDATE_GOLDEN=1 to create it"
    assert got == path.read_text()


def rules(script: str) -> list[str]:
    """The rule lines (inside chains), without set/map contents."""
    out, in_chain = [], False
    for line in script.splitlines():
        s = line.strip()
        if s.startswith("chain "):
            in_chain = True
        elif s == "}":
            in_chain = False
        elif in_chain:
            out.append(s)
    return out


def test_networks_and_ports_add_elements_not_rules():
    assert rules(render(CASES["empty"])) == rules(render(CASES["published_ports"])) == rules(render(CASES["ipv6"]))


def test_script_replaces_only_our_table_atomically():
    script = render(CASES["one_network"])
    head = [ln for ln in script.splitlines() if ln and not ln.startswith("#")][:3]
    assert head == ["table inet cnm", "delete table inet cnm", "table inet cnm {"]
    tables = set(re.findall(r"^(?:delete )?table (\S+ \S+)", script, re.M))
    assert tables == {"inet cnm"}
    assert "flush ruleset" not in script


def test_deterministic_whatever_the_insertion_order():
    p1 = PortMapping("tcp", None, 80, "172.18.0.2", 80, "br-a")
    p2 = PortMapping("udp", None, 81, "172.19.0.2", 81, "br-b")
    s1 = FirewallState({"net-a": A, "net-b": B}, {"e1": (p1,), "e2": (p2,)})
    s2 = FirewallState({"net-b": B, "net-a": A}, {"e2": (p2,), "e1": (p1,)})
    assert render(s1) == render(s2)


def test_internal_network_gets_no_masquerade_and_no_dnat():
    i = NetworkRules("net-i", "br-i", subnets_v4=("10.10.0.0/24",), internal=True)
    script = render(state(i, ep=(PortMapping("tcp", None, 8080, "10.10.0.2", 80, "br-i"),)))
    assert "10.10.0.2" not in script
    masq = script[script.index("set masq_v4") : script.index("set masq_v6")]
    assert "10.10.0.0/24" not in masq


def test_host_binding_ipv4_applies_to_unspecified_host_ip_only():
    script = render(CASES["published_ports"])
    assert "192.0.2.10 . tcp . 9000 : 10.40.0.2 . 9000" in script
    assert "tcp . 8080 : 172.18.0.2 . 80" in script
    assert "192.0.2.10 . tcp . 8080" not in script


def test_duplicate_host_port_is_a_conflict():
    p = PortMapping("tcp", None, 8080, "172.18.0.2", 80, "br-a")
    q = PortMapping("tcp", "0.0.0.0", 8080, "172.18.0.3", 81, "br-a")
    with pytest.raises(Conflict, match="8080/tcp"):
        render(state(A, e1=(p,), e2=(q,)))
    # same port, other protocol or other family: fine
    render(state(A, e1=(p,), e2=(PortMapping("udp", None, 8080, "172.18.0.3", 81, "br-a"),)))


def test_two_networks_on_one_bridge_is_a_conflict():
    with pytest.raises(Conflict, match="br-a"):
        render(state(A, NetworkRules("other", "br-a")))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"bridge": 'br"; flush ruleset; "'}, "bridge name"),
        ({"bridge": "a-very-long-bridge-name"}, "bridge name"),
        ({"subnets_v4": ("fd00::/64",)}, "not an IPv4"),
        ({"subnets_v4": ("300.0.0.0/8",)}, "invalid subnet"),
        ({"host_binding_ipv4": "::1"}, "not an IPv4"),
    ],
)
def test_network_rules_validation(kwargs, match):
    args = {"id": "n", "bridge": "br-x", **kwargs}
    with pytest.raises(InvalidParameter, match=match):
        NetworkRules(**args)


@pytest.mark.parametrize(
    "args, match",
    [
        (("sctp", None, 80, "10.0.0.2", 80, "br-a"), "protocol"),
        (("tcp", None, 0, "10.0.0.2", 80, "br-a"), "host port"),
        (("tcp", None, 80, "10.0.0.2", 65536, "br-a"), "container port"),
        (("tcp", "::1", 80, "10.0.0.2", 80, "br-a"), "different families"),
        (("tcp", None, 80, "10.0.0", 80, "br-a"), "container IP"),
    ],
)
def test_port_mapping_validation(args, match):
    with pytest.raises(InvalidParameter, match=match):
        PortMapping(*args)


def test_subnets_are_normalised():
    n = NetworkRules("n", "br-x", subnets_v4=("10.0.0.5/24", "10.0.0.0/24"))
    assert n.subnets_v4 == ("10.0.0.0/24",)


def test_records_round_trip():
    n = NetworkRules("n", "br-x", subnets_v4=("10.0.0.0/24",), icc=False, host_binding_ipv4="10.1.1.1")
    p = PortMapping("udp", "10.1.1.1", 53, "10.0.0.2", 53, "br-x")
    assert NetworkRules.from_record(n.to_record()) == n
    assert PortMapping.from_record(p.to_record()) == p


def test_required_sysctls():
    assert required_sysctls(CASES["empty"]) == {}
    assert required_sysctls(CASES["one_network"]) == {
        "net.ipv4.ip_forward": "1",
        "net/ipv4/conf/br-a/route_localnet": "1",
    }
    six = required_sysctls(CASES["ipv6"])
    assert six["net.ipv6.conf.all.forwarding"] == "1"
    assert six["net.bridge.bridge-nf-call-iptables"] == "1"
    assert six["net.bridge.bridge-nf-call-ip6tables"] == "1"
    internal = required_sysctls(CASES["internal"])
    assert not any("route_localnet" in k for k in internal)
