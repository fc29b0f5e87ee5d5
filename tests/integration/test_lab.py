"""`net lab` end to end: a two-host bridge lab (no cluster store) built, checked,
entered, drawn, captured, impaired and removed; a half-failed `up` and an `up` after a
crash. Every lab has a unique name and its state under the test's own CNM_LAB_DIR."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import NET, ROOT, sh

BRIDGE_ONLY = ROOT / "labs" / "bridge-only.yaml"


def lab_cmd(env_dir: Path, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "CNM_LAB_DIR": str(env_dir)}
    env.pop("NET_HOST", None)
    r = subprocess.run([NET, "lab", *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"net lab {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


def write_lab(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def lab_namespaces(name: str) -> list[str]:
    out = sh("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"lab-{name}-")]


def recorded_pids(env_dir: Path, name: str) -> list[tuple[int, int]]:
    rec = json.loads((env_dir / name / "lab.json").read_text())
    return [(d["pid"], d["start"]) for d in [*rec["daemons"].values(), *rec["etcd"].values()] if d.get("pid")]


def still_running(pid: int, start: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0] not in ("Z", "X") and int(fields[19]) == start


def assert_nothing_left(env_dir: Path, name: str, pids: list[tuple[int, int]]) -> None:
    assert lab_namespaces(name) == [], "namespaces left behind"
    assert not [p for p, s in pids if still_running(p, s)], "processes left behind"
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(env_dir / name) not in mounts, "mounts left behind"
    assert not (env_dir / name).exists(), "state directory left behind"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The bridge-only lab under a unique name, built once for the module."""
    base = tmp_path_factory.mktemp("labs")
    name = "t" + secrets.token_hex(3)
    doc = yaml.safe_load(BRIDGE_ONLY.read_text())
    doc["name"] = name
    path = write_lab(base / "lab.yaml", doc)
    up = lab_cmd(base, "up", str(path))
    assert f"lab {name} is up" in up.stdout
    try:
        yield {"name": name, "dir": base, "file": path, "doc": doc}
    finally:
        lab_cmd(base, "down", name, check=False)


def test_check_passes_including_expected_failures(lab):
    r = lab_cmd(lab["dir"], "check", lab["name"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert len(lines) == len(lab["doc"]["checks"]) and all(line.startswith("PASS") for line in lines)
    assert "(expect fail)" in r.stdout
    assert re.search(r"7 checks: 7 passed, 0 failed", r.stdout)


def test_exec_runs_in_the_host_against_its_daemon(lab):
    r = lab_cmd(lab["dir"], "exec", lab["name"], "h1", "--", "net", "ps")
    names = {line.split()[1] for line in r.stdout.splitlines()[1:]}
    assert names == {"web", "client1", "db"}  # h1's containers only
    r = lab_cmd(lab["dir"], "exec", lab["name"], "h2", "--", "ip", "-4", "-o", "addr", "show", "ul0")
    assert "198.18.1.2/24" in r.stdout
    assert lab_cmd(lab["dir"], "exec", lab["name"], "h1", "--", "sh", "-c", "exit 7", check=False).returncode == 7


def test_inspect_json_and_ls(lab):
    d = json.loads(lab_cmd(lab["dir"], "inspect", lab["name"], "--format", "json").stdout)
    assert d["Name"] == lab["name"] and d["Status"] == "up"
    assert [(h["Name"], h["Address"], h["Daemon"]["Running"]) for h in d["Hosts"]] == [
        ("h1", "198.18.1.1", True),
        ("h2", "198.18.1.2", True),
    ]
    assert {c["Name"]: c["Host"] for c in d["Containers"]} == {
        "web": "h1",
        "client1": "h1",
        "db": "h1",
        "client2": "h2",
    }
    assert d["Etcd"] == [] and d["ClusterStore"] is None
    assert lab["name"] in lab_cmd(lab["dir"], "ls").stdout


def test_graph_dot_and_png(lab, tmp_path):
    lab_cmd(lab["dir"], "graph", lab["name"], "-o", str(tmp_path / "g.dot"))
    dot = (tmp_path / "g.dot").read_text()
    assert 'subgraph "cluster_h1"' in dot and '"ctr:client2" -- "net:front@h2"' in dot
    lab_cmd(lab["dir"], "graph", lab["name"], "-o", str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_capture_on_the_underlay_is_readable_by_tshark(lab, tmp_path):
    pcap = tmp_path / "ul.pcap"
    env = {**os.environ, "CNM_LAB_DIR": str(lab["dir"])}
    cap = subprocess.Popen(
        [NET, "lab", "capture", lab["name"], "h1:ul0", "-w", str(pcap), "-c", "2", "-t", "10", "-f", "icmp"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # dumpcap needs a moment to open the interface
        lab_cmd(lab["dir"], "exec", lab["name"], "h2", "--", "busybox", "ping", "-c3", "-i0.3", "198.18.1.1")
        out, err = cap.communicate(timeout=30)
    finally:
        if cap.poll() is None:
            cap.kill()
    assert cap.returncode == 0, err
    r = sh("tshark", "-r", str(pcap), "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "icmp.type")
    rows = [line.split("\t") for line in r.stdout.splitlines() if line.strip()]
    assert ["198.18.1.2", "198.18.1.1", "8"] in rows


def test_impair_rate_loss_delay_and_clear(lab):
    name, h1, sw = lab["name"], f"lab-{lab['name']}-h1", f"lab-{lab['name']}-sw"
    r = lab_cmd(lab["dir"], "impair", name, "h1", "--rate", "10mbit", "--loss", "5")
    assert "rate 10mbit, loss 5%" in r.stdout
    assert "tbf" in sh("tc", "-n", h1, "qdisc", "show", "dev", "ul0").stdout
    assert "rate 10Mbit" in sh("tc", "-n", sw, "qdisc", "show", "dev", "p-h1").stdout  # the other direction
    nft = sh("ip", "netns", "exec", h1, "nft", "list", "table", "netdev", "lab_impair").stdout
    assert nft.count("numgen random mod 10000 < 500") == 2
    d = lab_cmd(lab["dir"], "impair", name, "h1", "--delay", "10", check=False)
    if d.returncode == 0:
        print("delay: this kernel has netem; checked the qdisc")
        assert "netem" in sh("tc", "-n", h1, "qdisc", "show", "dev", "ul0").stdout
    else:
        print(f"delay: expected failure on this kernel: {d.stderr.strip()}")
        assert (
            d.stderr.strip() == "Error: delay needs the kernel's netem (CONFIG_NET_SCH_NETEM), which this kernel lacks"
        )
        assert "tbf" in sh("tc", "-n", h1, "qdisc", "show", "dev", "ul0").stdout  # unchanged
    lab_cmd(lab["dir"], "impair", name, "h1", "--clear")
    assert "tbf" not in sh("tc", "-n", h1, "qdisc", "show", "dev", "ul0").stdout
    assert "lab_impair" not in sh("ip", "netns", "exec", h1, "nft", "list", "tables").stdout
    assert lab_cmd(lab["dir"], "check", lab["name"], check=False).returncode == 0


def test_down_leaves_nothing(lab):
    pids = recorded_pids(lab["dir"], lab["name"])
    assert len(pids) == 2 and all(still_running(p, s) for p, s in pids)
    r = lab_cmd(lab["dir"], "down", str(lab["file"]))  # by FILE; by NAME works the same
    assert f"lab {lab['name']} removed" in r.stdout and "warning" not in r.stderr
    assert_nothing_left(lab["dir"], lab["name"], pids)
    assert "nothing to remove" in lab_cmd(lab["dir"], "down", lab["name"]).stdout  # idempotent


def one_host_lab(name: str, **extra) -> dict:
    doc = {
        "name": name,
        "hosts": ["h1"],
        "underlay": {"subnet": "198.18.9.0/24"},
        "networks": [{"name": "n1", "subnet": "10.91.0.0/24"}],
        "containers": [{"name": "c1", "host": "h1", "network": "n1"}],
        "checks": [{"from": "c1", "ping": "h1"}],
    }
    doc.update(extra)
    return doc


def test_up_failing_half_way_tears_down(tmp_path):
    name = "f" + secrets.token_hex(3)
    doc = one_host_lab(
        name,
        networks=[
            {"name": "n1", "subnet": "10.91.0.0/24"},
            {"name": "n2", "options": {"com.docker.network.driver.mtu": "lots"}},
        ],
    )
    r = lab_cmd(tmp_path, "up", str(write_lab(tmp_path / "bad.yaml", doc)), check=False)
    assert r.returncode != 0
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1
    assert f"lab {name}: step 'network n2 on h1' failed:" in err and "torn down" in err
    log = re.search(r"\(log: (\S+)\)", err)
    assert log and Path(log.group(1)).is_file()  # the daemon's log survives the teardown
    Path(log.group(1)).unlink()
    assert_nothing_left(tmp_path, name, [])
    # a validation error stops before anything is built
    doc = one_host_lab(name, containers=[{"name": "c1", "host": "h1", "network": "nope"}])
    r = lab_cmd(tmp_path, "up", str(write_lab(tmp_path / "bad2.yaml", doc)), check=False)
    assert r.returncode == 2 and "containers[0].network: unknown network 'nope'" in r.stderr
    assert_nothing_left(tmp_path, name, [])


def test_up_after_a_crash_of_the_previous_lab(tmp_path):
    name = "c" + secrets.token_hex(3)
    path = write_lab(tmp_path / "lab.yaml", one_host_lab(name))
    lab_cmd(tmp_path, "up", str(path))
    old = recorded_pids(tmp_path, name)
    for pid, _ in old:
        os.kill(pid, signal.SIGKILL)  # the crash: namespaces and containers stay
    assert lab_namespaces(name)
    try:
        lab_cmd(tmp_path, "up", str(path))
        assert lab_cmd(tmp_path, "check", name, check=False).returncode == 0
        new = recorded_pids(tmp_path, name)
        assert all(still_running(p, s) for p, s in new) and not any(still_running(p, s) for p, s in old)
        ps = lab_cmd(tmp_path, "exec", name, "h1", "--", "net", "ps", "-q").stdout.split()
        assert len(ps) == 1
    finally:
        pids = recorded_pids(tmp_path, name) if (tmp_path / name).exists() else []
        lab_cmd(tmp_path, "down", name)
    assert_nothing_left(tmp_path, name, old + pids)


def test_lab_containers_get_cap_add_and_privileged(tmp_path):
    """A lab file's cap_add and privileged reach the containers: c1 sets its lo MTU at
    start (NET_ADMIN) and keeps running only if it could; c2 is privileged."""
    name = "k" + secrets.token_hex(3)
    doc = one_host_lab(
        name,
        containers=[
            {
                "name": "c1",
                "host": "h1",
                "network": "n1",
                "cap_add": ["NET_ADMIN"],
                "command": ["busybox", "sh", "-c", "busybox ip link set lo mtu 1400 && exec busybox sleep 1d"],
            },
            {"name": "c2", "host": "h1", "network": "n1", "privileged": True},
        ],
        checks=[{"from": "c1", "mtu": 1400, "iface": "lo"}, {"from": "c2", "ping": "c1"}],
    )
    path = write_lab(tmp_path / "lab.yaml", doc)
    lab_cmd(tmp_path, "up", str(path))
    try:
        r = lab_cmd(tmp_path, "check", name, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        out = lab_cmd(tmp_path, "exec", name, "h1", "--", "net", "container", "inspect", "c1", "c2").stdout
        c1, c2 = json.loads(out)
        assert c1["HostConfig"]["CapAdd"] == ["NET_ADMIN"] and c2["HostConfig"]["Privileged"] is True
    finally:
        pids = recorded_pids(tmp_path, name) if (tmp_path / name).exists() else []
        lab_cmd(tmp_path, "down", name)
    assert_nothing_left(tmp_path, name, pids)
