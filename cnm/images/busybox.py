"""Build a small `busybox:latest` image from the host's busybox-static, as a docker-save
tarball (Docker 25+'s layout: OCI blobs + manifest.json), for the demo and the tests.

    python -m cnm.images.busybox OUT.tar [--busybox /bin/busybox] [--tag busybox:latest]

One layer, like Docker Hub's busybox: /bin/busybox with every applet hard-linked next to
it, /etc/passwd, /etc/group, /tmp (1777), /root, /home, /var, /dev, /proc, /sys.
Reproducible: fixed owners, modes and times (the busybox binary's mtime), sorted
entries, so the same busybox gives the same image ID on every machine. Idempotent:
an OUT newer than the binary is left alone (`--force` rebuilds).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time

from cnm.images import formats as F
from cnm.images import reference

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "nobody:x:65534:65534:nobody:/home:/bin/false\n"
)
GROUP = "root:x:0:\ndaemon:x:1:\ntty:x:5:\nnogroup:x:65534:\n"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def applets(busybox: str) -> list[str]:
    out = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout
    return sorted({a for a in out.split() if a and "/" not in a and a != "busybox"})


def layer_tar(busybox: str, mtime: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:

        def add(name: str, kind: bytes, mode: int, data: bytes | None = None, link: str = "") -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime, ti.uname, ti.gname = kind, mode, mtime, "root", "root"
            ti.linkname = link
            ti.size = len(data) if data is not None else 0
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)

        for d in (
            "bin",
            "dev",
            "etc",
            "home",
            "proc",
            "root",
            "sys",
            "usr",
            "usr/sbin",
            "usr/bin",
            "var",
            "var/spool",
            "var/www",
        ):
            add(d + "/", tarfile.DIRTYPE, 0o700 if d == "root" else 0o755)
        add("tmp/", tarfile.DIRTYPE, 0o1777)
        with open(busybox, "rb") as f:
            add("bin/busybox", tarfile.REGTYPE, 0o755, f.read())
        for name in applets(busybox):
            add(f"bin/{name}", tarfile.LNKTYPE, 0o755, link="bin/busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, PASSWD.encode())
        add("etc/group", tarfile.REGTYPE, 0o644, GROUP.encode())
    return buf.getvalue()


def version_of(busybox: str) -> str:
    out = subprocess.run([busybox], check=False, capture_output=True, text=True).stdout
    return out.splitlines()[0].split(" multi-call")[0] if out else "BusyBox"


def build(busybox: str = "/bin/busybox", tag: str = "busybox:latest") -> bytes:
    """The docker-save tarball, in memory (about 2 MB)."""
    mtime = int(os.stat(busybox).st_mtime)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))
    layer = layer_tar(busybox, mtime)
    config = json.dumps(
        {
            "architecture": F.host_arch(),
            "os": "linux",
            "created": created,
            "config": {"Env": [f"PATH={PATH}"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [_sha(layer)]},
            "history": [
                {"created": created, "created_by": f"cnm.images.busybox: {version_of(busybox)} from {busybox}"},
                {"created": created, "created_by": 'CMD ["sh"]', "empty_layer": True},
            ],
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": F.OCI_MANIFEST,
            "config": {"mediaType": F.OCI_CONFIG, "digest": _sha(config), "size": len(config)},
            "layers": [{"mediaType": F.OCI_LAYER, "digest": _sha(layer), "size": len(layer)}],
        },
        separators=(",", ":"),
    ).encode()
    ref = reference.parse_tagged(tag)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": F.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": F.OCI_MANIFEST,
                    "digest": _sha(manifest),
                    "size": len(manifest),
                    "annotations": {F.NAME_ANNOTATION: str(ref), F.REF_ANNOTATION: ref.tag or ""},
                }
            ],
        }
    ).encode()

    def blob(data: bytes) -> str:
        return f"blobs/sha256/{_sha(data)[7:]}"

    manifest_json = json.dumps(
        [{"Config": blob(config), "RepoTags": [ref.familiar()], "Layers": [blob(layer)]}]
    ).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for path, data in (
            (blob(config), config),
            (blob(layer), layer),
            (blob(manifest), manifest),
            ("index.json", index),
            ("manifest.json", manifest_json),
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        ):
            ti = tarfile.TarInfo(path)
            ti.size, ti.mtime, ti.mode = len(data), mtime, 0o644
            tf.addfile(ti, io.BytesIO(data))
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--busybox", default="/bin/busybox")
    ap.add_argument("--tag", default="busybox:latest")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    if not os.path.exists(args.busybox):
        print(f"{args.busybox} not found: install Debian's busybox-static", file=sys.stderr)
        return 1
    if (
        not args.force
        and os.path.exists(args.out)
        and os.path.getmtime(args.out) >= os.path.getmtime(args.busybox)
        and os.path.getmtime(args.out) >= os.path.getmtime(__file__)
    ):
        return 0
    data = build(args.busybox, args.tag)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = f"{args.out}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, args.out)
    print(f"{args.out}: {args.tag} ({len(data) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
