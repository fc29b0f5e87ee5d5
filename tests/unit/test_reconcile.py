"""The start-up reconcile: its pure decisions (cnm.reconcile.decide), and what a
restarted FakeHost does with what it finds (repair or release, ours or not ours)."""

from __future__ import annotations

import logging

import pytest

from cnm import marks
from cnm.container_requests import ContainerCreate, EndpointRequest
from cnm.intents import NETWORK_CREATE, Intents
from cnm.ports import PortBinding
from cnm.reconcile import decide
from cnm.reconcile.decide import Action, Fate, ForeignMount, KernelFacts, LinkFact, NsFile, Owners
from cnm.requests import IPAMConfigRequest, NetworkCreate
from tests.unit.crashpoints import problems
from tests.unit.fakehost import NETNS_DIR, FakeHost

NET, NET2, EP, EP2 = "n" * 64, "m" * 64, "e" * 64, "f" * 64
OV = "/run/cnm/overlay/256-" + NET[:12]


# ------------------------------------------------------------------ endpoint fate


@pytest.mark.parametrize(
    "known, present, wanted, fate",
    [
        (True, True, True, Fate.KEEP),
        (True, True, False, Fate.KEEP),  # still plugged in: a disconnect that never answered
        (True, False, True, Fate.REPAIR),
        (True, False, False, Fate.RELEASE),
        (False, True, True, Fate.RELEASE),
        (False, False, True, Fate.RELEASE),
    ],
)
def test_endpoint_fate(known, present, wanted, fate):
    got, why = decide.endpoint_fate(network_known=known, interface_present=present, wanted=wanted)
    assert got is fate
    assert bool(why) == (fate is not Fate.KEEP)


# ------------------------------------------------------------------ the sweep


def kinds(plan) -> list[tuple[str, str]]:
    return [(a.kind, a.target) for a in plan.actions]


def test_marked_links_are_removed_only_for_ids_the_store_knew():
    links = (
        LinkFact("", "br-live", marks.BRIDGE + NET),
        LinkFact("", "br-dead", marks.BRIDGE + NET2),
        LinkFact("", "br-theirs", marks.BRIDGE + "x" * 64),  # a plugin's, another daemon's
        LinkFact("", "veth-live", marks.ENDPOINT + EP),
        LinkFact("", "veth-dead", marks.ENDPOINT + EP2),
        LinkFact("", "veth-theirs", marks.ENDPOINT + "y" * 64),
        LinkFact("", "eth0", None),
        LinkFact("", "vx-leftover", marks.OVERLAY + NET),  # never stays in the host namespace
    )
    owners = Owners(networks=frozenset({NET}), endpoints=frozenset({EP}), known=frozenset({NET, NET2, EP, EP2}))
    plan = decide.sweep(KernelFacts(links=links), owners)
    assert kinds(plan) == [("delete-link", "br-dead"), ("delete-link", "veth-dead"), ("delete-link", "vx-leftover")]
    assert {link.name for link in plan.foreign} == {"br-theirs", "veth-theirs"}
    assert all(a.alias is not None for a in plan.actions)  # re-checked right before deleting


def test_links_a_crash_left_half_made_go_by_their_provisional_name():
    half = marks.provisional_name(marks.BRIDGE + NET2)  # made, not yet named and marked
    theirs = marks.provisional_name(marks.BRIDGE + "x" * 64)  # some id we never recorded
    links = (LinkFact("", half), LinkFact("", theirs), LinkFact("", "cnm0123456789ab"))
    plan = decide.sweep(KernelFacts(links=links), Owners(known=frozenset({NET2})))
    assert kinds(plan) == [("delete-link", half)] and plan.actions[0].alias is None
    assert half.startswith("cnm") and len(half) == 15 and half != theirs


def test_retiring_endpoints_are_left_to_their_owner():
    links = (LinkFact("", "veth-r", marks.ENDPOINT + EP2),)
    owners = Owners(known=frozenset({EP2}), leave_alone=frozenset({EP2}))
    assert decide.sweep(KernelFacts(links=links), owners).actions == ()


def test_everything_under_the_run_directory_is_ours():
    sandbox = "/run/cnm/netns/" + "a" * 12
    facts = KernelFacts(
        links=(
            LinkFact(OV, "vx-000100-nnnnn", marks.OVERLAY + NET),
            LinkFact(OV, "ovbeeeeeee", marks.ENDPOINT + EP),
            LinkFact(OV, "ovbfffffff", marks.ENDPOINT + "z" * 64),  # an id never recorded: still ours
            LinkFact("/run/cnm/overlay/9-" + NET2[:12], "vx-000009-mmmmm", marks.OVERLAY + NET2),
        ),
        ns_files=(
            NsFile(sandbox, True),
            NsFile("/run/cnm/netns/" + "b" * 12, True),
            NsFile("/run/cnm/netns/" + "c" * 12, False),
            NsFile(OV, True),
            NsFile("/run/cnm/overlay/9-" + NET2[:12], True),
        ),
        foreign_mounts=(ForeignMount(4242, sandbox), ForeignMount(4242, "/run/cnm/netns/" + "b" * 12)),
        container_dirs=("c1", "c2"),
    )
    owners = Owners(
        networks=frozenset({NET}),
        endpoints=frozenset({EP}),
        namespaces={sandbox: "a" * 64, OV: NET},
        containers=frozenset({"c1"}),
    )
    plan = decide.sweep(facts, owners)
    assert (
        kinds(plan)
        == [
            ("delete-link", "ovbfffffff"),
            ("delete-link", "vx-000009-mmmmm"),  # first, so its socket closes even if the namespace lingers
            ("remove-netns", "/run/cnm/netns/" + "b" * 12),
            ("remove-netns", "/run/cnm/netns/" + "c" * 12),
            ("remove-netns", "/run/cnm/overlay/9-" + NET2[:12]),
            ("unmount-foreign", "/run/cnm/netns/" + "b" * 12),
            ("remove-container", "c2"),
        ]
    )
    assert plan.actions[5].holder == 4242
    assert "stale mount point" in plan.actions[3].why


def test_orphan_pools():
    pools = [("LocalDefault/10.1.0.0/24", "10.1.0.0/24"), ("LocalDefault/10.2.0.0/24", "10.2.0.0/24")]
    assert decide.orphan_pools(pools, {"LocalDefault/10.1.0.0/24"}) == [
        Action("release-pool", "LocalDefault/10.2.0.0/24", "subnet 10.2.0.0/24 is reserved but no network holds it")
    ]


# ------------------------------------------------------------------ a restarted host


@pytest.fixture
def host():
    h = FakeHost()
    yield h
    h.close()


def _net(h: FakeHost, name: str, subnet: str) -> None:
    h.controller.create_network(NetworkCreate(name=name, ipam_configs=[IPAMConfigRequest(subnet=subnet)]))


def _run(h: FakeHost, name: str, net: str):
    return h.containers.run(
        ContainerCreate(argv=["sleep", "60"], name=name, network_mode=net, ports=[PortBinding("tcp", 80, None, 8080)])
    )


def test_an_interface_gone_is_repaired_once(host, caplog):
    _net(host, "n1", "10.81.0.0/24")
    ct = _run(host, "ct", "n1")
    sb = host.containers.sandbox(ct)
    ep = sb.endpoints()[0]
    host.world.handle(sb.key).delete_link("eth0")  # someone removed it (or a crash did)
    assert not host.world.host.link_exists("veth" + ep.id[:7])
    with caplog.at_level(logging.WARNING):
        again = host.restarted()
    try:
        assert any("repaired" in r.message and "eth0" in r.message for r in caplog.records)
        inside = again.world.handle(sb.key)
        assert inside.addresses("eth0") == [str(ep.address)]
        assert again.default_routes(sb.key)["0.0.0.0/0"] == ("eth0", "10.81.0.1")
        assert again.firewall.published[ep.id][0]["HostPort"] == 8080
        assert problems(again) == []
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            third = again.restarted()
        assert [r.message for r in caplog.records] == []  # said once
        third.close()
    finally:
        again.close()


def test_an_endpoint_no_longer_asked_for_is_released(host):
    _net(host, "n1", "10.82.0.0/24")
    _net(host, "n2", "10.83.0.0/24")
    ct = _run(host, "ct", "n1")
    host.containers.connect("n2", "ct", EndpointRequest())
    sb = host.containers.sandbox(ct)
    # A crash in the middle of disconnecting n1: the record no longer asks for it, its
    # interface is gone, its endpoint is still recorded.
    ct.networks = [a for a in ct.networks if a["network"] != host.controller.get_network("n1").id]
    host.store.put("container/" + ct.id, ct.to_record())
    host.world.handle(sb.key).delete_link("eth0")
    again = host.restarted()
    try:
        sb2 = again.containers.sandbox(again.containers.get("ct"))
        assert [e.network_id for e in sb2.endpoints()] == [again.controller.get_network("n2").id]
        assert again.default_routes(sb.key)["0.0.0.0/0"] == ("eth1", "10.83.0.1")  # the route moved
        assert problems(again) == []
    finally:
        again.close()


def test_a_crashed_create_is_rolled_back_and_a_foreign_bridge_left_alone(host):
    # What a crash leaves after the bridge was made: the intent, the pool, the bridge.
    nid = "d" * 64
    Intents(host.store).write(
        NETWORK_CREATE,
        nid,
        {
            "id": nid,
            "name": "half",
            "driver": "bridge",
            "pools": [{"subnet": "10.84.0.0/24", "pool_id": "LocalDefault/10.84.0.0/24", "gateway": "10.84.0.1"}],
        },
    )
    host.ipams.get("default").request_pool("LocalDefault", "10.84.0.0/24", None, {}, False)
    host.world.host.create_bridge("br-" + nid[:12], alias=marks.BRIDGE + nid)
    host.world.host.create_bridge("br-theirs", alias=marks.BRIDGE + "9" * 64)  # never ours
    host.ipams.get("default").request_pool("LocalDefault", "10.85.0.0/24", None, {}, False)  # no intent either
    again = host.restarted()
    try:
        assert not again.world.host.link_exists("br-" + nid[:12])
        assert again.world.host.link_exists("br-theirs")
        assert again.ipams.get("default").local_pools() == [
            (p.pool_id, str(p.subnet)) for n in again.controller.list_networks() for p in n.pools
        ]
        assert again.store.list("intent/") == []
        assert again.last_sweep is not None and again.last_sweep.foreign == 1
        _net(again, "n", "10.84.0.0/24")  # the subnet is usable again
        _net(again, "m", "10.85.0.0/24")
    finally:
        again.close()


def test_stale_namespaces_and_container_dirs_go(host):
    host.world.create(NETNS_DIR + "/0123456789ab")  # no sandbox owns it
    (host.runtime.root / ("a" * 64)).mkdir()  # no container record
    again = host.restarted()
    try:
        assert not again.world.exists(NETNS_DIR + "/0123456789ab")
        assert not (host.runtime.root / ("a" * 64)).exists()
        report = again.last_sweep
        assert report is not None and {a.kind for a in report.actions} == {"remove-netns", "remove-container"}
    finally:
        again.close()


def test_the_sweep_passes_over_an_overlay_driver_with_no_cluster_store():
    """A daemon without a cluster store has a stand-in overlay driver that refuses every
    call: its VXLAN filter step must not be asked for (it failed every start-up's sweep)."""
    from drivers.unconfigured import Unconfigured

    host = FakeHost()
    try:
        host.drivers.register(Unconfigured("overlay", "overlay networks need a cluster store"))  # type: ignore[arg-type]
        report = host.sweep()
        assert report.failed == []
    finally:
        host.close()
