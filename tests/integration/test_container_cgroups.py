"""/sys/fs/cgroup inside a container, as Docker shows it: the container's own cgroups
(mounted from inside its cgroup namespace, so each hierarchy's root is its cgroup),
read-only unless privileged; /proc/self/cgroup says "/"; nothing of the host's or other
containers' cgroups. A container without limits has no cgroup of its own here and sees
an empty /sys/fs/cgroup."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cnm.runtime import ContainerSpec, Runtime

BUSYBOX = "/bin/busybox"
pytestmark = pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static at /bin/busybox")
MiB = 1024 * 1024


@pytest.fixture
def rt(tmp_path):
    r = Runtime(str(tmp_path / "containers"), cgroup_root=f"cnm-test-{os.getpid()}-{tmp_path.name[-12:]}")
    if "memory" not in r.cgroups.layout.controllers:
        pytest.skip("no memory cgroup controller on this host")
    yield r
    for st in r.list():
        r.remove(st.id, force=True)
    r.close()


def run(rt: Runtime, cid: str, script: str, **kw) -> tuple[int, str, str]:
    rt.start(ContainerSpec(id=cid, argv=[BUSYBOX, "sh", "-c", script], **kw))
    code = rt.wait(cid, timeout=30)
    lines = list(rt.logs(cid))
    return code, *(b"".join(ln.data for ln in lines if ln.stream == s).decode() for s in (1, 2))  # type: ignore[return-value]


def mem_file(rt: Runtime) -> str:
    return "memory.limit_in_bytes" if rt.cgroups.layout.controllers["memory"].version == 1 else "memory.max"


def where(rt: Runtime) -> str:
    """Where the memory hierarchy shows inside (v1: a directory per hierarchy)."""
    h = rt.cgroups.layout.controllers["memory"]
    view = rt.cgroups.view(["memory"])
    return "/sys/fs/cgroup" + (f"/{view[0][0]}" if view[0][0] else "") if h.version == 1 else "/sys/fs/cgroup"


@pytest.mark.parametrize("mode", ["host-filesystem", "rootfs"])
def test_a_container_sees_its_own_cgroup_read_only(rt, host_ns, tmp_path, mode):
    kw: dict = {"netns": f"/run/netns/{host_ns}", "memory": 64 * MiB, "pids_limit": 50}
    if mode == "rootfs":
        root = tmp_path / "rootfs"
        (root / "bin").mkdir(parents=True)
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        kw["rootfs"] = [str(root)]
    # a sibling with limits too: the first must not see it
    rt.start(ContainerSpec(id="sibling", argv=[BUSYBOX, "sleep", "30"], memory=32 * MiB))
    d = where(rt)
    script = (
        f"cat {d}/{mem_file(rt)}; echo ---; cat /proc/self/cgroup; echo ---; ls {d}; echo ---; "
        f"ls /sys/fs/cgroup; echo ---; echo 1 > {d}/{mem_file(rt)} 2>&1 || echo refused; "
        f"mkdir {d}/escape 2>&1 || echo no-mkdir"
    )
    code, out, err = run(rt, "own", script, **kw)
    assert code == 0, err
    limit, proc_cgroup, listing, top, tail = out.split("---\n")
    assert int(limit) == 64 * MiB  # its own limit, at the hierarchy's root
    memory_lines = [ln for ln in proc_cgroup.splitlines() if ":memory:" in ln or ln.startswith("0::")]
    assert memory_lines and all(ln.endswith(":/") for ln in memory_lines), proc_cgroup
    assert "sibling" not in listing and "cnm" not in listing and "cgroup.procs" in listing
    assert "refused" in tail and "no-mkdir" in tail  # read-only
    expected = {name or "" for name, _, _ in rt.cgroups.view(["memory", "pids"])}
    assert set(top.split()) == ({n for n in expected if n} or set(top.split()))
    assert "cpuset" not in top.split() and "devices" not in top.split()  # no limit there: not shown
    assert (Path(rt.cgroups.dirs("own", memory=1)["memory"]) / mem_file(rt)).read_text().strip() == str(64 * MiB)


def test_without_limits_nothing_is_shown(rt, host_ns):
    code, out, err = run(
        rt, "free", "ls -A /sys/fs/cgroup; echo ---; cat /proc/self/cgroup", netns=f"/run/netns/{host_ns}"
    )
    assert code == 0, err
    listing, proc_cgroup = out.split("---\n")
    assert listing.strip() == ""
    # its cgroup namespace starts at the daemon's cgroups: none of the host's paths show
    assert all(ln.endswith(":/") for ln in proc_cgroup.splitlines()), proc_cgroup


def test_privileged_containers_may_write_their_cgroup(rt, host_ns):
    d = where(rt)
    code, out, err = run(
        rt,
        "priv",
        f"echo {48 * MiB} > {d}/{mem_file(rt)} && cat {d}/{mem_file(rt)}",
        netns=f"/run/netns/{host_ns}",
        memory=64 * MiB,
        privileged=True,
    )
    assert code == 0, err
    assert int(out) == 48 * MiB
