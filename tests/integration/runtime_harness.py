"""The runtime's test harness, shared by the runtime's integration tests: a Runtime on
a temporary state directory with its own cgroup sub-tree; afterwards the `rt` fixture
checks that no process, mount or cgroup of ours is left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from cnm.runtime import ContainerSpec, Runtime, files, linux

BUSYBOX = "/bin/busybox"


def mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln for ln in f if f" {path}" in ln]


def procs_mentioning(path: str, ignore: tuple[int | None, ...] = ()) -> list[int]:
    """Processes with a command-line argument, an open fd, a cwd or a root under
    `path` (a supervisor holds its container directory open; a container's output
    goes to files in it)."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        cmd = linux.cmdline(int(p))
        links = []
        try:
            links = [os.readlink(f"/proc/{p}/{n}") for n in ("cwd", "root")]
            links += [os.readlink(f"/proc/{p}/fd/{fd}") for fd in os.listdir(f"/proc/{p}/fd")]
        except OSError:
            pass
        if int(p) in ignore:
            continue
        if (cmd and any(path in a for a in cmd)) or any(ln == path or ln.startswith(path + "/") for ln in links):
            out.append(int(p))
    return out


class Harness:
    def __init__(self, base: Path, cgroup_root: str) -> None:
        self.state_dir = base / "containers"
        self.cgroup_root = cgroup_root
        self.rt = Runtime(str(self.state_dir), cgroup_root=cgroup_root)
        self.seen: list[tuple[int, int]] = []  # (pid, start time) of every shim and container

    def start(self, cid: str, argv: list[str], **kw):
        st = self.rt.start(ContainerSpec(id=cid, argv=argv, **kw))
        d = json.loads((self.state_dir / cid / files.STATE).read_text())
        self.seen += [(d["shim_pid"], d["shim_start"]), (d["pid"], d["pid_start"])]
        return st

    def out(self, cid: str) -> tuple[str, str]:
        """(stdout, stderr) from the container's log."""
        lines = list(self.rt.logs(cid))
        return tuple(b"".join(ln.data for ln in lines if ln.stream == s).decode() for s in (1, 2))  # type: ignore[return-value]

    def cgroup_tops(self) -> list[str]:
        layout = self.rt.cgroups.layout
        return (
            sorted({os.path.dirname(d) for d in self.rt.cgroups.dirs("x", 1, 1.0, 1).values()})
            if layout.controllers
            else []
        )


@pytest.fixture
def rt(tmp_path):
    h = Harness(tmp_path, f"cnm-test-{os.getpid()}-{tmp_path.name[-12:]}")
    try:
        yield h
    finally:
        for st in h.rt.list():
            h.rt.remove(st.id, force=True)
        h.rt.close()
        leftovers = [p for p, start in h.seen if linux.is_alive(p, start)]
        for p, start in h.seen:  # never leave strays behind, even when failing
            if linux.is_alive(p, start):
                os.kill(p, signal.SIGKILL)
        tops = [t for t in h.cgroup_tops() if os.path.isdir(t)]
        children = [os.path.join(t, c) for t in tops for c in os.listdir(t) if os.path.isdir(os.path.join(t, c))]
        for d in children + tops:  # clean up even when the check below fails
            try:
                os.rmdir(d)
            except OSError:
                pass
        assert leftovers == [], "processes left running"
        assert procs_mentioning(str(h.state_dir)) == []
        assert mounts_under(str(tmp_path)) == []
        assert children == [], "container cgroups left behind"


@pytest.fixture
def netns(host_ns):
    return f"/run/netns/{host_ns}"


@pytest.fixture
def rootfs(tmp_path):
    """A tiny rootfs: busybox-static and a /bin/sh symlink to it."""
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    return root


def assert_no_cgroups(h: Harness, cid: str) -> None:
    for d in h.rt.cgroups.dirs(cid, 64 << 20, 1.0, 10).values():
        assert not os.path.exists(d), d


def wait_for_output(h: Harness, cid: str, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in h.out(cid)[0]:
        assert time.monotonic() < deadline, f"{cid} never printed {text!r}"
        time.sleep(0.01)


def wait_for_file(path: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)
