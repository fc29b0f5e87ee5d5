"""The seccomp profile, its resolution for a container and the BPF compiler: decisions
checked with a BPF interpreter, and the same program loaded into a child process (no
root needed: no_new_privs lets any process install a filter on itself)."""

from __future__ import annotations

import ctypes
import json
import os
import platform

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnm.errors import InvalidParameter
from cnm.runtime import caps
from cnm.runtime import seccomp_profile as sp
from cnm.runtime.seccomp_bpf import compile_filter
from cnm.runtime.seccomp_default import CLONE_NAMESPACES, DEFAULT
from cnm.runtime.seccomp_syscalls import I386, X86_64
from tests.unit.bpf_interp import AUDIT_ARCH_I386, run, seccomp_data

ALLOW = sp.RET_ALLOW
EPERM = sp.RET_ERRNO | 1
ENOSYS = sp.RET_ERRNO | 38
KILL = sp.RET_KILL_PROCESS
AF_INET, AF_ALG, AF_VSOCK = 2, 38, 40


def program(capset: frozenset[str] = caps.DEFAULT, profile: sp.Profile = DEFAULT) -> bytes:
    return compile_filter(sp.resolve(profile, capset, kernel=(6, 18)))


def decide(prog: bytes, name: str, *args: int, arch: str = "x86_64") -> int:
    if arch == "x86_64":
        return run(prog, seccomp_data(X86_64[name], args=args))
    return run(prog, seccomp_data(I386[name], AUDIT_ARCH_I386, args))


@pytest.fixture(scope="module")
def default_prog() -> bytes:
    return program()


def test_default_profile_allows_ordinary_work(default_prog):
    for name in (
        "read",
        "write",
        "openat",
        "execve",
        "exit_group",
        "fork",
        "fchmodat2",
        "futex_wait",
        "statx",
        "bind",
        "setsockopt",
        "chroot",
        "ptrace",
    ):
        assert decide(default_prog, name) == ALLOW, name


def test_default_profile_refuses_what_docker_refuses(default_prog):
    for name in (
        "mount",
        "umount2",
        "unshare",
        "setns",
        "keyctl",
        "add_key",
        "request_key",
        "bpf",
        "init_module",
        "reboot",
        "swapon",
        "kexec_load",
        "pivot_root",
        "open_by_handle_at",
        "perf_event_open",
        "sethostname",
        "settimeofday",
        "iopl",
        "userfaultfd",
        "acct",
    ):
        assert decide(default_prog, name) == EPERM, name
    assert decide(default_prog, "clone3") == ENOSYS  # C libraries fall back to clone


def test_clone_namespace_flags_and_personality(default_prog):
    sigchld = 17
    assert decide(default_prog, "clone", 0x01200000 | sigchld) == ALLOW  # fork()'s flags
    for flag in (0x00020000, 0x10000000, 0x20000000, 0x40000000, 0x02000000):
        assert decide(default_prog, "clone", flag | sigchld) == EPERM, hex(flag)
    for persona in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF):
        assert decide(default_prog, "personality", persona) == ALLOW
    assert decide(default_prog, "personality", 0x0040000) == EPERM  # ADDR_NO_RANDOMIZE
    assert decide(default_prog, "personality", 1 << 32) == EPERM  # the high word counts


def test_socket_families(default_prog):
    for fam in (AF_INET, 1, 10, 16, 17, 37, 39, 41, 44):
        assert decide(default_prog, "socket", fam) == ALLOW, fam
    for fam in (AF_ALG, AF_VSOCK):
        assert decide(default_prog, "socket", fam) == EPERM, fam


def test_numbers_beyond_the_profile_and_other_abis(default_prog):
    assert run(default_prog, seccomp_data(max(X86_64.values()) + 30)) == ENOSYS
    assert run(default_prog, seccomp_data(0x40000000 | X86_64["read"])) == ENOSYS  # x32
    assert run(default_prog, seccomp_data(X86_64["read"], arch=0xC00000B7)) == KILL  # aarch64: not ours
    assert decide(default_prog, "socketcall", arch="i386") == ALLOW
    assert decide(default_prog, "getuid32", arch="i386") == ALLOW
    assert decide(default_prog, "mount", arch="i386") == EPERM
    assert decide(default_prog, "personality", 0xFFFFFFFF, arch="i386") == ALLOW


def test_capabilities_open_their_syscalls():
    admin = program(caps.DEFAULT | {"CAP_SYS_ADMIN"})
    for name in ("mount", "unshare", "setns", "sethostname", "bpf", "clone3"):
        assert decide(admin, name) == ALLOW, name
    assert decide(admin, "clone", CLONE_NAMESPACES) == ALLOW
    assert decide(admin, "reboot") == EPERM
    ptrace_less = program(caps.DEFAULT - {"CAP_SYS_CHROOT"})
    assert decide(ptrace_less, "chroot") == EPERM
    assert decide(program(caps.DEFAULT | {"CAP_SYS_TIME"}), "settimeofday") == ALLOW


def test_profile_round_trips_through_dockers_json():
    text = json.dumps(sp.to_json(DEFAULT))
    assert sp.parse(text) == DEFAULT
    assert program(profile=sp.parse(text)) == program()


@pytest.mark.parametrize(
    "bad, says",
    [
        ("{", "not JSON"),
        ('{"defaultAction": "SCMP_ACT_MAYBE"}', "unknown action"),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}',
            "SCMP_ACT_NOTIFY",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",'
            ' "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}',
            "index",
        ),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",'
            ' "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SORT_OF"}]}]}',
            "unknown operator",
        ),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_Z80"]}', "unknown architecture"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_NEW_LISTENER"]}', "not supported"),
        ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}', "no syscall names"),
        (
            '{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",'
            ' "includes": {"minKernel": "four"}}]}',
            "kernel version",
        ),
        ("[]", "JSON object"),
        ("{}", "unconfined"),
    ],
)
def test_bad_profiles_are_refused_saying_where(bad, says):
    with pytest.raises(InvalidParameter, match=says):
        sp.parse(bad)


def test_allow_by_default_profile_with_a_deny_list():
    prof = sp.parse(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                    {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS"},
                ],
            }
        )
    )
    prog = program(profile=prof)
    assert decide(prog, "mkdir") == sp.RET_ERRNO | 13
    assert decide(prog, "kill") == KILL
    assert decide(prog, "read") == ALLOW
    assert run(prog, seccomp_data(999)) == ALLOW  # allow-by-default: no ENOSYS for unknown numbers


_OPS = {
    "SCMP_CMP_EQ": lambda a, v, _w: a == v,
    "SCMP_CMP_NE": lambda a, v, _w: a != v,
    "SCMP_CMP_LT": lambda a, v, _w: a < v,
    "SCMP_CMP_LE": lambda a, v, _w: a <= v,
    "SCMP_CMP_GT": lambda a, v, _w: a > v,
    "SCMP_CMP_GE": lambda a, v, _w: a >= v,
    "SCMP_CMP_MASKED_EQ": lambda a, v, w: a & v == w,
}
u64 = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**32 - 1, 2**32, 2**32 + 1, 2**64 - 1]))


@settings(max_examples=400, deadline=None)
@given(op=st.sampled_from(sorted(_OPS)), value=u64, two=u64, arg=u64, index=st.integers(0, 5))
def test_64_bit_comparisons_match_their_meaning(op, value, two, arg, index):
    prof = sp.Profile(
        default_action="SCMP_ACT_ERRNO",
        syscalls=(sp.Rule(names=("read",), action="SCMP_ACT_ALLOW", args=(sp.Arg(index, value, op, two),)),),
    )
    prog = program(profile=prof)
    args = [0] * 6
    args[index] = arg
    want = ALLOW if _OPS[op](arg, value, two) else EPERM
    assert run(prog, seccomp_data(X86_64["read"], args=tuple(args))) == want


def test_long_programs_get_trampolines_and_stay_right():
    # 60 syscalls with 5 argument rules each: jumps over the left half of the search
    # tree reach far beyond 255 instructions.
    names = sorted(X86_64, key=X86_64.get)[:60]
    rules = tuple(
        sp.Rule(names=(n,), action="SCMP_ACT_ALLOW", args=(sp.Arg(1, v, "SCMP_CMP_EQ"),))
        for n in names
        for v in range(5)
    )
    prog = program(profile=sp.Profile(default_action="SCMP_ACT_ERRNO", syscalls=rules))
    assert len(prog) // 8 > 600
    for n in names:
        assert run(prog, seccomp_data(X86_64[n], args=(0, 4))) == ALLOW
        assert run(prog, seccomp_data(X86_64[n], args=(0, 5))) == EPERM


# --- the same program in the kernel -----------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _in_filtered_child(prog: bytes, calls: list[tuple[int, tuple[int, ...]]]) -> list[int]:
    """Fork; the child sets no_new_privs, loads `prog` and makes each raw syscall; returns
    each call's errno (0 = it ran)."""
    from cnm.runtime import linux

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            linux.set_no_new_privs()
            linux.seccomp_load(prog)
            out = []
            for nr, args in calls:
                ctypes.set_errno(0)
                rc = _libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
                out.append(ctypes.get_errno() if rc == -1 else 0)
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the syscall numbers below are x86_64's")
def test_kernel_agrees(default_prog):
    calls = [
        (X86_64["getpid"], ()),
        (X86_64["unshare"], (0,)),
        (X86_64["keyctl"], (0, 0)),
        (X86_64["clone3"], (0, 0)),
        (X86_64["personality"], (0xFFFFFFFF,)),
        (X86_64["personality"], (0x0040000,)),
        (X86_64["socket"], (AF_VSOCK, 1, 0)),
        (X86_64["mount"], (0, 0, 0, 0, 0)),
        (max(X86_64.values()) + 40, ()),
    ]
    eperm, enosys = 1, 38
    assert _in_filtered_child(default_prog, calls) == [0, eperm, eperm, enosys, 0, eperm, eperm, eperm, enosys]
