"""Property-based fuzzing of the API's request schemas (hypothesis), without root.

The real controller, default IPAM and null/host/bridge drivers run over the fake OS
layer (FakeNetlink) and a recording firewall, behind the real aiohttp app on a unix
socket. Requests are drawn from each route's schema: every field present or not, with
a good value, an edge value (Unicode digits, NaN, 2^64, a name ending in a newline, a
zone index, multicast, …) or any JSON at all. Whatever the request:

  - the answer is never a 5xx (but Docker's own 503 for swarm-only requests), and the
    server keeps answering;
  - a 4xx carries a JSON `{"message": …}` of one line;
  - a refusal changes nothing: the store, the fake kernel (links, addresses, routes,
    sysctls) and the firewall are exactly as before.

A fresh world is built for every example (cheap: no kernel), so examples don't depend
on each other; the app reaches it through a forwarding proxy.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnm.api.container_filters import LIST_FILTERS, PRUNE_FILTERS
from cnm.container_requests import ContainerCreate, EndpointRequest
from cnm.errors import InvalidParameter, Unavailable
from cnm.requests import NetworkCreate
from tests.unit.apiworld import Api, World

EXAMPLES = int(os.environ.get("CNM_FUZZ_EXAMPLES", "100"))  # more locally: CNM_FUZZ_EXAMPLES=2000
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
# Parsers take microseconds: one that takes seconds on some input is a finding (a
# backtracking regex, say), generous enough for a loaded machine.
PARSER = settings(FUZZ, deadline=5000)


@pytest.fixture(scope="module")
def api():
    a = Api()
    yield a
    a.close()


def check(api: Api, method: str, path: str, body: Any = None, raw: bytes | None = None) -> int:
    """One request against a fresh world; the properties every answer must have."""
    api.world = World()
    before = api.world.snapshot()
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    status, payload, ctype = api.request(method, path, data)
    # Docker answers swarm-only requests (Ingress, Scope swarm, …) with 503 "This node is
    # not a swarm manager"; clients rely on that status. Any other 5xx is a bug.
    swarm = status == 503 and b"not a swarm manager" in payload
    assert status < 500 or swarm, (method, path, data[:300] if data else None, status, payload[:500])
    if status >= 400 and method != "HEAD":  # (a HEAD answer has no body)
        assert ctype == "application/json", (status, ctype)
        doc = json.loads(payload)
        assert set(doc) == {"message"} and isinstance(doc["message"], str)
        assert doc["message"] and doc["message"].isprintable(), doc
        assert "Traceback" not in doc["message"]
    if status >= 400:
        assert api.world.snapshot() == before, (method, path, data[:300] if data else None, payload[:300])
    return status


# -- strategies: good values, edge values, any JSON ---------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)

UNICODE_DIGITS = ["١٢٣", "２４", "\u0663", "1\u0660", "²", "⑤", "𝟗"]
EDGE_TEXT = st.sampled_from(
    [
        "",
        " ",
        "x\n",
        "\nx",
        "a b",
        "a/b",
        "..",
        ".",
        "-x",
        "_x",
        "x" * 65,
        "x" * 300,
        "\x00",
        "é",
        "ok\t",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "1e400",
        "-1",
        "0",
        "+1",
        "1_000",
        " 12",
        "0x10",
        "4294967296",
        "18446744073709551616",
        *UNICODE_DIGITS,
    ]
)
NAMES = st.one_of(st.from_regex(r"\A[a-zA-Z0-9][a-zA-Z0-9_.-]{0,20}\Z"), EDGE_TEXT, st.text(max_size=30))

SUBNET_EDGES = [
    "10.20.0.0/16",
    "10.20.1.0/24",
    "10.20.0.0/33",
    "10.20.0.1/24",
    "0.0.0.0/0",
    "0.0.0.0/8",
    "127.0.0.0/8",
    "127.0.0.1/32",
    "224.0.0.0/4",
    "239.1.0.0/16",
    "255.255.255.255/32",
    "169.254.0.0/16",
    "240.0.0.0/4",
    "::/0",
    "::/128",
    "::1/128",
    "ff00::/8",
    "ff00::/64",
    "fe80::/64",
    "fe80::%eth0/64",
    "fe80::1%1/64",
    "fd00:1::/64",
    "fd00:1::/48",
    "2001:db8::/32",
    "::ffff:10.0.0.0/104",
    "10.20.0.0",
    "10.20.0.0/",
    "10.20.0.0/-1",
    "10.20.0.0/08",
    "10.20.0.0/８",
    "١٠.0.0.0/8",
    "fd00::/64\n",
    " 10.0.0.0/8",
    "1.2.3.4/32",
    "10.0.0.0/31",
    "fd00::/127",
    "fd00::/128",
]
ADDR_EDGES = [
    "10.20.0.1",
    "10.20.0.0",
    "10.20.255.255",
    "10.21.0.1",
    "0.0.0.0",
    "127.0.0.1",
    "224.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "ff02::1",
    "fe80::1",
    "fe80::1%eth0",
    "fd00:1::1",
    "fd00:1::1/64",
    "10.20.0.1/16",
    "10.20.0.1 ",
    "١٠.20.0.1",
    "1.2.3",
    "x",
]


class Leaf:
    """A field: the values it takes, and (with any JSON besides) the ones it must refuse."""

    def __init__(self, good: st.SearchStrategy, *bad: st.SearchStrategy) -> None:
        self.good = good
        self.bad = st.one_of(*bad, JSON)


class Obj:
    def __init__(self, fields: dict[str, Any], required: tuple[str, ...] = ()) -> None:
        self.fields = fields
        self.required = required
        self.bad = JSON


class Arr:
    def __init__(self, item: Any, max_size: int = 3, min_size: int = 0) -> None:
        self.item = item
        self.max_size = max_size
        self.min_size = min_size
        self.bad = JSON


class Map:
    def __init__(self, keys: st.SearchStrategy, value: Any, max_size: int = 3) -> None:
        self.keys = keys
        self.value = value
        self.max_size = max_size
        self.bad = JSON


def good(schema: Any) -> st.SearchStrategy:
    """Values that pass the schema's types (the semantics may still be refused)."""
    if isinstance(schema, Leaf):
        return schema.good
    if isinstance(schema, Arr):
        return st.lists(good(schema.item), min_size=schema.min_size, max_size=schema.max_size)
    if isinstance(schema, Map):
        return st.dictionaries(schema.keys, good(schema.value), max_size=schema.max_size)
    return st.fixed_dictionaries(
        {k: good(v) for k, v in schema.fields.items() if k in schema.required},
        optional={k: good(v) for k, v in schema.fields.items() if k not in schema.required},
    )


def _sites(schema: Any, value: Any) -> list[tuple[Any, Any, Any]]:
    """Every place of `value` that could be mutated: (container, key, schema there)."""
    out: list[tuple[Any, Any, Any]] = []
    if isinstance(schema, Obj) and isinstance(value, dict):
        for k, sub in schema.fields.items():
            out.append((value, k, sub))
            if k in value:
                out += _sites(sub, value[k])
    elif isinstance(schema, Arr) and isinstance(value, list):
        for i, item in enumerate(value):
            out.append((value, i, schema.item))
            out += _sites(schema.item, item)
    elif isinstance(schema, Map) and isinstance(value, dict):
        for k, item in value.items():
            out.append((value, k, schema.value))
            out += _sites(schema.value, item)
    return out


@st.composite
def request_of(draw: Any, schema: Obj) -> dict:
    """A request that is right but for a few places (0 to 3), each given a value it
    must refuse, or removed: deep checks are reached, not just the first type check."""
    body = draw(good(schema))
    for _ in range(draw(st.integers(0, 3))):
        sites = _sites(schema, body)
        container, key, sub = draw(st.sampled_from(sites))
        if isinstance(container, dict) and key in container and draw(st.booleans()):
            del container[key]
        else:
            container[key] = draw(sub.bad)
    if draw(st.integers(0, 9)) == 0:
        body.update(draw(st.dictionaries(st.text(max_size=8), JSON, max_size=2)))  # unknown keys
    return body


SUBNET = Leaf(
    st.one_of(
        st.sampled_from(SUBNET_EDGES[:2] + ["fd00:1::/64", "10.21.0.0/24", "192.168.7.0/24"]),
        st.sampled_from(SUBNET_EDGES),
    ),
    st.text(max_size=20),
)
ADDR = Leaf(st.sampled_from(ADDR_EDGES), st.text(max_size=20))
STR_MAP = Map(st.text(max_size=12), Leaf(st.text(max_size=12)))
BRIDGE_OPTS = Map(
    st.sampled_from(
        [
            "com.docker.network.bridge.name",
            "com.docker.network.driver.mtu",
            "com.docker.network.bridge.enable_icc",
            "com.docker.network.bridge.enable_ip_masquerade",
            "com.docker.network.bridge.host_binding_ipv4",
            "com.docker.network.bridge.unknown",
            "com.docker.network.bridge.inhibit_ipv4",
            "com.docker.network.container_iface_prefix",
        ]
    ),
    Leaf(
        st.one_of(
            st.sampled_from(
                [
                    "true",
                    "false",
                    "1",
                    "0",
                    "yes",
                    "1500",
                    "68",
                    "67",
                    "65536",
                    "0.0.0.0",
                    "127.0.0.1",
                    "::",
                    "br-x",
                    "br x",
                    "br/x",
                    "a" * 16,
                    "a" * 15,
                ]
            ),
            EDGE_TEXT,
        )
    ),
)
IPAM_CONFIG = Obj(
    {"Subnet": SUBNET, "IPRange": SUBNET, "Gateway": ADDR, "AuxiliaryAddresses": Map(st.text(max_size=6), ADDR)}
)
GOOD_NAME = st.from_regex(r"\A[a-zA-Z0-9][a-zA-Z0-9_.-]{1,20}\Z")
NETWORK_CREATE = Obj(
    {
        "Name": Leaf(GOOD_NAME, NAMES),
        "Driver": Leaf(
            st.sampled_from(["bridge", "bridge", "null", "host"]), st.sampled_from(["overlay", "nosuch", "", "Bridge"])
        ),
        "Scope": Leaf(st.sampled_from(["local", ""]), st.sampled_from(["global", "swarm", "x"])),
        "IPAM": Obj(
            {
                "Driver": Leaf(st.sampled_from(["default", ""]), st.sampled_from(["null", "nosuch"])),
                "Config": Arr(IPAM_CONFIG),
                "Options": STR_MAP,
            }
        ),
        "EnableIPv6": Leaf(st.booleans()),
        "Internal": Leaf(st.booleans()),
        "Attachable": Leaf(st.booleans()),
        "Ingress": Leaf(st.just(False), st.just(True)),
        "ConfigOnly": Leaf(st.just(False), st.just(True)),
        "ConfigFrom": Leaf(st.none(), st.fixed_dictionaries({"Network": NAMES})),
        "CheckDuplicate": Leaf(st.booleans()),
        "Options": BRIDGE_OPTS,
        "Labels": STR_MAP,
    },
    required=("Name",),
)

REFS = st.one_of(st.sampled_from(["bridge", "host", "none", "nosuch", "b", "", "bridge\n"]), st.text(max_size=20))
FILTER_KEYS = ["driver", "id", "label", "name", "scope", "type", "dangling", "until", "label!", "nosuch"]
FILTERS = st.one_of(
    st.dictionaries(
        st.sampled_from(FILTER_KEYS),
        st.one_of(
            st.lists(
                st.one_of(
                    EDGE_TEXT,
                    st.text(max_size=12),
                    st.sampled_from(
                        [
                            "custom",
                            "builtin",
                            "true",
                            "1h",
                            "10m",
                            "2020-01-01",
                            "1e400",
                            "-1",
                            "1.²",
                            "٣h",
                            "9" * 40 + "h",
                            "1700000000.5",
                        ]
                    ),
                ),
                max_size=3,
            ),
            st.dictionaries(st.text(max_size=8), st.booleans(), max_size=2),
            JSON,
        ),
        max_size=3,
    ).map(json.dumps),
    st.text(max_size=30),
)


def path_with_query(path: str, query: dict[str, str]) -> str:
    return path + ("?" + urlencode(query) if query else "")


# -- the properties, route by route --------------------------------------------------------


@FUZZ
@given(body=request_of(NETWORK_CREATE))
def test_network_create(api, body):
    check(api, "POST", "/networks/create", body)


@FUZZ
@given(
    body=st.one_of(request_of(NETWORK_CREATE), JSON),
    version=st.sampled_from(["", "/v1.43", "/v1.24", "/v1.99", "/v0.1", "/v1." + "9" * 30, "/v1.4.3"]),
)
def test_network_create_any_json_any_version(api, body, version):
    check(api, "POST", f"{version}/networks/create", body)


@FUZZ
@given(
    raw=st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(str.encode),
        st.sampled_from(
            [
                b"NaN",
                b'{"Name": NaN}',
                b'{"Name": "x", "Internal": Infinity}',
                b'{"Name": "x"',
                b"[" * 5000,
                b'{"Name": "\\ud800"}',
                b"\xff\xfe",
                b'{"Name": "x", "Name": "y"}',
            ]
        ),
    )
)
def test_network_create_raw_bytes(api, raw):
    check(api, "POST", "/networks/create", raw=raw)


@FUZZ
@given(ref=REFS, method=st.sampled_from(["GET", "DELETE"]))
def test_network_inspect_and_remove(api, ref, method):
    check(api, method, "/networks/" + quote(ref, safe=""))


@FUZZ
@given(filters=st.one_of(st.none(), FILTERS), prune=st.booleans())
def test_network_list_and_prune(api, filters, prune):
    query = {} if filters is None else {"filters": filters}
    check(api, "POST" if prune else "GET", path_with_query("/networks/prune" if prune else "/networks", query))


@FUZZ
@given(
    path=st.sampled_from(["/_ping", "/version", "/info", "/nope", "/networks/x/y"]),
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE"]),
    version=st.sampled_from(["", "/v1.43", "/v1.99", "/v1." + "9" * 5000, "/v1." + quote("٤٣")]),
)
def test_other_routes(api, path, method, version):
    check(api, method, version + path)


# -- the parsing layers, directly: only InvalidParameter, and what passes is sane ----------


@PARSER
@given(body=request_of(NETWORK_CREATE))
def test_network_create_parser(body):
    try:
        req = NetworkCreate.from_docker_json(body)
    except (InvalidParameter, Unavailable) as exc:  # Unavailable: Docker's 503 for swarm-only asks
        assert exc.message
        return
    assert req.name == body["Name"] and req.name.isascii() and req.name.isprintable()
    import ipaddress

    for cfg in req.ipam_configs:
        if cfg.subnet:
            net = ipaddress.ip_network(cfg.subnet)
            assert "%" not in cfg.subnet and net.prefixlen > 0
            assert not (net.is_multicast or net.is_loopback or net.network_address.is_multicast), net
            for addr in (cfg.gateway, *cfg.aux_addresses.values()):
                assert addr is None or ("%" not in addr and ipaddress.ip_address(addr) in net)


CONTAINER_PORTS = st.one_of(
    st.sampled_from(["80", "80/tcp", "53/udp", "0", "65536", "80/sctp", "١٢/tcp", "8O"]), st.text(max_size=8)
)
PORT_BINDINGS = Map(
    st.one_of(
        st.sampled_from(["80", "80/tcp", "53/udp"]),
        st.sampled_from(["0", "65536", "80/sctp", "١٢/tcp", "8O", "/tcp", "99999999999999999999"]),
        st.text(max_size=8),
    ),
    Arr(
        Obj(
            {
                "HostIp": Leaf(st.sampled_from(["", "127.0.0.1", "0.0.0.0", "::1", "::"]), st.sampled_from(ADDR_EDGES)),
                "HostPort": Leaf(
                    st.sampled_from(["", "8080", "8000-8010"]),
                    st.sampled_from(["0", "65536", "10-1", "٨٠", "80 ", "-1", "1-99999999999999999999"]),
                    EDGE_TEXT,
                ),
            }
        ),
        max_size=2,
    ),
)
BIG_INTS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([-2, -1, 1, 999, 1024, 4194305, 2**63, 2**64, 2**70, 10**12]),
)
HOST_CONFIG = Obj(
    {
        "NetworkMode": Leaf(
            st.sampled_from(["bridge", "host", "none", "default", ""]),
            st.sampled_from(["container:", "container:x", "nosuch", "container:\n"]),
        ),
        "PortBindings": PORT_BINDINGS,
        "Memory": Leaf(st.sampled_from([0, 6 * 1024 * 1024, 64 << 20, 2**63 - 1]), BIG_INTS),
        "NanoCpus": Leaf(st.sampled_from([0, 10**7, 5 * 10**8, 10**9]), BIG_INTS),
        "CpuQuota": Leaf(st.sampled_from([0, -1, 1000, 50000]), BIG_INTS),
        "CpuPeriod": Leaf(st.sampled_from([0, 1000, 100000, 1000000]), BIG_INTS),
        "PidsLimit": Leaf(st.sampled_from([0, -1, 1, 100, 4194304]), BIG_INTS),
        "AutoRemove": Leaf(st.booleans()),
    }
)
ENDPOINT_CONFIG = Obj(
    {
        "IPAMConfig": Obj(
            {
                "IPv4Address": Leaf(st.sampled_from(["", "172.17.0.50", "10.20.0.9"]), st.sampled_from(ADDR_EDGES)),
                "IPv6Address": Leaf(st.sampled_from(["", "fd00:1::9"]), st.sampled_from(ADDR_EDGES)),
            }
        ),
        "Aliases": Arr(Leaf(GOOD_NAME, NAMES)),
        "MacAddress": Leaf(
            st.sampled_from(["", "02:42:ac:11:00:02", "02:42:AC:11:00:02"]),
            st.sampled_from(
                ["01:00:5e:00:00:01", "02:42:ac:11:00", "zz:42:ac:11:00:02", "02-42-ac-11-00-02", "02:42:ac:11:00:02\n"]
            ),
        ),
    }
)
CONTAINER_CREATE = Obj(
    {
        "Cmd": Arr(Leaf(st.sampled_from(["true", "sleep", "1"]), st.text(max_size=8), st.just("a\x00b")), min_size=1),
        "Name": Leaf(GOOD_NAME, NAMES),
        "Env": Arr(
            Leaf(
                st.sampled_from(["A=1", "A=", "A==b", "PATH=/bin"]),
                st.sampled_from(["A", "=x", "", "A=\x00"]),
                st.text(max_size=8),
            )
        ),
        "Hostname": Leaf(st.sampled_from(["box", "web-1", "a.b"]), NAMES),
        "HostConfig": HOST_CONFIG,
        "NetworkingConfig": Obj(
            {"EndpointsConfig": Map(st.sampled_from(["bridge", "front"]), ENDPOINT_CONFIG, max_size=1)}
        ),
        "Rootfs": Leaf(st.sampled_from(["/nonexistent"]), st.text(max_size=10)),
    },
    required=("Cmd",),
)


@PARSER
@given(body=request_of(CONTAINER_CREATE))
def test_container_create_parser(body):
    try:
        req = ContainerCreate.from_docker_json(body)
    except InvalidParameter as exc:
        assert exc.message
        return
    if req.name is not None:
        assert req.name.isascii() and req.name.isprintable() and len(req.name) >= 2
    if req.memory is not None:
        assert 6 * 1024 * 1024 <= req.memory < 2**63
    if req.pids_limit is not None:
        assert 1 <= req.pids_limit <= 4194304
    if req.cpus is not None:
        # NanoCpus >= 0.01 (Docker); CpuQuota/CpuPeriod go down to 1 ms per 1 s = 0.001, as in Docker
        assert 0.001 <= req.cpus <= (os.cpu_count() or 1) and req.cpus == req.cpus
    for p in req.ports:
        assert 1 <= p.container_port <= 65535 and p.proto in ("tcp", "udp")
        assert p.host_port is None or 1 <= p.host_port <= 65535


@PARSER
@given(body=st.one_of(request_of(ENDPOINT_CONFIG), JSON))
def test_endpoint_request_parser(body):
    try:
        req = EndpointRequest.from_docker_json(body)
    except InvalidParameter as exc:
        assert exc.message
        return
    for ip in (req.ip, req.ip6):
        assert ip is None or "%" not in ip


# -- query strings and typed text: only the refusal their callers turn into a 4xx ---------

TEXT = st.one_of(
    EDGE_TEXT,
    st.text(max_size=30),
    st.sampled_from(
        [
            "10",
            "-1",
            "-5",
            "0",
            "2147483648",
            "9" * 30,
            "9" * 5000,
            "1.5",
            "1e3",
            "+3",
            "KILL",
            "sigkill",
            "SIGUSR1",
            "64",
            "0x9",
            "9.0",
            "10m",
            "1.5h",
            "2024-05-01",
            "2024-05-01T10:00:00Z",
            "1700000000.123456789",
            "1.²",
            "٣m",
            "9" * 40 + "h",
        ]
    ),
)


class Query:
    """Stands for aiohttp's request where a helper only reads its query."""

    def __init__(self, **query: str) -> None:
        self.query = query
        self.match_info: dict[str, str] = {}


@PARSER
@given(t=TEXT, sig=TEXT)
def test_stop_and_kill_query(t, sig):
    from cnm.api.containers import parse_signal, stop_timeout

    try:
        timeout = stop_timeout(Query(t=t))  # type: ignore[arg-type]
        assert timeout is None or (isinstance(timeout, int) and 0 <= timeout < 2**31)
    except InvalidParameter:
        pass
    try:
        assert 1 <= parse_signal(sig) <= 64
    except InvalidParameter:
        pass


# Every key either filter set accepts, and one neither does.
CONTAINER_FILTER_KEYS = [*sorted(LIST_FILTERS | PRUNE_FILTERS), "nosuch"]


@PARSER
@given(
    filters=st.dictionaries(st.sampled_from(CONTAINER_FILTER_KEYS), st.lists(TEXT, max_size=3), max_size=3),
    all_=st.booleans(),
)
def test_container_filters(filters, all_):
    from cnm.api import container_filters as cf
    from cnm.api.filters import parse_filters

    for accepted in (cf.LIST_FILTERS, cf.PRUNE_FILTERS):
        try:
            parsed = parse_filters(json.dumps(filters), accepted)
            if accepted is cf.LIST_FILTERS:
                cf.ListQuery.parse(parsed, all_)
            else:
                cf.prune_selector(parsed)
        except InvalidParameter:
            pass


@PARSER
@given(text=TEXT)
def test_times(text):
    import datetime

    from cnm.api.timestamps import get_timestamp, parse_timestamp

    for parse in (lambda v: parse_timestamp(v), lambda v: get_timestamp(v, datetime.datetime.now().astimezone())):
        try:
            assert isinstance(parse(text), int)
        except InvalidParameter:
            pass


@PARSER
@given(
    spec=st.one_of(
        TEXT, st.from_regex(r"\A(\[?[0-9a-f:.%]{0,12}\]?:)?([0-9٠-٩]{0,6}(-[0-9]{0,6})?:)?[0-9²]{1,6}(/[a-z]{0,4})?\Z")
    )
)
def test_port_specs(spec):
    from cnm.ports import parse_port_spec

    try:
        for b in parse_port_spec(spec):
            assert 1 <= b.container_port <= 65535 and (b.host_port is None or 1 <= b.host_port <= 65535)
            assert b.host_ip is None or "%" not in b.host_ip
    except InvalidParameter:
        pass


@PARSER
@given(text=TEXT)
def test_cli_value_converters(text):
    """The CLI's converters refuse with ValueError (one line, exit 2), nothing else."""
    from cnm.cli import values

    for convert in (
        values.byte_size,
        values.int_range(1),
        values.float_range(0.01),
        values.address_pool,
        values.cidr,
        values.ip,
        values.key_value,
    ):
        try:
            out = convert(text)
        except ValueError:
            continue
        if isinstance(out, float):
            assert out == out and out != float("inf")
        if isinstance(out, int) and not isinstance(out, bool):
            assert out < 2**80


@PARSER
@given(version=st.one_of(TEXT, st.from_regex(r"\A[0-9.]{0,30}\Z")))
def test_api_versions(version):
    from cnm.api.version import check_version

    try:
        check_version(version)
    except InvalidParameter:
        pass


# -- container routes over the real ContainerService (FakeHost: fakes at the OS seam) --------


class HostApi:
    """One FakeHost behind the real app for a whole test (state accumulates across
    examples, as a daemon's does); requests as in Api."""

    def __init__(self) -> None:
        import tempfile
        from pathlib import Path

        from cnm.api.testing import ServerThread
        from tests.unit.fakehost import FakeHost

        self.dir = Path(tempfile.mkdtemp(prefix="cnm-fuzzh-", dir="/tmp"))
        self.host = FakeHost(self.dir / "host")
        self.server = ServerThread(self.host.app(), self.dir / "api.sock").start()
        self.host.start_watching(self.server.loop)
        self.path = str(self.dir / "api.sock")
        # Two containers that stay up (a long sleep: no exit changes state meanwhile).
        for name in ("web1", "db1"):
            status, payload, _ = self.request(
                "POST", f"/containers/create?name={name}", json.dumps({"Cmd": ["sleep", "1000"]}).encode()
            )
            assert status == 201, payload

    request = Api.request

    def snapshot(self) -> Any:
        world = self.host.world
        spaces = {"": world.host, **world.namespaces}
        kernel = {
            k: sorted((lk.name, repr(lk), tuple(ns.addresses(lk.name))) for lk in ns.links())
            for k, ns in spaces.items()
        }
        routes = {k: sorted(map(repr, ns.routes())) for k, ns in spaces.items()}
        return (
            {kv.key: json.dumps(kv.value, sort_keys=True) for kv in self.host.store.list("")},
            kernel,
            routes,
            repr(sorted(self.host.firewall.published.items())),
        )

    def close(self) -> None:
        import shutil

        self.server.stop()
        self.host.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def host_api():
    a = HostApi()
    yield a
    a.close()


def check_host(api: HostApi, method: str, path: str, body: Any = None) -> int:
    before = api.snapshot()
    data = None if body is None else json.dumps(body).encode()
    status, payload, ctype = api.request(method, path, data)
    assert status < 500, (method, path, data[:300] if data else None, status, payload[:500])
    if status >= 400 and len(path) > 8000:
        # A request line beyond aiohttp's limit (8190) is refused by its HTTP parser, in
        # text, before the API sees it (Go's server answers malformed HTTP in text too).
        assert status in (400, 414, 431) and api.snapshot() == before
        return status
    if status >= 400:
        assert ctype == "application/json", (status, ctype)
        message = json.loads(payload)["message"]
        assert message and message.isprintable(), message
        assert api.snapshot() == before, (method, path, data[:300] if data else None, message)
    return status


# Only harmless commands ever run (the fake runtime runs them as plain processes): a long
# sleep, so that no exit changes the state between two snapshots.
SAFE_CMD = Arr(Leaf(st.sampled_from(["sleep", "1000"]), st.just("a\x00b"), st.just("")), min_size=1, max_size=2)
RUN = Obj(
    {
        **CONTAINER_CREATE.fields,
        "Cmd": SAFE_CMD,
        "Rootfs": Leaf(st.nothing(), st.sampled_from(["relative", "/nonexistent", "/a\x00b"])),
    },
    required=("Cmd",),
)


@FUZZ
@given(body=request_of(RUN), name=st.one_of(st.none(), NAMES))
def test_container_create_route(host_api, body, name):
    cmd = body.get("Cmd")
    if isinstance(cmd, list) and all(isinstance(a, str) and a and "\0" not in a for a in cmd):
        body["Cmd"] = ["sleep", "1000"]  # whatever else was drawn: run nothing but this
    path = "/containers/create" + ("" if name is None else "?" + urlencode({"name": name}))
    check_host(host_api, "POST", path, body)


CT_REFS = st.one_of(st.sampled_from(["web1", "db1", "nosuch", "w", "", "web1\n"]), st.text(max_size=12))


@FUZZ
@given(
    ref=CT_REFS,
    route=st.sampled_from(["kill", "json", "start"]),
    query=st.dictionaries(st.sampled_from(["signal", "force", "size"]), TEXT, max_size=2),
)
def test_container_query_routes(host_api, ref, route, query):
    from cnm.api.containers import parse_signal

    if route == "kill":
        try:
            parse_signal(query.get("signal"))
            query["signal"] = "WINCH"  # a signal it takes: one sleep ignores (keep them alive)
        except InvalidParameter:
            pass
    method = "GET" if route == "json" else "POST"
    check_host(host_api, method, path_with_query(f"/containers/{quote(ref, safe='')}/{route}", query))


@FUZZ
@given(
    ref=CT_REFS,
    net=st.one_of(st.sampled_from(["bridge", "host", "none", "nosuch"]), st.text(max_size=8)),
    verb=st.sampled_from(["connect", "disconnect"]),
    cfg=st.one_of(request_of(ENDPOINT_CONFIG), JSON),
    force=st.one_of(st.booleans(), JSON),
)
def test_network_connect_routes(host_api, ref, net, verb, cfg, force):
    body = {"Container": ref, "EndpointConfig": cfg} if verb == "connect" else {"Container": ref, "Force": force}
    check_host(host_api, "POST", f"/networks/{quote(net, safe='')}/{verb}", body)


@FUZZ
@given(
    filters=st.dictionaries(st.sampled_from(CONTAINER_FILTER_KEYS), st.lists(TEXT, max_size=2), max_size=2),
    all_=st.sampled_from(["", "1", "true", "0", "x"]),
)
def test_container_list(host_api, filters, all_):
    check_host(host_api, "GET", path_with_query("/containers/json", {"filters": json.dumps(filters), "all": all_}))
