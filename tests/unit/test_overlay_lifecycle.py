"""OverlayDriver against fakes at the OS seam: a fake "world" of namespaces, each with a
FakeNetlink extended with VXLAN devices, FDB and neighbour entries, and a recording
VXLAN filter. Tests assert the resulting state, not call sequences."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnm import labels
from cnm.driverapi import GLOBAL, EndpointInterface, IPAMData, NetworkSpec
from cnm.errors import Conflict, InternalError, InvalidParameter, NotFound
from cnm.osl.fake import FakeNetlink
from cnm.osl.vxlan import VxlanInfo
from drivers.overlay import naming
from drivers.overlay.config import VXLANID_LIST
from drivers.overlay.driver import OverlayDriver
from drivers.overlay.filter import FilterState

NID = "0123456789ab" + "a" * 52
NID2 = "fedcba987654" + "b" * 52
EID = "e1e1e1e1e1" + "1" * 54
ME, OTHER = "198.18.0.1", "198.18.0.2"


class FakeVxlanNetlink(FakeNetlink):
    """One namespace of the fake world."""

    def __init__(self, world: World, netns: str | None) -> None:
        super().__init__(netns)
        self.world = world
        self.vxlans: dict[str, VxlanInfo] = {}
        self.fdb: dict[str, dict[str, str]] = {}  # dev -> mac -> dst
        self.neigh: dict[str, dict[str, str]] = {}  # dev -> ip -> mac
        self.cross_peer: dict[str, tuple[FakeVxlanNetlink, str]] = {}  # veth end -> (ns, other end)

    def create_vxlan(self, name, vni, *, local, port=4789, mtu=1450, learning=False, proxy=True, alias=None):
        # The kernel refuses a second device with the same VNI and port on one underlay.
        if any((v.vni, v.port) == (vni, port) for v in self.world.underlay_vxlans()):
            raise Conflict(f"cannot create VXLAN device {name}: File exists")
        self._new(name, kind="vxlan", mtu=mtu, alias=alias)
        self.vxlans[name] = VxlanInfo(name, vni, port, local, learning, proxy)

    def vxlan_info(self, name):
        self._get(name)
        if name not in self.vxlans:
            raise InvalidParameter(f"{name} is not a VXLAN device")
        return self.vxlans[name]

    def move_link_to_netns(self, name, netns, new_name=None):
        link = self._get(name)
        target = self.world.namespaces[netns]
        peer = link.peer
        super().move_link_to_netns(name, netns, new_name)
        moved = target._new(new_name or name, kind=link.kind, mtu=link.mtu, mac=link.mac, alias=link.alias)
        if name in self.vxlans:
            target.vxlans[moved.name] = self.vxlans.pop(name)
        if peer and peer in self._links:  # a veth end: remember the pair across namespaces
            target.cross_peer[moved.name] = (self, peer)
            self.cross_peer[peer] = (target, moved.name)

    def delete_link(self, name):
        existed = super().delete_link(name)
        self.vxlans.pop(name, None)
        self.fdb.pop(name, None)
        self.neigh.pop(name, None)
        other = self.cross_peer.pop(name, None)
        if existed and other:
            ns, peer = other
            ns.cross_peer.pop(peer, None)
            FakeNetlink.delete_link(ns, peer)
        return existed

    def fdb_replace(self, dev, mac, dst):
        self._get(dev)
        self.fdb.setdefault(dev, {})[mac] = dst

    def fdb_delete(self, dev, mac, dst=None):
        return self.fdb.get(dev, {}).pop(mac, None) is not None

    def neigh_replace(self, dev, ip, mac):
        self._get(dev)
        self.neigh.setdefault(dev, {})[ip] = mac

    def neigh_delete(self, dev, ip):
        return self.neigh.get(dev, {}).pop(ip, None) is not None


class World:
    """The host namespace plus bind-mounted namespaces (a file marks each mount)."""

    def __init__(self) -> None:
        self.host = FakeVxlanNetlink(self, None)
        self.namespaces: dict[str, FakeVxlanNetlink] = {}

    def handle(self, path: str | None) -> FakeVxlanNetlink:
        if path is None:
            return self.host
        if path not in self.namespaces:
            raise NotFound(f"no network namespace at {path}")
        return self.namespaces[path]

    def underlay_vxlans(self) -> list[VxlanInfo]:
        # Devices created in the host keep their socket there, wherever they live now.
        return [v for ns in (self.host, *self.namespaces.values()) for v in ns.vxlans.values()]

    # the Namespaces protocol
    def create(self, path: str) -> None:
        if path in self.namespaces:
            raise Conflict(f"a network namespace is already mounted at {path}")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).touch()
        self.namespaces[path] = FakeVxlanNetlink(self, path)

    def delete(self, path: str) -> None:
        ns = self.namespaces.pop(path, None)
        if ns is not None:
            for name in list(ns.link_names()):
                ns.delete_link(name)  # veth peers in the host die too
        Path(path).unlink(missing_ok=True)

    def exists(self, path: str) -> bool:
        return path in self.namespaces


class RecordingFilter:
    def __init__(self) -> None:
        self.state: FilterState | None = None
        self.applied: list[FilterState] = []

    def apply(self, state: FilterState) -> None:
        self.state = state
        self.applied.append(state)

    def clear(self) -> None:
        self.state = None


def spec(nid: str = NID, vni: int = 256, options: dict | None = None) -> NetworkSpec:
    return NetworkSpec(
        id=nid,
        name="ov",
        options={VXLANID_LIST: str(vni), **(options or {})},
        ipv4=(IPAMData("10.200.0.0/24", "10.200.0.1/24"), IPAMData("10.201.0.0/24", "10.201.0.1/24")),
    )


def peer(
    ip: str = "10.200.0.3", mac: str = "02:42:0a:c8:00:03", vtep: str = OTHER, eid: str = "remote-1", nid: str = NID
) -> dict:
    return {"network_id": nid, "endpoint_id": eid, "ip": ip, "mac": mac, "vtep": vtep}


@pytest.fixture
def world():
    return World()


@pytest.fixture
def fw():
    return RecordingFilter()


@pytest.fixture
def driver(world, fw, tmp_path):
    return OverlayDriver(
        world.handle, run_dir=str(tmp_path), advertise_addr=ME, underlay_mtu=lambda: 1500, firewall=fw, namespaces=world
    )


def ns_of(world: World, tmp_path: Path, nid: str = NID, vni: int = 256) -> FakeVxlanNetlink:
    return world.namespaces[naming.netns_path(str(tmp_path), vni, nid)]


def test_capabilities_and_options(driver):
    caps = driver.capabilities()
    assert (caps.data_scope, caps.connectivity_scope, caps.gateway_bridge) == (GLOBAL, GLOBAL, True)
    assert driver.validate_options({labels.MTU: "1400"}, False) == {labels.MTU: "1400"}
    with pytest.raises(InvalidParameter):
        driver.validate_options({VXLANID_LIST: "0"}, False)


def test_create_network_builds_namespace_bridge_and_vxlan(driver, world, fw, tmp_path):
    driver.create_network(spec())
    ns = ns_of(world, tmp_path)
    br, vx = naming.bridge_name(256, NID), naming.vxlan_name(256, NID)
    assert driver.netns_path(NID) == str(tmp_path / "overlay" / "256-0123456789ab")
    bridge, dev = ns.link(br), ns.link(vx)
    assert bridge.up and bridge.mtu == 1450 and bridge.alias == naming.network_alias(NID)
    assert ns.addresses(br) == ["10.200.0.1/24", "10.201.0.1/24"]  # one per subnet
    assert dev.up and dev.mtu == 1450 and dev.master == bridge.index
    assert ns.vxlan_info(vx) == VxlanInfo(vx, 256, 4789, ME, False, True)
    assert not world.host.link_exists(vx)  # moved out of the host
    assert ns.sysctls["net.ipv6.conf.all.disable_ipv6"] == "1"
    assert fw.state == FilterState(4789, frozenset())  # filter up with the network


def test_mtu_option_and_underlay(world, fw, tmp_path):
    drv = OverlayDriver(
        world.handle, run_dir=str(tmp_path), advertise_addr=ME, underlay_mtu=9000, firewall=fw, namespaces=world
    )
    drv.create_network(spec())
    drv.create_network(spec(NID2, 300, {labels.MTU: "1300"}))
    assert ns_of(world, tmp_path).link(naming.bridge_name(256, NID)).mtu == 8950
    assert ns_of(world, tmp_path, NID2, 300).link(naming.vxlan_name(300, NID2)).mtu == 1300


def test_same_vni_twice_is_conflict_and_leaves_nothing(driver, world, tmp_path):
    driver.create_network(spec())
    with pytest.raises(Conflict, match="VXLAN id 256"):
        driver.create_network(spec(NID2, 256))
    with pytest.raises(Conflict, match="already exists"):
        driver.create_network(spec())
    assert list(world.namespaces) == [naming.netns_path(str(tmp_path), 256, NID)]


def test_failed_create_rolls_back(driver, world, fw, tmp_path):
    # A device someone else left with our VNI on the underlay: the kernel says EEXIST.
    world.host.create_vxlan("foreign", 256, local=ME)
    with pytest.raises(Conflict):
        driver.create_network(spec())
    assert world.namespaces == {} and driver.network_ids() == []
    assert world.host.link_exists("foreign")  # not ours: untouched
    assert fw.state is None  # filter down again


def test_delete_network_is_idempotent_and_finds_namespace_after_restart(driver, world, fw, tmp_path):
    driver.create_network(spec())
    fresh = OverlayDriver(
        world.handle, run_dir=str(tmp_path), advertise_addr=ME, underlay_mtu=1500, firewall=fw, namespaces=world
    )
    fresh.delete_network(NID)  # knows nothing, finds <vni>-<nid12> on disk
    assert world.namespaces == {}
    assert fw.state is None  # and takes the filter down with the last network
    assert not any(p.name.startswith("256-") for p in (tmp_path / "overlay").iterdir())
    driver.delete_network(NID)
    driver.delete_network(NID)
    assert world.underlay_vxlans() == []


def test_filter_follows_networks_and_nodes(driver, fw):
    driver.discover_new("node", {"address": OTHER})
    assert fw.state is None  # no overlay network here: port not ours
    driver.create_network(spec())
    assert fw.state.vteps == {OTHER}
    driver.discover_new("node", {"address": "198.18.0.3"})
    driver.discover_new("node", {"address": "198.18.0.3"})  # idempotent
    assert fw.state.vteps == {OTHER, "198.18.0.3"} and driver.nodes() == [OTHER, "198.18.0.3"]
    driver.discover_delete("node", {"address": OTHER})
    driver.discover_delete("node", {"address": OTHER})
    assert fw.state.vteps == {"198.18.0.3"}
    driver.delete_network(NID)
    assert fw.state is None


def test_peers_before_the_network_are_programmed_on_create(driver, world, tmp_path):
    driver.discover_new("peer", peer())
    driver.discover_new("peer", peer("10.200.0.4/24", "02:42:0a:c8:00:04", "198.18.0.3", "remote-2"))
    driver.discover_new("peer", peer("10.200.0.9", "02:42:0a:c8:00:09", ME, "local-1"))  # ours: skipped
    driver.create_network(spec())
    ns, vx = ns_of(world, tmp_path), naming.vxlan_name(256, NID)
    assert ns.fdb[vx] == {"02:42:0a:c8:00:03": OTHER, "02:42:0a:c8:00:04": "198.18.0.3"}
    assert ns.neigh[vx] == {"10.200.0.3": "02:42:0a:c8:00:03", "10.200.0.4": "02:42:0a:c8:00:04"}


def test_peer_add_delete_idempotent(driver, world, tmp_path):
    driver.create_network(spec())
    ns, vx = ns_of(world, tmp_path), naming.vxlan_name(256, NID)
    driver.discover_new("peer", peer())
    driver.discover_new("peer", peer())
    assert ns.fdb[vx] == {"02:42:0a:c8:00:03": OTHER}
    driver.discover_delete("peer", {"network_id": NID, "endpoint_id": "remote-1"})
    driver.discover_delete("peer", peer())
    assert ns.fdb.get(vx, {}) == {} and ns.neigh.get(vx, {}) == {}


def test_out_of_order_events_keep_the_newest_claim(driver, world, tmp_path):
    """An address reused by a new endpoint on another host before the old endpoint's
    delete arrives: the late delete must not remove the new endpoint's entries."""
    driver.create_network(spec())
    ns, vx = ns_of(world, tmp_path), naming.vxlan_name(256, NID)
    driver.discover_new("peer", peer(eid="old"))
    driver.discover_new("peer", peer(vtep="198.18.0.7", eid="new"))
    assert ns.fdb[vx]["02:42:0a:c8:00:03"] == "198.18.0.7"
    driver.discover_delete("peer", peer(eid="old"))
    assert ns.fdb[vx] == {"02:42:0a:c8:00:03": "198.18.0.7"}
    assert ns.neigh[vx] == {"10.200.0.3": "02:42:0a:c8:00:03"}


def test_peer_update_moves_entries(driver, world, tmp_path):
    driver.create_network(spec())
    ns, vx = ns_of(world, tmp_path), naming.vxlan_name(256, NID)
    driver.discover_new("peer", peer())
    driver.discover_new("peer", peer("10.200.0.5", "02:42:0a:c8:00:05"))  # same endpoint, new address
    assert ns.neigh[vx] == {"10.200.0.5": "02:42:0a:c8:00:05"}
    assert ns.fdb[vx] == {"02:42:0a:c8:00:05": OTHER}


def test_peers_survive_network_recreate(driver, world, tmp_path):
    driver.create_network(spec())
    driver.discover_new("peer", peer())
    driver.delete_network(NID)
    driver.create_network(spec())
    assert ns_of(world, tmp_path).fdb[naming.vxlan_name(256, NID)] == {"02:42:0a:c8:00:03": OTHER}


def test_bad_discovery_payload_and_unknown_kind(driver):
    with pytest.raises(InvalidParameter):
        driver.discover_new("peer", {"network_id": NID})
    driver.discover_new("encryption-keys", {"whatever": 1})  # ignored, as in Docker


def test_endpoint_lifecycle(driver, world, tmp_path):
    driver.create_network(spec())
    ns = ns_of(world, tmp_path)
    iface = driver.create_endpoint(NID, EID, EndpointInterface(address="10.200.0.2/24"), {})
    assert iface.mac == "02:42:0a:c8:00:02" and iface.address == "10.200.0.2/24"
    b_end, c_end = naming.bridge_end(EID), naming.container_end(EID)
    link = ns.link(b_end)
    assert link.alias == naming.endpoint_alias(EID) and link.up and link.mtu == 1450
    assert link.master == ns.link(naming.bridge_name(256, NID)).index
    host_end = world.host.link(c_end)
    assert host_end.mac == "02:42:0a:c8:00:02" and host_end.mtu == 1450
    assert driver.endpoint_info(NID, EID)["com.docker.network.endpoint.macaddress"] == "02:42:0a:c8:00:02"

    join = driver.join(NID, EID, "/run/sb", {})
    assert (join.src_ifname, join.dst_prefix, join.gateway, join.gateway_v6, join.static_routes) == (
        c_end,
        "eth",
        None,
        None,
        (),
    )
    with pytest.raises(Conflict):
        driver.create_endpoint(NID, EID, EndpointInterface(address="10.200.0.2/24"), {})

    driver.delete_endpoint(NID, EID)
    assert not ns.link_exists(b_end) and not world.host.link_exists(c_end)
    driver.delete_endpoint(NID, EID)  # idempotent
    with pytest.raises(NotFound):
        driver.join(NID, EID, "/run/sb", {})


def test_endpoint_mac_choices(driver, world):
    driver.create_network(spec())
    given = driver.create_endpoint(
        NID, "e2" * 32, EndpointInterface(address="10.200.0.2/24", mac="02:00:00:00:00:aa"), {}
    )
    opt = driver.create_endpoint(
        NID,
        "e3" * 32,
        EndpointInterface(address="10.200.0.3/24"),
        {"com.docker.network.endpoint.macaddress": "02:00:00:00:00:bb"},
    )
    assert (given.mac, opt.mac) == ("02:00:00:00:00:aa", "02:00:00:00:00:bb")


def test_endpoint_failure_rolls_back(driver, world, tmp_path):
    driver.create_network(spec())
    ns = ns_of(world, tmp_path)
    ns.fail_next["set_master"] = InternalError("boom")
    with pytest.raises(InternalError):
        driver.create_endpoint(NID, EID, EndpointInterface(address="10.200.0.2/24"), {})
    assert not ns.link_exists(naming.bridge_end(EID))
    assert not world.host.link_exists(naming.container_end(EID))
    assert driver.endpoint_info(NID, EID) == {}


def test_restore_is_idempotent_and_keeps_endpoints(driver, world, fw, tmp_path):
    driver.create_network(spec())
    driver.create_endpoint(NID, EID, EndpointInterface(address="10.200.0.2/24"), {})
    driver.discover_new("peer", peer())
    ns = ns_of(world, tmp_path)
    before = sorted((link.name, link.index) for link in ns.links())
    driver.restore_network(spec())
    driver.restore_network(spec())
    assert sorted((link.name, link.index) for link in ns.links()) == before  # nothing rebuilt
    assert driver.endpoint_info(NID, EID)

    # A restarted daemon re-learns everything from the kernel objects.
    fresh = OverlayDriver(
        world.handle, run_dir=str(tmp_path), advertise_addr=ME, underlay_mtu=1500, firewall=fw, namespaces=world
    )
    fresh.restore_network(spec())
    fresh.restore_endpoint(NID, EID, EndpointInterface(address="10.200.0.2/24", mac="02:42:0a:c8:00:02"), {})
    assert sorted((link.name, link.index) for link in ns.links()) == before
    with pytest.raises(NotFound):
        fresh.restore_endpoint(NID, "gone" * 16, EndpointInterface(), {})


def test_restore_rebuilds_a_missing_vxlan_device(driver, world, tmp_path):
    driver.create_network(spec())
    driver.discover_new("peer", peer())
    ns, vx = ns_of(world, tmp_path), naming.vxlan_name(256, NID)
    ns.delete_link(vx)
    driver.restore_network(spec())
    assert ns.link(vx).up and ns.vxlan_info(vx).vni == 256
    assert ns.fdb[vx] == {"02:42:0a:c8:00:03": OTHER}  # peers re-programmed


def test_restore_recreates_vxlan_when_advertise_address_changed(world, fw, tmp_path):
    old = OverlayDriver(
        world.handle,
        run_dir=str(tmp_path),
        advertise_addr="198.18.0.99",
        underlay_mtu=1500,
        firewall=fw,
        namespaces=world,
    )
    old.create_network(spec())
    new = OverlayDriver(
        world.handle, run_dir=str(tmp_path), advertise_addr=ME, underlay_mtu=1500, firewall=fw, namespaces=world
    )
    new.restore_network(spec())
    assert ns_of(world, tmp_path).vxlan_info(naming.vxlan_name(256, NID)).local == ME


def test_underlay_mtu_read_from_the_advertise_interface(world, fw, tmp_path):
    world.host.create_bridge("uplink", 9000)
    world.host.add_address("uplink", f"{ME}/24")
    drv = OverlayDriver(
        world.handle, run_dir=str(tmp_path), advertise_addr=ME, underlay_mtu=None, firewall=fw, namespaces=world
    )
    drv.create_network(spec())
    assert ns_of(world, tmp_path).link(naming.bridge_name(256, NID)).mtu == 8950
    lost = OverlayDriver(
        world.handle,
        run_dir=str(tmp_path),
        advertise_addr="198.18.0.77",
        underlay_mtu=None,
        firewall=fw,
        namespaces=world,
    )
    with pytest.raises(NotFound, match="advertise address"):
        lost.create_network(spec(NID2, 300))


def test_register_adds_the_driver(world, fw, tmp_path):
    from cnm.driverapi import DriverRegistry
    from drivers.overlay import register

    reg = DriverRegistry()
    drv = register(
        reg, advertise_addr=ME, run_dir=str(tmp_path), netlink_factory=world.handle, underlay_mtu=1500, firewall=fw
    )
    assert reg.get("overlay") is drv and drv.advertise_addr == ME


def test_constructor_validates(world, fw, tmp_path):
    with pytest.raises(InvalidParameter, match="advertise"):
        OverlayDriver(world.handle, run_dir=str(tmp_path), advertise_addr="nope", underlay_mtu=1500, firewall=fw)
    with pytest.raises(InvalidParameter, match="port"):
        OverlayDriver(
            world.handle, run_dir=str(tmp_path), advertise_addr=ME, underlay_mtu=1500, firewall=fw, vxlan_port=0
        )


def test_a_dual_stack_peer_gets_an_ipv6_neighbour_too(driver, world, tmp_path):
    """Without it, IPv6 between containers on two hosts finds no neighbour: the VXLAN
    device learns nothing and floods nothing (learning off), so NDP goes unanswered."""
    driver.create_network(spec())
    ns, vx = ns_of(world, tmp_path), naming.vxlan_name(256, NID)
    driver.discover_new("peer", {**peer(), "ip6": "fd00:200::3/64"})
    assert ns.neigh[vx] == {"10.200.0.3": "02:42:0a:c8:00:03", "fd00:200::3": "02:42:0a:c8:00:03"}
    driver.discover_new("peer", {**peer(), "ip6": "fd00:200::5"})  # moved: the old entry goes
    assert ns.neigh[vx] == {"10.200.0.3": "02:42:0a:c8:00:03", "fd00:200::5": "02:42:0a:c8:00:03"}
    driver.discover_delete("peer", peer())
    assert ns.neigh.get(vx, {}) == {}
