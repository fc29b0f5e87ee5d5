"""Firewall manager against a fake kernel that keeps the last script it accepted."""

from __future__ import annotations

import pytest

from cnm.errors import Conflict, InternalError, NotFound
from cnm.firewall import Firewall, FirewallState, NetworkRules, PortMapping, render


class FakeKernel:
    """Holds the applied script; refuses when told to, like nft would (all or nothing)."""

    def __init__(self) -> None:
        self.script: str | None = None
        self.sysctls: dict[str, str] = {}
        self.fail = False

    def apply(self, script: str) -> None:
        if self.fail:
            raise InternalError("nft refused the firewall ruleset: injected")
        self.script = script

    def sysctl(self, key: str, value: str) -> None:
        self.sysctls[key] = value

    def delete(self) -> None:
        self.script = None


A = NetworkRules("net-a", "br-a", subnets_v4=("172.18.0.0/16",))
B = NetworkRules("net-b", "br-b", subnets_v4=("172.19.0.0/16",), icc=False)
P = PortMapping("tcp", None, 8080, "172.18.0.2", 80, "br-a")


@pytest.fixture
def env():
    return KernelAndFirewall()


class KernelAndFirewall:
    def __init__(self) -> None:
        self.k = FakeKernel()
        self.fw = Firewall(apply=self.k.apply, sysctl=self.k.sysctl, delete=self.k.delete)

    def in_sync(self) -> bool:
        return self.k.script == render(self.fw.state)


def test_changes_are_applied_and_kernel_matches_state(env):
    fw = env.fw
    fw.set_network(A)
    fw.set_network(B)
    fw.add_ports("ep1", [P])
    assert env.in_sync()
    assert "tcp . 8080 : 172.18.0.2 . 80" in env.k.script
    assert env.k.sysctls["net.bridge.bridge-nf-call-iptables"] == "1"
    assert env.k.sysctls["net/ipv4/conf/br-b/route_localnet"] == "1"
    fw.remove_ports("ep1")
    assert "172.18.0.2" not in env.k.script
    fw.remove_network("net-b")
    assert '"br-b"' not in env.k.script and env.in_sync()


def test_failed_apply_rolls_back_state(env):
    fw = env.fw
    fw.set_network(A)
    before, script = fw.state, env.k.script
    env.k.fail = True
    with pytest.raises(InternalError):
        fw.add_ports("ep1", [P])
    with pytest.raises(InternalError):
        fw.set_network(B)
    assert fw.state == before and env.k.script == script
    env.k.fail = False
    fw.reapply()
    assert env.in_sync() and "8080" not in env.k.script


def test_failed_sysctl_applies_nothing(env):
    fw = env.fw

    def broken(key: str, value: str) -> None:
        raise InternalError(f"cannot set {key}")

    fw._sysctl = broken
    with pytest.raises(InternalError):
        fw.set_network(A)
    assert fw.state == FirewallState() and env.k.script is None


def test_ports_need_their_network(env):
    with pytest.raises(NotFound, match="br-a"):
        env.fw.add_ports("ep1", [P])
    assert env.k.script is None


def test_conflicting_host_port_is_refused_and_nothing_changes(env):
    fw = env.fw
    fw.set_network(A)
    fw.add_ports("ep1", [P])
    with pytest.raises(Conflict, match="8080/tcp"):
        fw.add_ports("ep2", [PortMapping("tcp", None, 8080, "172.18.0.3", 80, "br-a")])
    assert set(fw.state.ports) == {"ep1"} and env.in_sync()


def test_add_ports_replaces_the_endpoint_set(env):
    fw = env.fw
    fw.set_network(A)
    fw.add_ports("ep1", [P])
    fw.add_ports("ep1", [PortMapping("udp", None, 53, "172.18.0.2", 53, "br-a")])
    assert "8080" not in env.k.script and "udp . 53" in env.k.script


def test_remove_network_drops_its_ports_and_is_idempotent(env):
    fw = env.fw
    fw.set_network(A)
    fw.add_ports("ep1", [P])
    fw.remove_network("net-a")
    fw.remove_network("net-a")
    fw.remove_ports("ep1")
    assert fw.state == FirewallState() and env.in_sync()


def test_restore_applies_once():
    applied = []
    fw = Firewall(apply=applied.append, sysctl=lambda k, v: None, delete=lambda: None)
    fw.restore([A, B], {"ep1": [P], "ep2": []})
    assert len(applied) == 1
    assert set(fw.state.networks) == {"net-a", "net-b"} and set(fw.state.ports) == {"ep1"}


def test_teardown_deletes_and_forgets(env):
    fw = env.fw
    fw.set_network(A)
    fw.teardown()
    assert env.k.script is None and fw.state == FirewallState()
    fw.teardown()
