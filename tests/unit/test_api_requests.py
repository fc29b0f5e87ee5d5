"""NetworkCreate.from_docker_json: Docker's create body, parsed strictly and validated."""

from __future__ import annotations

import pytest

from cnm.errors import InvalidParameter
from cnm.requests import IPAMConfigRequest, NetworkCreate


def test_minimal_body_gets_dockers_defaults():
    req = NetworkCreate.from_docker_json({"Name": "front"})
    assert req == NetworkCreate(name="front")
    assert (req.driver, req.ipam_driver, req.attachable, req.internal, req.enable_ipv6) == (
        "bridge",
        "default",
        False,
        False,
        False,
    )
    assert req.ipam_configs == [] and req.options == {} and req.labels == {}


def test_full_body_is_parsed_and_canonicalised():
    req = NetworkCreate.from_docker_json(
        {
            "Name": "back",
            "Driver": "overlay",
            "Internal": True,
            "Attachable": False,
            "EnableIPv6": True,
            "CheckDuplicate": False,
            "IPAM": {
                "Driver": "default",
                "Options": {"serial": "true"},
                "Config": [
                    {
                        "Subnet": "10.10.0.0/16",
                        "IPRange": "10.10.1.0/24",
                        "Gateway": "10.10.0.254",
                        "AuxiliaryAddresses": {"router": "10.10.0.2"},
                    },
                    {"Subnet": "FD00:0::/64", "Gateway": "fd00::1"},
                ],
            },
            "Options": {"com.docker.network.driver.mtu": "1400"},
            "Labels": {"team": "a"},
            "Scope": "local",
            "ConfigOnly": False,  # unknown/unused keys are ignored, like Docker
        }
    )
    assert (req.name, req.driver, req.internal, req.attachable, req.enable_ipv6, req.check_duplicate) == (
        "back",
        "overlay",
        True,
        False,
        True,
        False,
    )
    assert req.ipam_options == {"serial": "true"}
    assert req.options == {"com.docker.network.driver.mtu": "1400"} and req.labels == {"team": "a"}
    assert req.ipam_configs == [
        IPAMConfigRequest("10.10.0.0/16", "10.10.1.0/24", "10.10.0.254", {"router": "10.10.0.2"}),
        IPAMConfigRequest("fd00::/64", None, "fd00::1", {}),
    ]
    assert [c.v6 for c in req.ipam_configs] == [False, True]
    assert req.subnets is req.ipam_configs


def test_nulls_and_empty_strings_mean_defaults():
    req = NetworkCreate.from_docker_json(
        {
            "Name": "n",
            "Driver": "",
            "IPAM": {"Driver": "", "Config": None, "Options": None},
            "Options": None,
            "Labels": None,
            "Internal": None,
        }
    )
    assert (req.driver, req.ipam_driver, req.ipam_configs, req.options, req.internal) == (
        "bridge",
        "default",
        [],
        {},
        False,
    )
    empty_cfg = NetworkCreate.from_docker_json({"Name": "n", "IPAM": {"Config": [{"Subnet": "", "Gateway": ""}]}})
    assert empty_cfg.ipam_configs == [IPAMConfigRequest()]


def test_gateway_with_prefix_is_accepted_as_plain_address():
    req = NetworkCreate.from_docker_json(
        {"Name": "n", "IPAM": {"Config": [{"Subnet": "10.0.0.0/24", "Gateway": "10.0.0.1/24"}]}}
    )
    assert req.ipam_configs[0].gateway == "10.0.0.1"


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "missing field Name: a network needs a name"),
        ({"Name": None}, "missing field Name: a network needs a name"),
        ({"Name": ""}, "network name must not be empty"),
        ({"Name": "bad name"}, "invalid network name 'bad name'"),
        ({"Name": 5}, "field Name must be a string, not a number"),
        ({"Name": "n", "Driver": 1}, "field Driver must be a string, not a number"),
        ({"Name": "n", "Internal": "yes"}, "field Internal must be a boolean, not a string"),
        ({"Name": "n", "Attachable": 1}, "field Attachable must be a boolean, not a number"),
        ({"Name": "n", "EnableIPv6": []}, "field EnableIPv6 must be a boolean, not an array"),
        ({"Name": "n", "CheckDuplicate": "true"}, "field CheckDuplicate must be a boolean, not a string"),
        ({"Name": "n", "Options": []}, "field Options must be an object, not an array"),
        ({"Name": "n", "Options": {"mtu": 1400}}, "field Options.mtu must be a string, not a number"),
        ({"Name": "n", "Labels": {"a": True}}, "field Labels.a must be a string, not a boolean"),
        ({"Name": "n", "IPAM": "default"}, "field IPAM must be an object, not a string"),
        ({"Name": "n", "IPAM": {"Driver": 3}}, "field IPAM.Driver must be a string, not a number"),
        ({"Name": "n", "IPAM": {"Config": {}}}, "field IPAM.Config must be an array, not an object"),
        ({"Name": "n", "IPAM": {"Config": ["10.0.0.0/8"]}}, "field IPAM.Config[0] must be an object, not a string"),
        ({"Name": "n", "IPAM": {"Config": [{"Subnet": 10}]}}, "field IPAM.Config[0].Subnet must be a string"),
        ({"Name": "n", "IPAM": {"Options": {"x": 1}}}, "field IPAM.Options.x must be a string"),
        (
            {"Name": "n", "IPAM": {"Config": [{"Subnet": "10.0.0.0/24", "AuxiliaryAddresses": {"a": 1}}]}},
            "field IPAM.Config[0].AuxiliaryAddresses.a must be a string",
        ),
    ],
)
def test_wrong_types_and_missing_name_are_refused(body, message):
    with pytest.raises(InvalidParameter) as err:
        NetworkCreate.from_docker_json(body)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_body_must_be_an_object():
    with pytest.raises(InvalidParameter, match="request body must be a JSON object, not an array"):
        NetworkCreate.from_docker_json([{"Name": "n"}])


def _cfg(**cfg) -> dict:
    return {"Name": "n", "IPAM": {"Config": [cfg]}}


@pytest.mark.parametrize(
    "cfg, message",
    [
        (dict(Subnet="10.0.0.0/33"), "invalid subnet 10.0.0.0/33"),
        (dict(Subnet="10.0.0.256/24"), "invalid subnet 10.0.0.256/24"),
        (dict(Subnet="banana"), "invalid subnet banana"),
        (dict(Subnet="10.0.0.0"), "invalid subnet 10.0.0.0: give a prefix length"),
        (dict(Subnet="10.0.0.1/24"), "invalid subnet 10.0.0.1/24: it should be 10.0.0.0/24"),
        (dict(Subnet="10.0.0.0/24", Gateway="10.0.1.1"), "gateway 10.0.1.1 is not within subnet 10.0.0.0/24"),
        (dict(Subnet="10.0.0.0/24", Gateway="fd00::1"), "gateway fd00::1 is not within subnet 10.0.0.0/24"),
        (dict(Subnet="10.0.0.0/24", Gateway="10.0.0.x"), "invalid gateway address 10.0.0.x"),
        (dict(Subnet="10.0.0.0/16", IPRange="10.1.0.0/24"), "ip-range 10.1.0.0/24 is not within subnet 10.0.0.0/16"),
        (dict(Subnet="10.0.0.0/24", IPRange="10.0.0.0/23"), "ip-range 10.0.0.0/23 is not within subnet 10.0.0.0/24"),
        (dict(Subnet="10.0.0.0/16", IPRange="10.0.1.1/24"), "invalid ip-range 10.0.1.1/24"),
        (dict(Subnet="10.0.0.0/16", IPRange="fd00::/64"), "ip-range fd00::/64 is not within subnet 10.0.0.0/16"),
        (
            dict(Subnet="10.0.0.0/24", AuxiliaryAddresses={"r": "10.9.0.1"}),
            "aux-address r=10.9.0.1 is not within subnet 10.0.0.0/24",
        ),
        (dict(Subnet="10.0.0.0/24", AuxiliaryAddresses={"r": "nope"}), "invalid aux-address r address nope"),
        (dict(Gateway="10.0.0.1"), "gateway given without a subnet"),
        (dict(IPRange="10.0.0.0/25"), "ip-range given without a subnet"),
    ],
)
def test_bad_addresses_are_refused_with_one_line(cfg, message):
    with pytest.raises(InvalidParameter) as err:
        NetworkCreate.from_docker_json(_cfg(**cfg))
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_overlapping_subnets_in_one_request_are_refused():
    body = {"Name": "n", "IPAM": {"Config": [{"Subnet": "10.0.0.0/16"}, {"Subnet": "10.0.5.0/24"}]}}
    with pytest.raises(InvalidParameter, match="subnets 10.0.0.0/16 and 10.0.5.0/24 overlap"):
        NetworkCreate.from_docker_json(body)
