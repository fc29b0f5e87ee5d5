from __future__ import annotations

from cnm.model import Network, PoolConfig
from cnm.render import network_json


def _net(**kw) -> Network:
    base = dict(id="a" * 64, name="front", driver="bridge", created="2024-05-06T07:08:09.5Z")
    base.update(kw)
    return Network(**base)


def test_network_json_has_dockers_keys_in_dockers_order():
    out = network_json(_net(pools=[PoolConfig(subnet="172.20.0.0/16", pool_id="p", gateway="172.20.0.1")]), {})
    assert list(out) == [
        "Name",
        "Id",
        "Created",
        "Scope",
        "Driver",
        "EnableIPv6",
        "IPAM",
        "Internal",
        "Attachable",
        "Ingress",
        "ConfigFrom",
        "ConfigOnly",
        "Containers",
        "Options",
        "Labels",
    ]
    assert out["Name"] == "front" and out["Id"] == "a" * 64 and out["Created"] == "2024-05-06T07:08:09.5Z"
    assert out["Scope"] == "local" and out["Driver"] == "bridge"
    assert out["IPAM"] == {
        "Driver": "default",
        "Options": {},
        "Config": [{"Subnet": "172.20.0.0/16", "Gateway": "172.20.0.1"}],
    }
    assert out["Ingress"] is False and out["ConfigOnly"] is False
    assert out["ConfigFrom"] == {"Network": ""}
    assert out["Containers"] == {} and out["Options"] == {} and out["Labels"] == {}


def test_empty_pool_keys_are_omitted_and_full_ones_kept():
    pools = [
        PoolConfig(subnet="10.1.0.0/24", pool_id="p1"),
        PoolConfig(
            subnet="10.2.0.0/16",
            pool_id="p2",
            ip_range="10.2.1.0/24",
            gateway="10.2.0.254",
            aux_addresses={"host1": "10.2.0.5"},
        ),
        PoolConfig(subnet="fd00::/64", pool_id="p3", gateway="fd00::1", v6=True),
    ]
    cfg = network_json(_net(pools=pools, enable_ipv6=True))["IPAM"]["Config"]
    assert cfg == [
        {"Subnet": "10.1.0.0/24"},
        {
            "Subnet": "10.2.0.0/16",
            "IPRange": "10.2.1.0/24",
            "Gateway": "10.2.0.254",
            "AuxiliaryAddresses": {"host1": "10.2.0.5"},
        },
        {"Subnet": "fd00::/64", "Gateway": "fd00::1"},
    ]


def test_flags_options_labels_and_containers_pass_through():
    net = _net(
        internal=True,
        attachable=False,
        enable_ipv6=True,
        ipam_driver="null",
        ipam_options={"serial": "true"},
        options={"com.docker.network.driver.mtu": "1400"},
        labels={"team": "a"},
        scope="global",
        driver="overlay",
    )
    ep = {
        "Name": "web",
        "EndpointID": "e" * 64,
        "MacAddress": "02:42:ac:14:00:02",
        "IPv4Address": "172.20.0.2/16",
        "IPv6Address": "",
    }
    out = network_json(net, {"c" * 64: ep})
    assert (out["Internal"], out["Attachable"], out["EnableIPv6"]) == (True, False, True)
    assert out["Scope"] == "global" and out["Driver"] == "overlay"
    assert out["IPAM"]["Driver"] == "null" and out["IPAM"]["Options"] == {"serial": "true"}
    assert out["Options"] == {"com.docker.network.driver.mtu": "1400"} and out["Labels"] == {"team": "a"}
    assert out["Containers"] == {"c" * 64: ep}


def test_render_copies_so_callers_cannot_mutate_the_model():
    net = _net(
        labels={"a": "1"}, pools=[PoolConfig(subnet="10.0.0.0/24", pool_id="p", aux_addresses={"x": "10.0.0.9"})]
    )
    out = network_json(net)
    out["Labels"]["b"] = "2"
    out["IPAM"]["Config"][0]["AuxiliaryAddresses"]["y"] = "10.0.0.8"
    assert net.labels == {"a": "1"} and net.pools[0].to_record()["aux_addresses"] == {"x": "10.0.0.9"}
