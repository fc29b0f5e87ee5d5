"""Kernel teardown off the request path (cnm.retiring, drivers.bridge.graveyard), over
fakes: a removed bridge endpoint is gone for users at once, its veth out of use and out
of the way, and what it held — address (and the MAC made from it), bridge port — is
held until the veth is deleted; static addresses are waited for, not refused; a
restart finishes what a previous life left retiring."""

from __future__ import annotations

import pytest

from cnm.container_requests import EndpointRequest
from cnm.errors import InternalError
from cnm.requests import IPAMConfigRequest, NetworkCreate
from cnm.retiring import RETIRING_PREFIX
from cnm.sandbox.sandbox import Sandbox
from drivers.bridge import naming
from drivers.bridge.driver import MAX_BRIDGE_PORTS, BridgeDriver
from drivers.bridge.graveyard import GRAVEYARD_GROUP
from tests.unit.fakehost import FakeHost

CID = "c0ffee" + "0" * 58


@pytest.fixture
def host():
    h = FakeHost()
    yield h
    h.close()


def network(host: FakeHost, name: str, subnet: str):
    return host.controller.create_network(NetworkCreate(name=name, ipam_configs=[IPAMConfigRequest(subnet=subnet)]))


def build(host: FakeHost, *nets, cid: str = CID) -> Sandbox:
    return host.sandboxes.build(cid, cid, "web", "webhost", [(n, EndpointRequest()) for n in nets], [])


def allocated(host: FakeHost, net) -> list[str]:
    ipam = host.ipams.get(net.ipam_driver)
    return ipam.allocated(net.pools[0].pool_id)


def test_a_left_endpoint_is_gone_at_once_and_what_it_held_is_given_back_when_its_veth_is(host):
    a, b = network(host, "a", "10.1.0.0/24"), network(host, "b", "10.2.0.0/24")
    sb = build(host, a)
    ep = sb.join(b, EndpointRequest())
    host_end = naming.host_ifname(ep.id)
    sb.leave(ep)
    # Gone for every user, and no traffic: both ends down, the sandbox's end renamed.
    assert ep.id not in {e.id for e in host.controller.all_endpoints()}
    assert [e.network_id for e in sb.endpoints()] == [a.id]
    parked = f"gone{ep.id[:11]}"
    assert not host.ns(sb.key).link_exists("eth1") and not host.ns(sb.key).link(parked).up
    veth = host.world.host.link(host_end)
    assert not veth.up and host.world.host._links[host_end].group == GRAVEYARD_GROUP
    # Held: its address (a new endpoint gets another), its record (a crash keeps it).
    assert allocated(host, b) == ["10.2.0.1", "10.2.0.2"]
    assert host.store.get(RETIRING_PREFIX + ep.id) is not None
    other = build(host, b, cid="d" * 64).endpoints()[0]
    assert str(other.address) == "10.2.0.3/24"
    # Deleted: both ends gone, the address free, the record gone.
    host.settle()
    assert not host.world.host.link_exists(host_end) and not host.ns(sb.key).link_exists(parked)
    assert allocated(host, b) == ["10.2.0.1", "10.2.0.3"]
    assert host.store.get(RETIRING_PREFIX + ep.id) is None


def test_the_name_is_free_at_once_for_the_next_interface(host):
    a, b = network(host, "a", "10.1.0.0/24"), network(host, "b", "10.2.0.0/24")
    sb = build(host, a)
    sb.leave(sb.join(b, EndpointRequest()))
    again = sb.join(b, EndpointRequest())  # before the old veth is deleted
    assert again.ifname == "eth1" and host.ns(sb.key).link("eth1").up
    assert host.ns(sb.key).addresses("eth1") == ["10.2.0.3/24"]


def test_a_static_address_still_held_is_waited_for_not_refused(host):
    a = network(host, "a", "10.1.0.0/24")
    sb = build(host, a)
    old = sb.endpoints()[0]
    sb.release()
    assert "10.1.0.2" in allocated(host, a)  # held while its veth is being deleted
    new = host.sandboxes.build("e" * 64, "e" * 64, "x", "x", [(a, EndpointRequest(ip="10.1.0.2"))], [])
    assert str(new.endpoints()[0].address) == "10.1.0.2/24"
    assert not host.world.host.link_exists(naming.host_ifname(old.id))  # deleted first, then reused
    assert host.store.get(RETIRING_PREFIX + old.id) is None
    host.settle()  # the graveyard finds it gone: nothing given back twice
    assert allocated(host, a) == ["10.1.0.1", "10.1.0.2"]


def left(host: FakeHost):
    """An endpoint joined to a second network and left: (its network, the endpoint).
    (A released sandbox's veths die with its namespace; in the fake at once.)"""
    a, b = network(host, "a", "10.1.0.0/24"), network(host, "b", "10.2.0.0/24")
    sb = build(host, a)
    ep = sb.join(b, EndpointRequest())
    sb.leave(ep)
    return b, ep


def test_a_restart_finishes_what_was_left_retiring(host):
    b, ep = left(host)
    host_end = naming.host_ifname(ep.id)
    assert host.world.host.link_exists(host_end)  # not deleted yet: then the daemon dies
    again = host.restarted()
    try:
        assert not host.world.host.link_exists(host_end)
        assert allocated(again, b) == ["10.2.0.1"]
        assert host.store.get(RETIRING_PREFIX + ep.id) is None
    finally:
        again.close()


def test_a_restart_also_deletes_a_veth_retired_before_its_record_was_written(host):
    """The store commits before the veth is touched; a crash between the two leaves the
    record and a veth still in use: deleted by its name at the next start."""
    host.graveyard().retire = lambda nl, name, alias: False  # type: ignore[method-assign] # the crash
    b, ep = left(host)
    assert host.world.host.link(naming.host_ifname(ep.id)).up  # untouched
    again = host.restarted()
    try:
        assert not host.world.host.link_exists(naming.host_ifname(ep.id))
        assert allocated(again, b) == ["10.2.0.1"]
    finally:
        again.close()


def test_reconcile_keeps_the_addresses_of_retiring_endpoints(host):
    b, _ = left(host)
    assert host.controller.reconcile_ipam() == 0
    assert allocated(host, b) == ["10.2.0.1", "10.2.0.2"]


def test_a_veth_that_cannot_be_deleted_keeps_what_it_holds(host):
    b, ep = left(host)
    nl = host.world.host
    nl.fail_next["delete_link_group"] = InternalError("group delete refused")
    real_delete = nl.delete_link
    nl.delete_link = lambda name: (_ for _ in ()).throw(InternalError("refused"))  # type: ignore[method-assign]
    host.settle()
    assert allocated(host, b) == ["10.2.0.1", "10.2.0.2"]
    assert host.store.get(RETIRING_PREFIX + ep.id) is not None
    nl.delete_link = real_delete  # type: ignore[method-assign]
    again = host.restarted()  # the next start tries again
    try:
        assert allocated(again, b) == ["10.2.0.1"] and host.store.get(RETIRING_PREFIX + ep.id) is None
    finally:
        again.close()


def test_retiring_veths_hold_bridge_ports_until_deleted_and_are_deleted_rather_than_refuse():
    from cnm.driverapi import EndpointInterface, IPAMData, NetworkSpec
    from cnm.osl.fake import FakeNetlink

    nl = FakeNetlink()
    drv = BridgeDriver(lambda: nl)
    drv.graveyard.background = False
    nid = "a" * 64
    drv.create_network(
        NetworkSpec(
            id=nid,
            name="n",
            options={},
            ipv4=(IPAMData("172.18.0.0/16", "172.18.0.1/16"),),
            ipv6=(),
            internal=False,
            enable_ipv6=False,
        )
    )
    eids = [f"{i:07x}" + "0" * 57 for i in range(MAX_BRIDGE_PORTS)]
    for i, eid in enumerate(eids):
        drv.create_endpoint(nid, eid, EndpointInterface(address=f"172.18.{i // 250}.{2 + i % 250}/16"), {})
        drv.join(nid, eid, f"/run/cnm/netns/{i}", {})
    done = []
    drv.delete_endpoint_later(nid, eids[0], lambda: done.append(eids[0]))
    assert nl.bridge_port_count(drv.bridge_name(nid)) == MAX_BRIDGE_PORTS  # still a port
    extra = "f" * 64
    drv.create_endpoint(nid, extra, EndpointInterface(address="172.18.200.2/16"), {})  # room made now
    assert not nl.link_exists(naming.host_ifname(eids[0]))
    drv.graveyard.flush()
    assert done == [eids[0]]  # the owner still hears of it, from the graveyard


class _GroupNetlink:
    """Just enough netlink for a Graveyard: counts group deletes and what each took."""

    def __init__(self) -> None:
        self.retired: list[str] = []
        self.batches: list[list[str]] = []

    def retire_link(self, name: str, *, alias: str, group: int) -> bool:
        self.retired.append(name)
        return True

    def delete_link_group(self, group: int) -> None:
        self.batches.append(self.retired)
        self.retired = []

    def link(self, name: str):
        from cnm.errors import NotFound

        raise NotFound(name)

    def delete_link(self, name: str) -> bool:
        return False


def test_the_graveyard_deletes_a_stream_of_retirements_once_it_pauses_and_a_lone_one_at_once():
    """Retirements in quick succession (one `rm` of many containers) are deleted with one
    group delete after they pause, not one delete each while the next retirement waits
    for the kernel's lock; a steady stream is still deleted after `max_wait`; a lone
    retirement (a failed `run` rolled back) and a flush() wait for no settling."""
    import threading
    import time

    from drivers.bridge.graveyard import Graveyard

    nl = _GroupNetlink()
    gy = Graveyard(lambda: nl, settle=30.0, max_wait=60.0)
    gone = threading.Semaphore(0)
    t = time.monotonic()
    gy.retire(nl, "lone", "a")
    gy.bury("lone", "a", gone.release)
    assert gone.acquire(timeout=20) and time.monotonic() - t < 20  # not the 30 s settle
    assert nl.batches == [["lone"]]
    gy.close()

    nl = _GroupNetlink()
    gy = Graveyard(lambda: nl, settle=0.5, max_wait=30.0)
    for i in range(5):
        gy.retire(nl, f"v{i}", "a")
        gy.bury(f"v{i}", "a", gone.release)
        time.sleep(0.02)
    assert all(gone.acquire(timeout=20) for _ in range(5))
    # The first may go alone (lone when it came); the stream after it goes as one.
    assert len(nl.batches) <= 2 and nl.batches[-1][-4:] == ["v1", "v2", "v3", "v4"], nl.batches

    nl.batches.clear()
    gy.settle, gy.max_wait = 30.0, 0.3  # the next comes within `settle`: part of the stream
    t = time.monotonic()
    gy.retire(nl, "w", "a")
    gy.bury("w", "a", gone.release)
    assert gone.acquire(timeout=20) and time.monotonic() - t < 20  # max_wait, not the 30 s settle
    assert nl.batches == [["w"]]

    gy.max_wait = 60.0  # flush() does not wait for the batch to settle either
    gy.retire(nl, "x", "a")
    gy.bury("x", "a", lambda: None)
    t = time.monotonic()
    assert gy.flush(30) and time.monotonic() - t < 20
    gy.close()


def test_a_new_endpoint_never_shares_the_named_prefix_of_a_live_or_retiring_one(host, monkeypatch):
    """Drivers name kernel objects after an endpoint ID's first 7 characters (the
    bridge's host veth): a new ID that shares them with an endpoint here — live, or
    retiring with its veth still being deleted — is drawn again."""
    from cnm import controller_endpoints

    n = network(host, "n", "10.7.0.0/24")
    ids = iter(["aaaaaaa" + "1" * 57, "aaaaaaa" + "2" * 57, "bbbbbbb" + "3" * 57, "bbbbbbb" + "4" * 57, "c" * 64])
    monkeypatch.setattr(controller_endpoints, "new_id", lambda: next(ids))
    first = host.controller.create_endpoint(n, "first")
    assert first.id.startswith("aaaaaaa")
    second = host.controller.create_endpoint(n, "second")
    assert second.id.startswith("bbbbbbb")  # "aaaaaaa2..." was drawn again
    sb = build(host, n, cid="e" * 64)
    ep = sb.endpoints()[0]  # its ID was the last one left: "c" * 64
    assert ep.id == "c" * 64
    sb.leave(ep)  # retiring: its veth waits in the graveyard (no background thread here)
    assert host.store.get(RETIRING_PREFIX + ep.id) is not None
    ids = iter(["c" * 7 + "5" * 57, "d" * 64])
    third = host.controller.create_endpoint(n, "third")
    assert third.id == "d" * 64
