"""The real ContainerService over a FakeHost (fakes at the OS seam, a runtime of plain
child processes): what a run, connect, disconnect, exit, remove and restart leave in
the namespaces, the store, the port allocator and the runtime."""

from __future__ import annotations

import pytest

from cnm.container_requests import ContainerCreate, EndpointRequest
from cnm.containers import CT_PREFIX
from cnm.errors import Conflict, Forbidden, InvalidParameter, NotFound
from cnm.naming import GATEWAY_BRIDGE
from cnm.ports import PortBinding
from cnm.requests import IPAMConfigRequest, NetworkCreate
from cnm.sandbox.sandbox import SANDBOX_PREFIX
from tests.unit.fakehost import HOST_HOSTS, HOST_RESOLV, FakeHost

SLEEP = ["sleep", "30"]


@pytest.fixture
def host():
    h = FakeHost()
    yield h
    h.close()


def network(host: FakeHost, name: str, subnet: str, driver: str = "bridge"):
    return host.controller.create_network(
        NetworkCreate(name=name, driver=driver, ipam_configs=[IPAMConfigRequest(subnet=subnet)])
    )


def run(host: FakeHost, name: str, mode: str = "bridge", argv=SLEEP, **kw):
    return host.containers.run(ContainerCreate(argv=list(argv), name=name, network_mode=mode, **kw))


def state(host: FakeHost) -> tuple:
    """Everything a failed operation must leave as it was."""
    return (
        sorted(kv.key for kv in host.store.list("")),
        sorted(host.world.namespaces),
        host.host_links(),
        host.ports.allocations(),
        sorted(host.runtime.specs),
    )


def test_run_on_the_default_bridge(host):
    ct = run(host, "web", ports=[PortBinding("tcp", 80, None, None)], hostname="box")
    spec = host.runtime.specs[ct.id]
    sb = host.containers.sandbox(ct)
    assert sb is not None and spec.netns == sb.key == ct.sandbox_key
    assert host.ns(sb.key).addresses("eth0") == ["172.17.0.2/16"]
    assert spec.hosts is not None and spec.hosts.splitlines()[-1] == "172.17.0.2\tbox"
    assert spec.resolv_conf == HOST_RESOLV  # the default bridge keeps the host's resolvers
    assert ct.ports == [
        {"proto": "tcp", "container_port": 80, "host_ip": None, "host_port": 32768, "host_port_end": None}
    ]
    rec = host.store.get(CT_PREFIX + ct.id).value
    bridge = host.controller.get_network("bridge")
    assert rec["networks"] == [{"network": bridge.id, "ip": None, "ip6": None, "mac": None, "aliases": []}]
    assert rec["sandbox_id"] == ct.id and not rec["released"]
    assert host.containers.is_running(ct)


def test_a_failed_run_leaves_nothing(host):
    net = network(host, "n1", "10.8.0.0/24")
    before = state(host)
    with pytest.raises(InvalidParameter, match="cannot run"):
        run(host, "bad", "n1", argv=["/no/such/program"])
    with pytest.raises(Conflict, match="already"):
        run(host, "ip", "n1", endpoint=EndpointRequest(ip="10.8.0.1"))  # the gateway's address
    with pytest.raises(NotFound, match="network nosuch not found"):
        run(host, "nonet", "nosuch")
    host.free_port = False
    with pytest.raises(Conflict, match="in use"):
        run(host, "port", "n1", ports=[PortBinding("tcp", 80, None, 8080)])
    host.settle()
    assert state(host) == before
    assert host.controller.endpoints_of(net.id) == []
    assert host.containers.list_containers() == []


def test_host_none_and_container_modes(host):
    h = run(host, "h1", "host")
    spec = host.runtime.specs[h.id]
    assert (spec.netns, spec.hosts, spec.resolv_conf) == ("host", HOST_HOSTS, HOST_RESOLV)
    assert h.sandbox_id is None and host.containers.endpoints(h) == []
    n = run(host, "n1", "none")
    sb = host.containers.sandbox(n)
    assert sb is not None and host.ns(sb.key).link_names() == ["lo"]
    x = run(host, "x1", hostname="xhost")
    c = run(host, "c1", "container:x1")
    spec = host.runtime.specs[c.id]
    assert spec.netns == x.sandbox_key and c.shared_with == x.id and c.hostname == "xhost"
    assert spec.hosts == host.containers.sandbox(x).hosts()
    assert c.sandbox_id is None
    with pytest.raises(InvalidParameter, match="shares another container's"):
        run(host, "c2", "container:c1")
    with pytest.raises(Forbidden, match="shares the network namespace"):
        host.containers.connect("bridge", "c1", EndpointRequest())
    with pytest.raises(Conflict, match="shares its network with running"):
        host.containers.remove("x1", force=True)
    # The host and null drivers' networks, named by ID, are those modes.
    assert run(host, "h2", host.controller.get_network("host").id).network_mode == "host"
    assert run(host, "n2", host.controller.get_network("none").id[:12]).network_mode == "none"
    for mode in ("none", "host", "container:x1", host.controller.get_network("none").id):
        with pytest.raises(InvalidParameter, match="need a bridge or user network"):
            run(host, "n3", mode, endpoint=EndpointRequest(aliases=["a"]))
        with pytest.raises(InvalidParameter, match="need a bridge or user network"):
            run(host, "n3", mode, ports=[PortBinding("tcp", 80, None, None)])


def test_connect_and_disconnect_keep_the_request_in_the_record(host):
    network(host, "n2", "10.9.0.0/24")
    ct = run(host, "web")
    ep = host.containers.connect("n2", "web", EndpointRequest(ip="10.9.0.7", aliases=["api"]))
    assert ep.ifname == "eth1" and str(ep.address) == "10.9.0.7/24"
    n2 = host.controller.get_network("n2")
    assert [a["network"] for a in ct.networks][-1] == n2.id and ct.networks[-1]["aliases"] == ["api"]
    with pytest.raises(Conflict, match="already exists in network n2"):
        host.containers.connect("n2", "web", EndpointRequest())
    host.containers.disconnect("n2", "web")
    assert [a["network"] for a in ct.networks] == [host.controller.get_network("bridge").id]
    assert [e.ifname for e in host.containers.endpoints(ct)] == ["eth0"]
    assert host.store.get(CT_PREFIX + ct.id).value["networks"] == ct.networks
    with pytest.raises(NotFound, match="is not connected to network n2"):
        host.containers.disconnect("n2", "web")


def test_exit_releases_the_sandbox_and_a_new_one_can_be_built(host):
    network(host, "n2", "10.9.0.0/24")
    ct = run(
        host,
        "web",
        "n2",
        endpoint=EndpointRequest(ip="10.9.0.9", aliases=["www"]),
        ports=[PortBinding("tcp", 80, None, 8080)],
    )
    key = ct.sandbox_key
    host.containers.stop("web", timeout=5)
    assert ct.released and ct.sandbox_id is None and ct.ports == []
    assert key not in host.world.namespaces
    assert host.controller.all_endpoints() == [] and host.ports.allocations() == []
    assert host.store.get(SANDBOX_PREFIX + ct.id) is None
    # What was asked for is still there, and builds the same network again (restart).
    sb = host.containers._build_sandbox(ct)
    ep = sb.endpoints()[0]
    assert (str(ep.address), ep.aliases) == ("10.9.0.9/24", ["www"])
    assert [p.host_port for p in sb.published_ports()] == [8080]
    host.containers._release_network(ct)  # the restart path's other half


def test_auto_remove_keeps_the_exit_code(host):
    ct = run(host, "once", argv=["sh", "-c", "exit 3"], auto_remove=True)
    host.runtime.wait(ct.id, 5)
    host.containers.handle_exit(ct.id)
    assert host.containers.list_containers() == [] and host.containers.exit_codes[ct.id] == 3
    assert host.controller.all_endpoints() == [] and host.world.namespaces == {}
    history, _ = host.events.subscribe(lambda ev: None, since=0)
    assert [(e.type, e.action) for e in history if ct.id in (e.actor_id, e.attributes.get("container"))] == [
        ("container", "create"),
        ("network", "connect"),
        ("container", "start"),
        ("container", "die"),
        ("network", "disconnect"),
        ("container", "destroy"),
    ]  # Docker's order: the network at start


def test_gateway_bridge_for_a_network_without_a_way_out(host):
    network(host, "ov", "10.2.0.0/24", driver="nogw")
    ct = run(host, "o1", "ov", ports=[PortBinding("tcp", 80, None, None)])
    eps = host.containers.endpoints(ct)
    gw = host.controller.get_network(GATEWAY_BRIDGE)
    assert [e.network_id for e in eps][1] == gw.id
    assert host.default_routes(ct.sandbox_key)["0.0.0.0/0"][0] == "eth1"
    assert list(host.firewall.published) == [eps[1].id]
    host.containers.remove("o1", force=True)
    assert host.controller.endpoints_of(gw.id) == [] and host.firewall.published == {}


def test_a_restarted_daemon_adopts_running_containers_and_cleans_up_the_rest(host):
    network(host, "n2", "10.9.0.0/24")
    up = run(host, "up", "n2", ports=[PortBinding("tcp", 80, None, 8080)])
    down = run(host, "down", "n2")
    host.runtime.kill(down.id)
    host.runtime.wait(down.id, 5)  # exits while "the daemon is down"
    again = host.restarted()
    cts = {c.name: c for c in again.containers.list_containers()}
    assert not cts["up"].released and cts["down"].released
    sb = again.containers.sandbox(cts["up"])
    assert sb is not None and sb.key == up.sandbox_key and up.sandbox_key in again.world.namespaces
    assert [a[2] for a in again.ports.allocations()] == [8080]  # the new allocator knows the port
    assert [str(e.address) for e in again.containers.endpoints(cts["up"])] == ["10.9.0.2/24"]
    assert down.sandbox_key not in again.world.namespaces
    n2 = again.controller.get_network("n2")
    assert [e.container_id for e in again.controller.endpoints_of(n2.id)] == [up.id]
    # An endpoint no sandbox owns (a crash between two writes) is released at the next start.
    stray = again.controller.create_endpoint(n2, "stray")
    third = again.restarted()
    assert [e.id for e in third.controller.all_endpoints()] == [e.id for e in third.containers.endpoints(cts["up"])]
    assert stray.id not in {e.id for e in third.controller.all_endpoints()}
