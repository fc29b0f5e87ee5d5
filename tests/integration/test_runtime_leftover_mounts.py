"""A container directory's removal detaches any mount left under it in the daemon's
mount namespace first (a tmpfs there must not be emptied by the removal, nor make it
fail), while the daemon's usual table — a mount per sandbox, thousands of them — is
not parsed at all when the directory's name is not in it. Runs in a private mount
namespace (unshare -m): the machine's own table is never changed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from cnm.runtime import teardown
from cnm.runtime.cgroups import _unescape

ROOT = Path(__file__).resolve().parents[2]


def test_mangled_names_read_back_as_mountinfo_unescapes_them():
    for path in ("/run/cnm/containers/abc", "/tmp/a b/c\\d\te\nf"):
        assert _unescape(teardown._mangled(path)) == path
    assert teardown._mangled("/a b") == "/a\\040b"


def test_a_mount_left_under_a_container_directory_is_detached(tmp_path):
    code = textwrap.dedent("""
        import os, subprocess, sys
        sys.path.insert(0, sys.argv[1])
        from cnm.runtime import teardown as r
        base = sys.argv[2]
        cdir = os.path.join(base, "with space", "c1")
        other = os.path.join(base, "with space", "c10")      # a name c1 is a prefix of
        for d in (cdir + "/rootfs/tmp", other):
            os.makedirs(d)
        subprocess.run(["mount", "--make-rprivate", "/"], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", cdir + "/rootfs"], check=True)
        os.makedirs(cdir + "/rootfs/tmp")
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", cdir + "/rootfs/tmp"], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", other], check=True)
        assert r.unmount_under(os.path.join(base, "nothing here")) == []
        assert r.unmount_under(cdir) == []
        from cnm.runtime.cgroups import parse_mountinfo
        points = [p for _, p, _, _ in parse_mountinfo(open("/proc/self/mountinfo").read())]
        assert not [p for p in points if p == cdir or p.startswith(cdir + "/")], points
        assert other in points                              # another container's: kept
        print("ok")
    """)
    r = subprocess.run(
        ["unshare", "-m", sys.executable, "-c", code, str(ROOT), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
