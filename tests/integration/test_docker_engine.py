"""A real Docker engine (Debian's docker.io 20.10) driving our bridge driver and default
IPAM through `net plugin serve`: networks, containers that ping by address and by name,
clean removal, and our errors surfacing as Docker's. dockerd, its containerd, the plugin
and the containers all run inside one throwaway network namespace (tests/integration/
dockerd.py); the module skips, saying why, where dockerd is missing or cannot start.
Set CNM_REQUIRE_DOCKER=1 to make "cannot start" a failure instead (CI with docker.io)."""

from __future__ import annotations

import ipaddress
import json
import secrets
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.conftest import NET, link_names, ns_sh, sh, stop
from tests.integration.dockerd import IMAGE, DockerEngine, skip_unless_available, start_or_skip
from tests.integration.test_plugins import start_in_ns

pytestmark = pytest.mark.docker

PLUGIN = "cnmbr"


@pytest.fixture(scope="module")
def docker_ok():
    """Skips the module, saying why, where dockerd is not installed (checked first, so no
    namespace is made for nothing)."""
    skip_unless_available()


@pytest.fixture(scope="module")
def dk_ns(docker_ok):
    name = f"cnmdk-{secrets.token_hex(4)}"
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "set", "lo", "up")
    try:
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


@pytest.fixture(scope="module")
def dk_tmp():
    d = Path(tempfile.mkdtemp(prefix="cnmdk-p-", dir="/tmp"))
    (d / "plugins").mkdir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def engine(dk_ns, dk_tmp):
    """A dockerd in dk_ns that discovers plugins in dk_tmp/plugins (skips if it cannot start)."""
    eng = start_or_skip(dk_ns, dk_tmp / "plugins")
    try:
        yield eng
    finally:
        eng.teardown()


def serve(dk_ns, dk_tmp):
    sock = dk_tmp / "plugins" / f"{PLUGIN}.sock"
    return start_in_ns(
        dk_ns,
        [
            NET,
            "plugin",
            "serve",
            "--name",
            PLUGIN,
            "--driver",
            "bridge",
            "--ipam",
            "--plugin-dir",
            str(dk_tmp / "plugins"),
            "--root",
            str(dk_tmp / "proot"),
        ],
        sock,
        dk_tmp / "serve.log",
    )


@pytest.fixture(scope="module")
def plugin(engine, dk_ns, dk_tmp):
    """`net plugin serve` (bridge driver + default IPAM) in the same namespace as dockerd,
    in a one-element list (a test may restart it)."""
    holder = [serve(dk_ns, dk_tmp)]
    yield holder
    stop(holder[0])


@pytest.fixture
def dk(engine, plugin, dk_ns):
    """The engine, with the plugin serving; every container and network removed after."""
    assert plugin[0].poll() is None, "the plugin died"
    yield engine
    engine.remove_all()


def create(dk: DockerEngine, name: str, subnet: str, *opts: str, check: bool = True):
    return dk.docker(
        "network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN, "--subnet", subnet, *opts, name, check=check
    )


def net_inspect(dk: DockerEngine, name: str) -> dict:
    return json.loads(dk.docker("network", "inspect", name).stdout)[0]


def container_ip(dk: DockerEngine, container: str, network: str) -> str:
    doc = json.loads(dk.docker("container", "inspect", container).stdout)[0]
    return doc["NetworkSettings"]["Networks"][network]["IPAddress"]


def run(dk: DockerEngine, name: str, network: str) -> None:
    dk.docker("run", "-d", "--name", name, "--net", network, IMAGE, "sleep", "1000")


def host_links(ns: str) -> set[str]:
    return link_names(ns) - {"lo"}


def test_docker_uses_our_driver_and_ipam(dk, dk_ns):
    nid = create(dk, "n1", "10.77.0.0/24").stdout.strip()
    doc = net_inspect(dk, "n1")
    assert doc["Id"] == nid and doc["Driver"] == PLUGIN and doc["Scope"] == "local"
    assert doc["IPAM"]["Driver"] == PLUGIN
    assert [c["Subnet"] for c in doc["IPAM"]["Config"]] == ["10.77.0.0/24"]

    # the bridge our driver made, addressed with the gateway our IPAM handed out
    bridge = f"br-{nid[:12]}"
    assert bridge in link_names(dk_ns)
    assert "inet 10.77.0.1/24" in sh("ip", "-n", dk_ns, "-o", "-4", "addr", "show", "dev", bridge).stdout

    run(dk, "c1", "n1")
    run(dk, "c2", "n1")
    ip1, ip2 = container_ip(dk, "c1", "n1"), container_ip(dk, "c2", "n1")
    subnet = ipaddress.ip_network("10.77.0.0/24")
    assert ip1 != ip2 and {ipaddress.ip_address(ip1), ipaddress.ip_address(ip2)} <= set(subnet.hosts())
    assert "10.77.0.1" not in (ip1, ip2)
    # the container's eth0 carries our IPAM's address, its default route our gateway
    assert f"inet {ip1}/24" in dk.docker("exec", "c1", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert "default via 10.77.0.1 dev eth0" in dk.docker("exec", "c1", "ip", "route").stdout
    # the host ends of both veths are on our bridge
    ports = sh("ip", "-n", dk_ns, "-o", "link", "show", "master", bridge).stdout.splitlines()
    assert len(ports) == 2, ports

    for src, dst in (("c1", ip2), ("c2", ip1), ("c1", "c2"), ("c2", "c1")):  # by IP, by name
        r = dk.docker("exec", src, "ping", "-c", "1", "-W", "2", dst, check=False)
        assert r.returncode == 0, f"{src} -> {dst}: {r.stdout}{r.stderr}"
    r = dk.docker("run", "--rm", "--net", "n1", IMAGE, "ping", "-c", "1", "-W", "2", "c1", check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_network_rm_leaves_nothing_and_frees_the_pool(dk, dk_ns):
    nid = create(dk, "n2", "10.77.1.0/24", "-o", "com.docker.network.bridge.name=cnmbr-n2").stdout.strip()
    assert "cnmbr-n2" in link_names(dk_ns)  # our driver honoured the option Docker passed
    run(dk, "c1", "n2")
    first_ip = container_ip(dk, "c1", "n2")
    dk.docker("rm", "-f", "c1")
    assert host_links(dk_ns) == {"cnmbr-n2"}  # the container's veth is gone, the bridge stays
    dk.docker("network", "rm", "n2")
    assert host_links(dk_ns) == set()
    assert "cnmbr-n2" not in ns_sh(dk_ns, "nft", "list", "ruleset").stdout  # no firewall leftovers
    assert nid[:12] not in ns_sh(dk_ns, "nft", "list", "ruleset").stdout

    # the pool and its addresses went back to our IPAM: the same subnet again, same first address
    create(dk, "n2", "10.77.1.0/24", "-o", "com.docker.network.bridge.name=cnmbr-n2")
    run(dk, "c1", "n2")
    assert container_ip(dk, "c1", "n2") == first_ip
    dk.docker("rm", "-f", "c1")
    dk.docker("network", "rm", "n2")
    assert host_links(dk_ns) == set()


def test_driver_error_is_a_clear_docker_error(dk, dk_ns):
    r = create(dk, "bad", "10.77.2.0/24", "-o", "bogus=1", check=False)
    assert r.returncode != 0
    assert "unknown option 'bogus' for the bridge driver" in r.stderr, r.stderr
    assert host_links(dk_ns) == set()
    assert "bad" not in dk.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    # Docker gave the pool back to our IPAM after the driver refused: the subnet is free
    create(dk, "good", "10.77.2.0/24")
    dk.docker("network", "rm", "good")
    assert host_links(dk_ns) == set()


def test_ipam_error_is_a_clear_docker_error(dk, dk_ns):
    create(dk, "n3", "10.77.3.0/24")
    r = create(dk, "n4", "10.77.3.128/25", check=False)  # overlaps n3's pool in our IPAM
    assert r.returncode != 0
    assert "10.77.3.128/25" in r.stderr and "overlap" in r.stderr.lower(), r.stderr
    assert "n4" not in dk.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert len([n for n in host_links(dk_ns) if n.startswith("br-")]) == 1


def test_pool_chosen_by_our_ipam(dk, dk_ns):
    """No --subnet: our IPAM picks the pool, and Docker shows its subnet and gateway."""
    nid = dk.docker("network", "create", "-d", PLUGIN, "--ipam-driver", PLUGIN, "auto").stdout.strip()
    [cfg] = net_inspect(dk, "auto")["IPAM"]["Config"]
    subnet, gateway = ipaddress.ip_network(cfg["Subnet"]), cfg.get("Gateway", "")
    assert gateway and ipaddress.ip_address(gateway) in subnet, cfg
    out = sh("ip", "-n", dk_ns, "-o", "-4", "addr", "show", "dev", f"br-{nid[:12]}").stdout
    assert f"inet {gateway}/{subnet.prefixlen}" in out
    run(dk, "c1", "auto")
    assert ipaddress.ip_address(container_ip(dk, "c1", "auto")) in subnet


def test_ipam_error_text_is_plain(dk):
    create(dk, "n3", "10.77.4.0/24")
    r = create(dk, "n4", "10.77.4.0/25", check=False)
    assert r.returncode != 0
    # Our IPAM errors carry "Err" as well as "Error": Docker reads only "Err" from a
    # non-200 answer, and would otherwise show the raw JSON.
    assert '{"Error"' not in r.stderr and "overlaps" in r.stderr, r.stderr


def test_published_ports_reach_the_container(dk, dk_ns):
    """`docker run -p`: Docker sends the bindings with Proto as a number (6, 17);
    our driver publishes them (nftables DNAT), and withdraws them with the container."""
    create(dk, "pub", "10.77.5.0/24")
    dk.docker(
        "run",
        "-d",
        "--name",
        "web",
        "--net",
        "pub",
        "-p",
        "8080:80",
        "-p",
        "5353:53/udp",
        IMAGE,
        "sh",
        "-c",
        "echo hello-from-web > /index.html; exec httpd -f -p 80 -h /",
    )
    rules = sh("ip", "netns", "exec", dk_ns, "nft", "list", "table", "inet", "cnm").stdout
    assert "8080" in rules and "5353" in rules
    for target in ("10.77.5.1:8080", "127.0.0.1:8080"):  # via the bridge, and from the host itself
        for _ in range(20):
            r = sh(
                "nsenter",
                f"--net=/run/netns/{dk_ns}",
                "timeout",
                "3",
                "busybox",
                "wget",
                "-q",
                "-O-",
                f"http://{target}/",
                check=False,
            )
            if r.returncode == 0:
                break
            time.sleep(0.1)
        assert r.stdout.strip() == "hello-from-web", (target, r.stdout, r.stderr)
    dk.docker("rm", "-f", "web")
    rules = sh("ip", "netns", "exec", dk_ns, "nft", "list", "table", "inet", "cnm").stdout
    assert "8080" not in rules and "5353" not in rules


def test_dockerd_restart_keeps_the_network_and_restarts_containers_on_it(dk, dk_ns):
    """A service restart of dockerd: it stops its containers (Leave, DeleteEndpoint to
    the plugin), starts again, and brings back `--restart always` containers (Join)."""
    nid = create(dk, "rs", "10.77.6.0/24").stdout.strip()
    dk.docker(
        "run",
        "-d",
        "--name",
        "keep",
        "--restart",
        "always",
        "--stop-timeout",
        "1",
        "--net",
        "rs",
        IMAGE,
        "sleep",
        "1000",
    )
    dk.restart()
    deadline = time.monotonic() + 20
    while dk.docker("inspect", "-f", "{{.State.Running}}", "keep").stdout.strip() != "true":
        assert time.monotonic() < deadline, "the container did not come back"
        time.sleep(0.2)
    ip = container_ip(dk, "keep", "rs")
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.77.6.0/24")
    r = dk.docker("run", "--rm", "--net", "rs", IMAGE, "ping", "-c", "1", "-W", "2", "keep", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    # one veth on the bridge: the endpoint from before the restart was removed, not leaked
    ports = sh("ip", "-n", dk_ns, "-o", "link", "show", "master", f"br-{nid[:12]}").stdout.splitlines()
    assert len(ports) == 1, ports


def test_a_restarted_plugin_still_serves_what_docker_made(dk, dk_ns, dk_tmp, plugin):
    """Docker replays nothing to a restarted plugin: it restores its networks and
    endpoints from its state, so later calls on them (Join, DeleteEndpoint) work."""
    nid = create(dk, "kept", "10.77.7.0/24").stdout.strip()
    run(dk, "old", "kept")
    stop(plugin[0])
    plugin[0] = serve(dk_ns, dk_tmp)
    r = dk.docker("run", "--rm", "--net", "kept", IMAGE, "ping", "-c", "1", "-W", "2", "old", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    dk.docker("rm", "-f", "old")  # DeleteEndpoint on a restored endpoint
    ports = sh("ip", "-n", dk_ns, "-o", "link", "show", "master", f"br-{nid[:12]}").stdout.splitlines()
    assert ports == []
    dk.docker("network", "rm", "kept")
    assert f"br-{nid[:12]}" not in link_names(dk_ns)
