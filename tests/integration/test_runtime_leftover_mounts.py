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

import pytest

from cnm.runtime import teardown
from cnm.runtime.cgroups import _unescape

ROOT = Path(__file__).resolve().parents[2]


def in_private_mounts(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run `code` (argv: the checkout, tmp_path) in a mount namespace of its own: its
    mounts never reach the machine's."""
    return subprocess.run(
        ["unshare", "-m", sys.executable, "-c", code, str(ROOT), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


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
    r = in_private_mounts(code, tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_mounts_found_by_mount_id_are_those_of_the_table_and_removal_spares_their_contents(tmp_path):
    """By mount id (statx/listmount/statmount, no mountinfo): a tmpfs with one inside it,
    a bind mount of a file and one of a directory of the same filesystem, two mounts on
    one point — all found, as the mountinfo table lists them, then detached by the
    directory's removal (teardown.discard) before anything is deleted: what the bind
    mounts showed survives. A sibling whose name the directory's is a prefix of is
    left alone."""
    code = textwrap.dedent("""
        import os, subprocess, sys
        sys.path.insert(0, sys.argv[1])
        from cnm.runtime import teardown as r
        from cnm.runtime.cgroups import Cgroups
        from cnm.runtime.mountids import MountIds
        base = sys.argv[2]
        cdir = os.path.join(base, "c 1", "c1")
        other = os.path.join(base, "c 1", "c10")
        keep = os.path.join(base, "keep")
        for d in (cdir + "/rootfs", cdir + "/data", cdir + "/twice", other, keep):
            os.makedirs(d)
        with open(os.path.join(keep, "precious"), "w") as f:
            f.write("x")
        with open(cdir + "/hosts", "w"):
            pass
        def sh(*argv):
            subprocess.run(argv, check=True)
        sh("mount", "--make-rprivate", "/")
        sh("mount", "-t", "tmpfs", "tmpfs", cdir + "/rootfs")
        os.makedirs(cdir + "/rootfs/tmp")
        sh("mount", "-t", "tmpfs", "tmpfs", cdir + "/rootfs/tmp")
        sh("mount", "--bind", keep + "/precious", cdir + "/hosts")  # a file, same filesystem
        sh("mount", "--bind", keep, cdir + "/data")  # a directory, same filesystem
        sh("mount", "-t", "tmpfs", "tmpfs", cdir + "/twice")
        sh("mount", "-t", "tmpfs", "tmpfs", cdir + "/twice")  # over the first
        sh("mount", "-t", "tmpfs", "tmpfs", other)
        ids = MountIds()
        found = ids.under(cdir)
        if found is None:
            print("unsupported:", ids.unsupported)
            sys.exit(0)
        assert found == sorted(r._mounted_under(cdir), key=len), (found, r._mounted_under(cdir))
        assert len(found) == 6 and found.count(cdir + "/twice") == 2, found
        assert ids.under(os.path.join(base, "nothing here")) == []
        errs = r.discard(cdir, Cgroups("cnm-test-none"), "boot")
        assert errs == [], errs
        assert not os.path.exists(cdir)
        assert open(os.path.join(keep, "precious")).read() == "x"  # not emptied through a bind
        assert r._mounted_under(cdir) == [] and ids.under(base) == [other]
        print("ok")
    """)
    r = in_private_mounts(code, tmp_path)
    if r.stdout.startswith("unsupported:"):
        pytest.skip(f"this kernel cannot list mounts by id ({r.stdout.strip()}): the mountinfo path was tested")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr + r.stdout
