"""Remote plugins for real, inside throwaway namespaces: the SDK example driver and the
served bridge driver, driven through RemoteDriver/RemoteIpam as the core drives them,
with interfaces moved into sandboxes that ping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnm.driverapi import DriverRegistry, EndpointInterface, IPAMData, NetworkSpec
from cnm.ipamapi import IpamRegistry
from cnm.osl.netlink import Netlink
from cnm.plugins.discovery import Discovery
from cnm.sandbox.osl import SandboxOS
from drivers.remote import resolver
from ipam.remote import resolver as ipam_resolver
from tests.integration.conftest import NET, ROOT, link_names, ns_sh, sh, stop

NID = "1" * 64


def start_in_ns(
    ns: str, argv: list[str], sock: Path, log: Path, timeout: float = 15, *, host_mounts: bool = False
) -> subprocess.Popen:
    """Start argv in netns `ns` and wait for its socket. host_mounts: keep the machine's
    mount namespace (nsenter) rather than `ip netns exec`'s private one, as a service
    would run; mounts it makes (overlay namespaces) then outlive it."""
    enter = ["nsenter", f"--net=/run/netns/{ns}"] if host_mounts else ["ip", "netns", "exec", ns]
    proc = subprocess.Popen(
        [*enter, *argv],
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + timeout
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"plugin did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    return proc


@pytest.fixture
def plugin_dir(tmp_path):
    d = tmp_path / "plugins"
    d.mkdir()
    return d


@pytest.fixture
def routed(host_ns, plugin_dir, tmp_path):
    proc = start_in_ns(
        host_ns,
        [sys.executable, "examples/routed_driver.py", "--name", "routed", "--plugin-dir", str(plugin_dir)],
        plugin_dir / "routed.sock",
        tmp_path / "routed.log",
    )
    yield proc
    stop(proc)
    assert not (plugin_dir / "routed.sock").exists()  # the SDK removes its socket


def nsping(key: str, addr: str) -> subprocess.CompletedProcess:
    return sh("nsenter", f"--net={key}", "busybox", "ping", "-c", "1", "-W", "2", addr, check=False)


def test_example_routed_driver_pings(host_ns, plugin_dir, routed, tmp_path):
    drivers = DriverRegistry(fallback=resolver(Discovery([str(plugin_dir)]), timeout=5))
    drv = drivers.get("routed")
    host = Netlink(host_ns)
    boxes = SandboxOS(host, str(tmp_path / "netns"))
    os.makedirs(boxes.netns_dir, exist_ok=True)
    keys = []
    try:
        drv.create_network(NetworkSpec(NID, "r1", {}, ipv4=(IPAMData("10.10.0.0/24", "10.10.0.1/24"),)))
        for i, addr in enumerate(("10.10.0.2/24", "10.10.0.3/24")):
            eid = f"{i + 2}" * 64
            drv.create_endpoint(NID, eid, EndpointInterface(addr), {})
            key = boxes.create(eid)
            keys.append(key)
            result = drv.join(NID, eid, key, {})
            assert result.gateway == "169.254.1.1" and result.static_routes[0].route_type == 1
            boxes.plug(key, result, f"{result.dst_prefix}0", addr, None, default_gateway=True)
        routes = sh("nsenter", f"--net={keys[0]}", "ip", "-4", "route").stdout
        assert "default via 169.254.1.1 dev eth0" in routes and "169.254.1.1 dev eth0 proto static scope link" in routes
        assert nsping(keys[0], "169.254.1.1").returncode == 0  # container -> host end
        assert ns_sh(host_ns, "busybox", "ping", "-c", "1", "-W", "2", "10.10.0.3", check=False).returncode == 0
        assert nsping(keys[0], "10.10.0.3").returncode == 0  # routed between containers
        for i, key in enumerate(keys):
            eid = f"{i + 2}" * 64
            boxes.unplug(key, "eth0")
            drv.leave(NID, eid)
            drv.delete_endpoint(NID, eid)
        assert not any(n.startswith("rt") for n in link_names(host_ns))
        drv.delete_network(NID)
    finally:
        for key in keys:
            boxes.destroy(key)
        host.close()


def test_net_plugin_check_passes_the_example(host_ns, plugin_dir, routed):
    r = sh(NET, "plugin", "check", "routed", "--plugin-dir", str(plugin_dir), "--timeout", "5", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS: 0 error(s)" in r.stdout
    assert not any(n.startswith("rt") for n in link_names(host_ns))  # the check cleaned up
    ls = sh(NET, "plugin", "ls", "--plugin-dir", str(plugin_dir)).stdout
    assert "routed" in ls and "NetworkDriver" in ls and " ok " in ls


def test_served_bridge_and_ipam(host_ns, plugin_dir, tmp_path):
    proc = start_in_ns(
        host_ns,
        [
            NET,
            "plugin",
            "serve",
            "--name",
            "cnmbridge",
            "--driver",
            "bridge",
            "--ipam",
            "--root",
            str(tmp_path / "root"),
            "--plugin-dir",
            str(plugin_dir),
        ],
        plugin_dir / "cnmbridge.sock",
        tmp_path / "serve.log",
    )
    host = Netlink(host_ns)
    boxes = SandboxOS(host, str(tmp_path / "netns"))
    os.makedirs(boxes.netns_dir, exist_ok=True)
    key = None
    try:
        r = sh(NET, "plugin", "check", "cnmbridge", "--plugin-dir", str(plugin_dir), check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        disc = Discovery([str(plugin_dir)])
        drv = DriverRegistry(fallback=resolver(disc)).get("cnmbridge")
        ipam = IpamRegistry(fallback=ipam_resolver(disc)).get("cnmbridge")
        space, _ = ipam.default_address_spaces()
        pool = ipam.request_pool(space, "10.20.0.0/24", None, {}, False)
        gw = ipam.request_address(pool.pool_id, None, {"RequestAddressType": "com.docker.network.gateway"})
        addr = ipam.request_address(pool.pool_id, None, {})
        drv.create_network(
            NetworkSpec(NID, "b1", {"com.docker.network.bridge.name": "br-served"}, ipv4=(IPAMData(pool.subnet, gw),))
        )
        assert "br-served" in link_names(host_ns)
        eid = "9" * 64
        iface = drv.create_endpoint(NID, eid, EndpointInterface(addr), {})
        key = boxes.create(eid)
        result = drv.join(NID, eid, key, {})
        boxes.plug(key, result, "eth0", addr, None, default_gateway=True)
        assert iface.mac and nsping(key, "10.20.0.1").returncode == 0
        boxes.unplug(key, "eth0")
        drv.leave(NID, eid)
        drv.delete_endpoint(NID, eid)
        drv.delete_network(NID)
        assert "br-served" not in link_names(host_ns)
        for a in (addr, gw):
            ipam.release_address(pool.pool_id, a)
        ipam.release_pool(pool.pool_id)
    finally:
        if key:
            boxes.destroy(key)
        host.close()
        stop(proc)


def test_example_driver_through_the_daemon(make_daemon, plugin_dir, routed):
    """The SDK example, found by the daemon in --plugin-dir: containers ping, routed."""
    d = make_daemon("--plugin-dir", str(plugin_dir))
    d.net("create", "-d", "routed", "--subnet", "10.30.0.0/24", "r1")
    a = d.net("run", "-d", "--network", "r1", "--name", "ca", "/bin/busybox", "sleep", "1000").stdout.strip()
    d.net("run", "-d", "--network", "r1", "--name", "cb", "/bin/busybox", "sleep", "1000")
    assert a
    out = d.net("exec", "cb", "--", "/bin/busybox", "ip", "route").stdout
    assert "default via 169.254.1.1 dev eth0" in out
    ip_a = json.loads(d.net("container", "inspect", "ca").stdout)[0]["NetworkSettings"]["Networks"]["r1"]["IPAddress"]
    assert ip_a.startswith("10.30.0.")
    r = d.net("exec", "cb", "--", "/bin/busybox", "ping", "-c1", "-W3", ip_a, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    d.net("container", "rm", "-f", "ca", "cb")
    d.net("network", "rm", "r1")
    assert not any(n.startswith("rt") for n in link_names(d.ns))


def test_a_join_without_gateway_gets_the_gateway_bridge(make_daemon, plugin_dir, tmp_path):
    """A plugin whose Join names no gateway and no default route: the container also
    gets an endpoint on the gateway bridge, with the default route (as overlay does)."""
    d = make_daemon("--plugin-dir", str(plugin_dir))
    proc = start_in_ns(
        d.ns,
        [sys.executable, "tests/integration/nogw_plugin.py", "nogw", str(plugin_dir)],
        plugin_dir / "nogw.sock",
        tmp_path / "nogw.log",
    )
    try:
        d.net("create", "-d", "nogw", "--subnet", "10.31.0.0/24", "ng")
        d.net("run", "-d", "--network", "ng", "--name", "cc", "/bin/busybox", "sleep", "1000")
        routes = d.net("exec", "cc", "--", "/bin/busybox", "ip", "route").stdout
        assert "default via" in routes and "dev eth1" in routes.split("default via", 1)[1].splitlines()[0], routes
        gw = routes.split("default via ", 1)[1].split()[0]
        assert d.net("exec", "cc", "--", "/bin/busybox", "ping", "-c1", "-W2", gw, check=False).returncode == 0
        assert "cnm_gwbridge" in link_names(d.ns)
        d.net("container", "rm", "-f", "cc")
        d.net("network", "rm", "ng")
        assert not any(n.startswith("rt") for n in link_names(d.ns))
    finally:
        stop(proc)
