"""Kernel teardown off the request path, on a real kernel (cnm.retiring,
drivers.bridge.graveyard): a disconnect cuts the container off at once and frees the
interface's name, while the veth is deleted in the background and its address stays
held until then; a daemon killed with deletions pending leaves nothing its next start
does not clean. CNM_GRAVEYARD_DELAY holds the deletions back, so that they are surely
pending when the test looks (or kills the daemon)."""

from __future__ import annotations

import json
import sqlite3
import time

from drivers.bridge.graveyard import GRAVEYARD_GROUP
from tests.integration.conftest import sh

BB = "/bin/busybox"


def links(ns: str, *selector: str) -> list[tuple[str, str]]:
    """(name, state flags) of the links `ip link show SELECTOR` lists in `ns`."""
    out = sh("ip", "-n", ns, "-o", "link", "show", *selector).stdout
    return [
        (line.split(":")[1].strip().split("@")[0], line.split("<")[1].split(">")[0])
        for line in out.splitlines()
        if line.strip()
    ]


def retired(ns: str) -> list[str]:
    return [name for name, _ in links(ns, "group", str(GRAVEYARD_GROUP))]


def in_container(d, ref: str, *argv: str, check: bool = True) -> str:
    return d.net("exec", ref, "--", BB, *argv, check=check).stdout


def ip_on(d, ref: str, net: str) -> str:
    info = json.loads(d.net("container", "inspect", ref).stdout)[0]
    return info["NetworkSettings"]["Networks"][net]["IPAddress"]


def ping(d, ref: str, target: str) -> bool:
    return d.net("exec", ref, "--", BB, "ping", "-c1", "-W1", target, check=False).returncode == 0


def retiring_records(d) -> list[str]:
    db = sqlite3.connect(str(d.root / "local-kv.db"))
    try:
        return [k for (k,) in db.execute("SELECT key FROM kv WHERE key LIKE 'retiring/%'")]
    finally:
        db.close()


def test_disconnect_cuts_off_at_once_frees_the_name_and_holds_the_address(make_daemon, monkeypatch):
    monkeypatch.setenv("CNM_GRAVEYARD_DELAY", "60")
    d = make_daemon()
    monkeypatch.delenv("CNM_GRAVEYARD_DELAY")
    d.net("create", "--subnet", "10.41.0.0/24", "n1")
    d.net("create", "--subnet", "10.42.0.0/24", "n2")
    d.net("run", "-d", "--name", "peer", "--net", "n2", BB, "sleep", "1000")
    d.net("run", "-d", "--name", "cc", "--net", "n1", BB, "sleep", "1000")
    d.net("connect", "n2", "cc")
    old_ip, peer = ip_on(d, "cc", "n2"), ip_on(d, "peer", "n2")
    assert ping(d, "cc", peer)
    d.net("disconnect", "n2", "cc")
    # Cut off at once: eth1 is gone from the container (its veth waits, down, renamed).
    out = in_container(d, "cc", "ip", "-o", "link")
    assert "eth1" not in out and "gone" in out
    parked = next(line for line in out.splitlines() if "gone" in line)
    assert "UP" not in parked.split("<")[1].split(">")[0].split(",")
    assert not ping(d, "cc", peer)
    assert len(retired(d.ns)) == 1 and "UP" not in links(d.ns, "group", str(GRAVEYARD_GROUP))[0][1].split(",")
    assert len(retiring_records(d)) == 1
    # The name is free at once; the address is not (its MAC would be the old veth's).
    d.net("connect", "n2", "cc")
    assert "eth1" in in_container(d, "cc", "ip", "-o", "link")
    assert ip_on(d, "cc", "n2") != old_ip
    assert ping(d, "cc", peer)
    # Asking for that address explicitly waits for the old veth instead of refusing.
    d.net("disconnect", "n2", "cc")
    d.net("connect", "--ip", old_ip, "n2", "cc")
    assert ip_on(d, "cc", "n2") == old_ip and ping(d, "cc", peer)


def test_a_daemon_killed_with_deletions_pending_leaves_nothing_the_next_start_does_not_clean(make_daemon, monkeypatch):
    monkeypatch.setenv("CNM_GRAVEYARD_DELAY", "60")
    d = make_daemon()
    monkeypatch.delenv("CNM_GRAVEYARD_DELAY")
    d.net("create", "--subnet", "10.43.0.0/24", "n1")
    d.net("create", "--subnet", "10.44.0.0/24", "n2")
    keep = d.net("run", "-d", "--name", "keep", "--net", "n1", BB, "sleep", "1000").stdout.strip()
    ids = [d.net("run", "-d", "--net", "n1", BB, "sleep", "1000").stdout.strip() for _ in range(6)]
    first_ip = ip_on(d, ids[0], "n1")
    d.net("connect", "n2", "keep")
    d.net("container", "rm", "-f", *ids)
    d.net("disconnect", "n2", "keep")
    before = {name for name, _ in links(d.ns)}
    assert len(retired(d.ns)) >= 1 and len(retiring_records(d)) == 7
    d.kill()
    d.start()
    # Everything retired is gone: no link left in the group, no retiring record.
    deadline = time.monotonic() + 10
    while (retired(d.ns) or retiring_records(d)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert retired(d.ns) == [] and retiring_records(d) == []
    after = {name for name, _ in links(d.ns)}
    veths = sorted(n for n in after if n.startswith("veth"))
    assert len(veths) == 1, f"only keep's veth should remain: {veths} (before: {sorted(before)})"
    assert sorted((d.run_dir / "netns").iterdir()) == [d.run_dir / "netns" / keep[:12]]
    # The addresses they held are free again; keep is whole.
    assert "eth1" not in in_container(d, "keep", "ip", "-o", "link")
    d.net("run", "-d", "--name", "again", "--ip", first_ip, "--net", "n1", BB, "sleep", "1000")
    assert ip_on(d, "again", "n1") == first_ip
    assert ping(d, "again", ip_on(d, "keep", "n1"))


def test_without_delay_the_veth_goes_soon_after_the_request(daemon):
    daemon.net("create", "--subnet", "10.45.0.0/24", "n1")
    cid = daemon.net("run", "-d", "--net", "n1", BB, "sleep", "1000").stdout.strip()
    vethbefore = {n for n, _ in links(daemon.ns) if n.startswith("veth")}
    assert len(vethbefore) == 1
    daemon.net("container", "rm", "-f", cid)
    deadline = time.monotonic() + 5
    while any(n.startswith("veth") for n, _ in links(daemon.ns)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(n.startswith("veth") for n, _ in links(daemon.ns))
    assert retired(daemon.ns) == []
    deadline = time.monotonic() + 5
    while retiring_records(daemon) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert retiring_records(daemon) == []
