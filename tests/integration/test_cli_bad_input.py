"""The issue's bad inputs through the `net` CLI against a real daemon: each exits
non-zero with one line on stderr, and neither the kernel (links, addresses, routes)
nor the daemon's state (networks, containers) changes."""

from __future__ import annotations

from tests.integration.conftest import link_names, sh

BB = "/bin/busybox"

BAD = [
    (["create", "x\n"], "invalid network name"),
    (["create", "--subnet", "::/0", "--ipv6", "x"], "spans every IPv6 address"),
    (["create", "--subnet", "0.0.0.0/0", "x"], "spans every IPv4 address"),
    (["create", "--subnet", "ff00::/64", "--ipv6", "x"], "overlaps multicast"),
    (["create", "--subnet", "224.0.0.0/4", "x"], "overlaps multicast"),
    (["create", "--subnet", "127.0.0.0/8", "x"], "overlaps loopback"),
    (["create", "--subnet", "fe80::%eth0/64", "--ipv6", "x"], "zone index"),
    (["create", "--subnet", "10.5.0.0/24", "--gateway", "10.5.0.١", "x"], "gateway"),
    (["create", "-o", "com.docker.network.driver.mtu=١٥٠٠", "x"], "mtu"),
    (["run", "--name", "x\n", BB, "true"], "invalid container name"),
    (["run", "--name", "a", BB, "true"], "at least two characters"),
    (["run", "--memory", "16777216t", BB, "true"], "Memory"),
    (["run", "--memory", "1k", BB, "true"], "Minimum memory limit allowed is 6MB"),
    (["run", "--memory", "1e400", BB, "true"], "is not a size"),
    (["run", "--pids-limit", "1180591620717411303424", BB, "true"], "PidsLimit"),
    (["run", "--pids-limit", "١٠", BB, "true"], "not an integer"),
    (["run", "--cpus", "1e400", BB, "true"], "not a number"),
    (["run", "--cpus", "100000", BB, "true"], "Range of CPUs"),
    (["run", "-p", "٨٠:80", BB, "true"], "not a number"),
    (["run", "-p", "8080:80²", BB, "true"], "not a number"),
    (["run", "--hostname", "a" * 70, BB, "true"], "invalid hostname"),
]


def state(d):
    return (
        sorted(link_names(d.ns)),
        sh("ip", "-n", d.ns, "-o", "addr").stdout,
        sh("ip", "-n", d.ns, "route", "show", "table", "all").stdout,
        d.net("ls", "--format", "json").stdout,
        d.net("ps", "-a", "-q").stdout,
    )


def test_bad_input_through_the_cli_is_one_line_and_changes_nothing(daemon):
    before = state(daemon)
    failures = []
    for args, text in BAD:
        r = daemon.net(*args, check=False)
        err = r.stderr.strip()
        if r.returncode == 0 or len(err.splitlines()) != 1 or text.lower() not in err.lower() or "Traceback" in err:
            failures.append((args, r.returncode, err))
    assert failures == [], "\n".join(map(repr, failures))
    assert state(daemon) == before
