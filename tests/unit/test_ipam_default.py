"""DefaultIpam against MemoryStore and SQLiteStore: pools, addresses, persistence."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnm.errors import Conflict, InvalidParameter, NotFound
from cnm.ipamapi import GATEWAY_REQUEST, GATEWAY_TYPE, GLOBAL_DEFAULT, LOCAL_DEFAULT, SERIAL_OPTION, IpamRegistry
from cnm.store.memory import MemoryStore
from cnm.store.sqlite import SQLiteStore
from ipam import register
from ipam.default import DefaultIpam

GW = {GATEWAY_REQUEST: GATEWAY_TYPE}
L = LOCAL_DEFAULT


class Env:
    """A store and a way to build a fresh DefaultIpam on it (or on the reopened file)."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind, self.path = kind, str(tmp_path / "state.db")
        self.store = self._open()

    def _open(self):
        return MemoryStore() if self.kind == "memory" else SQLiteStore(self.path)

    def ipam(self, **kw) -> DefaultIpam:
        return DefaultIpam({LOCAL_DEFAULT: self.store, GLOBAL_DEFAULT: self.store}, **kw)

    def restart(self, **kw) -> DefaultIpam:
        """Simulate a daemon restart: SQLite is closed and reopened from the file."""
        if self.kind == "sqlite":
            self.store.close()
            self.store = self._open()
        return self.ipam(**kw)


@pytest.fixture(params=["memory", "sqlite"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    e = Env(request.param, tmp_path)
    yield e
    e.store.close()


@pytest.fixture
def ipam(env: Env) -> DefaultIpam:
    return env.ipam()


# -- pools ------------------------------------------------------------------------------


def test_automatic_pools_follow_docker_order(ipam: DefaultIpam) -> None:
    p1 = ipam.request_pool(L, None, None, {}, False)
    p2 = ipam.request_pool(L, None, None, {}, False)
    assert (p1.pool_id, p1.subnet) == ("LocalDefault/172.17.0.0/16", "172.17.0.0/16")
    assert p2.subnet == "172.18.0.0/16"
    g = ipam.request_pool(GLOBAL_DEFAULT, None, None, {}, False)
    assert (g.pool_id, g.subnet) == ("GlobalDefault/10.0.0.0/24", "10.0.0.0/24")
    assert ipam.pools(L) == [(p1.pool_id, p1.subnet), (p2.pool_id, p2.subnet)]


def test_31_local_pools_then_exhaustion(ipam: DefaultIpam) -> None:
    subnets = [ipam.request_pool(L, None, None, {}, False).subnet for _ in range(31)]
    assert len(set(subnets)) == 31 and subnets[-1] == "192.168.240.0/20"
    with pytest.raises(Conflict) as exc:
        ipam.request_pool(L, None, None, {}, False)
    msg = str(exc.value)
    assert "could not find an available, non-overlapping IPv4 address pool" in msg
    assert "--subnet" in msg and "--default-address-pool" in msg
    ipam.release_pool(f"{L}/172.20.0.0/16")
    assert ipam.request_pool(L, None, None, {}, False).subnet == "172.20.0.0/16"


def test_automatic_choice_skips_excluded_and_explicit_pools(env: Env) -> None:
    routes = ["172.17.0.0/16", "172.19.3.0/24"]
    ipam = env.ipam(excluded=lambda: routes + ["bogus"])
    ipam.request_pool(L, "172.18.128.0/17", None, {}, False)  # taken by hand: blocks 172.18/16
    assert ipam.request_pool(L, None, None, {}, False).subnet == "172.20.0.0/16"
    routes.clear()  # excluded() is asked again at every choice
    assert ipam.request_pool(L, None, None, {}, False).subnet == "172.17.0.0/16"


def test_explicit_pool_overlap_is_refused(ipam: DefaultIpam) -> None:
    ipam.request_pool(L, "10.1.0.0/16", None, {}, False)
    with pytest.raises(Conflict, match="subnet 10.1.2.0/24 overlaps with the subnet 10.1.0.0/16 of another network"):
        ipam.request_pool(L, "10.1.2.0/24", None, {}, False)
    with pytest.raises(Conflict):
        ipam.request_pool(L, "10.1.0.0/16", None, {}, False)  # the same subnet twice
    with pytest.raises(Conflict):
        ipam.request_pool(L, "10.0.0.0/8", None, {}, False)
    # another address space is independent
    assert ipam.request_pool(GLOBAL_DEFAULT, "10.1.0.0/16", None, {}, False).subnet == "10.1.0.0/16"


def test_bad_pool_requests(ipam: DefaultIpam) -> None:
    with pytest.raises(
        InvalidParameter,
        match=r"invalid subnet 10.1.1.1/24: host bits set; did "
        r"you mean 10.1.1.0/24\?",
    ):
        ipam.request_pool(L, "10.1.1.1/24", None, {}, False)
    with pytest.raises(InvalidParameter, match="not inside subnet"):
        ipam.request_pool(L, "10.1.0.0/24", "10.2.0.0/25", {}, False)
    with pytest.raises(InvalidParameter, match="needs a subnet"):
        ipam.request_pool(L, None, "10.2.0.0/25", {}, False)
    with pytest.raises(InvalidParameter, match="IPv6 needs an explicit --subnet"):
        ipam.request_pool(L, None, None, {}, True)
    with pytest.raises(InvalidParameter, match="not an IPv4 subnet"):
        ipam.request_pool(L, "fd00::/64", None, {}, False)
    with pytest.raises(InvalidParameter, match="unknown address space"):
        ipam.request_pool("Nowhere", None, None, {}, False)
    with pytest.raises(InvalidParameter, match="true or false"):
        ipam.request_pool(L, "10.3.0.0/24", None, {SERIAL_OPTION: "maybe"}, False)
    assert ipam.pools(L) == []  # nothing half-made


def test_release_pool_frees_addresses_and_is_idempotent(env: Env, ipam: DefaultIpam) -> None:
    p = ipam.request_pool(L, "10.5.0.0/24", None, {}, False)
    ipam.request_address(p.pool_id, None, {})
    ipam.release_pool(p.pool_id)
    ipam.release_pool(p.pool_id)
    assert ipam.pools(L) == [] and env.store.list("ipam/") == []
    with pytest.raises(NotFound):
        ipam.request_address(p.pool_id, None, {})
    p = ipam.request_pool(L, "10.5.0.0/24", None, {}, False)
    assert ipam.request_address(p.pool_id, None, {}) == "10.5.0.1/24"


# -- addresses --------------------------------------------------------------------------


def test_gateway_then_containers_first_free(ipam: DefaultIpam) -> None:
    p = ipam.request_pool(L, "172.30.0.0/16", None, {}, False)
    assert ipam.request_address(p.pool_id, None, GW) == "172.30.0.1/16"
    got = [ipam.request_address(p.pool_id, None, {}) for _ in range(3)]
    assert got == ["172.30.0.2/16", "172.30.0.3/16", "172.30.0.4/16"]
    ipam.release_address(p.pool_id, "172.30.0.3")
    ipam.release_address(p.pool_id, "172.30.0.3/16")  # idempotent, prefix accepted
    assert ipam.request_address(p.pool_id, None, {}) == "172.30.0.3/16"
    assert ipam.allocated(p.pool_id) == ["172.30.0.1", "172.30.0.2", "172.30.0.3", "172.30.0.4"]


def test_specific_and_aux_addresses(ipam: DefaultIpam) -> None:
    p = ipam.request_pool(L, "10.9.0.0/24", None, {}, False)
    assert ipam.request_address(p.pool_id, "10.9.0.254", GW) == "10.9.0.254/24"
    assert ipam.request_address(p.pool_id, "10.9.0.1", {}) == "10.9.0.1/24"  # aux / --ip
    assert ipam.request_address(p.pool_id, None, {}) == "10.9.0.2/24"
    with pytest.raises(Conflict, match="address 10.9.0.1 is already in use"):
        ipam.request_address(p.pool_id, "10.9.0.1", {})
    with pytest.raises(InvalidParameter, match="not in subnet"):
        ipam.request_address(p.pool_id, "10.8.0.1", {})
    with pytest.raises(InvalidParameter, match="network address"):
        ipam.request_address(p.pool_id, "10.9.0.0", {})
    with pytest.raises(InvalidParameter, match="broadcast address"):
        ipam.request_address(p.pool_id, "10.9.0.255", {})
    with pytest.raises(InvalidParameter, match="invalid IP address"):
        ipam.request_address(p.pool_id, "10.9.0.x", {})
    with pytest.raises(NotFound):
        ipam.request_address("LocalDefault/10.99.0.0/24", None, {})
    ipam.release_address("LocalDefault/10.99.0.0/24", "10.99.0.1")  # unknown pool: no-op


def test_ip_range_narrows_containers_not_gateway_or_static(ipam: DefaultIpam) -> None:
    p = ipam.request_pool(L, "172.28.0.0/16", "172.28.5.0/30", {}, False)
    assert p.pool_id == "LocalDefault/172.28.0.0/16/172.28.5.0/30" and p.subnet == "172.28.0.0/16"
    assert ipam.request_address(p.pool_id, None, GW) == "172.28.0.1/16"
    assert ipam.request_address(p.pool_id, "172.28.9.9", {}) == "172.28.9.9/16"  # Docker allows
    got = [ipam.request_address(p.pool_id, None, {}) for _ in range(4)]
    assert got == ["172.28.5.0/16", "172.28.5.1/16", "172.28.5.2/16", "172.28.5.3/16"]
    with pytest.raises(
        Conflict,
        match=r"no available IPv4 addresses in pool 172.28.0.0/16 "
        r"\(ip-range 172.28.5.0/30\)",
    ):
        ipam.request_address(p.pool_id, None, {})


def test_exhaustion_small_pool(ipam: DefaultIpam) -> None:
    p = ipam.request_pool(L, "10.7.0.0/29", None, {}, False)
    got = {ipam.request_address(p.pool_id, None, {}) for _ in range(6)}
    assert got == {f"10.7.0.{i}/29" for i in range(1, 7)}
    with pytest.raises(Conflict, match="no available IPv4 addresses in pool 10.7.0.0/29"):
        ipam.request_address(p.pool_id, None, {})


@pytest.mark.parametrize(
    "subnet, want",
    [
        ("10.7.0.0/31", ["10.7.0.0/31", "10.7.0.1/31"]),  # RFC 3021: both usable
        ("10.7.0.5/32", ["10.7.0.5/32"]),
        ("fd00::/127", ["fd00::/127", "fd00::1/127"]),  # RFC 6164
    ],
)
def test_point_to_point_pools_use_every_address(ipam: DefaultIpam, subnet: str, want: list[str]) -> None:
    p = ipam.request_pool(L, subnet, None, {}, ":" in subnet)
    assert [ipam.request_address(p.pool_id, None, {}) for _ in want] == want
    with pytest.raises(Conflict):
        ipam.request_address(p.pool_id, None, {})


def test_serial_pool_does_not_reuse_at_once(ipam: DefaultIpam) -> None:
    p = ipam.request_pool(L, "10.6.0.0/29", None, {SERIAL_OPTION: "true"}, False)
    first = [ipam.request_address(p.pool_id, None, {}) for _ in range(3)]
    assert first == ["10.6.0.1/29", "10.6.0.2/29", "10.6.0.3/29"]
    ipam.release_address(p.pool_id, "10.6.0.2")
    assert ipam.request_address(p.pool_id, None, {}) == "10.6.0.4/29"
    ff = ipam.request_pool(L, "10.6.1.0/29", None, {}, False)
    for _ in range(3):
        ipam.request_address(ff.pool_id, None, {})
    ipam.release_address(ff.pool_id, "10.6.1.2")
    assert ipam.request_address(ff.pool_id, None, {}) == "10.6.1.2/29"  # first-free reuses


def test_ipv6_slash64(ipam: DefaultIpam) -> None:
    p = ipam.request_pool(L, "fd00:1::/64", None, {}, True)
    assert ipam.request_address(p.pool_id, None, GW) == "fd00:1::1/64"
    assert ipam.request_address(p.pool_id, None, {}) == "fd00:1::2/64"
    assert (
        ipam.request_address(p.pool_id, "fd00:1::ffff:ffff:ffff:ffff", {}) == "fd00:1::ffff:ffff:ffff:ffff/64"
    )  # no broadcast in IPv6
    with pytest.raises(InvalidParameter, match="network address"):
        ipam.request_address(p.pool_id, "fd00:1::", {})
    with pytest.raises(Conflict):
        ipam.request_pool(L, "fd00:1::/48", None, {}, True)


# -- persistence ------------------------------------------------------------------------


def test_restart_reloads_identical_state(env: Env) -> None:
    ipam = env.ipam()
    a = ipam.request_pool(L, None, None, {}, False)
    b = ipam.request_pool(L, "10.20.0.0/24", "10.20.0.128/25", {}, False)
    s = ipam.request_pool(L, "10.21.0.0/29", None, {SERIAL_OPTION: "true"}, False)
    v6 = ipam.request_pool(L, "fd00:2::/64", None, {}, True)
    for pool in (a, b, s, v6):
        ipam.request_address(pool.pool_id, None, GW)
        ipam.request_address(pool.pool_id, None, {})
        ipam.request_address(pool.pool_id, None, {})
    ipam.release_address(a.pool_id, "172.17.0.2")
    ipam.release_address(s.pool_id, "10.21.0.2")
    before = {pid: ipam.allocated(pid) for pid, _ in ipam.pools(L)}

    again = env.restart()
    assert again.pools(L) == ipam.pools(L)
    assert {pid: again.allocated(pid) for pid, _ in again.pools(L)} == before
    # no duplicate: first-free refills the hole, the ip-range and serial cursor continue
    assert again.request_address(a.pool_id, None, {}) == "172.17.0.2/16"
    assert again.request_address(a.pool_id, None, {}) == "172.17.0.4/16"
    assert again.request_address(b.pool_id, None, {}) == "10.20.0.130/24"
    assert again.request_address(s.pool_id, None, {}) == "10.21.0.4/29"
    assert again.request_address(v6.pool_id, None, {}) == "fd00:2::4/64"
    with pytest.raises(Conflict):
        again.request_pool(L, "10.20.0.0/16", None, {}, False)
    assert again.request_pool(L, None, None, {}, False).subnet == "172.18.0.0/16"


def test_store_collision_marks_address_taken_and_moves_on(env: Env, ipam: DefaultIpam) -> None:
    p = ipam.request_pool(L, "10.30.0.0/24", None, {}, False)
    # another host (sharing the store) already wrote .1 and .2
    for ip in ("10.30.0.1", "10.30.0.2"):
        env.store.put(f"ipam/{L}/addrs/{L}%2F10.30.0.0%2F24/{ip}", {})
    assert ipam.request_address(p.pool_id, None, {}) == "10.30.0.3/24"
    with pytest.raises(Conflict, match="already in use"):
        ipam.request_address(p.pool_id, "10.30.0.1", {})
    assert ipam.allocated(p.pool_id) == ["10.30.0.1", "10.30.0.2", "10.30.0.3"]


def test_store_collision_on_automatic_pool_tries_next(env: Env, ipam: DefaultIpam) -> None:
    env.store.put(f"ipam/{L}/pools/{L}%2F172.17.0.0%2F16", {"pool": "172.17.0.0/16"})
    assert ipam.request_pool(L, None, None, {}, False).subnet == "172.18.0.0/16"
    with pytest.raises(Conflict, match="already reserved"):
        ipam.request_pool(L, "172.17.0.0/16", None, {}, False)


class FailingStore(MemoryStore):
    """Fails every write after `ok` writes, like a store that went away."""

    def __init__(self, ok: int) -> None:
        super().__init__()
        self.ok = ok

    def atomic(self, ops, expect=None):
        if self.ok <= 0:
            raise RuntimeError("disk gone")
        self.ok -= 1
        return super().atomic(ops, expect)


def test_failed_persist_leaves_nothing_in_memory() -> None:
    store = FailingStore(ok=1)
    ipam = DefaultIpam({L: store})
    p = ipam.request_pool(L, "10.40.0.0/24", None, {}, False)
    with pytest.raises(RuntimeError):
        ipam.request_address(p.pool_id, None, {})
    assert ipam.allocated(p.pool_id) == []
    with pytest.raises(RuntimeError):
        ipam.request_pool(L, "10.41.0.0/24", None, {}, False)
    assert ipam.pools(L) == [(p.pool_id, "10.40.0.0/24")]


def test_every_address_is_in_the_store_before_return(env: Env, ipam: DefaultIpam) -> None:
    p = ipam.request_pool(L, "10.50.0.0/24", None, {}, False)
    got = ipam.request_address(p.pool_id, None, {})
    keys = [kv.key for kv in env.store.list(f"ipam/{L}/addrs/")]
    assert keys == [f"ipam/{L}/addrs/{L}%2F10.50.0.0%2F24/{got.split('/')[0]}"]
    pool_kv = env.store.get(f"ipam/{L}/pools/{L}%2F10.50.0.0%2F24")
    assert pool_kv is not None and pool_kv.value["pool"] == "10.50.0.0/24"


def test_threads_never_get_the_same_address(ipam: DefaultIpam) -> None:
    p = ipam.request_pool(L, "10.60.0.0/22", None, {}, False)
    results: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = [ipam.request_address(p.pool_id, None, {}) for _ in range(100)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 400 and len(set(results)) == 400


def test_register_builds_both(env: Env) -> None:
    reg = IpamRegistry()
    default = register(
        reg, stores={L: env.store, GLOBAL_DEFAULT: env.store}, local_pools=["base=192.168.100.0/24,size=26"]
    )
    assert reg.names() == ["default", "null"] and reg.get("default") is default
    assert default.request_pool(L, None, None, {}, False).subnet == "192.168.100.0/26"
    assert default.default_address_spaces() == (LOCAL_DEFAULT, GLOBAL_DEFAULT)


def test_two_hosts_share_a_global_space_without_duplicates():
    """Two daemons on one cluster store: pools and addresses made by one are seen by the
    other before it decides, so no subnet overlaps and no address is handed out twice."""
    from cnm.store.memory import MemoryStore
    from ipam.default import DefaultIpam

    shared = MemoryStore(scope="global")
    a = DefaultIpam({"LocalDefault": MemoryStore(), "GlobalDefault": shared})
    b = DefaultIpam({"LocalDefault": MemoryStore(), "GlobalDefault": shared})
    pa = a.request_pool("GlobalDefault", None, None, {}, False)
    pb = b.request_pool("GlobalDefault", None, None, {}, False)
    assert pa.subnet != pb.subnet
    import pytest as _pytest

    from cnm.errors import Conflict as _Conflict

    with _pytest.raises(_Conflict):
        b.request_pool("GlobalDefault", pa.subnet, None, {}, False)
    got = [
        a.request_address(pa.pool_id, None, {}) if i % 2 else b.request_address(pa.pool_id, None, {}) for i in range(40)
    ]
    assert len(set(got)) == 40
    b.release_address(pa.pool_id, got[0])
    assert a.request_address(pa.pool_id, got[0].split("/")[0], {}) == got[0]  # b's release is seen by a
