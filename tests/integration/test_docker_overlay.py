"""Two real Docker engines (no swarm) on two "hosts" (network namespaces joined by a
198.18.0.0/15 underlay) share one VXLAN overlay through `net plugin serve --driver
overlay --ipam`, with etcd as the cluster store: containers on different engines ping
each other, addresses are unique across hosts, a plugin restart keeps serving, and
removing the networks on both hosts frees everything in etcd. Skips, saying why,
where dockerd is missing or cannot start (tests/integration/dockerd.py)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from cnm.cluster.etcd_server import EtcdMember
from tests.integration.conftest import NET, sh, stop
from tests.integration.dockerd import IMAGE, DockerEngine, skip_unless_available, start_or_skip
from tests.integration.test_plugins import start_in_ns

pytestmark = pytest.mark.docker

PLUGIN = "cnmov"
UNDERLAY = {"a": "198.18.71.1", "b": "198.18.71.2"}
ETCD = f"http://{UNDERLAY['a']}:2379"


class Host:
    def __init__(self, key: str, ns: str, base: Path) -> None:
        self.key, self.ns, self.base = key, ns, base
        self.plugins = base / "plugins"
        self.plugins.mkdir(parents=True)
        self.engine: DockerEngine | None = None
        self.plugin: subprocess.Popen | None = None

    @property
    def addr(self) -> str:
        return UNDERLAY[self.key]

    def serve(self) -> None:
        """The plugin in this host's network namespace but the machine's mount namespace,
        as on a real host: `ip netns exec` would give it a private mount namespace, and
        the overlay namespaces it bind-mounts would die with it at a restart."""
        self.plugin = start_in_ns(
            self.ns,
            [
                NET,
                "plugin",
                "serve",
                "--name",
                PLUGIN,
                "--driver",
                "overlay",
                "--ipam",
                "--cluster-store",
                f"etcd://{UNDERLAY['a']}:2379",
                "--advertise",
                self.addr,
                "--plugin-dir",
                str(self.plugins),
                "--root",
                str(self.base / "root"),
            ],
            self.plugins / f"{PLUGIN}.sock",
            self.base / "serve.log",
            timeout=20,
            host_mounts=True,
        )

    def stop_plugin(self) -> None:
        if self.plugin is not None:
            stop(self.plugin)
            self.plugin = None

    def docker(self, *args: str, check: bool = True, timeout: float = 60):
        return self.engine.docker(*args, check=check, timeout=timeout)


@pytest.fixture(scope="module")
def hosts():
    skip_unless_available()
    tag = secrets.token_hex(3)
    base = Path(tempfile.mkdtemp(prefix="cnmdo-", dir="/tmp"))
    made: list[Host] = []
    etcd = None
    try:
        for key in "ab":
            ns = f"cnmdo-{tag}-{key}"
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            made.append(Host(key, ns, base / key))
        a, b = made
        sh("ip", "link", "add", f"ul{tag}a", "netns", a.ns, "type", "veth", "peer", "name", f"ul{tag}b", "netns", b.ns)
        for h, dev in ((a, f"ul{tag}a"), (b, f"ul{tag}b")):
            sh("ip", "-n", h.ns, "addr", "add", f"{h.addr}/24", "dev", dev)
            sh("ip", "-n", h.ns, "link", "set", dev, "up")
        etcd = EtcdMember(
            name="e1",
            data_dir=base / "etcd",
            client_url=ETCD,
            peer_url=f"http://{UNDERLAY['a']}:2380",
            initial_cluster={"e1": f"http://{UNDERLAY['a']}:2380"},
            netns=a.ns,
        ).start()
        for h in made:
            h.engine = start_or_skip(h.ns, h.plugins, base=h.base / "dk")
            h.serve()
        yield made
    finally:
        # Networks go while the plugins still answer (Docker retries a missing plugin
        # for a long time), then the plugins, then the engines.
        for h in made:
            if h.engine is not None and h.plugin is not None:
                h.engine.remove_all()
        for h in made:
            h.stop_plugin()
            if h.engine is not None:
                h.engine.teardown()
        mounts = [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(base))
        ]
        for m in sorted(mounts, reverse=True):  # overlay namespaces left by a failure
            sh("umount", m, check=False)
        if etcd is not None:
            etcd.stop()
        for h in made:
            sh("ip", "netns", "del", h.ns, check=False)
        shutil.rmtree(base, ignore_errors=True)


def etcd_keys(host: Host, prefix: str) -> list[str]:
    """Keys under <prefix> in the cluster store (asked from the host's namespace)."""
    from cnm.osl.netns import netns_path, run_in_netns
    from cnm.store.etcd import EtcdStore

    def ask() -> list[str]:
        store = EtcdStore([ETCD])
        try:
            return [kv.key for kv in store.list(prefix)]
        finally:
            store.close()

    return run_in_netns(netns_path(host.ns), ask)


def ip_of(h: Host, container: str, network: str) -> str:
    doc = json.loads(h.docker("container", "inspect", container).stdout)[0]
    return doc["NetworkSettings"]["Networks"][network]["IPAddress"]


def pings(h: Host, container: str, target: str, tries: int = 20) -> bool:
    for _ in range(tries):  # the peer reaches the other host through etcd: allow a moment
        if h.docker("exec", container, "ping", "-c1", "-W1", target, check=False).returncode == 0:
            return True
        time.sleep(0.2)
    return False


def test_one_overlay_across_two_docker_engines(hosts):
    a, b = hosts
    for h in hosts:
        h.docker(
            "network",
            "create",
            "-d",
            PLUGIN,
            "--ipam-driver",
            PLUGIN,
            "--subnet",
            "10.90.0.0/24",
            "--aux-address",
            "router=10.90.0.250",
            "web",
        )  # aux: the same on every host
    a.docker("run", "-d", "--name", "wa", "--net", "web", IMAGE, "sleep", "1000")
    b.docker("run", "-d", "--name", "wb", "--net", "web", IMAGE, "sleep", "1000")
    ipa, ipb = ip_of(a, "wa", "web"), ip_of(b, "wb", "web")
    assert ipa != ipb and ipa.startswith("10.90.0.") and ipb.startswith("10.90.0.")  # one IPAM for both
    assert pings(a, "wa", ipb) and pings(b, "wb", ipa)
    # VXLAN overhead taken off the underlay's 1500
    assert "mtu 1450" in b.docker("exec", "wb", "ip", "link", "show", "eth0").stdout
    # One VNI, one record, both hosts members
    [record] = etcd_keys(a, "plugin-overlay/")
    assert len(etcd_keys(a, "plugin-overlay-members/")) == 2 and len(etcd_keys(a, "vni/")) == 1


def test_dual_stack_overlay_carries_ipv6_between_hosts(hosts):
    a, b = hosts
    for h in hosts:
        h.docker(
            "network",
            "create",
            "-d",
            PLUGIN,
            "--ipam-driver",
            PLUGIN,
            "--subnet",
            "10.94.0.0/24",
            "--ipv6",
            "--subnet",
            "fd00:94::/64",
            "dual",
        )
    a.docker("run", "-d", "--name", "da", "--net", "dual", IMAGE, "sleep", "1000")
    b.docker("run", "-d", "--name", "db", "--net", "dual", IMAGE, "sleep", "1000")
    v6 = a.docker("inspect", "-f", "{{.NetworkSettings.Networks.dual.GlobalIPv6Address}}", "da").stdout.strip()
    assert v6.startswith("fd00:94::")
    assert pings(b, "db", v6), "IPv6 across the overlay"
    assert pings(b, "db", ip_of(a, "da", "dual"))
    for h in hosts:
        h.docker("rm", "-f", "da" if h is a else "db")
        h.docker("network", "rm", "dual")


def test_a_restarted_plugin_keeps_serving_its_networks(hosts):
    a, b = hosts
    a.stop_plugin()
    a.serve()  # Docker replays nothing: the plugin restores
    a.docker("run", "-d", "--name", "wa2", "--net", "web", IMAGE, "sleep", "1000")
    b.docker("run", "-d", "--name", "wb2", "--net", "web", IMAGE, "sleep", "1000")
    assert pings(a, "wa2", ip_of(b, "wb2", "web"))
    assert pings(b, "wb2", ip_of(a, "wa2", "web"))
    assert pings(b, "wb", ip_of(a, "wa", "web"))
    # every joined endpoint is still announced: the restart withdrew none of a's
    time.sleep(2.5)  # past the sync loop's retry period
    assert len(etcd_keys(a, "peers/")) == 4
    assert pings(b, "wb", ip_of(a, "wa", "web"))


def test_docker_default_ipam_clash_is_refused_clearly(hosts):
    """Without the plugin's IPAM each engine hands out the same first address; the
    second endpoint is refused, naming the other host, and nothing is left of it."""
    a, b = hosts
    for h in hosts:
        h.docker("network", "create", "-d", PLUGIN, "--subnet", "10.91.0.0/24", "-o", "cnm.overlay.name=solo", "solo")
    a.docker("run", "-d", "--name", "sa", "--net", "solo", IMAGE, "sleep", "1000")
    # no wait: the address is claimed in etcd at CreateEndpoint, not learnt from a watch
    r = b.docker("run", "-d", "--name", "sb", "--net", "solo", IMAGE, "sleep", "1000", check=False)
    assert r.returncode != 0 and "already used on host 198.18.71.1" in r.stderr, r.stderr
    b.docker("rm", "-f", "sb", check=False)
    a.docker("rm", "-f", "sa")
    for h in hosts:
        h.docker("network", "rm", "solo")


def test_net_plugin_check_passes_the_served_overlay(hosts):
    a, b = hosts
    r = sh(
        "nsenter",
        f"--net=/run/netns/{b.ns}",
        NET,
        "plugin",
        "check",
        PLUGIN,
        "--plugin-dir",
        str(b.plugins),
        check=False,
        timeout=60,
    )
    assert r.returncode == 0 and "PASS" in r.stdout, r.stdout + r.stderr
    assert "NetworkDriver" in r.stdout and "IpamDriver" in r.stdout


def test_forget_host_refuses_a_live_host(hosts):
    a, b = hosts

    def forget(addr):
        return sh(
            "ip",
            "netns",
            "exec",
            a.ns,
            NET,
            "plugin",
            "forget-host",
            addr,
            "--cluster-store",
            f"etcd://{UNDERLAY['a']}:2379",
            check=False,
        )

    r = forget(b.addr)
    assert r.returncode != 0 and f"host {b.addr} is alive" in r.stderr, r.stdout + r.stderr
    assert len(etcd_keys(a, "plugin-overlay-members/")) == 2  # nothing changed
    r = forget("198.18.71.9")
    assert r.returncode == 0 and "holds nothing" in r.stdout


def test_removing_the_network_everywhere_frees_the_cluster(hosts):
    a, b = hosts
    for h in hosts:
        h.engine.remove_all()
    for prefix in (
        "plugin-overlay/",
        "plugin-overlay-members/",
        "plugin-overlay-addrs/",
        "vni/",
        "plugin-pool/",
        "ipam/",
        "peers/",
    ):
        assert etcd_keys(a, prefix) == [], prefix
    for h in hosts:
        overlay_ns = list((h.base / "root" / "run").rglob("*")) if (h.base / "root" / "run").exists() else []
        assert [p for p in overlay_ns if p.is_file()] == []
