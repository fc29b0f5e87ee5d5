"""What a user may say about a container's confinement, parsed and checked at the edge.
Pure (no I/O): Docker's forms in, this project's normalized forms out, InvalidParameter
with one line naming the culprit otherwise.

    --security-opt   seccomp=unconfined|builtin|<profile JSON>, no-new-privileges[=bool],
                     systempaths=unconfined, apparmor=unconfined, label=disable
    -v / Binds       SRC:DST[:ro|rw][,rprivate|private|rslave|slave]
    --mount / Mounts {"Type": "bind"|"tmpfs", "Source", "Target", "ReadOnly", BindOptions, TmpfsOptions}
    --tmpfs / Tmpfs  {DST: "size=64m,mode=1777,exec,..."}
    --device         HOST[:CTR][:rwm]

A mount is normalized to a dict (kept as such in the container's spec):
    {"type": "bind", "source", "target", "read_only", "propagation", "recursive", "create"}
    {"type": "tmpfs", "target", "read_only", "options": [...]}
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from cnm.errors import InvalidParameter

PROPAGATIONS = ("rprivate", "private", "rslave", "slave")
_REFUSED_PROPAGATIONS = ("shared", "rshared")
# tmpfs mount words: flags (the kernel's MS_* words) and data options with a value.
TMPFS_FLAGS = frozenset(
    {
        "ro",
        "rw",
        "exec",
        "noexec",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "atime",
        "noatime",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
        "diratime",
        "nodiratime",
        "sync",
        "async",
        "dirsync",
    }
)
_TMPFS_DATA = {
    "size": re.compile(r"^\d+[kmgKMG%]?$"),
    "nr_blocks": re.compile(r"^\d+[kmgKMG%]?$"),
    "nr_inodes": re.compile(r"^\d+[kmgKMG%]?$"),
    "mode": re.compile(r"^[0-7]{1,4}$"),
    "uid": re.compile(r"^\d{1,10}$"),
    "gid": re.compile(r"^\d{1,10}$"),
    "huge": re.compile(r"^(never|always|within_size|advise)$"),
}
# Docker's default flags for a user tmpfs (the user's words override them).
TMPFS_DEFAULTS = ("noexec", "nosuid", "nodev")
_HOST_ROOT_RW = "/"


@dataclass(frozen=True)
class SecurityOpts:
    seccomp: str = "default"  # "default", "unconfined" or a profile's JSON text
    no_new_privileges: bool | None = None  # None: the runtime's default
    systempaths_unconfined: bool = False


def _clean_abs(p: Any, what: str) -> str:
    if not isinstance(p, str) or not p.startswith("/"):
        raise InvalidParameter(f"invalid {what} {p!r}: it must be an absolute path")
    if "\0" in p or "\n" in p:
        raise InvalidParameter(f"invalid {what} {p!r}: control characters are not allowed")
    return posixpath.normpath(p).replace("//", "/")


def parse_security_opts(opts: list[str] | None) -> SecurityOpts:
    """Docker's --security-opt words (both "k=v" and the deprecated "k:v")."""
    seccomp, nnp, sysp = "default", None, False
    for opt in opts or []:
        if not isinstance(opt, str):
            raise InvalidParameter(f"invalid --security-opt {opt!r}: options are strings")
        if opt == "no-new-privileges":
            nnp = True
            continue
        if opt == "disable":  # label=disable's short form
            continue
        sep = "=" if "=" in opt else ":" if ":" in opt else None
        if sep is None:
            raise InvalidParameter(f'invalid --security-opt {opt!r}: use KEY=VALUE, e.g. "seccomp=unconfined"')
        key, _, value = opt.partition(sep)
        if key == "seccomp":
            if value in ("unconfined", "builtin", "default"):
                seccomp = "unconfined" if value == "unconfined" else "default"
            elif value.lstrip().startswith("{"):
                from cnm.runtime import seccomp_profile  # the daemon validates the profile here, once

                seccomp_profile.parse(value)
                seccomp = value
            else:
                raise InvalidParameter(
                    f"invalid --security-opt seccomp={value[:60]!r}: give unconfined, builtin or "
                    "the profile's JSON (the CLI reads a file name for you)"
                )
        elif key == "no-new-privileges":
            if value.lower() not in ("true", "false", "1", "0"):
                raise InvalidParameter(f"invalid --security-opt {opt!r}: no-new-privileges takes true or false")
            nnp = value.lower() in ("true", "1")
        elif key == "systempaths":
            if value != "unconfined":
                raise InvalidParameter(f"invalid --security-opt {opt!r}: the only value is systempaths=unconfined")
            sysp = True
        elif key == "apparmor":
            if value != "unconfined":
                raise InvalidParameter(
                    f"invalid --security-opt {opt!r}: AppArmor is not used by this runtime; "
                    "only apparmor=unconfined is accepted"
                )
        elif key == "label":
            if value != "disable":
                raise InvalidParameter(
                    f"invalid --security-opt {opt!r}: SELinux labels are not used by this runtime; "
                    "only label=disable is accepted"
                )
        else:
            raise InvalidParameter(f"invalid --security-opt {opt!r}: unknown option {key!r}")
    return SecurityOpts(seccomp=seccomp, no_new_privileges=nnp, systempaths_unconfined=sysp)


def bind(
    source: str,
    target: str,
    read_only: bool = False,
    propagation: str = "rprivate",
    recursive: bool = True,
    create: bool = True,
) -> dict:
    return {
        "type": "bind",
        "source": source,
        "target": target,
        "read_only": read_only,
        "propagation": propagation,
        "recursive": recursive,
        "create": create,
    }


def parse_bind(raw: Any) -> dict:
    """One of Docker's HostConfig.Binds: "SRC:DST[:OPTS]". A missing source directory is
    created at start (Docker does so for -v; not for --mount)."""
    if not isinstance(raw, str) or not raw:
        raise InvalidParameter(f"invalid volume specification {raw!r}: use SRC:DST[:ro|rw]")
    parts = raw.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise InvalidParameter(f"invalid volume specification {raw!r}: use /host/path:/container/path[:ro|rw]")
    src, dst = parts[0], parts[1]
    if not src.startswith("/"):
        raise InvalidParameter(
            f"invalid volume specification {raw!r}: named volumes are not supported; give an absolute host path"
        )
    read_only, propagation = False, "rprivate"
    seen: set[str] = set()
    for word in parts[2].split(",") if len(parts) == 3 else []:
        kind = (
            "rw"
            if word in ("ro", "rw")
            else "prop"
            if word in PROPAGATIONS + _REFUSED_PROPAGATIONS
            else "label"
            if word in ("z", "Z")
            else "copy"
            if word in ("nocopy",)
            else None
        )
        if kind is None:
            raise InvalidParameter(
                f"invalid mode {word!r} in volume specification {raw!r}: use ro, rw, rprivate, private, rslave or slave"
            )
        if kind in seen:
            raise InvalidParameter(f"invalid volume specification {raw!r}: more than one {kind} mode")
        seen.add(kind)
        if word in _REFUSED_PROPAGATIONS:
            raise InvalidParameter(
                f"invalid volume specification {raw!r}: {word} propagation would let the "
                "container's mounts reach the host; not supported"
            )
        if kind == "rw":
            read_only = word == "ro"
        elif kind == "prop":
            propagation = word
    return bind(_clean_abs(src, "bind source"), _clean_abs(dst, "bind target"), read_only, propagation)


def _tmpfs_options(opts: Any, where: str) -> list[str]:
    words = [w for w in (opts.split(",") if isinstance(opts, str) else []) if w]
    if opts not in (None, "") and not isinstance(opts, str):
        raise InvalidParameter(f"invalid tmpfs options for {where}: a comma-separated string")
    for w in words:
        key, eq, value = w.partition("=")
        if not eq:
            if w not in TMPFS_FLAGS:
                raise InvalidParameter(f"invalid tmpfs option {w!r} for {where}")
        elif key not in _TMPFS_DATA or not _TMPFS_DATA[key].match(value):
            raise InvalidParameter(
                f"invalid tmpfs option {w!r} for {where}: "
                f"known are {', '.join(sorted(_TMPFS_DATA))}=VALUE and mount flags"
            )
    return words


def tmpfs(target: str, options: list[str]) -> dict:
    return {
        "type": "tmpfs",
        "target": target,
        "read_only": "ro" in options,
        "options": [w for w in options if w not in ("ro", "rw")],
    }


def parse_tmpfs(mapping: Any) -> list[dict]:
    """Docker's HostConfig.Tmpfs: {"/run": "rw,size=64m"}."""
    if mapping is None:
        return []
    if not isinstance(mapping, dict):
        raise InvalidParameter('Tmpfs must be an object: {"/path": "options"}')
    return [tmpfs(_clean_abs(t, "tmpfs target"), _tmpfs_options(o, t)) for t, o in mapping.items()]


def parse_mount(raw: Any) -> dict:
    """One of Docker's HostConfig.Mounts (type bind or tmpfs)."""
    if not isinstance(raw, dict):
        raise InvalidParameter("each of Mounts must be an object")
    kind = raw.get("Type")
    target = _clean_abs(raw.get("Target"), "mount target")
    ro = raw.get("ReadOnly") or False
    if not isinstance(ro, bool):
        raise InvalidParameter(f"invalid mount {target}: ReadOnly must be a boolean")
    if kind == "bind":
        opts = raw.get("BindOptions") or {}
        if not isinstance(opts, dict):
            raise InvalidParameter(f"invalid mount {target}: BindOptions must be an object")
        prop = opts.get("Propagation") or "rprivate"
        if prop not in PROPAGATIONS:
            raise InvalidParameter(
                f"invalid mount {target}: propagation {prop!r} is not supported (use {', '.join(PROPAGATIONS)})"
            )
        return bind(
            _clean_abs(raw.get("Source"), "bind source"),
            target,
            ro,
            prop,
            recursive=not opts.get("NonRecursive"),
            create=bool(opts.get("CreateMountpoint")),
        )
    if kind == "tmpfs":
        if raw.get("Source"):
            raise InvalidParameter(f"invalid mount {target}: a tmpfs mount has no Source")
        t = raw.get("TmpfsOptions") or {}
        if not isinstance(t, dict):
            raise InvalidParameter(f"invalid mount {target}: TmpfsOptions must be an object")
        words = []
        size, mode = t.get("SizeBytes"), t.get("Mode")
        if size not in (None, 0):
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidParameter(f"invalid mount {target}: SizeBytes must be a positive integer")
            words.append(f"size={size}")
        if mode not in (None, 0):
            if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
                raise InvalidParameter(f"invalid mount {target}: Mode must be a file mode (0-07777)")
            words.append(f"mode={mode:o}")
        for pair in t.get("Options") or []:
            if not isinstance(pair, list) or not 1 <= len(pair) <= 2 or pair[0] not in ("exec", "noexec"):
                raise InvalidParameter(f'invalid mount {target}: TmpfsOptions.Options takes ["exec"] or ["noexec"]')
            words.append(pair[0])
        return tmpfs(target, words + (["ro"] if ro else []))
    if kind == "volume":
        raise InvalidParameter(f"invalid mount {target}: named volumes are not supported; use a bind mount")
    raise InvalidParameter(f"invalid mount {target}: type {kind!r} is not supported (bind or tmpfs)")


def parse_device(raw: Any) -> dict:
    """--device HOST[:CTR][:PERMS] or HostConfig.Devices' {PathOnHost, PathInContainer,
    CgroupPermissions}. Without a device cgroup only full access ("rwm", "rw") can be
    given honestly, so narrower permissions are refused."""
    if isinstance(raw, str):
        parts = raw.split(":")
        if len(parts) > 3 or not parts[0]:
            raise InvalidParameter(f"invalid device {raw!r}: use /dev/HOST[:/dev/CTR][:rwm]")
        perms = parts[-1] if len(parts) > 1 and not parts[-1].startswith("/") else "rwm"
        paths = [p for p in parts[:3] if p.startswith("/")]
        host, ctr = paths[0], (paths[1] if len(paths) > 1 else paths[0])
    elif isinstance(raw, dict):
        host = str(raw.get("PathOnHost") or "")
        ctr = str(raw.get("PathInContainer") or host)
        perms = raw.get("CgroupPermissions") or "rwm"
    else:
        raise InvalidParameter(f"invalid device {raw!r}")
    if not isinstance(perms, str) or not set(perms) <= set("rwm") or not perms:
        raise InvalidParameter(f"invalid device permissions {perms!r}: a combination of r, w and m")
    if not {"r", "w"} <= set(perms):
        raise InvalidParameter(
            f"device permissions {perms!r} need a device cgroup, which this runtime does not use: give rwm"
        )
    return {"host": _clean_abs(host, "device path"), "container": _clean_abs(ctr, "device path in the container")}


def check_mounts(mounts: list[dict], host_mode: bool) -> list[dict]:
    """Refuse duplicate targets and "/" (except "-v /:/" in the host-filesystem mode: the
    host's root, writable). Returns the mounts sorted as Docker mounts them: parents
    before children."""
    seen: set[str] = set()
    for m in mounts:
        t = m["target"]
        if t in seen:
            raise InvalidParameter(f"duplicate mount point: {t}")
        seen.add(t)
        if t == "/" and not (host_mode and m["type"] == "bind" and m["source"] == _HOST_ROOT_RW):
            raise InvalidParameter(
                "invalid mount config: the destination cannot be / (in the host-filesystem "
                "mode, -v /:/ makes the host's root writable)"
            )
    return sorted(mounts, key=lambda m: len([p for p in m["target"].split("/") if p]))


def check_paths(paths: Any, field: str) -> list[str] | None:
    """HostConfig.MaskedPaths / ReadonlyPaths: None keeps Docker's defaults."""
    if paths is None:
        return None
    if not isinstance(paths, list):
        raise InvalidParameter(f"{field} must be a list of absolute paths")
    return [_clean_abs(p, f"{field} entry") for p in paths]


def describe_seccomp(value: str) -> str:
    """How a container's seccomp setting shows in inspect's SecurityOpt."""
    if value in ("default", "unconfined"):
        return value
    return json.dumps(json.loads(value), separators=(",", ":"))
