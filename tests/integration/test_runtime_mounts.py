"""Containers' mount namespaces do not copy the daemon's sandbox mounts (issue 10: the
N-th container's start copied N namespace bind mounts; see cnm.runtime.template_main).
The scenario runs in a mount namespace of its own (tests/integration/mounts_probe.py),
so that its bind mounts never touch the host's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.integration import runtime_harness as harness
from tests.integration.runtime_harness import BUSYBOX

netns = harness.netns  # fixture
pytestmark = pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static at /bin/busybox")
PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mounts_probe.py")


def test_containers_copy_no_sandbox_mounts(tmp_path, netns):
    out = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "slave",
            sys.executable,
            PROBE,
            str(tmp_path),
            netns,
            f"cnm-test-mnt-{os.getpid()}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    runs = {r["k"]: r for r in res["runs"]}
    for k, r in runs.items():
        # The daemon's side holds the K mounts (and the directory's own mount point) ...
        assert r["ours"][1] == k + 1, r
        # ... a container made the new way none of them, whatever K, also after its
        # template was killed and started again (k=80) ...
        assert r["fixed"]["container"][1] == 0, r
        # ... while one that copies the daemon's namespace holds them all: the test can fail.
        assert r["copying"]["container"][1] >= k, r
        # It is in the network namespace it was given (joined by path before the switch).
        assert r["fixed"]["container_netns_ino"] == res["netns_ino"], r
        # Supervisors stay in the daemon's mount namespace: a restarted daemon finds its
        # sandboxes' namespace files through them (cnm.osl.netns.recover_from).
        assert r["fixed"]["supervisor_in_our_mount_ns"] and r["fixed"]["supervisor"][1] == k + 1, r
    # Containers' namespaces do not grow with K: as many mounts of the sandboxes' network
    # namespace, wherever mounted, at 0, 40 and 80 sandboxes (not the total of all mounts:
    # that moves with what the rest of the machine mounts during the test) ...
    assert len({r["fixed"]["container"][2] for r in runs.values()}) == 1, runs
    # ... while the copying container's grow with K.
    assert runs[80]["copying"]["container"][2] - runs[0]["copying"]["container"][2] >= 80, runs
    assert res["exec"] == ["hi\n", 0]
