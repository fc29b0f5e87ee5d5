"""NameTable semantics: who sees which names, aliases, round robin, PTR, removal."""

from __future__ import annotations

import threading

import pytest

from cnm.dns.records import Answer, NameTable, reverse_name_to_ip

NA, NB = "a" * 64, "b" * 64  # network IDs
C1, C2, C3, C4 = ("1" * 64, "2" * 64, "3" * 64, "4" * 64)  # container IDs


@pytest.fixture
def table() -> NameTable:
    """netA: web (C1) .2, client (C2) .3;  netB: client (C2) .3, db (C3) .4;
    netA+netB share nothing else; lone (C4) on netB only."""
    t = NameTable()
    t.add(NA, "neta", "ep-web", C1, "web", ["frontend"], "10.0.0.2/24", "fd00::2/64")
    t.add(NA, "neta", "ep-cli-a", C2, "client", [], "10.0.0.3/24", None)
    t.add(NB, "netb", "ep-cli-b", C2, "client", ["cb"], "10.1.0.3/24", None)
    t.add(NB, "netb", "ep-db", C3, "db", ["store"], "10.1.0.4/24", None)
    return t


def addrs(answers):
    return [a.value for a in answers] if answers is not None else None


def test_name_on_listener_network(table):
    assert addrs(table.lookup("10.0.0.3", NA, "web", "A")) == ["10.0.0.2"]
    assert addrs(table.lookup("10.0.0.3", NA, "web", "AAAA")) == ["fd00::2"]


def test_name_on_other_shared_network_visible_through_any_listener(table):
    # client shares netB with db; it asks through netA's listener: still answered.
    assert addrs(table.lookup("10.0.0.3", NA, "db", "A")) == ["10.1.0.4"]


def test_name_on_unshared_network_invisible(table):
    # web is on netA only; db (netB only) must not see it: None -> forwarded.
    assert table.lookup("10.1.0.4", NB, "web", "A") is None
    assert table.lookup("10.1.0.4", NB, "frontend", "A") is None
    assert table.lookup("10.1.0.4", NB, C1[:12], "A") is None
    # ...even when asking through netA's listener (identity, not listener, decides).
    assert table.lookup("10.1.0.4", NA, "web", "A") is None


def test_aliases_are_per_network(table):
    # "cb" is client's alias on netB only: db (netB) sees it, web (netA) does not.
    assert addrs(table.lookup("10.1.0.4", NB, "cb", "A")) == ["10.1.0.3"]
    assert table.lookup("10.0.0.2", NA, "cb", "A") is None
    # Plain name on the listener's network wins: web asking "client" gets the netA address.
    assert addrs(table.lookup("10.0.0.2", NA, "client", "A")) == ["10.0.0.3"]
    assert addrs(table.lookup("10.1.0.4", NB, "client", "A")) == ["10.1.0.3"]


def test_short_container_id_and_network_suffix(table):
    assert addrs(table.lookup("10.0.0.3", NA, C1[:12], "A")) == ["10.0.0.2"]
    assert table.lookup("10.0.0.3", NA, C1[:11], "A") is None
    assert addrs(table.lookup("10.0.0.3", NA, "web.neta", "A")) == ["10.0.0.2"]
    assert addrs(table.lookup("10.0.0.3", NA, "frontend.neta.", "A")) == ["10.0.0.2"]
    assert table.lookup("10.0.0.3", NA, "web.netb", "A") is None


@pytest.mark.parametrize("qname", ["WEB", "Web.", "web.", "wEb.NetA.", "  web "])
def test_case_and_trailing_dot(table, qname):
    assert addrs(table.lookup("10.0.0.3", NA, qname, "A")) == ["10.0.0.2"]


def test_nodata_for_ours_without_that_type(table):
    assert table.lookup("10.0.0.3", NA, "client", "AAAA") == []
    assert table.lookup("10.0.0.3", NA, "web", "MX") == []
    assert {a.rtype for a in table.lookup("10.0.0.3", NA, "web", "ANY")} == {"A", "AAAA"}


def test_round_robin_rotates_per_query_and_type():
    t = NameTable()
    for i in range(3):
        t.add(NA, "neta", f"ep{i}", f"{i}" * 64, f"app{i}", ["svc"], f"10.0.0.{10 + i}", f"fd00::{10 + i}")
    firsts = [t.lookup("10.0.0.10", NA, "svc", "A")[0].value for _ in range(6)]
    assert firsts == ["10.0.0.10", "10.0.0.11", "10.0.0.12"] * 2
    # Every answer still carries all addresses.
    assert sorted(addrs(t.lookup("10.0.0.10", NA, "svc", "A"))) == ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
    # AAAA queries have their own counter: an A+AAAA pair per lookup still rotates A.
    a1 = t.lookup("10.0.0.10", NA, "svc", "A")[0].value
    t.lookup("10.0.0.10", NA, "svc", "AAAA")
    a2 = t.lookup("10.0.0.10", NA, "svc", "A")[0].value
    assert a1 != a2


def test_removal_takes_effect_immediately(table):
    assert table.remove("ep-web") is True
    assert table.lookup("10.0.0.3", NA, "web", "A") is None
    assert table.lookup("10.0.0.3", NA, "frontend", "A") is None
    assert table.ptr("10.0.0.3", NA, "2.0.0.10.in-addr.arpa") is None
    assert table.remove("ep-web") is False
    assert "10.0.0.2" not in table.addresses()


def test_disconnect_removes_visibility_through_that_network(table):
    # client leaves netB: it no longer sees db.
    table.remove("ep-cli-b")
    assert table.lookup("10.0.0.3", NA, "db", "A") is None
    assert table.networks_of("10.0.0.3", NA) == [NA]


def test_add_is_idempotent_and_replaces(table):
    table.add(NA, "neta", "ep-web", C1, "web", ["edge"], "10.0.0.9", None)
    assert addrs(table.lookup("10.0.0.3", NA, "web", "A")) == ["10.0.0.9"]
    assert table.lookup("10.0.0.3", NA, "frontend", "A") is None
    assert addrs(table.lookup("10.0.0.3", NA, "edge", "A")) == ["10.0.0.9"]
    assert len(table) == 4


def test_networks_of(table):
    assert table.networks_of("10.0.0.3", NA) == [NA, NB]
    assert table.networks_of("10.1.0.3", NB) == [NB, NA]
    assert table.networks_of("10.1.0.4", NB) == [NB]
    # Unknown sources see only the listener's network.
    assert table.networks_of("10.0.0.200", NA) == [NA]
    assert table.networks_of("not-an-ip", NA) == [NA]
    assert table.networks_of("10.0.0.200") == []


def test_unknown_client_sees_listener_network_only(table):
    assert addrs(table.lookup("10.0.0.1", NA, "web", "A")) == ["10.0.0.2"]
    assert table.lookup("10.0.0.1", NA, "db", "A") is None


def test_ptr(table):
    assert table.ptr("10.0.0.3", NA, "2.0.0.10.in-addr.arpa.") == [Answer("PTR", "web.neta")]
    v6 = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa"
    assert table.ptr("10.0.0.3", NA, v6) == [Answer("PTR", "web.neta")]
    # db's address is invisible to web (no shared network).
    assert table.ptr("10.0.0.2", NA, "4.0.1.10.in-addr.arpa") is None
    assert table.ptr("10.0.0.3", NA, "99.0.0.10.in-addr.arpa") is None
    assert table.ptr("10.0.0.3", NA, "0.10.in-addr.arpa") is None


def test_endpoint_without_container_is_its_own_owner():
    t = NameTable()
    t.add(NA, "neta", "e1", None, "svc", [], "10.0.0.5", None)
    t.add(NB, "netb", "e2", None, "other", [], "10.1.0.5", None)
    assert t.networks_of("10.0.0.5", NA) == [NA]
    assert t.lookup("10.0.0.5", NA, "other", "A") is None


@pytest.mark.parametrize(
    "name,ip",
    [
        ("1.0.18.172.in-addr.arpa", "172.18.0.1"),
        ("1.0.18.172.IN-ADDR.ARPA.", "172.18.0.1"),
        ("01.0.18.172.in-addr.arpa", None),
        ("256.0.18.172.in-addr.arpa", None),
        ("x.0.18.172.in-addr.arpa", None),
        ("0.18.172.in-addr.arpa", None),
        ("web", None),
        ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "2001:db8::1"),
        ("g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", None),
    ],
)
def test_reverse_name_to_ip(name, ip):
    assert reverse_name_to_ip(name) == ip


def test_bad_address_is_refused():
    with pytest.raises(ValueError):
        NameTable().add(NA, "neta", "e", None, "x", [], "10.0.0.300", None)


def test_concurrent_add_remove_lookup():
    t = NameTable()
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(300):
                t.add(NA, "neta", f"ep{k}-{i}", None, f"n{k}-{i}", ["shared"], f"10.{k}.{i // 256}.{i % 256}", None)
                if i % 2:
                    t.remove(f"ep{k}-{i}")
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(1000):
                t.lookup("10.200.0.1", NA, "shared", "A")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)] + [threading.Thread(target=reader)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(t) == 3 * 150
    assert len(t.lookup("10.200.0.1", NA, "shared", "A")) == 450


def test_unpublished_endpoint_identifies_but_answers_nothing():
    # An overlay container (C1) queries from its gateway-bridge address (network G).
    t = NameTable()
    NG, NO = "g" * 64, "o" * 64
    t.add(NO, "ovl", "e-ovl", C1, "app", [], "10.0.9.2", None)
    t.add(NG, "gwbridge", "e-gw", C1, "app", [], "172.30.0.2", None, publish=False)
    t.add(NO, "ovl", "e-remote", C2, "remote", [], "10.0.9.3", None)
    t.add(NG, "gwbridge", "e-gw2", C3, "other", [], "172.30.0.3", None, publish=False)
    assert addrs(t.lookup("172.30.0.2", NG, "remote", "A")) == ["10.0.9.3"]
    # Nothing is published on the gateway bridge: C3 cannot see C1 there.
    assert t.lookup("172.30.0.3", NG, "app", "A") is None
    assert t.lookup("172.30.0.3", NG, C1[:12], "A") is None
    assert t.ptr("172.30.0.3", NG, "2.0.30.172.in-addr.arpa") is None
