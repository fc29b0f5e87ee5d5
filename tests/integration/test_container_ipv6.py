"""A container's interface has IPv6 only when it has an IPv6 address (as Docker since
26.0.2, CVE-2024-32473): on an IPv4-only network no link-local address, no router
solicitations, nothing a stray router advertisement could configure; on an IPv6
network its address and a link-local one. `lo` keeps ::1 either way."""

from __future__ import annotations

BB = "/bin/busybox"
SHOW = (
    "cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6; echo --; ip -o -6 addr show dev eth0; echo --; "
    "ip -o -6 addr show dev lo"
)


def parts(out: str) -> list[str]:
    return [p.strip() for p in out.split("--")]


def test_ipv4_only_interface_has_no_ipv6(daemon):
    daemon.net("create", "--subnet", "10.77.0.0/24", "v4only")
    disabled, eth0, lo = parts(daemon.net("run", "--rm", "--net", "v4only", BB, "sh", "-c", SHOW).stdout)
    assert disabled == "1" and eth0 == ""
    assert "::1/128" in lo


def test_ipv6_network_interface_has_its_address_and_a_link_local_one(daemon):
    daemon.net("create", "--ipv6", "--subnet", "10.78.0.0/24", "--subnet", "fd00:78::/64", "dual")
    script = "sleep 1; " + SHOW  # the link-local address comes with the link up
    disabled, eth0, _ = parts(daemon.net("run", "--rm", "--net", "dual", BB, "sh", "-c", script).stdout)
    assert disabled == "0"
    assert "fd00:78::" in eth0 and "fe80::" in eth0


def test_connecting_an_ipv4_container_to_an_ipv6_network(daemon):
    daemon.net("create", "--subnet", "10.79.0.0/24", "plain")
    daemon.net("create", "--ipv6", "--subnet", "10.80.0.0/24", "--subnet", "fd00:80::/64", "six")
    cid = daemon.net("run", "-d", "--net", "plain", BB, "sleep", "60").stdout.strip()
    try:
        daemon.net("connect", "six", cid)
        out = daemon.net(
            "exec",
            cid,
            "--",
            BB,
            "sh",
            "-c",
            "for i in eth0 eth1; do cat /proc/sys/net/ipv6/conf/$i/disable_ipv6; done; ip -o -6 addr show dev eth1",
        ).stdout.split("\n", 2)
        assert out[0] == "1" and out[1] == "0" and "fd00:80::" in out[2]
    finally:
        daemon.net("container", "rm", "-f", cid)
