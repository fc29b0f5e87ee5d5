"""Layer extraction into a real directory: content, metadata, whiteouts, and hostile tars
(traversal, symlink and hard-link escapes, devices, bombs, truncation)."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile

import pytest

from cnm.errors import InvalidParameter
from cnm.images.extract import OPAQUE_XATTR, extract_layer
from cnm.images.limits import DEFAULT_LIMITS, Limits
from tests.unit.image_fixtures import BASE, TOP, layer, sha

ROOT = os.geteuid() == 0


def run(tmp_path, data: bytes, limits: Limits = DEFAULT_LIMITS):
    dest = tmp_path / "diff"
    dest.mkdir()
    return extract_layer(io.BytesIO(data), str(dest), limits), dest


def test_files_dirs_links_and_digests(tmp_path):
    data = layer(
        ("dir", "bin", 0o711),
        ("file", "bin/busybox", b"\x7fELF" + b"x" * 5000, 0o4755),
        ("symlink", "bin/sh", "/bin/busybox"),
        ("hardlink", "bin/ls", "bin/busybox"),
        ("file", "deep/er/file", b"implicit parents"),
        ("fifo", "run/pipe"),
    )
    ex, d = run(tmp_path, data)
    assert ex.diff_id == sha(data) and ex.blob_digest == sha(data) and ex.compression is None
    assert (d / "bin/busybox").read_bytes().startswith(b"\x7fELF")
    assert stat.S_IMODE((d / "bin/busybox").stat().st_mode) == 0o4755
    assert stat.S_IMODE((d / "bin").stat().st_mode) == 0o711  # applied after its children
    assert os.readlink(d / "bin/sh") == "/bin/busybox"
    assert (d / "bin/ls").stat().st_ino == (d / "bin/busybox").stat().st_ino
    assert stat.S_ISFIFO((d / "run/pipe").lstat().st_mode)
    assert (d / "deep/er/file").read_bytes() == b"implicit parents"
    assert int((d / "bin/busybox").stat().st_mtime) == 1_700_000_000
    assert ex.size == 5004 + len(b"implicit parents")  # the hard link counted once


@pytest.mark.parametrize("compress,kind", [(gzip.compress, "gzip"), (bz2.compress, "bzip2"), (lzma.compress, "xz")])
def test_compressed_layers_hash_uncompressed(tmp_path, compress, kind):
    blob = compress(BASE)
    ex, d = run(tmp_path, blob)
    assert ex.compression == kind and ex.diff_id == sha(BASE) and ex.blob_digest == sha(blob)
    assert (d / "etc/motd").read_bytes() == b"base motd\n"


def test_whiteouts_become_overlay_forms(tmp_path):
    if not ROOT:
        pytest.skip("the opaque-directory xattr (trusted.overlay.opaque) needs root (CAP_SYS_ADMIN)")
    ex, d = run(tmp_path, TOP)
    st = (d / "etc/motd").lstat()
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 0 and os.minor(st.st_rdev) == 0
    assert not (d / "etc/.wh.motd").exists()
    assert os.getxattr(d / "data", OPAQUE_XATTR) == b"y"
    assert not (d / "data/.wh..wh..opq").exists()
    assert (d / "data/new").read_bytes() == b"new\n"


def test_later_entry_replaces_earlier(tmp_path):
    ex, d = run(
        tmp_path,
        layer(
            ("file", "a", b"first"),
            ("file", "a", b"second"),
            ("dir", "b"),
            ("file", "b/x", b""),
            ("file", "b", b"now a file"),
        ),
    )
    assert (d / "a").read_bytes() == b"second"
    assert (d / "b").read_bytes() == b"now a file"


def test_symlink_in_layer_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = layer(("symlink", "escape", str(outside)), ("file", "escape/pwned", b"gotcha"))
    with pytest.raises(InvalidParameter, match="symlink or a file"):
        run(tmp_path, evil)
    assert list(outside.iterdir()) == []


def test_symlink_to_parent_never_followed(tmp_path):
    evil = layer(("symlink", "up", ".."), ("file", "up/pwned", b"x"))
    with pytest.raises(InvalidParameter):
        run(tmp_path, evil)
    assert not (tmp_path / "pwned").exists()


def test_hardlink_to_outside_refused(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    for target in ("../secret", str(secret), "/etc/passwd"):
        evil = layer(("hardlink", "stolen", target))
        d = tmp_path / "diff"
        with pytest.raises(InvalidParameter):
            extract_layer(io.BytesIO(evil), str(_fresh(d)))
        assert not (d / "stolen").exists()
    assert secret.stat().st_nlink == 1


def test_hardlink_through_symlink_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_text("x")
    evil = layer(("symlink", "s", str(outside)), ("hardlink", "h", "s/f"))
    with pytest.raises(InvalidParameter):
        run(tmp_path, evil)
    assert (outside / "f").stat().st_nlink == 1


def _fresh(d):
    import shutil

    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    return d


def test_traversal_names_refused(tmp_path):
    for name in ("../escaped", "a/../../escaped", "/../escaped"):
        ti = tarfile.TarInfo(name)
        ti.size = 1
        with pytest.raises(InvalidParameter):
            extract_layer(io.BytesIO(layer(("raw", ti, b"x"))), str(_fresh(tmp_path / "diff")))
    assert not (tmp_path / "escaped").exists()


def test_absolute_names_stay_inside(tmp_path):
    ex, d = run(tmp_path, layer(("file", "/etc/hostname-test", b"inside")))
    assert (d / "etc/hostname-test").read_bytes() == b"inside"


def test_devices_skipped(tmp_path):
    ex, d = run(tmp_path, layer(("chardev", "dev/null", 1, 3), ("chardev", "dev/kmsg", 1, 11), ("file", "ok", b"1")))
    assert ex.devices_skipped == ["dev/null", "dev/kmsg"]
    assert not (d / "dev/null").exists() and (d / "ok").exists()


def test_only_safe_xattrs_applied(tmp_path):
    ti = tarfile.TarInfo("f")
    ti.size = 1
    ti.pax_headers = {"SCHILY.xattr.user.note": "hello", "SCHILY.xattr.trusted.overlay.redirect": "/etc"}
    ex, d = run(tmp_path, layer(("raw", ti, b"x")))
    assert os.getxattr(d / "f", "user.note") == b"hello"
    with pytest.raises(OSError):
        os.getxattr(d / "f", "trusted.overlay.redirect")


def test_limits(tmp_path):
    bomb = gzip.compress(layer(("file", "zeros", b"\0" * 200_000)))
    assert len(bomb) < 2000
    with pytest.raises(InvalidParameter, match="larger than the limit"):
        run(tmp_path, bomb, Limits(max_layer=100_000))
    many = layer(*[("file", f"f{i}", b"") for i in range(20)])
    with pytest.raises(InvalidParameter, match="more than 10 entries"):
        extract_layer(io.BytesIO(many), str(_fresh(tmp_path / "diff")), Limits(max_members=10))


def test_corrupt_input(tmp_path):
    good = layer(("file", "big", b"y" * 10_000))
    with pytest.raises(InvalidParameter, match="truncated|corrupt|tar"):
        run(tmp_path, good[:3000])
    with pytest.raises(InvalidParameter, match="corrupt"):
        extract_layer(io.BytesIO(gzip.compress(good)[:-20] + b"garbage!" * 3), str(_fresh(tmp_path / "diff")))
    with pytest.raises(InvalidParameter):
        extract_layer(io.BytesIO(b"this is not a tar archive at all" * 40), str(_fresh(tmp_path / "diff")))
    with pytest.raises(InvalidParameter, match="zstd"):
        extract_layer(io.BytesIO(b"\x28\xb5\x2f\xfd" + b"\0" * 100), str(_fresh(tmp_path / "diff")))


def test_empty_layers(tmp_path):
    ex, d = run(tmp_path, b"\0" * 1024)  # Docker's empty layer
    assert ex.diff_id == sha(b"\0" * 1024) and list(d.iterdir()) == []
    ex, d = run(tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path, b"")
    assert ex.diff_id == sha(b"")


def test_memory_stays_flat_on_many_members(tmp_path):
    import tracemalloc

    many = layer(*[("file", f"d{i % 50}/f{i}", b"z") for i in range(3000)])
    tracemalloc.start()
    run(tmp_path, many)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # tarfile keeps every header in stream mode unless told not to: 3000 TarInfos take
    # ~3 MB here (measured), ~1.1 MB with the headers dropped as the applier does.
    assert peak < 1_600_000, peak
