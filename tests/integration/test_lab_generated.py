"""A lab nobody has seen before: generated from a fresh random seed on every run (a few
dozen hosts, a three-member etcd cluster, two overlays, groups of containers on all or
some of the hosts, a bridge network on some hosts), brought up, checked and removed
with `net lab` as a user would. Asserts that it comes up with every daemon and
container running, that every check passes (isolation included), and that `down`
leaves no namespace, process, mount or state behind.

The seed is printed; CNM_LAB_SEED=<seed> builds the same lab again. Times are printed,
not asserted (speed goals live in bench/lab_scale.py)."""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import time
from pathlib import Path

import pytest

from cnm.lab.usage import lab_usage
from tests.integration.test_lab import lab_cmd, lab_namespaces, still_running, write_lab


def generated_lab(seed: int, name: str) -> tuple[dict, int, int]:
    """(lab file, hosts, containers) drawn from `seed`."""
    rng = random.Random(seed)
    hosts = rng.randint(24, 32)
    prefix = rng.choice(["n", "node", "srv", "m"])
    names = [f"{prefix}{i}" for i in range(1, hosts + 1)]
    a, b = rng.sample(range(64, 120), 2)
    nets: list[dict[str, object]] = [
        {"name": "front", "driver": "overlay", "subnet": f"10.{a}.0.0/16"},
        {"name": "back", "driver": "overlay", "subnet": f"10.{b}.0.0/20"},
    ]
    back_hosts = sorted(rng.sample(names, rng.randint(hosts // 3, hosts // 2)), key=names.index)
    back_per_host = rng.randint(1, 2)
    groups: list[dict[str, object]] = [
        {"group": "web", "network": "front", "command": "busybox httpd -f -p 80 -h /etc"},
        {"group": "db", "network": "back", "hosts": back_hosts, "per_host": back_per_host},
    ]
    singles = []
    local_host = rng.choice(names)  # a bridge network on one host, next to the overlays
    nets.append(
        {"name": "local", "driver": "bridge", "subnet": f"10.{rng.randint(130, 200)}.0.0/24", "hosts": [local_host]}
    )
    singles.append({"name": "solo", "host": local_host, "networks": ["local", "back"]})
    containers = hosts + len(back_hosts) * back_per_host + 1
    checks = [
        {"from": "web", "ping": "web", "sample": 12},
        {"from": "db", "ping": "db", "sample": 8},
        {"from": "web", "tcp": "web:80", "sample": 8},
        {"from": "db", "ping": "web", "expect": "fail", "sample": 4},  # overlays are isolated
        {"from": "db", "tcp": "web:80", "expect": "fail", "sample": 4},
        {"from": "solo", "ping": "db", "network": "back", "sample": 4},  # two networks, one container
        {"from": "web", "mtu": 1450, "sample": 4},
    ]
    doc = {
        "name": name,
        "hosts": {"count": hosts, "prefix": prefix},
        "underlay": {"subnet": f"198.18.{rng.randint(1, 250)}.0/24"},
        "cluster_store": {"etcd": 3},
        "networks": nets,
        "containers": [*groups, *singles],
        "checks": checks,
    }
    return doc, hosts, containers


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("CNM_LAB_SEED") or secrets.randbits(32))
    print(f"\nlab seed: CNM_LAB_SEED={value}")
    return value


def test_a_generated_lab_comes_up_passes_its_checks_and_goes_down_clean(tmp_path: Path, seed: int) -> None:
    name = "g" + secrets.token_hex(3)
    doc, hosts, containers = generated_lab(seed, name)
    path = write_lab(tmp_path / f"{name}.yaml", doc)
    t0 = time.monotonic()
    up = lab_cmd(tmp_path, "up", str(path), check=False, timeout=600)
    took_up = time.monotonic() - t0
    try:
        assert up.returncode == 0, f"net lab up failed (seed {seed}):\n{up.stdout}{up.stderr}"
        assert f"lab {name} is up: {hosts} host(s), {containers} container(s)" in up.stdout

        rec = json.loads((tmp_path / name / "lab.json").read_text())
        assert len(rec["daemons"]) == hosts and len(rec["etcd"]) == 3
        usage = lab_usage(
            rec["dir"],
            list(rec["namespaces"]),
            {d["pid"] for d in rec["daemons"].values()},
            {d["pid"] for d in rec["etcd"].values() if d.get("pid")},
        )
        assert usage.count("daemon") == hosts, usage.pids
        assert usage.count("etcd") == 3
        assert usage.count("container") >= containers, "a container is not running"
        started = {pid: _start(pid) for pids in usage.pids.values() for pid in pids}

        t1 = time.monotonic()
        check = lab_cmd(tmp_path, "check", name, check=False, timeout=600)
        took_check = time.monotonic() - t1
        summary = check.stdout.strip().splitlines()[-1] if check.stdout.strip() else ""
        assert check.returncode == 0 and re.fullmatch(r"(\d+) checks: \1 passed, 0 failed", summary), (
            f"checks failed (seed {seed}):\n{check.stdout}{check.stderr}"
        )
        probes = int(summary.split()[0])
        assert probes >= 40 and "(expect fail)" in check.stdout
    finally:
        t2 = time.monotonic()
        down = lab_cmd(tmp_path, "down", name, check=False, timeout=300)
        took_down = time.monotonic() - t2
    print(
        f"{hosts} hosts, {containers} containers: up {took_up:.1f} s, check {took_check:.1f} s, down {took_down:.1f} s"
    )
    assert down.returncode == 0, f"net lab down failed:\n{down.stdout}{down.stderr}"
    assert lab_namespaces(name) == [], "namespaces left behind"
    left = [pid for pid, start in started.items() if start is not None and still_running(pid, start)]
    assert left == [], f"processes left behind: {left}"
    assert str(tmp_path / name) not in Path("/proc/self/mountinfo").read_text(), "mounts left behind"
    assert not (tmp_path / name).exists(), "state directory left behind"


def _start(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[19])
