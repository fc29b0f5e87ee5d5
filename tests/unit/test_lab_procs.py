"""Ownership helpers: mounts under the lab directory, pid start times."""

from __future__ import annotations

import os

from cnm.lab import procs
from cnm.lab.runner import short

MOUNTINFO = """\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
40 22 0:4 net:[4026532] /var/lib/cnm-lab/demo/h1/run/sandboxes/abc rw - nsfs nsfs rw
41 22 0:50 / /var/lib/cnm-lab/demo/h1/run/ctr/x/rootfs rw - overlay overlay rw
42 22 0:51 / /var/lib/cnm-lab/demo2/h1/run rw - tmpfs tmpfs rw
43 22 0:52 / /var/lib/cnm-lab/demo/with\\040space rw - tmpfs tmpfs rw
"""


def test_mounts_under_only_the_labs_own_directory_deepest_first():
    got = procs.mounts_under("/var/lib/cnm-lab/demo", MOUNTINFO)
    assert got == [
        ("/var/lib/cnm-lab/demo/h1/run/sandboxes/abc", "nsfs"),
        ("/var/lib/cnm-lab/demo/h1/run/ctr/x/rootfs", "overlay"),
        ("/var/lib/cnm-lab/demo/with space", "tmpfs"),
    ]  # not demo2's


def test_start_time_and_alive_need_the_recorded_start():
    me = os.getpid()
    start = procs.start_time(me)
    assert isinstance(start, int)
    assert procs.alive(me, start)
    assert not procs.alive(me, start + 1)  # a reused pid is not ours
    assert not procs.alive(me, None)  # without a start time, never claim it
    assert procs.start_time(1 << 30) is None
    assert procs.terminate(1 << 30, 123) == "gone"


def test_short_command_text():
    assert short(["/venv/bin/net", "-H", "unix:///x.sock", "network", "create", "n"]) == "net network create n"
    assert short(["ip", "netns", "exec", "ns1", "tc", "qdisc"]) == "tc qdisc"
