"""Predefined pools, the --default-address-pool parser, host conflicts, the null IPAM."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnm.errors import InvalidParameter, NotFound
from ipam.default.host_conflicts import exclusions, nameservers_from_resolv_conf
from ipam.default.pools import (
    GLOBAL_DEFAULT_POOLS,
    LOCAL_DEFAULT_POOLS,
    choose_subnet,
    parse_default_address_pool,
    parse_network,
    pool_specs,
)
from ipam.null import NullIpam

net = ipaddress.ip_network


# -- parse_default_address_pool ---------------------------------------------------------


@pytest.mark.parametrize(
    "text, want",
    [
        ("base=172.80.0.0/16,size=24", ("172.80.0.0/16", 24)),
        (" size=20 , base=10.10.0.0/16 ", ("10.10.0.0/16", 20)),
        ("BASE=10.0.0.0/8,Size=8", ("10.0.0.0/8", 8)),
        ("base=fd00::/48,size=64", ("fd00::/48", 64)),
    ],
)
def test_parse_default_address_pool_accepts(text: str, want: tuple[str, int]) -> None:
    assert parse_default_address_pool(text) == want


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("base=172.80.0.0/16", "missing size"),
        ("size=24", "missing base"),
        ("", "missing base and size"),
        ("base=172.80.0.0/16,size=24,foo=1", "unknown field 'foo'"),
        ("base=172.80.0.0/16,size", "must be key=value"),
        ("base=172.80.0.0/16,size=abc", "is not a number"),
        ("base=172.80.0.0/16,size=8", "size 8 must be between"),
        ("base=172.80.0.0/16,size=33", "size 33 must be between"),
        ("base=172.80.0.1/16,size=24", "did you mean 172.80.0.0/16"),
        ("base=nonsense,size=24", "expected a CIDR"),
        ("base=10.0.0.0/8,base=11.0.0.0/8,size=24", "base given twice"),
    ],
)
def test_parse_default_address_pool_refuses(text: str, fragment: str) -> None:
    with pytest.raises(InvalidParameter) as exc:
        parse_default_address_pool(text)
    assert fragment in str(exc.value)


@given(st.integers(0, 2**32 - 1), st.integers(0, 32), st.integers(0, 32))
def test_parse_roundtrips_any_valid_pool(addr: int, plen: int, extra: int) -> None:
    base = ipaddress.IPv4Network((addr, plen), strict=False)
    size = min(32, plen + extra)
    assert parse_default_address_pool(f"base={base},size={size}") == (str(base), size)


def test_parse_network_host_bits_message() -> None:
    with pytest.raises(
        InvalidParameter,
        match=r"invalid subnet 10.1.1.1/24: host bits set; "
        r"did you mean 10.1.1.0/24\?",
    ):
        parse_network("10.1.1.1/24")


# -- defaults and choice ----------------------------------------------------------------


def test_docker_default_pools() -> None:
    local = pool_specs(LOCAL_DEFAULT_POOLS)
    assert sum(s.count() for s in local) == 31
    subnets = [str(n) for s in local for n in s.subnets()]
    assert subnets[0] == "172.17.0.0/16" and subnets[14] == "172.31.0.0/16"
    assert subnets[15] == "192.168.0.0/20" and subnets[-1] == "192.168.240.0/20"
    (glob,) = pool_specs(GLOBAL_DEFAULT_POOLS)
    assert glob.count() == 65536 and next(glob.subnets()) == net("10.0.0.0/24")


def test_choose_skips_blocked_ranges() -> None:
    specs = pool_specs(LOCAL_DEFAULT_POOLS)
    assert choose_subnet(specs, []) == net("172.17.0.0/16")
    # a route inside 172.17 and a nameserver in 172.18 push the choice to 172.19
    assert choose_subnet(specs, [net("172.17.5.0/24"), net("172.18.0.53/32")]) == net("172.19.0.0/16")
    # one big route covering all the 172.16/12 /16s: next is 192.168.0.0/20
    assert choose_subnet(specs, [net("172.16.0.0/12")]) == net("192.168.0.0/20")
    everything = [net("172.16.0.0/12"), net("192.168.0.0/16")]
    assert choose_subnet(specs, everything) is None
    assert choose_subnet(specs, [], version=6) is None


def test_choose_in_global_pools_jumps_over_many_taken() -> None:
    specs = pool_specs(GLOBAL_DEFAULT_POOLS)
    taken = [ipaddress.IPv4Network((0x0A000000 + i * 256, 24)) for i in range(5000)]
    assert choose_subnet(specs, taken) == net("10.19.136.0/24")  # 5000 = 19*256 + 136
    assert choose_subnet(specs, taken[:10] + taken[11:]) == net("10.0.10.0/24")  # a hole


@given(st.lists(st.tuples(st.integers(0, 255), st.integers(20, 32)), max_size=30))
def test_choose_matches_brute_force(blocks: list[tuple[int, int]]) -> None:
    specs = pool_specs(["base=192.168.0.0/16,size=20"])
    blocked = [ipaddress.IPv4Network((0xC0A80000 + (b << 8), p), strict=False) for b, p in blocks]
    want = next((c for c in specs[0].subnets() if not any(c.overlaps(b) for b in blocked)), None)
    assert choose_subnet(specs, blocked) == want


def test_ipv6_default_pools_are_usable_when_configured() -> None:
    specs = pool_specs(["base=fd00::/48,size=64"])
    assert choose_subnet(specs, [net("fd00::/64")], version=6) == net("fd00:0:0:1::/64")


# -- host conflicts ---------------------------------------------------------------------


def test_nameservers_from_resolv_conf() -> None:
    text = """# generated
search example.com
nameserver 10.0.0.2
nameserver 10.0.0.2
nameserver fe80::1%eth0   # link-local with zone
nameserver   2001:db8::53
nameserver not-an-ip
;nameserver 9.9.9.9
options ndots:2
"""
    assert nameservers_from_resolv_conf(text) == ["10.0.0.2/32", "fe80::1/128", "2001:db8::53/128"]


def test_exclusions_skip_default_route_and_junk() -> None:
    got = exclusions(["0.0.0.0/0", "172.18.0.0/16", "10.8.0.1/24", "::/0", "bogus"], ["192.168.1.1/32"])
    assert got == ["172.18.0.0/16", "10.8.0.0/24", "192.168.1.1/32"]


# -- null IPAM --------------------------------------------------------------------------


def test_null_ipam() -> None:
    ipam = NullIpam()
    assert ipam.name == "null"
    p4 = ipam.request_pool("null", None, None, {}, False)
    p6 = ipam.request_pool("null", None, None, {}, True)
    assert (p4.subnet, p6.subnet) == ("0.0.0.0/0", "::/0")
    assert ipam.request_pool("null", None, None, {}, False).pool_id == p4.pool_id  # fixed id
    with pytest.raises(InvalidParameter, match="hands out no addresses"):
        ipam.request_address(p4.pool_id, None, {})
    with pytest.raises(NotFound):
        ipam.request_address("LocalDefault/10.0.0.0/8", None, {})
    with pytest.raises(InvalidParameter, match="does not handle specific subnets"):
        ipam.request_pool("null", "10.0.0.0/8", None, {}, False)
    with pytest.raises(InvalidParameter, match="unknown address space"):
        ipam.request_pool("elsewhere", None, None, {}, False)
    ipam.release_address(p4.pool_id, "10.0.0.1")
    ipam.release_pool(p4.pool_id)
    ipam.release_pool(p4.pool_id)  # idempotent
