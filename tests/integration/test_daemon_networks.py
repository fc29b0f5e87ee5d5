"""The daemon in a throwaway namespace, driven by the `net` CLI: round trips, kernel
state, bad input, restarts."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.integration.conftest import link_names, sh


def inspect(d, ref):
    return json.loads(d.net("inspect", ref).stdout)[0]


def test_builtin_networks_and_default_bridge(daemon):
    out = daemon.net("ls").stdout
    assert out.splitlines()[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    rows = {line.split()[1]: line.split()[2] for line in out.splitlines()[1:]}
    assert rows == {"bridge": "bridge", "host": "host", "none": "null"}
    br = inspect(daemon, "bridge")
    assert br["IPAM"]["Config"] == [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]
    assert "cnm0" in link_names(daemon.ns)
    addr = sh("ip", "-n", daemon.ns, "-o", "-4", "addr", "show", "dev", "cnm0").stdout
    assert "172.17.0.1/16" in addr
    mode = stat.S_IMODE(os.stat(daemon.sock).st_mode)
    assert mode == 0o660


def test_create_inspect_rm_roundtrip(daemon):
    nid = daemon.net(
        "create",
        "--subnet",
        "10.77.0.0/24",
        "--ip-range",
        "10.77.0.128/25",
        "--gateway",
        "10.77.0.1",
        "--aux-address",
        "r=10.77.0.2",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "--label",
        "team=a",
        "front",
    ).stdout.strip()
    assert len(nid) == 64
    net = inspect(daemon, "front")
    assert net["Id"] == nid and net["Name"] == "front" and net["Driver"] == "bridge"
    assert net["Scope"] == "local" and net["Labels"] == {"team": "a"}
    assert net["IPAM"]["Config"] == [
        {
            "Subnet": "10.77.0.0/24",
            "IPRange": "10.77.0.128/25",
            "Gateway": "10.77.0.1",
            "AuxiliaryAddresses": {"r": "10.77.0.2"},
        }
    ]
    assert inspect(daemon, nid[:10])["Id"] == nid
    bridge = f"br-{nid[:12]}"
    link = sh("ip", "-n", daemon.ns, "-d", "link", "show", bridge).stdout
    assert "mtu 1400" in link and "UP" in link.split(">")[0]
    assert "10.77.0.1/24" in sh("ip", "-n", daemon.ns, "-o", "addr", "show", "dev", bridge).stdout
    named = daemon.net("create", "-o", "com.docker.network.bridge.name=mybr0", "named").stdout.strip()
    assert "mybr0" in link_names(daemon.ns)
    assert daemon.net("ls", "-q", "--filter", "name=named").stdout.split() == [named[:12]]
    daemon.net("rm", "front", "named")
    assert bridge not in link_names(daemon.ns) and "mybr0" not in link_names(daemon.ns)
    r = daemon.net("inspect", "front", check=False)
    assert r.returncode != 0 and "not found" in r.stderr


def test_automatic_pools_and_prune(daemon):
    a = inspect(daemon, daemon.net("create", "a").stdout.strip())
    b = inspect(daemon, daemon.net("create", "b").stdout.strip())
    assert a["IPAM"]["Config"][0]["Subnet"] == "172.18.0.0/16"
    assert b["IPAM"]["Config"][0]["Subnet"] == "172.19.0.0/16"
    out = daemon.net("prune", "-f").stdout
    assert "a" in out.split() and "b" in out.split()
    names = sorted(json.loads(daemon.net("ls", "--format", "json").stdout), key=lambda n: n["Name"])
    assert [n["Name"] for n in names] == ["bridge", "host", "none"]


BAD_INPUT = [
    (["create", "--subnet", "10.0.0.0/33", "x"], "invalid"),
    (["create", "--subnet", "172.17.5.0/24", "x"], "overlaps"),
    (["create", "bridge"], "already exists"),
    (["create", "-d", "nosuch", "x"], "not found"),
    (["create", "--subnet", "10.9.0.0/24", "--gateway", "10.10.0.1", "x"], "gateway"),
    (["create", "--subnet", "10.9.0.0/24", "--ip-range", "10.10.0.0/25", "x"], "ip-range"),
    (["create", "--subnet", "10.9.0.0/24", "--aux-address", "a=10.10.0.5", "x"], "aux"),
    (["create", "bad/name"], "invalid network name"),
    (["create", "n" * 80], "too long"),
    (["rm", "host"], "pre-defined"),
    (["rm", "none"], "pre-defined"),
    (["rm", "bridge"], "pre-defined"),
    (["create", "-o", "novalue", "x"], "KEY=VALUE"),
    (["create", "-o", "com.docker.network.driver.mtu=abc", "x"], "mtu"),
    (["create", "-o", "com.docker.network.bridge.unknown=1", "x"], "unknown"),
]


def kernel_and_state(d):
    return (sorted(link_names(d.ns)), d.net("ls", "--format", "json").stdout, sh("ip", "-n", d.ns, "-o", "addr").stdout)


def test_bad_input_one_line_nonzero_no_change(daemon):
    before = kernel_and_state(daemon)
    for args, text in BAD_INPUT:
        r = daemon.net(*args, check=False)
        assert r.returncode != 0, args
        err = r.stderr.strip()
        assert len(err.splitlines()) == 1, (args, err)
        assert text.lower() in err.lower(), (args, err)
        assert "Traceback" not in err
    assert kernel_and_state(daemon) == before


def test_no_daemon_message(tmp_path):
    import subprocess

    from tests.integration.conftest import NET

    r = subprocess.run([NET, "-H", f"unix://{tmp_path}/none.sock", "ls"], capture_output=True, text=True)
    assert r.returncode != 0
    assert "net daemon" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_sigkill_and_restart_keeps_everything(make_daemon):
    d = make_daemon()
    ids = [d.net("create", f"n{i}").stdout.strip() for i in range(3)]
    d.net("create", "--subnet", "10.44.0.0/24", "--aux-address", "x=10.44.0.9", "fixed")
    before = {n["Name"]: n for n in json.loads(d.net("ls", "--format", "json").stdout)}
    d.kill()
    d.start()
    after = {n["Name"]: n for n in json.loads(d.net("ls", "--format", "json").stdout)}
    assert after.keys() == before.keys()
    for name in after:
        assert after[name]["Id"] == before[name]["Id"]
        assert after[name]["IPAM"] == before[name]["IPAM"]
    # Allocations survived: the next automatic pool is new, the aux address still reserved.
    new = inspect(d, d.net("create", "later").stdout.strip())
    used = {v["IPAM"]["Config"][0]["Subnet"] for v in after.values() if v["IPAM"]["Config"]}
    assert new["IPAM"]["Config"][0]["Subnet"] not in used
    r = d.net("create", "--subnet", "10.44.0.0/24", "again", check=False)
    assert r.returncode != 0 and "overlaps" in r.stderr
    for nid in ids:
        assert f"br-{nid[:12]}" in link_names(d.ns)


def test_sigterm_clean_exit_and_second_daemon_refused(make_daemon):
    d = make_daemon()
    twin = make_daemon(start=False)
    twin.root = d.root
    with pytest.raises(RuntimeError, match="another daemon"):
        twin.start(timeout=10)
    assert d.stop() == 0
    assert not d.sock.exists()


def test_default_address_pool_option(make_daemon):
    d = make_daemon("--default-address-pool", "base=10.123.0.0/16,size=24")
    assert inspect(d, "bridge")["IPAM"]["Config"][0]["Subnet"] == "10.123.0.0/24"
    assert inspect(d, d.net("create", "x").stdout.strip())["IPAM"]["Config"][0]["Subnet"] == "10.123.1.0/24"


def test_docker_cli_shows_our_error_message(daemon):
    """Docker's CLI unpacks an error's message only from `Content-Type: application/json`
    exactly; with a charset it printed the raw JSON body."""
    import shutil
    import subprocess

    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on PATH (setup installs docker.io)")
    r = subprocess.run(
        [docker, "-H", daemon.host, "network", "create", "--subnet", "10.0.0.0/33", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DOCKER_CONFIG": str(daemon.root)},
    )
    assert r.returncode != 0
    assert r.stderr.strip() == "Error response from daemon: invalid subnet 10.0.0.0/33", r.stderr
