"""`net run`'s confinement flags as Docker's HostConfig fields, converted as Docker's CLI
does (the daemon checks everything again: cnm.container_requests):

    --cap-add/--cap-drop CAP   CapAdd/CapDrop, as given
    --privileged               Privileged
    -v SRC:DST[:OPTS]          Binds; a relative SRC (./data, ../x) made absolute
    --mount type=bind,src=…,dst=…[,readonly][,bind-propagation=…][,bind-nonrecursive]
    --mount type=tmpfs,dst=…[,tmpfs-size=64m][,tmpfs-mode=1770]
                               Mounts
    --tmpfs DST[:OPTS]         Tmpfs {DST: OPTS}
    --read-only                ReadonlyRootfs
    --security-opt seccomp=FILE
                               the file's JSON is sent in its place (as Docker's CLI does)
    --device HOST[:CTR][:PERMS]
                               Devices

Light: json is imported only to read a seccomp profile.
"""

from __future__ import annotations

from cnm.errors import InvalidParameter

TYPE_CHECKING = False  # typing stays out of the CLI's start; type checkers see True
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

_TRUE = ("", "1", "true", "yes")
_FALSE = ("0", "false", "no")


def _bind(spec: str) -> str:
    src, sep, rest = spec.partition(":")
    if src.startswith((".", "~")):
        import os.path  # (only for a relative source: os costs every `net run` ~1.5 ms)

        src = os.path.abspath(os.path.expanduser(src))
    return src + sep + rest


def _bool(value: str, key: str, spec: str) -> bool:
    v = value.lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise InvalidParameter(f"invalid value for {key} in --mount {spec!r}: use true or false")


def mount(spec: str) -> dict:
    """One --mount value (Docker's comma-separated key=value list) as a Mounts entry."""
    from cnm.cli.values import byte_size  # (CLI start-up: only with a tmpfs size)

    out: dict[str, Any] = {}
    bind: dict[str, Any] = {}
    tmpfs: dict[str, Any] = {}
    for field in spec.split(","):
        key, _, value = field.partition("=")
        key = key.strip().lower()
        if key == "type":
            out["Type"] = value
        elif key in ("source", "src"):
            if value.startswith("."):
                import os.path  # (only for a relative source)

                value = os.path.abspath(value)
            out["Source"] = value
        elif key in ("target", "destination", "dst"):
            out["Target"] = value
        elif key in ("readonly", "ro"):
            out["ReadOnly"] = _bool(value, key, spec)
        elif key == "bind-propagation":
            bind["Propagation"] = value
        elif key == "bind-nonrecursive":
            bind["NonRecursive"] = _bool(value, key, spec)
        elif key == "tmpfs-size":
            try:
                tmpfs["SizeBytes"] = byte_size(value)
            except ValueError as exc:
                raise InvalidParameter(f"invalid tmpfs-size in --mount {spec!r}: {exc}") from None
        elif key == "tmpfs-mode":
            try:
                tmpfs["Mode"] = int(value, 8)
            except ValueError:
                raise InvalidParameter(f"invalid tmpfs-mode in --mount {spec!r}: an octal mode such as 1777") from None
        else:
            raise InvalidParameter(f"unexpected key {key!r} in --mount {spec!r}")
    if "Type" not in out:
        raise InvalidParameter(f"--mount {spec!r}: type is required (bind or tmpfs)")
    if bind:
        out["BindOptions"] = bind
    if tmpfs:
        out["TmpfsOptions"] = tmpfs
    return out


def tmpfs_map(specs: Iterable[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        target, _, options = spec.partition(":")
        out[target] = options
    return out


def security_opts(opts: Iterable[str]) -> list[str]:
    """seccomp=FILE becomes seccomp=<the file's JSON> (compacted); the rest as given."""
    out = []
    for opt in opts:
        key, sep, value = opt.partition("=") if "=" in opt else opt.partition(":")
        if key == "seccomp" and value not in ("unconfined", "builtin", "default", "") and not value.startswith("{"):
            import json  # only here: ~8 ms the CLI pays for this flag alone

            try:
                with open(value) as f:
                    profile = json.load(f)
            except OSError as exc:
                raise InvalidParameter(f"opening seccomp profile ({value}) failed: {exc.strerror}") from None
            except ValueError as exc:
                raise InvalidParameter(f"seccomp profile {value} is not JSON: {exc}") from None
            opt = "seccomp=" + json.dumps(profile, separators=(",", ":"))
        out.append(opt)
    return out


def device(spec: str) -> dict:
    parts = spec.split(":")
    perms = parts[-1] if len(parts) > 1 and not parts[-1].startswith("/") else "rwm"
    paths = [p for p in parts if p.startswith("/")]
    if not paths or len(parts) > 3:
        raise InvalidParameter(f"invalid --device {spec!r}: use /dev/HOST[:/dev/CONTAINER][:rwm]")
    return {
        "PathOnHost": paths[0],
        "PathInContainer": paths[1] if len(paths) > 1 else paths[0],
        "CgroupPermissions": perms,
    }


def host_config(
    *,
    cap_add: Iterable[str] = (),
    cap_drop: Iterable[str] = (),
    privileged: bool = False,
    volumes: Iterable[str] = (),
    mounts: Iterable[str] = (),
    tmpfs: Iterable[str] = (),
    read_only: bool = False,
    security_opt: Iterable[str] = (),
    devices: Iterable[str] = (),
) -> dict:
    """The HostConfig fields these flags set (only those given)."""
    host: dict[str, Any] = {}
    for key, value in (
        ("CapAdd", list(cap_add)),
        ("CapDrop", list(cap_drop)),
        ("Binds", [_bind(v) for v in volumes]),
        ("Mounts", [mount(m) for m in mounts]),
        ("Tmpfs", tmpfs_map(tmpfs)),
        ("SecurityOpt", security_opts(security_opt)),
        ("Devices", [device(d) for d in devices]),
    ):
        if value:
            host[key] = value
    if privileged:
        host["Privileged"] = True
    if read_only:
        host["ReadonlyRootfs"] = True
    return host
