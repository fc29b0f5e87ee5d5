"""Controller network operations against fake drivers and the real default IPAM."""

from __future__ import annotations

import pytest

import ipam
from cnm.controller import Controller
from cnm.driverapi import DriverRegistry
from cnm.errors import Conflict, Forbidden, InternalError, InvalidParameter, NotFound
from cnm.ipamapi import IpamRegistry
from cnm.requests import IPAMConfigRequest, NetworkCreate
from cnm.store import Put
from cnm.store.memory import MemoryStore
from cnm.store.sqlite import SQLiteStore
from tests.unit.fakes import FakeDriver


def build(store=None):
    store = store or MemoryStore()
    drivers = DriverRegistry()
    fakes = {name: FakeDriver(name) for name in ("null", "host", "bridge", "fake")}
    for d in fakes.values():
        drivers.register(d)
    ipams = IpamRegistry()
    default = ipam.register(ipams, stores={"LocalDefault": store, "GlobalDefault": store})
    ctl = Controller(drivers, ipams, {"local": store})
    return ctl, fakes, default, store


def snapshot(store, default, fakes):
    return ({kv.key: kv.value for kv in store.list("")}, {name: sorted(f.networks) for name, f in fakes.items()})


def test_builtin_networks_once_and_not_removable():
    ctl, fakes, default, store = build()
    ctl.ensure_builtin_networks()
    ctl.ensure_builtin_networks()
    names = sorted(n.name for n in ctl.list_networks())
    assert names == ["bridge", "host", "none"]
    bridge = ctl.get_network("bridge")
    assert str(bridge.pools[0].subnet) == "172.17.0.0/16" and str(bridge.pools[0].gateway) == "172.17.0.1"
    assert bridge.options["com.docker.network.bridge.name"] == "cnm0"
    assert ctl.get_network("host").pools == [] and ctl.get_network("none").pools == []
    for name in ("bridge", "host", "none"):
        with pytest.raises(Forbidden, match="pre-defined"):
            ctl.delete_network(name)
    with pytest.raises(Forbidden, match='only one instance of "host"'):
        ctl.create_network(NetworkCreate(name="h2", driver="host"))
    with pytest.raises(Forbidden, match='only one instance of "none"'):
        ctl.create_network(NetworkCreate(name="n2", driver="null"))


def test_create_inspect_delete_roundtrip():
    ctl, fakes, default, store = build()
    net = ctl.create_network(
        NetworkCreate(
            name="web",
            driver="fake",
            ipam_configs=[
                IPAMConfigRequest(
                    subnet="10.9.0.0/24",
                    ip_range="10.9.0.128/25",
                    gateway="10.9.0.254",
                    aux_addresses={"router": "10.9.0.2"},
                )
            ],
        )
    )
    assert net.id in fakes["fake"].networks
    spec = fakes["fake"].networks[net.id]
    assert spec.ipv4[0].gateway == "10.9.0.254/24" and spec.ipv4[0].aux_addresses == {"router": "10.9.0.2/24"}
    assert ctl.get_network("web") is net and ctl.get_network(net.id[:5]) is net
    assert sorted(default.allocated(net.pools[0].pool_id)) == ["10.9.0.2", "10.9.0.254"]
    ctl.delete_network("web")
    assert net.id not in fakes["fake"].networks
    assert default.pools("LocalDefault") == []
    assert store.list("network/") == []
    with pytest.raises(NotFound):
        ctl.get_network("web")


def test_bad_requests_change_nothing():
    ctl, fakes, default, store = build()
    ctl.create_network(NetworkCreate(name="a", driver="fake", ipam_configs=[IPAMConfigRequest(subnet="10.1.0.0/16")]))
    before = snapshot(store, default, fakes)
    bad = [
        (NetworkCreate(name="a", driver="fake"), Conflict, "already exists"),
        (NetworkCreate(name="b", driver="nope"), NotFound, "driver 'nope' not found"),
        (
            NetworkCreate(name="b", driver="fake", ipam_configs=[IPAMConfigRequest(subnet="10.1.2.0/24")]),
            Conflict,
            "overlaps",
        ),
        (NetworkCreate(name="b", driver="fake", options={"bogus": "1"}), InvalidParameter, "unknown option"),
        (NetworkCreate(name="bad name!", driver="fake"), InvalidParameter, "invalid network name"),
        (NetworkCreate(name="x" * 65, driver="fake"), InvalidParameter, "too long"),
        (
            NetworkCreate(
                name="b", driver="fake", ipam_configs=[IPAMConfigRequest(subnet="10.2.0.0/24", gateway="10.3.0.1")]
            ),
            InvalidParameter,
            "not within",
        ),
        (
            NetworkCreate(name="b", driver="fake", ipam_configs=[IPAMConfigRequest(subnet="fd00::/64")]),
            InvalidParameter,
            "--ipv6",
        ),
    ]
    for req, exc, text in bad:
        with pytest.raises(exc, match=text):
            ctl.create_network(req)
        assert snapshot(store, default, fakes) == before


@pytest.mark.parametrize("step", ["create_network", "store"])
def test_rollback_on_each_failing_step(step, monkeypatch):
    ctl, fakes, default, store = build()
    before = snapshot(store, default, fakes)
    if step == "store":
        real_atomic = store.atomic

        def failing_atomic(ops, expect=None):  # the network's record is committed in one transaction
            if any(isinstance(op, Put) and op.key.startswith("network/") for op in ops):
                raise InternalError("disk full")
            return real_atomic(ops, expect)

        monkeypatch.setattr(store, "atomic", failing_atomic)
    else:
        fakes["fake"].fail_on.add(step)
    with pytest.raises(InternalError):
        ctl.create_network(
            NetworkCreate(
                name="n",
                driver="fake",
                ipam_configs=[IPAMConfigRequest(subnet="10.5.0.0/24", aux_addresses={"x": "10.5.0.9"})],
            )
        )
    monkeypatch.undo()
    assert snapshot(store, default, fakes) == before
    assert default.pools("LocalDefault") == []
    assert ctl.list_networks() == []


def test_rollback_when_aux_address_conflicts_with_gateway():
    ctl, fakes, default, store = build()
    with pytest.raises(Conflict):
        ctl.create_network(
            NetworkCreate(
                name="n",
                driver="fake",
                ipam_configs=[
                    IPAMConfigRequest(subnet="10.6.0.0/24", gateway="10.6.0.1", aux_addresses={"x": "10.6.0.1"})
                ],
            )
        )
    assert default.pools("LocalDefault") == [] and fakes["fake"].networks == {}


def test_delete_refused_with_endpoints_and_driver_failure_keeps_network():
    ctl, fakes, default, store = build()
    net = ctl.create_network(NetworkCreate(name="n", driver="fake"))
    fakes["fake"].fail_on.add("delete_network")
    with pytest.raises(InternalError):
        ctl.delete_network("n")
    assert ctl.get_network("n") is net and store.get("network/" + net.id) is not None
    assert default.pools("LocalDefault")


def test_ambiguous_prefix_and_prune(tmp_path):
    ctl, fakes, default, store = build()
    for i in range(20):
        ctl.create_network(NetworkCreate(name=f"n{i}", driver="fake"))
    # 20 random 64-hex IDs: some single-hex-digit prefix is shared by two of them.
    firsts = [n.id[0] for n in ctl.list_networks()]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    with pytest.raises(InvalidParameter, match="ambiguous"):
        ctl.get_network(shared)
    ctl.ensure_builtin_networks()
    removed = ctl.prune_networks()
    assert sorted(removed) == sorted(f"n{i}" for i in range(20))
    assert sorted(n.name for n in ctl.list_networks()) == ["bridge", "host", "none"]


def test_state_survives_reopen(tmp_path):
    path = str(tmp_path / "state.db")
    ctl, fakes, default, store = build(SQLiteStore(path))
    ctl.ensure_builtin_networks()
    net = ctl.create_network(NetworkCreate(name="persist", driver="fake"))
    store.close()
    ctl2, fakes2, default2, store2 = build(SQLiteStore(path))
    ctl2.ensure_builtin_networks()
    assert sorted(n.name for n in ctl2.list_networks()) == ["bridge", "host", "none", "persist"]
    again = ctl2.get_network("persist")
    assert again.pools[0].subnet == net.pools[0].subnet
    assert net.id in fakes2["fake"].networks  # restored into the driver
    other = ctl2.create_network(NetworkCreate(name="other", driver="fake"))
    assert str(other.pools[0].subnet) not in {str(net.pools[0].subnet), "172.17.0.0/16"}


def test_a_global_network_made_elsewhere_is_created_here_once():
    """Another host's global network reaches this host's driver as CreateNetwork (a
    remote plugin on every host must hear of it), once, and is forgotten when removed."""
    local, shared = MemoryStore(), MemoryStore(scope="global")
    drivers = DriverRegistry()
    glob = FakeDriver("glob", scope="global")
    for d in (FakeDriver("null"), FakeDriver("host"), FakeDriver("bridge"), glob):
        drivers.register(d)
    ipams = IpamRegistry()
    ipam.register(ipams, stores={"LocalDefault": local, "GlobalDefault": shared})
    here = Controller(drivers, ipams, {"local": local, "global": shared})
    created = []
    real_create = glob.create_network
    glob.create_network = lambda spec: (created.append(spec.id), real_create(spec))
    record = {"id": "e" * 64, "name": "far", "driver": "glob", "scope": "global", "pools": []}
    assert here.adopt_remote_network(record).name == "far"
    assert here.adopt_remote_network(record) is None
    assert created == ["e" * 64] and "e" * 64 in glob.networks
    assert local.get("globalcache/network/" + "e" * 64) is not None
    here.forget_remote_network("e" * 64)
    assert "e" * 64 not in glob.networks and local.get("globalcache/network/" + "e" * 64) is None
