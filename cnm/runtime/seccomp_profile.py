"""Seccomp profiles in Docker's JSON format: parse and check, and resolve one for a
container (its capabilities, this machine's architecture and kernel) into plain rules
the BPF compiler takes. Pure.

The format (moby/profiles/seccomp): `defaultAction`, `defaultErrnoRet`,
`architectures` or `archMap`, `flags`, `syscalls[]` with `names` (or the old `name`),
`action`, `errnoRet`, `args[]` ({index, value, valueTwo, op}) and conditions
`includes`/`excludes` ({caps, arches, minKernel}). A rule is kept when every
`includes` condition holds and no `excludes` condition does; a caps condition is about
the container's bounding set, an arches one about the machine's architecture (Go's
names: "amd64", "x86", "arm64", ...), minKernel about the running kernel ("4.8").

Not supported (refused with a 400, not ignored): SCMP_ACT_NOTIFY and the listener
fields, which need a seccomp agent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cnm.errors import InvalidParameter

# SECCOMP_RET_* (include/uapi/linux/seccomp.h)
RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000
EPERM = 1
ENOSYS = 38

ACTIONS = {
    "SCMP_ACT_KILL": RET_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": RET_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": RET_KILL_PROCESS,
    "SCMP_ACT_TRAP": RET_TRAP,
    "SCMP_ACT_ERRNO": RET_ERRNO,
    "SCMP_ACT_TRACE": RET_TRACE,
    "SCMP_ACT_LOG": RET_LOG,
    "SCMP_ACT_ALLOW": RET_ALLOW,
}
# Actions after which a syscall runs: a syscall newer than the profile is left alone
# under them (see Resolved.enosys_above).
ALLOW_LIKE = frozenset({"SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"})
OPS = frozenset(
    {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"}
)
FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": 1, "SECCOMP_FILTER_FLAG_LOG": 2, "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4}
# SCMP_ARCH_* names this project compiles for, and the kernel's AUDIT_ARCH_* value.
AUDIT_ARCH = {"SCMP_ARCH_X86_64": 0xC000003E, "SCMP_ARCH_X86": 0x40000003}
KNOWN_ARCHES = frozenset(
    {
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X86_64",
        "SCMP_ARCH_X32",
        "SCMP_ARCH_ARM",
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_MIPS",
        "SCMP_ARCH_MIPS64",
        "SCMP_ARCH_MIPS64N32",
        "SCMP_ARCH_MIPSEL",
        "SCMP_ARCH_MIPSEL64",
        "SCMP_ARCH_MIPSEL64N32",
        "SCMP_ARCH_PPC",
        "SCMP_ARCH_PPC64",
        "SCMP_ARCH_PPC64LE",
        "SCMP_ARCH_S390",
        "SCMP_ARCH_S390X",
        "SCMP_ARCH_PARISC",
        "SCMP_ARCH_PARISC64",
        "SCMP_ARCH_RISCV64",
        "SCMP_ARCH_LOONGARCH64",
        "SCMP_ARCH_M68K",
        "SCMP_ARCH_SH",
        "SCMP_ARCH_SHEB",
    }
)
_U64 = (1 << 64) - 1


@dataclass(frozen=True)
class Arg:
    index: int
    value: int
    op: str
    value_two: int = 0


@dataclass(frozen=True)
class Condition:
    caps: tuple[str, ...] = ()
    arches: tuple[str, ...] = ()
    min_kernel: tuple[int, int] | None = None


@dataclass(frozen=True)
class Rule:
    names: tuple[str, ...]
    action: str
    errno_ret: int | None = None
    args: tuple[Arg, ...] = ()
    includes: Condition | None = None
    excludes: Condition | None = None
    comment: str = ""


@dataclass(frozen=True)
class Profile:
    default_action: str
    default_errno_ret: int | None = None
    architectures: tuple[str, ...] = ()
    arch_map: tuple[tuple[str, tuple[str, ...]], ...] = ()
    flags: tuple[str, ...] = ()
    syscalls: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class Resolved:
    """A profile for one container on this machine: what the compiler needs.

    rules: (syscall name, return value, args) in profile order; the first rule of a
    syscall whose args all match decides. arches: SCMP_ARCH_* names to filter
    (others are killed). enosys_above: syscalls numbered above the highest one the
    profile names get ENOSYS instead of the default action (runc's rule), so that
    programs fall back from syscalls newer than the profile instead of failing.
    """

    default: int
    arches: tuple[str, ...]
    rules: tuple[tuple[str, int, tuple[Arg, ...]], ...]
    flags: int = 0
    enosys_above: bool = True


def ret_value(action: str, errno_ret: int | None) -> int:
    """The SECCOMP_RET_* value of an action; ERRNO without errnoRet means EPERM."""
    base = ACTIONS[action]
    if action == "SCMP_ACT_ERRNO":
        return base | ((EPERM if errno_ret is None else errno_ret) & 0xFFFF)
    if action == "SCMP_ACT_TRACE":
        return base | ((errno_ret or 0) & 0xFFFF)
    return base


# --- parsing ----------------------------------------------------------------------


def _err(msg: str) -> InvalidParameter:
    return InvalidParameter(f"invalid seccomp profile: {msg}")


def _strings(v: Any, where: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise _err(f"{where} must be a list of strings")
    return tuple(v)


def _int(v: Any, where: str, lo: int = 0, hi: int = _U64) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _err(f"{where} must be an integer from {lo} to {hi}")
    return v


def _action(v: Any, where: str) -> str:
    if v == "SCMP_ACT_NOTIFY":
        raise _err(f"{where}: SCMP_ACT_NOTIFY needs a seccomp agent, which this runtime does not support")
    if v not in ACTIONS:
        raise _err(f"{where}: unknown action {v!r}")
    return v


def _condition(raw: Any, where: str) -> Condition | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _err(f"{where} must be an object")
    _only(raw, ("caps", "arches", "minKernel"), where)
    mk = raw.get("minKernel")
    min_kernel = None
    if mk not in (None, ""):
        parts = mk.split(".") if isinstance(mk, str) else []
        if len(parts) != 2 or not all(p.isdigit() and p.isascii() for p in parts) or parts == ["0", "0"]:
            raise _err(f'{where}.minKernel: invalid kernel version {mk!r}, expected "<kernel>.<major>"')
        min_kernel = (int(parts[0]), int(parts[1]))
    return Condition(
        caps=_strings(raw.get("caps"), f"{where}.caps"),
        arches=_strings(raw.get("arches"), f"{where}.arches"),
        min_kernel=min_kernel,
    )


def _only(raw: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise _err(f"{where}: unknown field(s) {', '.join(unknown)}")


def _rule(raw: Any, i: int) -> Rule:
    where = f"syscalls[{i}]"
    if not isinstance(raw, dict):
        raise _err(f"{where} must be an object")
    _only(raw, ("names", "name", "action", "errnoRet", "args", "comment", "includes", "excludes"), where)
    names = _strings(raw.get("names"), f"{where}.names")
    if raw.get("name"):
        if names:
            raise _err(f"{where}: both 'name' and 'names' are given, use either")
        if not isinstance(raw["name"], str):
            raise _err(f"{where}.name must be a string")
        names = (raw["name"],)
    if not names:
        raise _err(f"{where}: no syscall names")
    errno_ret = raw.get("errnoRet")
    if errno_ret is not None:
        errno_ret = _int(errno_ret, f"{where}.errnoRet", 0, 4095)
    args = []
    for j, a in enumerate(raw.get("args") or []):
        aw = f"{where}.args[{j}]"
        if not isinstance(a, dict):
            raise _err(f"{aw} must be an object")
        _only(a, ("index", "value", "valueTwo", "op"), aw)
        if a.get("op") not in OPS:
            raise _err(f"{aw}.op: unknown operator {a.get('op')!r}")
        args.append(
            Arg(
                index=_int(a.get("index", 0), f"{aw}.index", 0, 5),
                value=_int(a.get("value", 0), f"{aw}.value"),
                value_two=_int(a.get("valueTwo", 0), f"{aw}.valueTwo"),
                op=a["op"],
            )
        )
    comment = raw.get("comment") or ""
    return Rule(
        names=names,
        action=_action(raw.get("action"), f"{where}.action"),
        errno_ret=errno_ret,
        args=tuple(args),
        includes=_condition(raw.get("includes"), f"{where}.includes"),
        excludes=_condition(raw.get("excludes"), f"{where}.excludes"),
        comment=str(comment),
    )


def parse(text: str | bytes | dict) -> Profile:
    """A profile from Docker's JSON (text or decoded). InvalidParameter, saying where,
    for anything malformed."""
    if isinstance(text, dict):
        raw = text
    else:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise _err(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise _err("a profile is a JSON object")
    _only(
        raw,
        (
            "defaultAction",
            "defaultErrnoRet",
            "architectures",
            "archMap",
            "flags",
            "syscalls",
            "listenerPath",
            "listenerMetadata",
        ),
        "profile",
    )
    if raw.get("listenerPath") or raw.get("listenerMetadata"):
        raise _err("listenerPath: seccomp agents (SCMP_ACT_NOTIFY) are not supported")
    arches = _strings(raw.get("architectures"), "architectures")
    arch_map = []
    for i, a in enumerate(raw.get("archMap") or []):
        if not isinstance(a, dict):
            raise _err(f"archMap[{i}] must be an object")
        arch_map.append((str(a.get("architecture", "")), _strings(a.get("subArchitectures"), f"archMap[{i}]")))
    if arches and arch_map:
        raise _err("both 'architectures' and 'archMap' are given, use either")
    for a in arches + tuple(x for m, subs in arch_map for x in (m, *subs)):
        if a not in KNOWN_ARCHES:
            raise _err(f"unknown architecture {a!r}")
    flags = _strings(raw.get("flags"), "flags")
    for f in flags:
        if f not in FLAGS:
            raise _err(f"flag {f!r} is not supported (known: {', '.join(sorted(FLAGS))})")
    dre = raw.get("defaultErrnoRet")
    syscalls = raw.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise _err("syscalls must be a list")
    default = raw.get("defaultAction") or ""
    if not default and not syscalls:
        raise _err("no defaultAction and no syscalls: say seccomp=unconfined to run without a filter")
    return Profile(
        default_action=_action(default, "defaultAction"),
        default_errno_ret=None if dre is None else _int(dre, "defaultErrnoRet", 0, 4095),
        architectures=arches,
        arch_map=tuple(arch_map),
        flags=flags,
        syscalls=tuple(_rule(r, i) for i, r in enumerate(syscalls)),
    )


def to_json(p: Profile) -> dict:
    """Docker's JSON form of a profile (parse(to_json(p)) == p)."""

    def cond(c: Condition | None) -> dict | None:
        if c is None:
            return None
        out: dict[str, Any] = {}
        if c.caps:
            out["caps"] = list(c.caps)
        if c.arches:
            out["arches"] = list(c.arches)
        if c.min_kernel:
            out["minKernel"] = f"{c.min_kernel[0]}.{c.min_kernel[1]}"
        return out

    rules = []
    for r in p.syscalls:
        d: dict[str, Any] = {"names": list(r.names), "action": r.action}
        if r.errno_ret is not None:
            d["errnoRet"] = r.errno_ret
        if r.args:
            d["args"] = [{"index": a.index, "value": a.value, "valueTwo": a.value_two, "op": a.op} for a in r.args]
        if r.comment:
            d["comment"] = r.comment
        for k, c in (("includes", r.includes), ("excludes", r.excludes)):
            if c is not None:
                d[k] = cond(c)
        rules.append(d)
    out: dict[str, Any] = {"defaultAction": p.default_action}
    if p.default_errno_ret is not None:
        out["defaultErrnoRet"] = p.default_errno_ret
    if p.architectures:
        out["architectures"] = list(p.architectures)
    if p.arch_map:
        out["archMap"] = [{"architecture": a, "subArchitectures": list(s)} for a, s in p.arch_map]
    if p.flags:
        out["flags"] = list(p.flags)
    out["syscalls"] = rules
    return out


# --- resolving for one container ----------------------------------------------------


def _holds(c: Condition, caps: frozenset[str], arch: str, kernel: tuple[int, int], want_all: bool) -> bool:
    """includes (want_all): every listed condition holds; excludes: any one does."""
    tests = []
    if c.arches:
        tests.append(arch in c.arches)
    if c.caps:
        tests.append(all(x in caps for x in c.caps) if want_all else any(x in caps for x in c.caps))
    if c.min_kernel:
        tests.append(kernel >= c.min_kernel)
    return all(tests) if want_all else any(tests)


def resolve(
    p: Profile,
    caps: frozenset[str],
    arch: str = "amd64",
    seccomp_arch: str = "SCMP_ARCH_X86_64",
    kernel: tuple[int, int] = (6, 1),
) -> Resolved:
    """The rules that apply to a container with bounding set `caps` on a machine of Go
    architecture `arch` (libseccomp's `seccomp_arch`) running `kernel` (major, minor)."""
    arches: tuple[str, ...] = p.architectures
    for main, subs in p.arch_map:
        if main == seccomp_arch:
            arches = (main, *subs)
    rules: list[tuple[str, int, tuple[Arg, ...]]] = []
    for r in p.syscalls:
        if r.excludes is not None and _holds(r.excludes, caps, arch, kernel, want_all=False):
            continue
        if r.includes is not None and not _holds(r.includes, caps, arch, kernel, want_all=True):
            continue
        value = ret_value(r.action, r.errno_ret)
        rules.extend((name, value, r.args) for name in r.names)
    flags = 0
    for f in p.flags:
        flags |= FLAGS[f]
    return Resolved(
        default=ret_value(p.default_action, p.default_errno_ret),
        arches=arches or (seccomp_arch,),
        rules=tuple(rules),
        flags=flags,
        enosys_above=p.default_action not in ALLOW_LIKE,
    )


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a `uname -r` string such as "6.18.44-fc-v1252"."""
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)
