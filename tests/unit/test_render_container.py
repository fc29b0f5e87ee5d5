"""Docker-shaped container JSON (inspect and ps): pure rendering."""

from __future__ import annotations

import pytest

from cnm.containers import Container
from cnm.model import Endpoint, Network, PoolConfig
from cnm.render_container import container_json, container_summary, parse_time, status_text
from cnm.runtime.state import ContainerState

CID = "a" * 64
NOW = parse_time("2024-05-01T12:00:10.000000Z")
BRIDGE = Network(
    id="b" * 64,
    name="bridge",
    driver="bridge",
    builtin=True,
    pools=[PoolConfig(subnet="172.17.0.0/16", pool_id="p", gateway="172.17.0.1")],
)
FRONT = Network(id="f" * 64, name="front", driver="bridge")
HOST = Network(id="h" * 64, name="host", driver="host", builtin=True)
NONE = Network(id="n" * 64, name="none", driver="null", builtin=True)
NETS = {n.id: n for n in (BRIDGE, FRONT, HOST, NONE)}


def running(pid: int = 4242) -> ContainerState:
    return ContainerState(CID, "running", pid, 4000, None, "2024-05-01T12:00:05.000000Z")


def exited(code: int = 3) -> ContainerState:
    return ContainerState(CID, "exited", 4242, 4000, code, "2024-05-01T12:00:01.000000Z", "2024-05-01T12:00:08.000000Z")


def ct(**kw) -> Container:
    base = dict(
        id=CID,
        name="web",
        created="2024-05-01T12:00:00.123456Z",
        argv=["sh", "-c", "sleep 100"],
        env={"A": "1", "B": "x=y"},
        hostname="aaaaaaaaaaaa",
    )
    base.update(kw)
    return Container(**base)


def ep(net: Network, n: int = 2, **kw) -> Endpoint:
    base = dict(
        id=f"{n}" * 64,
        name="web",
        network_id=net.id,
        address=f"172.17.0.{n}/16",
        mac=f"02:42:ac:11:00:0{n}",
        gateway="172.17.0.1",
        ifname="eth0",
        container_id=CID,
    )
    base.update(kw)
    return Endpoint(**base)


def test_running_bridge_container_with_published_port():
    c = ct(
        sandbox_id=CID,
        sandbox_key="/run/cnm/netns/aaaa",
        requested_ports=[
            {"proto": "tcp", "container_port": 80, "host_ip": None, "host_port": None, "host_port_end": None},
            {"proto": "udp", "container_port": 53, "host_ip": "127.0.0.1", "host_port": 5353, "host_port_end": None},
        ],
        ports=[
            {"proto": "tcp", "container_port": 80, "host_ip": None, "host_port": 32768, "host_port_end": None},
            {"proto": "udp", "container_port": 53, "host_ip": "127.0.0.1", "host_port": 5353, "host_port_end": None},
        ],
        memory=64 << 20,
        cpus=1.5,
        pids_limit=100,
    )
    out = container_json(c, running(), [ep(BRIDGE, address_v6="fd00::2/64", gateway_v6="fd00::1")], NETS)
    assert out["Id"] == CID and out["Name"] == "/web" and out["Path"] == "sh" and out["Args"] == ["-c", "sleep 100"]
    assert out["State"] == {
        "Status": "running",
        "Running": True,
        "Paused": False,
        "Restarting": False,
        "OOMKilled": False,
        "Dead": False,
        "Pid": 4242,
        "ExitCode": 0,
        "Error": "",
        "StartedAt": "2024-05-01T12:00:05.000000Z",
        "FinishedAt": "0001-01-01T00:00:00Z",
    }
    hc = dict(out["HostConfig"])
    confinement = {
        k: hc.pop(k)
        for k in (
            "CapAdd",
            "CapDrop",
            "Privileged",
            "SecurityOpt",
            "Binds",
            "Mounts",
            "Tmpfs",
            "ReadonlyRootfs",
            "Devices",
            "MaskedPaths",
            "ReadonlyPaths",
        )
    }
    assert {k: hc[k] for k in ("NetworkMode", "AutoRemove", "Memory", "NanoCpus", "PidsLimit", "PortBindings")} == {
        "NetworkMode": "bridge",
        "AutoRemove": False,
        "Memory": 64 << 20,
        "NanoCpus": 1_500_000_000,
        "PidsLimit": 100,
        "PortBindings": {
            "80/tcp": [{"HostIp": "", "HostPort": ""}],
            "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
        },
    }
    # a default container: Docker's defaults, shown as Docker's inspect shows them
    assert (confinement["CapAdd"], confinement["Privileged"], confinement["Binds"]) == (None, False, None)
    assert "/proc/kcore" in confinement["MaskedPaths"] and "/proc/sys" in confinement["ReadonlyPaths"]
    assert out["Mounts"] == []
    # What Docker's clients read (docker-py's logs() and run() read Tty and LogConfig.Type).
    assert hc["LogConfig"] == {"Type": "json-file", "Config": {}} and hc["RestartPolicy"]["Name"] == "no"
    cfg = out["Config"]
    assert {k: cfg[k] for k in ("Hostname", "Env", "Cmd")} == {
        "Hostname": "aaaaaaaaaaaa",
        "Env": ["A=1", "B=x=y"],
        "Cmd": ["sh", "-c", "sleep 100"],
    }
    assert cfg["Tty"] is False and cfg["OpenStdin"] is False and cfg["AttachStdout"] is True
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}} and cfg["Labels"] == {}
    ns = out["NetworkSettings"]
    assert ns["Ports"] == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}],
        "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
    }
    assert (ns["SandboxID"], ns["SandboxKey"]) == (CID, "/run/cnm/netns/aaaa")
    assert (ns["IPAddress"], ns["IPPrefixLen"], ns["Gateway"], ns["MacAddress"]) == (
        "172.17.0.2",
        16,
        "172.17.0.1",
        "02:42:ac:11:00:02",
    )
    assert (ns["GlobalIPv6Address"], ns["GlobalIPv6PrefixLen"], ns["IPv6Gateway"]) == ("fd00::2", 64, "fd00::1")
    bridge = ns["Networks"]["bridge"]
    assert list(ns["Networks"]) == ["bridge"]
    assert bridge["NetworkID"] == BRIDGE.id and bridge["EndpointID"] == "2" * 64
    assert (bridge["IPAddress"], bridge["IPPrefixLen"], bridge["MacAddress"]) == ("172.17.0.2", 16, "02:42:ac:11:00:02")
    assert bridge["Aliases"] is None and bridge["IPAMConfig"] is None


def test_two_networks_first_endpoint_fills_the_top_level_fields():
    first = ep(FRONT, 5, address="10.5.0.5/24", gateway="10.5.0.1", aliases=["api"])
    second = ep(BRIDGE, 3, ifname="eth1", gateway=None)
    out = container_json(ct(network_mode="front"), running(), [first, second], NETS)
    ns = out["NetworkSettings"]
    assert (ns["IPAddress"], ns["IPPrefixLen"], ns["Gateway"]) == ("10.5.0.5", 24, "10.5.0.1")
    assert set(ns["Networks"]) == {"front", "bridge"}
    assert ns["Networks"]["front"]["Aliases"] == ["api"]
    assert ns["Networks"]["bridge"]["Gateway"] == ""


def test_exited_container_released_its_network_and_ports():
    c = ct(
        released=True,
        requested_ports=[
            {"proto": "tcp", "container_port": 80, "host_ip": None, "host_port": 8080, "host_port_end": None}
        ],
    )
    out = container_json(c, exited(3), [], NETS)
    st = out["State"]
    assert (st["Status"], st["Running"], st["Pid"], st["ExitCode"]) == ("exited", False, 0, 3)
    assert st["FinishedAt"] == "2024-05-01T12:00:08.000000Z"
    assert out["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    ns = out["NetworkSettings"]
    assert ns["Ports"] == {"80/tcp": None}
    assert ns["IPAddress"] == ""
    assert list(ns["Networks"]) == ["bridge"]
    assert ns["Networks"]["bridge"]["NetworkID"] == BRIDGE.id and ns["Networks"]["bridge"]["EndpointID"] == ""


@pytest.mark.parametrize("mode, net", [("host", HOST), ("none", NONE)])
def test_host_and_none_show_their_network_with_empty_addresses(mode, net):
    out = container_json(ct(network_mode=mode), running(), [], NETS)
    ns = out["NetworkSettings"]
    assert out["HostConfig"]["NetworkMode"] == mode
    assert list(ns["Networks"]) == [mode]
    entry = ns["Networks"][mode]
    assert entry["NetworkID"] == net.id
    assert (entry["EndpointID"], entry["IPAddress"], entry["Gateway"], entry["MacAddress"]) == ("", "", "", "")
    assert (ns["IPAddress"], ns["SandboxKey"]) == ("", "")


def test_container_mode_has_no_networks_and_names_the_other_by_id():
    other = "c" * 64
    out = container_json(ct(network_mode="container:db", shared_with=other), running(), [], NETS)
    assert out["HostConfig"]["NetworkMode"] == f"container:{other}"
    assert out["NetworkSettings"]["Networks"] == {}


def test_unknown_runtime_state_renders_dead():
    st = container_json(ct(), None, [], NETS)["State"]
    assert (st["Status"], st["Dead"], st["Running"], st["Pid"]) == ("dead", True, False, 0)


def test_status_text():
    assert status_text(running(), NOW) == "Up 5 seconds"
    assert status_text(exited(3), NOW) == "Exited (3) 2 seconds ago"
    assert status_text(ContainerState(CID, "created"), NOW) == "Created"


def test_summary_for_ps():
    c = ct(
        requested_ports=[
            {"proto": "tcp", "container_port": 80, "host_ip": None, "host_port": None, "host_port_end": None},
            {"proto": "tcp", "container_port": 81, "host_ip": None, "host_port": None, "host_port_end": None},
        ],
        ports=[{"proto": "tcp", "container_port": 80, "host_ip": None, "host_port": 32768, "host_port_end": None}],
    )
    out = container_summary(c, running(), [ep(BRIDGE)], NETS, now=NOW)
    assert out["Id"] == CID and out["Names"] == ["/web"] and out["Command"] == "sh -c sleep 100"
    assert out["Created"] == 1714564800 and isinstance(out["Created"], int)
    assert (out["State"], out["Status"]) == ("running", "Up 5 seconds")
    assert out["Ports"] == [
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 32768, "Type": "tcp"},
        {"PrivatePort": 81, "Type": "tcp"},
    ]
    assert out["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == "172.17.0.2"


def test_the_gateway_bridge_endpoint_is_plumbing_and_not_shown():
    overlay = Network(id="o" * 64, name="web", driver="overlay", scope="global")
    gwb = Network(id="g" * 64, name="cnm_gwbridge", driver="bridge")
    nets = {**NETS, overlay.id: overlay, gwb.id: gwb}
    eps = [
        ep(overlay, 2, address="10.90.0.2/24", gateway=None),
        ep(gwb, 3, address="172.18.0.3/16", gateway="172.18.0.1", ifname="eth1"),
    ]
    out = container_json(ct(network_mode="web"), running(), eps, nets)
    assert set(out["NetworkSettings"]["Networks"]) == {"web"}
