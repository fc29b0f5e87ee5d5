"""`net plugin serve` without a kernel: what it records and restores, how hosts agree on
a served overlay, and the IPAM pools that hosts of a cluster share."""

from __future__ import annotations

import pytest

from cnm.cluster import vni as vnis
from cnm.driverapi import EndpointInterface, IPAMData, NetworkSpec
from cnm.errors import Conflict, InvalidParameter, Unavailable
from cnm.ipamapi import GATEWAY_REQUEST, GATEWAY_TYPE
from cnm.osl.fake import FakeNetlink
from cnm.plugins import overlay_cluster as oc
from cnm.plugins.serve import DriverPlugin
from cnm.plugins.served_state import ServedState, spec_from, spec_record
from cnm.plugins.shared_ipam import SharedPoolIpam
from cnm.store.memory import MemoryStore
from drivers.bridge import BridgeDriver, naming
from ipam.default import DefaultIpam

NID, EID = "a" * 64, "b" * 64
GW = {GATEWAY_REQUEST: GATEWAY_TYPE}


def body(nid=NID, generic=None, pool="10.77.0.0/24", gw="10.77.0.1/24"):
    return {
        "NetworkID": nid,
        "Options": {"com.docker.network.generic": generic or {}, "com.docker.network.enable_ipv6": False},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": pool, "Gateway": gw}],
        "IPv6Data": [],
    }


# -- served state ------------------------------------------------------------------------------


def test_spec_record_round_trips():
    spec = NetworkSpec(
        NID,
        "n",
        {"k": "v"},
        ipv4=(IPAMData("10.0.0.0/24", "10.0.0.1/24", {"x": "10.0.0.9/24"}, "LocalDefault"),),
        ipv6=(IPAMData("fd00::/64", "fd00::1/64"),),
        internal=True,
        enable_ipv6=True,
    )
    assert spec_from(spec_record(spec)) == spec


def test_dropping_a_network_drops_its_endpoints_only():
    st = ServedState(MemoryStore())
    spec = NetworkSpec(NID, "n", {})
    st.save_network(NID, spec), st.save_network("c" * 64, spec)
    st.save_endpoint(NID, EID, {"address": "10.0.0.2/24"})
    st.save_endpoint("c" * 64, EID, {"address": "10.0.0.3/24"})
    st.set_joined(NID, EID, True)
    assert st.endpoint(NID, EID)["joined"] is True
    st.drop_network(NID)
    assert [n for n, _ in st.networks()] == ["c" * 64] and st.endpoints(NID) == []
    assert [e for e, _ in st.endpoints("c" * 64)] == [EID]


def _bridge_plugin(nl, store):
    return DriverPlugin(BridgeDriver(lambda: nl, peer_in_sandbox=False), ServedState(store))


def test_a_restarted_plugin_knows_the_networks_and_endpoints_docker_made():
    nl, store = FakeNetlink(), MemoryStore()
    first = _bridge_plugin(nl, store)
    first.on_create_network(body(generic={"com.docker.network.bridge.name": "br-kept"}))
    got = first.create_endpoint(NID, EID, EndpointInterface("10.77.0.2/24"), {})
    first.join(NID, EID, "/var/run/docker/netns/x", {})
    assert ServedState(store).endpoint(NID, EID)["joined"] is True

    again = _bridge_plugin(nl, store)  # same kernel, new process: memory is empty
    assert again.restore() == []
    assert again.endpoint_info(NID, EID)  # the driver knows the endpoint again
    again.leave(NID, EID)
    again.delete_endpoint(NID, EID)
    again.delete_network(NID)
    assert not nl.link_exists("br-kept") and got.mac
    assert ServedState(store).networks() == []


def test_an_interface_gone_is_recorded_as_left_once_and_can_be_joined_again(caplog):
    nl, store = FakeNetlink(), MemoryStore()
    first = _bridge_plugin(nl, store)
    first.on_create_network(body())
    first.create_endpoint(NID, EID, EndpointInterface("10.77.0.2/24"), {})
    first.join(NID, EID, "/x", {})
    assert nl.link_exists(naming.host_ifname(EID))
    nl.delete_link(naming.host_ifname(EID))  # the veth vanished while the plugin was down
    again = _bridge_plugin(nl, store)
    assert again.restore() == []
    assert ServedState(store).endpoint(NID, EID)["joined"] is False
    assert "recorded as left" in caplog.text
    caplog.clear()
    third = _bridge_plugin(nl, store)
    assert third.restore() == [] and "recorded as left" not in caplog.text  # said once
    third.join(NID, EID, "/x", {})  # the engine joins it again
    assert nl.link_exists(naming.host_ifname(EID))


def test_a_join_a_crash_interrupted_is_undone():
    nl, store = FakeNetlink(), MemoryStore()
    first = _bridge_plugin(nl, store)
    first.on_create_network(body())
    first.create_endpoint(NID, EID, EndpointInterface("10.77.0.2/24"), {})
    first.driver.join(NID, EID, "/x", {})  # the veth is made; the plugin dies before recording
    assert ServedState(store).endpoint(NID, EID)["joined"] is False
    again = _bridge_plugin(nl, store)
    assert again.restore() == []
    assert not nl.link_exists(naming.host_ifname(EID))
    again.join(NID, EID, "/x", {})  # the engine's Join works again


def test_a_creation_a_crash_interrupted_is_rolled_back():
    nl, store = FakeNetlink(), MemoryStore()
    first = _bridge_plugin(nl, store)
    spec = first.network_spec(
        body(generic={"com.docker.network.bridge.name": "br-half"}), {"com.docker.network.bridge.name": "br-half"}
    )
    first._creating(NID, spec.id)
    first.driver.create_network(spec)  # the bridge is made; the plugin dies before recording
    assert nl.link_exists("br-half")
    again = _bridge_plugin(nl, store)
    assert again.restore() == []
    assert not nl.link_exists("br-half") and store.list("intent/") == []
    again.on_create_network(body(generic={"com.docker.network.bridge.name": "br-half"}))  # the engine retries


class FailingStore(MemoryStore):
    def atomic(self, ops, expect=None):
        if any(getattr(op, "key", "").startswith("served/net/") for op in ops):
            raise Unavailable("disk full")
        return super().atomic(ops, expect)


def test_a_network_that_cannot_be_recorded_is_undone():
    nl, store = FakeNetlink(), FailingStore()
    plugin = DriverPlugin(BridgeDriver(lambda: nl, peer_in_sandbox=False), ServedState(store))
    with pytest.raises(Unavailable):
        plugin.on_create_network(body(generic={"com.docker.network.bridge.name": "br-gone"}))
    assert not nl.link_exists("br-gone") and store.list("intent/") == []


# -- cluster identity of a served overlay ----------------------------------------------------------


def test_identity_is_the_name_option_else_the_subnets():
    assert oc.identity({oc.NAME_OPTION: "web"}, ["10.0.0.0/24"]) == "name:web"
    assert oc.identity({}, ["10.1.0.0/24", "10.0.0.0/24"]) == "subnet:10.0.0.0/24,10.1.0.0/24"
    with pytest.raises(InvalidParameter, match="--subnet"):
        oc.identity({}, [])
    with pytest.raises(InvalidParameter, match="no '/'"):
        oc.identity({oc.NAME_OPTION: "a/b"}, [])
    assert len(oc.cluster_id("name:web")) == 64 and oc.cluster_id("name:web") != oc.cluster_id("name:db")


def test_hosts_join_one_overlay_and_the_last_to_leave_frees_it():
    store = MemoryStore("global")
    cid, vni = oc.join(store, "name:web", ["10.90.0.0/24"], "198.18.0.1")
    cid2, vni2 = oc.join(store, "name:web", ["10.90.0.0/24"], "198.18.0.2")
    assert (cid2, vni2) == (cid, vni) and vni >= vnis.FIRST_VNI
    assert sorted(oc.members(store, cid)) == ["198.18.0.1", "198.18.0.2"]
    other, other_vni = oc.join(store, "name:db", ["10.91.0.0/24"], "198.18.0.1")
    assert other_vni != vni
    with pytest.raises(Conflict, match="same --subnet"):
        oc.join(store, "name:web", ["10.99.0.0/24"], "198.18.0.3")
    assert oc.leave(store, cid, "198.18.0.1") is False  # host 2 still has it
    assert store.get(f"{vnis.PREFIX}{vni}") is not None
    assert oc.leave(store, cid, "198.18.0.2") is True
    assert store.get(f"{oc.RECORDS}{cid}") is None and store.get(f"{vnis.PREFIX}{vni}") is None


def test_a_pinned_vni_must_be_free_and_agreed():
    store = MemoryStore("global")
    cid, vni = oc.join(store, "name:web", ["10.90.0.0/24"], "h1", vni=5000)
    assert vni == 5000
    with pytest.raises(Conflict, match="5000"):
        oc.join(store, "name:db", ["10.91.0.0/24"], "h1", vni=5000)
    with pytest.raises(Conflict, match="uses VXLAN id 5000"):
        oc.join(store, "name:web", ["10.90.0.0/24"], "h2", vni=6000)
    assert store.get(f"{vnis.PREFIX}6000") is None


# -- IPAM pools shared by the hosts of a cluster -----------------------------------------------


def _host_ipam(store, name):
    return SharedPoolIpam(DefaultIpam({"LocalDefault": store, "GlobalDefault": store}), store, name)


def test_hosts_share_a_pool_and_its_gateway_but_never_an_address():
    store = MemoryStore("global")
    a, b = _host_ipam(store, "h1"), _host_ipam(store, "h2")
    pa = a.request_pool("LocalDefault", "10.90.0.0/24", None, {}, False)
    pb = b.request_pool("LocalDefault", "10.90.0.0/24", None, {}, False)
    assert pa.pool_id == pb.pool_id
    assert a.request_address(pa.pool_id, None, GW) == b.request_address(pb.pool_id, None, GW) == "10.90.0.1/24"
    got = {
        a.request_address(pa.pool_id, None, {}),
        b.request_address(pb.pool_id, None, {}),
        a.request_address(pa.pool_id, None, {}),
    }
    assert got == {"10.90.0.2/24", "10.90.0.3/24", "10.90.0.4/24"}
    with pytest.raises(Conflict, match="gateway of this shared pool is 10.90.0.1"):
        b.request_address(pb.pool_id, "10.90.0.254", GW)
    a.release_address(pa.pool_id, "10.90.0.1")  # a host's gateway release: shared, kept
    b.release_pool(pb.pool_id)
    assert a.request_address(pa.pool_id, None, GW) == "10.90.0.1/24"  # still a's pool
    a.release_pool(pa.pool_id)
    assert store.list("plugin-pool") == [] and store.list("ipam/") == []


def test_shared_pools_need_a_subnet_and_refuse_an_overlap():
    store = MemoryStore("global")
    a = _host_ipam(store, "h1")
    with pytest.raises(InvalidParameter, match="--subnet"):
        a.request_pool("LocalDefault", None, None, {}, False)
    a.request_pool("LocalDefault", "10.90.0.0/24", None, {}, False)
    with pytest.raises(Conflict, match="overlaps"):
        _host_ipam(store, "h2").request_pool("LocalDefault", "10.90.0.0/16", None, {}, False)


def test_a_host_gone_for_good_is_forgotten_and_what_only_it_held_is_freed():
    store = MemoryStore("global")
    web, _ = oc.join(store, "name:web", ["10.90.0.0/24"], "h1")
    oc.join(store, "name:web", ["10.90.0.0/24"], "h2")
    solo, solo_vni = oc.join(store, "name:solo", ["10.91.0.0/24"], "h2")
    ipam1, ipam2 = _host_ipam(store, "h1"), _host_ipam(store, "h2")
    shared = ipam1.request_pool("LocalDefault", "10.90.0.0/24", None, {}, False)
    ipam2.request_pool("LocalDefault", "10.90.0.0/24", None, {}, False)
    only2 = ipam2.request_pool("LocalDefault", "10.91.0.0/24", None, {}, False)
    store.put("nodes/h2", {"address": "h2"})
    with pytest.raises(Conflict, match="h2 is alive"):
        oc.forget_host(store, "h2", _host_ipam(store, "h2"))
    store.delete("nodes/h2")  # its lease expired: gone

    lines = oc.forget_host(store, "h2", _host_ipam(store, "h2"))
    assert len(lines) == 4 and any("name:solo" in line and "freed" in line for line in lines)
    assert oc.members(store, web) == ["h1"] and store.get(f"{oc.RECORDS}{solo}") is None
    assert store.get(f"{vnis.PREFIX}{solo_vni}") is None
    assert only2.pool_id not in ipam1.pools_of_member() + _host_ipam(store, "h2").pools_of_member()
    # h2's own pool was freed in the IPAM, not just unshared; the shared one is kept
    assert [kv.value["pool_id"] for kv in store.list("plugin-pool/")] == [shared.pool_id]
    assert len([kv for kv in store.list("ipam/") if "/pools/" in kv.key]) == 1
    assert ipam1.request_address(shared.pool_id, None, {})  # h1's share is untouched
    assert oc.forget_host(store, "h2", _host_ipam(store, "h2")) == []


def test_two_hosts_pinning_one_vni_for_one_overlay_race_safely():
    store = MemoryStore("global")
    cid = oc.cluster_id("name:web")
    assert oc._pin(store, cid, 700) == (700, True)  # host A took the VNI, not yet the record
    assert oc.join(store, "name:web", ["10.90.0.0/24"], "h2", vni=700) == (cid, 700)  # B: same overlay
    assert oc.join(store, "name:web", ["10.90.0.0/24"], "h1", vni=700) == (cid, 700)  # A goes on
    assert store.get(f"{vnis.PREFIX}700").value == {"network": cid}  # still held
    with pytest.raises(Conflict, match="700 is already used"):
        oc.join(store, "name:db", ["10.91.0.0/24"], "h1", vni=700)


def test_one_share_per_host_and_one_spelling_per_subnet():
    store = MemoryStore("global")
    a, b = _host_ipam(store, "h1"), _host_ipam(store, "h2")
    pa = a.request_pool("LocalDefault", "fd00:0::/64", None, {}, True)
    assert b.request_pool("LocalDefault", "fd00::/64", None, {}, True).pool_id == pa.pool_id
    with pytest.raises(Conflict, match="already has a network on subnet fd00::/64"):
        a.request_pool("LocalDefault", "fd00::/64", None, {}, True)
    a.request_pool("LocalDefault", "10.90.0.0/24", "10.90.0.128/25", {}, False)
    with pytest.raises(Conflict, match="ip-range 10.90.0.128/25"):
        b.request_pool("LocalDefault", "10.90.0.0/24", None, {}, False)


def test_shares_no_network_uses_are_given_back_at_start():
    store = MemoryStore("global")
    a, b = _host_ipam(store, "h1"), _host_ipam(store, "h2")
    used = a.request_pool("LocalDefault", "10.90.0.0/24", None, {}, False)
    leaked = a.request_pool("LocalDefault", "10.91.0.0/24", None, {}, False)  # its ReleasePool failed
    b.request_pool("LocalDefault", "10.91.0.0/24", None, {}, False)
    assert a.release_unused({"10.90.0.0/24"}) == [leaked.pool_id]
    assert a.pools_of_member() == [used.pool_id]
    assert b.pools_of_member() == [leaked.pool_id]  # b's share is untouched


def test_pools_in_use_reads_the_recorded_networks():
    st = ServedState(MemoryStore())
    st.save_network(NID, NetworkSpec(NID, "n", {}, ipv4=(IPAMData("10.90.0.0/24"),), ipv6=(IPAMData("fd00:0::/64"),)))
    assert st.pools_in_use() == {"10.90.0.0/24", "fd00::/64"}


def test_publishing_an_endpoint_cancels_its_pending_withdrawal():
    """At a restart a resync may take our still-published peer for a stale one and
    queue its withdrawal; publishing it again must cancel that, or it is deleted."""
    from types import SimpleNamespace

    from cnm.cluster.sync import ClusterSync

    sync = ClusterSync(None, MemoryStore("global"), "198.18.0.1")
    sync._withdraw.add(f"peers/{NID}/{EID}")
    ep = SimpleNamespace(
        id=EID, name="c", address="10.90.0.2/24", address_v6=None, mac="02:42:0a:5a:00:02", aliases=(), container_id=""
    )
    sync.publish(SimpleNamespace(id=NID), ep)  # no lease yet: kept for the publish loop
    assert sync._withdraw == set()
    assert sync._wake.is_set() and sync._unconfirmed >= {f"peers/{NID}/{EID}"}


def test_an_address_is_claimed_once_per_overlay_across_hosts():
    store = MemoryStore("global")
    cid = oc.cluster_id("name:web")
    oc.claim_address(store, cid, "10.90.0.2/24", "h1", EID)
    oc.claim_address(store, cid, "10.90.0.2/24", "h1", EID)  # a retried call: fine
    with pytest.raises(Conflict, match="already used on host h1"):
        oc.claim_address(store, cid, "10.90.0.2/24", "h2", "c" * 64)
    oc.claim_address(store, oc.cluster_id("name:db"), "10.90.0.2/24", "h2", "c" * 64)  # other overlay
    oc.release_address(store, cid, "10.90.0.2", "c" * 64)  # not its claim: kept
    assert [c[1] for c in oc.claims_of(store, "h1")] == ["10.90.0.2"]
    oc.release_address(store, cid, "10.90.0.2", EID)
    assert oc.claims_of(store, "h1") == []
    oc.claim_address(store, cid, "10.90.0.2/24", "h2", "c" * 64)


def test_a_pool_release_docker_will_not_retry_is_not_answered_with_an_error():
    class Away(MemoryStore):
        down = False

        def delete(self, key):
            if self.down:
                raise Unavailable("cluster store unreachable")
            return super().delete(key)

    store = Away("global")
    a = _host_ipam(store, "h1")
    pool = a.request_pool("LocalDefault", "10.90.0.0/24", None, {}, False)
    store.down = True
    a.release_pool(pool.pool_id)  # logged; the share stays for start-up
    with pytest.raises(Unavailable):
        a.give_back(pool.pool_id)
    store.down = False
    assert a.release_unused(set()) == [pool.pool_id] and store.list("plugin-pool") == []


def test_aux_addresses_are_shared_but_a_containers_static_address_is_not():
    store = MemoryStore("global")
    a, b = _host_ipam(store, "h1"), _host_ipam(store, "h2")
    assert a.requires_mac_address  # so Docker tells containers' requests apart
    pa = a.request_pool("LocalDefault", "10.90.0.0/24", None, {}, False)
    pb = b.request_pool("LocalDefault", "10.90.0.0/24", None, {}, False)
    assert a.request_address(pa.pool_id, "10.90.0.250", {}) == "10.90.0.250/24"  # --aux-address
    assert b.request_address(pb.pool_id, "10.90.0.250", {}) == "10.90.0.250/24"  # same, on host 2
    mac = {"com.docker.network.endpoint.macaddress": "02:42:0a:5a:00:4d"}
    assert a.request_address(pa.pool_id, "10.90.0.77", mac) == "10.90.0.77/24"  # docker run --ip
    with pytest.raises(Conflict, match="already in use"):
        b.request_address(pb.pool_id, "10.90.0.77", mac)
    with pytest.raises(Conflict, match="already in use"):
        b.request_address(pb.pool_id, "10.90.0.250", mac)  # never a container's
    b.release_address(pb.pool_id, "10.90.0.250")  # kept: a uses it too
    assert a.request_address(pa.pool_id, "10.90.0.250", {}) == "10.90.0.250/24"


def test_a_release_cut_short_is_finished_by_the_next_request():
    store = MemoryStore("global")
    a = _host_ipam(store, "h1")
    pool = a.request_pool("LocalDefault", "10.90.0.0/24", None, {}, False)
    a.request_address(pool.pool_id, None, GW)
    real = a.inner.release_pool

    def crash(pool_id):
        raise Unavailable("etcd went away half-way")

    a.inner.release_pool = crash
    with pytest.raises(Unavailable):
        a.give_back(pool.pool_id)  # marked releasing, not yet freed
    assert [kv.value.get("releasing") for kv in store.list("plugin-pool/")] == [True]
    a.inner.release_pool = real
    b = _host_ipam(store, "h2")
    again = b.request_pool("LocalDefault", "10.90.0.0/24", None, {}, False)
    assert again.subnet == "10.90.0.0/24"
    assert b.request_address(again.pool_id, None, GW) == "10.90.0.1/24"  # a fresh pool, not the orphan
    assert [kv.value.get("releasing") for kv in store.list("plugin-pool/")] == [None]
