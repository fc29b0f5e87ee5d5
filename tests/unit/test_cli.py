"""The `net` CLI against the real API server (fake controller) on a tmp unix socket."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import types
from pathlib import Path

import pytest

from cnm.api.server import make_app
from cnm.api.testing import FakeController, ServerThread
from cnm.cli.testing import invoke, run_lean


@pytest.fixture
def ctl():
    return FakeController()


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="cnm-cli-", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def server(ctl, sockdir):
    with ServerThread(make_app(ctl), sockdir / "cnm.sock") as srv:
        yield srv


@pytest.fixture
def net(server):
    """`net -H <the test server> ARGS` as a real process, which must stay lean."""

    def run(*args: str, input: str = ""):
        return run_lean(["-H", server.host, *args], input=input)

    return run


def by_name(ctl: FakeController, name: str):
    return next(n for n in ctl.networks.values() if n.name == name)


def test_create_prints_the_id_and_sends_every_flag(net, ctl):
    r = net(
        "create",
        "-d",
        "bridge",
        "--subnet",
        "10.1.0.0/16",
        "--subnet",
        "fd00:1::/64",
        "--gateway",
        "fd00:1::fe",
        "--gateway",
        "10.1.0.254",
        "--ip-range",
        "10.1.2.0/24",
        "--aux-address",
        "router=10.1.0.2",
        "--ipv6",
        "--internal",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "--label",
        "team=a",
        "--label",
        "bare",
        "--ipam-opt",
        "serial=true",
        "front",
    )
    assert r.exit_code == 0, r.output
    created = by_name(ctl, "front")
    assert r.stdout == created.id + "\n"
    assert created.internal and created.enable_ipv6
    assert created.options == {"com.docker.network.driver.mtu": "1400"}
    assert created.labels == {"team": "a", "bare": ""} and created.ipam_options == {"serial": "true"}
    v4, v6 = created.pools
    assert v4.to_record() == {
        "subnet": "10.1.0.0/16",
        "gateway": "10.1.0.254",
        "ip_range": "10.1.2.0/24",
        "aux_addresses": {"router": "10.1.0.2"},
        "pool_id": v4.pool_id,
        "v6": False,
    }
    assert (str(v6.subnet), str(v6.gateway)) == ("fd00:1::/64", "fd00:1::fe")


def test_network_group_is_an_alias(net, ctl):
    r = net("network", "create", "viaalias")
    assert r.exit_code == 0 and by_name(ctl, "viaalias").id == r.stdout.strip()
    assert "viaalias" in net("network", "list").stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--subnet", "10.0.0.0/24", "--gateway", "10.9.0.1"], "Error: no matching subnet for gateway 10.9.0.1"),
        (
            ["--subnet", "10.0.0.0/24", "--ip-range", "10.9.0.0/25"],
            "Error: no matching subnet for ip-range 10.9.0.0/25",
        ),
        (
            ["--subnet", "10.0.0.0/24", "--aux-address", "r=10.9.0.1"],
            "Error: no matching subnet for aux-address 10.9.0.1",
        ),
        (["--gateway", "10.0.0.1"], "Error: every ip-range or gateway must have a corresponding subnet"),
        (
            ["--subnet", "10.0.0.0/24", "--gateway", "10.0.0.1", "--gateway", "10.0.0.2", "--subnet", "10.1.0.0/24"],
            "Error: cannot configure multiple gateways (10.0.0.1, 10.0.0.2) for the same subnet (10.0.0.0/24)",
        ),
        (
            ["--subnet", "10.0.0.0/16", "--subnet", "10.0.1.0/24"],
            "Error: multiple overlapping subnet configuration is not supported (10.0.0.0/16, 10.0.1.0/24)",
        ),
        (["-o", "novalue"], "Error: invalid value for '-o' / '--opt': 'novalue' is not KEY=VALUE"),
        (["--subnet", "10.0.0.0/33"], "Error: invalid value for '--subnet': '10.0.0.0/33' is not a CIDR"),
        (["--subnet", "10.0.0.7/24"], "Error: invalid value for '--subnet': '10.0.0.7/24' has host bits set"),
        (["--gateway", "10.0.0.300"], "Error: invalid value for '--gateway': '10.0.0.300' is not an IP address"),
        (["--aux-address", "r=nope"], "Error: invalid value for '--aux-address': 'nope' is not an IP address"),
    ],
)
def test_bad_create_flags_fail_with_one_line_and_exit_2(net, ctl, args, message):
    before = set(ctl.networks)
    r = net("create", *args, "bad")
    assert r.exit_code == 2
    assert r.stderr.startswith(message) and r.stderr.count("\n") == 1
    assert r.stdout == ""
    assert set(ctl.networks) == before


def test_create_error_from_the_daemon_is_one_line_with_its_exit_code(net):
    r = net("create", "bridge")
    assert (r.exit_code, r.stderr) == (4, "Error: network with name bridge already exists\n")
    r = net("create", "bad name!")
    assert r.exit_code == 2 and r.stderr.startswith("Error: invalid network name 'bad name!'")


def test_ls_table_sorted_with_short_ids(net, ctl):
    net("create", "zeta")
    net("create", "alpha")
    out = net("ls").stdout.splitlines()
    assert out[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    rows = [line.split() for line in out[1:]]
    assert [r[1] for r in rows] == ["alpha", "bridge", "host", "none", "zeta"]
    for short, name, driver, scope in rows:
        assert short == by_name(ctl, name).id[:12] and driver == by_name(ctl, name).driver and scope == "local"
    # columns line up: NAME starts at the same offset on every line
    col = out[0].index("NAME")
    assert all(line[col - 1] == " " and line[col] != " " for line in out[1:])


def test_ls_quiet_filter_and_json(net, ctl):
    net("create", "-d", "overlay", "ov1")
    net("create", "web", "--label", "tier=front")
    assert net("ls", "-q", "--filter", "driver=overlay").stdout == by_name(ctl, "ov1").id[:12] + "\n"
    assert net("ls", "-q", "--no-trunc", "-f", "name=web").stdout == by_name(ctl, "web").id + "\n"
    assert net("ls", "-q", "-f", "label=tier=front").stdout.split() == [by_name(ctl, "web").id[:12]]
    objs = json.loads(net("ls", "--format", "json", "-f", "type=custom").stdout)
    assert [o["Name"] for o in objs] == ["ov1", "web"]
    web = by_name(ctl, "web")
    assert objs[1]["Id"] == web.id and objs[1]["Labels"] == {"tier": "front"}
    assert objs[1]["IPAM"]["Config"] == [{"Subnet": str(web.pools[0].subnet), "Gateway": str(web.pools[0].gateway)}]
    r = net("ls", "-f", "colour=red")
    assert r.exit_code == 2 and r.stderr.startswith("Error: invalid filter 'colour'")
    r = net("ls", "-f", "colour")
    assert r.exit_code == 2 and r.stderr.startswith("Error: invalid value for '-f' / '--filter'")


def test_inspect_prints_a_json_array_and_reports_missing_ones(net, ctl):
    net("create", "a")
    net("create", "b")
    r = net("inspect", "a", "b")
    assert r.exit_code == 0
    assert r.stdout.startswith('[\n    {\n        "Name": "a"')  # indent 4, like docker
    assert [n["Name"] for n in json.loads(r.stdout)] == ["a", "b"]
    r = net("network", "inspect", "a", "ghost", by_name(ctl, "b").id[:6])
    assert r.exit_code == 3
    assert [n["Name"] for n in json.loads(r.stdout)] == ["a", "b"]
    assert r.stderr == "Error: network ghost not found\n"


def test_rm_continues_past_errors(net, ctl):
    net("create", "one")
    net("create", "two")
    r = net("rm", "one", "ghost", "host", "two")
    assert r.stdout.splitlines() == ["one", "two"]
    assert r.stderr.splitlines() == [
        "Error: network ghost not found",
        "Error: host is a pre-defined network and cannot be removed",
    ]
    assert r.exit_code == 3  # the first failure's category
    assert {n.name for n in ctl.networks.values()} == {"bridge", "host", "none"}
    r = net("rm", "bridge")
    assert r.exit_code == 5


def test_prune_asks_first(net, ctl):
    net("create", "unused")
    r = net("prune", input="n\n")
    assert r.exit_code == 0
    assert r.stdout.startswith(
        "WARNING! This will remove all custom networks not used by at least one container.\n"
        "Are you sure you want to continue? [y/N] "
    )
    assert "Deleted Networks" not in r.stdout and "unused" in {n.name for n in ctl.networks.values()}
    r = net("prune", input="y\n")
    assert r.exit_code == 0 and r.stdout.endswith("Deleted Networks:\nunused\n")
    assert "unused" not in {n.name for n in ctl.networks.values()}


def test_prune_force_skips_the_question(net, ctl):
    net("create", "p1")
    net("create", "p2")
    r = net("network", "prune", "-f")
    assert r.exit_code == 0 and r.stdout == "Deleted Networks:\np1\np2\n"
    assert net("prune", "-f").stdout == ""


def test_daemon_not_running(sockdir, monkeypatch):
    path = sockdir / "none.sock"
    monkeypatch.setenv("NET_HOST", f"unix://{path}")
    r = run_lean(["ls"])
    assert r.exit_code == 6
    assert r.stderr == (
        f"Error: cannot reach the cnm daemon at unix://{path} — is it running? "
        f"start it with: net daemon --socket {path}\n"
    )
    assert r.stdout == ""


def test_net_host_env_is_used(server, monkeypatch):
    monkeypatch.setenv("NET_HOST", server.host)
    r = run_lean(["ls", "-q"])
    assert r.exit_code == 0 and len(r.stdout.split()) == 3


def test_bad_host_is_one_line(monkeypatch):
    r = run_lean(["-H", "tcp://1.2.3.4:2375", "ls"])
    assert (
        r.exit_code == 2 and r.stderr == "Error: unsupported host 'tcp://1.2.3.4:2375': use unix:///path/to/cnm.sock\n"
    )


def test_daemon_command_builds_the_config(monkeypatch):
    got = {}

    class DaemonConfig:
        def __init__(self, **kw):
            got.update(kw)

    fake = types.ModuleType("cnm.daemon")
    fake.DaemonConfig = DaemonConfig
    fake.run_daemon = lambda config: 7
    monkeypatch.setitem(sys.modules, "cnm.daemon", fake)
    r = invoke(
        [
            "daemon",
            "--root",
            "/tmp/r",
            "--run-dir",
            "/tmp/run",
            "--socket",
            "/tmp/run/s.sock",
            "--log-level",
            "DEBUG",
            "--default-address-pool",
            "base=10.10.0.0/16,size=24",
            "--default-address-pool",
            "size=26, base=10.20.0.0/16",
        ]
    )
    assert r.exit_code == 7, r.output
    assert got == {
        "root": "/tmp/r",
        "run_dir": "/tmp/run",
        "socket": "/tmp/run/s.sock",
        "log_level": "debug",
        "default_address_pools": ["base=10.10.0.0/16,size=24", "base=10.20.0.0/16,size=26"],
        "cluster_store": None,
        "advertise": None,
        "plugin_dirs": [],
    }
    got.clear()
    r = invoke(
        [
            "daemon",
            "--cluster-store",
            "etcd://198.18.0.1:2379",
            "--advertise",
            "198.18.0.1",
            "--plugin-dir",
            "/tmp/p1",
            "--plugin-dir",
            "/tmp/p2",
        ]
    )
    assert r.exit_code == 7, r.output
    assert (got["cluster_store"], got["advertise"], got["plugin_dirs"]) == (
        "etcd://198.18.0.1:2379",
        "198.18.0.1",
        ["/tmp/p1", "/tmp/p2"],
    )
    got.clear()
    r = invoke(["daemon", "--cluster-store", "etcd://198.18.0.1:2379"])
    assert r.exit_code == 2 and "--advertise" in r.output and got == {}
    got.clear()
    assert invoke(["daemon"]).exit_code == 7
    assert (got["root"], got["run_dir"], got["socket"], got["log_level"], got["default_address_pools"]) == (
        "/var/lib/cnm",
        "/run/cnm",
        "/run/cnm/cnm.sock",
        "info",
        [],
    )


@pytest.mark.parametrize(
    "pool, message",
    [
        ("10.0.0.0/8", "expected base=CIDR,size=N"),
        ("base=10.0.0.0/8", "expected base=CIDR,size=N"),
        ("base=10.0.0.0/8,size=x", "size must be a prefix length"),
        ("base=10.0.0.0/16,size=8", "size must be between 16 and 32"),
        ("base=10.0.0.1/8,size=24", "has host bits set"),
    ],
)
def test_daemon_bad_address_pool_is_one_line(pool, message):
    r = invoke(["daemon", "--default-address-pool", pool])
    assert r.exit_code == 2 and message in r.stderr and r.stderr.count("\n") == 1


def test_version_shows_the_daemons(net):
    r = net("version")
    assert r.exit_code == 0 and json.loads(r.stdout)["ApiVersion"] == "1.43"
