"""Service discovery through the daemon: containers resolve each other by name and
alias on user-defined networks (embedded resolver on the network's gateway)."""

from __future__ import annotations

from tests.integration.test_containers import BB, ct_inspect, ip_of, sleeper


def lookup(d, net, name, check=False):
    return d.net("run", "--rm", "--net", net, BB, "nslookup", name, check=check)


def test_names_aliases_and_scope(daemon):
    daemon.net("create", "--subnet", "10.41.0.0/24", "mynet")
    daemon.net("create", "--subnet", "10.42.0.0/24", "other")
    sleeper(daemon, "--name", "web", "--net", "mynet", "--network-alias", "www", "--network-alias", "pool")
    sleeper(daemon, "--name", "web2", "--net", "mynet", "--network-alias", "pool")
    sleeper(daemon, "--name", "hidden", "--net", "other")
    web, web2 = ip_of(daemon, "web"), ip_of(daemon, "web2")

    out = lookup(daemon, "mynet", "web", check=True).stdout
    assert web in out
    assert web in lookup(daemon, "mynet", "www", check=True).stdout
    pool = lookup(daemon, "mynet", "pool", check=True).stdout
    assert web in pool and web2 in pool
    # Not on a shared network: no answer.
    r = lookup(daemon, "mynet", "hidden")
    assert ip_of(daemon, "hidden") not in r.stdout and r.returncode != 0
    # resolv.conf points at the network's gateway.
    conf = daemon.net("run", "--rm", "--net", "mynet", BB, "cat", "/etc/resolv.conf").stdout
    assert "nameserver 10.41.0.1" in conf


def test_round_robin_alias(daemon):
    daemon.net("create", "rr")
    for i in range(3):
        sleeper(daemon, "--name", f"m{i}", "--net", "rr", "--network-alias", "svc")
    firsts = set()
    for _ in range(4):
        out = daemon.net("run", "--rm", "--net", "rr", BB, "nslookup", "svc").stdout
        answer = out.split("Name:", 1)[-1]  # busybox prints the server's address first
        addrs = [ln.split()[-1] for ln in answer.splitlines() if ln.startswith("Address")]
        assert len(addrs) == 3
        firsts.add(addrs[0])
    assert len(firsts) > 1


def test_resolves_as_soon_as_run_returns_and_stops_after_rm(daemon):
    daemon.net("create", "fast")
    sleeper(daemon, "--name", "client", "--net", "fast")
    sleeper(daemon, "--name", "newbie", "--net", "fast")
    assert ip_of(daemon, "newbie") in daemon.net("exec", "client", "--", BB, "nslookup", "newbie").stdout
    daemon.net("container", "rm", "-f", "newbie")
    r = daemon.net("exec", "client", "--", BB, "nslookup", "newbie", check=False)
    assert r.returncode != 0


def test_connect_alias_and_default_bridge_keeps_host_resolvers(daemon):
    daemon.net("create", "n1")
    daemon.net("create", "n2")
    sleeper(daemon, "--name", "ca", "--net", "n1")
    sleeper(daemon, "--name", "cb", "--net", "n2")
    daemon.net("connect", "--alias", "bee", "n1", "cb")
    b_on_n1 = ct_inspect(daemon, "cb")["NetworkSettings"]["Networks"]["n1"]["IPAddress"]
    assert b_on_n1 in daemon.net("exec", "ca", "--", BB, "nslookup", "bee").stdout
    daemon.net("disconnect", "n1", "cb")
    assert daemon.net("exec", "ca", "--", BB, "nslookup", "bee", check=False).returncode != 0
    conf = daemon.net("run", "--rm", BB, "cat", "/etc/resolv.conf").stdout
    assert "nameserver 172.17.0.1" not in conf
