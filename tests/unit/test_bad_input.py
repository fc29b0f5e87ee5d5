"""The issue's bad inputs and their kin, one by one, through the real API over fakes:
each is a 4xx with a one-line JSON message, and the store, the fake kernel and the
firewall are exactly as before. (The fuzz in test_api_fuzz.py explores around them.)"""

from __future__ import annotations

import json

import pytest

from cnm.container_requests import ContainerCreate
from cnm.errors import InvalidParameter
from tests.unit.apiworld import Api, World


@pytest.fixture(scope="module")
def api():
    a = Api()
    yield a
    a.close()


def refused(api: Api, method: str, path: str, body=None, raw: bytes | None = None) -> tuple[int, str]:
    api.world = World()
    before = api.world.snapshot()
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    status, payload, ctype = api.request(method, path, data)
    assert 400 <= status < 500, (status, payload)
    assert ctype == "application/json"
    message = json.loads(payload)["message"]
    assert message.isprintable() and "Traceback" not in message
    assert api.world.snapshot() == before
    return status, message


def subnet(cidr: str, **cfg: str) -> dict:
    return {"Name": "n1", "IPAM": {"Config": [{"Subnet": cidr, **cfg}]}}


@pytest.mark.parametrize(
    "cidr, message",
    [
        ("::/0", "invalid subnet ::/0: it spans every IPv6 address"),
        ("0.0.0.0/0", "invalid subnet 0.0.0.0/0: it spans every IPv4 address"),
        ("ff00::/64", "invalid subnet ff00::/64: it overlaps multicast (ff00::/8)"),
        ("224.0.0.0/4", "invalid subnet 224.0.0.0/4: it overlaps multicast (224.0.0.0/4)"),
        ("192.0.0.0/2", "invalid subnet 192.0.0.0/2: it overlaps multicast (224.0.0.0/4)"),
        ("127.0.0.0/8", "invalid subnet 127.0.0.0/8: it overlaps loopback (127.0.0.0/8)"),
        ("::1/128", "invalid subnet ::1/128: it overlaps loopback (::1)"),
        ("0.0.0.0/8", "invalid subnet 0.0.0.0/8: it overlaps 'this network' (0.0.0.0/8)"),
        (
            "fe80::%eth0/64",
            "invalid subnet 'fe80::%eth0/64': a zone index (%eth0) names one link and has no "
            "place here; give fe80::/64",
        ),
        ("10.0.0.0/33", "invalid subnet 10.0.0.0/33"),
        ("١٠.0.0.0/8", "invalid subnet ١٠.0.0.0/8"),
        ("10.0.0.0/٨", "invalid subnet 10.0.0.0/٨"),
    ],
)
def test_subnets_nobody_can_use(api, cidr, message):
    status, got = refused(api, "POST", "/networks/create", subnet(cidr))
    assert status == 400 and got.startswith(message), got


def test_link_local_without_a_zone_is_a_subnet_like_any(api):
    api.world = World()
    status, payload, _ = api.request(
        "POST", "/networks/create", json.dumps(subnet("fe80::/64") | {"EnableIPv6": True}).encode()
    )
    assert status == 201, payload


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"Gateway": "fe80::1%eth0"}, "invalid gateway address 'fe80::1%eth0': a zone index (%eth0)"),
        ({"AuxiliaryAddresses": {"r": "10.9.0.5%1"}}, "invalid aux-address r address '10.9.0.5%1'"),
        ({"Gateway": "10.9.0.٥"}, "invalid gateway address 10.9.0.٥"),
    ],
)
def test_addresses_in_a_subnet(api, cfg, message):
    status, got = refused(api, "POST", "/networks/create", subnet("10.9.0.0/24", **cfg))
    assert status == 400 and got.startswith(message)


@pytest.mark.parametrize("name", ["x\n", "x\r\n", "\nx", "a b", "x\x00", "é", "x/y", "-x", "", "٣"])
def test_network_names_outside_dockers_rule(api, name):
    status, message = refused(api, "POST", "/networks/create", {"Name": name})
    assert status == 400 and "name" in message


def test_a_name_ending_in_a_newline_does_not_coexist_with_the_name(api):
    api.world = World()
    assert api.request("POST", "/networks/create", json.dumps({"Name": "x"}).encode())[0] == 201
    status, payload, _ = api.request("POST", "/networks/create", json.dumps({"Name": "x\n"}).encode())
    assert status == 400
    assert json.loads(payload)["message"] == r"invalid network name 'x\n': only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"


FIELDS = [
    "Name",
    "Driver",
    "Scope",
    "IPAM",
    "EnableIPv6",
    "Internal",
    "Attachable",
    "Ingress",
    "ConfigOnly",
    "ConfigFrom",
    "Options",
    "Labels",
    "CheckDuplicate",
]
WRONG = {
    "Name": 1,
    "Driver": [],
    "Scope": {},
    "IPAM": "default",
    "EnableIPv6": "yes",
    "Internal": 0,
    "Attachable": "true",
    "Ingress": [],
    "ConfigOnly": {},
    "ConfigFrom": "x",
    "Options": [],
    "Labels": "a=b",
    "CheckDuplicate": 1,
}


@pytest.mark.parametrize("field", FIELDS)
def test_wrong_json_types_in_every_network_field(api, field):
    status, message = refused(api, "POST", "/networks/create", {"Name": "n1", field: WRONG[field]})
    assert status == 400 and field in message


@pytest.mark.parametrize(
    "raw", [b'{"Name": NaN}', b'{"Name": "x", "Internal": Infinity}', b"[" * 100_000, b'{"Name": "x"', b"\xff"]
)
def test_not_json(api, raw):
    status, message = refused(api, "POST", "/networks/create", raw=raw)
    assert status == 400 and message.startswith("invalid JSON body")


# -- containers: parsed at the edge ---------------------------------------------------------


def create(**host) -> dict:
    return {"Cmd": ["true"], "HostConfig": host}


@pytest.mark.parametrize(
    "body, message",
    [
        (create(Memory=2**64), "invalid Memory 18446744073709551616: at most 9223372036854775807 bytes"),
        (create(Memory=2**63), "invalid Memory 9223372036854775808: at most"),
        (create(Memory=1024), "Minimum memory limit allowed is 6MB"),
        (create(Memory=-1), "Minimum memory limit allowed is 6MB"),
        (create(PidsLimit=2**70), "invalid PidsLimit 1180591620717411303424: the kernel allows at most 4194304"),
        (create(NanoCpus=10**15), "Range of CPUs is from 0.01 to"),
        (create(NanoCpus=-1), "Range of CPUs is from 0.01 to"),
        (create(NanoCpus=1), "Range of CPUs is from 0.01 to"),
        (create(CpuQuota=500), "CPU cfs quota can not be less than 1ms"),
        (create(CpuQuota=-5), "CPU cfs quota can not be less than 1ms"),
        (create(CpuPeriod=10), "CPU cfs period can not be less than 1ms"),
        (create(CpuQuota=10**15), "CPU quota 1000000000000000 per period 100000 is"),
        (create(NanoCpus=10**9, CpuQuota=50000), "Conflicting options: Nano CPUs and CPU Quota"),
        (create(Memory="64m"), "field Memory has the wrong type"),
        (create(Memory=1.5e9), "field Memory has the wrong type"),
        (create(PortBindings={"٨٠/tcp": [{}]}), "invalid container port '٨٠/tcp'"),
        (create(PortBindings={"80/tcp": [{"HostPort": "٨٠٨٠"}]}), "invalid host port '٨٠٨٠' for 80/tcp"),
        (create(PortBindings={"80/tcp": [{"HostPort": 8080}]}), "field HostPort has the wrong type"),
        (create(PortBindings={"80/tcp": 5}), "port bindings for 80/tcp must be an array"),
        (create(PortBindings={"80/tcp": [{"HostIp": "fe80::1%eth0"}]}), "invalid port spec"),
        ({"Cmd": ["true"], "Name": "x\n"}, "invalid container name 'x\\n'"),
        (
            {"Cmd": ["true"], "Name": "a"},
            "invalid container name 'a': only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at least two characters",
        ),
        ({"Cmd": ["true"], "Hostname": "a" * 65}, "invalid hostname"),
        ({"Cmd": ["true"], "Hostname": "x\ny"}, "invalid hostname"),
        ({"Cmd": ["sh", "-c", "a\x00b"]}, "invalid command: an argument contains a NUL byte"),
        ({"Cmd": ["true"], "Env": ["A=\x00"]}, "invalid environment variable"),
        ({"Cmd": ["true"], "Rootfs": "relative/dir"}, "invalid rootfs 'relative/dir'"),
        (
            {
                "Cmd": ["true"],
                "NetworkingConfig": {"EndpointsConfig": {"bridge": {"IPAMConfig": {"IPv4Address": "224.0.0.1"}}}},
            },
            "invalid --ip address 224.0.0.1: a container's address",
        ),
        (
            {
                "Cmd": ["true"],
                "NetworkingConfig": {"EndpointsConfig": {"bridge": {"IPAMConfig": {"IPv6Address": "fe80::1%eth0"}}}},
            },
            "invalid --ip6 address 'fe80::1%eth0': drop the zone",
        ),
    ],
)
def test_container_create_refusals(body, message):
    with pytest.raises(InvalidParameter) as err:
        ContainerCreate.from_docker_json(body)
    assert err.value.message.startswith(message), err.value.message


def test_limits_docker_accepts_are_taken():
    req = ContainerCreate.from_docker_json(
        create(Memory=6 * 1024 * 1024, PidsLimit=-1, CpuQuota=50000, CpuPeriod=100000)
    )
    assert (req.memory, req.pids_limit, req.cpus) == (6 * 1024 * 1024, None, 0.5)
    req = ContainerCreate.from_docker_json(create(NanoCpus=10**7, PidsLimit=4194304, Memory=2**63 - 1))
    assert (req.cpus, req.pids_limit, req.memory) == (0.01, 4194304, 2**63 - 1)


class Query:
    def __init__(self, **query: str) -> None:
        self.query = query


@pytest.mark.parametrize("t", ["nan", "inf", "-inf", "1e400", "1.5", "٣", "1_0", " 5", "9" * 40, "0x10"])
def test_stop_timeouts_that_are_no_integer(t):
    from cnm.api.containers import stop_timeout

    with pytest.raises(InvalidParameter, match="invalid value for t"):
        stop_timeout(Query(t=t))  # type: ignore[arg-type]


def test_stop_timeouts_as_docker_reads_them():
    from cnm.api.containers import stop_timeout

    assert [stop_timeout(Query(t=t)) for t in ("", "0", "30", "-1", "-5")] == [10, 0, 30, None, None]  # type: ignore[arg-type]


@pytest.mark.parametrize("sig", ["٩", "²", "9" * 5000, "99", "NOPE"])
def test_signals(sig):
    from cnm.api.containers import parse_signal

    with pytest.raises(InvalidParameter, match="invalid signal"):
        parse_signal(sig)


@pytest.mark.parametrize(
    "convert, text",
    [
        ("byte_size", "1e400"),
        ("byte_size", "nan"),
        ("byte_size", "inf"),
        ("byte_size", "١٢m"),
        ("byte_size", "-1"),
        ("pids", "١٠"),
        ("pids", "1_0"),
        ("pids", " 10"),
        ("pids", "9" * 5000),
        ("cpus", "1e400"),
        ("cpus", "nan"),
        ("cpus", "inf"),
        ("cpus", "٢"),
        ("pool", "base=10.0.0.0/8,size=٢٤"),
    ],
)
def test_cli_converters_refuse_in_one_line(convert, text):
    """What the CLI's flags refuse before anything is sent (exit 2, one line)."""
    from cnm.cli import values

    fn = {
        "byte_size": values.byte_size,
        "pids": values.int_range(1),
        "cpus": values.float_range(0.01),
        "pool": values.address_pool,
    }[convert]
    with pytest.raises(ValueError) as err:
        fn(text)
    assert "\n" not in str(err.value)


def test_port_specs_take_ascii_digits_only():
    from cnm.ports import parse_port_spec

    for spec in ("٨٠:80", "8080:٨٠", "80²", "[fe80::1%eth0]:80:80", "١-٢:80"):
        with pytest.raises(InvalidParameter):
            parse_port_spec(spec)
    assert parse_port_spec("127.0.0.1:8080:80/udp")[0].host_port == 8080
