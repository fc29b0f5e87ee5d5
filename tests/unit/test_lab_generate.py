"""Generated lab files: hosts by count, container groups, checks over groups (sampled,
across hosts, deterministic), the etcd timing setting, and their errors."""

from __future__ import annotations

import copy

import pytest

from cnm.errors import InvalidParameter
from cnm.lab.topology import parse

GEN = {
    "name": "gen",
    "hosts": {"count": 6, "prefix": "n"},
    "cluster_store": {"etcd": 3, "heartbeat": 200},
    "networks": [
        {"name": "red", "driver": "overlay", "subnet": "10.40.0.0/16"},
        {"name": "blue", "driver": "overlay", "subnet": "10.41.0.0/16"},
    ],
    "containers": [
        {"group": "red", "network": "red"},
        {"group": "web", "per_host": 2, "hosts": ["n1", "n2"], "network": "blue", "command": "busybox httpd -f -p 80"},
        {"name": "solo", "host": "n3", "networks": ["red", "blue"]},
    ],
    "checks": [
        {"from": "red", "ping": "red"},
        {"from": "red", "tcp": "web:80", "sample": 3},
        {"from": "red", "ping": "web", "expect": "fail", "sample": 2},
        {"from": "solo", "ping": "web", "network": "blue"},
        {"from": "web", "mtu": 1450, "sample": 2},
        {"from": "web", "ping": "solo"},
    ],
}


def test_hosts_by_count_get_names_and_addresses_in_order():
    lab = parse(GEN)
    assert [h.name for h in lab.hosts] == ["n1", "n2", "n3", "n4", "n5", "n6"]
    assert [h.address for h in lab.hosts][:2] == ["198.18.0.1", "198.18.0.2"]
    doc = {**GEN, "hosts": {"count": 3, "prefix": "x", "start": 7}, "containers": [], "checks": []}
    assert [h.name for h in parse(doc).hosts] == ["x7", "x8", "x9"]


def test_groups_expand_per_host_with_readable_names():
    lab = parse(GEN)
    names = [(c.name, c.host, c.group) for c in lab.containers]
    assert names[:6] == [(f"red-n{i}", f"n{i}", "red") for i in range(1, 7)]
    assert names[6:10] == [
        ("web-n1-1", "n1", "web"),
        ("web-n1-2", "n1", "web"),
        ("web-n2-1", "n2", "web"),
        ("web-n2-2", "n2", "web"),
    ]
    assert names[10] == ("solo", "n3", None)
    web = lab.container("web-n2-2")
    assert web.networks == ("blue",) and web.command == ("busybox", "httpd", "-f", "-p", "80")


def test_etcd_timing_is_a_lab_setting():
    assert (parse(GEN).cluster.heartbeat_ms, parse(GEN).cluster.election_ms) == (200, 2000)
    plain = parse({**GEN, "cluster_store": {"etcd": 1}}).cluster
    assert (plain.heartbeat_ms, plain.election_ms) == (100, 1000)  # etcd's own defaults
    both = parse({**GEN, "cluster_store": {"etcd": 1, "heartbeat": 50, "election": 600}}).cluster
    assert (both.heartbeat_ms, both.election_ms) == (50, 600)


def test_group_checks_expand_across_hosts_deterministically():
    lab = parse(GEN)
    by_spec: dict[int, list] = {}
    for c in lab.checks:
        by_spec.setdefault(c.spec, []).append(c)
    every = by_spec[0]
    assert sorted(c.source for c in every) == [f"red-n{i}" for i in range(1, 7)]
    for c in every:  # a target on another host, never itself
        assert c.target.startswith("red-") and lab.container(c.target).host != lab.container(c.source).host
    assert every[0].spec_label == "ping red -> red (6 probes)"
    tcp = by_spec[1]
    assert len(tcp) == 3 and all(c.port == 80 and c.target.startswith("web-") for c in tcp)
    assert tcp[0].spec_label == "tcp red -> web:80 (3 sampled probes)"
    fail = by_spec[2]
    assert len(fail) == 2 and not any(c.expect_pass for c in fail)
    solo = by_spec[3]  # one source, a group of targets: every member
    assert sorted(c.target for c in solo) == ["web-n1-1", "web-n1-2", "web-n2-1", "web-n2-2"]
    assert all(c.network == "blue" for c in solo)
    mtu = by_spec[4]
    assert len(mtu) == 2 and all(c.kind == "mtu" and c.mtu == 1450 for c in mtu)
    assert len(by_spec[5]) == 4 and {c.target for c in by_spec[5]} == {"solo"}
    assert parse(copy.deepcopy(GEN)).checks == lab.checks  # same file, same probes
    other = parse({**GEN, "name": "gen2"}).checks  # the lab's name seeds the draw
    assert [c.spec for c in other] == [c.spec for c in lab.checks]


def test_a_sample_larger_than_the_group_takes_every_member():
    doc = {**GEN, "checks": [{"from": "red", "mtu": 1450, "sample": 50}]}
    assert len(parse(doc).checks) == 6


BAD = [
    ({"hosts": {"count": 0}}, "hosts.count: expected an integer from 1 to 1000"),
    ({"hosts": {"count": 3, "size": 1}}, "hosts: unknown field 'size'"),
    ({"hosts": {"count": 10, "prefix": "averylonghost"}}, "hosts.prefix: 'averylonghost' with 10 hosts"),
    ({"hosts": {"count": 3, "prefix": "sw", "start": 0}, "containers": []}, None),
    ({"hosts": {"count": 300}}, "underlay.subnet: 198.18.0.0/24 has too few addresses for 300 hosts"),
    ({"cluster_store": {"etcd": 1, "heartbeat": 5}}, "cluster_store.heartbeat: expected an integer from 10"),
    (
        {"cluster_store": {"etcd": 1, "heartbeat": 200, "election": 500}},
        "cluster_store.election: 500 ms is less than 5 heartbeats",
    ),
    ({"containers": [{"group": "g", "host": "n1"}]}, "containers[0]: unknown field 'host'"),
    ({"containers": [{"group": "g", "ip": "10.40.0.9"}]}, "containers[0]: unknown field 'ip'"),
    ({"containers": [{"group": "g", "per_host": 0}]}, "containers[0].per_host: expected an integer from 1 to 64"),
    ({"containers": [{"group": "g", "hosts": ["n9"]}]}, "containers[0].hosts[0]: unknown host 'n9'"),
    ({"containers": [{"group": "g", "network": "nope"}]}, "containers[0].network: unknown network 'nope'"),
    ({"containers": [{"group": "g"}, {"name": "g-n1", "host": "n1"}]}, "containers[1]: duplicate container 'g-n1'"),
    (
        {"containers": [{"group": "g"}, {"name": "g", "host": "n1"}]},
        "containers[1]: container name 'g' is also a group",
    ),
    ({"containers": [{"group": "g" * 62}]}, "containers[0].group: invalid name"),
    ({"checks": [{"from": "blue", "ping": "red"}]}, "checks[0].from: unknown container 'blue' (nor a group)"),
    ({"checks": [{"from": "red", "ping": "red", "sample": 0}]}, "checks[0].sample: expected an integer"),
    (
        {"containers": [{"group": "one", "hosts": ["n1"]}], "checks": [{"from": "one", "ping": "one"}]},
        "checks[0]: group 'one' has no member other than the source",
    ),
]


@pytest.mark.parametrize("change,message", BAD, ids=[m or "ok" for _, m in BAD])
def test_bad_generated_fields(change, message):
    doc = {**copy.deepcopy(GEN), "checks": [], **change}
    if message is None:  # host names from a prefix never clash with "sw": "sw0" is not "sw"
        parse(doc, "g.yaml")
        return
    with pytest.raises(InvalidParameter) as info:
        parse(doc, "g.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith("g.yaml: ")
    assert message in str(info.value), str(info.value)
