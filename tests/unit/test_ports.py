"""Port spec parsing and the host-port allocator (bookkeeping with a fake probe;
one real bind probe on a loopback high port, which changes nothing outside the test)."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnm.errors import Conflict, InvalidParameter, Unavailable
from cnm.ports import PortAllocator, PortBinding, parse_port_spec, parse_port_specs, port_in_use, proto_name


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("80", [PortBinding("tcp", 80)]),
        ("80/udp", [PortBinding("udp", 80)]),
        ("8080:80", [PortBinding("tcp", 80, None, 8080)]),
        ("0.0.0.0:8080:80/UDP", [PortBinding("udp", 80, None, 8080)]),
        ("127.0.0.1:8080:80", [PortBinding("tcp", 80, "127.0.0.1", 8080)]),
        ("127.0.0.1::80", [PortBinding("tcp", 80, "127.0.0.1", None)]),
        ("[::1]:8080:80", [PortBinding("tcp", 80, "::1", 8080)]),
        ("[::1]::80/udp", [PortBinding("udp", 80, "::1", None)]),
        ("[2001:db8:0::1]:53:53", [PortBinding("tcp", 53, "2001:db8::1", 53)]),
        ("8000-8001:80-81", [PortBinding("tcp", 80, None, 8000), PortBinding("tcp", 81, None, 8001)]),
        ("80-81", [PortBinding("tcp", 80), PortBinding("tcp", 81)]),
        ("8000-8010:80", [PortBinding("tcp", 80, None, 8000, 8010)]),
    ],
)
def test_parse(spec, expected):
    assert parse_port_spec(spec) == expected


@pytest.mark.parametrize(
    "spec, match",
    [
        ("", "empty"),
        ("0", "container port 0 is out of range"),
        ("65536", "out of range"),
        ("0:80", "host port 0 is out of range"),
        ("8080:65536", "out of range"),
        ("80/sctp", "protocol 'sctp'"),
        ("80/", "protocol"),
        ("http", "not a number"),
        ("1.2.3:80:80", "host IP '1.2.3'"),
        ("::1:80:80", "brackets"),
        ("[1.2.3.4]:80:80", "brackets are only for IPv6"),
        ("[::1:80:80", "IP"),
        ("8000-8002:80-81", "differ in length"),
        ("81-80", "ends before it starts"),
        ("a:b:c", "host IP 'a'"),
    ],
)
def test_parse_errors(spec, match):
    with pytest.raises(InvalidParameter, match=match):
        parse_port_spec(spec)


def test_parse_many_and_str_round_trip():
    specs = ["80", "127.0.0.1:8080:80/udp", "[::1]::443", "8000-8010:80"]
    bindings = parse_port_specs(specs)
    assert [parse_port_spec(str(b)) for b in bindings] == [[b] for b in bindings]
    assert PortBinding.from_record(bindings[1].to_record()) == bindings[1]


@given(host=st.integers(1, 65535), cont=st.integers(1, 65535), proto=st.sampled_from(["tcp", "udp"]))
def test_parse_property(host, cont, proto):
    assert parse_port_spec(f"{host}:{cont}/{proto}") == [PortBinding(proto, cont, None, host)]


# -- allocator ----------------------------------------------------------------------


class Bound:
    """Fake probe: the (proto, ip, port) a "process" holds."""

    def __init__(self, *held: tuple[str, str, int]) -> None:
        self.held = set(held)

    def __call__(self, proto: str, ip: str, port: int) -> bool:
        return (proto, ip, port) in self.held


def alloc(*held, rng=(40000, 40009)) -> PortAllocator:
    return PortAllocator(lambda: rng, in_use=Bound(*held))


def test_explicit_port_and_conflicts():
    a = alloc()
    assert a.allocate("tcp", None, 8080, owner="ep1") == 8080
    with pytest.raises(Conflict, match="host port 8080/tcp is already allocated"):
        a.allocate("tcp", None, 8080)
    with pytest.raises(Conflict, match="already allocated"):
        a.allocate("tcp", "10.0.0.1", 8080)  # wildcard holds every address
    assert a.allocate("udp", None, 8080) == 8080  # other protocol
    assert a.allocate("tcp", "::", 8080) == 8080  # other family
    assert a.allocations() == [("tcp", "0.0.0.0", 8080, "ep1"), ("tcp", "::", 8080, ""), ("udp", "0.0.0.0", 8080, "")]


def test_specific_ip_blocks_wildcard_but_not_other_ips():
    a = alloc()
    a.allocate("tcp", "10.0.0.1", 9000)
    assert a.allocate("tcp", "10.0.0.2", 9000) == 9000
    with pytest.raises(Conflict, match="already allocated"):
        a.allocate("tcp", "0.0.0.0", 9000)
    a.release("tcp", "10.0.0.1", 9000)
    a.release("tcp", "10.0.0.2", 9000)
    a.release("tcp", "10.0.0.2", 9000)  # idempotent
    assert a.allocate("tcp", None, 9000) == 9000


def test_port_bound_by_a_process():
    a = alloc(("tcp", "0.0.0.0", 8080))
    with pytest.raises(Conflict, match="host port 8080/tcp is in use by another process"):
        a.allocate("tcp", None, 8080)
    assert a.allocations() == []


def test_ephemeral_round_robin_skips_used_ports():
    a = alloc(("tcp", "0.0.0.0", 40001), rng=(40000, 40003))
    a.allocate("tcp", None, 40002)
    assert a.allocate("tcp") == 40000
    assert a.allocate("tcp") == 40003  # 40001 bound, 40002 ours
    a.release("tcp", None, 40000)
    assert a.allocate("tcp") == 40000  # wrapped around
    with pytest.raises(Unavailable, match="40000-40003"):
        a.allocate("tcp")


def test_host_port_range_picks_first_free():
    a = alloc(("tcp", "0.0.0.0", 8000))
    a.allocate("tcp", None, 8001)
    assert a.allocate("tcp", None, 8000, 8003) == 8002
    a.allocate("tcp", None, 8003)
    with pytest.raises(Conflict, match="no free host port in 8000-8003/tcp"):
        a.allocate("tcp", None, 8000, 8003)


def test_restore_and_release_owner():
    a = alloc(("tcp", "0.0.0.0", 8080))  # our own DNAT "holds" it: no probe on restore
    a.restore(
        [PortBinding("tcp", 80, None, 8080), PortBinding("udp", 53, "::1", 5353), PortBinding("tcp", 81)], owner="ep1"
    )  # unallocated entries are skipped
    a.restore([PortBinding("tcp", 80, None, 8080)], owner="ep1")
    with pytest.raises(Conflict, match="already allocated"):
        a.allocate("tcp", None, 8080)
    assert a.release_owner("ep1") == 2
    assert a.allocations() == []


@pytest.mark.parametrize(
    "args, match",
    [
        (("sctp", None, 80), "protocol"),
        (("tcp", None, 0), "must be 1-65535"),
        (("tcp", None, 65536), "must be 1-65535"),
        (("tcp", "nope", 80), "not an IP address"),
    ],
)
def test_allocate_validation(args, match):
    with pytest.raises(InvalidParameter, match=match):
        alloc().allocate(*args)


def test_real_bind_probe_on_loopback():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        held.listen(1)
        assert port_in_use("tcp", "127.0.0.1", port)
        assert port_in_use("tcp", "0.0.0.0", port)  # no SO_REUSEADDR: wildcard sees it
        assert not port_in_use("udp", "127.0.0.1", port)
        a = PortAllocator(lambda: (1024, 65535))
        with pytest.raises(Conflict, match="in use by another process"):
            a.allocate("tcp", "127.0.0.1", port)
    with pytest.raises(InvalidParameter, match="not an address of this host"):
        port_in_use("tcp", "192.0.2.123", 40000)


@pytest.mark.parametrize("wire, name", [(6, "tcp"), (17, "udp"), ("6", "tcp"), ("tcp", "tcp"), ("UDP", "udp")])
def test_proto_name_reads_dockers_wire_numbers_and_names(wire, name):
    assert proto_name(wire) == name


@pytest.mark.parametrize("wire, text", [(132, "(sctp)"), (1, "(icmp)"), ("gre", "'gre'"), (99, "99")])
def test_proto_name_refuses_what_cannot_be_published(wire, text):
    with pytest.raises(InvalidParameter, match=r"use tcp or udp") as exc:
        proto_name(wire)
    assert text in str(exc.value)


def test_core_hands_drivers_dockers_wire_shape():
    from cnm.model import Endpoint
    from cnm.sandbox.sandbox import docker_binding as _docker_binding

    ep = Endpoint(id="e" * 64, name="x", network_id="n" * 64, address="10.0.0.2/24")
    got = _docker_binding(PortBinding("udp", 53, None, 5353), ep)
    assert got == {"Proto": 17, "IP": "10.0.0.2", "Port": 53, "HostIP": "", "HostPort": 5353, "HostPortEnd": 5353}
