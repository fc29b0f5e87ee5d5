"""The daemon killed at every instant of every operation that changes the kernel, then
restarted: nothing without an owner, no endpoint without its interface, every
container removable, every subnet usable again. Without root: a FakeHost's world with
a fuse on every change (tests/unit/crashpoints.py). Each failure names the operation
and the change it was killed before."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from cnm.container_requests import ContainerCreate, EndpointRequest
from cnm.errors import CNMError
from cnm.ports import PortBinding
from cnm.requests import IPAMConfigRequest, NetworkCreate
from tests.unit.crashpoints import Killed, fuse, problems
from tests.unit.fakehost import FakeHost

SLEEP = ["sleep", "60"]
SUBNETS = {"n1": ("10.91.0.0/24", "fd00:91::/64"), "n2": ("10.92.0.0/24", None), "ng": ("10.93.0.0/24", None)}


def net(host: FakeHost, name: str, *, internal: bool = False, driver: str = "bridge") -> None:
    v4, v6 = SUBNETS[name]
    configs = [IPAMConfigRequest(subnet=v4)] + ([IPAMConfigRequest(subnet=v6)] if v6 else [])
    host.controller.create_network(
        NetworkCreate(name=name, driver=driver, ipam_configs=configs, enable_ipv6=v6 is not None, internal=internal)
    )


def request(name: str, network: str, ports: bool) -> ContainerCreate:
    return ContainerCreate(
        argv=list(SLEEP),
        name=name,
        network_mode=network,
        ports=[PortBinding("tcp", 80, None, 8080), PortBinding("udp", 53)] if ports else [],
    )


def run(host: FakeHost, name: str, network: str, ports: bool = False) -> None:
    host.containers.run(request(name, network, ports))


@dataclass
class Op:
    name: str
    setup: Callable[[FakeHost], None]
    act: Callable[[FakeHost], None]


def _two_nets(h: FakeHost) -> None:
    net(h, "n1")
    net(h, "n2")


def _connected(h: FakeHost) -> None:
    _two_nets(h)
    run(h, "ct", "n1", ports=True)
    h.containers.connect("n2", "ct", EndpointRequest(aliases=["db"]))


OPS = [
    Op("create a dual-stack network", lambda h: None, lambda h: net(h, "n1")),
    Op("create an internal network", lambda h: None, lambda h: net(h, "n2", internal=True)),
    Op("remove a network", lambda h: net(h, "n1"), lambda h: h.controller.delete_network("n1")),
    Op("run with published ports", lambda h: net(h, "n1"), lambda h: run(h, "ct", "n1", ports=True)),
    Op("run on the default bridge", lambda h: None, lambda h: run(h, "ct", "bridge", ports=True)),
    Op("run via the gateway bridge", lambda h: net(h, "ng", driver="nogw"), lambda h: run(h, "ct", "ng", ports=True)),
    Op(
        "connect",
        lambda h: (_two_nets(h), run(h, "ct", "n1", ports=True)),
        lambda h: h.containers.connect("n2", "ct", EndpointRequest(aliases=["db"])),
    ),
    Op("disconnect the route holder", _connected, lambda h: h.containers.disconnect("n1", "ct")),
    Op("stop", lambda h: (net(h, "n1"), run(h, "ct", "n1", ports=True)), lambda h: h.containers.stop("ct", 5)),
    Op(
        "start a created container",
        lambda h: (net(h, "n1"), h.containers.create(request("ct", "n1", True))),
        lambda h: h.containers.start("ct"),
    ),
    Op(
        "start a stopped container",
        lambda h: (net(h, "n1"), run(h, "ct", "n1", ports=True), h.containers.stop("ct", 5)),
        lambda h: h.containers.start("ct"),
    ),
    Op(
        "remove a running container",
        lambda h: (net(h, "n1"), run(h, "ct", "n1", ports=True)),
        lambda h: h.containers.remove("ct", force=True),
    ),
    Op(
        "delete a removed container's veth in the background",
        lambda h: (net(h, "n1"), run(h, "ct", "n1", ports=True), h.containers.remove("ct", force=True)),
        lambda h: h.settle(),
    ),
]


def changes(op: Op) -> int:
    host = FakeHost()
    try:
        op.setup(host)
        with fuse(None) as f:
            op.act(host)
        return f.count
    finally:
        host.close()


def clean_slate(host: FakeHost) -> list[str]:
    """Remove every container and custom network: what must be left is a fresh host's
    state, and every subnet must be usable again."""
    out = []
    for ct in host.containers.list_containers():
        try:
            host.containers.remove(ct.id, force=True)
        except CNMError as exc:
            out.append(f"rm -f {ct.name}: {exc}")
    for n in host.controller.list_networks():
        if not n.builtin and n.name != "cnm_gwbridge":
            host.controller.delete_network(n.id)
    for n in host.controller.list_networks():
        if n.name == "cnm_gwbridge":
            host.controller.delete_network(n.id)
    out += problems(host)
    left = [n for n in host.world.host.link_names() if n not in ("lo", "cnm0")]
    out += [f"link {n} left after removing everything" for n in left]
    out += [f"namespace {p} left after removing everything" for p in host.world.namespaces]
    for name in SUBNETS:
        try:
            net(host, name)
        except CNMError as exc:
            out.append(f"subnet of {name} cannot be used again: {exc}")
    return out


@pytest.mark.parametrize("op", OPS, ids=[op.name for op in OPS])
def test_killed_at_every_change(op: Op) -> None:
    total = changes(op)
    assert total > 0
    failures = []
    for at in range(1, total + 1):
        host = FakeHost()
        again = None
        try:
            op.setup(host)
            with fuse(at) as f:
                with pytest.raises(Killed):
                    op.act(host)
            again = host.restarted()
            found = problems(again)
            if not found:
                again = again.restarted()  # a second start has nothing left to say
                assert again.last_sweep is not None
                if again.last_sweep.actions:
                    found.append(f"a second start still swept: {again.last_sweep.summary()}")
                found += clean_slate(again)
            failures += [f"{op.name}, killed before {f.where}: {p}" for p in found]
        finally:
            (again or host).close()
            host.close()
    assert not failures, "\n".join(failures)
