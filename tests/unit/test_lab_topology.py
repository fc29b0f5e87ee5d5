"""Lab files: parsing, defaults, every validation error (one line, file and field), plan order."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from cnm.errors import InvalidParameter
from cnm.lab.topology import DEFAULT_COMMAND, load, load_text, parse, plan

LABS = Path(__file__).resolve().parents[2] / "labs"

BASE = {
    "name": "demo",
    "hosts": ["h1", "h2"],
    "cluster_store": {"etcd": 1},
    "networks": [
        {"name": "ov", "driver": "overlay", "subnet": "10.10.0.0/24"},
        {"name": "br", "subnet": "10.20.0.0/24", "hosts": ["h1"]},
    ],
    "containers": [
        {"name": "c1", "host": "h1", "networks": ["ov", "br"], "ip": "10.10.0.5"},
        {"name": "c2", "host": "h2", "network": "ov", "command": "busybox httpd -f -p 80", "ports": ["8080:80"]},
    ],
    "checks": [
        {"from": "c1", "ping": "c2"},
        {"from": "c2", "tcp": "c1:80", "expect": "fail", "network": "ov"},
        {"from": "c1", "mtu": 1450},
        {"from": "c1", "ping": "h2"},
        {"from": "c1", "ping": "198.18.0.2"},
    ],
}


def test_every_shipped_lab_parses():
    names = {}
    for path in sorted(LABS.glob("*.yaml")):
        lab, raw = load(path)
        names[path.name] = lab.name
        assert raw["name"] == lab.name and lab.checks, path
    assert {"quickstart.yaml", "three-hosts.yaml", "impaired-underlay.yaml", "bridge-only.yaml"} <= set(names)


def test_shipped_labs_have_what_the_issue_asks():
    q = load(LABS / "quickstart.yaml")[0]
    assert len(q.hosts) == 2 and q.cluster.members == 1
    assert any(n.is_overlay for n in q.networks) and any(not n.is_overlay for n in q.networks)
    assert any(not c.expect_pass for c in q.checks)
    t = load(LABS / "three-hosts.yaml")[0]
    assert len(t.hosts) == 3 and t.cluster.hosts == ("h1", "h2", "h3")
    assert sum(n.is_overlay for n in t.networks) == 2
    i = load(LABS / "impaired-underlay.yaml")[0]
    assert all(h.link.mtu == 1400 and h.link.rate and h.link.loss for h in i.hosts)
    assert {c.mtu for c in i.checks if c.kind == "mtu"} == {1350}
    b = load(LABS / "bridge-only.yaml")[0]
    assert b.cluster.members == 0 and not any(n.is_overlay for n in b.networks)


def test_defaults_and_address_assignment():
    lab = parse(BASE, "x.yaml")
    assert lab.underlay.subnet == "198.18.0.0/24"
    assert [h.address for h in lab.hosts] == ["198.18.0.1", "198.18.0.2"]
    assert lab.hosts[0].link.mtu == 1500 and lab.hosts[0].link.rate is None
    assert lab.cluster.hosts == ("h1",)
    ov, br = lab.networks
    assert ov.hosts == ("h1", "h2") and br.hosts == ("h1",)
    c1, c2 = lab.containers
    assert c1.command == DEFAULT_COMMAND and c1.ip == "10.10.0.5"
    assert c2.command == ("busybox", "httpd", "-f", "-p", "80") and c2.networks == ("ov",)
    kinds = [(c.kind, c.target, c.port, c.expect_pass) for c in lab.checks]
    assert kinds[:2] == [("ping", "c2", None, True), ("tcp", "c1", 80, False)]
    assert lab.checks[2].mtu == 1450 and lab.checks[2].iface == "eth0"


def test_capabilities_and_privileged():
    data = copy.deepcopy(BASE)
    data["containers"][0]["cap_add"] = ["net_admin", "CAP_SYS_PTRACE"]
    data["containers"][1]["privileged"] = True
    c1, c2 = parse(data, "x.yaml").containers
    assert (c1.cap_add, c1.privileged) == (("net_admin", "CAP_SYS_PTRACE"), False)
    assert (c2.cap_add, c2.privileged) == ((), True)
    from cnm.lab.realise import container_run_argv

    argv = container_run_argv("/s", "c1", "ov", None, (), ("/bin/true",), c1.cap_add, c2.privileged)
    assert argv[-7:] == ["--cap-add", "net_admin", "--cap-add", "CAP_SYS_PTRACE", "--privileged", "--", "/bin/true"]
    assert parse(BASE, "x.yaml").containers[0].cap_add == ()  # Docker's defaults unless asked


def test_given_addresses_are_kept_and_others_skip_them():
    data = copy.deepcopy(BASE)
    data["hosts"] = ["h1", "h2", "h3"]
    data["underlay"] = {
        "subnet": "198.19.4.0/24",
        "mtu": 1400,
        "rate": "10mbit",
        "loss": 2,
        "links": {"h2": {"address": "198.19.4.1", "mtu": 9000, "rate": 0, "delay": 5}},
    }
    lab = parse(data)
    assert [h.address for h in lab.hosts] == ["198.19.4.2", "198.19.4.1", "198.19.4.3"]
    h1, h2, _ = lab.hosts
    assert (h1.link.mtu, h1.link.rate, h1.link.loss, h1.link.delay) == (1400, "10mbit", 2.0, None)
    assert (h2.link.mtu, h2.link.rate, h2.link.loss, h2.link.delay) == (9000, None, 2.0, 5.0)


def _with(path: str, value):
    """BASE with one field set (path like 'containers.0.ip'); value None deletes it."""
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    key = int(last) if isinstance(node, list) else last
    if value is None:
        del node[key]
    else:
        node[key] = value
    return data


BAD = [
    ("name", "Demo!", "name: invalid name"),
    ("name", None, "missing required field 'name'"),
    ("colour", "red", "unknown field 'colour'"),
    ("hosts", [], "hosts: a lab needs at least one host"),
    ("hosts", "h1", "hosts: expected a list, got a string"),
    ("hosts", ["h1", "h1"], "hosts[1]: duplicate host 'h1'"),
    ("hosts", ["h1", "sw"], "hosts[1]: host name 'sw' is reserved"),
    ("hosts", ["averyveryverylonghost"], "hosts[0]: invalid name"),
    ("underlay.subnet", "10.0.0.0/24", "underlay.subnet: 10.0.0.0/24 is outside 198.18.0.0/15"),
    ("underlay.subnet", "198.18.0.1/24", "underlay.subnet: invalid IPv4 subnet"),
    ("underlay.subnet", "198.18.0.0/32", "underlay.subnet: 198.18.0.0/32 has too few addresses"),
    ("underlay.mtu", 100, "underlay.mtu: expected an integer from 1280 to 9000"),
    ("underlay.rate", "fast", "underlay.rate: invalid rate 'fast'"),
    ("underlay.rate", "1kbit", "underlay.rate: rate '1kbit' is too low"),
    ("underlay.loss", 101, "underlay.loss: expected a number from 0 to 100"),
    ("underlay.delay", "10ms", "underlay.delay: expected a number"),
    ("underlay.links", {"h9": {}}, "underlay.links: unknown field 'h9'"),
    ("underlay.links", {"h1": {"speed": 1}}, "underlay.links.h1: unknown field 'speed'"),
    (
        "underlay.links",
        {"h1": {"address": "198.18.1.1"}},
        "underlay.links.h1.address: 198.18.1.1 is not a host address",
    ),
    (
        "underlay.links",
        {"h1": {"address": "198.18.0.9"}, "h2": {"address": "198.18.0.9"}},
        "underlay.links.h2.address: 198.18.0.9 is already used",
    ),
    ("underlay.links", {"h1": {"address": "nope"}}, "underlay.links.h1.address: invalid IPv4 address"),
    ("cluster_store.etcd", 3, "cluster_store.etcd: 3 members need 3 hosts"),
    ("cluster_store.etcd", -1, "cluster_store.etcd: expected an integer"),
    ("cluster_store.hosts", ["h3"], "cluster_store.hosts[0]: unknown host 'h3'"),
    ("cluster_store.hosts", ["h1", "h2"], "cluster_store.hosts: lists 2 hosts for 1 etcd members"),
    ("cluster_store.hosts", ["h1", "h1"], "cluster_store.hosts[1]: duplicate host"),
    ("cluster_store.etcd", 0, "networks[0].driver: overlay needs a cluster store"),
    ("networks.0.driver", "macvlan", "networks[0].driver: unknown driver 'macvlan'"),
    ("networks.0.name", "bridge", "networks[0].name: 'bridge' is a predefined network"),
    ("networks.0.name", "br", "networks[1]: duplicate network 'br'"),
    ("networks.0.name", None, "networks[0]: missing required field 'name'"),
    ("networks.0.subnet", "10.10.0.0/33", "networks[0].subnet: invalid IPv4 subnet"),
    ("networks.0.subnet", "198.18.5.0/24", "networks[0].subnet: 198.18.5.0/24 overlaps the underlay range"),
    ("networks.0.hosts", ["h1"], "networks[0].hosts: an overlay network spans every host"),
    ("networks.1.hosts", ["h7"], "networks[1].hosts[0]: unknown host 'h7'"),
    ("networks.1.internal", "yes", "networks[1].internal: expected true or false"),
    ("networks.1.options", {"a": [1]}, "networks[1].options.a: expected a string or number"),
    ("networks.1.mtu", 1400, "networks[1]: unknown field 'mtu'"),
    ("containers.0.host", "h9", "containers[0].host: unknown host 'h9'"),
    ("containers.0.host", None, "containers[0]: missing required field 'host'"),
    ("containers.0.networks", ["nope"], "containers[0].networks[0]: unknown network 'nope'"),
    ("containers.0.networks", [], "containers[0].networks: a container needs at least one network"),
    ("containers.0.networks", ["ov", "ov"], "containers[0].networks[1]: duplicate network"),
    ("containers.1.networks", ["br"], "containers[1]: give 'network' or 'networks', not both"),
    ("containers.1.network", "br", "containers[1].network: network 'br' is not created on host h2"),
    ("containers.0.ip", "10.99.0.1", "containers[0].ip: 10.99.0.1 is not in ov's subnet"),
    ("containers.0.ip", "bad", "containers[0].ip: invalid IPv4 address"),
    ("containers.0.command", "", "containers[0].command: the command is empty"),
    ("containers.0.command", "sh -c 'x", "containers[0].command: cannot split"),
    ("containers.0.command", {"a": 1}, "containers[0].command: expected a string or a list"),
    ("containers.1.ports", ["80:eighty"], "containers[1].ports[0]: invalid port mapping"),
    ("containers.1.name", "c1", "containers[1]: duplicate container 'c1'"),
    ("containers.1.ip", "10.10.0.5", "containers[1].ip: 10.10.0.5 is already given to c1"),
    ("containers.0.cap_add", ["NET_FLY"], 'containers[0].cap_add: unknown capability: "CAP_NET_FLY"'),
    ("containers.0.cap_add", "NET_ADMIN", "containers[0].cap_add: expected a list"),
    ("containers.0.privileged", "yes", "containers[0].privileged: expected true or false"),
    ("checks.0.ping", None, "checks[0]: give exactly one of 'ping', 'tcp' or 'mtu'"),
    ("checks.0.tcp", "c2:80", "checks[0]: give exactly one of"),
    ("checks.0.from", "ghost", "checks[0].from: unknown container 'ghost'"),
    ("checks.0.ping", "nowhere", "checks[0].ping: unknown target 'nowhere'"),
    ("checks.0.expect", "maybe", "checks[0].expect: expected pass or fail"),
    ("checks.1.tcp", "c1", "checks[1].tcp: expected TARGET:PORT"),
    ("checks.1.tcp", "c1:99999", "checks[1].tcp: expected TARGET:PORT"),
    ("checks.1.network", "nonet", "checks[1].network: unknown network 'nonet'"),
    ("checks.2.mtu", 10, "checks[2].mtu: expected an integer from 68"),
    ("checks.2.network", "ov", "checks[2].network: 'network' goes with a ping or tcp check"),
    ("checks.0.iface", "eth1", "checks[0].iface: 'iface' goes with an 'mtu' check"),
    ("checks.3.network", "ov", "checks[3].network: 'network' picks one of a target container's addresses"),
]


@pytest.mark.parametrize("path,value,message", BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_bad_field_is_one_line_naming_file_and_field(path, value, message):
    with pytest.raises(InvalidParameter) as info:
        parse(_with(path, value), "labs/x.yaml")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("labs/x.yaml: ")
    assert message in text, text


def test_overlapping_overlays_rejected():
    data = copy.deepcopy(BASE)
    data["networks"].append({"name": "ov2", "driver": "overlay", "subnet": "10.10.0.128/25"})
    with pytest.raises(InvalidParameter, match="overlay subnets of ov and ov2 overlap"):
        parse(data, "f.yaml")


def test_not_a_mapping_and_bad_yaml():
    with pytest.raises(InvalidParameter, match=r"^f.yaml: expected a mapping, got a list$"):
        parse([1, 2], "f.yaml")
    with pytest.raises(InvalidParameter, match=r"^f.yaml: not valid YAML"):
        load_text("name: [unclosed", "f.yaml")
    with pytest.raises(InvalidParameter, match="cannot read the lab file"):
        load("/nonexistent/lab.yaml")


def test_plan_orders_underlay_etcd_daemons_networks_containers():
    data = copy.deepcopy(BASE)
    data["underlay"] = {"links": {"h2": {"loss": 1}}}
    lab = parse(data)
    steps = [(s.kind, s.name, s.host) for s in plan(lab)]
    assert steps == [
        ("switch", "underlay", None),
        ("host", "h1", "h1"),
        ("host", "h2", "h2"),
        ("impair", "h2", "h2"),
        ("etcd", "1 member(s)", None),
        ("daemon", "h1", "h1"),
        ("daemon", "h2", "h2"),
        ("network", "ov", "h1"),  # an overlay once, on the first host
        ("network", "br", "h1"),  # a bridge network on each of its hosts
        ("container", "c1", "h1"),
        ("container", "c2", "h2"),
    ]


def test_plan_without_cluster_store_has_no_etcd_step():
    lab = load(LABS / "bridge-only.yaml")[0]
    kinds = [s.kind for s in plan(lab)]
    assert "etcd" not in kinds and kinds.count("daemon") == 2
    assert kinds.index("daemon") < kinds.index("network") < kinds.index("container")


def test_yaml_round_trip_of_base():
    assert parse(yaml.safe_load(yaml.safe_dump(BASE))) == parse(BASE)


def test_images_and_image_containers(tmp_path):
    tar = tmp_path / "imgs" / "bb.tar"
    tar.parent.mkdir()
    tar.write_bytes(b"x")
    lab_file = tmp_path / "lab.yaml"
    doc = copy.deepcopy(BASE)
    doc["images"] = ["imgs/bb.tar"]
    doc["containers"][0]["image"] = "busybox"
    doc["containers"][1]["image"] = "me/web:1"
    lab_file.write_text(yaml.safe_dump(doc))
    lab, _ = load(lab_file)
    assert lab.images == (str(tar),)  # relative to the lab file
    c1, c2 = lab.containers
    assert (c1.image, c1.command) == ("busybox:latest", ())  # the image's CMD
    assert (c2.image, c2.command) == ("me/web:1", ("busybox", "httpd", "-f", "-p", "80"))
    from cnm.lab.realise import container_run_argv

    assert container_run_argv("/s", "c2", "ov", None, (), c2.command, image=c2.image)[-7:] == [
        "--",
        "me/web:1",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
    ]
    assert container_run_argv("/s", "c3", "ov", None, (), ("busybox", "sleep", "1"))[-3].startswith(
        "/"
    )  # host: by path
    doc["images"] = ["imgs/missing.tar"]
    lab_file.write_text(yaml.safe_dump(doc))
    with pytest.raises(InvalidParameter, match=r"images\[0\]: .*missing.tar is not a file"):
        load(lab_file)
    doc["images"] = []
    doc["containers"][0]["image"] = "Not An Image"
    with pytest.raises(InvalidParameter, match=r"containers\[0\].image: invalid reference format"):
        parse(doc, "lab.yaml")
